package cms

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// TestEncryptOAEPOpenSSL: an RSAES-OAEP EnvelopedData (to a certificate, and to a bare key named
// by its subject key identifier) decrypts with `openssl cms -decrypt` and the recipient's key,
// and not with another key.
func TestEncryptOAEPOpenSSL(t *testing.T) {
	openssl, err := exec.LookPath("openssl")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("openssl is required on CI")
		}
		t.Skip("no openssl")
	}
	key := rsaKey(t)
	other, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	cert := selfSigned(t, key, "device")
	dir := t.TempDir()
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	keyPEM := func(k *rsa.PrivateKey) []byte {
		der, err := x509.MarshalPKCS8PrivateKey(k)
		if err != nil {
			t.Fatal(err)
		}
		return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	}
	keyFile, otherFile := write("key.pem", keyPEM(key)), write("other.pem", keyPEM(other))
	content := bytes.Repeat([]byte("a PKCS#12 for the device "), 40)
	for _, tc := range []struct {
		name string
		cert *x509.Certificate
	}{{"issuerAndSerialNumber", cert}, {"subjectKeyIdentifier", nil}} {
		t.Run(tc.name, func(t *testing.T) {
			der, err := EncryptOAEP(content, &key.PublicKey, tc.cert, AES256CBC)
			if err != nil {
				t.Fatal(err)
			}
			ed, err := ParseEnvelopedData(der)
			if err != nil {
				t.Fatal(err)
			}
			if len(ed.Recipients) != 1 || !ed.Recipients[0].KeyEncryptionAlgorithm.Equal(oidRSAESOAEP) || !ed.ContentEncryption.Equal(oidAES256CBC) {
				t.Fatalf("recipients %+v, content encryption %v: want one RSAES-OAEP recipient and AES-256-CBC", ed.Recipients, ed.ContentEncryption)
			}
			in := write("env-"+tc.name+".der", der)
			out, err := exec.Command(openssl, "cms", "-decrypt", "-inform", "DER", "-in", in, "-inkey", keyFile).Output()
			if err != nil {
				t.Fatalf("openssl cms -decrypt: %v", err)
			}
			if !bytes.Equal(out, content) {
				t.Fatalf("openssl decrypted %d bytes that are not the content", len(out))
			}
			if out, err := exec.Command(openssl, "cms", "-decrypt", "-inform", "DER", "-in", in, "-inkey", otherFile).Output(); err == nil && bytes.Equal(out, content) {
				t.Fatal("another key decrypted the envelope")
			}
		})
	}
	if _, err := EncryptOAEP(content, &other.PublicKey, cert, AES256CBC); err == nil {
		t.Error("EncryptOAEP accepted a certificate that does not hold the key")
	}
}

// TestEncryptOAEPToOpenSSL: an envelope to several certificates opens with each one's key alone.
func TestEncryptOAEPToOpenSSL(t *testing.T) {
	if _, err := exec.LookPath("openssl"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("openssl is required on CI")
		}
		t.Skip("no openssl")
	}
	dir := t.TempDir()
	content := []byte("an archived private key")
	var certs []*x509.Certificate
	var keyFiles []string
	for _, name := range []string{"kra one", "kra two"} {
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			t.Fatal(err)
		}
		certs = append(certs, selfSigned(t, k, name))
		der, _ := x509.MarshalPKCS8PrivateKey(k)
		p := filepath.Join(dir, name+".key")
		os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600)
		keyFiles = append(keyFiles, p)
	}
	der, err := EncryptOAEPTo(content, certs, AES256CBC)
	if err != nil {
		t.Fatal(err)
	}
	if ed, err := ParseEnvelopedData(der); err != nil || len(ed.Recipients) != 2 {
		t.Fatalf("ParseEnvelopedData: %v, %v; want two recipients", ed, err)
	}
	in := filepath.Join(dir, "env.der")
	os.WriteFile(in, der, 0o600)
	for _, kf := range keyFiles {
		out, err := exec.Command("openssl", "cms", "-decrypt", "-inform", "DER", "-in", in, "-inkey", kf).Output()
		if err != nil || !bytes.Equal(out, content) {
			t.Errorf("openssl cms -decrypt with %s: %v", kf, err)
		}
	}
}
