package revocation

import (
	"bytes"
	"context"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net/http"
	"slices"
	"time"

	"golang.org/x/crypto/cryptobyte"
	casn1 "golang.org/x/crypto/cryptobyte/asn1"
)

var (
	oidAuthorityKeyID = asn1.ObjectIdentifier{2, 5, 29, 35}
	oidCRLNumber      = asn1.ObjectIdentifier{2, 5, 29, 20}
	oidDeltaCRL       = asn1.ObjectIdentifier{2, 5, 29, 27}
	oidIssuingDP      = asn1.ObjectIdentifier{2, 5, 29, 28}
)

// crlInfo is what is kept of a verified CRL.
type crlInfo struct {
	issuer     []byte // Raw of the certificate that verified it
	nextUpdate time.Time
	scope      idp
	entries    []crlEntry // sorted by serial
}

type crlEntry struct {
	serial    *big.Int
	revokedAt time.Time
	reason    int
	critical  asn1.ObjectIdentifier // first critical extension of the entry, if any
}

// checkCRL looks cert up in the CRL at u, from the cache or fetched. It returns an error for
// anything but a verified Good or Revoked.
func (c *Checker) checkCRL(ctx context.Context, u string, cert, issuer *x509.Certificate) (Result, error) {
	now := c.now()
	crl := c.cachedCRL(u, issuer, now)
	if crl == nil {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
		if err != nil {
			return Result{}, fmt.Errorf("building the CRL request: %w", err)
		}
		limit := c.MaxCRL
		if limit <= 0 {
			limit = defaultMaxCRL
		}
		body, err := c.fetch(req, limit)
		if err != nil {
			return Result{}, fmt.Errorf("fetching the CRL: %w", err)
		}
		if crl, err = parseCRL(body, issuer, now); err != nil {
			return Result{}, err
		}
		c.storeCRL(u, crl, now)
	}
	if err := crl.scope.covers(cert); err != nil {
		return Result{}, fmt.Errorf("the CRL does not cover the certificate: %w", err)
	}
	i, found := slices.BinarySearchFunc(crl.entries, cert.SerialNumber, func(e crlEntry, s *big.Int) int {
		return e.serial.Cmp(s)
	})
	if !found {
		return Result{Status: Good, Reason: NoReason}, nil
	}
	e := crl.entries[i]
	if e.critical != nil {
		return Result{}, fmt.Errorf("the CRL entry for the certificate has a critical extension %s that is not understood", e.critical)
	}
	return Result{Status: Revoked, Reason: e.reason, RevokedAt: e.revokedAt}, nil
}

// parseCRL parses a DER or PEM CRL and checks that issuer issued it and that it is current.
func parseCRL(body []byte, issuer *x509.Certificate, now time.Time) (*crlInfo, error) {
	der := body
	if trimmed := bytes.TrimSpace(body); bytes.HasPrefix(trimmed, []byte("-----BEGIN")) {
		block, _ := pem.Decode(trimmed)
		if block == nil || block.Type != "X509 CRL" {
			return nil, errors.New("parsing the CRL: a PEM file without an X509 CRL block")
		}
		der = block.Bytes
	}
	rl, err := x509.ParseRevocationList(der)
	if err != nil {
		return nil, fmt.Errorf("parsing the CRL: %w", err)
	}
	if !bytes.Equal(rl.RawIssuer, issuer.RawSubject) {
		return nil, fmt.Errorf("the CRL is issued by %q, not by the certificate's issuer %q", rl.Issuer, issuer.Subject)
	}
	if err := rl.CheckSignatureFrom(issuer); err != nil {
		return nil, fmt.Errorf("verifying the CRL signature: %w", err)
	}
	if rl.ThisUpdate.After(now.Add(clockSkew)) {
		return nil, fmt.Errorf("the CRL is from the future: thisUpdate %s", rl.ThisUpdate.Format(time.RFC3339))
	}
	if !rl.NextUpdate.IsZero() && now.After(rl.NextUpdate) {
		return nil, fmt.Errorf("the CRL is stale: nextUpdate %s has passed", rl.NextUpdate.Format(time.RFC3339))
	}
	crl := &crlInfo{issuer: issuer.Raw, nextUpdate: rl.NextUpdate}
	for _, ext := range rl.Extensions {
		switch {
		case ext.Id.Equal(oidDeltaCRL):
			return nil, errors.New("a delta CRL, not a full CRL")
		case ext.Id.Equal(oidIssuingDP):
			if crl.scope, err = parseIDP(ext.Value); err != nil {
				return nil, fmt.Errorf("parsing the CRL's issuing distribution point: %w", err)
			}
		case ext.Critical && !ext.Id.Equal(oidAuthorityKeyID) && !ext.Id.Equal(oidCRLNumber):
			return nil, fmt.Errorf("the CRL has a critical extension %s that is not understood", ext.Id)
		}
	}
	crl.entries = make([]crlEntry, len(rl.RevokedCertificateEntries))
	for i, e := range rl.RevokedCertificateEntries {
		crl.entries[i] = crlEntry{serial: e.SerialNumber, revokedAt: e.RevocationTime, reason: e.ReasonCode}
		if j := slices.IndexFunc(e.Extensions, func(x pkix.Extension) bool { return x.Critical }); j >= 0 {
			crl.entries[i].critical = e.Extensions[j].Id
		}
	}
	slices.SortFunc(crl.entries, func(a, b crlEntry) int { return a.serial.Cmp(b.serial) })
	return crl, nil
}

// cachedCRL returns the CRL cached for u if issuer verified it and its nextUpdate has not come.
func (c *Checker) cachedCRL(u string, issuer *x509.Certificate, now time.Time) *crlInfo {
	c.mu.Lock()
	defer c.mu.Unlock()
	crl := c.crls[u]
	if crl == nil || !bytes.Equal(crl.issuer, issuer.Raw) || !now.Before(crl.nextUpdate) {
		return nil
	}
	return crl
}

// storeCRL caches crl under u until its nextUpdate, and drops the CRLs whose nextUpdate has come.
func (c *Checker) storeCRL(u string, crl *crlInfo, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for k, old := range c.crls {
		if !now.Before(old.nextUpdate) {
			delete(c.crls, k)
		}
	}
	if crl.nextUpdate.IsZero() {
		return
	}
	if c.crls == nil {
		c.crls = make(map[string]*crlInfo)
	}
	c.crls[u] = crl
}

// idp is what the issuing distribution point extension of a CRL (RFC 5280 5.2.5) says about the
// certificates it covers; the zero value covers all.
type idp struct {
	named          bool     // a distributionPoint is given: the certificate must name one of uris
	uris           []string // the URIs of its fullName
	onlyUser       bool
	onlyCA         bool
	onlySomeReason bool
	indirect       bool
	onlyAttr       bool
}

// covers says why a CRL with this issuing distribution point cannot answer for cert, or nil.
func (p idp) covers(cert *x509.Certificate) error {
	switch {
	case p.onlySomeReason:
		return errors.New("it holds only some revocation reasons")
	case p.indirect:
		return errors.New("an indirect CRL")
	case p.onlyAttr:
		return errors.New("it holds only attribute certificates")
	case p.onlyUser && cert.IsCA:
		return errors.New("it holds only end-entity certificates and this is a CA")
	case p.onlyCA && !cert.IsCA:
		return errors.New("it holds only CA certificates and this is an end-entity certificate")
	case p.named && !slices.ContainsFunc(p.uris, func(u string) bool { return slices.Contains(cert.CRLDistributionPoints, u) }):
		return fmt.Errorf("its distribution point %q is none of the certificate's %q", p.uris, cert.CRLDistributionPoints)
	}
	return nil
}

// parseIDP parses the DER value of an issuing distribution point extension:
//
//	IssuingDistributionPoint ::= SEQUENCE {
//	     distributionPoint          [0] DistributionPointName OPTIONAL,
//	     onlyContainsUserCerts      [1] BOOLEAN DEFAULT FALSE,
//	     onlyContainsCACerts        [2] BOOLEAN DEFAULT FALSE,
//	     onlySomeReasons            [3] ReasonFlags OPTIONAL,
//	     indirectCRL                [4] BOOLEAN DEFAULT FALSE,
//	     onlyContainsAttributeCerts [5] BOOLEAN DEFAULT FALSE }
//	DistributionPointName ::= CHOICE {
//	     fullName                [0] GeneralNames,
//	     nameRelativeToCRLIssuer [1] RelativeDistinguishedName }
func parseIDP(der []byte) (idp, error) {
	errMalformed := errors.New("malformed")
	var p idp
	in := cryptobyte.String(der)
	var seq, dpName cryptobyte.String
	if !in.ReadASN1(&seq, casn1.SEQUENCE) || !in.Empty() ||
		!seq.ReadOptionalASN1(&dpName, &p.named, casn1.Tag(0).Constructed().ContextSpecific()) {
		return idp{}, errMalformed
	}
	if p.named {
		var names cryptobyte.String
		if !dpName.ReadASN1(&names, casn1.Tag(0).Constructed().ContextSpecific()) || !dpName.Empty() {
			return idp{}, errors.New("only a fullName distribution point is understood")
		}
		for !names.Empty() {
			var name cryptobyte.String
			var tag casn1.Tag
			if !names.ReadAnyASN1(&name, &tag) {
				return idp{}, errMalformed
			}
			if tag == casn1.Tag(6).ContextSpecific() { // uniformResourceIdentifier
				p.uris = append(p.uris, string(name))
			}
		}
	}
	flags := []struct {
		tag casn1.Tag
		out *bool
	}{{1, &p.onlyUser}, {2, &p.onlyCA}, {3, &p.onlySomeReason}, {4, &p.indirect}, {5, &p.onlyAttr}}
	for _, f := range flags {
		var v cryptobyte.String
		var present bool
		if !seq.ReadOptionalASN1(&v, &present, f.tag.ContextSpecific()) {
			return idp{}, errMalformed
		}
		switch {
		case !present:
		case f.tag == 3: // a BIT STRING: present means some reasons only
			*f.out = true
		case len(v) == 1 && (v[0] == 0 || v[0] == 0xff):
			*f.out = v[0] == 0xff
		default:
			return idp{}, errMalformed
		}
	}
	if !seq.Empty() {
		return idp{}, errMalformed
	}
	return p, nil
}
