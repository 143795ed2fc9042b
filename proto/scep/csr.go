package scep

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"fmt"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// NewCSR writes the PKCS#10 a SCEP client sends (RFC 8894 §3.3.1): template's subject, names and
// extensions, for key's public key, with a challengePassword attribute (PKCS#9, a PrintableString
// when the challenge is one, else a UTF8String) when challenge is not "", signed by key (RSA with
// SHA-256, or ECDSA with SHA-256). Go's x509 package writes no challengePassword: the request it
// makes is taken apart and its attributes extended.
func NewCSR(template *x509.CertificateRequest, key crypto.Signer, challenge string) ([]byte, error) {
	der, err := x509.CreateCertificateRequest(rand.Reader, template, key)
	if err != nil || challenge == "" {
		return der, err
	}
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		return nil, err
	}
	tbs := cryptobyte.String(csr.RawTBSCertificateRequest)
	var version, subject, spki, attrs cryptobyte.String
	if !tbs.ReadASN1(&tbs, cbasn1.SEQUENCE) || !tbs.ReadASN1Element(&version, cbasn1.INTEGER) ||
		!tbs.ReadASN1Element(&subject, cbasn1.SEQUENCE) || !tbs.ReadASN1Element(&spki, cbasn1.SEQUENCE) ||
		!tbs.ReadASN1(&attrs, cbasn1.Tag(0).ContextSpecific().Constructed()) || !tbs.Empty() {
		return nil, errors.New("scep: the PKCS#10 Go wrote is not one")
	}
	tag := cbasn1.Tag(cbasn1.PrintableString)
	if !printable(challenge) {
		tag = cbasn1.UTF8String
	}
	var b cryptobyte.Builder
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddBytes(version)
		b.AddBytes(subject)
		b.AddBytes(spki)
		b.AddASN1(cbasn1.Tag(0).ContextSpecific().Constructed(), func(b *cryptobyte.Builder) {
			b.AddBytes(attrs)
			b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
				b.AddASN1ObjectIdentifier(oidChallengePassword)
				b.AddASN1(cbasn1.SET, func(b *cryptobyte.Builder) {
					b.AddASN1(tag, func(b *cryptobyte.Builder) { b.AddBytes([]byte(challenge)) })
				})
			})
		})
	})
	info, err := b.Bytes()
	if err != nil {
		return nil, err
	}
	var alg asn1.ObjectIdentifier
	switch key.Public().(type) {
	case *rsa.PublicKey:
		alg = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 11} // sha256WithRSAEncryption (RFC 4055)
	case *ecdsa.PublicKey:
		alg = asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 2} // ecdsa-with-SHA256 (RFC 5758)
	default:
		return nil, fmt.Errorf("scep: a %T key cannot sign a request here", key.Public())
	}
	h := crypto.SHA256.New()
	h.Write(info)
	sig, err := key.Sign(rand.Reader, h.Sum(nil), crypto.SHA256)
	if err != nil {
		return nil, err
	}
	b = cryptobyte.Builder{}
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddBytes(info)
		b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
			b.AddASN1ObjectIdentifier(alg)
			if _, ok := key.Public().(*rsa.PublicKey); ok {
				b.AddASN1NULL()
			}
		})
		b.AddASN1BitString(sig)
	})
	return b.Bytes()
}

// printable reports whether s fits a PrintableString (X.680 §41.4).
func printable(s string) bool {
	for _, c := range s {
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case c == ' ' || c == '\'' || c == '(' || c == ')' || c == '+' || c == ',' || c == '-' || c == '.' ||
			c == '/' || c == ':' || c == '=' || c == '?':
		default:
			return false
		}
	}
	return true
}
