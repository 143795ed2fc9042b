package agent

import (
	"context"
	"math/rand/v2"
	"time"

	"github.com/enrollment-appliance/aeappliance/aeagent/plan"
)

// CertStatus is one managed certificate as `aeagent status` shows it.
type CertStatus struct {
	Template  string    `json:"template"`
	Serial    string    `json:"serial"`
	Subject   string    `json:"subject"`
	NotBefore time.Time `json:"not_before"`
	NotAfter  time.Time `json:"not_after"`
	// RenewAt is when the certificate becomes due for renewal (the later of the 80% mark and the
	// start of the renewal period); zero when the cached policy does not have its template.
	RenewAt time.Time `json:"renew_at,omitzero"`
	State   string    `json:"state"` // valid, due for renewal, expired, no private key
	Path    string    `json:"path"`
}

// PendingStatus is a request waiting for approval.
type PendingStatus struct {
	Template  string    `json:"template"`
	RequestID int64     `json:"request_id"`
	Submitted time.Time `json:"submitted"`
	DropAt    time.Time `json:"drop_at"` // when it is given up
}

// Status is the store at a glance.
type Status struct {
	Store        string          `json:"store"`
	Server       string          `json:"server"`
	Certificates []CertStatus    `json:"certificates"`
	Pending      []PendingStatus `json:"pending"`
	LastPass     *lastPass       `json:"last_pass,omitempty"`
	PolicyAt     time.Time       `json:"policy_fetched,omitzero"`
}

// Status reads the store, the cached policy and the last pass; it makes no network request.
func (a *Agent) Status(ctx context.Context) (*Status, error) {
	st, err := a.openStore(ctx)
	if err != nil {
		return nil, err
	}
	defer st.Close()
	certs, pending, err := readStore(st)
	if err != nil {
		return nil, err
	}
	cached, err := a.readPolicy(st)
	if err != nil {
		return nil, err
	}
	s := &Status{Store: st.Dir(), Server: a.cfg.Server, Certificates: []CertStatus{}, Pending: []PendingStatus{}}
	var last lastPass
	if found, err := st.ReadJSON(lastFile, &last); err != nil {
		return nil, err
	} else if found {
		s.LastPass = &last
	}
	templates := map[string]plan.Template{}
	if cached != nil {
		s.PolicyAt = cached.Fetched
		for _, t := range planTemplates(cached.Templates) {
			templates[t.Name] = t
		}
	}
	now := a.now()
	for _, c := range certs {
		cs := CertStatus{Template: c.Template, Serial: serialOf(c.Certificate), Subject: c.Certificate.Subject.String(),
			NotBefore: c.Certificate.NotBefore, NotAfter: c.Certificate.NotAfter, Path: c.Path, State: "valid"}
		if t, ok := templates[c.Template]; ok {
			cs.RenewAt = plan.NextRenewal(plan.Held{NotBefore: cs.NotBefore, NotAfter: cs.NotAfter}, t)
		}
		switch {
		case now.After(cs.NotAfter):
			cs.State = "expired"
		case c.Key == nil:
			cs.State = "no private key"
		case !cs.RenewAt.IsZero() && !now.Before(cs.RenewAt):
			cs.State = "due for renewal"
		}
		s.Certificates = append(s.Certificates, cs)
	}
	for _, r := range pending {
		s.Pending = append(s.Pending, PendingStatus{Template: r.Template, RequestID: r.RequestID, Submitted: r.Submitted,
			DropAt: r.Submitted.Add(plan.PendingExpiry)})
	}
	return s, nil
}

// RetryAfterFailure is how soon a failed pass is tried again (unless the interval is shorter).
const RetryAfterFailure = time.Hour

// NextPulse is how long to wait before the next pass: the interval plus a random part of the
// jitter, sooner when the policy's nextUpdateHours asks for it, and at most RetryAfterFailure
// after a failed pass.
func NextPulse(interval, jitter time.Duration, nextUpdateHours int, failed bool) time.Duration {
	d := interval
	if jitter > 0 {
		d += rand.N(jitter)
	}
	if nextUpdateHours > 0 {
		d = min(d, time.Duration(nextUpdateHours)*time.Hour)
	}
	if failed {
		d = min(d, RetryAfterFailure)
	}
	return d
}

// Run pulses at start, then as NextPulse says, and whenever wake receives, until ctx ends.
// Failed passes are logged and retried; Run returns only ctx's error.
func (a *Agent) Run(ctx context.Context, wake <-chan struct{}) error {
	interval, jitter := a.cfg.durations()
	for {
		rep, err := a.Pulse(ctx)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err != nil {
			a.log.Error("autoenrollment pass failed", "err", err)
		} else {
			a.log.Info("autoenrollment pass done", "changed", rep.Changed)
		}
		wait := NextPulse(interval, jitter, rep.NextUpdateHours, err != nil)
		a.log.Info("next pass", "in", wait.Round(time.Second).String(), "at", time.Now().Add(wait).UTC().Format(time.RFC3339))
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		case <-wake:
			t.Stop()
			a.log.Info("pass requested")
		}
	}
}
