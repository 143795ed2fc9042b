// Package store keeps the enrollment service's durable state: requests, issued certificates,
// reserved serial numbers and audit events. Store is the boundary, with two implementations: the
// embedded SQLite database of one appliance (Open), the default, and a PostgreSQL database that
// several appliances share (OpenPostgres). Every write method returns only once the change is
// durable, so a certificate recorded here survives a crash of the process or machine.
package store

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Errors callers can test with errors.Is.
var (
	// ErrNotFound: the request, certificate or event asked for does not exist.
	ErrNotFound = errors.New("store: not found")
	// ErrSerialUsed: the serial number was reserved or used before; serials are never reused.
	ErrSerialUsed = errors.New("store: serial number already used")
	// ErrConflict: the change does not fit the current state (e.g. approving an issued request).
	ErrConflict = errors.New("store: conflicting state")
	// ErrTransactionRecorded: the SCEP transaction (profile, ID) is recorded already, with
	// another request. It is also an ErrConflict.
	ErrTransactionRecorded = fmt.Errorf("%w: the SCEP transaction is recorded already", ErrConflict)
	// ErrClosed: the store was closed.
	ErrClosed = errors.New("store: closed")
	// ErrUnavailable: the database cannot be reached now (a shared PostgreSQL server down or
	// restarting); nothing was changed by the call unless it says its outcome is unknown, and
	// the same call may be tried again later.
	ErrUnavailable = errors.New("store: the database is unavailable")
)

// RequestState is the life-cycle state of a certificate request.
type RequestState string

// Request states.
const (
	RequestPending RequestState = "pending"
	RequestIssued  RequestState = "issued"
	RequestDenied  RequestState = "denied"
	RequestFailed  RequestState = "failed"
)

// Valid reports whether s is one of the defined states.
func (s RequestState) Valid() bool {
	switch s {
	case RequestPending, RequestIssued, RequestDenied, RequestFailed:
		return true
	}
	return false
}

// Request is one certificate request as received and decided.
type Request struct {
	ID        int64        `json:"id"`
	State     RequestState `json:"state"`
	Template  string       `json:"template"`
	Requester string       `json:"requester"` // who sent it (authenticated identity)
	Account   string       `json:"account"`   // whom the certificate is for
	CSR       []byte       `json:"csr"`       // DER PKCS#10 (or the raw request body)
	Submitted time.Time    `json:"submitted"`
	Updated   time.Time    `json:"updated"`
	Reason    string       `json:"reason,omitempty"`   // why denied/failed/pending
	Serial    string       `json:"serial,omitempty"`   // serial of the issued certificate
	Decision  []byte       `json:"decision,omitempty"` // policy's decision (JSON), kept for approval
	// SCEP, when set, is the SCEP transaction the request came with (RFC 8894 §3.2.1.1), recorded
	// in the request's own transaction with its new ID (CreateRequest, BeginIssuance): a retry
	// finds the request from its first answer on, and a second request with the same transaction
	// ID fails with ErrTransactionRecorded, writing nothing, before any certificate is signed,
	// unless the recorded request failed and the body is the same: then the new request takes the
	// transaction over (a retry after a failure is a new attempt). Not stored in the request's row
	// (see SCEPTransactionOfRequest).
	SCEP *SCEPTransaction `json:"-"`
}

// CertStatus is the revocation status of an issued certificate. Expiry is derived from NotAfter.
type CertStatus string

// Certificate statuses.
const (
	CertValid   CertStatus = "valid"
	CertRevoked CertStatus = "revoked"
)

// Certificate is an issued certificate.
type Certificate struct {
	Serial           string     `json:"serial"` // lower-case hex, no leading zeros, as certutil.SerialString makes
	DER              []byte     `json:"der"`
	Template         string     `json:"template"`
	Account          string     `json:"account"`
	Subject          string     `json:"subject"`
	NotBefore        time.Time  `json:"not_before"`
	NotAfter         time.Time  `json:"not_after"`
	Status           CertStatus `json:"status"`
	RevokedAt        time.Time  `json:"revoked_at,omitzero"`
	RevocationReason int        `json:"revocation_reason,omitempty"` // RFC 5280 CRLReason
	RequestID        int64      `json:"request_id,omitempty"`
	IssuedAt         time.Time  `json:"issued_at"`
}

// Event is one audit event as stored. IDs and categories are defined by package events.
type Event struct {
	Seq      int64          `json:"seq"` // assigned by the store, increasing
	ID       int            `json:"id"`
	Category string         `json:"category"` // "Admin" or "Operational"
	Level    string         `json:"level"`    // "info", "warning", "error"
	Time     time.Time      `json:"time"`
	Message  string         `json:"message"`
	Fields   map[string]any `json:"fields,omitempty"`
	// The audit chain (proto/auditlog), set by the store: the instance whose chain holds the
	// event, its position there, the previous event's hash and its own. Events recorded before
	// the trail was chained have none.
	Instance string `json:"instance,omitempty"`
	N        int64  `json:"n,omitempty"`
	Prev     []byte `json:"prev,omitempty"`
	Hash     []byte `json:"hash,omitempty"`
}

// RequestFilter selects requests; zero values match everything. Results are ordered by ID.
type RequestFilter struct {
	State   RequestState
	Account string
	AfterID int64 // only IDs greater than this (paging)
	Limit   int   // 0 means a default of 100; at most 1000
}

// CertFilter selects certificates; zero values match everything. Results are ordered by IssuedAt then Serial.
type CertFilter struct {
	Account  string
	Template string
	Status   CertStatus
	Limit    int // 0 means a default of 100; at most 100000
	Offset   int
}

// EventFilter selects events; zero values match everything. Results are ordered by Seq.
type EventFilter struct {
	AfterSeq int64
	ID       int
	Category string
	Limit    int // 0 means a default of 100; at most 1000
	// Newest selects the last Limit events that match instead of the first (still in
	// ascending order).
	Newest bool
	// Chain, when not nil, selects the events of that instance's audit chain.
	Chain *string
}

// Store is the durable state of the enrollment service. Implementations are safe for
// concurrent use; every write is durable when it returns. Times are kept to the microsecond and
// read back in UTC; strings must be UTF-8 without NUL characters; times must lie in the years
// 0000 to 9999.
type Store interface {
	// CreateRequest records a new request with its audit events (each given the new ID as
	// "request_id") in one transaction and returns its ID. r.ID is ignored.
	CreateRequest(ctx context.Context, r Request, evs ...Event) (int64, error)
	// SetRequestState moves a request to state with reason (e.g. pending→denied). ErrNotFound, ErrConflict
	// if the request is already issued/denied/failed.
	SetRequestState(ctx context.Context, id int64, state RequestState, reason string, evs ...Event) error
	GetRequest(ctx context.Context, id int64) (Request, error)
	ListRequests(ctx context.Context, f RequestFilter) ([]Request, error)

	// ReserveSerial durably records serial as used, together with the audit event written before
	// the CA signs, in one transaction. ErrSerialUsed if the serial was ever reserved before.
	ReserveSerial(ctx context.Context, serial string, before ...Event) error
	// BeginIssuance records a new pending request r, reserves serial and appends before (with
	// the new request's ID added as field "request_id"), in one transaction, and returns the
	// request's ID. ErrSerialUsed as for ReserveSerial; nothing is written on any error.
	BeginIssuance(ctx context.Context, r Request, serial string, before ...Event) (int64, error)
	// CommitCertificate durably stores an issued certificate (its serial must be reserved), marks
	// its request (c.RequestID, if non-zero) issued with the serial, and appends the audit event
	// written after signing, in one transaction.
	CommitCertificate(ctx context.Context, c Certificate, after ...Event) error
	GetCertificate(ctx context.Context, serial string) (Certificate, error)
	// RevokeCertificate marks a valid certificate revoked (time, RFC 5280 reason) with its audit
	// event, in one transaction. ErrNotFound, or ErrConflict if it is already revoked.
	RevokeCertificate(ctx context.Context, serial string, reason int, at time.Time, e Event) error
	ListCertificates(ctx context.Context, f CertFilter) ([]Certificate, error)
	CountCertificates(ctx context.Context) (int64, error)

	// EachRevoked walks the revoked certificates revoked after since (zero: all); fn must not
	// call the store. NextCRLNumber hands out ever-growing CRL numbers, durably.
	EachRevoked(ctx context.Context, since time.Time, fn func(RevokedEntry) error) error
	NextCRLNumber(ctx context.Context) (int64, error)

	// SCEP profiles, one-time challenges (by hash) and transactions (scep.go; a transaction is
	// recorded with its request: Request.SCEP).
	AddSCEPProfile(ctx context.Context, p SCEPProfile, e Event) error
	GetSCEPProfile(ctx context.Context, name string) (SCEPProfile, error)
	ListSCEPProfiles(ctx context.Context) ([]SCEPProfile, error)
	AddSCEPChallenge(ctx context.Context, c SCEPChallenge, e Event) error
	UseSCEPChallenge(ctx context.Context, profile string, sha []byte, now time.Time) (SCEPChallenge, error)
	GetSCEPTransaction(ctx context.Context, profile, id string) (SCEPTransaction, error)
	SCEPTransactionOfRequest(ctx context.Context, id int64) (SCEPTransaction, error)

	// AppendEvent stores an audit event and returns its Seq.
	AppendEvent(ctx context.Context, e Event) (int64, error)
	ListEvents(ctx context.Context, f EventFilter) ([]Event, error)

	// Ping checks that the database answers.
	Ping(ctx context.Context) error
	Close() error
}
