// Package enrollsvc is the core of the enrollment service: it orchestrates a certificate request
// from an approved order to a durably stored certificate. Protocol edges (the local API now;
// XCEP/WSTEP and SCEP later) call Service; Service calls issue, store and events, and never a
// protocol.
//
// Every path that ends in a CA signature (the directory's Enroll, Renew and SCEP, approvals of
// held requests, IssueAdmin, IssueProfile for the appliance's own certificates) goes through
// issueOrder or issueForRequest, and so through issue.Prepare, the one issuance gate: the
// subject key's checks and lint. issue.Sign accepts nothing else (docs/architecture.md).
//
// The order of one issuance is fixed: build and lint the certificate (issue.Prepare); in one
// durable write, record the request, reserve the serial and write the "signing" audit event;
// have the HSM sign; in a second durable write, store the certificate, mark the request issued
// and write the "issued" audit event; only then return it. A crash at any point leaves either no certificate anywhere or a stored one.
package enrollsvc

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"sync/atomic"
	"time"

	"github.com/enrollment-appliance/aeappliance/enrollsvc/events"
	"github.com/enrollment-appliance/aeappliance/enrollsvc/issue"
	"github.com/enrollment-appliance/aeappliance/enrollsvc/store"
)

// Kind classifies errors so that each protocol edge can choose its wire form (HTTP status,
// SOAP fault, SCEP failInfo) without knowing the cause.
type Kind int

// Error kinds.
const (
	KindInternal    Kind = iota // our fault: store, HSM
	KindBadRequest              // malformed or unacceptable input
	KindNotFound                // no such request or certificate
	KindConflict                // state does not allow it
	KindRefused                 // policy or lint refused it
	KindUnavailable             // a dependency (HSM, directory) is down; try later
)

// Error is an error with a Kind.
type Error struct {
	Kind      Kind
	Op        string
	RequestID int64 // the recorded request this is about, or 0
	Err       error
}

func (e *Error) Error() string { return e.Op + ": " + e.Err.Error() }
func (e *Error) Unwrap() error { return e.Err }

// KindOf returns the kind of err (KindInternal if it has none).
func KindOf(err error) Kind {
	// An unreachable store is a dependency down, whoever wrapped the error.
	if errors.Is(err, store.ErrUnavailable) {
		return KindUnavailable
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Kind
	}
	switch {
	case errors.Is(err, store.ErrNotFound):
		return KindNotFound
	case errors.Is(err, store.ErrConflict):
		return KindConflict
	}
	return KindInternal
}

// Store is what the service needs of the durable store.
type Store interface {
	CreateRequest(ctx context.Context, r store.Request, evs ...store.Event) (int64, error)
	SetRequestState(ctx context.Context, id int64, state store.RequestState, reason string, evs ...store.Event) error
	BeginIssuance(ctx context.Context, r store.Request, serial string, before ...store.Event) (int64, error)
	ReserveSerial(ctx context.Context, serial string, before ...store.Event) error
	GetRequest(ctx context.Context, id int64) (store.Request, error)
	GetCertificate(ctx context.Context, serial string) (store.Certificate, error)
	ListRequests(ctx context.Context, f store.RequestFilter) ([]store.Request, error)
	CommitCertificate(ctx context.Context, c store.Certificate, after ...store.Event) error
	AppendEvent(ctx context.Context, e store.Event) (int64, error)
}

// Issuer is what the service needs of the signing CA.
type Issuer interface {
	CACert() *x509.Certificate
	Prepare(o issue.Order) (*issue.Prepared, error)
	Sign(ctx context.Context, p *issue.Prepared) (*x509.Certificate, error)
}

// Service runs certificate requests through issuance.
type Service struct {
	store  Store
	issuer Issuer
	rec    *events.Recorder
	log    *slog.Logger
	dir    *DirectoryConfig // nil without a directory

	onRevoke func(serial string) // nil: nothing to do after a revocation

	scepRefused refusalCounts // anonymous SCEP refusals, recorded per profile per window
	mdm         MDMValidator  // the MDM connector, for profiles an MDM validates (nil: none)
	exchange    ExchangeKey   // opens the keys clients archive (nil: key archival requests are refused)
	naming      atomic.Bool   // a background search for ACE trustees' names is running (aceNames)
}

// New returns a Service. rec writes audit events (to the same store).
func New(s Store, iss Issuer, rec *events.Recorder, log *slog.Logger) *Service {
	if log == nil {
		log = slog.Default()
	}
	return &Service{store: s, issuer: iss, rec: rec, log: log}
}

// CACert is the certificate of the CA that signs.
func (s *Service) CACert() *x509.Certificate { return s.issuer.CACert() }

// Meta says who asked for an order and for whom.
type Meta struct {
	Requester string // authenticated identity that sent the request
	Account   string // whom the certificate is for
	Template  string // template or profile name
	CSR       []byte // the request as received (DER), kept with the request
	Agent     string // the enrollment agent that asked on Account's behalf ("" none)
	// SCEP is the SCEP transaction the request came with (nil: none): recorded with the request
	// (store.Request.SCEP), whatever becomes of it.
	SCEP *store.SCEPTransaction
}

// fields are the audit fields of m besides account, template and requester: the agent's name
// when there is one.
func (m Meta) fields() []any {
	if m.Agent == "" {
		return nil
	}
	return []any{"agent", m.Agent}
}

// Issued is the result of a successful issuance.
type Issued struct {
	RequestID   int64
	Certificate *x509.Certificate
}

// issueOrder issues a certificate for an order that policy or a profile made, recording a new
// request for it. The order passes the issuance gate (issue.Prepare: key checks and lint)
// before anything reaches the CA key. The certificate is durable in the store before this
// returns it; extra audit events are written with it.
func (s *Service) issueOrder(ctx context.Context, o issue.Order, m Meta, extra ...store.Event) (*Issued, error) {
	now := s.rec.Now()
	req := store.Request{State: store.RequestPending, Template: m.Template, Requester: m.Requester,
		Account: m.Account, CSR: m.CSR, Submitted: now, Updated: now, SCEP: m.SCEP}
	p, err := s.issuer.Prepare(o)
	if err != nil {
		kind, ev := s.gateRefusal(err, m.Template)
		req.State, req.Reason = store.RequestFailed, err.Error()
		reqID, serr := s.store.CreateRequest(context.WithoutCancel(ctx), req, ev)
		if serr != nil {
			return nil, &Error{Kind: KindInternal, Op: "recording refused request", Err: errors.Join(err, serr)}
		}
		s.rec.Log(ctx, ev)
		return nil, &Error{Kind: kind, Op: fmt.Sprintf("request %d", reqID), RequestID: reqID, Err: err}
	}
	// One durable write records the request, reserves the serial and says we are about to sign.
	return s.signAndCommit(ctx, p, m, func(before ...store.Event) (int64, error) {
		return s.store.BeginIssuance(ctx, req, p.Serial(), before...)
	}, extra)
}

// issueForRequest issues the certificate of an existing pending request (on approval); the
// approval's audit event is written with the request's next state change.
func (s *Service) issueForRequest(ctx context.Context, reqID int64, o issue.Order, m Meta, approved store.Event) (*Issued, error) {
	p, err := s.issuer.Prepare(o)
	if err != nil {
		kind, ev := s.gateRefusal(err, m.Template)
		if serr := s.store.SetRequestState(context.WithoutCancel(ctx), reqID, store.RequestFailed, err.Error(), approved, ev); serr != nil {
			return nil, &Error{Kind: KindInternal, Op: fmt.Sprintf("recording the failure of request %d", reqID), RequestID: reqID, Err: errors.Join(err, serr)}
		}
		s.rec.Log(ctx, approved)
		s.rec.Log(ctx, ev)
		return nil, &Error{Kind: kind, Op: fmt.Sprintf("request %d", reqID), RequestID: reqID, Err: err}
	}
	return s.signAndCommit(ctx, p, m, func(before ...store.Event) (int64, error) {
		for i := range before {
			before[i].Fields["request_id"] = reqID
		}
		return reqID, s.store.ReserveSerial(ctx, p.Serial(), append([]store.Event{approved}, before...)...)
	}, nil)
}

// gateRefusal is the error kind and audit event for an order for template the gate refused.
func (s *Service) gateRefusal(err error, template string) (Kind, store.Event) {
	kind, id := KindBadRequest, events.RequestFailed
	switch {
	case errors.Is(err, issue.ErrKeyRefused):
		kind, id = KindRefused, events.KeyRefused
	case errors.Is(err, issue.ErrLint):
		kind, id = KindRefused, events.LintRefused
	}
	return kind, events.New(s.rec.Now(), id, "", "error", err.Error(), "template", template)
}

// signAndCommit durably begins the issuance (begin reserves the serial and writes the "signing"
// event, returning the request ID), has the HSM sign, and durably stores the certificate with
// the "issued" event and extra (which get the serial and request ID).
func (s *Service) signAndCommit(ctx context.Context, p *issue.Prepared, m Meta, begin func(before ...store.Event) (int64, error), extra []store.Event) (*Issued, error) {
	serial := p.Serial()
	fields := append([]any{"serial", serial, "subject", p.Subject(), "account", m.Account, "template", m.Template,
		"requester", m.Requester, "not_after", p.NotAfter().Format(time.RFC3339)}, m.fields()...)
	before := events.New(s.rec.Now(), events.SigningStarted, "", fields...)
	reqID, err := begin(before)
	if err != nil {
		return nil, &Error{Kind: KindInternal, Op: "recording request and reserving serial " + serial, RequestID: reqID, Err: err}
	}
	before.Fields["request_id"] = reqID
	s.rec.Log(ctx, before)
	fields = append(fields, "request_id", reqID)
	cert, err := s.issuer.Sign(ctx, p)
	if err != nil {
		return nil, &Error{Kind: KindUnavailable, Op: "signing serial " + serial, RequestID: reqID,
			Err: errors.Join(err, s.fail(ctx, reqID, m.Template, events.SigningFailed, err))}
	}
	if len(p.Warnings()) > 0 {
		fields = append(fields, "lint_warnings", p.Warnings())
	}
	after := []store.Event{events.New(s.rec.Now(), events.CertificateIssued, "", fields...)}
	for _, e := range extra {
		e.Fields = maps.Clone(e.Fields)
		if e.Fields == nil {
			e.Fields = map[string]any{}
		}
		e.Fields["serial"], e.Fields["request_id"] = serial, reqID
		after = append(after, e)
	}
	c := store.Certificate{Serial: serial, DER: cert.Raw, Template: m.Template, Account: m.Account,
		Subject: issue.FormatName(cert.RawSubject), NotBefore: cert.NotBefore, NotAfter: cert.NotAfter,
		Status: store.CertValid, RequestID: reqID, IssuedAt: s.rec.Now()}
	if err := s.store.CommitCertificate(ctx, c, after...); err != nil {
		// The certificate was signed but is not stored: nobody gets it, and its serial stays used.
		return nil, &Error{Kind: KindInternal, Op: "storing serial " + serial, RequestID: reqID,
			Err: errors.Join(err, s.fail(ctx, reqID, m.Template, events.RequestFailed, fmt.Errorf("storing certificate: %w", err)))}
	}
	for _, e := range after {
		s.rec.Log(ctx, e)
	}
	return &Issued{RequestID: reqID, Certificate: cert}, nil
}

// fail marks a request failed and records why, in one transaction. The caller already returns
// the original error; fail's own error, if any, is joined to it.
func (s *Service) fail(ctx context.Context, reqID int64, template string, id events.ID, cause error) error {
	// A cancelled caller must not stop us recording the failure.
	ctx = context.WithoutCancel(ctx)
	ev := events.New(s.rec.Now(), id, "", "error", cause.Error(), "template", template)
	if err := s.store.SetRequestState(ctx, reqID, store.RequestFailed, cause.Error(), ev); err != nil {
		s.log.ErrorContext(ctx, "marking request failed", "request_id", reqID, "error", err)
		return fmt.Errorf("marking request %d failed: %w", reqID, err)
	}
	ev.Fields["request_id"] = reqID
	s.rec.Log(ctx, ev)
	return nil
}
