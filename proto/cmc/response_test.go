package cmc

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/asn1"
	"encoding/pem"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/enrollment-appliance/aeappliance/proto/cms"
)

// decodedResponse is what a client sees in a response token.
type decodedResponse struct {
	version      int
	digestAlgs   int
	eContentType asn1.ObjectIdentifier
	eContent     []byte
	certs        []*x509.Certificate
	signers      []signerInfo
	controls     []taggedAttribute // of the PKIResponse, when there is one
}

// decodeResponse is the test's own reading of a response token: ContentInfo → SignedData → PKIResponse.
func decodeResponse(t *testing.T, der []byte) decodedResponse {
	t.Helper()
	var ci contentInfo
	if rest, err := asn1.Unmarshal(der, &ci); err != nil || len(rest) > 0 || !ci.ContentType.Equal(oidSignedData) {
		t.Fatalf("not a ContentInfo signedData: %v", err)
	}
	var sd signedData
	if _, err := asn1.Unmarshal(ci.Content.Bytes, &sd); err != nil {
		t.Fatalf("SignedData: %v", err)
	}
	out := decodedResponse{version: sd.Version, eContentType: sd.EncapContentInfo.EContentType}
	das, _ := elements(sd.DigestAlgorithms.Bytes, "")
	out.digestAlgs = len(das)
	if _, err := asn1.Unmarshal(sd.EncapContentInfo.EContent.Bytes, &out.eContent); err != nil {
		t.Fatalf("eContent: %v", err)
	}
	certs, _ := elements(sd.Certificates.Bytes, "")
	for _, c := range certs {
		cert, err := x509.ParseCertificate(c.FullBytes)
		if err != nil {
			t.Fatal(err)
		}
		out.certs = append(out.certs, cert)
	}
	sis, _ := elements(sd.SignerInfos.Bytes, "")
	for _, e := range sis {
		var si signerInfo
		if _, err := asn1.Unmarshal(e.FullBytes, &si); err != nil {
			t.Fatal(err)
		}
		out.signers = append(out.signers, si)
	}
	if out.eContentType.Equal(oidPKIResponse) {
		var pr struct{ Controls, CMS, Other []asn1.RawValue }
		if rest, err := asn1.Unmarshal(out.eContent, &pr); err != nil || len(rest) > 0 {
			t.Fatalf("PKIResponse: %v", err)
		}
		for _, c := range pr.Controls {
			var ta taggedAttribute
			if _, err := asn1.Unmarshal(c.FullBytes, &ta); err != nil {
				t.Fatal(err)
			}
			out.controls = append(out.controls, ta)
		}
	}
	return out
}

func (d decodedResponse) status(t *testing.T) (status int, bodyList []int64, text string, failInfo int) {
	t.Helper()
	for _, c := range d.controls {
		if c.Type.Equal(oidCMCStatusInfo) {
			var st struct {
				Status   int
				BodyList []int64
				Text     string `asn1:"optional,utf8"`
				Fail     int    `asn1:"optional"`
			}
			if _, err := asn1.Unmarshal(c.Values.Bytes, &st); err != nil {
				t.Fatalf("CMCStatusInfo: %v", err)
			}
			return st.Status, st.BodyList, st.Text, st.Fail
		}
	}
	t.Fatalf("no CMCStatusInfo control")
	return
}

// checkSigned verifies the single SignerInfo independently of the package's verifier: messageDigest by hand,
// the signature with x509.Certificate.CheckSignature.
func checkSigned(t *testing.T, d decodedResponse, signerCert *x509.Certificate, alg x509.SignatureAlgorithm, hash crypto.Hash) {
	t.Helper()
	if len(d.signers) != 1 {
		t.Fatalf("%d signers, want 1", len(d.signers))
	}
	si := d.signers[0]
	var ias issuerAndSerial
	if _, err := asn1.Unmarshal(si.SID.FullBytes, &ias); err != nil || !bytes.Equal(ias.Issuer.FullBytes, signerCert.RawIssuer) || ias.Serial.Cmp(signerCert.SerialNumber) != 0 {
		t.Errorf("sid does not name the signer certificate")
	}
	attrs, err := cms.ParseAttributes(si.SignedAttrs.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	h := hash.New()
	h.Write(d.eContent)
	var sawType, sawDigest bool
	for _, a := range attrs {
		switch {
		case a.Type.Equal(oidContentType):
			var ct asn1.ObjectIdentifier
			asn1.Unmarshal(a.Values[0], &ct)
			sawType = ct.Equal(d.eContentType)
		case a.Type.Equal(oidMessageDigest):
			var md []byte
			asn1.Unmarshal(a.Values[0], &md)
			sawDigest = bytes.Equal(md, h.Sum(nil))
		}
	}
	if !sawType || !sawDigest {
		t.Errorf("signed attributes: contentType ok %v, messageDigest ok %v", sawType, sawDigest)
	}
	signed := append([]byte{0x31}, si.SignedAttrs.FullBytes[1:]...)
	if err := signerCert.CheckSignature(alg, signed, si.Signature); err != nil {
		t.Errorf("signature does not verify with the signer certificate: %v", err)
	}
}

func TestFullPKIResponseSigned(t *testing.T) {
	ca := newTestCA(t)
	leafKey := newECKey(t)
	leaf := ca.issue(t, leafKey.Public(), "host1", 77)
	der, err := FullPKIResponse(leaf, []*x509.Certificate{ca.cert}, 1, ca.key, ca.cert)
	if err != nil {
		t.Fatal(err)
	}
	d := decodeResponse(t, der)
	if !d.eContentType.Equal(oidPKIResponse) || d.version != 3 || d.digestAlgs != 1 {
		t.Errorf("eContentType %v version %d digestAlgorithms %d, want PKIResponse, 3, 1", d.eContentType, d.version, d.digestAlgs)
	}
	if len(d.certs) != 2 || !d.certs[0].Equal(leaf) || !d.certs[1].Equal(ca.cert) {
		t.Errorf("certificates = %d, want the leaf then the CA", len(d.certs))
	}
	status, bodyList, _, _ := d.status(t)
	if status != 0 || !slices.Equal(bodyList, []int64{1}) || len(d.controls) != 1 {
		t.Errorf("status %d bodyList %v controls %d, want success for [1], one control", status, bodyList, len(d.controls))
	}
	checkSigned(t, d, ca.cert, x509.ECDSAWithSHA256, crypto.SHA256)
	// The package's own verifier agrees.
	psd, err := parseSignedData(der)
	if err != nil {
		t.Fatalf("parseSignedData(own output) = %v", err)
	}
	if _, err := verifySigner(&psd.SignerInfos[0], psd.ContentType, psd.Content, []candidate{certCandidate(ca.cert)}); err != nil {
		t.Errorf("verifySigner(own output) = %v", err)
	}
	opensslVerify(t, der, ca.cert)
}

func TestFullPKIResponseKeyTypes(t *testing.T) {
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	_, edKey, _ := ed25519.GenerateKey(rand.Reader)
	for _, tt := range []struct {
		name string
		key  crypto.Signer
		alg  x509.SignatureAlgorithm
		hash crypto.Hash
	}{
		{"RSA", rsaKey, x509.SHA256WithRSA, crypto.SHA256},
		{"P-384", p384, x509.ECDSAWithSHA384, crypto.SHA384},
		{"Ed25519", edKey, x509.PureEd25519, crypto.SHA512},
	} {
		ca := newTestCA(t)
		caCert := ca.issue(t, tt.key.Public(), "Sub CA "+tt.name, 2)
		leaf := ca.issue(t, newECKey(t).Public(), "leaf", 3)
		der, err := FullPKIResponse(leaf, []*x509.Certificate{caCert, ca.cert}, 9, tt.key, caCert)
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		d := decodeResponse(t, der)
		if len(d.certs) != 3 {
			t.Errorf("%s: %d certificates, want 3", tt.name, len(d.certs))
		}
		if _, bodyList, _, _ := d.status(t); !slices.Equal(bodyList, []int64{9}) {
			t.Errorf("%s: bodyList %v, want [9]", tt.name, bodyList)
		}
		checkSigned(t, d, caCert, tt.alg, tt.hash)
	}
}

// A bare PKCS#10 (bodyPartID 0) is answered for body part 1.
func TestFullPKIResponseBodyPartZero(t *testing.T) {
	ca := newTestCA(t)
	leaf := ca.issue(t, newECKey(t).Public(), "leaf", 3)
	der, err := FullPKIResponse(leaf, nil, 0, ca.key, ca.cert)
	if err != nil {
		t.Fatal(err)
	}
	d := decodeResponse(t, der)
	if _, bodyList, _, _ := d.status(t); !slices.Equal(bodyList, []int64{1}) {
		t.Errorf("bodyList %v, want [1]", bodyList)
	}
	if len(d.certs) != 2 {
		t.Errorf("%d certificates, want leaf + signer", len(d.certs))
	}
}

func TestFullPKIResponseRefuses(t *testing.T) {
	ca := newTestCA(t)
	leaf := ca.issue(t, newECKey(t).Public(), "leaf", 3)
	if _, err := FullPKIResponse(leaf, nil, 1, newECKey(t), ca.cert); err == nil {
		t.Errorf("FullPKIResponse with a key not matching the signer certificate succeeded")
	}
	if _, err := FullPKIResponse(leaf, nil, 1, ca.key, nil); err == nil {
		t.Errorf("FullPKIResponse with a signer but no certificate succeeded")
	}
	if _, err := FullPKIResponse(nil, nil, 1, nil, nil); err == nil {
		t.Errorf("FullPKIResponse without a certificate succeeded")
	}
	if _, err := FullPKIResponse(leaf, nil, -1, nil, nil); err == nil {
		t.Errorf("FullPKIResponse with bodyPartID -1 succeeded")
	}
}

// The captured reply cepces accepted (004) is a certs-only SignedData; the unsigned FullPKIResponse rebuilt from
// its certificates is byte-for-byte the same, and the signed one keeps the certificate set.
func TestFullPKIResponseMatchesCaptured004(t *testing.T) {
	captured := capturedToken(t, "004_MockCA_CES_UsernamePassword_service_svc_CES.response.xml")
	c := decodeResponse(t, captured)
	if !c.eContentType.Equal(oidData) || len(c.eContent) != 0 || len(c.signers) != 0 || c.version != 1 || c.digestAlgs != 0 {
		t.Fatalf("captured 004: eContentType %v eContent %d bytes signers %d version %d; expected certs-only", c.eContentType, len(c.eContent), len(c.signers), c.version)
	}
	if len(c.certs) != 2 || c.certs[0].IsCA || !c.certs[1].IsCA {
		t.Fatalf("captured 004: %d certificates, want leaf then CA", len(c.certs))
	}
	ours, err := FullPKIResponse(c.certs[0], c.certs[1:], 0, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(ours, captured) {
		t.Errorf("unsigned FullPKIResponse differs from the captured 004 token")
	}

	ca := newTestCA(t)
	leaf := ca.issue(t, newECKey(t).Public(), "host1.example.test", 5)
	signed, err := FullPKIResponse(leaf, []*x509.Certificate{ca.cert}, 1, ca.key, ca.cert)
	if err != nil {
		t.Fatal(err)
	}
	s := decodeResponse(t, signed)
	if len(s.certs) != len(c.certs) || s.certs[0].IsCA != c.certs[0].IsCA || s.certs[1].IsCA != c.certs[1].IsCA {
		t.Errorf("signed response certificates differ in shape from the captured ones")
	}
	var oids []string
	for _, ctl := range s.controls {
		oids = append(oids, ctl.Type.String())
	}
	if !slices.Equal(oids, []string{"1.3.6.1.5.5.7.7.1"}) {
		t.Errorf("controls %v, want only id-cmc-statusInfo", oids)
	}
}

func TestFailureResponse(t *testing.T) {
	der, err := FailureResponse(3, FailBadMessageCheck, "signature does not verify")
	if err != nil {
		t.Fatal(err)
	}
	d := decodeResponse(t, der)
	if !d.eContentType.Equal(oidPKIResponse) || len(d.signers) != 0 || len(d.certs) != 0 {
		t.Errorf("eContentType %v signers %d certs %d", d.eContentType, len(d.signers), len(d.certs))
	}
	status, bodyList, text, failInfo := d.status(t)
	if status != 2 || !slices.Equal(bodyList, []int64{3}) || text != "signature does not verify" || failInfo != FailBadMessageCheck {
		t.Errorf("status %d bodyList %v text %q failInfo %d", status, bodyList, text, failInfo)
	}
	if _, err := FailureResponse(1, 99, "x"); err == nil {
		t.Errorf("FailureResponse(failInfo 99) succeeded")
	}
	der, err = FailureResponse(0, FailBadRequest, "bad \xff"+strings.Repeat("x", 5000))
	if err != nil {
		t.Fatalf("FailureResponse(invalid UTF-8, long text) = %v", err)
	}
	if _, bodyList, text, _ := decodeResponse(t, der).status(t); !slices.Equal(bodyList, []int64{1}) || !strings.HasPrefix(text, "bad \uFFFDxxx") || len(text) > 1024 {
		t.Errorf("bodyList %v text %q...", bodyList, text[:10])
	}
}

// opensslVerify checks the signed response with OpenSSL's CMS implementation, an independent reader.
func opensslVerify(t *testing.T, der []byte, ca *x509.Certificate) {
	t.Helper()
	path, err := exec.LookPath("openssl")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("openssl not found: %v", err)
		}
		t.Logf("openssl not found, skipping the independent check")
		return
	}
	dir := t.TempDir()
	in, caFile, out := filepath.Join(dir, "resp.der"), filepath.Join(dir, "ca.pem"), filepath.Join(dir, "content.der")
	os.WriteFile(in, der, 0o600)
	os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Raw}), 0o600)
	cmd := exec.Command(path, "cms", "-verify", "-inform", "DER", "-in", in, "-CAfile", caFile, "-purpose", "any", "-out", out, "-binary")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("openssl cms -verify: %v\n%s", err, b)
	}
}
