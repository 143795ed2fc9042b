// Online snapshots of the SQLite store, for backups.

package store

import (
	"context"
	"database/sql"
	"fmt"
	"net/url"
	"os"

	"github.com/jackc/pgx/v5"
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
// certificates, requests held for approval and events, and reads its last event Seq and CRL number.
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
		{"SELECT count(*) FROM requests WHERE " + heldRequests, &sum.Pending},
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

// Snapshot writes a consistent copy of the PostgreSQL store to path as a new SQLite store file:
// every table a migration moves (copyTables: the instances register themselves anew), read in
// one REPEATABLE READ transaction, so the copy is the database as one moment saw it, and the CRL
// number. Each instance's audit chain is whole in it (an instance's events are appended under
// its chain's row lock, so none is missing before one that is there). Restored, it is a single
// appliance's store; enrollsvc store migrate moves it into a PostgreSQL database again.
func (p *Postgres) Snapshot(ctx context.Context, path string) error {
	if _, err := os.Lstat(path); err == nil {
		return fmt.Errorf("store: snapshot: %s exists", path)
	}
	dst, err := Open(ctx, path, nil)
	if err != nil {
		return err
	}
	ok := false
	defer func() {
		if !ok {
			dst.Close()
			os.Remove(path)
			os.Remove(path + "-wal")
			os.Remove(path + "-shm")
		}
	}()
	err = p.run(func() error {
		tx, err := p.pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
		if err != nil {
			return err
		}
		defer tx.Rollback(ctx)
		src := pgConn{tx}
		var number int64
		if err := src.queryRow(ctx, "SELECT number FROM crl_numbers WHERE id = 1").Scan(&number); err != nil {
			return fmt.Errorf("the CRL number: %w", err)
		}
		return dst.eng.write(ctx, func(ctx context.Context, w conn) error {
			for _, t := range copyTables {
				if _, err := copyRows(ctx, t, src, w, false); err != nil {
					return fmt.Errorf("table %s: %w", t.name, err)
				}
			}
			if number == 0 {
				return nil
			}
			_, err := w.exec(ctx, "UPDATE crl_numbers SET number = ? WHERE id = 1", number)
			return err
		})
	})
	if err != nil {
		return fmt.Errorf("store: snapshot: %w", err)
	}
	ok = true
	return dst.Close() // checkpoints the write-ahead log into the file
}
