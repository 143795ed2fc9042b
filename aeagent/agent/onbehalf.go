package agent

import (
	"context"
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/enrollment-appliance/aeappliance/aeagent/wsclient"
	"github.com/enrollment-appliance/aeappliance/proto/certutil"
	"github.com/enrollment-appliance/aeappliance/proto/cmc"
)

// OnBehalfRequest is a request an enrollment agent (a smart-card station, say) makes for another
// account (MS-WCCE enroll on behalf of): CSR is the target's PKCS#10 (its key stays with the
// target, on its card); the agent signs the request with its certificate's key, which may be in
// a PKCS#11 token.
type OnBehalfRequest struct {
	Template  string
	Target    string // the account, as DOMAIN\user
	CSR       []byte
	AgentCert *x509.Certificate
	AgentKey  crypto.Signer
}

// EnrollOnBehalf sends r to the enrollment service the policy names for its template (this
// agent's authentication: kerberos or password) and returns the CA's answer. An issued
// certificate must be for the CSR's key and chain to the trusted roots.
func (a *Agent) EnrollOnBehalf(ctx context.Context, r OnBehalfRequest) (*wsclient.Result, error) {
	if a.cep == nil {
		return nil, errors.New("enrolling on behalf of another account needs kerberos or password authentication")
	}
	if r.Template == "" || strings.TrimSpace(r.Target) == "" || r.AgentCert == nil || r.AgentKey == nil || len(r.CSR) == 0 {
		return nil, errors.New("enrolling on behalf of another account needs a template, a target, the agent's certificate and key, and the target's request")
	}
	if !certutil.PublicKeysEqual(r.AgentCert.PublicKey, r.AgentKey.Public()) {
		return nil, errors.New("the agent's key is not the key of its certificate")
	}
	pol, err := a.cep.GetPolicies(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("fetching the policy: %w", err)
	}
	var t *wsclient.Template
	for i := range pol.Templates {
		if strings.EqualFold(pol.Templates[i].Name, r.Template) {
			t = &pol.Templates[i]
		}
	}
	if t == nil {
		return nil, fmt.Errorf("the policy offers this agent no template %q", r.Template)
	}
	urls := pol.EnrollmentURLs(*t, a.authMode())
	if len(urls) == 0 {
		return nil, fmt.Errorf("no enrollment service with this agent's authentication for template %s", t.Name)
	}
	token, err := cmc.SignOnBehalf(r.CSR, r.Target, nil, r.AgentCert, r.AgentKey)
	if err != nil {
		return nil, err
	}
	var res *wsclient.Result
	for _, u := range urls {
		res, err = a.cep.Issue(ctx, u.URI, token, map[string]string{"CertificateTemplate": t.Name})
		if !unreachable(ctx, err) {
			break
		}
	}
	if err != nil {
		return nil, err
	}
	if res.Status == wsclient.StatusIssued {
		if _, err := verifyIssued(res.Certificate, res.Chain, a.roots, a.now()); err != nil {
			return nil, fmt.Errorf("the issued certificate does not chain to a trusted CA: %w", err)
		}
	}
	return res, nil
}

// verifyIssued checks that cert chains to roots (through chain) at now, for any usage; no name is
// matched, so a logon certificate's critical UPN-only subjectAltName is no obstacle.
func verifyIssued(cert *x509.Certificate, chain []*x509.Certificate, roots *x509.CertPool, now time.Time) ([][]*x509.Certificate, error) {
	inter := x509.NewCertPool()
	for _, c := range chain {
		inter.AddCert(c)
	}
	return certutil.VerifyNameless(cert, x509.VerifyOptions{Roots: roots, Intermediates: inter, CurrentTime: now,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
}
