package cmc

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/asn1"
	"os"
	"regexp"
	"strings"
	"testing"
)

// The captured cepces Issue request (002) carries a bare PKCS#10; the certificate the mock CA issued for it
// (in the 004 reply) holds the same public key.
func TestCaptured002IsBarePKCS10(t *testing.T) {
	der := capturedToken(t, "002_MockCA_CES_UsernamePassword_service_svc_CES.xml")
	r, err := ParseRequest(der)
	if err != nil {
		t.Fatalf("ParseRequest(002) = %v", err)
	}
	if r.Kind != PKCS10 || r.BodyPartID != 0 || r.OldCert != nil || r.SignerCert != nil {
		t.Errorf("ParseRequest(002) = kind %v, bodyPartID %d, old %v, signer %v; want a bare PKCS10", r.Kind, r.BodyPartID, r.OldCert, r.SignerCert)
	}
	if !bytes.Equal(r.CSR, der) {
		t.Errorf("CSR is not the token itself")
	}
	if got := r.CertificateRequest.Subject.String(); got != "CN=host1.example.test" {
		t.Errorf("subject = %q, want CN=host1.example.test", got)
	}
	if len(r.NameValues) != 0 {
		t.Errorf("NameValues = %v, want none (cepces sends no attributes)", r.NameValues)
	}
	if _, ok := r.NameValue("CertificateTemplate"); ok {
		t.Errorf("CertificateTemplate found in a request without attributes")
	}
	pub, ok := r.CertificateRequest.PublicKey.(*rsa.PublicKey)
	if !ok || pub.N.BitLen() != 2048 {
		t.Fatalf("public key = %T, want RSA-2048", r.CertificateRequest.PublicKey)
	}
	resp := decodeResponse(t, capturedToken(t, "004_MockCA_CES_UsernamePassword_service_svc_CES.response.xml"))
	if len(resp.certs) == 0 || !resp.certs[0].PublicKey.(*rsa.PublicKey).Equal(pub) {
		t.Errorf("the certificate issued in 004 does not hold the 002 request's key")
	}
}

// The captured 004 request is QueryTokenStatus: its BinarySecurityToken is empty, and an empty token is refused.
func TestCaptured004RequestHasNoToken(t *testing.T) {
	b, err := os.ReadFile("testdata/004_MockCA_CES_UsernamePassword_service_svc_CES.xml")
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`BinarySecurityToken[^>]*/>`).Match(b) || !bytes.Contains(b, []byte("QueryTokenStatus")) {
		t.Fatalf("004 request is not a QueryTokenStatus with an empty token")
	}
	if _, err := ParseRequest(nil); err == nil {
		t.Errorf("ParseRequest(empty) succeeded")
	}
}

func TestParseBarePKCS10WithTemplate(t *testing.T) {
	key := newECKey(t)
	der := makeCSR(t, key, "", nameValueAttr(t, "CertificateTemplate", "WebServer", "SAN", "dns=a.example"))
	r, err := ParseRequest(der)
	if err != nil {
		t.Fatalf("ParseRequest = %v", err)
	}
	if r.Kind != PKCS10 || r.BodyPartID != 0 || r.SignerIsRequestKey {
		t.Errorf("got kind %v bodyPartID %d signerIsRequestKey %v", r.Kind, r.BodyPartID, r.SignerIsRequestKey)
	}
	if v, _ := r.NameValue("certificatetemplate"); v != "WebServer" {
		t.Errorf("NameValue(certificatetemplate) = %q, want WebServer", v)
	}
	if r.NameValues["SAN"] != "dns=a.example" {
		t.Errorf("NameValues = %v", r.NameValues)
	}
	if !key.PublicKey.Equal(r.CertificateRequest.PublicKey) {
		t.Errorf("public key differs")
	}
}

func regInfo(t *testing.T, s string) []byte { return mustMarshal(t, []byte(s)) }

func addAttributes(t *testing.T, ref int64, attrs ...rawAttr) []byte {
	var b []byte
	for _, a := range attrs {
		b = append(b, mustMarshal(t, a)...)
	}
	return mustMarshal(t, struct {
		PKIDataReference int64
		CertReferences   []int64
		Attributes       asn1.RawValue
	}{0, []int64{ref}, set(b)})
}

// A CMC request as Windows builds it: PKIData with one PKCS#10 (bodyPartID 1), a CmcAddAttributes control,
// signed by the request key and naming it by subjectKeyIdentifier, without certificates.
func TestParseCMCSignedByRequestKey(t *testing.T) {
	key := newECKey(t)
	csr := makeCSR(t, key, "TestCN", nameValueAttr(t, "CertificateTemplate", "User"))
	clientInfo := rawAttr{Type: asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 311, 21, 20}, Values: []asn1.RawValue{{FullBytes: mustMarshal(t, struct {
		ID      int
		Machine string `asn1:"utf8"`
	}{9, "host"})}}}
	pd := pkiDataT(t, 1, csr,
		control(t, 2, oidCMCAddAttributes, addAttributes(t, 1, clientInfo, nameValueAttr(t, "Extra", "x"))),
		control(t, 3, oidCMCRegInfo, regInfo(t, "certificatetemplate=User&Note=a%20b&Odd=%zz")),
		control(t, 4, oidCMCTransactionID, mustMarshal(t, 42)))
	der := signedDataT(t, oidPKIData, pd, nil, testSigner{key: key, ski: skiOf(t, key.Public())})
	r, err := ParseRequest(der)
	if err != nil {
		t.Fatalf("ParseRequest = %v", err)
	}
	if r.Kind != CMC || r.BodyPartID != 1 || !r.SignerIsRequestKey || r.SignerCert != nil || r.OldCert != nil {
		t.Errorf("got kind %v bodyPartID %d signerIsRequestKey %v signer %v old %v", r.Kind, r.BodyPartID, r.SignerIsRequestKey, r.SignerCert, r.OldCert)
	}
	if !bytes.Equal(r.CSR, csr) || r.CertificateRequest.Subject.CommonName != "TestCN" {
		t.Errorf("CSR not the inner PKCS#10")
	}
	want := map[string]string{"CertificateTemplate": "User", "Extra": "x", "Note": "a b", "Odd": "%zz"}
	for k, v := range want {
		if got, _ := r.NameValue(k); got != v {
			t.Errorf("NameValue(%q) = %q, want %q (all: %v)", k, got, v, r.NameValues)
		}
	}
	if len(r.NameValues) != len(want) {
		t.Errorf("NameValues = %v, want %d entries", r.NameValues, len(want))
	}
}

// A renewal: PKCS#7 (id-data) around a PKCS#10 with a new key carrying the old certificate, signed by the old
// certificate's key.
func TestParseRenewalPKCS7(t *testing.T) {
	ca := newTestCA(t)
	oldKey, newKey := newECKey(t), newECKey(t)
	old := ca.issue(t, oldKey.Public(), "host1", 100)
	csr := makeCSR(t, newKey, "host1", renewalAttr(old), nameValueAttr(t, "CertificateTemplate", "Machine"))
	der := signedDataT(t, oidData, csr, []*x509.Certificate{old, ca.cert}, testSigner{key: oldKey, cert: old})
	r, err := ParseRequest(der)
	if err != nil {
		t.Fatalf("ParseRequest = %v", err)
	}
	if r.Kind != Renewal || r.OldCert == nil || !r.OldCert.Equal(old) || r.SignerCert == nil || !r.SignerCert.Equal(old) || r.SignerIsRequestKey {
		t.Errorf("got kind %v old %v signer %v signerIsRequestKey %v", r.Kind, r.OldCert != nil, r.SignerCert != nil, r.SignerIsRequestKey)
	}
	if r.BodyPartID != 0 || r.NameValues["CertificateTemplate"] != "Machine" || !bytes.Equal(r.CSR, csr) {
		t.Errorf("bodyPartID %d NameValues %v", r.BodyPartID, r.NameValues)
	}
}

// Windows' CMC renewal: PKIData, first signer the old key, second the new request key.
func TestParseRenewalCMCTwoSigners(t *testing.T) {
	ca := newTestCA(t)
	oldKey, newKey := newECKey(t), newECKey(t)
	old := ca.issue(t, oldKey.Public(), "user", 7)
	csr := makeCSR(t, newKey, "", renewalAttr(old))
	pd := pkiDataT(t, 1, csr, control(t, 2, oidCMCRegInfo, regInfo(t, "CertificateTemplate=User")))
	der := signedDataT(t, oidPKIData, pd, []*x509.Certificate{old},
		testSigner{key: oldKey, cert: old}, testSigner{key: newKey, ski: skiOf(t, newKey.Public())})
	r, err := ParseRequest(der)
	if err != nil {
		t.Fatalf("ParseRequest = %v", err)
	}
	if r.Kind != Renewal || !r.OldCert.Equal(old) || r.BodyPartID != 1 || r.NameValues["CertificateTemplate"] != "User" {
		t.Errorf("got kind %v bodyPartID %d NameValues %v", r.Kind, r.BodyPartID, r.NameValues)
	}
}

// Renewal with the same key: the request key is the old certificate's key.
func TestParseRenewalSameKey(t *testing.T) {
	ca := newTestCA(t)
	key := newECKey(t)
	old := ca.issue(t, key.Public(), "host", 8)
	csr := makeCSR(t, key, "host", renewalAttr(old))
	r, err := ParseRequest(signedDataT(t, oidData, csr, []*x509.Certificate{old}, testSigner{key: key, cert: old}))
	if err != nil {
		t.Fatalf("ParseRequest = %v", err)
	}
	if r.Kind != Renewal || !r.OldCert.Equal(old) || !r.SignerIsRequestKey {
		t.Errorf("got kind %v signerIsRequestKey %v", r.Kind, r.SignerIsRequestKey)
	}
}

// A PKCS#7 around a PKCS#10 without the renewal attribute, signed by another certificate: a renewal naming the
// old certificate only as signer.
func TestParsePKCS7SignedByOtherCertIsRenewal(t *testing.T) {
	ca := newTestCA(t)
	oldKey, newKey := newECKey(t), newECKey(t)
	old := ca.issue(t, oldKey.Public(), "host", 9)
	csr := makeCSR(t, newKey, "host")
	r, err := ParseRequest(signedDataT(t, oidData, csr, []*x509.Certificate{old}, testSigner{key: oldKey, cert: old}))
	if err != nil {
		t.Fatalf("ParseRequest = %v", err)
	}
	if r.Kind != Renewal || !r.OldCert.Equal(old) || r.SignerIsRequestKey {
		t.Errorf("got kind %v", r.Kind)
	}
}

// A CMC request signed by an enrollment agent (no renewal attribute) stays CMC, with the agent as signer.
func TestParseCMCSignedByAgent(t *testing.T) {
	ca := newTestCA(t)
	agentKey, key := newECKey(t), newECKey(t)
	agent := ca.issue(t, agentKey.Public(), "agent", 10)
	pd := pkiDataT(t, 5, makeCSR(t, key, "someone"))
	r, err := ParseRequest(signedDataT(t, oidPKIData, pd, []*x509.Certificate{agent}, testSigner{key: agentKey, cert: agent}))
	if err != nil {
		t.Fatalf("ParseRequest = %v", err)
	}
	if r.Kind != CMC || r.SignerIsRequestKey || r.SignerCert == nil || !r.SignerCert.Equal(agent) || r.OldCert != nil || r.BodyPartID != 5 {
		t.Errorf("got kind %v signerIsRequestKey %v signer %v old %v bodyPartID %d", r.Kind, r.SignerIsRequestKey, r.SignerCert != nil, r.OldCert != nil, r.BodyPartID)
	}
}

// Windows signs CMC with SHA-1 and names RSA signatures rsaEncryption; both verify.
func TestParseCMCWindowsAlgorithms(t *testing.T) {
	ca := newTestCA(t)
	key := newECKey(t)
	agentKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	agent := ca.issue(t, agentKey.Public(), "agent", 11)
	pd := pkiDataT(t, 1, makeCSR(t, key, "someone"))
	for _, s := range []testSigner{{key: key, ski: skiOf(t, key.Public()), sha1: true}, {key: agentKey, cert: agent, sha1: true}} {
		r, err := ParseRequest(signedDataT(t, oidPKIData, pd, []*x509.Certificate{agent}, s))
		if err != nil {
			t.Fatalf("ParseRequest(SHA-1, %T) = %v", s.key, err)
		}
		if r.Kind != CMC || r.SignerIsRequestKey != (s.cert == nil) {
			t.Errorf("%T: kind %v signerIsRequestKey %v", s.key, r.Kind, r.SignerIsRequestKey)
		}
	}
}

func corruptLast(b []byte) []byte {
	c := bytes.Clone(b)
	c[len(c)-1] ^= 0x55
	return c
}

func TestParseRequestRefuses(t *testing.T) {
	ca := newTestCA(t)
	key, oldKey, otherKey := newECKey(t), newECKey(t), newECKey(t)
	old := ca.issue(t, oldKey.Public(), "host", 20)
	other := ca.issue(t, otherKey.Public(), "other", 21)
	csr := makeCSR(t, key, "host", nameValueAttr(t, "CertificateTemplate", "User"))
	badCSR := corruptLast(csr)
	ski := skiOf(t, key.Public())
	goodCMC := signedDataT(t, oidPKIData, pkiDataT(t, 1, csr), nil, testSigner{key: key, ski: ski})
	renewalCSR := makeCSR(t, key, "host", renewalAttr(old))
	big := append([]byte{0x30, 0x83, 0x01, 0x00, 0x01}, make([]byte, MaxSize+1-5)...)

	tests := []struct {
		name, der string
		want      string
		failInfo  int
	}{
		{"bare PKCS#10 with a bad signature", string(badCSR), "PKCS#10 signature", FailBadMessageCheck},
		{"CMC around a PKCS#10 with a bad signature", string(signedDataT(t, oidPKIData, pkiDataT(t, 1, badCSR), nil, testSigner{key: key, ski: ski})), "PKCS#10 signature", FailBadMessageCheck},
		{"SignedData signed by an unrelated key", string(signedDataT(t, oidPKIData, pkiDataT(t, 1, csr), nil, testSigner{key: otherKey, ski: ski})), "does not verify", FailBadMessageCheck},
		{"messageDigest mismatch", string(signedDataT(t, oidPKIData, pkiDataT(t, 1, csr), nil, testSigner{key: key, ski: ski, digest: make([]byte, 32)})), "messageDigest does not match", FailBadMessageCheck},
		{"signed contentType mismatch", string(signedDataT(t, oidPKIData, pkiDataT(t, 1, csr), nil, testSigner{key: key, ski: ski, contentType: oidData})), "does not match eContentType", FailBadMessageCheck},
		{"renewal signed by another certificate's key", string(signedDataT(t, oidData, renewalCSR, []*x509.Certificate{old, other}, testSigner{key: otherKey, cert: other})), "not signed with the key of the certificate being renewed", FailBadMessageCheck},
		{"renewal signed only by the new key", string(signedDataT(t, oidData, renewalCSR, []*x509.Certificate{old}, testSigner{key: key, ski: ski})), "not signed with the key of the certificate being renewed", FailBadMessageCheck},
		{"trailing bytes after PKCS#10", string(append(bytes.Clone(csr), 0)), "trailing data", FailBadRequest},
		{"trailing bytes after CMC", string(append(bytes.Clone(goodCMC), 5, 0)), "trailing data", FailBadRequest},
		{"truncated PKCS#10", string(csr[:len(csr)-10]), "not a DER request", FailBadRequest},
		{"truncated CMC", string(goodCMC[:len(goodCMC)/2]), "not a DER request", FailBadRequest},
		{"over MaxSize", string(big), "over the", FailBadRequest},
		{"indefinite length", "\x30\x80\x06\x09\x2a\x86\x48\x86\xf7\x0d\x01\x07\x02\x00\x00", "not a DER request", FailBadRequest},
		{"non-minimal length", "\x30\x81\x03\x02\x01\x00", "not a DER request", FailBadRequest},
		{"empty", "", "not a DER request", FailBadRequest},
		{"unknown CMC control", string(signedDataT(t, oidPKIData, pkiDataT(t, 1, csr, control(t, 2, asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 7, 8}, mustMarshal(t, 1))), nil, testSigner{key: key, ski: ski})), "unsupported CMC control", FailBadRequest},
		{"two requests", string(signedDataT(t, oidPKIData, twoRequests(t, csr), nil, testSigner{key: key, ski: ski})), "exactly one", FailBadRequest},
		{"bodyPartID 0", string(signedDataT(t, oidPKIData, pkiDataT(t, 0, csr), nil, testSigner{key: key, ski: ski})), "out of range", FailBadRequest},
		{"duplicate bodyPartID", string(signedDataT(t, oidPKIData, pkiDataT(t, 1, csr, control(t, 1, oidCMCRegInfo, regInfo(t, "a=b"))), nil, testSigner{key: key, ski: ski})), "used twice", FailBadRequest},
		{"conflicting template names", string(signedDataT(t, oidPKIData, pkiDataT(t, 1, csr, control(t, 2, oidCMCRegInfo, regInfo(t, "CertificateTemplate=Admin"))), nil, testSigner{key: key, ski: ski})), "different values", FailBadRequest},
		{"extra field in PKIData", string(signedDataT(t, oidPKIData, extraField(t, pkiDataT(t, 1, csr)), nil, testSigner{key: key, ski: ski})), "not DER", FailBadRequest},
		{"no signer", string(signedDataT(t, oidPKIData, pkiDataT(t, 1, csr), nil)), "no signer", FailBadMessageCheck},
		{"unknown content type", string(signedDataT(t, asn1.ObjectIdentifier{1, 2, 3}, csr, nil, testSigner{key: key, ski: ski})), "unsupported eContentType", FailBadRequest},
		{"not signedData", string(mustMarshal(t, contentInfo{oidData, tagged(0, mustMarshal(t, csr))})), "not signedData", FailBadRequest},
	}
	for _, tt := range tests {
		r, err := ParseRequest([]byte(tt.der))
		if err == nil {
			t.Errorf("%s: ParseRequest = %v, want an error", tt.name, r.Kind)
			continue
		}
		if !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: ParseRequest error = %q, want it to mention %q", tt.name, err, tt.want)
		}
		if got := FailInfoOf(err); got != tt.failInfo {
			t.Errorf("%s: FailInfoOf(%q) = %d, want %d", tt.name, err, got, tt.failInfo)
		}
	}
}

// Every strict prefix of a valid request is refused (and none panics).
func TestParseRequestTruncations(t *testing.T) {
	key := newECKey(t)
	csr := makeCSR(t, key, "host")
	der := signedDataT(t, oidPKIData, pkiDataT(t, 1, csr), nil, testSigner{key: key, ski: skiOf(t, key.Public())})
	for _, b := range [][]byte{csr, der} {
		for i := 0; i < len(b); i++ {
			if _, err := ParseRequest(b[:i]); err == nil {
				t.Fatalf("ParseRequest(prefix %d of %d) succeeded", i, len(b))
			}
		}
	}
}

func twoRequests(t *testing.T, csr []byte) []byte {
	r1 := mustMarshal(t, tagged(0, append(mustMarshal(t, 1), csr...)))
	r2 := mustMarshal(t, tagged(0, append(mustMarshal(t, 2), csr...)))
	return mustMarshal(t, struct{ C, R, S, O []asn1.RawValue }{[]asn1.RawValue{}, []asn1.RawValue{{FullBytes: r1}, {FullBytes: r2}}, []asn1.RawValue{}, []asn1.RawValue{}})
}

// extraField appends an element inside a SEQUENCE, which encoding/asn1 alone would skip.
func extraField(t *testing.T, seq []byte) []byte {
	var v asn1.RawValue
	if _, err := asn1.Unmarshal(seq, &v); err != nil {
		t.Fatal(err)
	}
	v.Bytes = append(bytes.Clone(v.Bytes), mustMarshal(t, 1)...)
	v.FullBytes = nil
	return mustMarshal(t, v)
}
