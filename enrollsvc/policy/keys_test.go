package policy

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"math/big"
	"testing"
)

// rocaKey is the first vulnerable key of github.com/titanous/rocacheck's tests (an Infineon
// RSALib key, CVE-2017-15361).
const rocaKey = `-----BEGIN PUBLIC KEY-----
MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAlze9c7qGdjDLVR/ntk+4
ZkfMcYsAnmfTFHfe3Xv7jRQqPCXCULtr0y0jG3aRJmEenoXO9uDveqr43gFB9yvA
dLEhu0aJqpB7lNZ+yXsvfVp/96dkSN8oWYL/dd9Z7GQOvVniHUY3Xsd7zdw2eYOy
HSXhhA2Ttwnj3c1jEYfC0y9q1cU99aL0ogGDqolcOvlkJu+mGb+6+WyboFa1gwRu
kYxBHZWKiHCt/eihvXsPTzTlXmTXWdGJtA1xZDnCBWuZ90b5R0agXVIESTl0cCyH
aQM/tLZmktJIU+Eu7ALBXemPg9kh3SCnYd3/YvDGCtYSXOWthHwlP5CImRBcQaNn
cQIDAQAB
-----END PUBLIC KEY-----`

func parsePEMKey(t testing.TB, s string) crypto.PublicKey {
	t.Helper()
	b, _ := pem.Decode([]byte(s))
	k, err := x509.ParsePKIXPublicKey(b.Bytes)
	if err != nil {
		t.Fatalf("parsing key: %v", err)
	}
	return k
}

func TestDecideKeys(t *testing.T) {
	testKeys(t)
	small, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	p224, _ := ecdsa.GenerateKey(elliptic.P224(), rand.Reader)
	edPub, _, _ := ed25519.GenerateKey(rand.Reader)
	timesPrime := new(big.Int).Mul(rsaKey.N, big.NewInt(7919))
	// A point that is not on P-256 (hand-built: ParseRequest would already refuse it).
	offCurve := &ecdsa.PublicKey{Curve: elliptic.P256(), X: big.NewInt(1), Y: big.NewInt(1)}

	ecTemplate := func(alg string, min string) func(attrs) {
		return func(m attrs) {
			set(m, "mspki-template-schema-version", "4")
			set(m, "mspki-minimal-key-size", min)
			if alg != "" {
				set(m, "mspki-ra-application-policies", "msPKI-Asymmetric-Algorithm`PZPWSTR`"+alg+"`msPKI-Hash-Algorithm`PZPWSTR`SHA256`")
			}
		}
	}
	key := func(k crypto.PublicKey) func(*Input) {
		return func(in *Input) { in.Request = &Request{PublicKey: k} }
	}
	cases := []decideCase{
		{name: "good RSA", input: key(rsaKey.Public()), want: Issue, wantReason: "key: RSA 2048"},
		{name: "exponent 3", input: key(&rsa.PublicKey{N: rsaKey.N, E: 3}), want: Refuse, wantReason: "exponent 3 is not 65537"},
		{name: "even exponent", input: key(&rsa.PublicKey{N: rsaKey.N, E: 65538}), want: Refuse, wantReason: "exponent 65538 is not 65537"},
		{name: "small prime factor", input: key(&rsa.PublicKey{N: timesPrime, E: 65537}), want: Refuse, wantReason: "divisible by 7919"},
		{name: "ROCA", input: key(parsePEMKey(t, rocaKey)), want: Refuse, wantReason: "ROCA"},
		{name: "1024-bit RSA", tmpl: func(m attrs) { set(m, "mspki-minimal-key-size", "1024") }, input: key(small.Public()), want: Refuse, wantReason: "below this CA's minimum of 2048"},
		{name: "below template minimum", tmpl: func(m attrs) { set(m, "mspki-minimal-key-size", "3072") }, input: key(rsaKey.Public()), want: Refuse, wantReason: "template's minimum of 3072"},
		{name: "the CA's own key", tmpl: ecTemplate("", "256"), input: key(caKey.Public()), want: Refuse, wantReason: "the CA's own key"},
		{name: "EC point off the curve", tmpl: ecTemplate("", "256"), input: key(offCurve), want: Refuse, wantReason: "not a valid point on P-256"},
		{name: "P-224", tmpl: ecTemplate("", "0"), input: key(p224.Public()), want: Refuse, wantReason: "P-224 is not supported"},
		{name: "ed25519", input: key(edPub), want: Refuse, wantReason: "not supported"},
		{name: "no key", input: key(nil), want: Refuse, wantReason: "no public key"},
		{name: "ECDSA under an RSA-sized minimum", input: key(ecKey.Public()), want: Refuse, wantReason: "below the template's minimum of 2048"},
		{name: "ECDSA P-256", tmpl: ecTemplate("ECDSA_P256", "256"), input: key(ecKey.Public()), want: Issue, wantReason: "RFC 8813",
			check: func(t *testing.T, d Decision) {
				if d.Order.KeyUsage != x509.KeyUsageDigitalSignature {
					t.Errorf("Decide(ECDSA).Order.KeyUsage = %v, want digitalSignature only", keyUsageString(d.Order.KeyUsage))
				}
			}},
		{name: "P-256 for a P-384 template", tmpl: ecTemplate("ECDSA_P384", "384"), input: key(ecKey.Public()), want: Refuse, wantReason: "requires a ECDSA_P384 key"},
		{name: "P-384 for a P-384 template", tmpl: ecTemplate("ECDSA_P384", "384"), input: key(p384.Public()), want: Issue},
		{name: "RSA for an ECDSA template", tmpl: ecTemplate("ECDSA_P256", "256"), input: key(rsaKey.Public()), want: Refuse, wantReason: "requires a ECDSA_P256 key"},
		{name: "ECDSA for an RSA template", tmpl: ecTemplate("RSA", "256"), input: key(ecKey.Public()), want: Refuse, wantReason: "requires a RSA key"},
		{name: "P-256 under a 384 minimum", tmpl: ecTemplate("", "384"), input: key(ecKey.Public()), want: Refuse, wantReason: "below the template's minimum of 384"},
	}
	for _, tc := range cases {
		t.Run(tc.name, tc.run)
	}
}
