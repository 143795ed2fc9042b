package cms

import (
	"bytes"
	"crypto"
	"crypto/aes"
	"crypto/cipher"
	"crypto/des"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/x509"
	"encoding/asn1"
	"fmt"
	"io"
	"slices"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// EnvelopedData is a parsed RFC 5652 EnvelopedData (section 6.1): its key-transport recipients and its
// encrypted content, not yet decrypted.
type EnvelopedData struct {
	Recipients []KeyTransRecipient // other RecipientInfo choices are skipped
	// ContentType, ContentEncryption (with its parameters' DER) and the ciphertext of encryptedContentInfo.
	ContentType       asn1.ObjectIdentifier
	ContentEncryption asn1.ObjectIdentifier
	params            []byte
	ciphertext        []byte
}

// KeyTransRecipient is a KeyTransRecipientInfo (RFC 5652 section 6.2.1).
type KeyTransRecipient struct {
	RID                    Identifier
	KeyEncryptionAlgorithm asn1.ObjectIdentifier
	EncryptedKey           []byte
}

// ParseEnvelopedData reads a DER ContentInfo holding an EnvelopedData with at most 8 recipients. The
// encryptedContent may be primitive (DER, as OpenSSL and certmonger write it) or constructed from OCTET STRINGs
// (as micromdm's scepclient writes it).
func ParseEnvelopedData(der []byte) (*EnvelopedData, error) {
	body, err := readContentInfo(der, OIDEnvelopedData)
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
	out := &EnvelopedData{}
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
		var r KeyTransRecipient
		var ok bool
		if !ri.ReadASN1Integer(&riVersion) || !ri.ReadAnyASN1Element(&rid, &ridTag) {
			return nil, malformed("KeyTransRecipientInfo is malformed")
		}
		if r.RID, ok = readIdentifier(rid, ridTag); !ok {
			return nil, malformed("KeyTransRecipientInfo rid is malformed")
		}
		if r.KeyEncryptionAlgorithm, _, ok = readAlgorithm(&ri); !ok || !ri.ReadASN1Bytes(&r.EncryptedKey, cbasn1.OCTET_STRING) || !ri.Empty() {
			return nil, malformed("KeyTransRecipientInfo is malformed")
		}
		out.Recipients = append(out.Recipients, r)
	}
	var params cryptobyte.String
	var ok bool
	if !eci.ReadASN1ObjectIdentifier(&out.ContentType) {
		return nil, malformed("the envelope's content type is malformed")
	}
	if out.ContentEncryption, params, ok = readAlgorithm(&eci); !ok {
		return nil, malformed("the envelope's content encryption algorithm is malformed")
	}
	out.params = params
	if out.ciphertext, err = readEncryptedContent(eci); err != nil {
		return nil, err
	}
	return out, nil
}

// readEncryptedContent reads the [0] IMPLICIT OCTET STRING encryptedContent, primitive or constructed.
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
	out := []byte{}
	for !content.Empty() {
		var part []byte
		if !content.ReadASN1Bytes(&part, cbasn1.OCTET_STRING) {
			return nil, malformed("constructed encryptedContent holds other than OCTET STRINGs")
		}
		out = append(out, part...)
	}
	return out, nil
}

// ContentCipher is a content-encryption algorithm.
type ContentCipher struct {
	oid    asn1.ObjectIdentifier
	keyLen int
	newCBC func(key []byte) (cipher.Block, error)
}

// The content ciphers. Encrypt takes AES128CBC or AES256CBC; Decrypt accepts every AES-CBC, and DES-EDE3-CBC
// and single DES-CBC only with DecryptOptions.AllowDES.
var (
	AES128CBC = ContentCipher{oidAES128CBC, 16, aes.NewCipher}
	AES256CBC = ContentCipher{oidAES256CBC, 32, aes.NewCipher}
	aes192CBC = ContentCipher{oidAES192CBC, 24, aes.NewCipher}
	des3CBC   = ContentCipher{oidDESEDE3CBC, 24, des.NewTripleDESCipher}
	desCBC    = ContentCipher{oidDESCBC, 8, des.NewCipher}
)

var contentCiphers = []ContentCipher{AES128CBC, aes192CBC, AES256CBC, des3CBC, desCBC}

// DecryptOptions change what Decrypt accepts.
type DecryptOptions struct {
	// AllowDES accepts single DES-CBC and DES-EDE3-CBC content (Debian's scepclient, micromdm scep 2.1.0,
	// always uses single DES). DES is broken: an eavesdropper can read the content; 3DES has 64-bit blocks.
	AllowDES bool
	// Allow3DES accepts DES-EDE3-CBC content but not single DES: Windows clients encrypt the keys
	// they archive with 3DES unless the template names another algorithm (MS-WCCE 3.1.2.4.2.2.2.5).
	Allow3DES bool
	// RejectionKey, when set, makes the implicit rejection deterministic: a content-encryption key that
	// does not decrypt (or has the wrong length) is replaced by HMAC-SHA256(RejectionKey, the content
	// cipher and the encrypted key), so that the same encrypted key sent twice meets the same fate (the
	// technique of RFC 5246 section 7.4.7.1 and RFC 3218 section 2.3.2). Nil: a random key each time.
	// It must stay secret and should last (a per-appliance secret).
	RejectionKey []byte
}

// errDecrypt is every failure to open an envelope after its structure was read: one answer, so that a sender
// learns nothing about which step failed (no padding oracle).
var errDecrypt = &Error{BadMessageCheck, "the envelope does not decrypt with the recipient's key"}

// Decrypt opens the envelope for recipient (named by issuer and serial number or subject key identifier),
// whose RSA key is key (a crypto.Decrypter, such as an HSM's), and returns its id-data content. Key transport
// must be RSA PKCS#1 v1.5 (RFC 3370 section 4.2.1).
func (e *EnvelopedData) Decrypt(recipient *x509.Certificate, key crypto.Decrypter, opts DecryptOptions) ([]byte, error) {
	var encryptedKey []byte
	for _, r := range e.Recipients {
		if r.RID.Matches(recipient) {
			if !r.KeyEncryptionAlgorithm.Equal(oidRSAEncryption) {
				return nil, errf(BadAlg, "key transport %v is not RSA PKCS#1 v1.5", r.KeyEncryptionAlgorithm)
			}
			encryptedKey = r.EncryptedKey
		}
	}
	if encryptedKey == nil {
		return nil, errf(BadMessageCheck, "the envelope is not addressed to the recipient certificate")
	}
	if !e.ContentType.Equal(OIDData) {
		return nil, malformed("the envelope's content is not id-data")
	}
	var iv []byte
	if params := cryptobyte.String(e.params); !params.ReadASN1Bytes(&iv, cbasn1.OCTET_STRING) || !params.Empty() {
		return nil, malformed("the envelope's content encryption parameters are not an IV")
	}
	i := slices.IndexFunc(contentCiphers, func(c ContentCipher) bool { return c.oid.Equal(e.ContentEncryption) })
	des := e.ContentEncryption.Equal(oidDESCBC) || e.ContentEncryption.Equal(oidDESEDE3CBC) && !opts.Allow3DES
	if i < 0 || des && !opts.AllowDES {
		return nil, errf(BadAlg, "content encryption %v is not accepted (AES-CBC; DES and 3DES only where allowed)", e.ContentEncryption)
	}
	c := contentCiphers[i]

	// Implicit rejection: a key that does not decrypt, or has the wrong length, is replaced by a random one, so
	// that a bad PKCS#1 padding and a bad content padding look the same (an HSM cannot do this for us: crypto11
	// does not support rsa.PKCS1v15DecryptOptions.SessionKeyLen).
	// The fallback key is computed before the private-key operation, whatever its outcome, so that
	// both paths do the same work.
	fallback := rejectionKey(opts.RejectionKey, c, encryptedKey)
	cek, err := key.Decrypt(rand.Reader, encryptedKey, nil)
	if err != nil || len(cek) != c.keyLen {
		cek = fallback
	}
	block, err := c.newCBC(cek)
	if err != nil {
		return nil, errDecrypt
	}
	bs := block.BlockSize()
	if len(iv) != bs || len(e.ciphertext) == 0 || len(e.ciphertext)%bs != 0 {
		return nil, malformed("the envelope's IV or ciphertext length does not fit the cipher")
	}
	plain := make([]byte, len(e.ciphertext))
	cipher.NewCBCDecrypter(block, iv).CryptBlocks(plain, e.ciphertext)
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

// rejectionKey is the key implicit rejection uses for encryptedKey (see DecryptOptions.RejectionKey).
func rejectionKey(secret []byte, c ContentCipher, encryptedKey []byte) []byte {
	if secret == nil {
		k := make([]byte, c.keyLen)
		_, _ = io.ReadFull(rand.Reader, k)
		return k
	}
	m := hmac.New(sha256.New, secret)
	m.Write([]byte("cms implicit rejection\x00" + c.oid.String() + "\x00"))
	m.Write(encryptedKey)
	return m.Sum(nil)[:c.keyLen]
}

// Encrypt writes a DER ContentInfo EnvelopedData holding content (id-data), encrypted with c (AES128CBC or
// AES256CBC) under a fresh key transported to recipient's RSA key with PKCS#1 v1.5, the recipient named by
// issuer and serial number. Never DES: OpenSSL 3 (certmonger) cannot decrypt it (docs/architecture.md
// section 11).
func Encrypt(content []byte, recipient *x509.Certificate, c ContentCipher) ([]byte, error) {
	pub, ok := recipient.PublicKey.(*rsa.PublicKey)
	if !ok {
		return nil, errf(BadAlg, "the recipient's key is not RSA")
	}
	return envelop(content, c, func(cek []byte) ([]byte, error) {
		return rsa.EncryptPKCS1v15(rand.Reader, pub, cek)
	}, func(b *cryptobyte.Builder) {
		b.AddASN1Int64(0)
		addIssuerAndSerial(b, recipient)
		addAlgorithm(b, oidRSAEncryption, addNULL)
	})
}

// OID of RSAES-OAEP (RFC 8017 appendix A.2.1, RFC 4055 section 4) and of MGF1.
var (
	oidRSAESOAEP = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 7}
	oidMGF1      = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 8}
)

// EncryptOAEP writes a DER ContentInfo EnvelopedData holding content (id-data), encrypted with c
// (AES128CBC or AES256CBC) under a fresh key transported to pub with RSAES-OAEP, SHA-256 and MGF1
// with SHA-256 (RFC 4055 section 4.1; RFC 8017). The recipient is named by issuer and serial number
// when cert (whose key pub must be) is given, else by subjectKeyIdentifier: the SHA-1 of the key's
// subjectPublicKey bits (RFC 5280 section 4.2.1.2, method 1), what OpenSSL computes for a bare key.
func EncryptOAEP(content []byte, pub *rsa.PublicKey, cert *x509.Certificate, c ContentCipher) ([]byte, error) {
	if pub == nil {
		return nil, errf(BadAlg, "no recipient key")
	}
	if cert != nil {
		if cp, ok := cert.PublicKey.(*rsa.PublicKey); !ok || !cp.Equal(pub) {
			return nil, errf(BadAlg, "the recipient certificate does not hold the recipient key")
		}
	}
	var ski []byte
	if cert == nil {
		spki, err := x509.MarshalPKIXPublicKey(pub)
		if err != nil {
			return nil, err
		}
		var info struct {
			Algorithm asn1.RawValue
			Key       asn1.BitString
		}
		if _, err := asn1.Unmarshal(spki, &info); err != nil {
			return nil, err
		}
		sum := sha1.Sum(info.Key.Bytes)
		ski = sum[:]
	}
	r := oaepRecipient(pub, cert, ski)
	return envelop(content, c, r.wrap, r.ri)
}

// EncryptOAEPTo is EncryptOAEP for several recipients, each named by its certificate (issuer and
// serial number), each able to decrypt the content alone (key recovery agents).
func EncryptOAEPTo(content []byte, certs []*x509.Certificate, c ContentCipher) ([]byte, error) {
	var rs []keyTrans
	for _, cert := range certs {
		pub, ok := cert.PublicKey.(*rsa.PublicKey)
		if !ok {
			return nil, errf(BadAlg, "recipient %s: the key is not RSA", cert.Subject)
		}
		rs = append(rs, oaepRecipient(pub, cert, nil))
	}
	return envelopAll(content, c, rs)
}

// oaepRecipient is an RSAES-OAEP recipient: named by cert's issuer and serial when cert is
// given, else by the subject key identifier ski.
func oaepRecipient(pub *rsa.PublicKey, cert *x509.Certificate, ski []byte) keyTrans {
	sha256Alg := func(b *cryptobyte.Builder) { addAlgorithm(b, oidSHA256, addNULL) }
	return keyTrans{wrap: func(cek []byte) ([]byte, error) {
		return rsa.EncryptOAEP(sha256.New(), rand.Reader, pub, cek, nil)
	}, ri: func(b *cryptobyte.Builder) {
		if cert != nil {
			b.AddASN1Int64(0)
			addIssuerAndSerial(b, cert)
		} else {
			b.AddASN1Int64(2)
			b.AddASN1(tagImplicit0, func(b *cryptobyte.Builder) { b.AddBytes(ski) })
		}
		addAlgorithm(b, oidRSAESOAEP, func(b *cryptobyte.Builder) {
			b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) { // RSAES-OAEP-params
				b.AddASN1(tagExplicit0, sha256Alg)                    // hashFunc
				b.AddASN1(tagExplicit1, func(b *cryptobyte.Builder) { // maskGenFunc
					addAlgorithm(b, oidMGF1, sha256Alg)
				})
			})
		})
	}}
}

// keyTrans is one recipient of envelop: wrap encrypts the content-encryption key for it, ri writes
// its KeyTransRecipientInfo fields before encryptedKey (version, rid, keyEncryptionAlgorithm).
type keyTrans struct {
	wrap func(cek []byte) ([]byte, error)
	ri   func(*cryptobyte.Builder)
}

// envelop encrypts content with c under a fresh key, which wrap encrypts for the one recipient whose
// KeyTransRecipientInfo fields before encryptedKey (version, rid, keyEncryptionAlgorithm) ri writes.
func envelop(content []byte, c ContentCipher, wrap func(cek []byte) ([]byte, error), ri func(*cryptobyte.Builder)) ([]byte, error) {
	return envelopAll(content, c, []keyTrans{{wrap, ri}})
}

// envelopAll is envelop for one or more recipients, each getting the same content-encryption key.
func envelopAll(content []byte, c ContentCipher, recipients []keyTrans) ([]byte, error) {
	if len(recipients) == 0 {
		return nil, errf(BadAlg, "no recipient")
	}
	if !c.oid.Equal(oidAES128CBC) && !c.oid.Equal(oidAES256CBC) {
		return nil, fmt.Errorf("cms: content encryption %v: only AES-128-CBC and AES-256-CBC are written", c.oid)
	}
	cek, iv := make([]byte, c.keyLen), make([]byte, aes.BlockSize)
	if _, err := io.ReadFull(rand.Reader, cek); err != nil {
		return nil, err
	}
	if _, err := io.ReadFull(rand.Reader, iv); err != nil {
		return nil, err
	}
	block, err := c.newCBC(cek)
	if err != nil {
		return nil, err
	}
	pad := aes.BlockSize - len(content)%aes.BlockSize
	ciphertext := append(bytes.Clone(content), bytes.Repeat([]byte{byte(pad)}, pad)...)
	cipher.NewCBCEncrypter(block, iv).CryptBlocks(ciphertext, ciphertext)
	encryptedKeys := make([][]byte, len(recipients))
	// RFC 5652 section 6.1: version 0 when every RecipientInfo is version 0, else 2.
	version := int64(0)
	for i, r := range recipients {
		if encryptedKeys[i], err = r.wrap(cek); err != nil {
			return nil, fmt.Errorf("cms: encrypting the content key: %w", err)
		}
		probe := cryptobyte.NewBuilder(nil)
		r.ri(probe)
		head, _ := probe.Bytes()
		if len(head) < 3 || head[0] != 0x02 || head[1] != 1 || head[2] != 0 {
			version = 2
		}
	}
	ris := make([][]byte, len(recipients))
	for i, r := range recipients {
		rb := cryptobyte.NewBuilder(nil)
		rb.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
			r.ri(b)
			b.AddASN1OctetString(encryptedKeys[i])
		})
		if ris[i], err = rb.Bytes(); err != nil {
			return nil, err
		}
	}
	slices.SortFunc(ris, bytes.Compare)
	var b cryptobyte.Builder
	addContentInfo(&b, OIDEnvelopedData, func(b *cryptobyte.Builder) {
		b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
			b.AddASN1Int64(version)
			b.AddASN1(cbasn1.SET, func(b *cryptobyte.Builder) {
				for _, der := range ris { // sorted: DER's SET OF (X.690 section 11.6)
					b.AddBytes(der)
				}
			})
			b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
				b.AddASN1ObjectIdentifier(OIDData)
				addAlgorithm(b, c.oid, func(b *cryptobyte.Builder) { b.AddASN1OctetString(iv) })
				b.AddASN1(tagImplicit0, func(b *cryptobyte.Builder) { b.AddBytes(ciphertext) })
			})
		})
	})
	return b.Bytes()
}
