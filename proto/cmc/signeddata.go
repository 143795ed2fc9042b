package cmc

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"math/big"
)

// Limits on what one request may carry; Windows sends one or two of each.
const (
	maxCertificates = 16
	maxSignerInfos  = 4
)

// contentInfo is RFC 5652 ContentInfo; Content is the [0] EXPLICIT wrapper, kept whole.
type contentInfo struct {
	ContentType asn1.ObjectIdentifier
	Content     asn1.RawValue `asn1:"tag:0"`
}

// signedData is RFC 5652 SignedData. The SETs stay RawValues (see derUnmarshal).
type signedData struct {
	Version          int
	DigestAlgorithms asn1.RawValue
	EncapContentInfo encapContentInfo
	Certificates     asn1.RawValue `asn1:"optional,tag:0"`
	CRLs             asn1.RawValue `asn1:"optional,tag:1"`
	SignerInfos      asn1.RawValue
}

type encapContentInfo struct {
	EContentType asn1.ObjectIdentifier
	EContent     asn1.RawValue `asn1:"optional,tag:0"` // [0] EXPLICIT OCTET STRING, kept whole
}

type signerInfo struct {
	Version            int
	SID                asn1.RawValue
	DigestAlgorithm    pkix.AlgorithmIdentifier
	SignedAttrs        asn1.RawValue `asn1:"optional,tag:0"`
	SignatureAlgorithm pkix.AlgorithmIdentifier
	Signature          []byte
	UnsignedAttrs      asn1.RawValue `asn1:"optional,tag:1"`
}

type issuerAndSerial struct {
	Issuer asn1.RawValue
	Serial *big.Int
}

// parsedSignedData is a SignedData whose structure has been checked but whose signatures have not.
type parsedSignedData struct {
	eContentType asn1.ObjectIdentifier
	eContent     []byte
	certs        []*x509.Certificate
	signers      []signerInfo
}

// parseSignedData parses a ContentInfo holding a SignedData.
func parseSignedData(der []byte) (*parsedSignedData, error) {
	var ci contentInfo
	if err := derUnmarshal(der, &ci, "ContentInfo"); err != nil {
		return nil, err
	}
	if !ci.ContentType.Equal(oidSignedData) {
		return nil, badRequest("ContentInfo type %v is not signedData", ci.ContentType)
	}
	var sd signedData
	if err := derUnmarshal(ci.Content.Bytes, &sd, "SignedData"); err != nil {
		return nil, err
	}
	if sd.Version < 1 || sd.Version > 5 {
		return nil, badRequest("SignedData version %d", sd.Version)
	}
	if !isUniversal(sd.DigestAlgorithms, asn1.TagSet, true) || !isUniversal(sd.SignerInfos, asn1.TagSet, true) {
		return nil, badRequest("SignedData digestAlgorithms or signerInfos is not a SET")
	}
	out := &parsedSignedData{eContentType: sd.EncapContentInfo.EContentType}
	if ec := sd.EncapContentInfo.EContent; len(ec.FullBytes) > 0 {
		var octets []byte
		if err := derUnmarshal(ec.Bytes, &octets, "eContent"); err != nil {
			return nil, err
		}
		out.eContent = octets
	}
	if len(sd.Certificates.FullBytes) > 0 {
		elems, err := elements(sd.Certificates.Bytes, "certificates")
		if err != nil {
			return nil, err
		}
		if len(elems) > maxCertificates {
			return nil, badRequest("%d certificates, at most %d accepted", len(elems), maxCertificates)
		}
		for _, e := range elems {
			if !isUniversal(e, asn1.TagSequence, true) {
				continue // other CertificateChoices (attribute certificates) cannot sign: ignored
			}
			c, err := x509.ParseCertificate(e.FullBytes)
			if err != nil {
				return nil, badRequest("certificate in SignedData: %v", err)
			}
			out.certs = append(out.certs, c)
		}
	}
	elems, err := elements(sd.SignerInfos.Bytes, "signerInfos")
	if err != nil {
		return nil, err
	}
	if len(elems) == 0 {
		return nil, errf(FailBadMessageCheck, "SignedData has no signer")
	}
	if len(elems) > maxSignerInfos {
		return nil, badRequest("%d signers, at most %d accepted", len(elems), maxSignerInfos)
	}
	for _, e := range elems {
		var si signerInfo
		if err := derUnmarshal(e.FullBytes, &si, "SignerInfo"); err != nil {
			return nil, err
		}
		out.signers = append(out.signers, si)
	}
	return out, nil
}

// candidate is a key that may have made a SignerInfo's signature: the request key (cert nil) or the key of a
// certificate.
type candidate struct {
	pub  crypto.PublicKey
	spki []byte // DER SubjectPublicKeyInfo, to compare keys
	cert *x509.Certificate
	skis [][]byte // subject key identifiers that name this key
}

func certCandidate(c *x509.Certificate) candidate {
	return candidate{pub: c.PublicKey, spki: c.RawSubjectPublicKeyInfo, cert: c, skis: [][]byte{c.SubjectKeyId}}
}

// requestCandidate is the PKCS#10's key; Windows names it in the SignerInfo by subjectKeyIdentifier (the
// request's SKI extension, or the SHA-1 of the public key bits, RFC 5280 4.2.1.2 method 1).
func requestCandidate(csr *x509.CertificateRequest) candidate {
	c := candidate{pub: csr.PublicKey, spki: csr.RawSubjectPublicKeyInfo}
	var spki struct {
		Alg pkix.AlgorithmIdentifier
		Key asn1.BitString
	}
	if _, err := asn1.Unmarshal(csr.RawSubjectPublicKeyInfo, &spki); err == nil {
		h := sha1.Sum(spki.Key.Bytes)
		c.skis = append(c.skis, h[:])
	}
	for _, ext := range csr.Extensions {
		var ski []byte
		if ext.Id.Equal(asn1.ObjectIdentifier{2, 5, 29, 14}) {
			if _, err := asn1.Unmarshal(ext.Value, &ski); err == nil {
				c.skis = append(c.skis, ski)
			}
		}
	}
	return c
}

// names reports whether the SignerInfo's sid names this candidate.
func (c candidate) names(sid asn1.RawValue) bool {
	if isUniversal(sid, asn1.TagSequence, true) {
		var ias issuerAndSerial
		if c.cert == nil || derUnmarshal(sid.FullBytes, &ias, "sid") != nil {
			return false
		}
		return bytes.Equal(ias.Issuer.FullBytes, c.cert.RawIssuer) && ias.Serial.Cmp(c.cert.SerialNumber) == 0
	}
	if sid.Class == asn1.ClassContextSpecific && sid.Tag == 0 && !sid.IsCompound {
		for _, ski := range c.skis {
			if len(ski) > 0 && bytes.Equal(ski, sid.Bytes) {
				return true
			}
		}
	}
	return false
}

// verifySigner checks one SignerInfo over content: signed attributes with contentType = eContentType and
// messageDigest = hash(content), and a signature by one of the candidates (those its sid names are tried
// first). It returns the candidate whose key verified.
func verifySigner(si signerInfo, eContentType asn1.ObjectIdentifier, content []byte, cands []candidate) (candidate, error) {
	hash, err := hashFor(si.DigestAlgorithm.Algorithm)
	if err != nil {
		return candidate{}, err
	}
	if len(si.SignedAttrs.FullBytes) == 0 {
		return candidate{}, errf(FailBadMessageCheck, "SignerInfo has no signed attributes (contentType and messageDigest are required)")
	}
	attrs, values, err := parseAttributes(si.SignedAttrs.Bytes, "signed attributes")
	if err != nil {
		return candidate{}, err
	}
	var gotType, gotDigest bool
	for i, a := range attrs {
		for j := 0; j < i; j++ {
			if attrs[j].Type.Equal(a.Type) {
				return candidate{}, badRequest("signed attribute %v appears twice", a.Type)
			}
		}
		switch {
		case a.Type.Equal(oidContentType):
			var ct asn1.ObjectIdentifier
			if len(values[i]) != 1 || derUnmarshal(values[i][0].FullBytes, &ct, "contentType") != nil {
				return candidate{}, badRequest("malformed contentType attribute")
			}
			if !ct.Equal(eContentType) {
				return candidate{}, errf(FailBadMessageCheck, "signed contentType %v does not match eContentType %v", ct, eContentType)
			}
			gotType = true
		case a.Type.Equal(oidMessageDigest):
			var md []byte
			if len(values[i]) != 1 || derUnmarshal(values[i][0].FullBytes, &md, "messageDigest") != nil {
				return candidate{}, badRequest("malformed messageDigest attribute")
			}
			h := hash.New()
			h.Write(content)
			if !bytes.Equal(md, h.Sum(nil)) {
				return candidate{}, errf(FailBadMessageCheck, "messageDigest does not match the content")
			}
			gotDigest = true
		}
	}
	if !gotType || !gotDigest {
		return candidate{}, errf(FailBadMessageCheck, "signed attributes lack contentType or messageDigest")
	}
	// The signature covers the signed attributes re-tagged as a universal SET OF (RFC 5652 5.4).
	signed := append([]byte{0x31}, si.SignedAttrs.FullBytes[1:]...)

	ordered := make([]candidate, 0, len(cands))
	for _, c := range cands {
		if c.names(si.SID) {
			ordered = append(ordered, c)
		}
	}
	for _, c := range cands {
		if !c.names(si.SID) {
			ordered = append(ordered, c)
		}
	}
	var lastErr error = errf(FailBadMessageCheck, "no key to verify the SignerInfo with")
	for _, c := range ordered {
		if err := verifySignature(c.pub, si.SignatureAlgorithm.Algorithm, hash, signed, si.Signature); err != nil {
			lastErr = err
			continue
		}
		return c, nil
	}
	var e *Error
	if errors.As(lastErr, &e) && e.FailInfo == FailBadAlg {
		return candidate{}, lastErr
	}
	return candidate{}, errf(FailBadMessageCheck, "SignerInfo signature does not verify with the request key or any certificate it names")
}

func hashFor(oid asn1.ObjectIdentifier) (crypto.Hash, error) {
	switch {
	case oid.Equal(oidSHA1):
		// Windows still signs CMC with SHA-1 by default (MS-WCCE examples); the signer signs its own request,
		// so a collision gains an attacker nothing it could not sign directly.
		return crypto.SHA1, nil
	case oid.Equal(oidSHA256):
		return crypto.SHA256, nil
	case oid.Equal(oidSHA384):
		return crypto.SHA384, nil
	case oid.Equal(oidSHA512):
		return crypto.SHA512, nil
	}
	return 0, errf(FailBadAlg, "unsupported digest algorithm %v", oid)
}

// signatureAlgorithms are the SignerInfo signature algorithms accepted. hash 0 means the OID names only the
// key type (rsaEncryption, as Windows writes it, or id-ecPublicKey), and digestAlgorithm decides.
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

// verifySignature checks sig over signed with pub, for the SignerInfo's signatureAlgorithm alg and the hash
// of its digestAlgorithm.
func verifySignature(pub crypto.PublicKey, alg asn1.ObjectIdentifier, hash crypto.Hash, signed, sig []byte) error {
	key := ""
	for _, a := range signatureAlgorithms {
		if a.oid.Equal(alg) {
			if a.hash != 0 && a.hash != hash {
				return errf(FailBadAlg, "signature algorithm %v disagrees with the digest algorithm", alg)
			}
			key = a.key
		}
	}
	digest := func() []byte {
		h := hash.New()
		h.Write(signed)
		return h.Sum(nil)
	}
	switch key {
	case "RSA":
		k, ok := pub.(*rsa.PublicKey)
		if !ok || rsa.VerifyPKCS1v15(k, hash, digest(), sig) != nil {
			return errf(FailBadMessageCheck, "RSA signature does not verify")
		}
		return nil
	case "ECDSA":
		k, ok := pub.(*ecdsa.PublicKey)
		if !ok || !ecdsa.VerifyASN1(k, digest(), sig) {
			return errf(FailBadMessageCheck, "ECDSA signature does not verify")
		}
		return nil
	case "Ed25519":
		// RFC 8419: pure Ed25519 over the signed attributes; digestAlgorithm (SHA-512) only for messageDigest.
		k, ok := pub.(ed25519.PublicKey)
		if !ok || !ed25519.Verify(k, signed, sig) {
			return errf(FailBadMessageCheck, "Ed25519 signature does not verify")
		}
		return nil
	}
	return errf(FailBadAlg, "unsupported signature algorithm %v", alg)
}
