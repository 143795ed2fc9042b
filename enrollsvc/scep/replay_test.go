package scep

import (
	"bytes"
	"crypto/x509"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	scepmsg "github.com/enrollment-appliance/aeappliance/proto/scep"
	"github.com/enrollment-appliance/aeappliance/proto/scep/sceptest"
)

// TestReplayCaptured sends the captured messages through the handler, at the time they were signed.
func TestReplayCaptured(t *testing.T) {
	p := fixedPKI(t)
	b := newBackend(p)
	b.allowDES = true // the captured scepclient messages are DES
	var now atomic.Int64
	cfg := testConfig(p, b)
	cfg.Now = func() time.Time { return time.Unix(now.Load(), 0) }
	srv := server(t, cfg, "")
	for _, f := range capturedFiles(t) {
		der := readCaptured(t, filepath.Base(f))
		m, err := scepmsg.ParsePKIMessage(der)
		if err != nil {
			t.Fatal(err)
		}
		now.Store(m.SigningTime.Add(time.Minute).Unix())
		code, body := pkiOperation(t, srv.URL, "devices", der, strings.HasPrefix(filepath.Base(f), "certmonger"))
		if code != http.StatusOK {
			t.Fatalf("%s: %d %s", f, code, body)
		}
		rep, err := scepmsg.ParsePKIMessage(body)
		if err != nil || rep.TransactionID != m.TransactionID || !bytes.Equal(rep.RecipientNonce, m.SenderNonce) {
			t.Fatalf("%s: CertRep %v", f, err)
		}
		// The backend decides: a known challenge or one of our certificates issues; an unknown CertPoll fails.
		if rep.PKIStatus != Success && (rep.PKIStatus != Failure || rep.FailInfo != BadRequest && rep.FailInfo != BadCertID) {
			t.Errorf("%s: CertRep %d/%d", f, rep.PKIStatus, rep.FailInfo)
		}
	}
}

// TestOpenSSLInterop checks the CMS both ways with OpenSSL, what certmonger is built on: OpenSSL verifies
// and decrypts a CertRep, and envelopes OpenSSL writes with 3DES and AES-128/192 are read; RSA-OAEP key
// transport is refused as badAlg.
func TestOpenSSLInterop(t *testing.T) {
	openssl := sceptest.NeedTool(t, "openssl")
	p := sceptest.NewPKI(t, false)
	b := newBackend(p)
	srv := server(t, testConfig(p, b), "")
	dir := t.TempDir()
	q := sceptest.Requester{Key: sceptest.RSAKey(t, 3)}
	q.Cert = sceptest.SelfSigned(t, q.Key, "openssl-device")
	raPEM := sceptest.WritePEM(t, dir, "ra.pem", "CERTIFICATE", p.RAEncryptCert.Raw)
	caPEM := sceptest.WritePEM(t, dir, "ca.pem", "CERTIFICATE", p.CACert.Raw)
	csr := sceptest.NewCSR(t, q.Key, "openssl-device", sceptest.Challenge)
	csrFile := filepath.Join(dir, "csr.der")
	if err := os.WriteFile(csrFile, csr, 0o600); err != nil {
		t.Fatal(err)
	}
	run := func(args ...string) {
		t.Helper()
		if out, err := exec.Command(openssl, args...).CombinedOutput(); err != nil {
			t.Fatalf("openssl %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	for _, c := range []struct {
		cipher   string
		keyopt   []string
		failInfo int // -1: issued
	}{
		{"-des3", nil, BadAlg}, // 3DES only for profiles that allow DES
		{"-aes128", nil, -1},
		{"-aes192", nil, -1},
		{"-aes256", []string{"-keyopt", "rsa_padding_mode:oaep"}, BadAlg},
	} {
		env := filepath.Join(dir, "env.der")
		run(append([]string{"cms", "-encrypt", "-binary", "-in", csrFile, "-outform", "DER", "-out", env, c.cipher, "-recip", raPEM}, c.keyopt...)...)
		envDER, err := os.ReadFile(env)
		if err != nil {
			t.Fatal(err)
		}
		req, der := q.Signed(t, PKCSReq, "tx-openssl", envDER)
		_, body := pkiOperation(t, srv.URL, "devices", der, false)
		rep, certs := certRep(t, q, p, req, body)
		if c.failInfo >= 0 {
			if rep.PKIStatus != Failure || rep.FailInfo != c.failInfo {
				t.Errorf("%s %v: CertRep %d/%d, want FAILURE/%d", c.cipher, c.keyopt, rep.PKIStatus, rep.FailInfo, c.failInfo)
			}
			continue
		}
		if rep.PKIStatus != Success || len(certs) == 0 {
			t.Fatalf("%s: CertRep %d/%d", c.cipher, rep.PKIStatus, rep.FailInfo)
		}

		// OpenSSL reads our CertRep: the RA's signature chains to the CA, and the envelope opens with the
		// requester's key.
		repFile, envOut, certsOut := filepath.Join(dir, "rep.der"), filepath.Join(dir, "envout.der"), filepath.Join(dir, "certs.der")
		if err := os.WriteFile(repFile, body, 0o600); err != nil {
			t.Fatal(err)
		}
		run("cms", "-verify", "-binary", "-inform", "DER", "-in", repFile, "-CAfile", caPEM, "-purpose", "any", "-out", envOut)
		run("cms", "-decrypt", "-binary", "-inform", "DER", "-in", envOut, "-recip", sceptest.WritePEM(t, dir, "q.pem", "CERTIFICATE", q.Cert.Raw),
			"-inkey", sceptest.WritePEM(t, dir, "q.Key", "RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(q.Key)), "-out", certsOut)
		decrypted, err := os.ReadFile(certsOut)
		if err != nil {
			t.Fatal(err)
		}
		if got := sceptest.CertsOnly(t, decrypted); !got[0].Equal(certs[0]) {
			t.Errorf("OpenSSL decrypted another certificate")
		}
	}
}
