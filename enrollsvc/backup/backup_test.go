package backup

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"os"
	"path/filepath"
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
	gz := gzip.NewWriter(aw)
	tw := tar.NewWriter(gz)
	entries(tw)
	tw.Close()
	gz.Close()
	aw.Close()
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

// An archive that tries to write outside its directory, holds links, repeats a file, lacks a
// manifest, or does not match it is refused, and nothing is left.
func TestExtractRefuses(t *testing.T) {
	ok := File{Path: "a", Size: 1, SHA256: "ca978112ca1bbdcafac231b39a23dc4da786eff8147c4e72b9807785afee48bb", Mode: 0o600}
	cases := map[string]func(tw *tar.Writer){
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
	}
	for name, c := range cases {
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
	if _, err := Extract(bytes.NewReader(seal(t, func(tw *tar.Writer) {
		entry(tw, "data/a", []byte("a"), tar.TypeReg)
		entry(tw, ManifestName, manifestFor(ok), tar.TypeReg)
	})), pass, nil, filepath.Join(parent, "restored"), nil); err != nil {
		t.Errorf("a well-formed archive: %v", err)
	}
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
