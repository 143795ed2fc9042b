// Certificate requests.

package store

import (
	"context"
	"fmt"
	"strings"
)

// heldRequests selects the requests held for a certificate manager: pending with the policy's
// decision kept for approval. A pending request without one is an issuance in progress (recorded,
// its certificate not yet committed), or one a stop interrupted.
const heldRequests = "state = 'pending' AND length(decision) > 0"

const requestColumns = "id, state, template, requester, account, csr, submitted, updated, reason, serial, decision"

// CreateRequest records r and its audit events evs in one transaction and returns the new
// request's ID, which each event gets as its "request_id" field. An empty State means pending;
// a zero Submitted means now and a zero Updated means Submitted. A non-empty Serial must be
// reserved. If an event cannot be written, neither is the request.
func (s *core) CreateRequest(ctx context.Context, r Request, evs ...Event) (int64, error) {
	insert, err := s.prepareRequest(r)
	if err != nil {
		return 0, err
	}
	var id int64
	err = s.eng.write(ctx, func(ctx context.Context, tx conn) error {
		if id, err = insert(ctx, tx); err != nil {
			return err
		}
		return s.insertEvents(ctx, tx, id, evs)
	})
	if err != nil {
		return 0, err
	}
	return id, nil
}

// requestInserter inserts a validated request inside a write transaction and returns its ID.
type requestInserter func(ctx context.Context, tx conn) (int64, error)

// prepareRequest validates r and fills its defaults before the transaction.
func (s *core) prepareRequest(r Request) (requestInserter, error) {
	if r.State == "" {
		r.State = RequestPending
	}
	if !r.State.Valid() {
		return nil, fmt.Errorf("store: create request: invalid state %q", r.State)
	}
	if r.Submitted.IsZero() {
		r.Submitted = s.now()
	}
	if r.Updated.IsZero() {
		r.Updated = r.Submitted
	}
	if r.Serial != "" {
		if err := checkSerial(r.Serial); err != nil {
			return nil, err
		}
	}
	if err := checkTimes(r.Submitted, r.Updated); err != nil {
		return nil, err
	}
	if r.SCEP != nil {
		if err := r.SCEP.check(); err != nil {
			return nil, err
		}
	}
	return func(ctx context.Context, tx conn) (int64, error) {
		var id int64
		err := tx.queryRow(ctx, `INSERT INTO requests
			(state, template, requester, account, csr, submitted, updated, reason, serial, decision)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id`,
			string(r.State), r.Template, r.Requester, r.Account, r.CSR, r.Submitted, r.Updated, r.Reason,
			nullString(r.Serial), r.Decision).Scan(&id)
		if err != nil {
			return 0, fmt.Errorf("store: create request: %w", err)
		}
		if r.SCEP != nil {
			t := *r.SCEP
			t.RequestID = id
			if err := insertSCEPTransaction(ctx, tx, t); err != nil {
				return 0, err
			}
		}
		return id, nil
	}, nil
}

// SetRequestState moves a pending request to state with reason and appends its audit events
// evs, in one transaction. Only pending requests change state; issued is reached only through
// CommitCertificate, which records the serial.
func (s *core) SetRequestState(ctx context.Context, id int64, state RequestState, reason string, evs ...Event) error {
	if !state.Valid() {
		return fmt.Errorf("store: set request %d state: invalid state %q", id, state)
	}
	if state == RequestIssued {
		return fmt.Errorf("store: set request %d state: a request becomes issued only by CommitCertificate", id)
	}
	now := s.now()
	if err := checkTimes(now); err != nil {
		return err
	}
	return s.eng.write(ctx, func(ctx context.Context, tx conn) error {
		n, err := tx.exec(ctx, `UPDATE requests SET state = ?, reason = ?, updated = ?
			WHERE id = ? AND state = 'pending'`, string(state), reason, now, id)
		if err != nil {
			return fmt.Errorf("store: set request %d state: %w", id, err)
		}
		if err := checkPendingUpdate(ctx, tx, n, id, state); err != nil {
			return err
		}
		return s.insertEvents(ctx, tx, id, evs)
	})
}

// checkPendingUpdate explains an UPDATE ... WHERE state = 'pending' of request id that changed
// n rows: none means the request is missing (ErrNotFound) or not pending (ErrConflict).
func checkPendingUpdate(ctx context.Context, tx conn, n int64, id int64, to RequestState) error {
	if n == 1 {
		return nil
	}
	var cur string
	err := tx.queryRow(ctx, "SELECT state FROM requests WHERE id = ?", id).Scan(&cur)
	if noRows(err) {
		return fmt.Errorf("store: request %d: %w", id, ErrNotFound)
	}
	if err != nil {
		return fmt.Errorf("store: request %d: %w", id, err)
	}
	return fmt.Errorf("store: request %d is %s, cannot become %s: %w", id, cur, to, ErrConflict)
}

// GetRequest returns request id, or ErrNotFound.
func (s *core) GetRequest(ctx context.Context, id int64) (Request, error) {
	var r Request
	err := s.eng.read(ctx, func(ctx context.Context, db conn) error {
		var err error
		r, err = scanRequest(db.queryRow(ctx, "SELECT "+requestColumns+" FROM requests WHERE id = ?", id))
		if noRows(err) {
			return fmt.Errorf("store: request %d: %w", id, ErrNotFound)
		}
		return err
	})
	return r, err
}

// ListRequests returns the requests f selects, ordered by ID.
func (s *core) ListRequests(ctx context.Context, f RequestFilter) ([]Request, error) {
	n, err := limit("list requests", f.Limit, 100, 1000)
	if err != nil {
		return nil, err
	}
	if f.State != "" && !f.State.Valid() {
		return nil, fmt.Errorf("store: list requests: invalid state %q", f.State)
	}
	if f.AfterID < 0 {
		return nil, fmt.Errorf("store: list requests: negative AfterID %d", f.AfterID)
	}
	where := []string{"id > ?"}
	args := []any{f.AfterID}
	if f.State != "" {
		where = append(where, "state = ?")
		args = append(args, string(f.State))
	}
	if f.Account != "" {
		where = append(where, "account = ?")
		args = append(args, f.Account)
	}
	q := "SELECT " + requestColumns + " FROM requests WHERE " + strings.Join(where, " AND ") + " ORDER BY id LIMIT ?"
	args = append(args, n)

	var out []Request
	err = s.eng.read(ctx, func(ctx context.Context, db conn) error {
		return eachRow(ctx, db, func(row scanner) error {
			r, err := scanRequest(row)
			out = append(out, r)
			return err
		}, q, args...)
	})
	if err != nil {
		return nil, fmt.Errorf("store: list requests: %w", err)
	}
	return out, nil
}

func scanRequest(sc scanner) (Request, error) {
	var (
		r      Request
		state  string
		serial *string
	)
	err := sc.Scan(&r.ID, &state, &r.Template, &r.Requester, &r.Account, &r.CSR,
		&r.Submitted, &r.Updated, &r.Reason, &serial, &r.Decision)
	if err != nil {
		return Request{}, err
	}
	r.State = RequestState(state)
	if serial != nil {
		r.Serial = *serial
	}
	return r, nil
}
