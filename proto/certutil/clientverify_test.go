package certutil

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"math/big"
	"testing"
	"time"
)

// TestClientCertVerifier: a client certificate must chain to the roots, be valid now and allow
// client authentication; a Windows-style logon certificate (empty subject, critical
// subjectAltName holding only a UPN otherName) passes; no certificate passes (another credential
// is then needed).
func TestClientCertVerifier(t *testing.T) {
	key := func() *ecdsa.PrivateKey {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	caKey, otherKey := key(), key()
	ca := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "CA"}, IsCA: true, BasicConstraintsValid: true,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), KeyUsage: x509.KeyUsageCertSign}
	caDER, _ := x509.CreateCertificate(rand.Reader, ca, ca, caKey.Public(), caKey)
	ca, _ = x509.ParseCertificate(caDER)
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	// SAN with one otherName: [0] { UPN OID, [0] EXPLICIT UTF8String }.
	upn, _ := asn1.Marshal(asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 0, IsCompound: true, Bytes: func() []byte {
		oid, _ := asn1.Marshal(asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 311, 20, 2, 3})
		v, _ := asn1.Marshal(asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 0, IsCompound: true,
			Bytes: func() []byte { b, _ := asn1.MarshalWithParams("alice@corp.example.test", "utf8"); return b }()})
		return append(oid, v...)
	}()})
	san, _ := asn1.Marshal(asn1.RawValue{Class: asn1.ClassUniversal, Tag: asn1.TagSequence, IsCompound: true, Bytes: upn})
	other := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "CA"}, IsCA: true, BasicConstraintsValid: true,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), KeyUsage: x509.KeyUsageCertSign}
	otherDER, _ := x509.CreateCertificate(rand.Reader, other, other, otherKey.Public(), otherKey)
	other, _ = x509.ParseCertificate(otherDER)
	parents := map[*ecdsa.PrivateKey]*x509.Certificate{caKey: ca, otherKey: other}
	leaf := func(signer *ecdsa.PrivateKey, eku []x509.ExtKeyUsage, notAfter time.Time) [][]byte {
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), NotBefore: time.Now().Add(-2 * time.Hour), NotAfter: notAfter,
			ExtKeyUsage: eku, ExtraExtensions: []pkix.Extension{{Id: oidSubjectAltName, Critical: true, Value: san}}}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, parents[signer], key().Public(), signer)
		if err != nil {
			t.Fatal(err)
		}
		return [][]byte{der}
	}
	verify := ClientCertVerifier(roots)
	soon := time.Now().Add(time.Hour)
	if err := verify(leaf(caKey, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, soon), nil); err != nil {
		t.Errorf("a logon certificate with a critical UPN-only subjectAltName: %v", err)
	}
	if err := verify(nil, nil); err != nil {
		t.Errorf("no certificate: %v", err)
	}
	for name, raw := range map[string][][]byte{
		"another CA's":          leaf(otherKey, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, soon),
		"expired":               leaf(caKey, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, time.Now().Add(-time.Minute)),
		"server authentication": leaf(caKey, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, soon),
		"not a certificate":     {[]byte("garbage")},
	} {
		if err := verify(raw, nil); err == nil {
			t.Errorf("%s certificate accepted", name)
		}
	}
}
