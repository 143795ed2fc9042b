package apiclient

import (
	"context"
	"strconv"
	"time"
)

// AgentRestrictionsPath is where enrollment agent restrictions are managed (administrators only).
const AgentRestrictionsPath = "/api/v1/agent-restrictions"

// Principal is a directory user, computer or group, or a well-known principal (Everyone), by name
// and SID.
type Principal struct {
	Name string `json:"name"`
	SID  string `json:"sid"`
}

// AgentRestriction is an enrollment agent restriction (AD CS's "Restrict enrollment agents"):
// agents that are Agent or members of it may (or, with Deny, may not) enroll the Templates (none:
// every template) on behalf of accounts that are or belong to Targets. A deny that matches wins.
// With no restriction at all agents are unrestricted, except that accounts in administrative
// groups (or with adminCount=1) are targets only when a restriction names them.
type AgentRestriction struct {
	Agent     Principal   `json:"agent"`
	Templates []string    `json:"templates,omitempty"`
	Targets   []Principal `json:"targets"`
	Deny      bool        `json:"deny,omitempty"`
	Added     time.Time   `json:"added"`
	By        string      `json:"by"`
}

// AgentRestrictionSpec asks for a restriction by names: sAMAccountName, DOMAIN\name, UPN, DN or
// SID of users, computers or groups, or "Everyone"; template names.
type AgentRestrictionSpec struct {
	Agent     string   `json:"agent"`
	Templates []string `json:"templates,omitempty"`
	Targets   []string `json:"targets"`
	Deny      bool     `json:"deny,omitempty"`
}

// AgentRestrictions lists the restrictions, numbered from 1 in this order.
func (c *Client) AgentRestrictions(ctx context.Context) ([]AgentRestriction, error) {
	var out []AgentRestriction
	return out, c.do(ctx, "GET", AgentRestrictionsPath, nil, &out)
}

// AddAgentRestriction adds a restriction at the end of the list.
func (c *Client) AddAgentRestriction(ctx context.Context, spec AgentRestrictionSpec) (AgentRestriction, error) {
	var out AgentRestriction
	return out, c.do(ctx, "POST", AgentRestrictionsPath, spec, &out)
}

// RemoveAgentRestriction removes restriction n (1-based, as listed).
func (c *Client) RemoveAgentRestriction(ctx context.Context, n int) error {
	return c.do(ctx, "DELETE", AgentRestrictionsPath+"/"+strconv.Itoa(n), nil, nil)
}

// AgentLogonPath is where a sign-on server (Citrix FAS style), authenticated by its enrollment
// agent certificate over TLS and nothing else, asks for a user's logon certificate.
const AgentLogonPath = "/api/v1/agent/logon-certificate"

// AgentLogonRequest asks for a certificate on template for target (DOMAIN\user, a UPN or a
// sAMAccountName) for the key of CSR (PEM PKCS#10), which the sign-on server made. The answer is
// an IssueResponse; the template decides the validity (e.g. 8 hours).
type AgentLogonRequest struct {
	Template string `json:"template"`
	Target   string `json:"target"`
	CSR      string `json:"csr"`
}
