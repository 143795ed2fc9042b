// Certificate requests in the SQLite store.

package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
)

const requestColumns = "id, state, template, requester, account, csr, submitted, updated, reason, serial, decision"

// CreateRequest records r and its audit events evs in one transaction and returns the new
// request's ID, which each event gets as its "request_id" field. An empty State means pending;
// a zero Submitted means now and a zero Updated means Submitted. A non-empty Serial must be
// reserved. If an event cannot be written, neither is the request.
func (s *SQLite) CreateRequest(ctx context.Context, r Request, evs ...Event) (int64, error) {
	insert, err := s.prepareRequest(r)
	if err != nil {
		return 0, err
	}
	var id int64
	err = s.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
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
type requestInserter func(ctx context.Context, tx *sql.Tx) (int64, error)

// prepareRequest validates r and fills its defaults outside the writer.
func (s *SQLite) prepareRequest(r Request) (requestInserter, error) {
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
	ts, err := encTimes(r.Submitted, r.Updated)
	if err != nil {
		return nil, err
	}
	return func(ctx context.Context, tx *sql.Tx) (int64, error) {
		res, err := tx.ExecContext(ctx, `INSERT INTO requests
			(state, template, requester, account, csr, submitted, updated, reason, serial, decision)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
			string(r.State), r.Template, r.Requester, r.Account, r.CSR, ts[0], ts[1], r.Reason, nullString(r.Serial), r.Decision)
		if err != nil {
			return 0, fmt.Errorf("store: create request: %w", err)
		}
		return res.LastInsertId()
	}, nil
}

// SetRequestState moves a pending request to state with reason and appends its audit events
// evs, in one transaction. Only pending requests change state; issued is reached only through
// CommitCertificate, which records the serial.
func (s *SQLite) SetRequestState(ctx context.Context, id int64, state RequestState, reason string, evs ...Event) error {
	if !state.Valid() {
		return fmt.Errorf("store: set request %d state: invalid state %q", id, state)
	}
	if state == RequestIssued {
		return fmt.Errorf("store: set request %d state: a request becomes issued only by CommitCertificate", id)
	}
	now, err := encTime(s.now())
	if err != nil {
		return err
	}
	return s.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE requests SET state = ?, reason = ?, updated = ?
			WHERE id = ? AND state = 'pending'`, string(state), reason, now, id)
		if err != nil {
			return fmt.Errorf("store: set request %d state: %w", id, err)
		}
		if err := checkPendingUpdate(ctx, tx, res, id, state); err != nil {
			return err
		}
		return s.insertEvents(ctx, tx, id, evs)
	})
}

// checkPendingUpdate explains an UPDATE ... WHERE state = 'pending' of request id that changed
// no row: the request is missing (ErrNotFound) or not pending (ErrConflict).
func checkPendingUpdate(ctx context.Context, tx *sql.Tx, res sql.Result, id int64, to RequestState) error {
	n, err := res.RowsAffected()
	if err != nil {
		return err
	}
	if n == 1 {
		return nil
	}
	var cur string
	err = tx.QueryRowContext(ctx, "SELECT state FROM requests WHERE id = ?", id).Scan(&cur)
	if errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("store: request %d: %w", id, ErrNotFound)
	}
	if err != nil {
		return fmt.Errorf("store: request %d: %w", id, err)
	}
	return fmt.Errorf("store: request %d is %s, cannot become %s: %w", id, cur, to, ErrConflict)
}

// GetRequest returns request id, or ErrNotFound.
func (s *SQLite) GetRequest(ctx context.Context, id int64) (Request, error) {
	var r Request
	err := s.read(func() error {
		row := s.rdb.QueryRowContext(ctx, "SELECT "+requestColumns+" FROM requests WHERE id = ?", id)
		var err error
		r, err = scanRequest(row)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("store: request %d: %w", id, ErrNotFound)
		}
		return err
	})
	return r, err
}

// ListRequests returns the requests f selects, ordered by ID.
func (s *SQLite) ListRequests(ctx context.Context, f RequestFilter) ([]Request, error) {
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
	err = s.read(func() error {
		rows, err := s.rdb.QueryContext(ctx, q, args...)
		if err != nil {
			return fmt.Errorf("store: list requests: %w", err)
		}
		defer rows.Close()
		for rows.Next() {
			r, err := scanRequest(rows)
			if err != nil {
				return err
			}
			out = append(out, r)
		}
		if err := rows.Err(); err != nil {
			return fmt.Errorf("store: list requests: %w", err)
		}
		return nil
	})
	return out, err
}

func scanRequest(sc scanner) (Request, error) {
	var (
		r                  Request
		state              string
		submitted, updated sql.NullString
		serial             sql.NullString
	)
	err := sc.Scan(&r.ID, &state, &r.Template, &r.Requester, &r.Account, &r.CSR,
		&submitted, &updated, &r.Reason, &serial, &r.Decision)
	if err != nil {
		return Request{}, err
	}
	r.State = RequestState(state)
	r.Serial = serial.String
	if r.Submitted, err = decTime(submitted); err != nil {
		return Request{}, err
	}
	if r.Updated, err = decTime(updated); err != nil {
		return Request{}, err
	}
	return r, nil
}
