package scep

import (
	"bytes"
	"crypto"
	"crypto/aes"
	"crypto/cipher"
	"crypto/des"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"fmt"
	"io"
	"math/big"
	"slices"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// This file is the small part of CMS (RFC 5652) that SCEP uses, read and written with cryptobyte, which accepts
// DER only (minimal lengths, no indefinite lengths): SignedData with one signer, EnvelopedData with RSA key
// transport and a CBC content cipher, and the degenerate certs-only SignedData.

var (
	oidData          = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 7, 1}
	oidSignedData    = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 7, 2}
	oidEnvelopedData = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 7, 3}
	oidContentType   = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 3}
	oidMessageDigest = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 4}
	oidSigningTime   = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 5}

	oidRSAEncryption = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 1}
	oidMD5           = asn1.ObjectIdentifier{1, 2, 840, 113549, 2, 5}
	oidSHA1          = asn1.ObjectIdentifier{1, 3, 14, 3, 2, 26}
	oidSHA256        = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 2, 1}
	oidSHA384        = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 2, 2}
	oidSHA512        = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 2, 3}

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
	maxCertificates   = 8
	maxRecipientInfos = 8
	maxAttributes     = 32
)

// digests are the digest algorithms accepted in a client's SignerInfo, each with the OID of its
// PKCS#1 v1.5 signature algorithm (clients write either that or plain rsaEncryption).
type digestAlg struct {
	oid, withRSA asn1.ObjectIdentifier
	hash         crypto.Hash
}

var digests = []digestAlg{
	// SHA-1 is what micromdm's scepclient signs with. The requester signs its own message, so a collision gains
	// it nothing it could not sign directly.
	{oidSHA1, asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 5}, crypto.SHA1},
	{oidSHA256, asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 11}, crypto.SHA256},
	{oidSHA384, asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 12}, crypto.SHA384},
	{oidSHA512, asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 13}, crypto.SHA512},
}

// readContentInfo reads a DER ContentInfo of type want and returns its content (inside the [0] EXPLICIT).
func readContentInfo(der []byte, want asn1.ObjectIdentifier, what string) (cryptobyte.String, error) {
	in := cryptobyte.String(der)
	var ci, content cryptobyte.String
	var typ asn1.ObjectIdentifier
	if !in.ReadASN1(&ci, cbasn1.SEQUENCE) || !in.Empty() || !ci.ReadASN1ObjectIdentifier(&typ) ||
		!ci.ReadASN1(&content, tagExplicit0) || !ci.Empty() {
		return nil, malformed("%s is not a DER ContentInfo", what)
	}
	if !typ.Equal(want) {
		return nil, malformed("%s has content type %v, want %v", what, typ, want)
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

// signedData is a parsed SignedData and its one signer.
type signedData struct {
	contentType asn1.ObjectIdentifier
	content     []byte // nil when detached
	certs       []*x509.Certificate
	signer      *x509.Certificate
	attrs       attributes // signed attributes other than contentType and messageDigest
}

// parseSignedData reads a ContentInfo SignedData with exactly one SignerInfo by a certificate it includes, and
// checks that signer's signature over signed attributes that carry contentType and a matching messageDigest.
// When the signature (or a step before it) fails, the signed attributes read so far are still returned, so
// that the caller may answer the sender.
func parseSignedData(der []byte) (*signedData, error) {
	body, err := readContentInfo(der, oidSignedData, "message")
	if err != nil {
		return nil, err
	}
	var sd, encap, certs, signerInfos cryptobyte.String
	var version int64
	if !body.ReadASN1(&sd, cbasn1.SEQUENCE) || !body.Empty() || !sd.ReadASN1Integer(&version) ||
		!sd.SkipASN1(cbasn1.SET) || !sd.ReadASN1(&encap, cbasn1.SEQUENCE) ||
		!sd.ReadOptionalASN1(&certs, nil, tagExplicit0) || !sd.SkipOptionalASN1(tagExplicit1) ||
		!sd.ReadASN1(&signerInfos, cbasn1.SET) || !sd.Empty() {
		return nil, malformed("SignedData is malformed")
	}
	out := &signedData{}
	var econtent cryptobyte.String
	var hasContent bool
	if !encap.ReadASN1ObjectIdentifier(&out.contentType) || !encap.ReadOptionalASN1(&econtent, &hasContent, tagExplicit0) || !encap.Empty() {
		return nil, malformed("SignedData encapContentInfo is malformed")
	}
	if hasContent {
		if !econtent.ReadASN1Bytes(&out.content, cbasn1.OCTET_STRING) || !econtent.Empty() {
			return nil, malformed("SignedData eContent is not one DER OCTET STRING")
		}
		if out.content == nil {
			out.content = []byte{}
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
		if len(out.certs) == maxCertificates {
			return nil, malformed("more than %d certificates", maxCertificates)
		}
		cert, err := x509.ParseCertificate(c)
		if err != nil {
			return nil, malformed("certificate in SignedData: %v", err)
		}
		out.certs = append(out.certs, cert)
	}
	var si cryptobyte.String
	if !signerInfos.ReadASN1(&si, cbasn1.SEQUENCE) || !signerInfos.Empty() {
		return nil, malformed("SignedData must have exactly one SignerInfo")
	}
	return out, out.verify(si)
}

func (sd *signedData) verify(si cryptobyte.String) error {
	var version int64
	var sid, signedAttrs, sig cryptobyte.String
	var sidTag cbasn1.Tag
	if !si.ReadASN1Integer(&version) || !si.ReadAnyASN1Element(&sid, &sidTag) {
		return malformed("SignerInfo is malformed")
	}
	digestOID, _, ok := readAlgorithm(&si)
	if !ok || !si.PeekASN1Tag(tagExplicit0) || !si.ReadASN1Element(&signedAttrs, tagExplicit0) {
		return malformed("SignerInfo has no signed attributes")
	}
	sigAlg, _, ok := readAlgorithm(&si)
	if !ok || !si.ReadASN1(&sig, cbasn1.OCTET_STRING) || !si.SkipOptionalASN1(tagExplicit1) || !si.Empty() {
		return malformed("SignerInfo is malformed")
	}
	attrsContent := signedAttrs
	if !attrsContent.ReadASN1(&attrsContent, tagExplicit0) {
		return malformed("SignerInfo signed attributes are malformed")
	}
	attrs, err := parseAttributes(attrsContent)
	if err != nil {
		return err
	}
	sd.attrs = attrs

	i := slices.IndexFunc(digests, func(d digestAlg) bool { return d.oid.Equal(digestOID) })
	if i < 0 {
		return &Error{BadAlg, fmt.Sprintf("digest algorithm %v is not accepted", digestOID)}
	}
	d := digests[i]
	if !sigAlg.Equal(oidRSAEncryption) && !sigAlg.Equal(d.withRSA) {
		return &Error{BadAlg, fmt.Sprintf("signature algorithm %v is not PKCS#1 v1.5 with %v", sigAlg, d.hash)}
	}
	if sd.signer = sd.findSigner(sid, sidTag); sd.signer == nil {
		return &Error{BadMessageCheck, "the signer's certificate is not in the message"}
	}
	pub, ok := sd.signer.PublicKey.(*rsa.PublicKey)
	if !ok {
		return &Error{BadAlg, "the signer's key is not RSA (SCEP encrypts replies to it)"}
	}
	ct, ok := attrs.take(oidContentType)
	var typ asn1.ObjectIdentifier
	if !ok || !ct.ReadASN1ObjectIdentifier(&typ) || !ct.Empty() || !typ.Equal(sd.contentType) {
		return &Error{BadMessageCheck, "signed contentType is missing or does not match the content"}
	}
	md, ok := attrs.take(oidMessageDigest)
	var digest []byte
	if !ok || !md.ReadASN1Bytes(&digest, cbasn1.OCTET_STRING) || !md.Empty() || sd.content == nil ||
		!bytes.Equal(digest, hashOf(d.hash, sd.content)) {
		return &Error{BadMessageCheck, "signed messageDigest is missing or does not match the content"}
	}
	// The signature covers the signed attributes re-tagged as a universal SET OF (RFC 5652 5.4).
	signed := append([]byte{0x31}, signedAttrs[1:]...)
	if rsa.VerifyPKCS1v15(pub, d.hash, hashOf(d.hash, signed), sig) != nil {
		return &Error{BadMessageCheck, "the signature does not verify with the signer's certificate"}
	}
	return nil
}

// findSigner returns the included certificate the SignerInfo's sid names (issuer and serial, or subject key
// identifier), or nil.
func (sd *signedData) findSigner(sid cryptobyte.String, tag cbasn1.Tag) *x509.Certificate {
	match, ok := certMatcher(sid, tag)
	if !ok {
		return nil
	}
	for _, c := range sd.certs {
		if match(c) {
			return c
		}
	}
	return nil
}

// certMatcher reads a SignerIdentifier or RecipientIdentifier: IssuerAndSerialNumber, or [0] a subject key
// identifier.
func certMatcher(id cryptobyte.String, tag cbasn1.Tag) (func(*x509.Certificate) bool, bool) {
	switch tag {
	case cbasn1.SEQUENCE:
		var ias, issuer cryptobyte.String
		serial := new(big.Int)
		if !id.ReadASN1(&ias, cbasn1.SEQUENCE) || !ias.ReadASN1Element(&issuer, cbasn1.SEQUENCE) ||
			!ias.ReadASN1Integer(serial) || !ias.Empty() {
			return nil, false
		}
		return func(c *x509.Certificate) bool {
			return bytes.Equal(c.RawIssuer, issuer) && c.SerialNumber.Cmp(serial) == 0
		}, true
	case tagImplicit0:
		var ski cryptobyte.String
		if !id.ReadASN1(&ski, tagImplicit0) || len(ski) == 0 {
			return nil, false
		}
		return func(c *x509.Certificate) bool { return bytes.Equal(c.SubjectKeyId, ski) }, true
	}
	return nil, false
}

func hashOf(h crypto.Hash, b []byte) []byte {
	d := h.New()
	d.Write(b)
	return d.Sum(nil)
}

// attributes are signed attributes with one value each, by OID; take removes the one it returns.
type attributes map[string]cryptobyte.String

// parseAttributes reads the contents of a SET OF Attribute, each with exactly one value (kept as a whole
// element), and refuses an attribute given twice.
func parseAttributes(s cryptobyte.String) (attributes, error) {
	out := attributes{}
	for !s.Empty() {
		var attr, values, value cryptobyte.String
		var oid asn1.ObjectIdentifier
		var tag cbasn1.Tag
		if !s.ReadASN1(&attr, cbasn1.SEQUENCE) || !attr.ReadASN1ObjectIdentifier(&oid) ||
			!attr.ReadASN1(&values, cbasn1.SET) || !attr.Empty() ||
			!values.ReadAnyASN1Element(&value, &tag) || !values.Empty() {
			return nil, malformed("a signed attribute is malformed or has other than one value")
		}
		if _, dup := out[oid.String()]; dup {
			return nil, malformed("signed attribute %v appears twice", oid)
		}
		if len(out) == maxAttributes {
			return nil, malformed("more than %d signed attributes", maxAttributes)
		}
		out[oid.String()] = value
	}
	return out, nil
}

func (a attributes) take(oid asn1.ObjectIdentifier) (cryptobyte.String, bool) {
	v, ok := a[oid.String()]
	delete(a, oid.String())
	return v, ok
}

// attribute is a signed attribute to write: its type and the DER of its one value.
type attribute struct {
	oid   asn1.ObjectIdentifier
	value []byte
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

func addIssuerAndSerial(b *cryptobyte.Builder, c *x509.Certificate) {
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddBytes(c.RawIssuer)
		b.AddASN1BigInt(c.SerialNumber)
	})
}

func addAlgorithm(b *cryptobyte.Builder, oid asn1.ObjectIdentifier, params func(*cryptobyte.Builder)) {
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddASN1ObjectIdentifier(oid)
		params(b)
	})
}

// buildSignedData writes a ContentInfo SignedData around content (id-data) with certs, signed by key (an RSA
// crypto.Signer; SHA-256) whose certificate is signerCert, over contentType, messageDigest and attrs. With key
// nil it is a degenerate certs-only SignedData with no content.
func buildSignedData(content []byte, attrs []attribute, key crypto.Signer, signerCert *x509.Certificate, certs []*x509.Certificate) ([]byte, error) {
	var signerInfo []byte
	if key != nil {
		attrs = append(attrs,
			attribute{oidContentType, derOf(func(b *cryptobyte.Builder) { b.AddASN1ObjectIdentifier(oidData) })},
			attribute{oidMessageDigest, derOf(func(b *cryptobyte.Builder) { b.AddASN1OctetString(hashOf(crypto.SHA256, content)) })})
		encoded := make([][]byte, len(attrs))
		for i, a := range attrs {
			encoded[i] = derOf(func(b *cryptobyte.Builder) {
				b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
					b.AddASN1ObjectIdentifier(a.oid)
					b.AddASN1(cbasn1.SET, func(b *cryptobyte.Builder) { b.AddBytes(a.value) })
				})
			})
		}
		slices.SortFunc(encoded, bytes.Compare) // DER orders a SET OF by encoding
		joined := bytes.Join(encoded, nil)
		set := derOf(func(b *cryptobyte.Builder) { b.AddASN1(cbasn1.SET, func(b *cryptobyte.Builder) { b.AddBytes(joined) }) })
		sig, err := key.Sign(rand.Reader, hashOf(crypto.SHA256, set), crypto.SHA256)
		if err != nil {
			return nil, fmt.Errorf("scep: signing: %w", err)
		}
		signerInfo = derOf(func(b *cryptobyte.Builder) {
			b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
				b.AddASN1Int64(1)
				addIssuerAndSerial(b, signerCert)
				addAlgorithm(b, oidSHA256, func(b *cryptobyte.Builder) { b.AddASN1NULL() })
				b.AddASN1(tagExplicit0, func(b *cryptobyte.Builder) { b.AddBytes(joined) })
				addAlgorithm(b, oidRSAEncryption, func(b *cryptobyte.Builder) { b.AddASN1NULL() })
				b.AddASN1OctetString(sig)
			})
		})
	}
	var b cryptobyte.Builder
	addContentInfo(&b, oidSignedData, func(b *cryptobyte.Builder) {
		b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
			b.AddASN1Int64(1)
			b.AddASN1(cbasn1.SET, func(b *cryptobyte.Builder) {
				if key != nil {
					addAlgorithm(b, oidSHA256, func(b *cryptobyte.Builder) { b.AddASN1NULL() })
				}
			})
			b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
				b.AddASN1ObjectIdentifier(oidData)
				if key != nil {
					b.AddASN1(tagExplicit0, func(b *cryptobyte.Builder) { b.AddASN1OctetString(content) })
				}
			})
			if len(certs) > 0 {
				b.AddASN1(tagExplicit0, func(b *cryptobyte.Builder) {
					for _, c := range certs {
						b.AddBytes(c.Raw)
					}
				})
			}
			b.AddASN1(cbasn1.SET, func(b *cryptobyte.Builder) { b.AddBytes(signerInfo) })
		})
	})
	return b.Bytes()
}

// contentCiphers are the content-encryption algorithms accepted in a client's envelope.
type contentCipher struct {
	oid    asn1.ObjectIdentifier
	keyLen int
	newCBC func(key []byte) (cipher.Block, error)
}

var contentCiphers = []contentCipher{
	{oidAES128CBC, 16, aes.NewCipher},
	{oidAES192CBC, 24, aes.NewCipher},
	{oidAES256CBC, 32, aes.NewCipher},
	{oidDESEDE3CBC, 24, des.NewTripleDESCipher},
	{oidDESCBC, 8, des.NewCipher}, // only with Config.AllowDES
}

// errDecrypt is every failure to open an envelope after its structure was read: one answer, so that a client
// learns nothing about which step failed (no padding oracle).
var errDecrypt = &Error{BadMessageCheck, "the envelope does not decrypt with the RA key"}

// decryptEnvelope opens a ContentInfo EnvelopedData addressed (by issuer and serial or subject key
// identifier) to recipient, whose RSA key is key, and returns its id-data content.
func decryptEnvelope(der []byte, recipient *x509.Certificate, key crypto.Decrypter, allowDES bool) ([]byte, error) {
	body, err := readContentInfo(der, oidEnvelopedData, "pkcsPKIEnvelope")
	if err != nil {
		return nil, err
	}
	var ed, ris, eci cryptobyte.String
	var version int64
	if !body.ReadASN1(&ed, cbasn1.SEQUENCE) || !body.Empty() || !ed.ReadASN1Integer(&version) ||
		!ed.SkipOptionalASN1(tagExplicit0) || !ed.ReadASN1(&ris, cbasn1.SET) ||
		!ed.ReadASN1(&eci, cbasn1.SEQUENCE) || !ed.SkipOptionalASN1(tagExplicit1) || !ed.Empty() {
		return nil, malformed("EnvelopedData is malformed")
	}
	var encryptedKey []byte
	for n := 0; !ris.Empty(); n++ {
		var ri, rid cryptobyte.String
		var tag, ridTag cbasn1.Tag
		var riVersion int64
		if n == maxRecipientInfos || !ris.ReadAnyASN1(&ri, &tag) {
			return nil, malformed("EnvelopedData recipientInfos are malformed or too many")
		}
		if tag != cbasn1.SEQUENCE {
			continue // not a KeyTransRecipientInfo
		}
		if !ri.ReadASN1Integer(&riVersion) || !ri.ReadAnyASN1Element(&rid, &ridTag) {
			return nil, malformed("KeyTransRecipientInfo is malformed")
		}
		alg, _, ok := readAlgorithm(&ri)
		var ek []byte
		if !ok || !ri.ReadASN1Bytes(&ek, cbasn1.OCTET_STRING) || !ri.Empty() {
			return nil, malformed("KeyTransRecipientInfo is malformed")
		}
		if match, ok := certMatcher(rid, ridTag); ok && match(recipient) {
			if !alg.Equal(oidRSAEncryption) {
				return nil, &Error{BadAlg, fmt.Sprintf("key transport %v is not RSA PKCS#1 v1.5", alg)}
			}
			encryptedKey = ek
		}
	}
	if encryptedKey == nil {
		return nil, &Error{BadMessageCheck, "the envelope is not addressed to the RA certificate"}
	}

	var contentType asn1.ObjectIdentifier
	var iv []byte
	if !eci.ReadASN1ObjectIdentifier(&contentType) || !contentType.Equal(oidData) {
		return nil, malformed("the envelope's content is not id-data")
	}
	alg, params, ok := readAlgorithm(&eci)
	if !ok || !params.ReadASN1Bytes(&iv, cbasn1.OCTET_STRING) || !params.Empty() {
		return nil, malformed("the envelope's content encryption algorithm is malformed")
	}
	ciphertext, err := readEncryptedContent(eci)
	if err != nil {
		return nil, err
	}
	i := slices.IndexFunc(contentCiphers, func(c contentCipher) bool { return c.oid.Equal(alg) })
	if i < 0 || (alg.Equal(oidDESCBC) && !allowDES) {
		return nil, &Error{BadAlg, fmt.Sprintf("content encryption %v is not accepted (AES-CBC or DES-EDE3-CBC)", alg)}
	}
	c := contentCiphers[i]

	// Implicit rejection: a key that does not decrypt, or has the wrong length, is replaced by a random one, so
	// that a bad PKCS#1 padding and a bad content padding look the same (an HSM cannot do this for us: crypto11
	// does not support rsa.PKCS1v15DecryptOptions.SessionKeyLen).
	cek, err := key.Decrypt(rand.Reader, encryptedKey, nil)
	if err != nil || len(cek) != c.keyLen {
		cek = make([]byte, c.keyLen)
		_, _ = io.ReadFull(rand.Reader, cek)
	}
	block, err := c.newCBC(cek)
	if err != nil {
		return nil, errDecrypt
	}
	bs := block.BlockSize()
	if len(iv) != bs || len(ciphertext) == 0 || len(ciphertext)%bs != 0 {
		return nil, malformed("the envelope's IV or ciphertext length does not fit the cipher")
	}
	plain := make([]byte, len(ciphertext))
	cipher.NewCBCDecrypter(block, iv).CryptBlocks(plain, ciphertext)
	pad := int(plain[len(plain)-1])
	if pad == 0 || pad > bs {
		return nil, errDecrypt
	}
	for _, p := range plain[len(plain)-pad:] {
		if int(p) != pad {
			return nil, errDecrypt
		}
	}
	return plain[:len(plain)-pad], nil
}

// readEncryptedContent reads the [0] IMPLICIT OCTET STRING encryptedContent: primitive (DER, as OpenSSL and
// certmonger write it) or constructed from OCTET STRINGs (as micromdm's scepclient writes it).
func readEncryptedContent(eci cryptobyte.String) ([]byte, error) {
	var content cryptobyte.String
	if eci.PeekASN1Tag(tagImplicit0) {
		if !eci.ReadASN1(&content, tagImplicit0) || !eci.Empty() {
			return nil, malformed("encryptedContent is malformed")
		}
		return content, nil
	}
	if !eci.ReadASN1(&content, tagExplicit0) || !eci.Empty() {
		return nil, malformed("the envelope has no encryptedContent")
	}
	var out []byte
	for !content.Empty() {
		var part []byte
		if !content.ReadASN1Bytes(&part, cbasn1.OCTET_STRING) {
			return nil, malformed("constructed encryptedContent holds other than OCTET STRINGs")
		}
		out = append(out, part...)
	}
	return out, nil
}

// encryptEnvelope writes a ContentInfo EnvelopedData holding content (id-data), encrypted with AES-256-CBC
// under a fresh key transported to recipient's RSA key with PKCS#1 v1.5. Never DES: OpenSSL 3 (certmonger)
// cannot decrypt it (ARCHITECTURE §11).
func encryptEnvelope(content []byte, recipient *x509.Certificate) ([]byte, error) {
	pub, ok := recipient.PublicKey.(*rsa.PublicKey)
	if !ok {
		return nil, errors.New("scep: the recipient's key is not RSA")
	}
	cek, iv := make([]byte, 32), make([]byte, aes.BlockSize)
	if _, err := io.ReadFull(rand.Reader, cek); err != nil {
		return nil, err
	}
	if _, err := io.ReadFull(rand.Reader, iv); err != nil {
		return nil, err
	}
	block, err := aes.NewCipher(cek)
	if err != nil {
		return nil, err
	}
	pad := aes.BlockSize - len(content)%aes.BlockSize
	ciphertext := append(bytes.Clone(content), bytes.Repeat([]byte{byte(pad)}, pad)...)
	cipher.NewCBCEncrypter(block, iv).CryptBlocks(ciphertext, ciphertext)
	encryptedKey, err := rsa.EncryptPKCS1v15(rand.Reader, pub, cek)
	if err != nil {
		return nil, fmt.Errorf("scep: encrypting the content key: %w", err)
	}
	var b cryptobyte.Builder
	addContentInfo(&b, oidEnvelopedData, func(b *cryptobyte.Builder) {
		b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
			b.AddASN1Int64(0)
			b.AddASN1(cbasn1.SET, func(b *cryptobyte.Builder) {
				b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
					b.AddASN1Int64(0)
					addIssuerAndSerial(b, recipient)
					addAlgorithm(b, oidRSAEncryption, func(b *cryptobyte.Builder) { b.AddASN1NULL() })
					b.AddASN1OctetString(encryptedKey)
				})
			})
			b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
				b.AddASN1ObjectIdentifier(oidData)
				addAlgorithm(b, oidAES256CBC, func(b *cryptobyte.Builder) { b.AddASN1OctetString(iv) })
				b.AddASN1(tagImplicit0, func(b *cryptobyte.Builder) { b.AddBytes(ciphertext) })
			})
		})
	})
	return b.Bytes()
}
