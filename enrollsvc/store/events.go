// Audit events.

package store

import (
	"context"
	"database/sql"
	"fmt"
	"maps"
	"strings"
	"time"

	"github.com/enrollment-appliance/aeappliance/proto/auditlog"
)

// AppendEvent stores e and returns its Seq. A zero Time means now.
func (s *core) AppendEvent(ctx context.Context, e Event) (int64, error) {
	ins, err := s.prepareEvent(e)
	if err != nil {
		return 0, err
	}
	var seq int64
	err = s.eng.write(ctx, func(ctx context.Context, tx conn) error {
		var err error
		seq, err = ins(ctx, tx)
		return err
	})
	if err != nil {
		return 0, err
	}
	return seq, nil
}

// insertEvents appends evs inside a write transaction, each with requestID as its
// "request_id" field when requestID is not 0.
func (s *core) insertEvents(ctx context.Context, tx conn, requestID int64, evs []Event) error {
	for _, e := range evs {
		if requestID != 0 {
			e.Fields = maps.Clone(e.Fields)
			if e.Fields == nil {
				e.Fields = map[string]any{}
			}
			e.Fields["request_id"] = requestID
		}
		ins, err := s.prepareEvent(e)
		if err != nil {
			return err
		}
		if _, err := ins(ctx, tx); err != nil {
			return err
		}
	}
	return nil
}

// eventInserter inserts a prepared event inside a write and returns its Seq.
type eventInserter func(ctx context.Context, tx conn) (int64, error)

// prepareEvent checks and encodes e before the transaction, so that the write itself only
// inserts. The inserter appends the event to this store's chain (proto/auditlog): the upsert of
// the chain's head row hands out the next position and the previous hash, and its row lock
// (PostgreSQL) or the one writer (SQLite) keeps every other writer of the chain waiting until
// this transaction ends, so positions follow Seq and no two events share one.
func (s *core) prepareEvent(e Event) (eventInserter, error) {
	if e.Time.IsZero() {
		e.Time = s.now()
	}
	e.Time = e.Time.UTC().Truncate(time.Microsecond)
	if err := checkTimes(e.Time); err != nil {
		return nil, err
	}
	canon, err := auditlog.CanonicalFields(e.Fields)
	if err != nil {
		return nil, fmt.Errorf("store: event fields: %w", err)
	}
	var fields any
	if canon != nil {
		fields = string(canon)
	}
	for _, t := range []string{e.Category, e.Level, e.Message, s.chain} {
		if err := checkText(t); err != nil {
			return nil, err
		}
	}
	return func(ctx context.Context, tx conn) (int64, error) {
		var (
			n    int64
			prev []byte
		)
		if err := tx.queryRow(ctx, `INSERT INTO event_chains (instance, n, hash) VALUES (?, 1, NULL)
			ON CONFLICT (instance) DO UPDATE SET n = event_chains.n + 1 RETURNING n, hash`, s.chain).Scan(&n, &prev); err != nil {
			return 0, fmt.Errorf("store: append event %d: the audit chain: %w", e.ID, err)
		}
		if prev == nil {
			prev = auditlog.Zero()
		}
		hash, err := auditlog.HashFields(auditlog.Record{Instance: s.chain, N: n, Prev: prev, ID: e.ID, Category: e.Category,
			Level: e.Level, Time: e.Time, Message: e.Message}, canon)
		if err != nil {
			return 0, fmt.Errorf("store: append event %d: %w", e.ID, err)
		}
		var seq int64
		err = tx.queryRow(ctx, `INSERT INTO events (id, category, level, "time", message, fields, instance, n, prev, hash)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING seq`, e.ID, e.Category, e.Level, e.Time, e.Message, fields,
			s.chain, n, prev, hash).Scan(&seq)
		if err != nil {
			return 0, fmt.Errorf("store: append event %d: %w", e.ID, err)
		}
		if _, err := tx.exec(ctx, "UPDATE event_chains SET hash = ? WHERE instance = ?", hash, s.chain); err != nil {
			return 0, fmt.Errorf("store: append event %d: the audit chain: %w", e.ID, err)
		}
		return seq, nil
	}, nil
}

// ListEvents returns the events f selects, ordered by Seq.
func (s *core) ListEvents(ctx context.Context, f EventFilter) ([]Event, error) {
	n, err := limit("list events", f.Limit, 100, 1000)
	if err != nil {
		return nil, err
	}
	if f.AfterSeq < 0 || f.ID < 0 {
		return nil, fmt.Errorf("store: list events: negative AfterSeq %d or ID %d", f.AfterSeq, f.ID)
	}
	where := []string{"seq > ?"}
	args := []any{f.AfterSeq}
	if f.ID != 0 {
		where = append(where, "id = ?")
		args = append(args, f.ID)
	}
	if f.Category != "" {
		where = append(where, "category = ?")
		args = append(args, f.Category)
	}
	if f.Chain != nil {
		where = append(where, "instance = ?")
		args = append(args, *f.Chain)
	}
	const cols = `seq, id, category, level, "time", message, fields, instance, n, prev, hash`
	q := `SELECT ` + cols + ` FROM events WHERE ` +
		strings.Join(where, " AND ") + " ORDER BY seq LIMIT ?"
	if f.Newest {
		q = `SELECT * FROM (SELECT ` + cols + ` FROM events WHERE ` +
			strings.Join(where, " AND ") + " ORDER BY seq DESC LIMIT ?) AS newest ORDER BY seq"
	}
	args = append(args, n)

	var out []Event
	err = s.eng.readEvents(ctx, func(ctx context.Context, db conn) error {
		return eachRow(ctx, db, func(row scanner) error {
			var (
				e         Event
				fieldsRaw sql.NullString
				instance  sql.NullString
				n         sql.NullInt64
			)
			if err := row.Scan(&e.Seq, &e.ID, &e.Category, &e.Level, &e.Time, &e.Message, &fieldsRaw,
				&instance, &n, &e.Prev, &e.Hash); err != nil {
				return err
			}
			e.Instance, e.N = instance.String, n.Int64
			var err error
			if e.Fields, err = decFields(fieldsRaw); err != nil {
				return err
			}
			out = append(out, e)
			return nil
		}, q, args...)
	})
	if err != nil {
		return nil, fmt.Errorf("store: list events: %w", err)
	}
	return out, nil
}
