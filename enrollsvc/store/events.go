// Audit events in the SQLite store.

package store

import (
	"context"
	"database/sql"
	"fmt"
	"maps"
	"strings"
)

// AppendEvent stores e and returns its Seq. A zero Time means now.
func (s *SQLite) AppendEvent(ctx context.Context, e Event) (int64, error) {
	ins, err := s.prepareEvent(e)
	if err != nil {
		return 0, err
	}
	var seq int64
	err = s.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
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
func (s *SQLite) insertEvents(ctx context.Context, tx *sql.Tx, requestID int64, evs []Event) error {
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
type eventInserter func(ctx context.Context, tx *sql.Tx) (int64, error)

// prepareEvent checks and encodes e outside the writer, so that the op itself only inserts.
func (s *SQLite) prepareEvent(e Event) (eventInserter, error) {
	if e.Time.IsZero() {
		e.Time = s.now()
	}
	t, err := encTime(e.Time)
	if err != nil {
		return nil, err
	}
	fields, err := encFields(e.Fields)
	if err != nil {
		return nil, err
	}
	return func(ctx context.Context, tx *sql.Tx) (int64, error) {
		res, err := tx.ExecContext(ctx, `INSERT INTO events (id, category, level, time, message, fields)
			VALUES (?, ?, ?, ?, ?, ?)`, e.ID, e.Category, e.Level, t, e.Message, fields)
		if err != nil {
			return 0, fmt.Errorf("store: append event %d: %w", e.ID, err)
		}
		return res.LastInsertId()
	}, nil
}

// ListEvents returns the events f selects, ordered by Seq.
func (s *SQLite) ListEvents(ctx context.Context, f EventFilter) ([]Event, error) {
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
	q := `SELECT seq, id, category, level, time, message, fields FROM events WHERE ` +
		strings.Join(where, " AND ") + " ORDER BY seq LIMIT ?"
	if f.Newest {
		q = `SELECT * FROM (SELECT seq, id, category, level, time, message, fields FROM events WHERE ` +
			strings.Join(where, " AND ") + " ORDER BY seq DESC LIMIT ?) ORDER BY seq"
	}
	args = append(args, n)

	var out []Event
	err = s.read(func() error {
		rows, err := s.rdb.QueryContext(ctx, q, args...)
		if err != nil {
			return fmt.Errorf("store: list events: %w", err)
		}
		defer rows.Close()
		for rows.Next() {
			var (
				e            Event
				t, fieldsRaw sql.NullString
			)
			if err := rows.Scan(&e.Seq, &e.ID, &e.Category, &e.Level, &t, &e.Message, &fieldsRaw); err != nil {
				return fmt.Errorf("store: list events: %w", err)
			}
			if e.Time, err = decTime(t); err != nil {
				return err
			}
			if e.Fields, err = decFields(fieldsRaw); err != nil {
				return err
			}
			out = append(out, e)
		}
		if err := rows.Err(); err != nil {
			return fmt.Errorf("store: list events: %w", err)
		}
		return nil
	})
	return out, err
}
