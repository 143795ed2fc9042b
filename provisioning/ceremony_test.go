package provisioning

import (
	"bytes"
	"context"
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
	"io/fs"
	"math/big"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/enrollment-appliance/aeappliance/enrollsvc/config"
	"github.com/enrollment-appliance/aeappliance/enrollsvc/daemon"
	"github.com/enrollment-appliance/aeappliance/hsm/softhsm"
)

func needSoftHSM(t *testing.T) {
	t.Helper()
	if _, err := softhsm.ModulePath(); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("SoftHSM2 is missing (make deps installs it): %v", err)
		}
		t.Skip(err)
	}
}

// snapshot hashes every file under dir: a refused step must leave it identical. SoftHSM
// rewrites its token.object (login counters, flags) and generation file on every
// session, so for those only their presence counts; its key objects are compared.
func snapshot(t *testing.T, dir string) string {
	t.Helper()
	var lines []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(b)
		rel, _ := filepath.Rel(dir, p)
		if base := filepath.Base(p); strings.Contains(rel, "hsm/tokens/") && (base == "token.object" || base == "generation") {
			sum = [32]byte{}
		}
		lines = append(lines, rel+" "+hex.EncodeToString(sum[:]))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

// refused runs a step that must fail with want in its message and change nothing.
func refused(t *testing.T, dir, want string, step func() error) {
	t.Helper()
	before := snapshot(t, dir)
	err := step()
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("want an error with %q, got %v", want, err)
	}
	if after := snapshot(t, dir); after != before {
		t.Errorf("a refused step (%v) changed the data directory:\nbefore:\n%s\nafter:\n%s", err, before, after)
	}
}

// testRoot is an external root CA of the test (the parent of the subordinate CA).
type testRoot struct {
	cert *x509.Certificate
	key  crypto.Signer
}

func newRoot(t *testing.T, name string) testRoot {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(20 * 365 * 24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return testRoot{cert, key}
}

// sign signs csrPEM as a CA certificate (or, with isCA false, an end-entity one).
func (r testRoot) sign(t *testing.T, csrPEM []byte, isCA bool, notAfter time.Time) *x509.Certificate {
	t.Helper()
	blk, _ := pem.Decode(csrPEM)
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
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: csr.Subject,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: notAfter, BasicConstraintsValid: true, IsCA: isCA}
	if isCA {
		tmpl.KeyUsage = x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature
	} else {
		tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, r.cert, csr.PublicKey, r.key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return cert
}

func bundle(certs ...*x509.Certificate) []byte {
	var b []byte
	for _, c := range certs {
		b = append(b, pemCert(c)...)
	}
	return b
}

// TestCeremonySubordinate runs the ceremony for a subordinate CA: token, key, request
// out, chain in (after refusing a wrong PIN, a certificate for another key, a non-CA
// certificate, an expired one, a chain without its root and one from another root),
// finish; the service's own TLS certificate then verifies up to the external root.
func TestCeremonySubordinate(t *testing.T) {
	needSoftHSM(t)
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "var")
	c := &Ceremony{Dir: dir}

	if _, err := c.GenerateKey(ctx, ""); err == nil || !strings.Contains(err.Error(), "token first") {
		t.Errorf("key before token: %v", err)
	}
	if _, err := c.InitToken(ctx, "so-pin-1234", "short"); err == nil || !strings.Contains(err.Error(), "too short") {
		t.Errorf("short PIN: %v", err)
	}
	if _, err := c.InitToken(ctx, "same-pin-123", "same-pin-123"); err == nil || !strings.Contains(err.Error(), "must differ") {
		t.Errorf("equal PINs: %v", err)
	}
	r, err := c.InitToken(ctx, "so-pin-1234", "user-pin-1234")
	if err != nil || !r.Changed {
		t.Fatalf("token: %v %+v", err, r)
	}
	refused(t, dir, "does not open it", func() error { _, err := c.InitToken(ctx, "so-pin-1234", "wrong-pin-99"); return err })
	if r, err := c.InitToken(ctx, "", "user-pin-1234"); err != nil || r.Changed || !strings.Contains(r.String(), "already initialised") {
		t.Errorf("token again: %v %+v", err, r)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, config.HSMDir, "so-pin")); b != nil {
		t.Error("the ceremony kept the SO PIN")
	}

	if _, _, err := c.RequestCSR(ctx, "Sub CA"); err == nil || !strings.Contains(err.Error(), "key first") {
		t.Errorf("CSR before key: %v", err)
	}
	r, err = c.GenerateKey(ctx, "ecdsa-p384")
	if err != nil || !r.Changed || !strings.Contains(r.String(), "sensitive, never extractable") {
		t.Fatalf("key: %v %+v", err, r)
	}
	if r, err := c.GenerateKey(ctx, "ecdsa-p384"); err != nil || r.Changed {
		t.Errorf("key again: %v %+v", err, r)
	}
	refused(t, dir, "never replaced", func() error { _, err := c.GenerateKey(ctx, "rsa-3072"); return err })

	csrPEM, r, err := c.RequestCSR(ctx, "Appliance Issuing CA")
	if err != nil || !r.Changed {
		t.Fatalf("csr: %v %+v", err, r)
	}
	again, r, err := c.RequestCSR(ctx, "Appliance Issuing CA")
	if err != nil || r.Changed || !bytes.Equal(again, csrPEM) {
		t.Errorf("csr again: changed=%v err=%v, same bytes=%v", r.Changed, err, bytes.Equal(again, csrPEM))
	}
	refused(t, dir, "waiting for its certificate chain", func() error { _, err := c.SelfSign(ctx, "Root", 0); return err })
	if _, err := c.Finish(ctx, FinishOptions{}); err == nil || !strings.Contains(err.Error(), "no CA certificate yet") {
		t.Errorf("finish before the chain: %v", err)
	}

	root, other := newRoot(t, "External Test Root"), newRoot(t, "Another Root")
	year := time.Now().Add(365 * 24 * time.Hour)
	sub := root.sign(t, csrPEM, true, year)

	// A certificate for another key (another appliance's request).
	otherKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	otherCSR, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "Appliance Issuing CA"}}, otherKey)
	foreign := root.sign(t, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: otherCSR}), true, year)
	refused(t, dir, "does not match the request", func() error { _, err := c.ImportChain(ctx, bundle(foreign, root.cert)); return err })
	refused(t, dir, "not a CA certificate", func() error {
		_, err := c.ImportChain(ctx, bundle(root.sign(t, csrPEM, false, year), root.cert))
		return err
	})
	refused(t, dir, "not valid now", func() error {
		_, err := c.ImportChain(ctx, bundle(root.sign(t, csrPEM, true, time.Now().Add(-time.Minute)), root.cert))
		return err
	})
	refused(t, dir, "no self-signed root", func() error { _, err := c.ImportChain(ctx, bundle(sub)); return err })
	refused(t, dir, "does not verify", func() error { _, err := c.ImportChain(ctx, bundle(sub, other.cert)); return err })
	refused(t, dir, "no PEM certificate", func() error { _, err := c.ImportChain(ctx, []byte("hello")); return err })
	refused(t, dir, "only CERTIFICATE blocks", func() error { _, err := c.ImportChain(ctx, csrPEM); return err })

	r, err = c.ImportChain(ctx, bundle(root.cert, sub)) // any order
	if err != nil || !r.Changed || !strings.Contains(r.String(), "verifies up to the root CN=External Test Root") {
		t.Fatalf("import: %v\n%s", err, r)
	}
	if r, err := c.ImportChain(ctx, bundle(sub, root.cert)); err != nil || r.Changed {
		t.Errorf("import again: %v %+v", err, r)
	}
	if _, err := os.Stat(filepath.Join(dir, CSRFile)); err == nil {
		t.Error("the request is still there after the import")
	}
	refused(t, dir, "exists already", func() error { _, err := c.SelfSign(ctx, "Root", 0); return err })

	r, err = c.Finish(ctx, FinishOptions{APIListen: "127.0.0.1:0"})
	if err != nil || !r.Changed || !c.Provisioned() {
		t.Fatalf("finish: %v %+v", err, r)
	}
	if r, err := c.Finish(ctx, FinishOptions{}); err != nil || r.Changed {
		t.Errorf("finish again: %v %+v", err, r)
	}
	// The first certificate the new CA issued is the API's own: it verifies up to the root.
	kp, err := tls.LoadX509KeyPair(filepath.Join(dir, config.APICertFile), filepath.Join(dir, config.APIKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(kp.Certificate[0])
	inter := x509.NewCertPool()
	for _, der := range kp.Certificate[1:] {
		c, _ := x509.ParseCertificate(der)
		inter.AddCert(c)
	}
	roots := x509.NewCertPool()
	roots.AddCert(root.cert)
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, DNSName: "127.0.0.1"}); err != nil {
		t.Errorf("the API certificate does not verify up to the external root: %v", err)
	}
	rt, err := daemon.Open(ctx, dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer rt.Close()
	if len(rt.CAChain) != 1 || !rt.CAChain[0].Equal(root.cert) {
		t.Errorf("the service's CA chain: %v", rt.CAChain)
	}
}

// TestCeremonySelfSigned: the self-signed path, idempotent, and a finish that fails
// (an API address that cannot be parsed) leaves the appliance unprovisioned.
func TestCeremonySelfSigned(t *testing.T) {
	needSoftHSM(t)
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "var")
	c := &Ceremony{Dir: dir}
	if _, err := c.InitToken(ctx, "so-pin-1234", "user-pin-1234"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.GenerateKey(ctx, ""); err != nil {
		t.Fatal(err)
	}
	refused(t, dir, "at least one day", func() error { _, err := c.SelfSign(ctx, "Root", time.Hour); return err })
	r, err := c.SelfSign(ctx, "Corp Root CA", 0)
	if err != nil || !r.Changed {
		t.Fatalf("selfsigned: %v %+v", err, r)
	}
	if r, err := c.SelfSign(ctx, "Corp Root CA", 0); err != nil || r.Changed {
		t.Errorf("selfsigned again: %v %+v", err, r)
	}
	refused(t, dir, "not replaced", func() error { _, err := c.SelfSign(ctx, "Other Root CA", 0); return err })
	refused(t, dir, "exists already", func() error { _, _, err := c.RequestCSR(ctx, "Sub"); return err })
	refused(t, dir, "api-listen", func() error { _, err := c.Finish(ctx, FinishOptions{APIListen: "nonsense"}); return err })
	if c.Provisioned() {
		t.Fatal("provisioned after a failed finish")
	}
	if _, err := c.Finish(ctx, FinishOptions{APIListen: "127.0.0.1:0", HTTPURL: "http://pki.example.test", HTTPListen: "127.0.0.1:0"}); err != nil {
		t.Fatal(err)
	}
	steps, err := c.Progress()
	if err != nil {
		t.Fatal(err)
	}
	var done []string
	for _, s := range steps {
		if s.Done {
			done = append(done, s.Name)
		}
	}
	if got := strings.Join(done, ","); got != "token,key,ca,finish" {
		t.Errorf("progress: done %s, want token,key,ca,finish (%+v)", got, steps)
	}
	cfg, err := config.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.CAChain != "" || len(cfg.CRLURLs) != 1 || cfg.CRLURLs[0] != "http://pki.example.test/crl/Corp-Root-CA.crl" {
		t.Errorf("config: chain %q, CRL URLs %v", cfg.CAChain, cfg.CRLURLs)
	}
}

func TestPassphrase(t *testing.T) {
	dir := t.TempDir()
	if HasPassphrase(dir) {
		t.Fatal("a passphrase before any was set")
	}
	if err := CheckPassphrase(dir, "x"); err != ErrNoPassphrase {
		t.Errorf("check without a passphrase: %v", err)
	}
	if _, err := SetPassphrase(dir, "", "too short"); err == nil || !strings.Contains(err.Error(), "too short") {
		t.Errorf("short passphrase: %v", err)
	}
	if HasPassphrase(dir) {
		t.Fatal("a refused passphrase was saved")
	}
	r, err := SetPassphrase(dir, "", "correct horse battery")
	if err != nil || !r.Changed {
		t.Fatalf("set: %v %+v", err, r)
	}
	if err := CheckPassphrase(dir, "correct horse battery"); err != nil {
		t.Errorf("check: %v", err)
	}
	if err := CheckPassphrase(dir, "correct horse batterY"); err != ErrWrongPassphrase {
		t.Errorf("wrong passphrase: %v", err)
	}
	refused(t, dir, "current passphrase is wrong", func() error {
		_, err := SetPassphrase(dir, "guess guess guess", "new passphrase here")
		return err
	})
	if r, err := SetPassphrase(dir, "correct horse battery", "correct horse battery"); err != nil || r.Changed {
		t.Errorf("same again: %v %+v", err, r)
	}
	if _, err := SetPassphrase(dir, "correct horse battery", "new passphrase here"); err != nil {
		t.Fatal(err)
	}
	if err := CheckPassphrase(dir, "new passphrase here"); err != nil {
		t.Errorf("after the change: %v", err)
	}
	b, _ := os.ReadFile(filepath.Join(dir, AdminFile))
	if bytes.Contains(b, []byte("new passphrase")) {
		t.Error("the passphrase is stored in clear")
	}
}

func TestNetworkSettings(t *testing.T) {
	dir := t.TempDir()
	n, err := LoadNetwork(dir)
	if err != nil || n.Mode != "dhcp" {
		t.Fatalf("default: %+v %v", n, err)
	}
	for _, bad := range []struct {
		change func(*Network)
		want   string
	}{
		{func(n *Network) { n.Mode = "static"; n.Address = "10.0.2.15" }, "prefix length"},
		{func(n *Network) { n.Mode = "static"; n.Address = "10.0.2.0/24" }, "network address"},
		{func(n *Network) { n.Mode = "static"; n.Address = "10.0.2.15/24"; n.Gateway = "10.0.3.1" }, "not another address"},
		{func(n *Network) { n.DNS = []string{"dns.example"} }, "want an IP address"},
		{func(n *Network) { n.NTP = []string{"bad host!"} }, "NTP server"},
		{func(n *Network) { n.Hostname = "-pki" }, "hostname"},
		{func(n *Network) { n.Mode = "ppp" }, "want dhcp or static"},
	} {
		refused(t, dir, bad.want, func() error { _, _, err := UpdateNetwork(dir, bad.change); return err })
	}
	n, r, err := UpdateNetwork(dir, func(n *Network) {
		n.Mode, n.Address, n.Gateway = "static", "10.0.2.15/24", "10.0.2.2"
		n.DNS, n.NTP, n.Hostname = []string{"10.0.2.3"}, []string{"10.0.2.2:11123", "ntp.example.test"}, "pki"
	})
	if err != nil || !r.Changed || n.String() != "static 10.0.2.15/24 gw 10.0.2.2, dns 10.0.2.3, ntp 10.0.2.2:11123 ntp.example.test, hostname pki" {
		t.Fatalf("static: %v %+v %s", err, r, n)
	}
	if _, r, err := UpdateNetwork(dir, func(n *Network) { n.Hostname = "pki" }); err != nil || r.Changed {
		t.Errorf("same again: %v %+v", err, r)
	}
	n, _, err = UpdateNetwork(dir, func(n *Network) { n.Mode = "dhcp" })
	if err != nil || n.Address != "" || n.Hostname != "pki" {
		t.Errorf("back to DHCP: %+v %v", n, err)
	}
	if got, _ := LoadNetwork(dir); got.String() != n.String() {
		t.Errorf("saved %s, loaded %s", n, got)
	}
}
