// What the two implementations share: the Store methods themselves (requests.go, certs.go,
// events.go, revoke.go, crl.go, scep.go) are written once, on core, against conn, a small
// interface over one database's transaction or pool. Each implementation provides an engine
// (how a write transaction is run and made durable, how reads run) and a conn that translates
// the little that differs: placeholders, and how times are stored.

package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode/utf8"
)

// conn runs the store's SQL. Queries are written with ? placeholders in the SQL both databases
// accept. A time.Time argument is stored in the database's time column type and read back into
// a *time.Time target as UTC; the zero time is NULL both ways. A string argument that is not
// UTF-8 or holds a NUL character is refused (PostgreSQL cannot store it in text; SQLite is held
// to the same so that both stores accept the same values).
type conn interface {
	exec(ctx context.Context, query string, args ...any) (rowsAffected int64, err error)
	queryRow(ctx context.Context, query string, args ...any) scanner
	query(ctx context.Context, query string, args ...any) (rows, error)
}

// scanner is one row (or the current row of rows).
type scanner interface {
	Scan(dest ...any) error
}

// rows is a result set; Close may be called more than once.
type rows interface {
	scanner
	Next() bool
	Err() error
	Close()
}

// engine runs the store's transactions on one database.
type engine interface {
	// write runs fn in a write transaction and returns once the transaction is durable; if fn or
	// the commit fails, nothing fn did is kept and the error is returned. A nil error always
	// means committed. ErrClosed after Close.
	write(ctx context.Context, fn func(ctx context.Context, tx conn) error) error
	// read runs fn on a read-only view. ErrClosed after Close.
	read(ctx context.Context, fn func(ctx context.Context, db conn) error) error
	// readEvents is read for listing events: every event with a Seq below the highest one fn
	// sees is visible to it, so that a reader paging by Seq never skips one that commits later.
	readEvents(ctx context.Context, fn func(ctx context.Context, db conn) error) error
}

// core implements the Store methods on an engine.
type core struct {
	eng engine
	now func() time.Time // the clock; tests replace it
	// chain names the audit chain this store's events are appended to: the instance's name
	// (PostgreSQL), "" for a single appliance's SQLite store.
	chain string
}

// checkText refuses strings neither database stores alike.
func checkText(s string) error {
	if !utf8.ValidString(s) || strings.IndexByte(s, 0) >= 0 {
		q := s
		if len(q) > 64 {
			q = q[:64] + "..."
		}
		return fmt.Errorf("store: text %q is not UTF-8 or contains a NUL character", q)
	}
	return nil
}

// convertArgs returns args with every time.Time replaced by time(t) (zero times by nil) and
// every string checked by checkText.
func convertArgs(args []any, timeArg func(time.Time) (any, error)) ([]any, error) {
	out := slices.Clone(args)
	for i, a := range args {
		switch v := a.(type) {
		case time.Time:
			if v.IsZero() {
				out[i] = nil
				continue
			}
			var err error
			if out[i], err = timeArg(v); err != nil {
				return nil, err
			}
		case string:
			if err := checkText(v); err != nil {
				return nil, err
			}
		}
	}
	return out, nil
}

// timeTarget stands in for a *time.Time scan target: Target is what the driver scans into, Set
// stores what it holds into the time.
type timeTarget interface {
	Target() any
	Set(*time.Time) error
}

// scanTimes scans with scan into dest, replacing each *time.Time in dest by newTarget's
// stand-in and converting afterwards.
func scanTimes(scan func(...any) error, dest []any, newTarget func() timeTarget) error {
	d := slices.Clone(dest)
	type fix struct {
		t   timeTarget
		dst *time.Time
	}
	var fixes []fix
	for i, p := range dest {
		if tp, ok := p.(*time.Time); ok {
			tt := newTarget()
			d[i] = tt.Target()
			fixes = append(fixes, fix{tt, tp})
		}
	}
	if err := scan(d...); err != nil {
		return err
	}
	for _, f := range fixes {
		if err := f.t.Set(f.dst); err != nil {
			return err
		}
	}
	return nil
}

// convRow is one row of a driver, scanned by scan, reading times with newTime.
type convRow struct {
	scan    func(dest ...any) error
	newTime func() timeTarget
}

func (r convRow) Scan(dest ...any) error { return scanTimes(r.scan, dest, r.newTime) }

// convRows is rows over a driver's result set, reading times with newTime.
type convRows struct {
	rs interface {
		Next() bool
		Err() error
		Scan(dest ...any) error
	}
	close   func()
	newTime func() timeTarget
}

func (r convRows) Next() bool             { return r.rs.Next() }
func (r convRows) Err() error             { return r.rs.Err() }
func (r convRows) Close()                 { r.close() }
func (r convRows) Scan(dest ...any) error { return scanTimes(r.rs.Scan, dest, r.newTime) }

// errRow is a row whose query could not be sent.
type errRow struct{ err error }

func (r errRow) Scan(...any) error { return r.err }

// eachRow runs query and calls fn for every row, closing the rows.
func eachRow(ctx context.Context, db conn, fn func(scanner) error, query string, args ...any) error {
	rs, err := db.query(ctx, query, args...)
	if err != nil {
		return err
	}
	defer rs.Close()
	for rs.Next() {
		if err := fn(rs); err != nil {
			return err
		}
	}
	return rs.Err()
}

// noRows reports whether err says a single-row query found nothing.
func noRows(err error) bool { return errors.Is(err, sql.ErrNoRows) }

// Chain is the name of the audit chain this store appends its events to.
func (s *core) Chain() string { return s.chain }
