package scep

import (
	"bytes"
	"path/filepath"
	"strings"
	"testing"
	"time"

	scepmsg "github.com/enrollment-appliance/aeappliance/proto/scep"
	"github.com/enrollment-appliance/aeappliance/proto/scep/sceptest"
)

// The real clients of ARCHITECTURE §11 against the handler on loopback: Debian's scepclient (micromdm scep
// 2.1.0) and certmonger 0.79.17.

func TestScepclient(t *testing.T) {
	bin := sceptest.NeedTool(t, "scepclient")
	t.Parallel()
	p := pkiFor(t)
	b := newBackend(p)
	b.allowDES = true // scepclient 2.1.0 always encrypts with single DES
	cfg := testConfig(p, b)
	srv := server(t, cfg, "scepclient")
	dir := t.TempDir()
	key, cert := filepath.Join(dir, "key.pem"), filepath.Join(dir, "cert.pem")
	scepclient := func(url, challenge, key, cert string, extra ...string) (string, error) {
		return sceptest.Run(t, time.Minute, nil, bin, append([]string{"-server-url=" + url, "-challenge=" + challenge,
			"-private-key=" + key, "-certificate=" + cert, "-cn=scep-device-1"}, extra...)...)
	}

	out, err := scepclient(srv.URL+"/scep/devices", sceptest.Challenge, key, cert)
	if err != nil {
		t.Fatalf("scepclient: %v\n%s", err, out)
	}
	first := sceptest.ReadCert(t, cert)
	if err := p.Verifies(first); err != nil || first.Subject.CommonName != "scep-device-1" {
		t.Fatalf("scepclient obtained %v: %v", first.Subject, err)
	}

	// Run again with the certificate in place: scepclient sends a RenewalReq signed with it (same key, no
	// challenge).
	out, err = scepclient(srv.URL+"/scep/devices", "", key, cert)
	if err != nil {
		t.Fatalf("scepclient renewal: %v\n%s", err, out)
	}
	renewed := sceptest.ReadCert(t, cert)
	if err := p.Verifies(renewed); err != nil || renewed.SerialNumber.Cmp(first.SerialNumber) == 0 {
		t.Fatalf("renewal gave serial %v (first %v): %v", renewed.SerialNumber, first.SerialNumber, err)
	}
	if enrolls, _ := b.calls(); enrolls != 2 {
		t.Errorf("backend saw %d enrollments, want 2", enrolls)
	}

	t.Run("wrong challenge", func(t *testing.T) {
		dir := t.TempDir()
		out, err := scepclient(srv.URL+"/scep/devices/pkiclient.exe", "wrong", filepath.Join(dir, "key.pem"), filepath.Join(dir, "cert.pem"))
		if err == nil || !strings.Contains(out, "failInfo: badRequest") {
			t.Errorf("scepclient with a wrong challenge: %v\n%s", err, out)
		}
	})
	t.Run("DES refused by default", func(t *testing.T) {
		cfg := testConfig(p, newBackend(p))
		srv := server(t, cfg, "")
		dir := t.TempDir()
		out, err := scepclient(srv.URL+"/scep/devices", sceptest.Challenge, filepath.Join(dir, "key.pem"), filepath.Join(dir, "cert.pem"))
		if err == nil || !strings.Contains(out, "failInfo: badAlg") {
			t.Errorf("scepclient (DES) without AllowDES: %v\n%s", err, out)
		}
	})
	t.Run("P-256 CA", func(t *testing.T) {
		// scepclient encrypts to every certificate GetCACert returns, and panics on an ECDSA key; told the
		// encryption certificate's fingerprint, it verifies the CertRep with that certificate too, which
		// the signing key's signature does not pass. So it asks for the RA's certificates only (RAOnly).
		p := sceptest.NewPKI(t, true)
		b := newBackend(p)
		b.allowDES = true
		cfg := testConfig(p, b)
		srv := server(t, cfg, "")
		dir := t.TempDir()
		cert := filepath.Join(dir, "cert.pem")
		out, err := scepclient(srv.URL+"/scep/devices", sceptest.Challenge, filepath.Join(dir, "key.pem"), cert, "-cacert-message="+RAOnly)
		if err != nil {
			t.Fatalf("scepclient: %v\n%s", err, out)
		}
		if err := p.Verifies(sceptest.ReadCert(t, cert)); err != nil {
			t.Error(err)
		}
	})
}

func TestCertmonger(t *testing.T) {
	cm := sceptest.StartCertmonger(t)
	t.Parallel()
	p := pkiFor(t)
	b := newBackend(p)
	srv := server(t, testConfig(p, b), "certmonger")
	cm.AddCA(t, "TestSCEP", srv.URL+"/scep/devices")
	cm.AddCA(t, "TestSCEPPending", srv.URL+"/scep/pending")
	first := cm.Request(t, "TestSCEP", "good", "certmonger-host", sceptest.Challenge)
	if err := p.Verifies(first); err != nil || first.Subject.CommonName != "certmonger-host" {
		t.Fatalf("certmonger obtained %v: %v", first.Subject, err)
	}

	t.Run("wrong challenge", func(t *testing.T) {
		// certmonger's words for failInfo badRequest.
		if status := cm.Submit(t, "TestSCEP", "bad", "certmonger-bad", "wrong"); !strings.Contains(status, "CA_REJECTED") ||
			!strings.Contains(status, "is not permitted or is not supported by server") {
			t.Errorf("certmonger with a wrong challenge:\n%s", status)
		}
	})

	t.Run("resubmit and rekey", func(t *testing.T) {
		// Both send a PKCSReq signed with the certificate certmonger holds; rekey's CSR has a new key.
		prev := first
		for _, command := range []string{"resubmit", "rekey"} {
			if out, err := cm.Getcert(t, command, "-i", "good", "-w", "--wait-timeout", "60"); err != nil {
				t.Fatalf("getcert %s: %v\n%s", command, err, out)
			}
			renewed := sceptest.ReadCert(t, cm.CertFile("good"))
			sameKey := bytes.Equal(renewed.RawSubjectPublicKeyInfo, prev.RawSubjectPublicKeyInfo)
			if err := p.Verifies(renewed); err != nil || renewed.SerialNumber.Cmp(prev.SerialNumber) == 0 || sameKey != (command == "resubmit") {
				list, _ := cm.Getcert(t, "list", "-i", "good")
				t.Fatalf("%s gave serial %v (before %v), same key %t: %v\n%s", command, renewed.SerialNumber, prev.SerialNumber, sameKey, err, list)
			}
			if signer := b.lastSignerCert(); !signer.Equal(prev) {
				t.Errorf("%s was signed by %v, want the certificate held", command, signer.Subject)
			}
			prev = renewed
		}
	})

	t.Run("pending then CertPoll", func(t *testing.T) {
		if status := cm.Submit(t, "TestSCEPPending", "pend", "certmonger-pending", sceptest.Challenge); !strings.Contains(status, "CA_WORKING") {
			t.Fatalf("certmonger on a pending profile:\n%s", status)
		}
		// certmonger itself polls days later (it waits 604800 s) by sending its PKCSReq again; its helper
		// sends the GetCertInitial (CertPoll) message certmonger prepared.
		gic, key := cm.PendingPoll(t, "pend")
		gicMsg, err := scepmsg.ParsePKIMessage(gic)
		if err != nil {
			t.Fatal(err)
		}
		q := sceptest.Requester{Key: key, Cert: gicMsg.Signer}
		rep, _ := certRep(t, q, p, gicMsg, cm.SubmitPoll(t, srv.URL+"/scep/pending", p.RAEncryptCert, p.CACert, gic))
		if rep.PKIStatus != Pending {
			t.Fatalf("CertPoll before approval: status %d", rep.PKIStatus)
		}
		b.approve(gicMsg.TransactionID)
		rep, certs := certRep(t, q, p, gicMsg, cm.SubmitPoll(t, srv.URL+"/scep/pending", p.RAEncryptCert, p.CACert, gic))
		if rep.PKIStatus != Success || len(certs) == 0 || p.Verifies(certs[0]) != nil || !key.PublicKey.Equal(certs[0].PublicKey) {
			t.Fatalf("CertPoll after approval: status %d, %d certificates", rep.PKIStatus, len(certs))
		}
		// And certmonger's own way: the same PKCSReq again.
		if out, err := cm.Getcert(t, "resubmit", "-i", "pend", "-w", "--wait-timeout", "60"); err != nil {
			t.Fatalf("getcert resubmit: %v\n%s", err, out)
		}
		if err := p.Verifies(sceptest.ReadCert(t, cm.CertFile("pend"))); err != nil {
			t.Error(err)
		}
	})
}
