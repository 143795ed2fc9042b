package agent

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"time"

	"github.com/enrollment-appliance/aeappliance/aeagent/plan"
	"github.com/enrollment-appliance/aeappliance/aeagent/store"
	"github.com/enrollment-appliance/aeappliance/aeagent/wsclient"
)

// policyFile is the policy cache in the store.
const policyFile = "policy.json"

// policyMargin is subtracted from the fetch time recorded as lastUpdate: it covers the server's
// directory cache (5 minutes by default) and clock skew between agent and server.
const policyMargin = 15 * time.Minute

// cachedPolicy is the last policy the server sent, kept so that a policiesNotChanged answer can
// be honoured and `aeagent status` can say when certificates renew.
type cachedPolicy struct {
	Server          string              `json:"server"`
	Identity        string              `json:"identity"`
	Fetched         time.Time           `json:"fetched"` // wall clock when the server sent it
	NextUpdateHours int                 `json:"next_update_hours,omitempty"`
	PolicyID        string              `json:"policy_id,omitempty"`
	Templates       []wsclient.Template `json:"templates"`
	CAs             []cachedCA          `json:"cas"`
}

type cachedCA struct {
	Ref              int               `json:"ref"`
	Certificate      []byte            `json:"certificate"` // DER
	URIs             []wsclient.CAURI  `json:"uris"`
	EnrollPermission bool              `json:"enroll_permission"`
	cert             *x509.Certificate // parsed
}

func fromPolicies(server, identity string, fetched time.Time, p *wsclient.Policies) *cachedPolicy {
	c := &cachedPolicy{Server: server, Identity: identity, Fetched: fetched.UTC(), NextUpdateHours: p.NextUpdateHours,
		PolicyID: p.PolicyID, Templates: p.Templates}
	for _, ca := range p.CAs {
		cc := cachedCA{Ref: ca.Ref, URIs: ca.URIs, EnrollPermission: ca.EnrollPermission, cert: ca.Certificate}
		if ca.Certificate != nil {
			cc.Certificate = ca.Certificate.Raw
		}
		c.CAs = append(c.CAs, cc)
	}
	return c
}

// policies turns the cache back into what wsclient gave.
func (c *cachedPolicy) policies() (*wsclient.Policies, error) {
	p := &wsclient.Policies{PolicyID: c.PolicyID, NextUpdateHours: c.NextUpdateHours, Templates: c.Templates}
	for i, ca := range c.CAs {
		if ca.cert == nil && len(ca.Certificate) > 0 {
			cert, err := x509.ParseCertificate(ca.Certificate)
			if err != nil {
				return nil, fmt.Errorf("%w: %s: CA %d certificate: %v", store.ErrCorrupt, policyFile, ca.Ref, err)
			}
			c.CAs[i].cert = cert
		}
		p.CAs = append(p.CAs, wsclient.CA{Ref: ca.Ref, Certificate: c.CAs[i].cert, URIs: ca.URIs, EnrollPermission: ca.EnrollPermission})
	}
	return p, nil
}

// readPolicy returns the cached policy for this server and identity, or nil.
func (a *Agent) readPolicy(st *store.Store) (*cachedPolicy, error) {
	var c cachedPolicy
	found, err := st.ReadJSON(policyFile, &c)
	if err != nil || !found {
		return nil, err
	}
	if c.Server != a.cfg.Server || c.Identity != a.identity() {
		return nil, nil
	}
	if _, err := c.policies(); err != nil {
		return nil, err
	}
	return &c, nil
}

// fetchPolicy asks the policy server, sending when the cached policy was fetched so that it may
// answer policiesNotChanged. With save, a new policy replaces the cache.
func (a *Agent) fetchPolicy(ctx context.Context, st *store.Store, c *wsclient.Client, save bool) (*cachedPolicy, error) {
	cached, err := a.readPolicy(st)
	if err != nil {
		return nil, err
	}
	var last *time.Time
	if cached != nil {
		last = &cached.Fetched
	}
	// The server compares lastUpdate with the templates' whenChanged (whole seconds) as its
	// directory cache saw them; sending an earlier time than the fetch costs at most a full reply
	// instead of policiesNotChanged, while a later one could hide a change. Wall clock: the
	// server compares it with its own, not with the agent's decision clock.
	fetched := time.Now().Add(-policyMargin)
	p, err := c.GetPolicies(ctx, last)
	if err != nil {
		// A policy server that does not answer leaves the cached policy in force until its
		// nextUpdateHours ends (MS-XCEP 3.1.4.1.3.1): enrollment then goes to the enrollment
		// services it lists, in order, whichever of them answers.
		if cached != nil && unreachable(ctx, err) && time.Now().Before(cached.Fetched.Add(cachedPolicyLife(cached))) {
			a.log.Warn("policy server unreachable; using the cached policy", "server", a.cfg.Server,
				"fetched", cached.Fetched, "error", err)
			return cached, nil
		}
		return nil, fmt.Errorf("fetching the policy from %s: %w", a.cfg.Server, err)
	}
	if p.NotChanged {
		if cached == nil {
			return nil, errors.New("the policy server answered policiesNotChanged to a request without lastUpdate")
		}
		a.log.Debug("policy not changed", "fetched", cached.Fetched)
		return cached, nil
	}
	fresh := fromPolicies(a.cfg.Server, a.identity(), fetched, p)
	if save {
		if err := st.WriteJSON(policyFile, fresh); err != nil {
			return nil, fmt.Errorf("saving the policy: %w", err)
		}
	}
	return fresh, nil
}

// planTemplates converts the policy's templates for the planner.
func planTemplates(ts []wsclient.Template) []plan.Template {
	out := make([]plan.Template, 0, len(ts))
	for _, t := range ts {
		out = append(out, plan.Template{Name: t.Name, OID: t.OID, MajorRevision: t.MajorRevision, MinorRevision: t.MinorRevision,
			Validity: t.Validity, RenewalPeriod: t.RenewalPeriod, Autoenroll: t.Autoenroll, Enroll: t.Enroll,
			EnrollmentFlags: t.EnrollmentFlags, SubjectNameFlags: t.SubjectNameFlags, PrivateKeyFlags: t.PrivateKeyFlags,
			GeneralFlags: t.GeneralFlags, Supersedes: t.Supersedes, MinimalKeySize: t.MinimalKeySize})
	}
	return out
}

// cachedPolicyLife is how long a fetched policy stands when its server cannot be asked again: its
// nextUpdateHours, or 8 hours when it had none.
func cachedPolicyLife(c *cachedPolicy) time.Duration {
	if c.NextUpdateHours > 0 {
		return time.Duration(c.NextUpdateHours) * time.Hour
	}
	return 8 * time.Hour
}
