package ceremony

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/enrollment-appliance/aeappliance/config"
	"github.com/enrollment-appliance/aeappliance/enrollsvc/daemon"
	"github.com/enrollment-appliance/aeappliance/hsm/softhsm"
	"github.com/enrollment-appliance/aeappliance/provisioning/provtest"
)

// refused runs a step that must fail with want in its message and change nothing in dir.
func refused(t *testing.T, dir, want string, step func() error) {
	t.Helper()
	provtest.Refused(t, want, step, dir)
}

func needSoftHSM(t *testing.T) {
	t.Helper()
	if _, err := softhsm.ModulePath(); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("SoftHSM2 is missing (make deps installs it): %v", err)
		}
		t.Skip(err)
	}
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

	if _, err := c.Key(ctx, ""); err == nil || !strings.Contains(err.Error(), "token first") {
		t.Errorf("key before token: %v", err)
	}
	if _, err := c.Token(ctx, "so-pin-1234", "short"); err == nil || !strings.Contains(err.Error(), "too short") {
		t.Errorf("short PIN: %v", err)
	}
	if _, err := c.Token(ctx, "same-pin-123", "same-pin-123"); err == nil || !strings.Contains(err.Error(), "must differ") {
		t.Errorf("equal PINs: %v", err)
	}
	r, err := c.Token(ctx, "so-pin-1234", "user-pin-1234")
	if err != nil || !r.Changed {
		t.Fatalf("token: %v %+v", err, r)
	}
	refused(t, dir, "does not open it", func() error { _, err := c.Token(ctx, "so-pin-1234", "wrong-pin-99"); return err })
	if r, err := c.Token(ctx, "", "user-pin-1234"); err != nil || r.Changed || !strings.Contains(r.String(), "already initialised") {
		t.Errorf("token again: %v %+v", err, r)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, config.HSMDir, "so-pin")); b != nil {
		t.Error("the ceremony kept the SO PIN")
	}

	if _, _, err := c.CSR(ctx, "Sub CA"); err == nil || !strings.Contains(err.Error(), "key first") {
		t.Errorf("CSR before key: %v", err)
	}
	r, err = c.Key(ctx, "ecdsa-p384")
	if err != nil || !r.Changed || !strings.Contains(r.String(), "sensitive, never extractable") {
		t.Fatalf("key: %v %+v", err, r)
	}
	if r, err := c.Key(ctx, "ecdsa-p384"); err != nil || r.Changed {
		t.Errorf("key again: %v %+v", err, r)
	}
	refused(t, dir, "never replaced", func() error { _, err := c.Key(ctx, "rsa-3072"); return err })

	csrPEM, r, err := c.CSR(ctx, "Appliance Issuing CA")
	if err != nil || !r.Changed {
		t.Fatalf("csr: %v %+v", err, r)
	}
	again, r, err := c.CSR(ctx, "Appliance Issuing CA")
	if err != nil || r.Changed || !bytes.Equal(again, csrPEM) {
		t.Errorf("csr again: changed=%v err=%v, same bytes=%v", r.Changed, err, bytes.Equal(again, csrPEM))
	}
	refused(t, dir, "waiting for its certificate chain", func() error { _, err := c.SelfSigned(ctx, "Root", 0); return err })
	if _, err := c.Finish(ctx, FinishOptions{}); err == nil || !strings.Contains(err.Error(), "no CA certificate yet") {
		t.Errorf("finish before the chain: %v", err)
	}

	root, other := provtest.NewRoot(t, "External Test Root"), provtest.NewRoot(t, "Another Root")
	year := time.Now().Add(365 * 24 * time.Hour)
	sub := root.SignCSR(t, csrPEM, true, year)

	// A certificate for another key (another appliance's request).
	otherKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	otherCSR, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "Appliance Issuing CA"}}, otherKey)
	foreign := root.SignCSR(t, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: otherCSR}), true, year)
	refused(t, dir, "does not match the request", func() error { _, err := c.Import(ctx, provtest.PEM(foreign, root.Cert)); return err })
	refused(t, dir, "not a CA certificate", func() error {
		_, err := c.Import(ctx, provtest.PEM(root.SignCSR(t, csrPEM, false, year), root.Cert))
		return err
	})
	refused(t, dir, "not valid now", func() error {
		_, err := c.Import(ctx, provtest.PEM(root.SignCSR(t, csrPEM, true, time.Now().Add(-time.Minute)), root.Cert))
		return err
	})
	refused(t, dir, "no self-signed root", func() error { _, err := c.Import(ctx, provtest.PEM(sub)); return err })
	refused(t, dir, "does not verify", func() error { _, err := c.Import(ctx, provtest.PEM(sub, other.Cert)); return err })
	refused(t, dir, "no PEM certificate", func() error { _, err := c.Import(ctx, []byte("hello")); return err })
	refused(t, dir, "only CERTIFICATE blocks", func() error { _, err := c.Import(ctx, csrPEM); return err })

	r, err = c.Import(ctx, provtest.PEM(root.Cert, sub)) // any order
	if err != nil || !r.Changed || !strings.Contains(r.String(), "verifies up to the root CN=External Test Root") {
		t.Fatalf("import: %v\n%s", err, r)
	}
	if r, err := c.Import(ctx, provtest.PEM(sub, root.Cert)); err != nil || r.Changed {
		t.Errorf("import again: %v %+v", err, r)
	}
	if _, err := os.Stat(filepath.Join(dir, CSRFile)); err == nil {
		t.Error("the request is still there after the import")
	}
	refused(t, dir, "exists already", func() error { _, err := c.SelfSigned(ctx, "Root", 0); return err })

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
	roots.AddCert(root.Cert)
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, DNSName: "127.0.0.1"}); err != nil {
		t.Errorf("the API certificate does not verify up to the external root: %v", err)
	}
	rt, err := daemon.Open(ctx, dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer rt.Close()
	if len(rt.CAChain) != 1 || !rt.CAChain[0].Equal(root.Cert) {
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
	if _, err := c.Token(ctx, "so-pin-1234", "user-pin-1234"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Key(ctx, ""); err != nil {
		t.Fatal(err)
	}
	refused(t, dir, "at least one day", func() error { _, err := c.SelfSigned(ctx, "Root", time.Hour); return err })
	r, err := c.SelfSigned(ctx, "Corp Root CA", 0)
	if err != nil || !r.Changed {
		t.Fatalf("selfsigned: %v %+v", err, r)
	}
	if r, err := c.SelfSigned(ctx, "Corp Root CA", 0); err != nil || r.Changed {
		t.Errorf("selfsigned again: %v %+v", err, r)
	}
	refused(t, dir, "not replaced", func() error { _, err := c.SelfSigned(ctx, "Other Root CA", 0); return err })
	refused(t, dir, "exists already", func() error { _, _, err := c.CSR(ctx, "Sub"); return err })
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
