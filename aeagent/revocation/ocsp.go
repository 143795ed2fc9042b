package revocation

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"math/big"
	"net/http"
	"slices"
	"time"

	"golang.org/x/crypto/cryptobyte"
	casn1 "golang.org/x/crypto/cryptobyte/asn1"
	"golang.org/x/crypto/ocsp"
)

// checkOCSP asks the responder at u about cert. It returns an error for anything but a verified
// Good or Revoked.
func (c *Checker) checkOCSP(ctx context.Context, u string, cert, issuer *x509.Certificate) (Result, error) {
	der, err := ocsp.CreateRequest(cert, issuer, nil)
	if err != nil {
		return Result{}, fmt.Errorf("building the OCSP request: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(der))
	if err != nil {
		return Result{}, fmt.Errorf("building the OCSP request: %w", err)
	}
	req.Header.Set("Content-Type", "application/ocsp-request")
	req.Header.Set("Accept", "application/ocsp-response")
	body, err := c.fetch(req, maxOCSPResponse)
	if err != nil {
		return Result{}, fmt.Errorf("posting the OCSP request: %w", err)
	}
	resp, err := verifyOCSP(body, cert, issuer, c.now())
	if err != nil {
		return Result{}, err
	}
	switch resp.Status {
	case ocsp.Good:
		return Result{Status: Good, Reason: NoReason}, nil
	case ocsp.Revoked:
		return Result{Status: Revoked, Reason: resp.RevocationReason, RevokedAt: resp.RevokedAt}, nil
	}
	return Result{}, errors.New("the responder does not know the certificate")
}

// verifyOCSP parses an OCSP response about cert and checks who signed it, that it is about cert
// and issuer, and that it is current.
//
// ocsp.ParseResponseForCert is given no issuer: with one, it checks only the signature of a
// delegated responder's certificate (not its name, extended key usage or validity), and it
// rejects a response that embeds the issuer's own certificate unless the issuer is self-signed.
// Without one it verifies the response's signature with the embedded certificate, if any, and
// leaves the rest to us. It matches the serial number only, so the issuer hashes of the CertID
// are checked here.
func verifyOCSP(der []byte, cert, issuer *x509.Certificate, now time.Time) (*ocsp.Response, error) {
	resp, err := ocsp.ParseResponseForCert(der, cert, nil)
	if err != nil {
		return nil, fmt.Errorf("parsing the OCSP response: %w", err)
	}
	switch {
	case resp.Certificate == nil:
		if err := resp.CheckSignatureFrom(issuer); err != nil {
			return nil, fmt.Errorf("verifying the OCSP response signature with the issuer's key: %w", err)
		}
	case bytes.Equal(resp.Certificate.Raw, issuer.Raw):
		// Signed by the issuer, verified by ParseResponseForCert with the embedded copy.
	default:
		if err := checkResponder(resp.Certificate, issuer, now); err != nil {
			return nil, fmt.Errorf("checking the OCSP responder certificate %q: %w", resp.Certificate.Subject, err)
		}
	}
	if err := checkCertID(resp, cert, issuer); err != nil {
		return nil, err
	}
	if resp.ThisUpdate.After(now.Add(clockSkew)) {
		return nil, fmt.Errorf("the OCSP response is from the future: thisUpdate %s", resp.ThisUpdate.Format(time.RFC3339))
	}
	if !resp.NextUpdate.IsZero() && now.After(resp.NextUpdate) {
		return nil, fmt.Errorf("the OCSP response is stale: nextUpdate %s has passed", resp.NextUpdate.Format(time.RFC3339))
	}
	return resp, nil
}

// checkResponder checks that r may sign OCSP responses for issuer's certificates at now
// (RFC 6960 4.2.2.2). The response's signature by r has already been verified.
func checkResponder(r, issuer *x509.Certificate, now time.Time) error {
	if err := issuedBy(r, issuer); err != nil {
		return fmt.Errorf("checking that the certificate's issuer %q issued it: %w", issuer.Subject, err)
	}
	if !slices.Contains(r.ExtKeyUsage, x509.ExtKeyUsageOCSPSigning) {
		return errors.New("it lacks the id-kp-OCSPSigning extended key usage")
	}
	if now.Before(r.NotBefore) || now.After(r.NotAfter) {
		return fmt.Errorf("not valid at %s", now.Format(time.RFC3339))
	}
	return nil
}

// checkCertID checks that the single response that ParseResponseForCert chose, the first with
// cert's serial number, also names issuer's name and key hashes.
func checkCertID(resp *ocsp.Response, cert, issuer *x509.Certificate) error {
	ids, err := certIDs(resp.TBSResponseData)
	if err != nil {
		return fmt.Errorf("parsing the OCSP response: %w", err)
	}
	i := slices.IndexFunc(ids, func(id certID) bool { return id.serial.Cmp(cert.SerialNumber) == 0 })
	if i < 0 {
		return errors.New("parsing the OCSP response: no response for the certificate's serial number")
	}
	// The expected hashes, computed the way a request's CertID is.
	der, err := ocsp.CreateRequest(cert, issuer, &ocsp.RequestOptions{Hash: resp.IssuerHash})
	if err != nil {
		return fmt.Errorf("hashing the issuer for the OCSP CertID: %w", err)
	}
	want, err := ocsp.ParseRequest(der)
	if err != nil {
		return fmt.Errorf("hashing the issuer for the OCSP CertID: %w", err)
	}
	if !bytes.Equal(ids[i].nameHash, want.IssuerNameHash) || !bytes.Equal(ids[i].keyHash, want.IssuerKeyHash) {
		return fmt.Errorf("the OCSP response is about serial number %s of another issuer than %q", cert.SerialNumber, issuer.Subject)
	}
	return nil
}

// certID is the part of an OCSP CertID that ocsp.Response does not expose.
type certID struct {
	nameHash, keyHash []byte
	serial            *big.Int
}

// certIDs returns the CertIDs of the single responses in a DER ResponseData (RFC 6960 4.2.1).
func certIDs(tbs []byte) ([]certID, error) {
	errMalformed := errors.New("malformed ResponseData")
	in := cryptobyte.String(tbs)
	var data, responses cryptobyte.String
	if !in.ReadASN1(&data, casn1.SEQUENCE) || !in.Empty() ||
		!data.SkipOptionalASN1(casn1.Tag(0).Constructed().ContextSpecific()) || // version
		!data.SkipASN1(responderIDTag(data)) ||
		!data.SkipASN1(casn1.GeneralizedTime) || // producedAt
		!data.ReadASN1(&responses, casn1.SEQUENCE) {
		return nil, errMalformed
	}
	var ids []certID
	for !responses.Empty() {
		var single, id cryptobyte.String
		c := certID{serial: new(big.Int)}
		if !responses.ReadASN1(&single, casn1.SEQUENCE) ||
			!single.ReadASN1(&id, casn1.SEQUENCE) ||
			!id.SkipASN1(casn1.SEQUENCE) || // hashAlgorithm
			!id.ReadASN1Bytes(&c.nameHash, casn1.OCTET_STRING) ||
			!id.ReadASN1Bytes(&c.keyHash, casn1.OCTET_STRING) ||
			!id.ReadASN1Integer(c.serial) || !id.Empty() {
			return nil, errMalformed
		}
		ids = append(ids, c)
	}
	return ids, nil
}

// responderIDTag is the tag of the ResponderID at the start of data: byName [1] or byKey [2].
func responderIDTag(data cryptobyte.String) casn1.Tag {
	byKey := casn1.Tag(2).Constructed().ContextSpecific()
	if data.PeekASN1Tag(byKey) {
		return byKey
	}
	return casn1.Tag(1).Constructed().ContextSpecific()
}
