package update

import (
	"archive/tar"
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"testing/iotest"
)

// member is one tar member of a hand-made bundle.
type member struct {
	name string
	typ  byte
	link string
	body []byte
	pax  map[string]string
}

// members splits a bundle into its members.
func members(t testing.TB, b []byte) []member {
	t.Helper()
	var ms []member
	tr := tar.NewReader(bytes.NewReader(b))
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return ms
		}
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		ms = append(ms, member{name: hdr.Name, typ: hdr.Typeflag, link: hdr.Linkname, body: body})
	}
}

// pack writes members as a tar archive.
func pack(t testing.TB, ms []member) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, m := range ms {
		typ := m.typ
		if typ == 0 {
			typ = tar.TypeReg
		}
		hdr := &tar.Header{Name: m.name, Typeflag: typ, Linkname: m.link, Mode: 0o644, PAXRecords: m.pax}
		if typ == tar.TypeReg {
			hdr.Size = int64(len(m.body))
		}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatal(err)
		}
		if typ == tar.TypeReg {
			tw.Write(m.body)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// resign changes the header of a bundle's members and signs it again with key: the
// signature is then valid, and only the other checks stand in the way.
func resign(t testing.TB, ms []member, key ed25519.PrivateKey, change func(*Header)) []member {
	t.Helper()
	var h Header
	if err := json.Unmarshal(ms[0].body, &h); err != nil {
		t.Fatal(err)
	}
	change(&h)
	hb, _ := json.MarshalIndent(h, "", "  ")
	hb = append(hb, '\n')
	return signed(ms, hb, key)
}

// signed replaces the header of ms with hb, signed by key.
func signed(ms []member, hb []byte, key ed25519.PrivateKey) []member {
	out := append([]member(nil), ms...)
	out[0].body = hb
	out[1].body = []byte(base64.StdEncoding.EncodeToString(ed25519.Sign(key, hb)) + "\n")
	return out
}

// flip returns a copy of b with one byte changed inside the first occurrence of part.
func flip(t testing.TB, b, part []byte) []byte {
	t.Helper()
	i := bytes.Index(b, part)
	if i < 0 {
		t.Fatalf("part not found in bundle")
	}
	c := bytes.Clone(b)
	c[i+len(part)/2] ^= 0x01
	return c
}

// refused checks that Verify refuses b with an error naming the cause, and leaves
// destDir (and its parent) as they were.
func refused(t *testing.T, name string, b []byte, keys []ed25519.PublicKey, product, want string) {
	t.Helper()
	parent := t.TempDir()
	dest := filepath.Join(parent, "dest")
	if err := os.Mkdir(dest, 0o755); err != nil {
		t.Fatal(err)
	}
	_, err := Verify(bytes.NewReader(b), keys, product, dest)
	switch {
	case err == nil:
		t.Errorf("%s: Verify succeeded, want an error containing %q", name, want)
	case !strings.Contains(err.Error(), want):
		t.Errorf("%s: Verify = %q, want an error containing %q", name, err, want)
	}
	if names := listDir(t, dest); len(names) != 0 {
		t.Errorf("%s: Verify left %v in destDir", name, names)
	}
	if names := listDir(t, parent); len(names) != 1 {
		t.Errorf("%s: Verify wrote %v next to destDir", name, names)
	}
}

func TestVerifyRefuses(t *testing.T) {
	b, h, files := testBundle(t)
	ms := members(t, b)
	trusted := []ed25519.PublicKey{testPub}
	// with returns ms with member i replaced by m.
	with := func(i int, m member) []member {
		c := append([]member(nil), ms...)
		c[i] = m
		return c
	}
	without := func(i int) []member {
		return append(append([]member(nil), ms[:i]...), ms[i+1:]...)
	}
	otherBuilt := func() []byte {
		dir, _ := fakeImage(t)
		out := filepath.Join(t.TempDir(), "other.aeu")
		if _, err := Build(dir, out, otherKey); err != nil {
			t.Fatal(err)
		}
		ob, _ := os.ReadFile(out)
		return ob
	}()
	hugeHeader := append(bytes.Clone(ms[0].body[:len(ms[0].body)-1]), bytes.Repeat([]byte(" "), MaxHeaderSize)...)
	hugeHeader = append(hugeHeader, '\n')

	tests := []struct {
		name    string
		bundle  []byte
		keys    []ed25519.PublicKey
		product string
		want    string
	}{
		{"wrong key", b, []ed25519.PublicKey{otherPub}, testProduct, "signature does not verify with any trusted key"},
		{"signed by an untrusted key", otherBuilt, trusted, testProduct, "signature does not verify with any trusted key"},
		{"untrusted key claiming a trusted key's ID", pack(t, resign(t, ms, otherKey, func(*Header) {})), trusted, testProduct,
			"signature does not verify with any trusted key"},
		{"trusted key, header names another key", pack(t, resign(t, ms, testKey, func(h *Header) { h.KeyID = KeyID(otherPub) })), trusted, testProduct,
			"bundle.json names key"},
		{"flipped byte in bundle.json", flip(t, b, []byte(h.Version)), trusted, testProduct, "signature does not verify with any trusted key"},
		{"flipped byte in bundle.sig", flip(t, b, ms[1].body[:40]), trusted, testProduct, "signature does not verify with any trusted key"},
		{"bundle.sig not base64", pack(t, with(1, member{name: SignatureName, body: []byte("not base64!\n")})), trusted, testProduct,
			"bundle.sig is not a base64 Ed25519 signature"},
		{"flipped byte in vmlinuz", flip(t, b, files[KernelName]), trusted, testProduct, "vmlinuz: SHA-256 mismatch"},
		{"flipped byte in initramfs", flip(t, b, files[InitramfsName]), trusted, testProduct, "initramfs.cpio.zst: SHA-256 mismatch"},
		{"flipped byte in manifest", flip(t, b, files[ManifestName]), trusted, testProduct, "manifest.json: SHA-256 mismatch"},
		{"modified file under a valid signature", pack(t, with(3, member{name: InitramfsName, body: content("evil", 5003)})), trusted, testProduct,
			"initramfs.cpio.zst: SHA-256 mismatch"},
		{"header lists another size", pack(t, resign(t, ms, testKey, func(h *Header) { h.Files[0].Size++ })), trusted, testProduct,
			"vmlinuz: 3001 bytes in the bundle, bundle.json says 3002"},
		{"header lists another digest", pack(t, resign(t, ms, testKey, func(h *Header) { h.Files[2].SHA256 = sha(nil) })), trusted, testProduct,
			"manifest.json: SHA-256 mismatch"},
		{"header declares a huge file", pack(t, resign(t, ms, testKey, func(h *Header) { h.Files[1].Size = MaxBundleSize })), trusted, testProduct,
			"more than a bundle may hold"},
		{"header lists two files", pack(t, resign(t, ms, testKey, func(h *Header) { h.Files = h.Files[:2] })), trusted, testProduct,
			"bundle.json: lists 2 files, want 3"},
		{"header lists files out of order", pack(t, resign(t, ms, testKey, func(h *Header) { h.Files[0], h.Files[1] = h.Files[1], h.Files[0] })), trusted, testProduct,
			`bundle.json: file 1 is "initramfs.cpio.zst", want "vmlinuz"`},
		{"header with a path", pack(t, resign(t, ms, testKey, func(h *Header) { h.Files[0].Name = "../vmlinuz" })), trusted, testProduct,
			`bundle.json: file 1 is "../vmlinuz", want "vmlinuz"`},
		{"format 2", pack(t, resign(t, ms, testKey, func(h *Header) { h.Format = 2 })), trusted, testProduct, "bundle format 2"},
		{"no version", pack(t, resign(t, ms, testKey, func(h *Header) { h.Version = "" })), trusted, testProduct, "no version"},
		{"signed garbage header", pack(t, signed(ms, []byte("not json\n"), testKey)), trusted, testProduct, "not an update bundle: bundle.json"},
		{"product mismatch", b, trusted, "another product", `bundle for product "` + testProduct + `", not "another product"`},
		{"truncated bundle", b[:bytes.Index(b, files[InitramfsName])+100], trusted, testProduct, "initramfs.cpio.zst: truncated bundle"},
		{"extra member", pack(t, append(slices.Clone(ms), member{name: "extra", body: []byte("x")})), trusted, testProduct,
			`not an update bundle: extra member "extra" after manifest.json`},
		{"duplicate last member", pack(t, append(slices.Clone(ms), ms[4])), trusted, testProduct, `extra member "manifest.json"`},
		{"duplicate member", pack(t, append(slices.Clone(ms[:3]), ms[2:]...)), trusted, testProduct,
			`member 4 is "vmlinuz", want "initramfs.cpio.zst"`},
		{"missing initramfs", pack(t, without(3)), trusted, testProduct, `member 4 is "manifest.json", want "initramfs.cpio.zst"`},
		{"missing manifest", pack(t, without(4)), trusted, testProduct, "not an update bundle: manifest.json missing"},
		{"missing signature", pack(t, without(1)), trusted, testProduct, `member 2 is "vmlinuz", want "bundle.sig"`},
		{"missing header", pack(t, without(0)), trusted, testProduct, `member 1 is "bundle.sig", want "bundle.json"`},
		{"files swapped", pack(t, []member{ms[0], ms[1], ms[3], ms[2], ms[4]}), trusted, testProduct,
			`member 3 is "initramfs.cpio.zst", want "vmlinuz"`},
		{"signature before header", pack(t, []member{ms[1], ms[0], ms[2], ms[3], ms[4]}), trusted, testProduct,
			`member 1 is "bundle.sig", want "bundle.json"`},
		{"member ../x", pack(t, with(2, member{name: "../x", body: ms[2].body})), trusted, testProduct, `member 3 is "../x", want "vmlinuz"`},
		{"member ../vmlinuz", pack(t, with(2, member{name: "../vmlinuz", body: ms[2].body})), trusted, testProduct, `member 3 is "../vmlinuz"`},
		{"member /etc/x", pack(t, with(2, member{name: "/etc/x", body: ms[2].body})), trusted, testProduct, `member 3 is "/etc/x", want "vmlinuz"`},
		{"member ./vmlinuz", pack(t, with(2, member{name: "./vmlinuz", body: ms[2].body})), trusted, testProduct, `member 3 is "./vmlinuz"`},
		{"symlink member", pack(t, with(2, member{name: KernelName, typ: tar.TypeSymlink, link: "/etc/passwd"})), trusted, testProduct,
			"not an update bundle: vmlinuz is not a regular file"},
		{"hard link member", pack(t, with(3, member{name: InitramfsName, typ: tar.TypeLink, link: KernelName})), trusted, testProduct,
			"not an update bundle: initramfs.cpio.zst is not a regular file"},
		{"directory member", pack(t, with(4, member{name: ManifestName, typ: tar.TypeDir})), trusted, testProduct,
			"not an update bundle: manifest.json is not a regular file"},
		{"symlink header", pack(t, with(0, member{name: HeaderName, typ: tar.TypeSymlink, link: "/etc/appliance/release.json"})), trusted, testProduct,
			"not an update bundle: bundle.json is not a regular file"},
		{"PAX records", pack(t, with(2, member{name: KernelName, body: ms[2].body, pax: map[string]string{"comment": "hi"}})), trusted, testProduct,
			"not an update bundle: vmlinuz has PAX records"},
		{"oversize header", pack(t, signed(ms, hugeHeader, testKey)), trusted, testProduct,
			fmt.Sprintf("not an update bundle: bundle.json is %d bytes, more than 65536", len(hugeHeader))},
		{"oversize signature", pack(t, with(1, member{name: SignatureName, body: bytes.Repeat([]byte("A"), MaxSignatureSize+1)})), trusted, testProduct,
			"not an update bundle: bundle.sig is 1025 bytes, more than 1024"},
		{"not a tar", bytes.Repeat([]byte("this is not a tar archive\n"), 100), trusted, testProduct, "not an update bundle: archive/tar: invalid tar header"},
		{"short junk", []byte("PK\x03\x04"), trusted, testProduct, "truncated bundle"},
		{"empty input", nil, trusted, testProduct, "not an update bundle: empty input"},
		{"only an end-of-archive marker", make([]byte, 1024), trusted, testProduct, "not an update bundle: bundle.json missing"},
		{"garbage after the last member", append(bytes.Clone(b[:len(b)-1024]), bytes.Repeat([]byte("x"), 1024)...), trusted, testProduct,
			"not an update bundle: end of archive"},
	}
	for _, tt := range tests {
		refused(t, tt.name, tt.bundle, tt.keys, tt.product, tt.want)
	}
}

// TestVerifyTruncated cuts the bundle everywhere up to the end of its last file: every
// cut must be refused and leave nothing behind.
func TestVerifyTruncated(t *testing.T) {
	b, _, files := testBundle(t)
	end := bytes.Index(b, files[ManifestName]) + len(files[ManifestName])
	var cuts []int
	for n := 0; n < end; n += 97 {
		cuts = append(cuts, n)
	}
	for n := 512; n < end; n += 512 { // member boundaries and their neighbours
		cuts = append(cuts, n-1, n, n+1)
	}
	cuts = append(cuts, end-1)
	for _, n := range cuts {
		dest := t.TempDir()
		_, err := Verify(bytes.NewReader(b[:n]), []ed25519.PublicKey{testPub}, testProduct, dest)
		if err == nil {
			t.Errorf("Verify(first %d of %d bytes) succeeded", n, len(b))
			continue
		}
		if msg := err.Error(); !strings.Contains(msg, "truncated") && !strings.Contains(msg, "missing") && !strings.Contains(msg, "empty input") {
			t.Errorf("Verify(first %d bytes) = %q, want it to say the bundle is truncated", n, msg)
		}
		if names := listDir(t, dest); len(names) != 0 {
			t.Errorf("Verify(first %d bytes) left %v", n, names)
		}
	}
}

func TestVerifyDestination(t *testing.T) {
	b, _, _ := testBundle(t)
	keys := []ed25519.PublicKey{testPub}

	// A non-empty destination is refused and kept as it was.
	dest := t.TempDir()
	os.WriteFile(filepath.Join(dest, KernelName), []byte("the running kernel"), 0o644)
	if _, err := Verify(bytes.NewReader(b), keys, testProduct, dest); err == nil || !strings.Contains(err.Error(), "not empty") {
		t.Errorf("Verify into a non-empty directory = %v, want an error saying so", err)
	}
	if got, _ := os.ReadFile(filepath.Join(dest, KernelName)); string(got) != "the running kernel" {
		t.Errorf("Verify into a non-empty directory changed its file: %q", got)
	}

	if _, err := Verify(bytes.NewReader(b), keys, testProduct, filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Errorf("Verify into a missing directory succeeded")
	}
	for name, keys := range map[string][]ed25519.PublicKey{
		"no keys":   nil,
		"short key": {testPub[:16]},
	} {
		if _, err := Verify(bytes.NewReader(b), keys, testProduct, t.TempDir()); err == nil {
			t.Errorf("Verify with %s succeeded", name)
		}
	}
	if _, err := Verify(bytes.NewReader(b), keys, "", t.TempDir()); err == nil {
		t.Errorf("Verify with no product succeeded")
	}

	// A read error of the stream is reported as such, and cleaned up after.
	dest = t.TempDir()
	boom := errors.New("boom")
	r := io.MultiReader(bytes.NewReader(b[:len(b)/2]), iotest.ErrReader(boom))
	if _, err := Verify(r, keys, testProduct, dest); !errors.Is(err, boom) {
		t.Errorf("Verify(failing reader) = %v, want it to wrap %v", err, boom)
	}
	if names := listDir(t, dest); len(names) != 0 {
		t.Errorf("Verify(failing reader) left %v", names)
	}
}

func TestBoundedReader(t *testing.T) {
	for _, tt := range []struct {
		in       string
		wantErr  error
		exceeded bool
	}{
		{"0123456789", nil, false},         // exactly the limit
		{"012345678", nil, false},          // under it
		{"0123456789a", errTooLarge, true}, // one byte over
	} {
		br := &boundedReader{r: iotest.HalfReader(strings.NewReader(tt.in)), max: 10}
		got, err := io.ReadAll(br)
		if err != tt.wantErr || br.exceeded != tt.exceeded {
			t.Errorf("ReadAll(bounded %q) = %q, %v (exceeded %v), want error %v (exceeded %v)", tt.in, got, err, br.exceeded, tt.wantErr, tt.exceeded)
		}
		if len(got) > 10 {
			t.Errorf("ReadAll(bounded %q) read %d bytes, more than 10", tt.in, len(got))
		}
	}
}
