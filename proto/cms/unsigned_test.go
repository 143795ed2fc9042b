package cms

import (
	"bytes"
	"crypto/sha1"
	"encoding/asn1"
	"encoding/pem"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// TestKeyIDSignerAndUnsignedAttributes: a SignedData signed by a bare key (no certificate) names
// its signer by subjectKeyIdentifier, carries its unsigned attributes in the SignerInfo, and
// verifies with the key; the unsigned attributes are read back as sent (and are outside the
// signature: the message still verifies, which is why a signed attribute must vouch for them).
func TestKeyIDSignerAndUnsignedAttributes(t *testing.T) {
	key := rsaKey(t)
	ski := sha1.Sum([]byte("a key identifier"))
	oidArchived := asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 311, 21, 13}
	value, _ := asn1.Marshal([]byte("an encrypted key"))
	der, err := NewSignedData(SignOptions{ContentType: asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 12, 2}, Content: []byte("pkidata"),
		Signer: key, SignerKeyID: ski[:], UnsignedAttributes: []Attribute{{Type: oidArchived, Values: [][]byte{value}}}})
	if err != nil {
		t.Fatal(err)
	}
	sd, err := ParseSignedData(der)
	if err != nil {
		t.Fatal(err)
	}
	si := sd.SignerInfos[0]
	if si.Version != 3 || si.SID.Issuer != nil || !bytes.Equal(si.SID.SubjectKeyID, ski[:]) {
		t.Errorf("sid = %+v version %d, want the subject key identifier, version 3", si.SID, si.Version)
	}
	if err := si.Verify(&key.PublicKey, sd.ContentType, sd.Content); err != nil {
		t.Errorf("Verify: %v", err)
	}
	a, ok := FindAttribute(si.UnsignedAttrs, oidArchived)
	if !ok || len(a.Values) != 1 || !bytes.Equal(a.Values[0], value) {
		t.Errorf("unsigned attributes = %+v, want the archived-key attribute as sent", si.UnsignedAttrs)
	}
	if _, ok := FindAttribute(si.SignedAttrs, oidArchived); ok {
		t.Error("an unsigned attribute was signed")
	}
	if h, err := si.Hash(); err != nil || h.String() != "SHA-256" {
		t.Errorf("Hash() = %v, %v", h, err)
	}
	if _, err := NewSignedData(SignOptions{Content: []byte("x"), Signer: key}); err == nil {
		t.Error("a signer with neither certificate nor key identifier was accepted")
	}
	// Without unsigned attributes the field is absent, not empty.
	der, err = NewSignedData(SignOptions{Content: []byte("x"), Signer: key, SignerKeyID: ski[:]})
	if err != nil {
		t.Fatal(err)
	}
	if sd, err := ParseSignedData(der); err != nil || sd.SignerInfos[0].UnsignedAttrs != nil {
		t.Errorf("no unsigned attributes: %v %+v", err, sd)
	}
}

// TestAllow3DES: Allow3DES opens a DES-EDE3-CBC envelope (as OpenSSL writes it, and as Windows
// archives keys by default) but not single DES; without it 3DES does not open.
func TestAllow3DES(t *testing.T) {
	if _, err := exec.LookPath("openssl"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("openssl is required on CI")
		}
		t.Skip("no openssl")
	}
	key := rsaKey(t)
	cert := selfSigned(t, key, "exchange")
	dir := t.TempDir()
	certFile, in := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "in")
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw}), 0o600)
	os.WriteFile(in, []byte("a private key blob"), 0o600)
	envelope := func(cipher string) *EnvelopedData {
		out := filepath.Join(dir, cipher+".der")
		if o, err := exec.Command("openssl", "cms", "-encrypt", "-binary", "-"+cipher, "-in", in, "-outform", "DER", "-out", out, certFile).CombinedOutput(); err != nil {
			t.Fatalf("openssl cms -%s: %v\n%s", cipher, err, o)
		}
		b, _ := os.ReadFile(out)
		ed, err := ParseEnvelopedData(b)
		if err != nil {
			t.Fatal(err)
		}
		return ed
	}
	ed := envelope("des3")
	if _, err := ed.Decrypt(cert, key, DecryptOptions{}); kindOf(err) != BadAlg {
		t.Errorf("3DES without Allow3DES: %v, want BadAlg", err)
	}
	if got, err := ed.Decrypt(cert, key, DecryptOptions{Allow3DES: true}); err != nil || string(got) != "a private key blob" {
		t.Errorf("3DES with Allow3DES = %q, %v", got, err)
	}
	ed = envelope("des3")
	ed.ContentEncryption = oidDESCBC // what single DES would say: refused before any key is used
	if _, err := ed.Decrypt(cert, key, DecryptOptions{Allow3DES: true}); kindOf(err) != BadAlg {
		t.Errorf("single DES with Allow3DES: %v, want BadAlg", err)
	}
}
