package enrollsvc

import (
	"context"
	"crypto"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"fmt"
	"net"
	"net/url"
	"sort"
	"time"

	"github.com/enrollment-appliance/aeappliance/enrollsvc/events"
	"github.com/enrollment-appliance/aeappliance/enrollsvc/issue"
	"github.com/enrollment-appliance/aeappliance/enrollsvc/store"
)

// Profile is a kind of certificate the core issues without a directory template: what an
// administrator issues from a CSR (server, client) and the appliance's own certificates (its
// TLS servers, the SCEP RA). The profile fixes the key usages, the extended key usages, the
// longest validity and the key rules; a request supplies only names, a key and a validity.
type Profile struct {
	Name string
	// Admin profiles may be asked for by an administrator (API, aectl issue --profile).
	Admin       bool
	ExtKeyUsage []x509.ExtKeyUsage
	// KeyUsage is for RSA keys; for ECDSA keys keyEncipherment and dataEncipherment are left
	// out (RFC 5480 §3, RFC 8813).
	KeyUsage    x509.KeyUsage
	UnknownEKUs []asn1.ObjectIdentifier // extended key usages Go has no name for
	MaxValidity time.Duration
	Key         issue.KeyRules
}

// Profile names.
const (
	ProfileServer = "server" // TLS server authentication (RFC 5280 §4.2.1.12 id-kp-serverAuth)
	ProfileClient = "client" // TLS client authentication (id-kp-clientAuth)
	// The SCEP RA has two keys and two certificates (RFC 8894 §3.5.1): one signs its
	// replies, the other decrypts the requests clients encrypt to it. No key does both: a
	// decryption that answers chosen ciphertexts must not be able to forge the RA's signatures.
	ProfileSCEPRASign    = "scep-ra-sign"    // keyUsage digitalSignature only
	ProfileSCEPRAEncrypt = "scep-ra-encrypt" // keyUsage keyEncipherment only: RSA only
	// ProfileMDMImport is the MDM connector's import key: keys are uploaded encrypted to it
	// (keyUsage keyEncipherment only, RSA), and it decrypts nothing else.
	ProfileMDMImport = "mdm-import"
	// ProfileMDMClient is an MDM's client certificate for the MDM connector's API (TLS client
	// authentication), an alternative to its bearer token.
	ProfileMDMClient = "mdm-client"
	// ProfileCAExchange is the CA exchange certificate (MS-WCCE 3.2.1.4.3.2.15.1): keys clients
	// archive are encrypted to it; keyEncipherment, the CA Exchange EKU, a week at most.
	ProfileCAExchange = "ca-exchange"
)

// OIDCAExchange is szOID_KP_CA_EXCHANGE, the extended key usage of a CA exchange certificate.
var OIDCAExchange = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 311, 21, 5}

// DefaultProfileValidity is the validity of a profile certificate when the request names none.
const DefaultProfileValidity = 365 * 24 * time.Hour

var profiles = map[string]Profile{
	ProfileServer: {Name: ProfileServer, Admin: true, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment, MaxValidity: 3650 * 24 * time.Hour},
	ProfileClient: {Name: ProfileClient, Admin: true, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment, MaxValidity: 3650 * 24 * time.Hour},
	ProfileSCEPRASign: {Name: ProfileSCEPRASign, KeyUsage: x509.KeyUsageDigitalSignature,
		MaxValidity: 5 * 365 * 24 * time.Hour, Key: issue.KeyRules{Algorithm: "RSA"}},
	ProfileSCEPRAEncrypt: {Name: ProfileSCEPRAEncrypt, KeyUsage: x509.KeyUsageKeyEncipherment,
		MaxValidity: 5 * 365 * 24 * time.Hour, Key: issue.KeyRules{Algorithm: "RSA"}},
	ProfileMDMImport: {Name: ProfileMDMImport, KeyUsage: x509.KeyUsageKeyEncipherment,
		MaxValidity: 5 * 365 * 24 * time.Hour, Key: issue.KeyRules{Algorithm: "RSA"}},
	ProfileCAExchange: {Name: ProfileCAExchange, KeyUsage: x509.KeyUsageKeyEncipherment, UnknownEKUs: []asn1.ObjectIdentifier{OIDCAExchange},
		MaxValidity: 8 * 24 * time.Hour, Key: issue.KeyRules{Algorithm: "RSA"}},
	ProfileMDMClient: {Name: ProfileMDMClient, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		KeyUsage: x509.KeyUsageDigitalSignature, MaxValidity: 2 * 365 * 24 * time.Hour},
}

// AdminProfiles are the names of the profiles an administrator may issue from, sorted.
func AdminProfiles() []string {
	var out []string
	for n, p := range profiles {
		if p.Admin {
			out = append(out, n)
		}
	}
	sort.Strings(out)
	return out
}

// ProfileRequest asks for a certificate from a profile.
type ProfileRequest struct {
	Profile        string
	Subject        pkix.Name
	DNSNames       []string
	EmailAddresses []string
	IPAddresses    []net.IP
	URIs           []*url.URL
	PublicKey      crypto.PublicKey
	// Validity 0 means DefaultProfileValidity; more than the profile's MaxValidity is refused.
	Validity time.Duration
	// Meta.Template empty means the profile's name.
	Meta Meta
}

// order turns r into the order for the gate under profile p.
func (p Profile) order(r ProfileRequest) (issue.Order, error) {
	v := r.Validity
	if v == 0 {
		v = DefaultProfileValidity
	}
	if v < 0 || v > p.MaxValidity {
		return issue.Order{}, fmt.Errorf("validity of %d days: profile %s allows 1 to %d", v/(24*time.Hour), p.Name, p.MaxValidity/(24*time.Hour))
	}
	ku := p.KeyUsage
	if _, ok := r.PublicKey.(*rsa.PublicKey); !ok {
		ku &^= x509.KeyUsageKeyEncipherment | x509.KeyUsageDataEncipherment
	}
	return issue.Order{Subject: r.Subject, DNSNames: r.DNSNames, EmailAddresses: r.EmailAddresses,
		IPAddresses: r.IPAddresses, URIs: r.URIs, PublicKey: r.PublicKey, Key: p.Key, Validity: v,
		KeyUsage: ku, ExtKeyUsage: p.ExtKeyUsage, UnknownEKUs: p.UnknownEKUs}, nil
}

// IssueProfile issues a certificate from one of the core's profiles through the issuance gate,
// recording the request; extra audit events are written with the certificate.
func (s *Service) IssueProfile(ctx context.Context, r ProfileRequest, extra ...store.Event) (*Issued, error) {
	p, ok := profiles[r.Profile]
	if !ok {
		return nil, &Error{Kind: KindBadRequest, Op: "issuing", Err: fmt.Errorf("no profile %q", r.Profile)}
	}
	if r.Meta.Template == "" {
		r.Meta.Template = p.Name
	}
	o, err := p.order(r)
	if err != nil {
		return nil, &Error{Kind: KindBadRequest, Op: "issuing from profile " + p.Name, Err: err}
	}
	return s.issueOrder(ctx, o, r.Meta, extra...)
}

// AdminIssue is an administrator's request: a PKCS#10 to issue under an admin profile as it
// stands (the administrator approved its subject and SANs by asking).
type AdminIssue struct {
	Profile  string
	CSR      []byte // DER
	Account  string // whom it is for; empty means the CSR's common name
	Validity time.Duration
	By       string // who asked ("admin-api")
	Remote   string // where from, for the audit event
}

// IssueAdmin issues an administrator's certificate (POST /api/v1/certificates, aectl issue
// --profile) through the same gate as every other path; its AdminIssued event is written with
// the certificate.
func (s *Service) IssueAdmin(ctx context.Context, a AdminIssue) (*Issued, error) {
	p, ok := profiles[a.Profile]
	if !ok || !p.Admin {
		return nil, &Error{Kind: KindBadRequest, Op: "issuing", Err: fmt.Errorf("profile %q: want one of %v", a.Profile, AdminProfiles())}
	}
	csr, err := x509.ParseCertificateRequest(a.CSR)
	if err != nil {
		return nil, &Error{Kind: KindBadRequest, Op: "reading the CSR", Err: fmt.Errorf("malformed PKCS#10: %w", err)}
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, &Error{Kind: KindBadRequest, Op: "reading the CSR", Err: fmt.Errorf("signature does not verify: %w", err)}
	}
	if a.Account == "" {
		a.Account = csr.Subject.CommonName
	}
	if a.Account == "" {
		return nil, &Error{Kind: KindBadRequest, Op: "issuing", Err: errors.New("no account: name one, or give the CSR a common name")}
	}
	meta := Meta{Requester: a.By, Account: a.Account, Template: "admin:" + p.Name, CSR: a.CSR}
	ev := events.New(s.rec.Now(), events.AdminIssued, "", "profile", p.Name, "by", a.By, "remote", a.Remote)
	return s.IssueProfile(ctx, ProfileRequest{Profile: p.Name, Subject: csr.Subject, DNSNames: csr.DNSNames,
		EmailAddresses: csr.EmailAddresses, IPAddresses: csr.IPAddresses, URIs: csr.URIs,
		PublicKey: csr.PublicKey, Validity: a.Validity, Meta: meta}, ev)
}
