package issue

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/enrollment-appliance/aeappliance/proto/certutil"
)

// countingSigner counts how often the "CA key" was asked to sign.
type countingSigner struct {
	crypto.Signer
	n atomic.Int64
}

func (c *countingSigner) Sign(r io.Reader, d []byte, o crypto.SignerOpts) ([]byte, error) {
	c.n.Add(1)
	return c.Signer.Sign(r, d, o)
}

func newTestCA(t testing.TB, key crypto.Signer, validity time.Duration) (*Issuer, *countingSigner) {
	t.Helper()
	cs := &countingSigner{Signer: key}
	ca, err := SelfSigned(context.Background(), cs, RootOrder{Subject: pkix.Name{CommonName: "Test Root", Organization: []string{"Example"}}, Validity: validity, MaxPathLen: 0}, time.Now())
	if err != nil {
		t.Fatalf("SelfSigned: %v", err)
	}
	iss, err := New(Config{CACert: ca, Signer: cs,
		CRLURLs: []string{"http://pki.example.test/crl/test.crl"}, OCSPURLs: []string{"http://pki.example.test/ocsp"},
		CAIssuerURLs: []string{"http://pki.example.test/ca.crt"}})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	cs.n.Store(0)
	return iss, cs
}

func mustECKey(t testing.TB) *ecdsa.PrivateKey {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func serverOrder(pub crypto.PublicKey) Order {
	return Order{Subject: pkix.Name{CommonName: "www.example.test"}, DNSNames: []string{"www.example.test"},
		PublicKey: pub, Validity: 365 * 24 * time.Hour, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
}

func issueOne(t *testing.T, iss *Issuer, o Order) *x509.Certificate {
	t.Helper()
	p, err := iss.Prepare(o)
	if err != nil {
		t.Fatalf("Prepare: %v", err)
	}
	c, err := iss.Sign(context.Background(), p)
	if err != nil {
		t.Fatalf("Sign: %v", err)
	}
	if got := certutil.SerialString(c.SerialNumber); got != p.Serial() {
		t.Fatalf("serial = %s, Prepared said %s", got, p.Serial())
	}
	return c
}

func TestIssuedCertificateVerifies(t *testing.T) {
	for _, tc := range []struct {
		name string
		key  func() crypto.Signer
		alg  x509.SignatureAlgorithm // whatever the lint key's is
	}{
		{"ecdsa-p256", func() crypto.Signer { return mustECKey(t) }, x509.ECDSAWithSHA256},
		{"ecdsa-p384", func() crypto.Signer { k, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader); return k }, x509.ECDSAWithSHA384},
		{"rsa-2048", func() crypto.Signer { k, _ := rsa.GenerateKey(rand.Reader, 2048); return k }, x509.SHA256WithRSA},
	} {
		t.Run(tc.name, func(t *testing.T) {
			iss, cs := newTestCA(t, tc.key(), 10*365*24*time.Hour)
			leafKey := mustECKey(t)
			c := issueOne(t, iss, serverOrder(leafKey.Public()))
			if cs.n.Load() != 1 {
				t.Errorf("CA key signed %d times, want 1", cs.n.Load())
			}
			roots := x509.NewCertPool()
			roots.AddCert(iss.CACert())
			if _, err := c.Verify(x509.VerifyOptions{Roots: roots, DNSName: "www.example.test"}); err != nil {
				t.Errorf("crypto/x509 Verify: %v", err)
			}
			opensslVerify(t, iss.CACert(), c)
			if c.SignatureAlgorithm != tc.alg {
				t.Errorf("signature algorithm %v, want the CA key's %v", c.SignatureAlgorithm, tc.alg)
			}
			if len(c.SubjectKeyId) != 20 || string(c.AuthorityKeyId) != string(iss.CACert().SubjectKeyId) {
				t.Errorf("SKI = %x, AKI = %x, want 20-byte SKI and AKI = CA SKI %x", c.SubjectKeyId, c.AuthorityKeyId, iss.CACert().SubjectKeyId)
			}
			if len(c.CRLDistributionPoints) != 1 || len(c.OCSPServer) != 1 || len(c.IssuingCertificateURL) != 1 {
				t.Errorf("CDP %v, OCSP %v, CA issuers %v: want one each from configuration", c.CRLDistributionPoints, c.OCSPServer, c.IssuingCertificateURL)
			}
			if c.IsCA || !c.BasicConstraintsValid {
				t.Errorf("leaf IsCA=%v BasicConstraintsValid=%v, want an end-entity certificate", c.IsCA, c.BasicConstraintsValid)
			}
		})
	}
}

func opensslVerify(t *testing.T, ca, leaf *x509.Certificate) {
	t.Helper()
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Fatalf("openssl not found: %v", err)
	}
	dir := t.TempDir()
	write := func(name string, c *x509.Certificate) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw}), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	out, err := exec.Command("openssl", "verify", "-x509_strict", "-CAfile", write("ca.pem", ca), write("leaf.pem", leaf)).CombinedOutput()
	if err != nil {
		t.Errorf("openssl verify: %v\n%s", err, out)
	}
}

func TestSerials(t *testing.T) {
	iss, _ := newTestCA(t, mustECKey(t), 24*time.Hour*365)
	pub := mustECKey(t).Public()
	seen := map[string]bool{}
	for range 200 {
		p, err := iss.Prepare(serverOrder(pub))
		if err != nil {
			t.Fatal(err)
		}
		s := p.serial
		if s.Sign() <= 0 || len(s.Bytes()) > 16 || s.BitLen() <= 64 {
			t.Errorf("serial %x: want positive, at most 16 octets, more than 64 bits", s)
		}
		if seen[p.Serial()] {
			t.Errorf("serial %s repeated", p.Serial())
		}
		seen[p.Serial()] = true
	}
}

func TestValidityClampedToCA(t *testing.T) {
	iss, _ := newTestCA(t, mustECKey(t), 30*24*time.Hour)
	o := serverOrder(mustECKey(t).Public())
	o.Validity = 10 * 365 * 24 * time.Hour
	c := issueOne(t, iss, o)
	if c.NotAfter.After(iss.CACert().NotAfter) {
		t.Errorf("leaf notAfter %v is after CA notAfter %v", c.NotAfter, iss.CACert().NotAfter)
	}
	if !c.NotAfter.Equal(iss.CACert().NotAfter) {
		t.Errorf("leaf notAfter %v, want clamped to CA notAfter %v", c.NotAfter, iss.CACert().NotAfter)
	}
	if c.NotBefore.Before(iss.CACert().NotBefore) {
		t.Errorf("leaf notBefore %v before CA notBefore %v", c.NotBefore, iss.CACert().NotBefore)
	}

	// An expired CA issues nothing.
	iss.cfg.Now = func() time.Time { return iss.CACert().NotAfter.Add(time.Minute) }
	if _, err := iss.Prepare(o); err == nil {
		t.Error("Prepare with an expired CA certificate succeeded, want an error")
	}
}

// A certificate that fails lint is never signed by the CA key.
func TestLintRefusesBeforeCASigns(t *testing.T) {
	iss, cs := newTestCA(t, mustECKey(t), 365*24*time.Hour)
	pub := mustECKey(t).Public()
	for _, tc := range []struct {
		name  string
		order func() Order
	}{
		{"keyCertSign on an end entity", func() Order {
			o := serverOrder(pub)
			o.KeyUsage |= x509.KeyUsageCertSign
			return o
		}},
		{"empty subject and no SAN", func() Order {
			o := serverOrder(pub)
			o.Subject, o.DNSNames = pkix.Name{}, nil
			return o
		}},
		{"bad DNS name", func() Order {
			o := serverOrder(pub)
			o.DNSNames = []string{"bad..example.test"}
			return o
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := iss.Prepare(tc.order())
			if err == nil {
				t.Fatal("Prepare succeeded, want a lint refusal")
			}
			var le *LintError
			if !errors.As(err, &le) || !errors.Is(err, ErrLint) || len(le.Findings) == 0 {
				t.Errorf("Prepare error = %v, want a *LintError with findings", err)
			}
		})
	}
	if cs.n.Load() != 0 {
		t.Errorf("CA key signed %d times during refused orders, want 0", cs.n.Load())
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	key := mustECKey(t)
	good, _ := newTestCA(t, key, 24*time.Hour)
	other := mustECKey(t)
	for _, tc := range []struct {
		name string
		cfg  Config
	}{
		{"no CA", Config{Signer: key}},
		{"no signer", Config{CACert: good.CACert()}},
		{"mismatched key", Config{CACert: good.CACert(), Signer: other}},
		{"bad CRL URL", Config{CACert: good.CACert(), Signer: key, CRLURLs: []string{"ftp://x"}}},
	} {
		if _, err := New(tc.cfg); err == nil {
			t.Errorf("New(%s) = nil error, want one", tc.name)
		}
	}
	if _, err := good.Sign(context.Background(), &Prepared{}); err == nil {
		t.Error("Sign(zero Prepared) = nil error, want one")
	}
}

func BenchmarkPrepare(b *testing.B) {
	for _, tc := range []struct {
		name string
		key  crypto.Signer
	}{{"ecdsa-p256", mustECKey(b)}, {"rsa-2048", func() crypto.Signer { k, _ := rsa.GenerateKey(rand.Reader, 2048); return k }()}} {
		b.Run(tc.name, func(b *testing.B) {
			iss, _ := newTestCA(b, tc.key, 365*24*time.Hour)
			o := serverOrder(mustECKey(b).Public())
			for b.Loop() {
				if _, err := iss.Prepare(o); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// A raw subject is used byte for byte (string types and RDN order as the directory has them).
func TestRawSubject(t *testing.T) {
	iss, _ := newTestCA(t, mustECKey(t), 365*24*time.Hour)
	raw, err := asn1.Marshal(pkix.Name{CommonName: "Alice", Organization: []string{"Corp"}}.ToRDNSequence())
	if err != nil {
		t.Fatal(err)
	}
	o := serverOrder(mustECKey(t).Public())
	o.RawSubject = raw
	c := issueOne(t, iss, o)
	if !bytes.Equal(c.RawSubject, raw) {
		t.Errorf("RawSubject = %x, want %x", c.RawSubject, raw)
	}
}
