package enrollsvc

import (
	"bytes"
	"context"
	"crypto/x509"
	"fmt"
	"strings"

	"github.com/enrollment-appliance/aeappliance/enrollsvc/policy"
	"github.com/enrollment-appliance/aeappliance/enrollsvc/store"
	"github.com/enrollment-appliance/aeappliance/ldap"
	"github.com/enrollment-appliance/aeappliance/ldap/secdesc"
	"github.com/enrollment-appliance/aeappliance/proto/certutil"
)

// RenewRequest is a renewal: a new request signed with the key of a certificate this CA issued
// (the signature has been verified by the protocol edge).
type RenewRequest struct {
	OldCert   *x509.Certificate
	CSR       []byte                 // DER PKCS#10 for the new certificate
	Template  string                 // the template the request names, if any
	Requester string                 // the authenticated caller
	SCEP      *store.SCEPTransaction // the SCEP transaction the renewal came with: Meta.SCEP
}

// Renew issues the renewal of a certificate. It is for the old certificate's account and
// template, whoever sends it (possession of the old key is what counts), and only for a
// certificate this CA issued that is in the store, not revoked and not expired. Policy then
// decides as for any request: the account must still be allowed the template.
func (s *Service) Renew(ctx context.Context, rr RenewRequest) (*EnrollResult, error) {
	if rr.OldCert == nil {
		return nil, &Error{Kind: KindBadRequest, Op: "renewing", Err: fmt.Errorf("no certificate to renew")}
	}
	serial := certutil.SerialString(rr.OldCert.SerialNumber)
	meta := Meta{Requester: "renewal by " + rr.Requester, Template: rr.Template, CSR: rr.CSR, SCEP: rr.SCEP}
	if err := rr.OldCert.CheckSignatureFrom(s.issuer.CACert()); err != nil {
		return s.refuse(ctx, meta, []string{"the certificate being renewed (serial " + serial + ") was not issued by this CA"}, nil)
	}
	sc, err := s.store.GetCertificate(ctx, serial)
	if err != nil && KindOf(err) != KindNotFound {
		return nil, &Error{Kind: KindInternal, Op: "renewing serial " + serial, Err: err}
	}
	if err != nil || !bytes.Equal(sc.DER, rr.OldCert.Raw) {
		return s.refuse(ctx, meta, []string{"the certificate being renewed (serial " + serial + ") is not one this CA recorded"}, nil)
	}
	meta.Account = sc.Account
	now := s.rec.Now()
	var reasons []string
	switch {
	case sc.Status == store.CertRevoked:
		reasons = append(reasons, "the certificate being renewed (serial "+serial+") is revoked")
	case !now.Before(sc.NotAfter):
		reasons = append(reasons, "the certificate being renewed (serial "+serial+") expired at "+sc.NotAfter.UTC().Format("2006-01-02 15:04:05Z")+"; enroll anew")
	case now.Before(sc.NotBefore):
		reasons = append(reasons, "the certificate being renewed (serial "+serial+") is not valid yet")
	}
	if rr.Template != "" && !strings.EqualFold(rr.Template, sc.Template) {
		reasons = append(reasons, fmt.Sprintf("the request renews a %s certificate for template %s; a renewal keeps the template", sc.Template, rr.Template))
	}
	if reasons != nil {
		meta.Template = sc.Template
		return s.refuse(ctx, meta, reasons, nil)
	}
	if dc, err := s.directory("renewing"); err == nil {
		if t, _, err := s.template(ctx, dc, sc.Template); err == nil && t != nil && t.PrivateKeyFlags&policy.PrivateKeyRequireSameKeyRenewal != 0 {
			csr, err := x509.ParseCertificateRequest(rr.CSR)
			if err != nil {
				return nil, &Error{Kind: KindBadRequest, Op: "reading the renewal request", Err: err}
			}
			if !certutil.PublicKeysEqual(rr.OldCert.PublicKey, csr.PublicKey) {
				meta.Template = sc.Template
				return s.refuse(ctx, meta, []string{"template " + sc.Template + " requires renewal with the same key (REQUIRE_SAME_KEY_RENEWAL)"}, nil)
			}
		}
	}
	account, err := holder(rr.OldCert, sc)
	if err != nil {
		meta.Template = sc.Template
		return s.refuse(ctx, meta, []string{"the certificate being renewed (serial " + serial + "): " + err.Error()}, nil)
	}
	return s.Enroll(ctx, EnrollRequest{Template: sc.Template, Account: account, Requester: meta.Requester, CSR: rr.CSR,
		Reenrollment: true, SCEP: rr.SCEP})
}

// CertificateAccount authenticates a TLS client certificate: it must be one this CA issued and
// recorded, not revoked and not expired. It returns how to find the account the certificate was
// issued to (by its SID when the certificate carries one, see holder) and the account name recorded
// with the certificate, for people.
func (s *Service) CertificateAccount(ctx context.Context, c *x509.Certificate) (account, name string, err error) {
	op := "authenticating a client certificate"
	if c == nil {
		return "", "", &Error{Kind: KindBadRequest, Op: op, Err: fmt.Errorf("no certificate")}
	}
	serial := certutil.SerialString(c.SerialNumber)
	if err := c.CheckSignatureFrom(s.issuer.CACert()); err != nil {
		return "", "", &Error{Kind: KindRefused, Op: op, Err: fmt.Errorf("serial %s was not issued by this CA", serial)}
	}
	sc, err := s.store.GetCertificate(ctx, serial)
	if err != nil && KindOf(err) != KindNotFound {
		return "", "", &Error{Kind: KindInternal, Op: op, Err: err}
	}
	now := s.rec.Now()
	switch {
	case err != nil || !bytes.Equal(sc.DER, c.Raw):
		return "", "", &Error{Kind: KindRefused, Op: op, Err: fmt.Errorf("serial %s is not a certificate this CA recorded", serial)}
	case sc.Status == store.CertRevoked:
		return "", "", &Error{Kind: KindRefused, Op: op, Err: fmt.Errorf("serial %s is revoked", serial)}
	case !now.Before(sc.NotAfter) || now.Before(sc.NotBefore):
		return "", "", &Error{Kind: KindRefused, Op: op, Err: fmt.Errorf("serial %s is not valid now", serial)}
	case sc.Account == "":
		return "", "", &Error{Kind: KindRefused, Op: op, Err: fmt.Errorf("serial %s was issued to no account", serial)}
	}
	if account, err = holder(c, sc); err != nil {
		return "", "", &Error{Kind: KindRefused, Op: op, Err: fmt.Errorf("serial %s: %w", serial, err)}
	}
	return account, sc.Account, nil
}

// holder names, for Service.account, the object a certificate of this CA was issued to: by the SID
// its security extension carries (KB5014754), so that an account deleted and re-created under the
// same name neither renews nor authenticates with its predecessor's certificates. Without the
// extension (NO_SECURITY_EXTENSION templates, admin profiles) only the recorded account name is left.
func holder(c *x509.Certificate, sc store.Certificate) (string, error) {
	sidText, hasSID, err := policy.CertificateSID(c)
	if err != nil {
		return "", err
	}
	if !hasSID {
		return sc.Account, nil
	}
	sid, err := secdesc.ParseSID(sidText)
	if err != nil {
		return "", err
	}
	return ldap.SIDAccount(sid), nil
}
