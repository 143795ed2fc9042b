package update

import (
	"bytes"
	"crypto/ed25519"
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

// FuzzVerify feeds Verify mutated bundles. It must never panic, must leave destDir empty
// whenever it fails, and when it succeeds (only a bundle whose signed header is the
// original can) the files must be the ones the signed header describes.
func FuzzVerify(f *testing.F) {
	b, h, files := testBundle(f)
	ms := members(f, b)
	f.Add(b)
	f.Add(b[:len(b)/2])
	f.Add([]byte{})
	f.Add(pack(f, []member{ms[0], ms[1], ms[3], ms[2], ms[4]}))
	f.Add(pack(f, append(ms, member{name: "../x", body: []byte("x")})))
	keys := []ed25519.PublicKey{testPub}
	f.Fuzz(func(t *testing.T, in []byte) {
		parent := t.TempDir()
		dest := filepath.Join(parent, "dest")
		if err := os.Mkdir(dest, 0o755); err != nil {
			t.Fatal(err)
		}
		got, err := Verify(bytes.NewReader(in), keys, testProduct, dest)
		if names := listDir(t, parent); len(names) != 1 {
			t.Fatalf("Verify wrote %v next to destDir", names)
		}
		if err != nil {
			if names := listDir(t, dest); len(names) != 0 {
				t.Fatalf("Verify failed (%v) and left %v", err, names)
			}
			return
		}
		if !reflect.DeepEqual(got, h) {
			t.Fatalf("Verify succeeded with header %+v, want %+v", got, h)
		}
		if names := listDir(t, dest); len(names) != 5 {
			t.Fatalf("Verify succeeded and left %v, want the three image files and the signed header", names)
		}
		for name, want := range files {
			if b, _ := os.ReadFile(filepath.Join(dest, name)); !bytes.Equal(b, want) {
				t.Fatalf("Verify succeeded but %s differs from the signed file", name)
			}
		}
	})
}
