package mdm

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"strings"
	"testing"
)

// TestParseRecipient: a device key is one PEM CERTIFICATE or PUBLIC KEY holding RSA of at least
// 2048 bits; anything else is refused with the reason.
func TestParseRecipient(t *testing.T) {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	small, _ := rsa.GenerateKey(rand.Reader, 1024)
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	pub := func(k any) string {
		der, err := x509.MarshalPKIXPublicKey(k)
		if err != nil {
			t.Fatal(err)
		}
		return string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
	}
	if got, cert, err := ParseRecipient([]byte(pub(&k.PublicKey))); err != nil || !got.Equal(&k.PublicKey) || cert != nil {
		t.Errorf("an RSA public key: %v", err)
	}
	for _, tc := range []struct{ in, want string }{
		{pub(&small.PublicKey), "at least 2048"},
		{pub(&ec.PublicKey), "not RSA"},
		{pub(&k.PublicKey) + pub(&k.PublicKey), "exactly one PEM block"},
		{string(pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k)})), "not a recipient"},
		{"", "exactly one PEM block"},
	} {
		if _, _, err := ParseRecipient([]byte(tc.in)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ParseRecipient(%.40q) = %v, want an error saying %q", tc.in, err, tc.want)
		}
	}
}

// FuzzParseRecipient: client bytes never panic the parser, and what it accepts is an RSA key of
// at least 2048 bits.
func FuzzParseRecipient(f *testing.F) {
	k, _ := rsa.GenerateKey(rand.Reader, 2048)
	der, _ := x509.MarshalPKIXPublicKey(&k.PublicKey)
	f.Add(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
	f.Add([]byte("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		pub, _, err := ParseRecipient(b)
		if err == nil && (pub == nil || pub.N.BitLen() < 2048) {
			t.Fatalf("accepted %v", pub)
		}
	})
}
