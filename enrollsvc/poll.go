package enrollsvc

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/enrollment-appliance/aeappliance/enrollsvc/policy"
	"github.com/enrollment-appliance/aeappliance/enrollsvc/store"
)

// Poll answers a client asking what became of its request (WSTEP QueryTokenStatus, SCEP
// CertPoll): the certificate once issued, pending while pending, denied with the reason. A
// request of another account is reported as not found, so request IDs cannot be probed.
func (s *Service) Poll(ctx context.Context, id int64, account string) (*EnrollResult, error) {
	op := fmt.Sprintf("polling request %d", id)
	if s.dir != nil && s.dir.Dir != nil { // requests record the sAMAccountName; callers may say UPN or DN
		a, reasons, err := s.account(ctx, s.dir, account, nil)
		if err != nil {
			return nil, err
		}
		if reasons != nil {
			return nil, &Error{Kind: KindNotFound, Op: op, RequestID: id, Err: errors.New(strings.Join(reasons, "; "))}
		}
		account = accountName(a)
	}
	r, err := s.store.GetRequest(ctx, id)
	if err == nil && !strings.EqualFold(r.Account, account) {
		err = store.ErrNotFound
	}
	if err != nil {
		return nil, &Error{Kind: KindOf(err), Op: op, RequestID: id, Err: err}
	}
	return s.resultOf(ctx, r, op)
}

// resultOf is a request's outcome: its certificate once issued, pending (expiring it when too
// old), or denied with the reason.
func (s *Service) resultOf(ctx context.Context, r store.Request, op string) (*EnrollResult, error) {
	id := r.ID
	switch r.State {
	case store.RequestIssued:
		c, err := s.store.GetCertificate(ctx, r.Serial)
		if err != nil {
			return nil, &Error{Kind: KindInternal, Op: op, RequestID: id, Err: err}
		}
		cert, err := x509.ParseCertificate(c.DER)
		if err != nil {
			return nil, &Error{Kind: KindInternal, Op: op, RequestID: id, Err: err}
		}
		return &EnrollResult{Status: StatusIssued, RequestID: id, Certificate: cert}, nil
	case store.RequestPending:
		if s.rec.Now().Sub(r.Submitted) > PendingLifetime {
			s.expire(ctx, r)
			return &EnrollResult{Status: StatusDenied, RequestID: id, Reasons: []string{"the request expired"}}, nil
		}
		return &EnrollResult{Status: StatusPending, RequestID: id, Reasons: []string{r.Reason}}, nil
	}
	return &EnrollResult{Status: StatusDenied, RequestID: id, Reasons: []string{r.Reason}}, nil
}

// TemplatePolicy is one template as a policy client (XCEP) sees it.
type TemplatePolicy struct {
	Template   policy.Template
	Autoenroll bool // the caller may autoenroll it (permissions and template flags)
}

// PolicySet is what a policy client may enroll for, and when that last changed.
type PolicySet struct {
	Templates []TemplatePolicy
	Changed   time.Time // the newest whenChanged of the offered templates (zero if unknown)
}

// Policies lists the offered templates account may read and enroll, with its autoenroll right.
func (s *Service) Policies(ctx context.Context, account string) (*PolicySet, error) {
	dc, err := s.directory("listing policies")
	if err != nil {
		return nil, err
	}
	list, err := s.OfferedTemplates(ctx)
	if err != nil {
		return nil, err
	}
	set := &PolicySet{}
	for _, ot := range list {
		if ot.Changed.After(set.Changed) {
			set.Changed = ot.Changed
		}
		if ot.Template == nil {
			continue
		}
		a, reasons, err := s.account(ctx, dc, account, ot.Template)
		if err != nil {
			return nil, err
		}
		if reasons != nil {
			return nil, &Error{Kind: KindNotFound, Op: "listing policies", Err: errors.New(strings.Join(reasons, "; "))}
		}
		in, err := s.input(ctx, dc, *ot.Template, *a, nil, false, namesNone)
		if err != nil {
			return nil, err
		}
		d := policy.Decide(in)
		if !d.Access.Read.Allowed || !d.Access.Enroll.Allowed {
			continue
		}
		set.Templates = append(set.Templates, TemplatePolicy{Template: *ot.Template, Autoenroll: d.MayAutoenroll})
	}
	return set, nil
}
