package enrollsvc

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/enrollment-appliance/aeappliance/apiclient"
	"github.com/enrollment-appliance/aeappliance/enrollsvc/events"
	"github.com/enrollment-appliance/aeappliance/enrollsvc/policy"
	"github.com/enrollment-appliance/aeappliance/enrollsvc/store"
	"github.com/enrollment-appliance/aeappliance/ldap"
	"github.com/enrollment-appliance/aeappliance/ldap/secdesc"
	"github.com/enrollment-appliance/aeappliance/proto/certutil"
)

// Enrollment agents: requests an agent (a certificate with the Certificate Request Agent
// application policy, and the account it was issued to) makes on behalf of another account. The
// agent's signatures are checked here (the certificate is this CA's, recorded, valid and not
// revoked, and the agent's own); policy counts them, checks the template's DACL for the agent and
// applies the enrollment agent restrictions; the certificate gets the target's names and SID.

// OnBehalf says that an EnrollRequest is made by an enrollment agent for EnrollRequest.Account
// (the target, as the request names it, e.g. "DOMAIN\\user"): Agent is the agent's account as it
// authenticated, Signers the certificates whose keys signed the request (their signatures
// verified), or the certificate the agent authenticated with (TLS) for the API.
type OnBehalf struct {
	Agent   string
	Signers []*x509.Certificate
}

// settingAgentRestrictions holds the enrollment agent restrictions: {"restrictions": [...]}.
const settingAgentRestrictions = "agent_restrictions"

// AgentRestriction is an enrollment agent restriction as the API shows it.
type AgentRestriction = apiclient.AgentRestriction

type restrictionSetting struct {
	Restrictions []AgentRestriction `json:"restrictions"`
}

// AgentRestrictions lists the enrollment agent restrictions, in the order they are numbered.
func (s *Service) AgentRestrictions(ctx context.Context) ([]AgentRestriction, error) {
	var rs restrictionSetting
	if _, err := s.readSetting(ctx, "listing the enrollment agent restrictions", settingAgentRestrictions, &rs); err != nil {
		return nil, err
	}
	if rs.Restrictions == nil {
		rs.Restrictions = []AgentRestriction{}
	}
	return rs.Restrictions, nil
}

func (s *Service) putRestrictions(ctx context.Context, rs []AgentRestriction, ev store.Event, by string) error {
	return s.writeSetting(ctx, "changing the enrollment agent restrictions", settingAgentRestrictions, restrictionSetting{Restrictions: rs}, ev, by)
}

// AddAgentRestriction adds a restriction: the agent and the targets are directory users,
// computers or groups by name (sAMAccountName, UPN, DOMAIN\name, DN or SID), or "Everyone";
// templates are template names (none: every template). The names are resolved to SIDs now.
func (s *Service) AddAgentRestriction(ctx context.Context, in apiclient.AgentRestrictionSpec, by string) (AgentRestriction, error) {
	op := "adding an enrollment agent restriction"
	bad := func(format string, a ...any) (AgentRestriction, error) {
		return AgentRestriction{}, &Error{Kind: KindBadRequest, Op: op, Err: fmt.Errorf(format, a...)}
	}
	dc, err := s.directory(op)
	if err != nil {
		return AgentRestriction{}, err
	}
	if in.Agent == "" || len(in.Targets) == 0 {
		return bad("an agent and at least one target are required")
	}
	if len(in.Targets) > 64 || len(in.Templates) > 64 {
		return bad("at most 64 targets and 64 templates")
	}
	agent, err := s.principal(ctx, dc, in.Agent)
	if err != nil {
		return AgentRestriction{}, err
	}
	r := AgentRestriction{Agent: agent, Deny: in.Deny, Added: s.rec.Now().UTC(), By: by}
	for _, name := range in.Targets {
		p, err := s.principal(ctx, dc, name)
		if err != nil {
			return AgentRestriction{}, err
		}
		if slices.ContainsFunc(r.Targets, func(o apiclient.Principal) bool { return o.SID == p.SID }) {
			return bad("target %s is named twice", name)
		}
		r.Targets = append(r.Targets, p)
	}
	for _, name := range in.Templates {
		t, reasons, err := s.template(ctx, dc, name)
		if err != nil {
			return AgentRestriction{}, err
		}
		if reasons != nil {
			return bad("template %s: %s", name, strings.Join(reasons, "; "))
		}
		if !slices.Contains(r.Templates, t.Name) {
			r.Templates = append(r.Templates, t.Name)
		}
	}
	rs, err := s.AgentRestrictions(ctx)
	if err != nil {
		return AgentRestriction{}, err
	}
	if len(rs) >= 256 {
		return bad("at most 256 restrictions")
	}
	targets := make([]string, len(r.Targets))
	for i, p := range r.Targets {
		targets[i] = p.Name
	}
	ev := events.New(r.Added, events.AgentRestrictionAdded, "", "agent", agent.Name, "agent_sid", agent.SID, "templates", r.Templates,
		"targets", targets, "deny", r.Deny, "by", by)
	return r, s.putRestrictions(ctx, append(rs, r), ev, by)
}

// RemoveAgentRestriction removes restriction n (1-based, as listed).
func (s *Service) RemoveAgentRestriction(ctx context.Context, n int, by string) error {
	rs, err := s.AgentRestrictions(ctx)
	if err != nil {
		return err
	}
	if n < 1 || n > len(rs) {
		return &Error{Kind: KindNotFound, Op: "removing an enrollment agent restriction", Err: fmt.Errorf("there is no restriction %d (%d set)", n, len(rs))}
	}
	r := rs[n-1]
	ev := events.New(s.rec.Now(), events.AgentRestrictionRemoved, "", "number", n, "agent", r.Agent.Name, "deny", r.Deny, "by", by)
	return s.putRestrictions(ctx, slices.Delete(rs, n-1, n), ev, by)
}

// principal resolves a name to a directory principal: "Everyone", a SID, or an account or group.
func (s *Service) principal(ctx context.Context, dc *DirectoryConfig, name string) (apiclient.Principal, error) {
	op := "looking up " + name
	switch strings.ToLower(strings.TrimSpace(name)) {
	case "everyone":
		return apiclient.Principal{Name: "Everyone", SID: secdesc.Everyone.String()}, nil
	case "authenticated users":
		return apiclient.Principal{Name: "Authenticated Users", SID: secdesc.AuthenticatedUsers.String()}, nil
	}
	sid, name2, err := dc.Dir.Principal(ctx, name)
	if errors.Is(err, ldap.ErrNotFound) || errors.Is(err, ldap.ErrAmbiguous) {
		return apiclient.Principal{}, &Error{Kind: KindBadRequest, Op: op, Err: err}
	}
	if err != nil {
		return apiclient.Principal{}, dirError(op, err)
	}
	return apiclient.Principal{Name: name2, SID: sid.String()}, nil
}

// policyRestrictions are the restrictions as policy reads them.
func (s *Service) policyRestrictions(ctx context.Context) ([]policy.AgentRestriction, error) {
	rs, err := s.AgentRestrictions(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]policy.AgentRestriction, 0, len(rs))
	for i, r := range rs {
		agent, err := secdesc.ParseSID(r.Agent.SID)
		if err != nil {
			return nil, fmt.Errorf("enrollment agent restriction %d: %w", i+1, err)
		}
		pr := policy.AgentRestriction{Agent: agent, Templates: r.Templates, Deny: r.Deny}
		for _, t := range r.Targets {
			sid, err := secdesc.ParseSID(t.SID)
			if err != nil {
				return nil, fmt.Errorf("enrollment agent restriction %d: %w", i+1, err)
			}
			pr.Targets = append(pr.Targets, sid)
		}
		out = append(out, pr)
	}
	return out, nil
}

// agentInput checks an enrollment agent's signatures and returns what policy needs: the agent's
// account, its signatures and the restrictions; or the reasons to refuse. Every signer must be a
// certificate this CA issued and recorded, valid now, not revoked, and issued to the agent.
func (s *Service) agentInput(ctx context.Context, dc *DirectoryConfig, ob *OnBehalf) (*policy.Account, []policy.AgentSignature, []policy.AgentRestriction, []string, error) {
	agent, reasons, err := s.account(ctx, dc, ob.Agent, nil)
	if err != nil || reasons != nil {
		return nil, nil, nil, prefixed("the enrollment agent: ", reasons), err
	}
	if len(ob.Signers) == 0 {
		return nil, nil, nil, []string{"the request is signed by no enrollment agent certificate"}, nil
	}
	var sigs []policy.AgentSignature
	own := false
	for _, c := range ob.Signers {
		sig, holder, why, err := s.agentSignature(ctx, dc, c)
		if err != nil {
			return nil, nil, nil, nil, err
		}
		if why != "" {
			return nil, nil, nil, []string{fmt.Sprintf("the signing certificate %s (%s): %s", certutil.SerialString(c.SerialNumber), c.Subject, why)}, nil
		}
		own = own || holder.SID.Equal(agent.SID)
		sigs = append(sigs, sig)
	}
	if !own {
		// Other agents may co-sign (msPKI-RA-Signature above 1), but the one that sends the
		// request signs it too: a certificate alone does not make its holder the sender.
		return nil, nil, nil, []string{fmt.Sprintf("none of the signing certificates was issued to the enrollment agent %s that sent the request",
			agent.SAMAccountName)}, nil
	}
	rs, err := s.policyRestrictions(ctx)
	if err != nil {
		return nil, nil, nil, nil, &Error{Kind: KindInternal, Op: "reading the enrollment agent restrictions", Err: err}
	}
	return agent, sigs, rs, nil, nil
}

func prefixed(p string, reasons []string) []string {
	for i := range reasons {
		reasons[i] = p + reasons[i]
	}
	return reasons
}

// agentSignature checks one signing certificate and describes it for policy, with the account it
// was issued to; why is the reason it does not count at all.
func (s *Service) agentSignature(ctx context.Context, dc *DirectoryConfig, c *x509.Certificate) (policy.AgentSignature, *policy.Account, string, error) {
	serial := certutil.SerialString(c.SerialNumber)
	none := policy.AgentSignature{}
	if err := c.CheckSignatureFrom(s.issuer.CACert()); err != nil {
		return none, nil, "not issued by this CA", nil
	}
	sc, err := s.store.GetCertificate(ctx, serial)
	if errors.Is(err, store.ErrNotFound) || err == nil && !bytes.Equal(sc.DER, c.Raw) {
		return none, nil, "not a certificate this CA recorded", nil
	}
	if err != nil {
		return none, nil, "", &Error{Kind: KindInternal, Op: "reading certificate " + serial, Err: err}
	}
	now := s.rec.Now()
	switch {
	case sc.Status == store.CertRevoked:
		return none, nil, "revoked", nil
	case now.Before(c.NotBefore) || !now.Before(c.NotAfter):
		return none, nil, fmt.Sprintf("not valid now (%s to %s)", c.NotBefore.UTC().Format("2006-01-02 15:04Z"), c.NotAfter.UTC().Format("2006-01-02 15:04Z")), nil
	}
	owner, err := holder(c, sc)
	if err != nil {
		return none, nil, "its holder cannot be told: " + err.Error(), nil
	}
	a, reasons, err := s.account(ctx, dc, owner, nil)
	if err != nil {
		return none, nil, "", err
	}
	if reasons != nil {
		return none, nil, "its holder " + sc.Account + ": " + strings.Join(reasons, "; "), nil
	}
	return policy.AgentSignature{Serial: serial, ApplicationPolicies: applicationPolicies(c), IssuancePolicies: issuancePolicies(c)}, a, "", nil
}

// OIDs of the extended key usage and Microsoft application policies extensions.
var (
	oidExtKeyUsage         = asn1.ObjectIdentifier{2, 5, 29, 37}
	oidApplicationPolicies = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 311, 21, 10} // szOID_APPLICATION_CERT_POLICIES
)

// applicationPolicies are the OIDs of a certificate's extended key usage and application policies
// extensions (MS-WCCE 2.2.2.7.7.x; Windows checks the latter when present).
func applicationPolicies(c *x509.Certificate) []string {
	var out []string
	add := func(o asn1.ObjectIdentifier) {
		if s := o.String(); !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	for _, e := range c.Extensions {
		switch {
		case e.Id.Equal(oidExtKeyUsage):
			var oids []asn1.ObjectIdentifier
			if _, err := asn1.Unmarshal(e.Value, &oids); err == nil {
				for _, o := range oids {
					add(o)
				}
			}
		case e.Id.Equal(oidApplicationPolicies):
			var pols []struct {
				ID         asn1.ObjectIdentifier
				Qualifiers asn1.RawValue `asn1:"optional"`
			}
			if _, err := asn1.Unmarshal(e.Value, &pols); err == nil {
				for _, p := range pols {
					add(p.ID)
				}
			}
		}
	}
	return out
}

// issuancePolicies are the OIDs of a certificate's certificate policies.
func issuancePolicies(c *x509.Certificate) []string {
	var out []string
	for _, p := range c.Policies {
		out = append(out, p.String())
	}
	return out
}
