package cmc

import (
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"testing"
)

func TestSignRenewalRoundTrip(t *testing.T) {
	ca := newTestCA(t)
	oldKey, newKey := newECKey(t), newECKey(t)
	old := ca.issue(t, oldKey.Public(), "host1", 7)
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "host1"}}, newKey)
	if err != nil {
		t.Fatal(err)
	}
	der, err := SignRenewal(csr, old, oldKey)
	if err != nil {
		t.Fatal(err)
	}
	r, err := ParseRequest(der)
	if err != nil {
		t.Fatalf("ParseRequest(SignRenewal(...)) = %v", err)
	}
	if r.Kind != Renewal || r.OldCert == nil || !r.OldCert.Equal(old) {
		t.Errorf("kind %v, old %v; want a renewal of the old certificate", r.Kind, r.OldCert)
	}
	// Signed with a key that is not the old certificate's: refused by SignRenewal itself.
	if _, err := SignRenewal(csr, old, newKey); err == nil {
		t.Error("SignRenewal with the wrong key succeeded")
	}
	if _, err := SignRenewal([]byte("junk"), old, oldKey); err == nil {
		t.Error("SignRenewal of a non-PKCS#10 succeeded")
	}
}
