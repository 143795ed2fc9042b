package scep_test

import (
	"path/filepath"
	"testing"

	"github.com/enrollment-appliance/aeappliance/proto/cms"
	"github.com/enrollment-appliance/aeappliance/proto/scep"
	"github.com/enrollment-appliance/aeappliance/proto/scep/sceptest"
)

// FuzzParsePKIMessage feeds client bytes to the parser, seeded with what scepclient and certmonger sent
// (testdata/captured). Whatever it gets, the parser must not panic, must say why it refuses, and must leave
// every message it accepts, or can answer, answerable.
func FuzzParsePKIMessage(f *testing.F) {
	p := fixedPKI(f)
	for _, file := range capturedFiles(f) {
		f.Add(readCaptured(f, filepath.Base(file)))
	}
	f.Fuzz(func(t *testing.T, der []byte) {
		m, err := scep.ParsePKIMessage(der)
		if m == nil {
			if err == nil {
				t.Fatal("ParsePKIMessage = nil, nil")
			}
			return
		}
		if m.TransactionID == "" || len(m.SenderNonce) != scep.NonceSize {
			t.Fatalf("ParsePKIMessage returned an unanswerable message %+v (error %v)", m, err)
		}
		if _, err := scep.NewCertRep(m, scep.Result{Status: scep.Failure, FailInfo: scep.FailInfoOf(err)}, p.RASignCert, p.RASignKey, p.CACert); err != nil {
			t.Fatalf("NewCertRep(FAILURE) = %v", err)
		}
		if err != nil {
			return
		}
		if m.Signer == nil {
			t.Fatal("accepted message without a signer")
		}
		checkContent(t, m, p)
	})
}

// FuzzDecryptEnvelope fuzzes what lies behind the signature: the envelope, and the PKCS#10 or
// IssuerAndSubject in it, seeded with the captured envelopes.
func FuzzDecryptEnvelope(f *testing.F) {
	p := fixedPKI(f)
	for _, file := range capturedFiles(f) {
		if m, err := scep.ParsePKIMessage(readCaptured(f, filepath.Base(file))); err == nil {
			f.Add(m.Envelope)
		}
	}
	f.Fuzz(func(t *testing.T, env []byte) {
		checkContent(t, &scep.PKIMessage{MessageType: scep.PKCSReq, Envelope: env}, p)
		checkContent(t, &scep.PKIMessage{MessageType: scep.CertPoll, Envelope: env}, p)
	})
}

func checkContent(t *testing.T, m *scep.PKIMessage, p *sceptest.PKI) {
	content, err := m.DecryptWith(p.RAEncryptCert, p.RAEncryptKey, cms.DecryptOptions{AllowDES: true})
	if err != nil {
		if fi := scep.FailInfoOf(err); fi < scep.BadAlg || fi > scep.BadCertID {
			t.Fatalf("failInfo %d", fi)
		}
		return
	}
	if m.MessageType == scep.CertPoll {
		_, _, _ = scep.ParseIssuerAndSubject(content)
		return
	}
	if csr, _, err := scep.ParseCSR(content); err == nil && csr.CheckSignature() != nil {
		t.Fatal("parseCSR accepted a bad signature")
	}
}
