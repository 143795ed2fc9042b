package backup

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"filippo.io/age"
)

const pass = "correct horse battery staple"

// A backup written with AddDir and AddFile comes back file for file, with its modes, and the
// manifest; prepare sees it before it is in place.
func TestRoundTrip(t *testing.T) {
	src := t.TempDir()
	os.MkdirAll(filepath.Join(src, "hsm", "tokens", "t1"), 0o700)
	os.WriteFile(filepath.Join(src, "config.json"), []byte(`{"v":1}`), 0o644)
	os.WriteFile(filepath.Join(src, "hsm", "tokens", "t1", "obj"), []byte("token object"), 0o600)
	os.WriteFile(filepath.Join(src, "live.db"), []byte("live"), 0o600)
	os.WriteFile(filepath.Join(src, "live.db-wal"), []byte("wal"), 0o600)
	snap := filepath.Join(t.TempDir(), "snap")
	os.WriteFile(snap, []byte("snapshot"), 0o600)
	var buf bytes.Buffer
	m := &Manifest{Created: time.Now(), Instance: "ca1"}
	w, err := NewWriter(&buf, Encryption{Passphrase: pass}, m)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.AddDir(src, func(rel string) bool { return strings.HasPrefix(rel, "live.db") }); err != nil {
		t.Fatal(err)
	}
	if err := w.AddFile("live.db", snap); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(t.TempDir(), "restored")
	prepared := false
	got, err := Extract(bytes.NewReader(buf.Bytes()), pass, nil, dst, func(dir string, m *Manifest) error {
		prepared = dir != dst && m.Instance == "ca1"
		return nil
	})
	if err != nil || !prepared {
		t.Fatalf("Extract = %v (prepared %v)", err, prepared)
	}
	if strings.Join(got.Paths(), ",") != "config.json,hsm/tokens/t1/obj,live.db" {
		t.Errorf("files %v", got.Paths())
	}
	if b, _ := os.ReadFile(filepath.Join(dst, "live.db")); string(b) != "snapshot" {
		t.Errorf("live.db = %q, want the snapshot", b)
	}
	if st, _ := os.Stat(filepath.Join(dst, "hsm", "tokens", "t1", "obj")); st == nil || st.Mode().Perm() != 0o600 {
		t.Errorf("token object mode %v", st)
	}
	if _, err := Extract(bytes.NewReader(buf.Bytes()), pass, nil, dst, nil); err == nil {
		t.Error("Extract over an existing directory succeeded")
	}
}

// seal encrypts a hand-made archive, as someone who knows the passphrase could.
func seal(t *testing.T, entries func(tw *tar.Writer)) []byte {
	t.Helper()
	var buf bytes.Buffer
	r, _ := age.NewScryptRecipient(pass)
	r.SetWorkFactor(10)
	aw, _ := age.Encrypt(&buf, r)
	aw.Write(plain(entries))
	aw.Close()
	return buf.Bytes()
}

// plain is a hand-made archive before encryption: tar in gzip.
func plain(entries func(tw *tar.Writer)) []byte {
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	entries(tw)
	tw.Close()
	gz.Close()
	return buf.Bytes()
}

func entry(tw *tar.Writer, name string, body []byte, typ byte) {
	tw.WriteHeader(&tar.Header{Name: name, Mode: 0o600, Size: int64(len(body)), Typeflag: typ})
	tw.Write(body)
}

func manifestFor(files ...File) []byte {
	b, _ := json.Marshal(Manifest{Format: Format, Files: files})
	return b
}

// okFile is data/a holding "a".
var okFile = File{Path: "a", Size: 1, SHA256: "ca978112ca1bbdcafac231b39a23dc4da786eff8147c4e72b9807785afee48bb", Mode: 0o600}

// badArchives are archives Extract must refuse, by what is wrong with them.
func badArchives() map[string]func(tw *tar.Writer) {
	ok := okFile
	return map[string]func(tw *tar.Writer){
		"traversal": func(tw *tar.Writer) { entry(tw, "data/../../evil", []byte("x"), tar.TypeReg) },
		"absolute":  func(tw *tar.Writer) { entry(tw, "data//etc/passwd", []byte("x"), tar.TypeReg) },
		"symlink": func(tw *tar.Writer) {
			tw.WriteHeader(&tar.Header{Name: "data/l", Linkname: "/etc", Typeflag: tar.TypeSymlink})
		},
		"outside data/": func(tw *tar.Writer) { entry(tw, "other", []byte("x"), tar.TypeReg) },
		"no manifest":   func(tw *tar.Writer) { entry(tw, "data/a", []byte("a"), tar.TypeReg) },
		"twice": func(tw *tar.Writer) {
			entry(tw, "data/a", []byte("a"), tar.TypeReg)
			entry(tw, "data/a", []byte("a"), tar.TypeReg)
		},
		"hash mismatch": func(tw *tar.Writer) {
			entry(tw, "data/a", []byte("b"), tar.TypeReg)
			entry(tw, ManifestName, manifestFor(ok), tar.TypeReg)
		},
		"unlisted file": func(tw *tar.Writer) {
			entry(tw, "data/a", []byte("a"), tar.TypeReg)
			entry(tw, "data/b", []byte("b"), tar.TypeReg)
			entry(tw, ManifestName, manifestFor(ok), tar.TypeReg)
		},
		"after manifest": func(tw *tar.Writer) {
			entry(tw, ManifestName, manifestFor(), tar.TypeReg)
			entry(tw, "data/a", []byte("a"), tar.TypeReg)
		},
		"file under a file": func(tw *tar.Writer) {
			entry(tw, "data/a", []byte("a"), tar.TypeReg)
			entry(tw, "data/a/b", []byte("b"), tar.TypeReg)
			entry(tw, ManifestName, manifestFor(ok, File{Path: "a/b", Size: 1}), tar.TypeReg)
		},
		"other format": func(tw *tar.Writer) {
			b, _ := json.Marshal(Manifest{Format: Format + 1})
			entry(tw, ManifestName, b, tar.TypeReg)
		},
	}
}

// goodArchive is the well-formed one of these.
func goodArchive(tw *tar.Writer) {
	entry(tw, "data/a", []byte("a"), tar.TypeReg)
	entry(tw, ManifestName, manifestFor(okFile), tar.TypeReg)
}

// An archive that tries to write outside its directory, holds links, repeats a file, lacks a
// manifest, or does not match it is refused, and nothing is left.
func TestExtractRefuses(t *testing.T) {
	for name, c := range badArchives() {
		parent := t.TempDir()
		dst := filepath.Join(parent, "restored")
		if _, err := Extract(bytes.NewReader(seal(t, c)), pass, nil, dst, nil); err == nil {
			t.Errorf("%s: Extract succeeded", name)
		}
		if left, _ := os.ReadDir(parent); len(left) != 0 {
			t.Errorf("%s: left %v behind", name, left)
		}
	}
	// The good one of these, to show the refusals are for what they say.
	parent := t.TempDir()
	if _, err := Extract(bytes.NewReader(seal(t, goodArchive)), pass, nil, filepath.Join(parent, "restored"), nil); err != nil {
		t.Errorf("a well-formed archive: %v", err)
	}
}

// sparseArchive is an archive whose data/a is a GNU sparse file (PAX 1.0) of realSize bytes,
// all hole: a few hundred bytes that read as realSize zeros. archive/tar writes no such
// header, so it is put together by hand: a PAX header block ('x') before the file's.
func sparseArchive(realSize int64) []byte {
	rec := func(kv string) string {
		n := len(kv) + 2
		for len(fmt.Sprintf("%d %s\n", n, kv)) != n {
			n++
		}
		return fmt.Sprintf("%d %s\n", n, kv)
	}
	records := rec("GNU.sparse.major=1") + rec("GNU.sparse.minor=0") + rec("GNU.sparse.name=data/a") +
		rec(fmt.Sprintf("GNU.sparse.realsize=%d", realSize))
	var raw bytes.Buffer
	tw := tar.NewWriter(&raw)
	tw.WriteHeader(&tar.Header{Name: "PaxHeaders/a", Mode: 0o600, Size: int64(len(records)), Typeflag: tar.TypeReg, Format: tar.FormatUSTAR})
	tw.Write([]byte(records))
	tw.Flush()
	b := raw.Bytes()
	b[156] = tar.TypeXHeader
	copy(b[148:156], "        ")
	sum := 0
	for _, c := range b[:512] {
		sum += int(c)
	}
	copy(b[148:156], fmt.Sprintf("%06o\x00 ", sum))
	sparseMap := make([]byte, 512) // no data regions: the whole file is a hole
	copy(sparseMap, "0\n")
	entry(tw, "data/a", sparseMap, tar.TypeReg)
	entry(tw, ManifestName, manifestFor(File{Path: "a", Size: realSize}), tar.TypeReg)
	tw.Close()
	var gzb bytes.Buffer
	gz := gzip.NewWriter(&gzb)
	gz.Write(raw.Bytes())
	gz.Close()
	return gzb.Bytes()
}

// A sparse file in the archive is refused before anything is written for it: unchecked, a few
// hundred bytes would fill the disk with zeros.
func TestArchiveRefusesSparse(t *testing.T) {
	b := sparseArchive(1 << 40)
	// archive/tar does read it as a 1 TiB file: the refusal is what stands between it and the disk.
	gz, _ := gzip.NewReader(bytes.NewReader(b))
	tr := tar.NewReader(gz)
	if hdr, err := tr.Next(); err != nil || hdr.Size != 1<<40 {
		t.Fatalf("the hand-made sparse entry reads as %+v, %v; want 1 TiB", hdr, err)
	}
	tmp := t.TempDir()
	if _, err := extractArchive(bytes.NewReader(b), tmp); err == nil || !strings.Contains(err.Error(), "sparse") {
		t.Fatalf("extracting a sparse file: %v", err)
	}
	if left, _ := os.ReadDir(tmp); len(left) != 0 {
		t.Errorf("left %v", left)
	}
}

// FuzzArchive: whatever the decrypted archive holds, reading it never panics, writes only
// beneath its directory, and succeeds only when every file it wrote is one the manifest lists
// with that content.
func FuzzArchive(f *testing.F) {
	f.Add(plain(goodArchive))
	for _, c := range badArchives() {
		f.Add(plain(c))
	}
	f.Add(sparseArchive(1 << 20))
	f.Fuzz(func(t *testing.T, b []byte) {
		parent := t.TempDir()
		tmp := filepath.Join(parent, "x")
		os.Mkdir(tmp, 0o700)
		m, err := extractArchive(bytes.NewReader(b), tmp)
		if left, _ := os.ReadDir(parent); len(left) != 1 || left[0].Name() != "x" {
			t.Fatalf("wrote beside its directory: %v", left)
		}
		if err != nil {
			return
		}
		n := 0
		filepath.WalkDir(tmp, func(p string, d os.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return err
			}
			rel, _ := filepath.Rel(tmp, p)
			n++
			if !slices.Contains(m.Paths(), filepath.ToSlash(rel)) {
				t.Errorf("%s was written but is not in the manifest", rel)
			}
			return nil
		})
		if n != len(m.Files) {
			t.Errorf("%d files written, the manifest lists %d", n, len(m.Files))
		}
	})
}

// Short passphrases and missing recipients are refused before anything is written.
func TestEncryptionCheck(t *testing.T) {
	for _, e := range []Encryption{{}, {Passphrase: "short"}, {Recipients: []string{"age1nope"}}} {
		if e.Check() == nil {
			t.Errorf("%+v passed", e)
		}
	}
	id, _ := age.GenerateX25519Identity()
	if err := (Encryption{Recipients: []string{id.Recipient().String()}}).Check(); err != nil {
		t.Error(err)
	}
}
