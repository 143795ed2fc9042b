package revoke

import (
	"crypto"
	"encoding/asn1"
	"errors"
	"fmt"
	"math/big"

	"golang.org/x/crypto/cryptobyte"
	casn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// ocspRequest is what Respond needs of an OCSPRequest (RFC 6960 4.1.1).
type ocspRequest struct {
	certIDs []certID
	// nonce is the extnValue of the nonce extension, echoed as it is; nil when absent.
	nonce []byte
}

// certID is one requested certificate.
type certID struct {
	raw               []byte      // the DER CertID, repeated in the answer
	hash              crypto.Hash // 0 for a hash algorithm not listed in certIDHashes
	nameHash, keyHash []byte
	serial            *big.Int
}

const (
	// maxCertIDs bounds the single requests of one OCSP request (each costs a store lookup).
	maxCertIDs = 16
	// RFC 8954 2.1: a nonce is 1 to 32 octets.
	minNonce, maxNonce = 1, 32
)

var (
	oidNonce = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 48, 1, 2}
	// certIDHashes are the CertID hash algorithms the responder recognises.
	certIDHashes = map[string]crypto.Hash{
		"1.3.14.3.2.26":          crypto.SHA1,
		"2.16.840.1.101.3.4.2.1": crypto.SHA256,
		"2.16.840.1.101.3.4.2.2": crypto.SHA384,
		"2.16.840.1.101.3.4.2.3": crypto.SHA512,
	}
	errMalformed = errors.New("malformed OCSP request")
)

// parseRequest parses a DER OCSPRequest strictly enough to answer it: version 1, one to
// maxCertIDs CertIDs, at most one nonce of 1 to 32 octets, no critical extension other than the
// nonce. A signature, the requestorName and non-critical extensions are skipped: requests need not
// be signed, and a signature is not checked.
func parseRequest(der []byte) (*ocspRequest, error) {
	in := cryptobyte.String(der)
	var req, tbs, list cryptobyte.String
	var version int64
	if !in.ReadASN1(&req, casn1.SEQUENCE) || !in.Empty() ||
		!req.ReadASN1(&tbs, casn1.SEQUENCE) ||
		!req.SkipOptionalASN1(casn1.Tag(0).Constructed().ContextSpecific()) || !req.Empty() ||
		!tbs.ReadOptionalASN1Integer(&version, casn1.Tag(0).Constructed().ContextSpecific(), int64(0)) ||
		!tbs.SkipOptionalASN1(casn1.Tag(1).Constructed().ContextSpecific()) ||
		!tbs.ReadASN1(&list, casn1.SEQUENCE) {
		return nil, errMalformed
	}
	if version != 0 {
		return nil, fmt.Errorf("%w: version %d", errMalformed, version+1)
	}
	out := &ocspRequest{}
	for !list.Empty() {
		if len(out.certIDs) == maxCertIDs {
			return nil, fmt.Errorf("%w: more than %d certificates", errMalformed, maxCertIDs)
		}
		var one, raw cryptobyte.String
		if !list.ReadASN1(&one, casn1.SEQUENCE) || !one.ReadASN1Element(&raw, casn1.SEQUENCE) {
			return nil, errMalformed
		}
		id, err := parseCertID(raw)
		if err != nil {
			return nil, err
		}
		if _, _, err := readExtensions(&one, 0, nil); err != nil {
			return nil, err
		}
		if !one.Empty() {
			return nil, errMalformed
		}
		out.certIDs = append(out.certIDs, id)
	}
	if len(out.certIDs) == 0 {
		return nil, fmt.Errorf("%w: no certificate", errMalformed)
	}
	nonce, hasNonce, err := readExtensions(&tbs, 2, oidNonce)
	if err != nil {
		return nil, err
	}
	if !tbs.Empty() {
		return nil, errMalformed
	}
	if hasNonce {
		n := len(nonce)
		v := cryptobyte.String(nonce)
		var inner cryptobyte.String
		if v.ReadASN1(&inner, casn1.OCTET_STRING) && v.Empty() {
			n = len(inner) // the usual form: the nonce in an OCTET STRING inside extnValue
		}
		if n < minNonce || n > maxNonce {
			return nil, fmt.Errorf("%w: nonce of %d octets", errMalformed, n)
		}
		out.nonce = append([]byte(nil), nonce...)
	}
	return out, nil
}

// parseCertID parses a CertID (RFC 6960 4.1.1). An unknown hash algorithm is not an error (the
// CertID cannot name our CA: unauthorized); parameters other than absent or NULL are.
func parseCertID(raw cryptobyte.String) (certID, error) {
	id := certID{raw: append([]byte(nil), raw...), serial: new(big.Int)}
	var seq, alg cryptobyte.String
	var oid asn1.ObjectIdentifier
	if !raw.ReadASN1(&seq, casn1.SEQUENCE) ||
		!seq.ReadASN1(&alg, casn1.SEQUENCE) || !alg.ReadASN1ObjectIdentifier(&oid) ||
		!(alg.Empty() || alg.SkipASN1(casn1.NULL) && alg.Empty()) ||
		!seq.ReadASN1Bytes(&id.nameHash, casn1.OCTET_STRING) ||
		!seq.ReadASN1Bytes(&id.keyHash, casn1.OCTET_STRING) ||
		!seq.ReadASN1Integer(id.serial) || !seq.Empty() {
		return certID{}, fmt.Errorf("%w: bad CertID", errMalformed)
	}
	id.hash = certIDHashes[oid.String()]
	return id, nil
}

// readExtensions reads an optional [tag] EXPLICIT Extensions field from s and returns the
// extnValue of the extension want and whether it is there. A repeated extension, or a critical
// one other than want, is an error.
func readExtensions(s *cryptobyte.String, tag uint8, want asn1.ObjectIdentifier) (value []byte, found bool, err error) {
	var field, exts cryptobyte.String
	var present bool
	if !s.ReadOptionalASN1(&field, &present, casn1.Tag(tag).Constructed().ContextSpecific()) {
		return nil, false, errMalformed
	}
	if !present {
		return nil, false, nil
	}
	if !field.ReadASN1(&exts, casn1.SEQUENCE) || !field.Empty() {
		return nil, false, errMalformed
	}
	var seen []asn1.ObjectIdentifier
	for !exts.Empty() {
		var ext cryptobyte.String
		var oid asn1.ObjectIdentifier
		var critical bool
		var v []byte
		if !exts.ReadASN1(&ext, casn1.SEQUENCE) || !ext.ReadASN1ObjectIdentifier(&oid) ||
			ext.PeekASN1Tag(casn1.BOOLEAN) && !ext.ReadASN1Boolean(&critical) || // critical DEFAULT FALSE
			!ext.ReadASN1Bytes(&v, casn1.OCTET_STRING) || !ext.Empty() {
			return nil, false, errMalformed
		}
		for _, o := range seen {
			if o.Equal(oid) {
				return nil, false, fmt.Errorf("%w: extension %v twice", errMalformed, oid)
			}
		}
		seen = append(seen, oid)
		switch {
		case want != nil && oid.Equal(want):
			value, found = v, true
		case critical:
			return nil, false, fmt.Errorf("%w: unsupported critical extension %v", errMalformed, oid)
		}
	}
	return value, found, nil
}
