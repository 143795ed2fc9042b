package cmc

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/base64"
	"math/big"
	"os"
	"regexp"
	"testing"
	"time"

	"github.com/enrollment-appliance/aeappliance/proto/cmc/cmctest"
)

var oidECDSAWithSHA256Sig = oidECDSAWithSHA256

func mustMarshal(t testing.TB, v any) []byte {
	t.Helper()
	return cmctest.MustMarshal(t, v)
}

func newECKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// rawAttr is a PKCS#10 attribute with raw values.
type rawAttr = cmctest.Attr

func nameValueAttr(t testing.TB, pairs ...string) rawAttr { return cmctest.NameValues(t, pairs...) }

func renewalAttr(cert *x509.Certificate) rawAttr {
	return rawAttr{Type: oidRenewalCertificate, Values: []asn1.RawValue{{FullBytes: cert.Raw}}}
}

// makeCSR hand-builds a PKCS#10 with arbitrary attributes, signed by key (ECDSA P-256, SHA-256).
func makeCSR(t testing.TB, key *ecdsa.PrivateKey, cn string, attrs ...rawAttr) []byte {
	t.Helper()
	return cmctest.CSR(t, key, pkix.Name{CommonName: cn}, attrs...)
}

// testCA is a throwaway CA issuing ECDSA certificates.
type testCA struct {
	key  *ecdsa.PrivateKey
	cert *x509.Certificate
}

func newTestCA(t testing.TB) *testCA {
	t.Helper()
	key := newECKey(t)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "Test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &testCA{key, cert}
}

func (ca *testCA) issue(t testing.TB, pub crypto.PublicKey, cn string, serial int64) *x509.Certificate {
	t.Helper()
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, pub, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return cert
}

// testSigner describes one SignerInfo of a test SignedData.
type testSigner struct {
	key         crypto.Signer
	cert        *x509.Certificate // sid = issuerAndSerial when set
	ski         []byte            // else sid = subjectKeyIdentifier
	contentType asn1.ObjectIdentifier
	digest      []byte // overrides the messageDigest value
	sha1        bool   // SHA-1 digest, as Windows signs CMC by default
}

// signedDataT builds a ContentInfo SignedData for tests, with SHA-256 and the given signers.
func signedDataT(t testing.TB, eContentType asn1.ObjectIdentifier, content []byte, certs []*x509.Certificate, signers ...testSigner) []byte {
	t.Helper()
	var certBytes, siBytes []byte
	for _, c := range certs {
		certBytes = append(certBytes, c.Raw...)
	}
	for _, s := range signers {
		ct := eContentType
		if s.contentType != nil {
			ct = s.contentType
		}
		hash, digestOID := crypto.SHA256, oidSHA256
		if s.sha1 {
			hash, digestOID = crypto.SHA1, oidSHA1
		}
		h := hash.New()
		h.Write(content)
		d := h.Sum(nil)
		if s.digest != nil {
			d = s.digest
		}
		attrs := signedAttributes(t, ct, d)
		h = hash.New()
		h.Write(mustMarshal(t, set(attrs)))
		sig, err := s.key.Sign(rand.Reader, h.Sum(nil), hash)
		if err != nil {
			t.Fatal(err)
		}
		var sid asn1.RawValue
		version := 3
		if s.cert != nil {
			version = 1
			sid = asn1.RawValue{FullBytes: mustMarshal(t, issuerAndSerial{asn1.RawValue{FullBytes: s.cert.RawIssuer}, s.cert.SerialNumber})}
		} else {
			sid = asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 0, Bytes: s.ski}
		}
		sigAlg := oidECDSAWithSHA256
		if s.sha1 {
			sigAlg = oidECDSAWithSHA1
		}
		if _, ok := s.key.Public().(*rsa.PublicKey); ok {
			sigAlg = oidRSAEncryption
		}
		siBytes = append(siBytes, mustMarshal(t, struct {
			Version            int
			SID                asn1.RawValue
			DigestAlgorithm    pkix.AlgorithmIdentifier
			SignedAttrs        asn1.RawValue
			SignatureAlgorithm pkix.AlgorithmIdentifier
			Signature          []byte
		}{version, sid, pkix.AlgorithmIdentifier{Algorithm: digestOID}, tagged(0, attrs), pkix.AlgorithmIdentifier{Algorithm: sigAlg}, sig})...)
	}
	var sd outSignedData
	sd.Version = 3
	sd.DigestAlgorithms = set(mustMarshal(t, pkix.AlgorithmIdentifier{Algorithm: oidSHA256}))
	sd.EncapContentInfo.EContentType = eContentType
	sd.EncapContentInfo.EContent = tagged(0, mustMarshal(t, content))
	if len(certBytes) > 0 {
		sd.Certificates = tagged(0, certBytes)
	}
	sd.SignerInfos = set(siBytes)
	return mustMarshal(t, contentInfo{oidSignedData, tagged(0, mustMarshal(t, sd))})
}

func skiOf(t testing.TB, pub crypto.PublicKey) []byte {
	spki, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	var s struct {
		Alg pkix.AlgorithmIdentifier
		Key asn1.BitString
	}
	if _, err := asn1.Unmarshal(spki, &s); err != nil {
		t.Fatal(err)
	}
	h := sha1.Sum(s.Key.Bytes)
	return h[:]
}

// control builds a TaggedAttribute.
func control(t testing.TB, id int64, typ asn1.ObjectIdentifier, values ...[]byte) asn1.RawValue {
	return asn1.RawValue{FullBytes: mustMarshal(t, taggedAttribute{id, typ, asn1.RawValue{FullBytes: mustMarshal(t, set(bytes.Join(values, nil)))}})}
}

// pkiDataT builds a PKIData with one PKCS#10 TaggedRequest and the given controls.
func pkiDataT(t testing.TB, bodyPartID int64, csr []byte, controls ...asn1.RawValue) []byte {
	tcr := tagged(0, append(mustMarshal(t, bodyPartID), csr...))
	return mustMarshal(t, struct{ C, R, S, O []asn1.RawValue }{controls, []asn1.RawValue{{FullBytes: mustMarshal(t, tcr)}}, []asn1.RawValue{}, []asn1.RawValue{}})
}

// capturedToken returns the decoded BinarySecurityToken of a captured exchange in testdata.
func capturedToken(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile("testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?s)BinarySecurityToken[^>]*?ValueType="[^"]*#(PKCS10|PKCS7)"[^>]*>([^<]+)</`).FindSubmatch(b)
	if m == nil {
		t.Fatalf("%s: no BinarySecurityToken", name)
	}
	der, err := base64.StdEncoding.DecodeString(string(bytes.Join(bytes.Fields(m[2]), nil)))
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return der
}
