package store

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestInstallCurrent(t *testing.T) {
	pki := newPKI(t)
	for _, tc := range []struct {
		name string
		key  func(*testing.T) crypto.Signer
	}{
		{"ecdsa", ecKey},
		{"ed25519", edKey},
		{"rsa", getRSAKey},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "var", "aeagent")
			s := openStore(t, dir)
			key := tc.key(t)
			cert := pki.issue(t, "Workstation", key)
			replaced, err := s.Install("Workstation", cert, pki.chain(), key)
			if err != nil || replaced != nil {
				t.Fatalf("Install = %v, %v, want nil, nil", replaced, err)
			}
			certs, err := s.Current()
			if err != nil || len(certs) != 1 {
				t.Fatalf("Current = %d certificates, %v, want 1, nil", len(certs), err)
			}
			checkCert(t, certs[0], "Workstation", cert, pki.chain(), key)
			if want := filepath.Join(dir, "Workstation"); certs[0].Path != want {
				t.Errorf("Path = %s, want %s", certs[0].Path, want)
			}
			for path, want := range map[string]string{
				dir: "0700",
				filepath.Join(dir, "Workstation", keyFile):  "0600",
				filepath.Join(dir, "Workstation", certFile): "0644",
				filepath.Join(dir, lockFile):                "0600",
			} {
				if got := mode(t, path); got != want {
					t.Errorf("mode of %s = %s, want %s", path, got, want)
				}
			}
			if left := stagingLeft(t, dir); len(left) > 0 {
				t.Errorf("staging left behind: %v", left)
			}
			checkOpenSSL(t, filepath.Join(dir, "Workstation"), pki)
		})
	}
}

// checkOpenSSL reads the files of a certificate directory with openssl, as an admin would.
func checkOpenSSL(t *testing.T, dir string, pki *testPKI) {
	t.Helper()
	if _, err := exec.LookPath("openssl"); err != nil {
		skipOrFail(t, "openssl is not on PATH: %v", err)
	}
	run := func(args ...string) string {
		t.Helper()
		out, err := exec.Command("openssl", args...).CombinedOutput()
		if err != nil {
			t.Fatalf("openssl %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	certPub := run("x509", "-in", filepath.Join(dir, certFile), "-noout", "-pubkey")
	keyPub := run("pkey", "-in", filepath.Join(dir, keyFile), "-pubout")
	if certPub != keyPub {
		t.Errorf("openssl: the public key of cert.pem\n%s differs from that of key.pem\n%s", certPub, keyPub)
	}
	if subj := run("x509", "-in", filepath.Join(dir, chainFile), "-noout", "-subject"); !strings.Contains(subj, pki.cert.Subject.CommonName) {
		t.Errorf("openssl x509 -subject of chain.pem = %q, want the CA %q", subj, pki.cert.Subject.CommonName)
	}
}

func TestReplaceArchives(t *testing.T) {
	pki := newPKI(t)
	dir := t.TempDir()
	s := openStore(t, dir)
	first, firstKey := mustInstall(t, s, pki, "Web Server")

	s.now = func() time.Time { return epoch.Add(48 * time.Hour) }
	second := pki.issue(t, "Web Server", firstKey) // a same-key renewal
	replaced, err := s.Install("Web Server", second, nil, firstKey)
	if err != nil {
		t.Fatalf("second Install = %v", err)
	}
	wantPath := filepath.Join(dir, archiveDir, "Web%20Server", first.SerialNumber.Text(16)+"-20250316T150926Z")
	if replaced == nil || replaced.Path != wantPath || !replaced.Certificate.Equal(first) {
		t.Fatalf("second Install replaced %+v, want the first certificate in %s", replaced, wantPath)
	}

	s.now = func() time.Time { return epoch.Add(72 * time.Hour) }
	third, thirdKey := mustInstall(t, s, pki, "Web Server")
	// The same certificate archived twice in the same second gets a second name.
	for range 2 {
		if _, err := s.Install("Web Server", third, pki.chain(), thirdKey); err != nil {
			t.Fatalf("Install of the same certificate again = %v", err)
		}
	}

	cur, err := s.Current()
	if err != nil || len(cur) != 1 {
		t.Fatalf("Current = %d certificates, %v, want 1, nil", len(cur), err)
	}
	checkCert(t, cur[0], "Web Server", third, pki.chain(), thirdKey)

	arch, err := s.Archived()
	if err != nil {
		t.Fatalf("Archived = %v", err)
	}
	want := []struct {
		cert  *x509.Certificate
		chain []*x509.Certificate
		key   crypto.Signer
		base  string
	}{
		{third, pki.chain(), thirdKey, third.SerialNumber.Text(16) + "-20250317T150926Z-2"},
		{third, pki.chain(), thirdKey, third.SerialNumber.Text(16) + "-20250317T150926Z"},
		{second, nil, firstKey, second.SerialNumber.Text(16) + "-20250317T150926Z"},
		{first, pki.chain(), firstKey, first.SerialNumber.Text(16) + "-20250316T150926Z"},
	}
	if len(arch) != len(want) {
		t.Fatalf("Archived = %d certificates, want %d", len(arch), len(want))
	}
	for i, w := range want {
		checkCert(t, arch[i], "Web Server", w.cert, w.chain, w.key)
		if got := filepath.Base(arch[i].Path); got != w.base {
			t.Errorf("Archived()[%d] is in %s, want %s", i, got, w.base)
		}
	}
}

func TestArchiveRemove(t *testing.T) {
	pki := newPKI(t)
	other := big.NewInt(0xdead)
	for _, tc := range []struct {
		name     string
		op       func(s *Store, serial *big.Int) error
		archived int // certificates in the archive afterwards
	}{
		{"Archive", func(s *Store, serial *big.Int) error { _, err := s.Archive("Web", serial); return err }, 1},
		{"Remove", func(s *Store, serial *big.Int) error { return s.Remove("Web", serial) }, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			s := openStore(t, dir)
			cert, _ := mustInstall(t, s, pki, "Web")
			before := snapshot(t, dir)
			if err := tc.op(s, other); !errors.Is(err, ErrNotFound) {
				t.Errorf("%s(wrong serial) = %v, want ErrNotFound", tc.name, err)
			}
			checkUnchanged(t, before, snapshot(t, dir))

			if err := tc.op(s, cert.SerialNumber); err != nil {
				t.Fatalf("%s(serial) = %v", tc.name, err)
			}
			if cur, err := s.Current(); err != nil || len(cur) != 0 {
				t.Errorf("Current after %s = %d certificates, %v, want none", tc.name, len(cur), err)
			}
			if _, err := os.Stat(filepath.Join(dir, "Web")); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("the directory of Web is still there: %v", err)
			}
			if arch, err := s.Archived(); err != nil || len(arch) != tc.archived {
				t.Errorf("Archived after %s = %d certificates, %v, want %d", tc.name, len(arch), err, tc.archived)
			}
			if left := stagingLeft(t, dir); len(left) > 0 {
				t.Errorf("staging left behind: %v", left)
			}
			if err := tc.op(s, cert.SerialNumber); !errors.Is(err, ErrNotFound) {
				t.Errorf("%s again = %v, want ErrNotFound", tc.name, err)
			}
		})
	}
}

func TestTemplateNames(t *testing.T) {
	pki := newPKI(t)
	dir := t.TempDir()
	s := openStore(t, dir)
	names := map[string]string{ // template name: its directory
		"My Template":      "My%20Template",
		"a/b":              "a%2Fb",
		"../up":            "%2E.%2Fup",
		"archive":          "%61rchive",
		"pending":          "%70ending",
		".hidden":          "%2Ehidden",
		"Zertifikat-Übung": "Zertifikat-%C3%9Cbung",
		"100%":             "100%25",
		"policy.json":      "policy%2Ejson",
		"Machine":          "Machine",
	}
	for name := range names {
		mustInstall(t, s, pki, name)
	}
	certs, err := s.Current()
	if err != nil {
		t.Fatalf("Current = %v", err)
	}
	var got []string
	for _, c := range certs {
		got = append(got, c.Template)
		if want := filepath.Join(dir, names[c.Template]); c.Path != want || s.Path(c.Template) != want {
			t.Errorf("%q is in %s, Path = %s, want %s", c.Template, c.Path, s.Path(c.Template), want)
		}
		if c.Certificate.Subject.CommonName != c.Template {
			t.Errorf("the certificate of %q is that of %q", c.Template, c.Certificate.Subject.CommonName)
		}
	}
	want := []string{"../up", ".hidden", "100%", "Machine", "My Template", "Zertifikat-Übung", "a/b", "archive", "pending", "policy.json"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("Current templates = %q, want %q", got, want)
	}
	for _, bad := range []string{"", "\xff"} {
		if _, err := s.Install(bad, pki.cert, nil, pki.key); err == nil {
			t.Errorf("Install(%q) succeeded, want an error", bad)
		}
		if p := s.Path(bad); p != "" {
			t.Errorf("Path(%q) = %q, want \"\"", bad, p)
		}
	}
}

// signer hides the type of a key.
type signer struct{ crypto.Signer }

func TestInstallRefused(t *testing.T) {
	pki := newPKI(t)
	key := ecKey(t)
	cert := pki.issue(t, "Web", key)
	for _, tc := range []struct {
		name     string
		template string
		cert     *x509.Certificate
		chain    []*x509.Certificate
		key      crypto.Signer
	}{
		{"key of another certificate", "Web", cert, pki.chain(), ecKey(t)},
		{"RSA key for an ECDSA certificate", "Web", cert, nil, getRSAKey(t)},
		{"no key", "Web", cert, nil, nil},
		{"nil RSA key", "Web", cert, nil, (*rsa.PrivateKey)(nil)},
		{"key of unknown type", "Web", cert, nil, signer{key}},
		{"no certificate", "Web", nil, nil, key},
		{"certificate not parsed", "Web", &x509.Certificate{PublicKey: key.Public()}, nil, key},
		{"nil chain certificate", "Web", cert, []*x509.Certificate{nil}, key},
		{"empty template name", "", cert, nil, key},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			s := openStore(t, dir)
			old, oldKey := mustInstall(t, s, pki, "Web")
			before := snapshot(t, dir)
			if _, err := s.Install(tc.template, tc.cert, tc.chain, tc.key); err == nil {
				t.Errorf("Install succeeded, want an error")
			} else if !strings.HasPrefix(err.Error(), "store: installing") {
				t.Errorf("Install = %q, want it to say what failed", err)
			}
			checkUnchanged(t, before, snapshot(t, dir))
			cur, err := s.Current()
			if err != nil || len(cur) != 1 {
				t.Fatalf("Current = %d certificates, %v, want 1", len(cur), err)
			}
			checkCert(t, cur[0], "Web", old, pki.chain(), oldKey)
		})
	}
}

func TestLock(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir)
	if err != nil {
		t.Fatalf("Open = %v", err)
	}
	if s2, err := Open(dir); !errors.Is(err, ErrLocked) {
		t.Errorf("second Open = %v, want ErrLocked", err)
		if s2 != nil {
			s2.Close()
		}
	}
	if path, err := exec.LookPath("flock"); err == nil {
		// Another process is refused too.
		out, err := exec.Command(path, "--nonblock", filepath.Join(dir, lockFile), "true").CombinedOutput()
		if err == nil {
			t.Errorf("flock(1) took the lock of an open store: %s", out)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close = %v", err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close = %v, want nil", err)
	}
	if _, err := s.Current(); !errors.Is(err, os.ErrClosed) {
		t.Errorf("Current after Close = %v, want os.ErrClosed", err)
	}
	s2, err := Open(dir)
	if err != nil {
		t.Fatalf("Open after Close = %v", err)
	}
	s2.Close()
}

func TestOpen(t *testing.T) {
	dir := t.TempDir()
	leftovers := map[string]bool{ // path below dir: removed by Open
		".staging-xyz/cert.pem":        true,
		".staging-abc/gone/key.pem":    true,
		".staging-123.json":            true,
		"state.json":                   false,
		"Web/cert.pem":                 false,
		"pending/.staging-x/cert.pem":  false,
		"archive/Web/.staging-1/x.pem": false,
	}
	for name := range leftovers {
		path := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	s := openStore(t, dir)
	for name, removed := range leftovers {
		top := strings.Split(name, "/")[0]
		_, err := os.Stat(filepath.Join(dir, top))
		if gone := errors.Is(err, os.ErrNotExist); gone != removed {
			t.Errorf("after Open, %s gone = %v, want %v", top, gone, removed)
		}
	}
	if got := mode(t, s.Dir()); got != "0755" {
		t.Errorf("Open changed the mode of an existing directory to %s", got)
	}

	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if s, err := Open(file); err == nil {
		s.Close()
		t.Errorf("Open(a file) succeeded, want an error")
	}
}

func TestReadOnly(t *testing.T) {
	pki := newPKI(t)
	dir := t.TempDir()
	s := openStore(t, dir)
	key := ecKey(t)
	cert := pki.issue(t, "Admin", key)
	ecDER, err := x509.MarshalECPrivateKey(key.(*ecdsa.PrivateKey))
	if err != nil {
		t.Fatal(err)
	}
	rsaCert := pki.issue(t, "Old RSA", getRSAKey(t))
	files := map[string][]byte{
		// An admin dropped certificates in, with keys in the older formats and text openssl writes.
		"Admin/cert.pem":     append([]byte("subject=CN=Admin\n"), encodeCerts(cert)...),
		"Admin/key.pem":      pem.EncodeToMemory(&pem.Block{Type: pemSEC1, Bytes: ecDER}),
		"Old%20RSA/cert.pem": encodeCerts(rsaCert),
		"Old%20RSA/key.pem":  pem.EncodeToMemory(&pem.Block{Type: pemPKCS1, Bytes: x509.MarshalPKCS1PrivateKey(getRSAKey(t).(*rsa.PrivateKey))}),
		// No key: held without it. No chain: an empty one.
		"Keyless/cert.pem": encodeCerts(pki.issue(t, "Keyless", ecKey(t))),
		// Ignored: not canonical names, stray files, empty directories, state.
		"Old RSA/cert.pem":       []byte("garbage"),
		"%4Fld/cert.pem":         []byte("garbage"),
		"stray.pem":              []byte("garbage"),
		"pending/x.pem":          []byte("garbage"),
		"archive/Web/x/cert.pem": []byte("garbage"),
		"state.json":             []byte("{}"),
	}
	for name, data := range files {
		path := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for _, empty := range []string{"Empty", "pending/Empty", "archive/Empty"} {
		if err := os.Mkdir(filepath.Join(dir, empty), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	before := snapshot(t, dir)
	certs, err := s.Current()
	if err != nil || len(certs) != 3 {
		t.Fatalf("Current = %d certificates, %v, want 3", len(certs), err)
	}
	checkCert(t, certs[0], "Admin", cert, nil, key)
	checkCert(t, certs[1], "Keyless", certs[1].Certificate, nil, nil)
	checkCert(t, certs[2], "Old RSA", rsaCert, nil, getRSAKey(t))
	if p, err := s.Pending(); err != nil || len(p) != 0 {
		t.Errorf("Pending = %d requests, %v, want none", len(p), err)
	}
	if a, err := s.Archived(); err != nil || len(a) != 0 {
		t.Errorf("Archived = %d certificates, %v, want none", len(a), err)
	}
	checkUnchanged(t, before, snapshot(t, dir))

	// Install over the empty directory; the empty one is not archived.
	if replaced, err := s.Install("Empty", cert, nil, key); err != nil || replaced != nil {
		t.Errorf("Install over an empty directory = %v, %v, want nil, nil", replaced, err)
	}
	if !bytes.Equal(mustRead(t, filepath.Join(dir, "Empty", certFile)), encodeCerts(cert)) {
		t.Errorf("Install over an empty directory did not write cert.pem")
	}
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// TestInstallRollback makes the last step of Install fail after the old certificate has gone to
// the archive: it must come back.
func TestInstallRollback(t *testing.T) {
	pki := newPKI(t)
	dir := t.TempDir()
	s := openStore(t, dir)
	old, oldKey := mustInstall(t, s, pki, "Web")
	before := snapshot(t, dir)
	failure := errors.New("injected failure")
	s.place = func(from, to string) error {
		if _, err := os.Stat(filepath.Join(dir, "Web")); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("the old certificate is still in place when the new one is renamed in: %v", err)
		}
		return failure
	}
	key := ecKey(t)
	if _, err := s.Install("Web", pki.issue(t, "Web", key), nil, key); !errors.Is(err, failure) {
		t.Errorf("Install = %v, want the injected failure", err)
	}
	after := snapshot(t, dir)
	delete(after, "archive") // made, and left empty
	delete(after, "archive/Web")
	checkUnchanged(t, before, after)
	cur, err := s.Current()
	if err != nil || len(cur) != 1 {
		t.Fatalf("Current = %d certificates, %v, want 1", len(cur), err)
	}
	checkCert(t, cur[0], "Web", old, pki.chain(), oldKey)
	if arch, err := s.Archived(); err != nil || len(arch) != 0 {
		t.Errorf("Archived = %d certificates, %v, want none", len(arch), err)
	}
}
