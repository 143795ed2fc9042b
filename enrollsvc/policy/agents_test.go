package policy

import (
	"testing"

	"github.com/enrollment-appliance/aeappliance/ldap/secdesc"
)

// agentBob is bob as an enrollment agent: a user with his own SID in the given groups.
func agentBob(groups ...secdesc.SID) *Account {
	m := aliceAttrs()
	m["objectsid"] = [][]byte{sidBob.Bytes()}
	set(m, "samaccountname", "bob")
	set(m, "userprincipalname", "bob@corp.example.test")
	a, err := ParseAccount("CN=bob,CN=Users,DC=corp,DC=example,DC=test", m, groups)
	if err != nil {
		panic(err) // fixed test data
	}
	return &a
}

var (
	sidAgents = rid(1400) // enrollment agents
	cra       = OIDCertificateRequestAgent.String()
)

// onBehalf makes the input a request bob (an agent in groups) signed on alice's behalf with
// certificates holding the given application policies, under restrictions rs.
func onBehalf(groups []secdesc.SID, sigs [][]string, rs ...AgentRestriction) func(*Input) {
	return func(in *Input) {
		in.Agent = agentBob(groups...)
		for i, p := range sigs {
			in.AgentSignatures = append(in.AgentSignatures, AgentSignature{Serial: string(rune('a' + i)), ApplicationPolicies: p})
		}
		in.AgentRestrictions = rs
	}
}

// wantCode checks the AD CS error a refusal carries.
func wantCode(code string) func(*testing.T, Decision) {
	return func(t *testing.T, d Decision) {
		if d.Code != code {
			t.Errorf("Code = %q, want %s", d.Code, code)
		}
	}
}

func TestDecideAgents(t *testing.T) {
	agentIn := []secdesc.SID{sidDomainUsers, sidNested, sidPKIUsers, sidAgents}
	one := [][]string{{cra}}
	raTemplate := func(n int, policies ...string) func(attrs) {
		return func(m attrs) {
			set(m, "mspki-ra-signature", signedFlag(uint32(n)))
			if len(policies) > 0 {
				set(m, "mspki-ra-application-policies", policies...)
			}
		}
	}
	all := AgentRestriction{Agent: sidAgents, Targets: []secdesc.SID{secdesc.Everyone}}
	cases := []decideCase{
		{name: "an agent enrolls for alice: unrestricted, alice's names", input: onBehalf(agentIn, one), want: Issue,
			wantReason: "enrollment agents are not restricted", check: wantCode("")},
		{name: "the agent's signature counts once the template needs one", tmpl: raTemplate(1, cra), input: onBehalf(agentIn, one), want: Issue,
			wantReason: "signature of enrollment agent certificate a counts"},
		{name: "a signature without the Certificate Request Agent policy", input: onBehalf(agentIn, [][]string{{"1.3.6.1.5.5.7.3.2"}}),
			want: Refuse, wantReason: "lacks application policy 1.3.6.1.4.1.311.20.2.1", check: wantCode(CodeSignatureRejected)},
		{name: "fewer signatures than the template needs", tmpl: raTemplate(2, cra), input: onBehalf(agentIn, one),
			want: Refuse, wantReason: "needs 2 enrollment agent signature(s)", check: wantCode(CodeSignatureCount)},
		{name: "no agent signature on a template that needs one", tmpl: raTemplate(1), want: Refuse,
			wantReason: "the request has 0"},
		{name: "the agent may not enroll on the template", input: onBehalf([]secdesc.SID{sidDomainUsers, sidAgents}, one),
			want: Refuse, wantReason: `enrollment agent user "bob" may not enroll`},
		{name: "an agent never enrolls for a Domain Admin by default", account: aliceIn(sidDomainUsers, sidNested, sidPKIUsers, rid(512)),
			input: onBehalf(agentIn, one), want: Refuse, wantReason: "is protected (Domain Admins)", check: wantCode(CodeRestrictedOfficer)},
		{name: "nor through a restriction for Everyone", account: aliceIn(sidDomainUsers, sidNested, sidPKIUsers, rid(512)),
			input: onBehalf(agentIn, one, all), want: Refuse, wantReason: "is protected (Domain Admins)"},
		{name: "a restriction that names Domain Admins lets the agent", account: aliceIn(sidDomainUsers, sidNested, sidPKIUsers, rid(512)),
			input: onBehalf(agentIn, one, AgentRestriction{Agent: sidAgents, Targets: []secdesc.SID{rid(512)}}), want: Issue,
			wantReason: "restriction 1 lets agent bob"},
		{name: "restricted: an allow for the target's group", input: onBehalf(agentIn, one,
			AgentRestriction{Agent: sidAgents, Templates: []string{"userauth"}, Targets: []secdesc.SID{sidNested}}), want: Issue},
		{name: "restricted: another template only", input: onBehalf(agentIn, one,
			AgentRestriction{Agent: sidAgents, Templates: []string{"SmartcardLogon"}, Targets: []secdesc.SID{secdesc.Everyone}}),
			want: Refuse, wantReason: "no enrollment agent restriction lets agent bob"},
		{name: "restricted: another agent only", input: onBehalf(agentIn, one,
			AgentRestriction{Agent: rid(1499), Targets: []secdesc.SID{secdesc.Everyone}}), want: Refuse, wantReason: "no enrollment agent restriction"},
		{name: "deny wins over allow", input: onBehalf(agentIn, one, all,
			AgentRestriction{Agent: sidAgents, Targets: []secdesc.SID{sidNested}, Deny: true}), want: Refuse, wantReason: "restriction 2 denies"},
		{name: "a renewal with a valid certificate needs no agent again (PREVIOUS_APPROVAL_VALIDATE_REENROLLMENT)",
			tmpl:  func(m attrs) { raTemplate(1, cra)(m); withFlag("mspki-enrollment-flag", 0x40)(m) },
			input: func(in *Input) { in.Reenrollment = true }, want: Issue, wantReason: "needs no agent signature again"},
		{name: "without the flag a renewal needs the agent's signature", tmpl: raTemplate(1, cra),
			input: func(in *Input) { in.Reenrollment = true }, want: Refuse, wantReason: "the request has 0"},
		{name: "a held template's renewal is not held again with the flag", tmpl: withFlag("mspki-enrollment-flag", 0x40|0x2),
			input: func(in *Input) { in.Reenrollment = true }, want: Issue, wantReason: "not held again"},
		{name: "a held template's new request is held", tmpl: withFlag("mspki-enrollment-flag", 0x40|0x2), want: Pend},
		{name: "a deny for another group leaves the allow", input: onBehalf(agentIn, one, all,
			AgentRestriction{Agent: sidAgents, Targets: []secdesc.SID{sidBlocked}, Deny: true}), want: Issue},
	}
	for _, tc := range cases {
		t.Run(tc.name, tc.run)
	}
}

// TestDecideAgentNames: a certificate made on behalf of alice carries alice's names and SID, not
// the agent's.
func TestDecideAgentNames(t *testing.T) {
	tc := decideCase{input: onBehalf([]secdesc.SID{sidDomainUsers, sidNested, sidPKIUsers, sidAgents}, [][]string{{cra}}), want: Issue,
		check: func(t *testing.T, d Decision) {
			found := false
			for _, s := range d.SANs {
				if s == "UPN:alice@corp.example.test" {
					found = true
				}
				if s == "UPN:bob@corp.example.test" {
					t.Errorf("the agent's UPN is in the certificate: %v", d.SANs)
				}
			}
			if !found {
				t.Errorf("SANs = %v, want alice's UPN", d.SANs)
			}
		}}
	tc.run(t)
}
