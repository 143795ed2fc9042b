// Package cmctest builds PKCS#10 requests with arbitrary attributes for tests, as Windows
// clients send them (MS-WCCE 2.2.2.7: name-value pairs, 1.3.6.1.4.1.311.13.2.1, each a
// SEQUENCE of two BMPStrings), which crypto/x509 cannot write.
package cmctest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"testing"
	"unicode/utf16"
)

// Attr is a PKCS#10 attribute with raw values (RFC 2986 §4.1).
type Attr struct {
	Type   asn1.ObjectIdentifier
	Values []asn1.RawValue `asn1:"set"`
}

var oidNameValuePair = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 311, 13, 2, 1}

func bmp(s string) asn1.RawValue {
	u := utf16.Encode([]rune(s))
	b := make([]byte, 2*len(u))
	for i, c := range u {
		b[2*i], b[2*i+1] = byte(c>>8), byte(c)
	}
	return asn1.RawValue{Class: asn1.ClassUniversal, Tag: asn1.TagBMPString, Bytes: b}
}

// MustMarshal is asn1.Marshal that fails the test on an error.
func MustMarshal(t testing.TB, v any) []byte {
	t.Helper()
	b, err := asn1.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// NameValue is a name-value pair attribute (certreq -attrib "NAME:VALUE").
func NameValue(t testing.TB, name, value string) Attr { return NameValues(t, name, value) }

// NameValues is one name-value pair attribute with a value per pair of pairs (name, value, ...).
func NameValues(t testing.TB, pairs ...string) Attr {
	a := Attr{Type: oidNameValuePair}
	for i := 0; i+1 < len(pairs); i += 2 {
		a.Values = append(a.Values, asn1.RawValue{FullBytes: MustMarshal(t, struct{ N, V asn1.RawValue }{bmp(pairs[i]), bmp(pairs[i+1])})})
	}
	return a
}

// CSR is a PKCS#10 for subject with attrs, signed by key (RSA PKCS#1 v1.5 or ECDSA, SHA-256).
func CSR(t testing.TB, key crypto.Signer, subject pkix.Name, attrs ...Attr) []byte {
	t.Helper()
	spki, err := x509.MarshalPKIXPublicKey(key.Public())
	if err != nil {
		t.Fatal(err)
	}
	var attrBytes []byte
	for _, a := range attrs {
		attrBytes = append(attrBytes, MustMarshal(t, a)...)
	}
	tbs := MustMarshal(t, struct {
		Version int
		Subject asn1.RawValue
		SPKI    asn1.RawValue
		Attrs   asn1.RawValue
	}{0, asn1.RawValue{FullBytes: MustMarshal(t, subject.ToRDNSequence())}, asn1.RawValue{FullBytes: spki},
		asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 0, IsCompound: true, Bytes: attrBytes}})
	var alg asn1.ObjectIdentifier
	switch key.(type) {
	case *rsa.PrivateKey:
		alg = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 11} // sha256WithRSAEncryption
	case *ecdsa.PrivateKey:
		alg = asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 2} // ecdsa-with-SHA256
	default:
		t.Fatalf("cmctest: a %T key", key)
	}
	h := crypto.SHA256.New()
	h.Write(tbs)
	sig, err := key.Sign(rand.Reader, h.Sum(nil), crypto.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	der := MustMarshal(t, struct {
		TBS asn1.RawValue
		Alg pkix.AlgorithmIdentifier
		Sig asn1.BitString
	}{asn1.RawValue{FullBytes: tbs}, pkix.AlgorithmIdentifier{Algorithm: alg}, asn1.BitString{Bytes: sig, BitLength: 8 * len(sig)}})
	if _, err := x509.ParseCertificateRequest(der); err != nil {
		t.Fatalf("cmctest: the request does not parse: %v", err)
	}
	return der
}
