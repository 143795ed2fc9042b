// Package provtest helps the provisioning tests (the ceremony, its API, the appliance in
// QEMU): an external test root CA that signs subordinate CA requests, a snapshot of data
// directories to show that a refused step changed nothing, and the provisioning API's
// certificate pinned by the fingerprint the console shows.
package provtest

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"io/fs"
	"math/big"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"
)

// Root is a root CA outside the appliance: the parent of a subordinate CA.
type Root struct {
	Cert *x509.Certificate
	Key  crypto.Signer
}

// NewRoot makes a self-signed ECDSA P-256 root CA named name, valid for 20 years.
func NewRoot(t testing.TB, name string) Root {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(20 * 365 * 24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return Root{cert, key}
}

// Sign issues a certificate for pub: a CA certificate (keyCertSign, cRLSign) when isCA,
// else an end-entity one.
func (r Root) Sign(t testing.TB, pub crypto.PublicKey, subject pkix.Name, isCA bool, notAfter time.Time) *x509.Certificate {
	t.Helper()
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: subject,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: notAfter, BasicConstraintsValid: true, IsCA: isCA,
		KeyUsage: x509.KeyUsageDigitalSignature}
	if isCA {
		tmpl.KeyUsage |= x509.KeyUsageCertSign | x509.KeyUsageCRLSign
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, r.Cert, pub, r.Key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return cert
}

// SignCSR checks the PEM request's signature and signs its key and subject.
func (r Root) SignCSR(t testing.TB, csrPEM []byte, isCA bool, notAfter time.Time) *x509.Certificate {
	t.Helper()
	blk, _ := pem.Decode(bytes.ReplaceAll(csrPEM, []byte("\r"), nil))
	if blk == nil || blk.Type != "CERTIFICATE REQUEST" {
		t.Fatalf("not a PEM request: %q", csrPEM)
	}
	csr, err := x509.ParseCertificateRequest(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if err := csr.CheckSignature(); err != nil {
		t.Fatalf("the request's signature: %v", err)
	}
	return r.Sign(t, csr.PublicKey, csr.Subject, isCA, notAfter)
}

// PEM encodes certificates.
func PEM(certs ...*x509.Certificate) []byte {
	var b []byte
	for _, c := range certs {
		b = append(b, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	return b
}

// Snapshot hashes every file under dirs (missing ones count as empty). SoftHSM rewrites
// its token.object (login counters, flags) and generation file on every session, so for
// those only their presence counts; its key objects are compared.
func Snapshot(t testing.TB, dirs ...string) string {
	t.Helper()
	var lines []string
	for _, dir := range dirs {
		err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
			if os.IsNotExist(err) && p == dir {
				return filepath.SkipDir
			}
			if err != nil || d.IsDir() {
				return err
			}
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			sum := sha256.Sum256(b)
			if base := filepath.Base(p); strings.Contains(filepath.ToSlash(p), "hsm/tokens/") && (base == "token.object" || base == "generation") {
				sum = [32]byte{}
			}
			lines = append(lines, p+" "+hex.EncodeToString(sum[:]))
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

// Refused runs a step that must fail with want in its message and leave dirs as they were.
func Refused(t testing.TB, want string, step func() error, dirs ...string) {
	t.Helper()
	before := Snapshot(t, dirs...)
	err := step()
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("want an error with %q, got %v", want, err)
	}
	if after := Snapshot(t, dirs...); after != before {
		t.Errorf("a refused step (%v) changed the files:\nbefore:\n%s\nafter:\n%s", err, before, after)
	}
}

// PinnedByConsole reads the provisioning API's certificate fingerprint from the output of
// the console's `provision status` and returns a TLS configuration that accepts only that
// certificate.
func PinnedByConsole(t testing.TB, status string) *tls.Config {
	t.Helper()
	m := regexp.MustCompile(`certificate SHA-256\n\s+([0-9A-F]{64})\)`).FindStringSubmatch(strings.ReplaceAll(status, "\r", ""))
	if m == nil {
		t.Fatalf("provision status shows no provisioning API fingerprint:\n%s", status)
	}
	return &tls.Config{InsecureSkipVerify: true, VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
		if sum := sha256.Sum256(raw[0]); strings.ToUpper(hex.EncodeToString(sum[:])) != m[1] {
			return errors.New("not the certificate the console showed")
		}
		return nil
	}}
}

// SyncBuffer is a bytes.Buffer safe for concurrent writers and readers (logs, consoles).
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// String is what was written so far.
func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
