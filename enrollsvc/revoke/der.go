package revoke

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"fmt"
	"math/big"
	"time"

	"golang.org/x/crypto/cryptobyte"
	casn1 "golang.org/x/crypto/cryptobyte/asn1"

	"github.com/enrollment-appliance/aeappliance/enrollsvc/issue"
)

// sigAlg is the signature algorithm crypto/x509 picks for a key: SHA-256 with RSA PKCS #1 v1.5
// for every RSA key, ECDSA with SHA-256, SHA-384 or SHA-512 for P-256, P-384 or P-521.
type sigAlg struct {
	hash  crypto.Hash
	algo  x509.SignatureAlgorithm
	algID []byte // the DER AlgorithmIdentifier
}

var (
	oidSHA256WithRSA   = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 11}
	oidECDSAWithSHA256 = asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 2}
	oidECDSAWithSHA384 = asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 3}
	oidECDSAWithSHA512 = asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 4}
)

func sigAlgFor(pub crypto.PublicKey) (sigAlg, error) {
	var a sigAlg
	var oid asn1.ObjectIdentifier
	switch k := pub.(type) {
	case *rsa.PublicKey:
		a.hash, a.algo, oid = crypto.SHA256, x509.SHA256WithRSA, oidSHA256WithRSA
	case *ecdsa.PublicKey:
		switch k.Curve {
		case elliptic.P256():
			a.hash, a.algo, oid = crypto.SHA256, x509.ECDSAWithSHA256, oidECDSAWithSHA256
		case elliptic.P384():
			a.hash, a.algo, oid = crypto.SHA384, x509.ECDSAWithSHA384, oidECDSAWithSHA384
		case elliptic.P521():
			a.hash, a.algo, oid = crypto.SHA512, x509.ECDSAWithSHA512, oidECDSAWithSHA512
		default:
			return a, errors.New("unsupported ECDSA curve (want P-256, P-384 or P-521)")
		}
	default:
		return a, fmt.Errorf("unsupported key type %T (want RSA or ECDSA)", pub)
	}
	var b cryptobyte.Builder
	b.AddASN1(casn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddASN1ObjectIdentifier(oid)
		if a.algo == x509.SHA256WithRSA {
			b.AddASN1NULL() // RFC 4055: RSA AlgorithmIdentifiers carry NULL parameters
		}
	})
	a.algID = b.BytesOrPanic()
	return a, nil
}

// sign hashes msg and signs the digest with signDigest.
func sign(ctx context.Context, signer crypto.Signer, a sigAlg, verifyECDSA bool, msg []byte) ([]byte, error) {
	h := a.hash.New()
	h.Write(msg)
	return signDigest(ctx, signer, a, verifyECDSA, h.Sum(nil))
}

// signDigest has signer sign digest, made with a.hash. RSA signatures are verified before they
// are returned, as crypto/x509 does, because a faulty RSA-CRT signature reveals the key. ECDSA
// signatures are verified when verifyECDSA is set: for CRLs (one verification each), not for
// OCSP answers, where it would halve throughput (P-256: some 25,000 answers/s unverified against
// 13,000 verified, on two cores) and a bad signature only makes the client reject the answer.
func signDigest(ctx context.Context, signer crypto.Signer, a sigAlg, verifyECDSA bool, digest []byte) ([]byte, error) {
	var sig []byte
	var err error
	if cs, ok := signer.(issue.ContextSigner); ok { // hsm.Key: the signature gets ctx's deadline
		sig, err = cs.SignContext(ctx, digest, a.hash)
	} else {
		sig, err = signer.Sign(rand.Reader, digest, a.hash)
	}
	if err != nil {
		return nil, err
	}
	ok := true
	switch pub := signer.Public().(type) {
	case *rsa.PublicKey:
		ok = rsa.VerifyPKCS1v15(pub, a.hash, digest, sig) == nil
	case *ecdsa.PublicKey:
		ok = !verifyECDSA || ecdsa.VerifyASN1(pub, digest, sig)
	}
	if !ok {
		return nil, errors.New("the signature the key made does not verify")
	}
	return sig, nil
}

// keyHash hashes the subjectPublicKey BIT STRING (without tag, length and unused-bits octet) of
// a DER SubjectPublicKeyInfo: the OCSP issuerKeyHash and KeyHash (RFC 6960 4.1.1, 4.2.1) and,
// with SHA-1, the key identifier of RFC 5280 4.2.1.2 method (1).
func keyHash(spki []byte, h crypto.Hash) ([]byte, error) {
	in := cryptobyte.String(spki)
	var info cryptobyte.String
	var key []byte
	if !in.ReadASN1(&info, casn1.SEQUENCE) || !in.Empty() || !info.SkipASN1(casn1.SEQUENCE) ||
		!info.ReadASN1BitStringAsBytes(&key) || !info.Empty() {
		return nil, errors.New("malformed SubjectPublicKeyInfo")
	}
	d := h.New()
	d.Write(key)
	return d.Sum(nil), nil
}

// appendHeader appends a DER tag and definite length.
func appendHeader(b []byte, tag byte, n int) []byte {
	b = append(b, tag)
	switch {
	case n < 0x80:
		return append(b, byte(n))
	case n <= 0xff:
		return append(b, 0x81, byte(n))
	case n <= 0xffff:
		return append(b, 0x82, byte(n>>8), byte(n))
	case n <= 0xffffff:
		return append(b, 0x83, byte(n>>16), byte(n>>8), byte(n))
	}
	return append(b, 0x84, byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
}

// headerLen is len(appendHeader(nil, tag, n)).
func headerLen(n int) int {
	switch {
	case n < 0x80:
		return 2
	case n <= 0xff:
		return 3
	case n <= 0xffff:
		return 4
	case n <= 0xffffff:
		return 5
	}
	return 6
}

// timeLen is len(appendTime(nil, t)).
func timeLen(t time.Time) int {
	if y := t.UTC().Year(); y >= 1950 && y < 2050 {
		return 15
	}
	return 17
}

// appendTime appends an RFC 5280 Time: UTCTime for the years 1950 to 2049, GeneralizedTime
// otherwise, in UTC and whole seconds. The year must be in 1..9999 (checkTime).
func appendTime(b []byte, t time.Time) []byte {
	if y := t.UTC().Year(); y >= 1950 && y < 2050 {
		return appendTimeAs(b, t, false)
	}
	return appendTimeAs(b, t, true)
}

// appendGeneralizedTime appends a DER GeneralizedTime in UTC and whole seconds.
func appendGeneralizedTime(b []byte, t time.Time) []byte { return appendTimeAs(b, t, true) }

// appendTimeAs writes the digits itself: time.Time.AppendFormat took a third of the time of a
// CRL.
func appendTimeAs(b []byte, t time.Time, generalized bool) []byte {
	t = t.UTC()
	year, month, day := t.Date()
	hour, minute, sec := t.Clock()
	if generalized {
		b = append(b, byte(casn1.GeneralizedTime), 15)
		b = appendDigits(b, year/100)
	} else {
		b = append(b, byte(casn1.UTCTime), 13)
	}
	for _, v := range [...]int{year % 100, int(month), day, hour, minute, sec} {
		b = appendDigits(b, v)
	}
	return append(b, 'Z')
}

// appendDigits appends v (0..99) as two decimal digits.
func appendDigits(b []byte, v int) []byte { return append(b, byte('0'+v/10), byte('0'+v%10)) }

func checkTime(t time.Time) error {
	if y := t.UTC().Year(); t.IsZero() || y < 1 || y > 9999 {
		return fmt.Errorf("time %v cannot be encoded", t)
	}
	return nil
}

// intBytes returns the content octets of a DER INTEGER for n >= 0, written into scratch when
// it fits.
func intBytes(scratch []byte, n *big.Int) []byte {
	l := (n.BitLen() + 8) / 8 // one more bit for the sign, at least one octet
	if l > len(scratch) {
		scratch = make([]byte, l)
	}
	return n.FillBytes(scratch[:l])
}
