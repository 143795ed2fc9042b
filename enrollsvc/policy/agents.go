package policy

import (
	"encoding/asn1"
	"fmt"
	"slices"
	"strings"

	"github.com/enrollment-appliance/aeappliance/ldap/secdesc"
)

// Enrollment agents (MS-WCCE enroll on behalf of): a request for one account (the target, Input.Account)
// signed by another (the agent, Input.Agent) with a certificate holding the Certificate Request Agent
// application policy. The template's DACL is checked for the agent, the certificate's names come from the
// target, and enrollment agent restrictions say which agent may enroll which template for whom.

// OIDCertificateRequestAgent is szOID_ENROLLMENT_AGENT, the Certificate Request Agent application
// policy an agent's certificate holds.
var OIDCertificateRequestAgent = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 311, 20, 2, 1}

// AgentSignature is one enrollment agent signature on a request, made with a certificate the caller
// has checked (issued by this CA, recorded, valid now, not revoked).
type AgentSignature struct {
	Serial              string
	ApplicationPolicies []string // OIDs of its extended key usage and application policies extensions
	IssuancePolicies    []string // OIDs of its certificate policies
}

// AgentRestriction is an enrollment agent restriction (AD CS's "Restrict enrollment agents"): for agents
// that are Agent or members of it, on the templates named (none: every template), enrolling for the
// targets that are or belong to Targets (Everyone: anyone) is allowed, or denied. A deny that matches
// wins. Without any restriction agents are unrestricted, except for protected accounts (ProtectedGroup):
// those only a restriction that names them (the account or its administrative group, not Everyone,
// Authenticated Users or Domain Users) allows.
type AgentRestriction struct {
	Agent     secdesc.SID
	Templates []string
	Targets   []secdesc.SID
	Deny      bool
}

// agents checks the enrollment agent signatures a template needs (msPKI-RA-Signature, with
// msPKI-RA-Application-Policies and msPKI-RA-Policies, MS-WCCE 3.2.2.6.2.1.4.5.x) and, for a
// request on behalf of another account, that it is one (the Certificate Request Agent policy) and
// that the restrictions allow it.
func (x *decider) agents() {
	t, in := x.in.Template, x.in
	need := t.RASignatures
	if in.Agent != nil && need < 1 {
		need = 1 // on behalf of another account: one agent's signature, whatever the template says
	}
	if need == 0 {
		return
	}
	if x.previousApproval() {
		x.note("a renewal with a valid certificate of the template needs no agent signature again (PREVIOUS_APPROVAL_VALIDATE_REENROLLMENT)")
		return
	}
	var wantApp []string
	if in.Agent != nil {
		wantApp = append(wantApp, OIDCertificateRequestAgent.String())
	}
	for _, p := range t.RAApplicationPolicies {
		if isOID(p) && !slices.Contains(wantApp, p) {
			wantApp = append(wantApp, p)
		}
	}
	wantIss := slices.DeleteFunc(slices.Clone(t.RAIssuancePolicies), func(p string) bool { return !isOID(p) })
	counted := 0
	for _, s := range in.AgentSignatures {
		var missing []string
		for _, p := range wantApp {
			if !slices.Contains(s.ApplicationPolicies, p) {
				missing = append(missing, "application policy "+p)
			}
		}
		for _, p := range wantIss {
			if !slices.Contains(s.IssuancePolicies, p) {
				missing = append(missing, "issuance policy "+p)
			}
		}
		if len(missing) > 0 {
			x.note("the signature of certificate %s does not count: it lacks %s", s.Serial, strings.Join(missing, ", "))
			continue
		}
		counted++
		x.note("the signature of enrollment agent certificate %s counts", s.Serial)
	}
	if counted < need {
		what := ""
		if len(wantApp)+len(wantIss) > 0 {
			what = " by certificates holding " + strings.Join(append(slices.Clone(wantApp), wantIss...), ", ")
		}
		code := CodeSignatureCount
		if len(in.AgentSignatures) > counted {
			code = CodeSignatureRejected // signatures there are, but by certificates without the policies
		}
		x.refuseAs(code, "the template needs %d enrollment agent signature(s)%s (msPKI-RA-Signature); the request has %d (%s)",
			need, what, counted, code)
	}
	if in.Agent != nil {
		x.restrictions()
	}
}

func isOID(s string) bool {
	if s == "" {
		return false
	}
	for _, part := range strings.Split(s, ".") {
		if part == "" || strings.Trim(part, "0123456789") != "" {
			return false
		}
	}
	return true
}

// restrictions applies the enrollment agent restrictions to the agent, the template and the target.
func (x *decider) restrictions() {
	in, t := x.in, x.in.Template
	agent, target := in.Agent, in.Account
	agentTok, targetTok := tokenOf(*agent), tokenOf(target)
	prot := ProtectedGroup(target)
	var allows, denies []int
	for i, r := range in.AgentRestrictions {
		if !slices.ContainsFunc(agentTok, r.Agent.Equal) {
			continue
		}
		if len(r.Templates) > 0 && !slices.ContainsFunc(r.Templates, func(n string) bool { return strings.EqualFold(n, t.Name) }) {
			continue
		}
		names := r.namesTarget(target, targetTok)
		switch {
		case r.Deny && names != "":
			denies = append(denies, i+1)
		case r.Deny:
		case names == "explicitly" || names != "" && prot == "":
			allows = append(allows, i+1)
		}
	}
	agentName := agent.SAMAccountName
	switch {
	case len(denies) > 0:
		x.refuseAs(CodeRestrictedOfficer, "enrollment agent restriction %d denies agent %s enrolling %s for %s (deny wins)", denies[0], agentName, t.Name, x.who())
	case len(in.AgentRestrictions) == 0 && prot == "":
		x.note("enrollment agents are not restricted: agent %s may enroll for %s", agentName, x.who())
	case len(in.AgentRestrictions) == 0 || len(allows) == 0 && prot != "":
		x.refuseAs(CodeRestrictedOfficer, "%s is protected (%s): no enrollment agent restriction names it for agent %s on %s", x.who(), prot, agentName, t.Name)
	case len(allows) == 0:
		x.refuseAs(CodeRestrictedOfficer, "no enrollment agent restriction lets agent %s enroll %s for %s", agentName, t.Name, x.who())
	default:
		x.note("enrollment agent restriction %d lets agent %s enroll %s for %s", allows[0], agentName, t.Name, x.who())
	}
}

// namesTarget says how the restriction's targets name the account: "explicitly" (its own SID, or an
// administrative group it belongs to), "" (not at all), or "through a group".
func (r AgentRestriction) namesTarget(a Account, token []secdesc.SID) string {
	how := ""
	for _, s := range r.Targets {
		switch {
		case s.Equal(a.SID):
			return "explicitly"
		case !slices.ContainsFunc(token, s.Equal):
		case protectedGroupName(s) != "":
			return "explicitly"
		default:
			how = "through a group"
		}
	}
	return how
}

// tokenOf is an account's token (built from its SID when the caller gave none).
func tokenOf(a Account) []secdesc.SID {
	if len(a.Token) > 0 {
		return a.Token
	}
	return buildToken(a.SID, nil)
}

// agentWho names the agent in access messages.
func agentWho(a *Account) string {
	name := a.SAMAccountName
	if name == "" {
		name = a.DN
	}
	return fmt.Sprintf("enrollment agent %s %q", a.Kind(), name)
}
