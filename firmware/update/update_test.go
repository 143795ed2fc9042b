package update

import (
	"archive/tar"
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"testing/iotest"
	"time"
)

const (
	testProduct = "aeappliance - certificate autoenrollment appliance"
	testEpoch   = 1795448802 // 2026-11-23T...
)

var (
	testKey  = ed25519.NewKeyFromSeed(bytes.Repeat([]byte{1}, ed25519.SeedSize))
	otherKey = ed25519.NewKeyFromSeed(bytes.Repeat([]byte{2}, ed25519.SeedSize))
	testPub  = testKey.Public().(ed25519.PublicKey)
	otherPub = otherKey.Public().(ed25519.PublicKey)
)

// content makes n bytes that occur nowhere else in a test bundle, so that tests can find
// a file inside the bundle's bytes. Sizes are not multiples of 512, so that tar padding is
// exercised.
func content(name string, n int) []byte {
	var b bytes.Buffer
	for i := 0; b.Len() < n; i++ {
		fmt.Fprintf(&b, "%s-%06d|", name, i)
	}
	return b.Bytes()[:n]
}

func sha(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }

// fakeImage writes an image directory as firmware.Build does, with small files, and
// returns it with its files' contents.
func fakeImage(t testing.TB) (string, map[string][]byte) {
	t.Helper()
	dir := t.TempDir()
	files := map[string][]byte{
		KernelName:    content("kernel", 3001),
		InitramfsName: content("initramfs", 5003),
	}
	m := map[string]any{
		"release": map[string]any{
			"product":           testProduct,
			"version":           "v0.7.0-12-gabc1234",
			"source_date_epoch": testEpoch,
			"kernel":            "6.1.0-56-amd64",
		},
		"debug":  false,
		"kernel": map[string]any{"package": "linux-image-6.1.0-56-amd64", "release": "6.1.0-56-amd64"},
		"files": map[string]any{
			KernelName:    map[string]any{"size": len(files[KernelName]), "sha256": sha(files[KernelName])},
			InitramfsName: map[string]any{"size": len(files[InitramfsName]), "sha256": sha(files[InitramfsName])},
		},
	}
	mb, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	files[ManifestName] = append(mb, '\n')
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir, files
}

// testBundle builds the bundle of a fake image, signed with testKey.
func testBundle(t testing.TB) ([]byte, Header, map[string][]byte) {
	t.Helper()
	dir, files := fakeImage(t)
	out := filepath.Join(t.TempDir(), FileName("v0.7.0-12-gabc1234"))
	h, err := Build(dir, out, testKey)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return b, h, files
}

// listDir names what dir holds.
func listDir(t testing.TB, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

func TestRoundTrip(t *testing.T) {
	b, h, files := testBundle(t)
	want := Header{
		Format:          1,
		Product:         testProduct,
		Version:         "v0.7.0-12-gabc1234",
		SourceDateEpoch: testEpoch,
		Kernel:          "6.1.0-56-amd64",
		KeyID:           KeyID(testPub),
	}
	for _, name := range imageFiles {
		want.Files = append(want.Files, File{Name: name, Size: int64(len(files[name])), SHA256: sha(files[name])})
	}
	if !reflect.DeepEqual(h, want) {
		t.Errorf("Build = %+v, want %+v", h, want)
	}

	for name, r := range map[string]func([]byte) io.Reader{
		"whole":       func(b []byte) io.Reader { return bytes.NewReader(b) },
		"byte a time": func(b []byte) io.Reader { return iotest.OneByteReader(bytes.NewReader(b)) },
	} {
		dest := t.TempDir()
		// The trusted key need not be the first.
		got, err := Verify(r(b), []ed25519.PublicKey{otherPub, testPub}, testProduct, dest)
		if err != nil {
			t.Fatalf("Verify(%s) = %v", name, err)
		}
		if !reflect.DeepEqual(got, h) {
			t.Errorf("Verify(%s) = %+v, want %+v", name, got, h)
		}
		if names := listDir(t, dest); !reflect.DeepEqual(names, []string{HeaderName, SignatureName, InitramfsName, ManifestName, KernelName}) {
			t.Errorf("Verify(%s) left %v in destDir, want the three image files and the signed header", name, names)
		}
		if vh, err := VerifyDir(dest, []ed25519.PublicKey{testPub}, testProduct); err != nil || !reflect.DeepEqual(vh, h) {
			t.Errorf("VerifyDir after Verify(%s) = %+v, %v", name, vh, err)
		}
		for fn, want := range files {
			if got, _ := os.ReadFile(filepath.Join(dest, fn)); !bytes.Equal(got, want) {
				t.Errorf("Verify(%s): extracted %s differs from the image's", name, fn)
			}
		}
	}
}

func TestBuildDeterministic(t *testing.T) {
	dir, _ := fakeImage(t)
	out := t.TempDir()
	var bundles [][]byte
	for _, name := range []string{"a.aeu", "b.aeu", "a.aeu"} { // the last one overwrites
		if _, err := Build(dir, filepath.Join(out, name), testKey); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(filepath.Join(out, name))
		if err != nil {
			t.Fatal(err)
		}
		bundles = append(bundles, b)
	}
	for i := 1; i < len(bundles); i++ {
		if !bytes.Equal(bundles[0], bundles[i]) {
			t.Errorf("Build %d gave other bytes than Build 1", i+1)
		}
	}
	if names := listDir(t, out); !reflect.DeepEqual(names, []string{"a.aeu", "b.aeu"}) {
		t.Errorf("Build left %v, want only the bundles (no temporary files)", names)
	}
	if st, _ := os.Stat(filepath.Join(out, "a.aeu")); st.Mode().Perm() != 0o644 {
		t.Errorf("bundle mode = %v, want 0644", st.Mode().Perm())
	}
}

func TestBundleLayout(t *testing.T) {
	b, h, files := testBundle(t)
	if len(b)%512 != 0 {
		t.Errorf("bundle is %d bytes, not whole tar blocks", len(b))
	}
	tr := tar.NewReader(bytes.NewReader(b))
	var names []string
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, hdr.Name)
		if hdr.Typeflag != tar.TypeReg || hdr.Mode != 0o644 || hdr.Uid != 0 || hdr.Gid != 0 ||
			hdr.Uname != "" || hdr.Gname != "" || !hdr.ModTime.Equal(time.Unix(testEpoch, 0)) {
			t.Errorf("member %s: type %q mode %o uid %d gid %d user %q group %q mtime %v, want a regular file, 0644, root, mtime %v",
				hdr.Name, hdr.Typeflag, hdr.Mode, hdr.Uid, hdr.Gid, hdr.Uname, hdr.Gname, hdr.ModTime, time.Unix(testEpoch, 0))
		}
		if hdr.Format != tar.FormatUSTAR || len(hdr.PAXRecords) != 0 {
			t.Errorf("member %s: format %v, PAX records %v, want plain ustar", hdr.Name, hdr.Format, hdr.PAXRecords)
		}
		body, _ := io.ReadAll(tr)
		switch hdr.Name {
		case HeaderName:
			want, _ := json.MarshalIndent(h, "", "  ")
			if !bytes.Equal(body, append(want, '\n')) {
				t.Errorf("bundle.json = %s, want the indented header and a newline", body)
			}
			if !bytes.Contains(body, []byte(`"source_date_epoch": 1795448802`)) || !bytes.Contains(body, []byte(`"key_id": "34750f98bd59fcfc"`)) {
				t.Errorf("bundle.json lacks its snake_case fields: %s", body)
			}
		case SignatureName:
			sig, err := base64.StdEncoding.DecodeString(strings.TrimSuffix(string(body), "\n"))
			if err != nil || !strings.HasSuffix(string(body), "=\n") {
				t.Errorf("bundle.sig = %q, want base64 and a newline", body)
			}
			hb, _ := json.MarshalIndent(h, "", "  ")
			if !ed25519.Verify(testPub, append(hb, '\n'), sig) {
				t.Errorf("bundle.sig does not verify over bundle.json")
			}
		default:
			if !bytes.Equal(body, files[hdr.Name]) {
				t.Errorf("member %s differs from the image file", hdr.Name)
			}
		}
	}
	want := []string{HeaderName, SignatureName, KernelName, InitramfsName, ManifestName}
	if !reflect.DeepEqual(names, want) {
		t.Errorf("members = %v, want %v", names, want)
	}
}

func TestBuildRefuses(t *testing.T) {
	for name, spoil := range map[string]func(dir string){
		"no initramfs": func(dir string) { os.Remove(filepath.Join(dir, InitramfsName)) },
		"no manifest":  func(dir string) { os.Remove(filepath.Join(dir, ManifestName)) },
		"stale manifest": func(dir string) {
			os.WriteFile(filepath.Join(dir, KernelName), []byte("another kernel"), 0o644)
		},
		"no version": func(dir string) { editManifest(t, dir, `"version": "v0.7.0-12-gabc1234"`, `"version": ""`) },
		"no kernel":  func(dir string) { editManifest(t, dir, `"release": "6.1.0-56-amd64"`, `"release": ""`) },
		"kernels differ": func(dir string) {
			editManifest(t, dir, `"release": "6.1.0-56-amd64"`, `"release": "6.1.0-57-amd64"`)
		},
		"kernel is a directory": func(dir string) {
			os.Remove(filepath.Join(dir, KernelName))
			os.Mkdir(filepath.Join(dir, KernelName), 0o755)
		},
	} {
		dir, _ := fakeImage(t)
		spoil(dir)
		out := t.TempDir()
		if _, err := Build(dir, filepath.Join(out, "x.aeu"), testKey); err == nil {
			t.Errorf("Build(%s) succeeded", name)
		}
		if names := listDir(t, out); len(names) != 0 {
			t.Errorf("Build(%s) left %v", name, names)
		}
	}
	dir, _ := fakeImage(t)
	if _, err := Build(dir, filepath.Join(t.TempDir(), "x.aeu"), testKey[:10]); err == nil {
		t.Errorf("Build with a short key succeeded")
	}
}

func editManifest(t *testing.T, dir, old, new string) {
	t.Helper()
	p := filepath.Join(dir, ManifestName)
	b, _ := os.ReadFile(p)
	if !bytes.Contains(b, []byte(old)) {
		t.Fatalf("manifest lacks %s", old)
	}
	os.WriteFile(p, bytes.Replace(b, []byte(old), []byte(new), 1), 0o644)
}

func TestHeaderString(t *testing.T) {
	h := Header{Product: testProduct, Version: "v1.2", Kernel: "6.1.0-40-amd64", SourceDateEpoch: testEpoch}
	const want = "aeappliance v1.2 (kernel 6.1.0-40-amd64, sources of 2026-11-23T15:46:42Z)"
	if got := h.String(); got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
	if got := FileName("v1.2"); got != "update-v1.2.aeu" {
		t.Errorf("FileName(v1.2) = %q", got)
	}
}
