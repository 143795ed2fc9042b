package cms

import (
	"crypto"
	"encoding/asn1"
	"fmt"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// Object identifiers of RFC 5652, RFC 3370, RFC 3565, RFC 5754 and RFC 8419.
var (
	OIDData          = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 7, 1}
	OIDSignedData    = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 7, 2}
	OIDEnvelopedData = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 7, 3}
	OIDContentType   = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 3}
	OIDMessageDigest = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 4}
	OIDSigningTime   = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 5}

	oidSHA1   = asn1.ObjectIdentifier{1, 3, 14, 3, 2, 26}
	oidSHA256 = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 2, 1}
	oidSHA384 = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 2, 2}
	oidSHA512 = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 2, 3}

	oidRSAEncryption   = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 1}
	oidSHA1WithRSA     = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 5}
	oidSHA256WithRSA   = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 11}
	oidSHA384WithRSA   = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 12}
	oidSHA512WithRSA   = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 13}
	oidECPublicKey     = asn1.ObjectIdentifier{1, 2, 840, 10045, 2, 1}
	oidECDSAWithSHA1   = asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 1}
	oidECDSAWithSHA256 = asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 2}
	oidECDSAWithSHA384 = asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 3}
	oidECDSAWithSHA512 = asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 4}
	oidEd25519         = asn1.ObjectIdentifier{1, 3, 101, 112}

	oidAES128CBC  = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 1, 2}
	oidAES192CBC  = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 1, 22}
	oidAES256CBC  = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 1, 42}
	oidDESEDE3CBC = asn1.ObjectIdentifier{1, 2, 840, 113549, 3, 7}
	oidDESCBC     = asn1.ObjectIdentifier{1, 3, 14, 3, 2, 7}
)

var (
	tagExplicit0 = cbasn1.Tag(0).ContextSpecific().Constructed()
	tagExplicit1 = cbasn1.Tag(1).ContextSpecific().Constructed()
	tagImplicit0 = cbasn1.Tag(0).ContextSpecific()
)

// Limits on what one message may carry; clients send one or two of each.
const (
	maxCertificates   = 16
	maxSignerInfos    = 4
	maxRecipientInfos = 8
	maxAttributes     = 32
)

// Kind says what is wrong with a message. Its values are those of CMCFailInfo (RFC 5272 section 6.1.4) and of
// SCEP failInfo (RFC 8894 section 3.2.1.4), which agree, so a protocol answers with int(Kind).
type Kind int

const (
	// BadAlg: an algorithm this package does not accept (badAlg).
	BadAlg Kind = 0
	// BadMessageCheck: a digest, signature or decryption that does not check out (badMessageCheck).
	BadMessageCheck Kind = 1
	// Malformed: not DER, not the structure RFC 5652 defines, or over a limit (badRequest).
	Malformed Kind = 2
)

// Error is every error this package returns about a message.
type Error struct {
	Kind Kind
	Msg  string
}

func (e *Error) Error() string { return "cms: " + e.Msg }

func errf(kind Kind, format string, args ...any) error {
	return &Error{Kind: kind, Msg: fmt.Sprintf(format, args...)}
}

func malformed(format string, args ...any) error { return errf(Malformed, format, args...) }

// readContentInfo reads a DER ContentInfo of type want and returns its content (inside the [0] EXPLICIT).
func readContentInfo(der []byte, want asn1.ObjectIdentifier) (cryptobyte.String, error) {
	in := cryptobyte.String(der)
	var ci, content cryptobyte.String
	var typ asn1.ObjectIdentifier
	if !in.ReadASN1(&ci, cbasn1.SEQUENCE) || !in.Empty() || !ci.ReadASN1ObjectIdentifier(&typ) ||
		!ci.ReadASN1(&content, tagExplicit0) || !ci.Empty() {
		return nil, malformed("not a DER ContentInfo")
	}
	if !typ.Equal(want) {
		name := "signedData"
		if want.Equal(OIDEnvelopedData) {
			name = "envelopedData"
		}
		return nil, malformed("ContentInfo type %v is not %s", typ, name)
	}
	return content, nil
}

// readAlgorithm reads an AlgorithmIdentifier and returns its OID and its parameters' element (nil when absent).
func readAlgorithm(s *cryptobyte.String) (asn1.ObjectIdentifier, cryptobyte.String, bool) {
	var alg, params cryptobyte.String
	var oid asn1.ObjectIdentifier
	var tag cbasn1.Tag
	if !s.ReadASN1(&alg, cbasn1.SEQUENCE) || !alg.ReadASN1ObjectIdentifier(&oid) {
		return nil, nil, false
	}
	if !alg.Empty() && (!alg.ReadAnyASN1Element(&params, &tag) || !alg.Empty()) {
		return nil, nil, false
	}
	return oid, params, true
}

func derOf(f cryptobyte.BuilderContinuation) []byte {
	var b cryptobyte.Builder
	f(&b)
	return b.BytesOrPanic() // only fails on an invalid OID or oversize data of our own making
}

func addContentInfo(b *cryptobyte.Builder, typ asn1.ObjectIdentifier, f cryptobyte.BuilderContinuation) {
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddASN1ObjectIdentifier(typ)
		b.AddASN1(tagExplicit0, f)
	})
}

// addAlgorithm writes an AlgorithmIdentifier; params nil leaves the parameters absent.
func addAlgorithm(b *cryptobyte.Builder, oid asn1.ObjectIdentifier, params func(*cryptobyte.Builder)) {
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddASN1ObjectIdentifier(oid)
		if params != nil {
			params(b)
		}
	})
}

func addNULL(b *cryptobyte.Builder) { b.AddASN1NULL() }

func hashOf(h crypto.Hash, b []byte) []byte {
	d := h.New()
	d.Write(b)
	return d.Sum(nil)
}
