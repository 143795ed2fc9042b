package store

import (
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestCorrupt(t *testing.T) {
	pki := newPKI(t)
	otherKey, err := encodeKey(ecKey(t))
	if err != nil {
		t.Fatal(err)
	}
	write := func(data []byte, mode os.FileMode) func(t *testing.T, path string) {
		return func(t *testing.T, path string) {
			if err := os.WriteFile(path, data, mode); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(path, mode); err != nil {
				t.Fatal(err)
			}
		}
	}
	chmod := func(mode os.FileMode) func(t *testing.T, path string) {
		return func(t *testing.T, path string) {
			if err := os.Chmod(path, mode); err != nil {
				t.Fatal(err)
			}
		}
	}
	remove := func(t *testing.T, path string) {
		if err := os.Remove(path); err != nil {
			t.Fatal(err)
		}
	}
	certPEM := encodeCerts(pki.cert)
	garbled := []byte(strings.Replace(string(certPEM), "MII", "MIX", 1))
	encrypted := pem.EncodeToMemory(&pem.Block{Type: pemPKCS1, Headers: map[string]string{"Proc-Type": "4,ENCRYPTED", "DEK-Info": "AES-128-CBC,00"}, Bytes: []byte{1}})

	// Every case starts from a store with a current certificate "Web", an archived one and a
	// pending request "Mail", and breaks one file.
	for _, tc := range []struct {
		name   string
		file   string // below the store
		damage func(t *testing.T, path string)
		read   string // the method that must fail: Current, Archived or Pending
	}{
		{"garbled cert.pem", "Web/cert.pem", write([]byte("not a certificate"), 0o644), "Current"},
		{"bad base64 in cert.pem", "Web/cert.pem", write(garbled, 0o644), "Current"},
		{"two certificates in cert.pem", "Web/cert.pem", write(append(certPEM, certPEM...), 0o644), "Current"},
		{"key in cert.pem", "Web/cert.pem", write(otherKey, 0o644), "Current"},
		{"empty cert.pem", "Web/cert.pem", write(nil, 0o644), "Current"},
		{"missing cert.pem", "Web/cert.pem", remove, "Current"},
		{"cert.pem a directory", "Web/cert.pem", func(t *testing.T, path string) {
			remove(t, path)
			if err := os.Mkdir(path, 0o700); err != nil {
				t.Fatal(err)
			}
		}, "Current"},
		{"garbled chain.pem", "Web/chain.pem", write([]byte("garbage"), 0o644), "Current"},
		{"malformed block before a good one in chain.pem", "Web/chain.pem", write(append([]byte("-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n"), certPEM...), 0o644), "Current"},
		{"trailing garbage in chain.pem", "Web/chain.pem", write(append(certPEM, "garbage"...), 0o644), "Current"},
		{"key that does not match", "Web/key.pem", write(otherKey, 0o600), "Current"},
		{"key.pem mode 0644", "Web/key.pem", chmod(0o644), "Current"},
		{"key.pem mode 0640", "Web/key.pem", chmod(0o640), "Current"},
		{"garbled key.pem", "Web/key.pem", write([]byte("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"), 0o600), "Current"},
		{"encrypted key.pem", "Web/key.pem", write(encrypted, 0o600), "Current"},
		{"certificate in key.pem", "Web/key.pem", write(certPEM, 0o600), "Current"},
		{"garbled archived cert.pem", "archive/Web/*/cert.pem", write([]byte("garbage"), 0o644), "Archived"},
		{"archived key that does not match", "archive/Web/*/key.pem", write(otherKey, 0o600), "Archived"},
		{"garbled request.json", "pending/Mail/request.json", write([]byte(`{"template": "Mail", "request_id": `), 0o644), "Pending"},
		{"request.json of another template", "pending/Mail/request.json", write([]byte(`{"template": "Web", "request_id": 7}`), 0o644), "Pending"},
		{"request.json without ID", "pending/Mail/request.json", write([]byte(`{"template": "Mail"}`), 0o644), "Pending"},
		{"request.json not an object", "pending/Mail/request.json", write([]byte(`[]`), 0o644), "Pending"},
		{"missing request.json", "pending/Mail/request.json", remove, "Pending"},
		{"missing pending key", "pending/Mail/key.pem", remove, "Pending"},
		{"pending key.pem mode 0604", "pending/Mail/key.pem", chmod(0o604), "Pending"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			s := openStore(t, dir)
			mustInstall(t, s, pki, "Web")
			mustInstall(t, s, pki, "Web")
			if err := s.AddPending(PendingRequest{Template: "Mail", RequestID: 7, Submitted: epoch, Key: ecKey(t)}); err != nil {
				t.Fatal(err)
			}
			matches, err := filepath.Glob(filepath.Join(dir, tc.file))
			if err != nil || len(matches) != 1 {
				t.Fatalf("Glob(%s) = %v, %v", tc.file, matches, err)
			}
			path := matches[0]
			tc.damage(t, path)
			before := snapshot(t, dir)
			reads := map[string]func() error{
				"Current":  func() error { _, err := s.Current(); return err },
				"Archived": func() error { _, err := s.Archived(); return err },
				"Pending":  func() error { _, err := s.Pending(); return err },
			}
			for name, read := range reads {
				err := read()
				if name != tc.read {
					if err != nil {
						t.Errorf("%s = %v, want nil", name, err)
					}
					continue
				}
				if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), path) {
					t.Errorf("%s = %v, want ErrCorrupt naming %s", name, err, path)
				}
			}
			checkUnchanged(t, before, snapshot(t, dir))
		})
	}
}

// TestCorruptNotOverwritten checks that the changes refuse to act on a corrupt store.
func TestCorruptNotOverwritten(t *testing.T) {
	pki := newPKI(t)
	dir := t.TempDir()
	s := openStore(t, dir)
	cert, key := mustInstall(t, s, pki, "Web")
	if err := s.AddPending(PendingRequest{Template: "Web", RequestID: 3, Submitted: time.Now(), Key: key}); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"Web/cert.pem", "pending/Web/request.json"} {
		if err := os.WriteFile(filepath.Join(dir, f), []byte("garbage"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	before := snapshot(t, dir)
	newKey := ecKey(t)
	for name, op := range map[string]func() error{
		"Install":     func() error { _, err := s.Install("Web", pki.issue(t, "Web", newKey), nil, newKey); return err },
		"Archive":     func() error { _, err := s.Archive("Web", cert.SerialNumber); return err },
		"Remove":      func() error { return s.Remove("Web", cert.SerialNumber) },
		"AddPending":  func() error { return s.AddPending(PendingRequest{Template: "Web", RequestID: 4, Key: newKey}) },
		"DropPending": func() error { return s.DropPending("Web", 3) },
	} {
		if err := op(); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s on a corrupt store = %v, want ErrCorrupt", name, err)
		}
	}
	checkUnchanged(t, before, snapshot(t, dir))
}
