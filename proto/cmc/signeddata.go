package cmc

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"encoding/asn1"
	"errors"

	"github.com/enrollment-appliance/aeappliance/proto/cms"
)

// parseSignedData parses a ContentInfo holding a SignedData with at least one signer (package cms checks the
// structure; signatures are checked by verifySigner).
func parseSignedData(der []byte) (*cms.SignedData, error) {
	sd, err := cms.ParseSignedData(der)
	if err != nil {
		return nil, err
	}
	if len(sd.SignerInfos) == 0 {
		return nil, errf(FailBadMessageCheck, "SignedData has no signer")
	}
	return sd, nil
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
	if id := keyID(csr.RawSubjectPublicKeyInfo); id != nil {
		c.skis = append(c.skis, id)
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
func (c candidate) names(sid cms.Identifier) bool {
	if sid.Issuer != nil {
		return c.cert != nil && sid.Matches(c.cert)
	}
	for _, ski := range c.skis {
		if len(ski) > 0 && bytes.Equal(ski, sid.SubjectKeyID) {
			return true
		}
	}
	return false
}

// verifySigner checks one SignerInfo over content: signed attributes with contentType = eContentType and
// messageDigest = hash(content), and a signature by one of the candidates (those its sid names are tried
// first). It returns the candidate whose key verified.
func verifySigner(si *cms.SignerInfo, eContentType asn1.ObjectIdentifier, content []byte, cands []candidate) (candidate, error) {
	if err := si.CheckAttributes(eContentType, content); err != nil {
		return candidate{}, err
	}
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
		if err := si.VerifySignature(c.pub); err != nil {
			lastErr = err
			continue
		}
		return c, nil
	}
	var e *cms.Error
	if errors.As(lastErr, &e) && e.Kind == cms.BadAlg {
		return candidate{}, lastErr
	}
	return candidate{}, errf(FailBadMessageCheck, "SignerInfo signature does not verify with the request key or any certificate it names")
}
