package cms

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func selfSigned(t testing.TB, key crypto.Signer, cn string) *x509.Certificate {
	t.Helper()
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), SubjectKeyId: []byte{1, 2, 3, cn[0]}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

var (
	rsaOnce *rsa.PrivateKey
)

func rsaKey(t testing.TB) *rsa.PrivateKey {
	if rsaOnce == nil {
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			t.Fatal(err)
		}
		rsaOnce = k
	}
	return rsaOnce
}

func kindOf(err error) Kind {
	var e *Error
	if errors.As(err, &e) {
		return e.Kind
	}
	return -1
}

// TestSignVerify signs with each key type and reads the message back: contentType, messageDigest and the
// signature verify with the signer's key and no other; a changed content or attribute is refused.
func TestSignVerify(t *testing.T) {
	p256, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	_, ed, _ := ed25519.GenerateKey(rand.Reader)
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	extra := Attribute{Type: asn1.ObjectIdentifier{1, 2, 3}, Values: [][]byte{{0x04, 0x01, 0x07}}}
	for name, key := range map[string]crypto.Signer{"RSA": rsaKey(t), "P-256": p256, "P-384": p384, "Ed25519": ed} {
		cert := selfSigned(t, key, name)
		typ := asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 12, 2}
		der, err := NewSignedData(SignOptions{ContentType: typ, Content: []byte("content"), Certificates: []*x509.Certificate{cert},
			Signer: key, SignerCert: cert, Attributes: []Attribute{extra}})
		if err != nil {
			t.Fatalf("%s: NewSignedData: %v", name, err)
		}
		sd, err := ParseSignedData(der)
		if err != nil {
			t.Fatalf("%s: ParseSignedData: %v", name, err)
		}
		if sd.Version != 3 || !sd.ContentType.Equal(typ) || string(sd.Content) != "content" || len(sd.SignerInfos) != 1 || !sd.Certificates[0].Equal(cert) {
			t.Fatalf("%s: parsed %+v", name, sd)
		}
		si := &sd.SignerInfos[0]
		if !si.SID.Matches(cert) {
			t.Errorf("%s: sid does not name the signer", name)
		}
		if a, ok := FindAttribute(si.SignedAttrs, extra.Type); !ok || !bytes.Equal(a.Values[0], extra.Values[0]) {
			t.Errorf("%s: extra signed attribute lost", name)
		}
		if err := si.Verify(key.Public(), typ, sd.Content); err != nil {
			t.Errorf("%s: Verify = %v", name, err)
		}
		if err := si.Verify(other.Public(), typ, sd.Content); kindOf(err) != BadMessageCheck {
			t.Errorf("%s: Verify(other key) = %v, want BadMessageCheck", name, err)
		}
		if err := si.Verify(key.Public(), typ, []byte("changed")); kindOf(err) != BadMessageCheck {
			t.Errorf("%s: Verify(changed content) = %v, want BadMessageCheck", name, err)
		}
		if err := si.Verify(key.Public(), OIDData, sd.Content); kindOf(err) != BadMessageCheck {
			t.Errorf("%s: Verify(other content type) = %v, want BadMessageCheck", name, err)
		}
	}
	if _, err := NewSignedData(SignOptions{Content: []byte("x"), Signer: p256, SignerCert: selfSigned(t, other, "o")}); err == nil {
		t.Error("NewSignedData signed with a key that is not the certificate's")
	}
}

func TestCertsOnly(t *testing.T) {
	cert := selfSigned(t, rsaKey(t), "c")
	der, err := NewSignedData(SignOptions{OmitContent: true, Certificates: []*x509.Certificate{cert, cert}})
	if err != nil {
		t.Fatal(err)
	}
	sd, err := ParseSignedData(der)
	if err != nil || sd.Content != nil || len(sd.SignerInfos) != 0 || len(sd.Certificates) != 2 || sd.Version != 1 {
		t.Fatalf("ParseSignedData(certs-only) = %+v, %v", sd, err)
	}
}

func TestEnvelope(t *testing.T) {
	key := rsaKey(t)
	cert := selfSigned(t, key, "r")
	otherKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	for _, c := range []ContentCipher{AES128CBC, AES256CBC} {
		der, err := Encrypt([]byte("secret content"), cert, c)
		if err != nil {
			t.Fatal(err)
		}
		env, err := ParseEnvelopedData(der)
		if err != nil {
			t.Fatal(err)
		}
		if !env.ContentEncryption.Equal(c.oid) {
			t.Errorf("content encryption %v, want %v", env.ContentEncryption, c.oid)
		}
		if got, err := env.Decrypt(cert, key, DecryptOptions{}); err != nil || string(got) != "secret content" {
			t.Errorf("Decrypt = %q, %v", got, err)
		}
		// The wrong key never yields the content. Usually it is refused; but implicit rejection
		// decrypts with a random key instead of saying the key did not fit, and about one time in
		// 256 such a key leaves a valid CBC padding: then the "content" is noise, and nothing
		// tells it from a real one (RFC 3218 §2.3.2; the SCEP and WSTEP layers check what it holds).
		got, err := env.Decrypt(cert, otherKey, DecryptOptions{})
		switch {
		case err == nil && string(got) == "secret content":
			t.Errorf("Decrypt(other key) gave the content")
		case err != nil && kindOf(err) != BadMessageCheck && kindOf(err) != Malformed:
			t.Errorf("Decrypt(other key) = %v, want a refusal", err)
		}
		if _, err := env.Decrypt(selfSigned(t, otherKey, "o"), otherKey, DecryptOptions{}); kindOf(err) != BadMessageCheck {
			t.Errorf("Decrypt(not addressed) = %v, want BadMessageCheck", err)
		}
	}
	if _, err := Encrypt([]byte("x"), cert, desCBC); err == nil {
		t.Error("Encrypt wrote DES")
	}
}

// TestCapturedDES opens scepclient's captured envelope (single DES, a constructed encryptedContent) with the
// RA encryption key of the SCEP testdata: refused as BadAlg unless AllowDES.
func TestCapturedDES(t *testing.T) {
	dir := filepath.Join("..", "scep", "testdata")
	sd, err := ParseSignedData(readFile(t, filepath.Join(dir, "captured", "scepclient-01.der")))
	if err != nil {
		t.Fatal(err)
	}
	env, err := ParseEnvelopedData(sd.Content)
	if err != nil {
		t.Fatal(err)
	}
	raBlock, _ := pem.Decode(readFile(t, filepath.Join(dir, "pki", "ra-encrypt.key")))
	raCertBlock, _ := pem.Decode(readFile(t, filepath.Join(dir, "pki", "ra-encrypt.pem")))
	if raBlock == nil || raCertBlock == nil {
		t.Fatal("no PEM in testdata/pki")
	}
	ra, err := x509.ParsePKCS1PrivateKey(raBlock.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	raCert, err := x509.ParseCertificate(raCertBlock.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	// scepclient encrypted to every certificate of GetCACert: the CA's and the RA's two.
	if len(env.Recipients) != 3 {
		t.Errorf("scepclient's envelope has %d recipients, want 3", len(env.Recipients))
	}
	if _, err := env.Decrypt(raCert, ra, DecryptOptions{}); kindOf(err) != BadAlg {
		t.Errorf("Decrypt(DES) = %v, want BadAlg", err)
	}
	csr, err := env.Decrypt(raCert, ra, DecryptOptions{AllowDES: true})
	if err != nil {
		t.Fatalf("Decrypt(DES, AllowDES) = %v", err)
	}
	if _, err := x509.ParseCertificateRequest(csr); err != nil {
		t.Errorf("the envelope does not hold a PKCS#10: %v", err)
	}
}

func readFile(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestRefusesBER: indefinite and non-minimal lengths and trailing data are refused as Malformed.
func TestRefusesBER(t *testing.T) {
	good, err := NewSignedData(SignOptions{Content: []byte("x")})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ParseSignedData(good); err != nil {
		t.Fatalf("ParseSignedData(unsigned) = %v", err)
	}
	for name, der := range map[string][]byte{
		"indefinite length": []byte("\x30\x80\x06\x09\x2a\x86\x48\x86\xf7\x0d\x01\x07\x02\x00\x00"),
		"non-minimal":       []byte("\x30\x81\x03\x02\x01\x00"),
		"trailing":          append(bytes.Clone(good), 0),
		"empty":             nil,
	} {
		if _, err := ParseSignedData(der); kindOf(err) != Malformed {
			t.Errorf("ParseSignedData(%s) = %v, want Malformed", name, err)
		}
		if _, err := ParseEnvelopedData(der); kindOf(err) != Malformed {
			t.Errorf("ParseEnvelopedData(%s) = %v, want Malformed", name, err)
		}
	}
}

// With a rejection key, an envelope whose key does not decrypt meets the same fate every time it is
// sent (the same garbage, hence the same error or the same content), so a sender cannot tell a bad
// PKCS#1 padding from a good one by sending it again; different envelopes get different fallback
// keys. (With a random fallback key, about one try in 256 passes the content padding check, so 2,000
// tries differ.)
func TestImplicitRejectionIsDeterministic(t *testing.T) {
	key := rsaKey(t)
	cert := selfSigned(t, key, "r")
	wrongKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	der, err := Encrypt(bytes.Repeat([]byte("content "), 8), cert, AES256CBC)
	if err != nil {
		t.Fatal(err)
	}
	env, err := ParseEnvelopedData(der)
	if err != nil {
		t.Fatal(err)
	}
	opts := DecryptOptions{RejectionKey: bytes.Repeat([]byte{7}, 32)}
	outcome := func() string {
		got, err := env.Decrypt(cert, wrongKey, opts)
		if err != nil {
			if kindOf(err) != BadMessageCheck {
				t.Fatalf("Decrypt with the wrong key = %v, want BadMessageCheck or garbage", err)
			}
			return "error: " + err.Error()
		}
		return fmt.Sprintf("content %x", got)
	}
	first := outcome()
	for i := range 2000 {
		if got := outcome(); got != first {
			t.Fatalf("try %d of the same envelope: %s; first: %s", i+2, got, first)
		}
	}
	if a, b := rejectionKey(opts.RejectionKey, AES256CBC, []byte{1}), rejectionKey(opts.RejectionKey, AES256CBC, []byte{2}); bytes.Equal(a, b) {
		t.Error("two encrypted keys got the same fallback key")
	}
}
