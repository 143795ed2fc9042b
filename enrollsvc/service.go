// Package enrollsvc is the core of the enrollment service: it orchestrates a certificate request
// from an approved order to a durably stored certificate. Protocol edges (the local API now;
// XCEP/WSTEP and SCEP later) call Service; Service calls issue, store and events, and never a
// protocol.
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
	CreateRequest(ctx context.Context, r store.Request) (int64, error)
	SetRequestState(ctx context.Context, id int64, state store.RequestState, reason string) error
	BeginIssuance(ctx context.Context, r store.Request, serial string, before store.Event) (int64, error)
	ReserveSerial(ctx context.Context, serial string, before store.Event) error
	GetRequest(ctx context.Context, id int64) (store.Request, error)
	GetCertificate(ctx context.Context, serial string) (store.Certificate, error)
	ListRequests(ctx context.Context, f store.RequestFilter) ([]store.Request, error)
	CommitCertificate(ctx context.Context, c store.Certificate, after store.Event) error
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
}

// Issued is the result of a successful issuance.
type Issued struct {
	RequestID   int64
	Certificate *x509.Certificate
}

// IssueApproved issues a certificate for an order that policy (or an administrator) approved,
// recording a new request for it. The certificate is durable in the store before this returns it.
func (s *Service) IssueApproved(ctx context.Context, o issue.Order, m Meta) (*Issued, error) {
	now := s.rec.Now()
	req := store.Request{State: store.RequestPending, Template: m.Template, Requester: m.Requester,
		Account: m.Account, CSR: m.CSR, Submitted: now, Updated: now}
	p, err := s.issuer.Prepare(o)
	if err != nil {
		req.State, req.Reason = store.RequestFailed, err.Error()
		reqID, serr := s.store.CreateRequest(ctx, req)
		if serr != nil {
			return nil, &Error{Kind: KindInternal, Op: "recording refused request", Err: errors.Join(err, serr)}
		}
		return nil, s.prepareFailed(ctx, reqID, err)
	}
	// One durable write records the request, reserves the serial and says we are about to sign.
	return s.signAndCommit(ctx, p, m, func(before store.Event) (int64, error) {
		return s.store.BeginIssuance(ctx, req, p.Serial(), before)
	})
}

// issueForRequest issues the certificate of an existing pending request (on approval).
func (s *Service) issueForRequest(ctx context.Context, reqID int64, o issue.Order, m Meta) (*Issued, error) {
	p, err := s.issuer.Prepare(o)
	if err != nil {
		if serr := s.store.SetRequestState(context.WithoutCancel(ctx), reqID, store.RequestFailed, err.Error()); serr != nil {
			s.log.ErrorContext(ctx, "marking request failed", "request_id", reqID, "error", serr)
		}
		return nil, s.prepareFailed(ctx, reqID, err)
	}
	return s.signAndCommit(ctx, p, m, func(before store.Event) (int64, error) {
		before.Fields["request_id"] = reqID
		return reqID, s.store.ReserveSerial(ctx, p.Serial(), before)
	})
}

// prepareFailed records why an order could not be built and returns the error to hand back.
func (s *Service) prepareFailed(ctx context.Context, reqID int64, err error) error {
	kind, id := KindBadRequest, events.RequestFailed
	if errors.Is(err, issue.ErrLint) {
		kind, id = KindRefused, events.LintRefused
	}
	_ = s.rec.Record(context.WithoutCancel(ctx), id, "", "request_id", reqID, "error", err.Error())
	return &Error{Kind: kind, Op: fmt.Sprintf("request %d", reqID), RequestID: reqID, Err: err}
}

// signAndCommit durably begins the issuance (begin reserves the serial and writes the "signing"
// event, returning the request ID), has the HSM sign, and durably stores the certificate with
// the "issued" event.
func (s *Service) signAndCommit(ctx context.Context, p *issue.Prepared, m Meta, begin func(before store.Event) (int64, error)) (*Issued, error) {
	serial := p.Serial()
	fields := []any{"serial", serial, "subject", p.Subject(), "account", m.Account, "template", m.Template,
		"requester", m.Requester, "not_after", p.NotAfter().Format(time.RFC3339)}
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
		s.fail(ctx, reqID, events.SigningFailed, err)
		return nil, &Error{Kind: KindUnavailable, Op: "signing serial " + serial, RequestID: reqID, Err: err}
	}
	if len(p.Warnings()) > 0 {
		fields = append(fields, "lint_warnings", p.Warnings())
	}
	after := events.New(s.rec.Now(), events.CertificateIssued, "", fields...)
	c := store.Certificate{Serial: serial, DER: cert.Raw, Template: m.Template, Account: m.Account,
		Subject: issue.FormatName(cert.RawSubject), NotBefore: cert.NotBefore, NotAfter: cert.NotAfter,
		Status: store.CertValid, RequestID: reqID, IssuedAt: s.rec.Now()}
	if err := s.store.CommitCertificate(ctx, c, after); err != nil {
		// The certificate was signed but is not stored: nobody gets it, and its serial stays used.
		s.fail(ctx, reqID, events.RequestFailed, fmt.Errorf("storing certificate: %w", err))
		return nil, &Error{Kind: KindInternal, Op: "storing serial " + serial, RequestID: reqID, Err: err}
	}
	s.rec.Log(ctx, after)
	return &Issued{RequestID: reqID, Certificate: cert}, nil
}

// fail marks a request failed and records why. Errors here are logged: the caller already
// returns the original error.
func (s *Service) fail(ctx context.Context, reqID int64, id events.ID, cause error) {
	// A cancelled caller must not stop us recording the failure.
	ctx = context.WithoutCancel(ctx)
	if err := s.store.SetRequestState(ctx, reqID, store.RequestFailed, cause.Error()); err != nil {
		s.log.ErrorContext(ctx, "marking request failed", "request_id", reqID, "error", err)
	}
	_ = s.rec.Record(ctx, id, "", "request_id", reqID, "error", cause.Error())
}
