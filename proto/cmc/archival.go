package cmc

import (
	"bytes"
	"crypto"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"fmt"

	"github.com/enrollment-appliance/aeappliance/proto/cms"
)

// Key archival requests (MS-WCCE 3.1.1.4.3.6): the client encrypts its private key (an RSA
// private key BLOB, 2.2.2.9.1) to the CA exchange certificate in a CMS EnvelopedData, which it
// puts in the szOID_ARCHIVED_KEY_ATTR unsigned attribute of the only SignerInfo of a CMC request,
// signed with the key being certified; the signed PKIData carries the hash of that attribute
// value (szOID_ENCRYPTED_KEY_HASH), which is what binds the unsigned envelope to the signature.
var (
	// szOID_ARCHIVED_KEY_ATTR (MS-WCCE 2.2.2.7.8).
	oidArchivedKey = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 311, 21, 13}
	// szOID_ENCRYPTED_KEY_HASH (MS-WCCE 2.2.2.7.9).
	oidEncryptedKeyHash = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 311, 21, 21}
	// szOID_ISSUED_CERT_HASH: the SHA-1 of the issued certificate in a full response
	// (MS-WCCE 3.2.1.4.2.1.4.8.2).
	oidIssuedCertHash = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 311, 21, 17}
)

// setEncryptedKeyHash records the value of a szOID_ENCRYPTED_KEY_HASH attribute (an OCTET STRING),
// bare in the controls or inside Windows' CmcAddAttributes.
func setEncryptedKeyHash(r *Request, values [][]byte) error {
	if len(values) != 1 || r.EncryptedKeyHash != nil {
		return badRequest("the encrypted key hash must be given once, with one value")
	}
	var h []byte
	if err := derUnmarshal(values[0], &h, "encrypted key hash"); err != nil {
		return err
	}
	if len(h) < 20 || len(h) > 64 {
		return badRequest("an encrypted key hash of %d bytes", len(h))
	}
	r.EncryptedKeyHash = h
	return nil
}

// checkArchivedKey finds the archived key of a verified SignedData request, checks how it came
// (MS-WCCE 3.2.2.6.2.1.2.2) and sets r.ArchivedKey and r.KeyHash: one szOID_ARCHIVED_KEY_ATTR
// with one value, a ContentInfo EnvelopedData; only in a CMC request (not a renewal) with a single
// signer, the request key; its hash, under the signature's digest, the PKCS#10's signature hash
// or SHA-1, equal to the signed szOID_ENCRYPTED_KEY_HASH. A key hash without an archived key is
// refused as well.
func checkArchivedKey(sd *cms.SignedData, r *Request, c *csrInfo) error {
	var value []byte
	var signer *cms.SignerInfo
	for i := range sd.SignerInfos {
		for _, a := range sd.SignerInfos[i].UnsignedAttrs {
			if !a.Type.Equal(oidArchivedKey) {
				continue
			}
			if len(a.Values) != 1 || value != nil {
				return badRequest("more than one archived key in the request")
			}
			value, signer = a.Values[0], &sd.SignerInfos[i]
		}
	}
	switch {
	case value == nil && r.EncryptedKeyHash != nil:
		return badRequest("the request carries an encrypted key hash but no archived key")
	case value == nil:
		return nil
	case r.BodyPartID == 0 || c.renewal != nil:
		return badRequest("an archived key comes only in a CMC request for a new certificate (MS-WCCE 3.1.1.4.3.6.1)")
	case len(sd.SignerInfos) != 1 || !r.SignerIsRequestKey:
		return badRequest("a request carrying an archived key must be signed by the request key alone")
	case r.EncryptedKeyHash == nil:
		return badRequest("the archived key comes without the signed szOID_ENCRYPTED_KEY_HASH that binds it to the request")
	}
	if _, err := cms.ParseEnvelopedData(value); err != nil {
		return badRequest("the archived key is not a CMS EnvelopedData: %v", err)
	}
	var candidates []crypto.Hash
	if h, err := signer.Hash(); err == nil {
		candidates = append(candidates, h)
	}
	if h := csrHash(c.req.SignatureAlgorithm); h != 0 {
		candidates = append(candidates, h)
	}
	candidates = append(candidates, crypto.SHA1) // what Windows Server 2003 clients and CAs use (MS-WCCE <128>)
	for _, h := range candidates {
		d := h.New()
		d.Write(value)
		if bytes.Equal(d.Sum(nil), r.EncryptedKeyHash) {
			r.ArchivedKey, r.KeyHash = value, h
			return nil
		}
	}
	return errf(FailBadMessageCheck, "the encrypted key hash does not match the archived key")
}

// csrHash is the hash of a PKCS#10 signature algorithm (0 for Ed25519 or an unknown one).
func csrHash(a x509.SignatureAlgorithm) crypto.Hash {
	switch a {
	case x509.SHA1WithRSA, x509.ECDSAWithSHA1:
		return crypto.SHA1
	case x509.SHA256WithRSA, x509.SHA256WithRSAPSS, x509.ECDSAWithSHA256:
		return crypto.SHA256
	case x509.SHA384WithRSA, x509.SHA384WithRSAPSS, x509.ECDSAWithSHA384:
		return crypto.SHA384
	case x509.SHA512WithRSA, x509.SHA512WithRSAPSS, x509.ECDSAWithSHA512:
		return crypto.SHA512
	}
	return 0
}

// EncryptKey writes key as the client archives it (MS-WCCE 3.1.1.4.3.6.1 step 2): its RSA private
// key BLOB in a CMS EnvelopedData (AES-256-CBC, the content key transported with RSA PKCS#1 v1.5)
// to the CA exchange certificate, which must hold an RSA key.
func EncryptKey(key *rsa.PrivateKey, exchange *x509.Certificate) ([]byte, error) {
	blob, err := MarshalKeyBlob(key)
	if err != nil {
		return nil, err
	}
	defer clear(blob)
	return cms.Encrypt(blob, exchange, cms.AES256CBC)
}

// SignArchival builds a key archival request (MS-WCCE 3.1.1.4.3.6.1) as Windows sends it: a CMC
// PKIData holding csr (bodyPartID 1) and, in a CmcAddAttributes control (bodyPartID 2), the
// SHA-256 of envelope (the EncryptKey of the request's key); signed by key, the request's own RSA
// key, named by its subject key identifier, with envelope as the szOID_ARCHIVED_KEY_ATTR unsigned
// attribute. The CA refuses it unless envelope holds the private key of csr.
func SignArchival(csr []byte, key crypto.Signer, envelope []byte) ([]byte, error) {
	req, err := x509.ParseCertificateRequest(csr)
	if err != nil {
		return nil, fmt.Errorf("cmc: the request to archive a key with: %w", err)
	}
	if _, ok := key.Public().(*rsa.PublicKey); !ok || !bytes.Equal(mustSPKI(key.Public()), req.RawSubjectPublicKeyInfo) {
		return nil, errors.New("cmc: a key archival request is signed by the request's own RSA key")
	}
	if _, err := cms.ParseEnvelopedData(envelope); err != nil {
		return nil, fmt.Errorf("cmc: the archived key: %w", err)
	}
	h := crypto.SHA256.New() // the signer's digest: cms signs RSA with SHA-256
	h.Write(envelope)
	hashValue, err := asn1.Marshal(h.Sum(nil))
	if err != nil {
		return nil, err
	}
	ctrl, err := addAttributesControl(2, 1, cms.Attribute{Type: oidEncryptedKeyHash, Values: [][]byte{hashValue}})
	if err != nil {
		return nil, err
	}
	pd, err := newPKIData(csr, ctrl)
	if err != nil {
		return nil, err
	}
	return cms.NewSignedData(cms.SignOptions{ContentType: oidPKIData, Content: pd, Signer: key,
		SignerKeyID: keyID(req.RawSubjectPublicKeyInfo), UnsignedAttributes: []cms.Attribute{{Type: oidArchivedKey, Values: [][]byte{envelope}}}})
}

func mustSPKI(pub crypto.PublicKey) []byte {
	b, _ := x509.MarshalPKIXPublicKey(pub)
	return b
}

// keyID is the SHA-1 of a SubjectPublicKeyInfo's key bits (RFC 5280 section 4.2.1.2, method 1).
func keyID(spki []byte) []byte {
	var s struct {
		Alg pkix.AlgorithmIdentifier
		Key asn1.BitString
	}
	if _, err := asn1.Unmarshal(spki, &s); err != nil {
		return nil
	}
	h := sha1.Sum(s.Key.Bytes)
	return h[:]
}

// ResponseKeyHash returns the szOID_ENCRYPTED_KEY_HASH a CMC full response carries (in its
// CmcAddAttributes control), or nil when it carries none: a client that archived its key checks
// that the CA says it took that key (MS-WCCE 3.2.1.4.2.1.4.8.2). The response's signature is not
// checked here.
func ResponseKeyHash(der []byte) ([]byte, error) {
	sd, err := cms.ParseSignedData(der)
	if err != nil {
		return nil, err
	}
	if !sd.ContentType.Equal(oidPKIResponse) {
		return nil, nil
	}
	var pr struct{ Controls, CMS, OtherMsgs asn1.RawValue }
	if err := derUnmarshal(sd.Content, &pr, "PKIResponse"); err != nil {
		return nil, err
	}
	controls, err := elements(pr.Controls.Bytes, "controlSequence")
	if err != nil {
		return nil, err
	}
	for _, e := range controls {
		var ta taggedAttribute
		if err := derUnmarshal(e.FullBytes, &ta, "TaggedAttribute"); err != nil {
			return nil, err
		}
		if !ta.Type.Equal(oidCMCAddAttributes) {
			continue
		}
		values, err := elements(ta.Values.Bytes, "control values")
		if err != nil {
			return nil, err
		}
		for _, v := range values {
			var aa cmcAddAttributes
			if err := derUnmarshal(v.FullBytes, &aa, "CmcAddAttributes"); err != nil {
				return nil, err
			}
			attrs, err := cms.ParseAttributes(aa.Attributes.Bytes)
			if err != nil {
				return nil, err
			}
			if a, ok := cms.FindAttribute(attrs, oidEncryptedKeyHash); ok {
				var h []byte
				if err := derUnmarshal(a.Values[0], &h, "encrypted key hash"); err != nil {
					return nil, err
				}
				return h, nil
			}
		}
	}
	return nil, nil
}
