package store

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"io/fs"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"
)

// skipOrFail skips a test that needs something missing here, but fails it in CI, where
// everything must be there.
func skipOrFail(t *testing.T, format string, args ...any) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf(format, args...)
	}
	t.Skipf(format, args...)
}

// testPKI is a small CA issuing leaf certificates.
type testPKI struct {
	mu     sync.Mutex
	cert   *x509.Certificate
	key    crypto.Signer
	serial int64
}

// epoch is the NotBefore of the test certificates and the clock of the test stores.
var epoch = time.Date(2025, 3, 14, 15, 9, 26, 0, time.UTC)

func newPKI(t *testing.T) *testPKI {
	t.Helper()
	key := ecKey(t)
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "Test Issuing CA"},
		NotBefore:             epoch.Add(-time.Hour),
		NotAfter:              epoch.AddDate(5, 0, 0),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &testPKI{cert: cert, key: key, serial: 0x1000}
}

// issue makes a leaf certificate for the public key of key.
func (p *testPKI) issue(t *testing.T, cn string, key crypto.Signer) *x509.Certificate {
	t.Helper()
	p.mu.Lock()
	p.serial++
	serial := p.serial
	p.mu.Unlock()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial),
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    epoch,
		NotAfter:     epoch.AddDate(1, 0, 0),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.cert, key.Public(), p.key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

func (p *testPKI) chain() []*x509.Certificate { return []*x509.Certificate{p.cert} }

func ecKey(t *testing.T) crypto.Signer {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func edKey(t *testing.T) crypto.Signer {
	t.Helper()
	_, k, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// rsaKey is made once: RSA key generation is slow, more so with -race.
var rsaKey = sync.OnceValues(func() (*rsa.PrivateKey, error) { return rsa.GenerateKey(rand.Reader, 2048) })

func getRSAKey(t *testing.T) crypto.Signer {
	t.Helper()
	k, err := rsaKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// openStore opens a store in dir with the test clock and closes it when the test ends.
func openStore(t *testing.T, dir string) *Store {
	t.Helper()
	s, err := Open(dir)
	if err != nil {
		t.Fatalf("Open(%s) = %v", dir, err)
	}
	s.now = func() time.Time { return epoch.Add(24 * time.Hour) }
	t.Cleanup(func() { s.Close() })
	return s
}

// mustInstall installs a new certificate for template with a new ECDSA key.
func mustInstall(t *testing.T, s *Store, pki *testPKI, template string) (*x509.Certificate, crypto.Signer) {
	t.Helper()
	key := ecKey(t)
	cert := pki.issue(t, template, key)
	if _, err := s.Install(template, cert, pki.chain(), key); err != nil {
		t.Fatalf("Install(%q) = %v", template, err)
	}
	return cert, key
}

// snapshot records every name below dir with its mode and, for files, contents.
func snapshot(t *testing.T, dir string, skip ...string) map[string]string {
	t.Helper()
	m := map[string]string{}
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, path)
		if slices.Contains(skip, rel) {
			return nil
		}
		fi, err := os.Lstat(path)
		if err != nil {
			return err
		}
		v := fi.Mode().String()
		if fi.Mode().IsRegular() {
			data, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			v += " " + string(data)
		}
		m[rel] = v
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// checkUnchanged reports what differs between two snapshots.
func checkUnchanged(t *testing.T, before, after map[string]string) {
	t.Helper()
	var diffs []string
	for k, v := range before {
		if w, ok := after[k]; !ok {
			diffs = append(diffs, "removed "+k)
		} else if w != v {
			diffs = append(diffs, "changed "+k)
		}
	}
	for k := range after {
		if _, ok := before[k]; !ok {
			diffs = append(diffs, "added "+k)
		}
	}
	sort.Strings(diffs)
	if len(diffs) > 0 {
		t.Errorf("the store changed: %s", strings.Join(diffs, ", "))
	}
}

// checkCert compares a Cert of the store with what was installed.
func checkCert(t *testing.T, got Cert, template string, cert *x509.Certificate, chain []*x509.Certificate, key crypto.Signer) {
	t.Helper()
	if got.Template != template {
		t.Errorf("Template = %q, want %q", got.Template, template)
	}
	if !got.Certificate.Equal(cert) {
		t.Errorf("%q: Certificate has serial %x, want %x", template, got.Certificate.SerialNumber, cert.SerialNumber)
	}
	if len(got.Chain) != len(chain) {
		t.Errorf("%q: %d chain certificates, want %d", template, len(got.Chain), len(chain))
	} else {
		for i := range chain {
			if !got.Chain[i].Equal(chain[i]) {
				t.Errorf("%q: chain certificate %d differs", template, i)
			}
		}
	}
	switch {
	case key == nil && got.Key != nil:
		t.Errorf("%q: Key = %T, want nil", template, got.Key)
	case key != nil && got.Key == nil:
		t.Errorf("%q: Key = nil, want %T", template, key)
	case key != nil && !key.Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(got.Key.Public()):
		t.Errorf("%q: Key differs from the installed one", template)
	}
	if _, err := os.Stat(filepath.Join(got.Path, certFile)); err != nil {
		t.Errorf("%q: Path %s holds no cert.pem: %v", template, got.Path, err)
	}
}

// stagingLeft lists the .staging-* entries of dir.
func stagingLeft(t *testing.T, dir string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, stagingPrefix+"*"))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// mode returns the permission bits of path.
func mode(t *testing.T, path string) string {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%04o", fi.Mode().Perm())
}
