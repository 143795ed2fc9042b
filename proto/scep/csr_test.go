package scep

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"testing"
)

// NewCSR's requests carry the challenge as ParseCSR (the server) reads it, keep the template's
// names, and verify, for RSA and ECDSA keys and printable or other challenges.
func TestNewCSRCarriesTheChallenge(t *testing.T) {
	rk, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	ek, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	for _, tc := range []struct {
		name      string
		key       crypto.Signer
		challenge string
	}{{"RSA printable", rk, "s3cret-Challenge"}, {"ECDSA UTF-8", ek, "pässwort_1!"}, {"RSA none", rk, ""}} {
		t.Run(tc.name, func(t *testing.T) {
			tmpl := &x509.CertificateRequest{Subject: pkix.Name{CommonName: "device-1"}, DNSNames: []string{"device-1.example.test"}}
			der, err := NewCSR(tmpl, tc.key, tc.challenge)
			if err != nil {
				t.Fatal(err)
			}
			csr, challenge, err := ParseCSR(der)
			if err != nil {
				t.Fatalf("ParseCSR: %v", err)
			}
			if challenge != tc.challenge || csr.Subject.CommonName != "device-1" || len(csr.DNSNames) != 1 {
				t.Errorf("request = %q %v %v, want challenge %q, CN device-1 and the DNS name", challenge, csr.Subject, csr.DNSNames, tc.challenge)
			}
		})
	}
}
