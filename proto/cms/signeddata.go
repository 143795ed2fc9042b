package cms

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/asn1"
	"fmt"
	"math/big"
	"slices"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// SignedData is a parsed RFC 5652 SignedData (section 5.1) whose structure has been checked but whose
// signatures have not: see SignerInfo.Verify.
type SignedData struct {
	Version     int64
	ContentType asn1.ObjectIdentifier // eContentType
	// Content is the eContent OCTET STRING's value; nil when it is absent (detached, or a certs-only message).
	Content      []byte
	Certificates []*x509.Certificate // other CertificateChoices (attribute certificates) are skipped
	SignerInfos  []SignerInfo        // none for a certs-only message
}

// SignerInfo is one RFC 5652 SignerInfo (section 5.3).
type SignerInfo struct {
	Version            int64
	SID                Identifier
	DigestAlgorithm    asn1.ObjectIdentifier
	SignedAttrs        []Attribute // nil when absent
	SignatureAlgorithm asn1.ObjectIdentifier
	Signature          []byte
	// UnsignedAttrs are the unsignedAttrs (nil when absent): nothing vouches for them but what a
	// signed attribute says about them (MS-WCCE's archived key is bound by a signed key hash).
	UnsignedAttrs []Attribute

	rawSignedAttrs []byte // the [0] IMPLICIT element as sent
}

// Identifier is a SignerIdentifier or RecipientIdentifier: IssuerAndSerialNumber, or a subject key identifier.
type Identifier struct {
	Issuer       []byte   // DER Name; nil when SubjectKeyID is set
	Serial       *big.Int // with Issuer
	SubjectKeyID []byte
}

// Matches reports whether id names c: by issuer and serial number, or by c's subjectKeyIdentifier extension.
func (id Identifier) Matches(c *x509.Certificate) bool {
	if c == nil {
		return false
	}
	if id.Issuer != nil {
		return bytes.Equal(id.Issuer, c.RawIssuer) && id.Serial.Cmp(c.SerialNumber) == 0
	}
	return len(id.SubjectKeyID) > 0 && bytes.Equal(id.SubjectKeyID, c.SubjectKeyId)
}

// Attribute is an X.501 Attribute: its type and the DER of each of its values.
type Attribute struct {
	Type   asn1.ObjectIdentifier
	Values [][]byte
}

// FindAttribute returns the attribute of type oid in attrs.
func FindAttribute(attrs []Attribute, oid asn1.ObjectIdentifier) (Attribute, bool) {
	for _, a := range attrs {
		if a.Type.Equal(oid) {
			return a, true
		}
	}
	return Attribute{}, false
}

// ParseSignedData reads a DER ContentInfo holding a SignedData. It refuses BER, trailing data, unexpected
// fields, more than 16 certificates, more than 4 signers and more than 32 signed attributes per signer, and an
// attribute type given twice.
func ParseSignedData(der []byte) (*SignedData, error) {
	body, err := readContentInfo(der, OIDSignedData)
	if err != nil {
		return nil, err
	}
	var sd, encap, certs, signerInfos cryptobyte.String
	out := &SignedData{}
	if !body.ReadASN1(&sd, cbasn1.SEQUENCE) || !body.Empty() || !sd.ReadASN1Integer(&out.Version) ||
		!sd.SkipASN1(cbasn1.SET) || !sd.ReadASN1(&encap, cbasn1.SEQUENCE) ||
		!sd.ReadOptionalASN1(&certs, nil, tagExplicit0) || !sd.SkipOptionalASN1(tagExplicit1) ||
		!sd.ReadASN1(&signerInfos, cbasn1.SET) || !sd.Empty() {
		return nil, malformed("SignedData is malformed")
	}
	if out.Version < 1 || out.Version > 5 {
		return nil, malformed("SignedData version %d", out.Version)
	}
	var econtent cryptobyte.String
	var hasContent bool
	if !encap.ReadASN1ObjectIdentifier(&out.ContentType) || !encap.ReadOptionalASN1(&econtent, &hasContent, tagExplicit0) || !encap.Empty() {
		return nil, malformed("SignedData encapContentInfo is malformed")
	}
	if hasContent {
		if !econtent.ReadASN1Bytes(&out.Content, cbasn1.OCTET_STRING) || !econtent.Empty() {
			return nil, malformed("SignedData eContent is not one DER OCTET STRING")
		}
		if out.Content == nil {
			out.Content = []byte{}
		}
	}
	for !certs.Empty() {
		var c cryptobyte.String
		var tag cbasn1.Tag
		if !certs.ReadAnyASN1Element(&c, &tag) {
			return nil, malformed("SignedData certificates are malformed")
		}
		if tag != cbasn1.SEQUENCE {
			continue // attribute certificates and other choices cannot sign
		}
		if len(out.Certificates) == maxCertificates {
			return nil, malformed("more than %d certificates", maxCertificates)
		}
		cert, err := x509.ParseCertificate(c)
		if err != nil {
			return nil, malformed("certificate in SignedData: %v", err)
		}
		out.Certificates = append(out.Certificates, cert)
	}
	for !signerInfos.Empty() {
		var si cryptobyte.String
		if len(out.SignerInfos) == maxSignerInfos {
			return nil, malformed("more than %d signers", maxSignerInfos)
		}
		if !signerInfos.ReadASN1(&si, cbasn1.SEQUENCE) {
			return nil, malformed("SignerInfo is malformed")
		}
		s, err := parseSignerInfo(si)
		if err != nil {
			return nil, err
		}
		out.SignerInfos = append(out.SignerInfos, s)
	}
	return out, nil
}

func parseSignerInfo(si cryptobyte.String) (SignerInfo, error) {
	var out SignerInfo
	var sid, signedAttrs, unsignedAttrs cryptobyte.String
	var sidTag cbasn1.Tag
	var hasAttrs, hasUnsigned, ok bool
	if !si.ReadASN1Integer(&out.Version) || !si.ReadAnyASN1Element(&sid, &sidTag) {
		return out, malformed("SignerInfo is malformed")
	}
	if out.SID, ok = readIdentifier(sid, sidTag); !ok {
		return out, malformed("SignerInfo sid is malformed")
	}
	if out.DigestAlgorithm, _, ok = readAlgorithm(&si); !ok {
		return out, malformed("SignerInfo digestAlgorithm is malformed")
	}
	if hasAttrs = si.PeekASN1Tag(tagExplicit0); hasAttrs && !si.ReadASN1Element(&signedAttrs, tagExplicit0) {
		return out, malformed("SignerInfo signed attributes are malformed")
	}
	if out.SignatureAlgorithm, _, ok = readAlgorithm(&si); !ok || !si.ReadASN1Bytes(&out.Signature, cbasn1.OCTET_STRING) ||
		!si.ReadOptionalASN1(&unsignedAttrs, &hasUnsigned, tagExplicit1) || !si.Empty() {
		return out, malformed("SignerInfo is malformed")
	}
	if hasUnsigned {
		attrs, err := ParseAttributes(unsignedAttrs)
		if err != nil {
			return out, err
		}
		out.UnsignedAttrs = attrs
		if out.UnsignedAttrs == nil {
			out.UnsignedAttrs = []Attribute{}
		}
	}
	if hasAttrs {
		content := signedAttrs
		if !content.ReadASN1(&content, tagExplicit0) {
			return out, malformed("SignerInfo signed attributes are malformed")
		}
		attrs, err := ParseAttributes(content)
		if err != nil {
			return out, err
		}
		for i, a := range attrs {
			if _, dup := FindAttribute(attrs[:i], a.Type); dup {
				// RFC 5652 section 5.3: a signed attribute type appears once (11.1-11.3 for the three defined).
				return out, malformed("signed attribute %v appears twice", a.Type)
			}
		}
		out.SignedAttrs, out.rawSignedAttrs = attrs, signedAttrs
		if out.SignedAttrs == nil {
			out.SignedAttrs = []Attribute{}
		}
	}
	return out, nil
}

// readIdentifier reads a SignerIdentifier or RecipientIdentifier (RFC 5652 sections 5.3 and 6.2.1).
func readIdentifier(id cryptobyte.String, tag cbasn1.Tag) (Identifier, bool) {
	switch tag {
	case cbasn1.SEQUENCE:
		var ias, issuer cryptobyte.String
		serial := new(big.Int)
		if !id.ReadASN1(&ias, cbasn1.SEQUENCE) || !ias.ReadASN1Element(&issuer, cbasn1.SEQUENCE) ||
			!ias.ReadASN1Integer(serial) || !ias.Empty() {
			return Identifier{}, false
		}
		return Identifier{Issuer: issuer, Serial: serial}, true
	case tagImplicit0:
		var ski cryptobyte.String
		if !id.ReadASN1(&ski, tagImplicit0) || len(ski) == 0 {
			return Identifier{}, false
		}
		return Identifier{SubjectKeyID: ski}, true
	}
	return Identifier{}, false
}

// ParseAttributes reads the contents of a DER SET OF Attribute (signed attributes, PKCS#10 attributes): at
// most 32, each with at least one value. A type may appear more than once (PKCS#10 allows it; signed
// attributes do not, which ParseSignedData checks).
func ParseAttributes(s []byte) ([]Attribute, error) {
	in := cryptobyte.String(s)
	var out []Attribute
	for !in.Empty() {
		var attr, values cryptobyte.String
		var oid asn1.ObjectIdentifier
		if !in.ReadASN1(&attr, cbasn1.SEQUENCE) || !attr.ReadASN1ObjectIdentifier(&oid) ||
			!attr.ReadASN1(&values, cbasn1.SET) || !attr.Empty() || values.Empty() {
			return nil, malformed("an attribute is malformed or has no value")
		}
		if len(out) == maxAttributes {
			return nil, malformed("more than %d attributes", maxAttributes)
		}
		a := Attribute{Type: oid}
		for !values.Empty() {
			var v cryptobyte.String
			var tag cbasn1.Tag
			if !values.ReadAnyASN1Element(&v, &tag) {
				return nil, malformed("attribute %v has a malformed value", oid)
			}
			a.Values = append(a.Values, v)
		}
		out = append(out, a)
	}
	return out, nil
}

// digestAlgorithms are the digest algorithms accepted. SHA-1 is what Windows (CMC) and micromdm's scepclient
// sign with; the signer signs its own request, so a collision gains it nothing it could not sign directly.
var digestAlgorithms = []struct {
	oid  asn1.ObjectIdentifier
	hash crypto.Hash
}{{oidSHA1, crypto.SHA1}, {oidSHA256, crypto.SHA256}, {oidSHA384, crypto.SHA384}, {oidSHA512, crypto.SHA512}}

// Hash is the hash of si's digestAlgorithm.
func (si *SignerInfo) Hash() (crypto.Hash, error) { return hashFor(si.DigestAlgorithm) }

func hashFor(oid asn1.ObjectIdentifier) (crypto.Hash, error) {
	for _, d := range digestAlgorithms {
		if d.oid.Equal(oid) {
			return d.hash, nil
		}
	}
	return 0, errf(BadAlg, "unsupported digest algorithm %v", oid)
}

// CheckAttributes checks the signed attributes of si against the content it signs (RFC 5652 section 5.4 and
// 11): they must be present and carry exactly one contentType equal to contentType and one messageDigest
// equal to the digest of content under si's digestAlgorithm.
func (si *SignerInfo) CheckAttributes(contentType asn1.ObjectIdentifier, content []byte) error {
	hash, err := hashFor(si.DigestAlgorithm)
	if err != nil {
		return err
	}
	if si.SignedAttrs == nil {
		return errf(BadMessageCheck, "SignerInfo has no signed attributes (contentType and messageDigest are required)")
	}
	ct, okType := FindAttribute(si.SignedAttrs, OIDContentType)
	md, okDigest := FindAttribute(si.SignedAttrs, OIDMessageDigest)
	if !okType || !okDigest {
		return errf(BadMessageCheck, "signed attributes lack contentType or messageDigest")
	}
	var typ asn1.ObjectIdentifier
	if v := cryptobyte.String(ct.Values[0]); len(ct.Values) != 1 || !v.ReadASN1ObjectIdentifier(&typ) || !v.Empty() {
		return malformed("malformed contentType attribute")
	}
	if !typ.Equal(contentType) {
		return errf(BadMessageCheck, "signed contentType %v does not match eContentType %v", typ, contentType)
	}
	var digest []byte
	if v := cryptobyte.String(md.Values[0]); len(md.Values) != 1 || !v.ReadASN1Bytes(&digest, cbasn1.OCTET_STRING) || !v.Empty() {
		return malformed("malformed messageDigest attribute")
	}
	if content == nil || !bytes.Equal(digest, hashOf(hash, content)) {
		return errf(BadMessageCheck, "messageDigest does not match the content")
	}
	return nil
}

// signatureAlgorithms are the SignerInfo signature algorithms accepted. hash 0 means the OID names only the
// key type (rsaEncryption, as Windows and OpenSSL write it, or id-ecPublicKey), and digestAlgorithm decides.
var signatureAlgorithms = []struct {
	oid  asn1.ObjectIdentifier
	hash crypto.Hash
	key  string
}{
	{oidRSAEncryption, 0, "RSA"},
	{oidSHA1WithRSA, crypto.SHA1, "RSA"},
	{oidSHA256WithRSA, crypto.SHA256, "RSA"},
	{oidSHA384WithRSA, crypto.SHA384, "RSA"},
	{oidSHA512WithRSA, crypto.SHA512, "RSA"},
	{oidECPublicKey, 0, "ECDSA"},
	{oidECDSAWithSHA1, crypto.SHA1, "ECDSA"},
	{oidECDSAWithSHA256, crypto.SHA256, "ECDSA"},
	{oidECDSAWithSHA384, crypto.SHA384, "ECDSA"},
	{oidECDSAWithSHA512, crypto.SHA512, "ECDSA"},
	{oidEd25519, 0, "Ed25519"},
}

// VerifySignature checks si's signature over its signed attributes (re-tagged as a universal SET OF, RFC 5652
// section 5.4) with pub. It does not check the attributes' values: see CheckAttributes, and Verify for both.
func (si *SignerInfo) VerifySignature(pub crypto.PublicKey) error {
	hash, err := hashFor(si.DigestAlgorithm)
	if err != nil {
		return err
	}
	if si.rawSignedAttrs == nil {
		return errf(BadMessageCheck, "SignerInfo has no signed attributes")
	}
	key := ""
	for _, a := range signatureAlgorithms {
		if a.oid.Equal(si.SignatureAlgorithm) {
			if a.hash != 0 && a.hash != hash {
				return errf(BadAlg, "signature algorithm %v disagrees with the digest algorithm", si.SignatureAlgorithm)
			}
			key = a.key
		}
	}
	signed := append([]byte{0x31}, si.rawSignedAttrs[1:]...)
	switch key {
	case "RSA":
		k, ok := pub.(*rsa.PublicKey)
		if !ok || rsa.VerifyPKCS1v15(k, hash, hashOf(hash, signed), si.Signature) != nil {
			return errf(BadMessageCheck, "RSA signature does not verify")
		}
		return nil
	case "ECDSA":
		k, ok := pub.(*ecdsa.PublicKey)
		if !ok || !ecdsa.VerifyASN1(k, hashOf(hash, signed), si.Signature) {
			return errf(BadMessageCheck, "ECDSA signature does not verify")
		}
		return nil
	case "Ed25519":
		// RFC 8419: pure Ed25519 over the signed attributes; digestAlgorithm (SHA-512) only for messageDigest.
		k, ok := pub.(ed25519.PublicKey)
		if !ok || !ed25519.Verify(k, signed, si.Signature) {
			return errf(BadMessageCheck, "Ed25519 signature does not verify")
		}
		return nil
	}
	return errf(BadAlg, "unsupported signature algorithm %v", si.SignatureAlgorithm)
}

// Verify checks that si signs content of type contentType with pub: CheckAttributes, then VerifySignature.
func (si *SignerInfo) Verify(pub crypto.PublicKey, contentType asn1.ObjectIdentifier, content []byte) error {
	if err := si.CheckAttributes(contentType, content); err != nil {
		return err
	}
	return si.VerifySignature(pub)
}

// SignOptions describe a SignedData to write.
type SignOptions struct {
	ContentType asn1.ObjectIdentifier // nil: id-data
	Content     []byte
	// OmitContent leaves eContent absent, as a certs-only message must (RFC 8894 section 3.4); it needs no
	// Signer. Otherwise eContent is present, empty when Content is.
	OmitContent  bool
	Certificates []*x509.Certificate // in this order
	// Signer, when set, signs as SignerCert's key (named by issuer and serial number): RSA PKCS#1 v1.5 with
	// SHA-256, ECDSA with the curve's hash, or Ed25519. An HSM's crypto.Signer will do. Without
	// SignerCert the signer is named by SignerKeyID (subjectKeyIdentifier), as a key without a
	// certificate (a request's own key, MS-WCCE 3.1.1.4.3.1.3) signs.
	Signer      crypto.Signer
	SignerCert  *x509.Certificate
	SignerKeyID []byte
	// Attributes are signed along with contentType and messageDigest (one DER value each).
	Attributes []Attribute
	// UnsignedAttributes go in the SignerInfo's unsignedAttrs, in this order.
	UnsignedAttributes []Attribute
}

// NewSignedData writes a DER ContentInfo SignedData (RFC 5652 section 5): version 1 around id-data, else 3;
// with no Signer it has no SignerInfo and an empty digestAlgorithms (a certs-only or unsigned message).
func NewSignedData(o SignOptions) ([]byte, error) {
	contentType := o.ContentType
	if contentType == nil {
		contentType = OIDData
	}
	var signerInfo []byte
	var digestAlg asn1.ObjectIdentifier
	if o.Signer != nil {
		var err error
		if signerInfo, digestAlg, err = sign(contentType, o.Content, o); err != nil {
			return nil, err
		}
	}
	var b cryptobyte.Builder
	addContentInfo(&b, OIDSignedData, func(b *cryptobyte.Builder) {
		b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
			version := int64(1)
			if !contentType.Equal(OIDData) {
				version = 3 // RFC 5652 section 5.1
			}
			b.AddASN1Int64(version)
			b.AddASN1(cbasn1.SET, func(b *cryptobyte.Builder) {
				if digestAlg != nil {
					addAlgorithm(b, digestAlg, nil) // RFC 5754 section 2: SHA-2 parameters absent
				}
			})
			b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
				b.AddASN1ObjectIdentifier(contentType)
				if !o.OmitContent {
					b.AddASN1(tagExplicit0, func(b *cryptobyte.Builder) { b.AddASN1OctetString(o.Content) })
				}
			})
			if len(o.Certificates) > 0 {
				b.AddASN1(tagExplicit0, func(b *cryptobyte.Builder) {
					for _, c := range o.Certificates {
						b.AddBytes(c.Raw)
					}
				})
			}
			b.AddASN1(cbasn1.SET, func(b *cryptobyte.Builder) { b.AddBytes(signerInfo) })
		})
	})
	return b.Bytes()
}

// sign writes the SignerInfo over content with signed contentType, messageDigest and o.Attributes, and returns
// it with its digest algorithm.
func sign(contentType asn1.ObjectIdentifier, content []byte, o SignOptions) ([]byte, asn1.ObjectIdentifier, error) {
	cert := o.SignerCert
	type equaler interface{ Equal(crypto.PublicKey) bool }
	switch pub, ok := o.Signer.Public().(equaler); {
	case cert == nil && len(o.SignerKeyID) == 0:
		return nil, nil, errf(Malformed, "the signer needs a certificate or a key identifier")
	case cert != nil && (!ok || !pub.Equal(cert.PublicKey)):
		return nil, nil, errf(Malformed, "the signer key does not match the signer certificate")
	}
	var hash crypto.Hash
	var sigAlg asn1.ObjectIdentifier
	switch k := o.Signer.Public().(type) {
	case *rsa.PublicKey:
		hash, sigAlg = crypto.SHA256, oidRSAEncryption // what AD CS and OpenSSL write; RFC 5754 allows it
	case *ecdsa.PublicKey:
		switch k.Curve.Params().BitSize {
		case 384:
			hash, sigAlg = crypto.SHA384, oidECDSAWithSHA384
		case 521:
			hash, sigAlg = crypto.SHA512, oidECDSAWithSHA512
		default:
			hash, sigAlg = crypto.SHA256, oidECDSAWithSHA256
		}
	case ed25519.PublicKey:
		hash, sigAlg = crypto.SHA512, oidEd25519
	default:
		return nil, nil, errf(BadAlg, "unsupported signer key %T", k)
	}
	digestAlg := map[crypto.Hash]asn1.ObjectIdentifier{crypto.SHA256: oidSHA256, crypto.SHA384: oidSHA384, crypto.SHA512: oidSHA512}[hash]
	attrs := append(slices.Clone(o.Attributes),
		Attribute{OIDContentType, [][]byte{derOf(func(b *cryptobyte.Builder) { b.AddASN1ObjectIdentifier(contentType) })}},
		Attribute{OIDMessageDigest, [][]byte{derOf(func(b *cryptobyte.Builder) { b.AddASN1OctetString(hashOf(hash, content)) })}})
	encoded := encodeAttributes(attrs)
	slices.SortFunc(encoded, bytes.Compare) // DER orders a SET OF by encoding
	joined := bytes.Join(encoded, nil)
	set := derOf(func(b *cryptobyte.Builder) { b.AddASN1(cbasn1.SET, func(b *cryptobyte.Builder) { b.AddBytes(joined) }) })
	var sig []byte
	var err error
	if sigAlg.Equal(oidEd25519) {
		sig, err = o.Signer.Sign(rand.Reader, set, crypto.Hash(0))
	} else {
		sig, err = o.Signer.Sign(rand.Reader, hashOf(hash, set), hash)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("cms: signing: %w", err)
	}
	unsigned := encodeAttributes(o.UnsignedAttributes)
	slices.SortFunc(unsigned, bytes.Compare)
	si := derOf(func(b *cryptobyte.Builder) {
		b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
			if cert != nil {
				b.AddASN1Int64(1)
				addIssuerAndSerial(b, cert)
			} else {
				b.AddASN1Int64(3) // RFC 5652 section 5.3: version 3 with a subjectKeyIdentifier
				b.AddASN1(tagImplicit0, func(b *cryptobyte.Builder) { b.AddBytes(o.SignerKeyID) })
			}
			addAlgorithm(b, digestAlg, nil)
			b.AddASN1(tagExplicit0, func(b *cryptobyte.Builder) { b.AddBytes(joined) })
			var params func(*cryptobyte.Builder)
			if sigAlg.Equal(oidRSAEncryption) {
				params = addNULL // RFC 3370 section 3.2: rsaEncryption parameters are NULL
			}
			addAlgorithm(b, sigAlg, params)
			b.AddASN1OctetString(sig)
			if len(unsigned) > 0 {
				b.AddASN1(tagExplicit1, func(b *cryptobyte.Builder) { b.AddBytes(bytes.Join(unsigned, nil)) })
			}
		})
	})
	return si, digestAlg, nil
}

// encodeAttributes is the DER of each Attribute SEQUENCE.
func encodeAttributes(attrs []Attribute) [][]byte {
	encoded := make([][]byte, len(attrs))
	for i, a := range attrs {
		encoded[i] = derOf(func(b *cryptobyte.Builder) {
			b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
				b.AddASN1ObjectIdentifier(a.Type)
				b.AddASN1(cbasn1.SET, func(b *cryptobyte.Builder) {
					for _, v := range a.Values {
						b.AddBytes(v)
					}
				})
			})
		})
	}
	return encoded
}

func addIssuerAndSerial(b *cryptobyte.Builder, c *x509.Certificate) {
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddBytes(c.RawIssuer)
		b.AddASN1BigInt(c.SerialNumber)
	})
}
