package scep

import (
	"crypto/x509"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/enrollment-appliance/aeappliance/proto/scep/sceptest"
)

// The RA's keys are split (RFC 8894 §3.5.1): GetCACert holds exactly two RA certificates, one
// with only digitalSignature and one with only keyEncipherment; CertReps are signed with the signing
// certificate; a request encrypted to the signing certificate is refused badMessageCheck without
// reaching the backend; and an envelope addressed to every certificate of GetCACert (as scepclient
// writes it without -ca-fingerprint) is opened through the encryption certificate's recipient info.
func TestRAKeysSplit(t *testing.T) {
	openssl := sceptest.NeedTool(t, "openssl")
	p := sceptest.NewPKI(t, false)
	b := newBackend(p)
	srv := server(t, testConfig(p, b), "")

	resp, body := httpDo(t, "GET", srv.URL+"/scep/devices?operation=GetCACert", nil)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GetCACert = %d", resp.StatusCode)
	}
	var signing, encryption []*x509.Certificate
	for _, c := range sceptest.CertsOnly(t, body) {
		switch {
		case c.IsCA:
		case c.KeyUsage == x509.KeyUsageDigitalSignature:
			signing = append(signing, c)
		case c.KeyUsage == x509.KeyUsageKeyEncipherment:
			encryption = append(encryption, c)
		default:
			t.Errorf("GetCACert holds an RA certificate %q with keyUsage %#x", c.Subject, c.KeyUsage)
		}
	}
	if len(signing) != 1 || len(encryption) != 1 || signing[0].Equal(encryption[0]) {
		t.Fatalf("GetCACert holds %d signing-only and %d encryption-only RA certificates, want one each", len(signing), len(encryption))
	}

	q := sceptest.NewRequester(t, 3, "split-1")
	rep, certs := exchange(t, q, p, srv.URL, "devices", PKCSReq, "tx-split-1", sceptest.NewCSR(t, q.Key, "split-1", sceptest.Challenge), false)
	if rep.PKIStatus != Success || len(certs) == 0 || !rep.Signer.Equal(signing[0]) {
		t.Errorf("PKCSReq to the encryption certificate: CertRep %d/%d signed by %q, want SUCCESS signed by the signing certificate",
			rep.PKIStatus, rep.FailInfo, rep.Signer.Subject)
	}

	enrolls, _ := b.calls()
	req, der := q.Message(t, PKCSReq, "tx-split-2", sceptest.NewCSR(t, q.Key, "split-2", sceptest.Challenge), signing[0])
	_, reply := pkiOperation(t, srv.URL, "devices", der, false)
	if rep, _ := certRep(t, q, p, req, reply); rep.PKIStatus != Failure || rep.FailInfo != BadMessageCheck {
		t.Errorf("PKCSReq encrypted to the signing certificate: CertRep %d/%d, want FAILURE badMessageCheck", rep.PKIStatus, rep.FailInfo)
	}
	if n, _ := b.calls(); n != enrolls {
		t.Errorf("the backend was asked about a request encrypted to the signing certificate")
	}

	// One envelope for the signing certificate, the encryption certificate and the CA (OpenSSL writes
	// a recipient info for each).
	dir := t.TempDir()
	csrFile := filepath.Join(dir, "csr.der")
	if err := os.WriteFile(csrFile, sceptest.NewCSR(t, q.Key, "split-3", sceptest.Challenge), 0o600); err != nil {
		t.Fatal(err)
	}
	envFile := filepath.Join(dir, "env.der")
	args := []string{"cms", "-encrypt", "-binary", "-aes256", "-in", csrFile, "-outform", "DER", "-out", envFile}
	for i, c := range []*x509.Certificate{p.RASignCert, p.RAEncryptCert, p.CACert} {
		args = append(args, "-recip", sceptest.WritePEM(t, dir, string(rune('a'+i))+".pem", "CERTIFICATE", c.Raw))
	}
	if out, err := exec.Command(openssl, args...).CombinedOutput(); err != nil {
		t.Fatalf("openssl cms -encrypt: %v\n%s", err, out)
	}
	env, err := os.ReadFile(envFile)
	if err != nil {
		t.Fatal(err)
	}
	req, der = q.Signed(t, PKCSReq, "tx-split-3", env)
	_, reply = pkiOperation(t, srv.URL, "devices", der, false)
	if rep, certs := certRep(t, q, p, req, reply); rep.PKIStatus != Success || len(certs) == 0 || certs[0].Subject.CommonName != "split-3" {
		t.Errorf("PKCSReq encrypted to every GetCACert certificate: CertRep %d/%d, want SUCCESS", rep.PKIStatus, rep.FailInfo)
	}
}
