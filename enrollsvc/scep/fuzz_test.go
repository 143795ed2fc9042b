package scep

import (
	"path/filepath"
	"testing"
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
		m, err := ParsePKIMessage(der)
		if m == nil {
			if err == nil {
				t.Fatal("ParsePKIMessage = nil, nil")
			}
			return
		}
		if m.TransactionID == "" || len(m.SenderNonce) != nonceSize {
			t.Fatalf("ParsePKIMessage returned an unanswerable message %+v (error %v)", m, err)
		}
		if _, err := NewCertRep(m, Result{Status: Failure, FailInfo: FailInfoOf(err)}, p.raCert, p.raKey, p.caCert); err != nil {
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
		if m, err := ParsePKIMessage(readCaptured(f, filepath.Base(file))); err == nil {
			f.Add(m.Envelope)
		}
	}
	f.Fuzz(func(t *testing.T, env []byte) {
		checkContent(t, &PKIMessage{MessageType: PKCSReq, Envelope: env}, p)
		checkContent(t, &PKIMessage{MessageType: CertPoll, Envelope: env}, p)
	})
}

func checkContent(t *testing.T, m *PKIMessage, p *testPKI) {
	content, err := m.decrypt(p.raCert, p.raKey, true)
	if err != nil {
		if fi := FailInfoOf(err); fi < BadAlg || fi > BadCertID {
			t.Fatalf("failInfo %d", fi)
		}
		return
	}
	if m.MessageType == CertPoll {
		_, _, _ = parseIssuerAndSubject(content)
		return
	}
	if csr, _, err := parseCSR(content); err == nil && csr.CheckSignature() != nil {
		t.Fatal("parseCSR accepted a bad signature")
	}
}
