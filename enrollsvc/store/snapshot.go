// Online snapshots of the SQLite store, for backups.

package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"os"
)

// Snapshot writes a consistent copy of the store to path (which must not exist) while the
// store keeps serving: SQLite's VACUUM INTO reads one read transaction's view, so the copy holds
// every write committed before it began and none after, whatever the writer does meanwhile.
func (s *SQLite) Snapshot(ctx context.Context, path string) error {
	if _, err := os.Lstat(path); err == nil {
		return fmt.Errorf("store: snapshot: %s exists", path)
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return ErrClosed
	}
	// Its own connection: the pool's are query_only, which refuses VACUUM.
	db, err := sql.Open("sqlite", dsn(s.path, url.Values{"mode": {"ro"},
		"_pragma": {fmt.Sprintf("busy_timeout(%d)", busyTimeoutMS)}}))
	if err != nil {
		return err
	}
	defer db.Close()
	if _, err := db.ExecContext(ctx, "VACUUM INTO ?", path); err != nil {
		os.Remove(path)
		return fmt.Errorf("store: snapshot: %w", err)
	}
	return nil
}

// Summary counts what a store file holds, reading it alone (read-only).
type Summary struct {
	Certificates, Revoked, Pending, Events, LastSeq, CRLNumber int64
}

// SummarizeFile opens the SQLite file at path read-only and counts its certificates, revoked
// certificates, pending requests and events, and reads its last event Seq and CRL number.
func SummarizeFile(ctx context.Context, path string) (Summary, error) {
	var sum Summary
	if _, err := os.Stat(path); err != nil {
		return sum, err
	}
	db, err := sql.Open("sqlite", dsn(path, url.Values{"mode": {"ro"}}))
	if err != nil {
		return sum, err
	}
	defer db.Close()
	for _, q := range []struct {
		sql string
		dst *int64
	}{
		{"SELECT count(*) FROM certificates", &sum.Certificates},
		{"SELECT count(*) FROM certificates WHERE status = 'revoked'", &sum.Revoked},
		{"SELECT count(*) FROM requests WHERE state = 'pending'", &sum.Pending},
		{"SELECT count(*) FROM events", &sum.Events},
		{"SELECT COALESCE(max(seq), 0) FROM events", &sum.LastSeq},
		{"SELECT COALESCE((SELECT number FROM crl_numbers WHERE id = 1), 0)", &sum.CRLNumber},
	} {
		if err := db.QueryRowContext(ctx, q.sql).Scan(q.dst); err != nil {
			return sum, fmt.Errorf("store: %s: %w", path, err)
		}
	}
	return sum, nil
}

// ErrNoSnapshot: the store cannot be snapshotted by the service (PostgreSQL's are backed up with
// PostgreSQL's own tools).
var ErrNoSnapshot = errors.New("store: a PostgreSQL store is backed up with PostgreSQL's tools (pg_dump, or the server's base backups and WAL archive), not by the appliance")
