package tokenbundle

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func writeToken(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "tokens")
	tok := filepath.Join(dir, "7c3e6a1f-token")
	if err := os.MkdirAll(tok, 0o700); err != nil {
		t.Fatal(err)
	}
	for name, body := range map[string]string{"token.object": "token", "4b1d.object": "private key, PIN-encrypted", "4b1d.lock": ""} {
		if err := os.WriteFile(filepath.Join(tok, name), []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// A sealed token opens, with its passphrase only, into the same files, mode 0600, and the bundle
// is ASCII armor that a console can carry.
func TestSealOpen(t *testing.T) {
	src := writeToken(t)
	b, err := Seal(src, "correct horse battery")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(b, []byte("-----BEGIN AGE ENCRYPTED FILE-----\n")) || bytes.Contains(b, []byte("PIN-encrypted")) {
		t.Fatalf("the bundle is not armored age ciphertext:\n%s", b)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if len(l) > 64 {
			t.Fatalf("a line of %d characters cannot be pasted at a console: %q", len(l), l)
		}
	}
	dst := filepath.Join(t.TempDir(), "tokens")
	if err := Open(b, "wrong horse battery", dst); !errors.Is(err, ErrPassphrase) {
		t.Fatalf("a wrong passphrase: %v, want ErrPassphrase", err)
	}
	if _, err := os.Stat(dst); !os.IsNotExist(err) {
		t.Fatalf("a failed Open left %s behind", dst)
	}
	// Pasted with a line of noise before it and CRLF line ends, as a console may deliver it.
	pasted := append([]byte("appliance> \r\n"), bytes.ReplaceAll(b, []byte("\n"), []byte("\r\n"))...)
	if err := Open(pasted, "correct horse battery", dst); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(dst, "7c3e6a1f-token", "4b1d.object"))
	if err != nil || string(got) != "private key, PIN-encrypted" {
		t.Fatalf("the opened token: %q, %v", got, err)
	}
	if fi, _ := os.Stat(filepath.Join(dst, "7c3e6a1f-token", "token.object")); fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want 0600", fi.Mode().Perm())
	}
	if _, err := Seal(src, "short"); err == nil {
		t.Error("a short passphrase was accepted")
	}
	if _, err := Seal(t.TempDir(), "correct horse battery"); err == nil {
		t.Error("an empty token directory was sealed")
	}
}

func archive(t testing.TB, entries ...*tar.Header) []byte {
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	for _, h := range entries {
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if h.Typeflag == tar.TypeReg {
			tw.Write(bytes.Repeat([]byte("x"), int(h.Size)))
		}
	}
	tw.Close()
	gz.Close()
	return buf.Bytes()
}

// An archive that names anything but token files, or links, writes nothing.
func TestExtractRefuses(t *testing.T) {
	for name, entries := range map[string][]*tar.Header{
		"parent":   {{Name: "../escape", Typeflag: tar.TypeReg, Size: 1}},
		"absolute": {{Name: "/etc/passwd", Typeflag: tar.TypeReg, Size: 1}},
		"deep":     {{Name: "a/", Typeflag: tar.TypeDir}, {Name: "a/b/", Typeflag: tar.TypeDir}},
		"symlink":  {{Name: "a/", Typeflag: tar.TypeDir}, {Name: "a/l", Typeflag: tar.TypeSymlink, Linkname: "/etc"}},
		"hardlink": {{Name: "h", Typeflag: tar.TypeLink, Linkname: "x"}},
		"unclean":  {{Name: "a/./b", Typeflag: tar.TypeReg, Size: 1}},
		"empty":    {{Name: "a/", Typeflag: tar.TypeDir}},
		"large":    {{Name: "big", Typeflag: tar.TypeReg, Size: maxContent + 1}},
	} {
		dst := filepath.Join(t.TempDir(), "tokens")
		if err := Extract(bytes.NewReader(archive(t, entries...)), dst); err == nil {
			t.Errorf("%s: extracted", name)
		}
		if _, err := os.Stat(dst); !os.IsNotExist(err) {
			t.Errorf("%s: left %s behind", name, dst)
		}
	}
}

// FuzzExtract: no archive makes Extract write outside dst or panic.
func FuzzExtract(f *testing.F) {
	f.Add(archive(f, &tar.Header{Name: "t/", Typeflag: tar.TypeDir}, &tar.Header{Name: "t/o", Typeflag: tar.TypeReg, Size: 3}))
	f.Add(archive(f, &tar.Header{Name: "../x", Typeflag: tar.TypeReg, Size: 1}))
	f.Fuzz(func(t *testing.T, b []byte) {
		base := t.TempDir()
		dst := filepath.Join(base, "tokens")
		err := Extract(bytes.NewReader(b), dst)
		entries, _ := os.ReadDir(base)
		if len(entries) > 1 || len(entries) == 1 && entries[0].Name() != "tokens" {
			t.Fatalf("Extract wrote beside dst: %v", entries)
		}
		if err != nil && len(entries) != 0 {
			t.Fatal("a failed Extract left dst behind")
		}
	})
}
