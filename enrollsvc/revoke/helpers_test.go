package revoke

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"io"
	"log/slog"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Software keys stand in for the HSM; RSA keys are made once per test binary.
var (
	rsaKey   = sync.OnceValue(func() *rsa.PrivateKey { return must(rsa.GenerateKey(rand.Reader, 2048)) })
	rsaKey2  = sync.OnceValue(func() *rsa.PrivateKey { return must(rsa.GenerateKey(rand.Reader, 2048)) })
	epoch    = time.Date(2026, 3, 2, 10, 0, 0, 0, time.UTC)
	oidNoChk = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 48, 1, 5} // id-pkix-ocsp-nocheck
)

// later is the later of epoch and now: openssl checks certificates against its own clock.
func later() time.Time {
	if now := time.Now(); now.After(epoch) {
		return now
	}
	return epoch
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

func ecKey(t testing.TB, c elliptic.Curve) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(c, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// keyFor returns a fresh key of the named type ("p256", "p384" or "rsa").
func keyFor(t testing.TB, kind string) crypto.Signer {
	switch kind {
	case "p256":
		return ecKey(t, elliptic.P256())
	case "p384":
		return ecKey(t, elliptic.P384())
	case "rsa":
		return rsaKey()
	}
	t.Fatalf("no key type %q", kind)
	return nil
}

// countingSigner counts how often the "CA key" was asked to sign.
type countingSigner struct {
	crypto.Signer
	n atomic.Int64
}

func (c *countingSigner) Sign(r io.Reader, d []byte, o crypto.SignerOpts) ([]byte, error) {
	c.n.Add(1)
	return c.Signer.Sign(r, d, o)
}

// skid is RFC 5280 method (1), computed independently of keyHash.
func skid(t testing.TB, pub crypto.PublicKey) []byte {
	t.Helper()
	var spki struct {
		Algorithm pkix.AlgorithmIdentifier
		PublicKey asn1.BitString
	}
	if _, err := asn1.Unmarshal(must(x509.MarshalPKIXPublicKey(pub)), &spki); err != nil {
		t.Fatal(err)
	}
	sum := sha1.Sum(spki.PublicKey.Bytes)
	return sum[:]
}

// newCA makes a self-signed CA certificate for key.
func newCA(t testing.TB, key crypto.Signer, cn string) *x509.Certificate {
	t.Helper()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: cn, Organization: []string{"Example"}},
		NotBefore: epoch.AddDate(-1, 0, 0), NotAfter: later().AddDate(10, 0, 0),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true, IsCA: true, SubjectKeyId: skid(t, key.Public()),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	return must(x509.ParseCertificate(der))
}

// newLeaf issues a TLS server certificate with the given serial under ca. With ocspSigning it is
// a delegated OCSP responder certificate instead (id-kp-OCSPSigning, id-pkix-ocsp-nocheck).
func newLeaf(t testing.TB, ca *x509.Certificate, caKey crypto.Signer, serial *big.Int, pub crypto.PublicKey, ocspSigning bool) *x509.Certificate {
	t.Helper()
	tmpl := &x509.Certificate{
		SerialNumber: serial, Subject: pkix.Name{CommonName: "leaf " + serial.Text(16)},
		NotBefore: epoch.AddDate(-1, 0, 0), NotAfter: later().AddDate(5, 0, 0),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		AuthorityKeyId: ca.SubjectKeyId,
	}
	if ocspSigning {
		tmpl.Subject.CommonName = "OCSP responder"
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageOCSPSigning}
		tmpl.ExtraExtensions = []pkix.Extension{{Id: oidNoChk, Value: []byte{0x05, 0x00}}}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, pub, caKey)
	if err != nil {
		t.Fatal(err)
	}
	return must(x509.ParseCertificate(der))
}

// memSource is an in-memory Source: issued serials, and revocations with the time they were
// recorded (which EachRevoked filters on) apart from the time they say.
type memSource struct {
	mu      sync.Mutex
	issued  map[string]bool
	revoked map[string]memRevocation
	err     error // returned by both methods when set
}

type memRevocation struct {
	e        Entry
	recorded time.Time
}

func newMemSource() *memSource {
	return &memSource{issued: map[string]bool{}, revoked: map[string]memRevocation{}}
}

func (m *memSource) issue(serial *big.Int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.issued[serial.Text(16)] = true
}

// revoke records a revocation at recorded, saying it happened at e.RevokedAt.
func (m *memSource) revoke(e Entry, recorded time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.issued[e.Serial.Text(16)] = true
	m.revoked[e.Serial.Text(16)] = memRevocation{e: e, recorded: recorded}
}

func (m *memSource) fail(err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.err = err
}

func (m *memSource) EachRevoked(ctx context.Context, since time.Time, fn func(Entry) error) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.err != nil {
		return m.err
	}
	for _, r := range m.revoked {
		if r.recorded.Before(since) {
			continue
		}
		e := r.e
		e.Recorded = r.recorded
		if err := fn(e); err != nil {
			return err
		}
	}
	return nil
}

func (m *memSource) CertStatus(ctx context.Context, serial *big.Int) (Status, Entry, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.err != nil {
		return 0, Entry{}, m.err
	}
	if r, ok := m.revoked[serial.Text(16)]; ok {
		return Revoked, r.e, nil
	}
	if m.issued[serial.Text(16)] {
		return Good, Entry{}, nil
	}
	return Unknown, Entry{}, nil
}

// memNumbers is an in-memory NumberStore; next, when set, overrides the counter.
type memNumbers struct {
	mu   sync.Mutex
	n    int64
	next func() (*big.Int, error)
}

func (m *memNumbers) NextCRLNumber(ctx context.Context) (*big.Int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.next != nil {
		return m.next()
	}
	m.n++
	return big.NewInt(m.n), nil
}

// fakeClock is the injected clock.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Add(d time.Duration) time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
	return c.t
}

// needOpenSSL returns the openssl binary; without one the test is skipped, or fails in CI.
func needOpenSSL(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("openssl")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("openssl is required in CI: %v", err)
		}
		t.Skipf("openssl not installed: %v", err)
	}
	return p
}

// openssl runs openssl with args and returns its combined output.
func openssl(t *testing.T, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, needOpenSSL(t), args...).CombinedOutput()
	return string(out), err
}

// writePEM writes der as a PEM block of type typ into dir and returns the path.
func writePEM(t *testing.T, dir, name, typ string, der []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// wantIn fails unless out contains every one of want.
func wantIn(t *testing.T, what, out string, want ...string) {
	t.Helper()
	for _, w := range want {
		if !strings.Contains(out, w) {
			t.Errorf("%s: output lacks %q:\n%s", what, w, out)
		}
	}
}

var (
	errStore = errors.New("store unavailable")
	quiet    = slog.New(slog.DiscardHandler)
)
