package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// StoredCRL is one CRL as published (RFC 5280 §5): a full CRL or a delta CRL, by its number.
type StoredCRL struct {
	Delta      bool
	Number     int64
	ThisUpdate time.Time
	NextUpdate time.Time
	DER        []byte
}

// CRLStore keeps the CRLs the instances serve and says which instance publishes them.
type CRLStore interface {
	// SaveCRL stores a CRL its publisher signed. ErrConflict if one of that kind and number exists.
	SaveCRL(ctx context.Context, c StoredCRL) error
	// LatestCRLs returns the newest full and delta CRL whose numbers are above afterFull and
	// afterDelta (nil when there is none: the caller has the newest already).
	LatestCRLs(ctx context.Context, afterFull, afterDelta int64) (full, delta *StoredCRL, err error)
	// LeadCRLs reports whether this instance publishes the CRLs: it takes, or still holds, the
	// publisher's lock. Of the instances sharing a store at most one holds it; it passes on when
	// that instance stops or loses its connection.
	LeadCRLs(ctx context.Context) (bool, error)
}

var (
	_ CRLStore = (*SQLite)(nil)
	_ CRLStore = (*Postgres)(nil)
)

func crlKind(delta bool) string {
	if delta {
		return "delta"
	}
	return "full"
}

func (s *core) SaveCRL(ctx context.Context, c StoredCRL) error {
	if c.Number <= 0 || len(c.DER) == 0 || c.ThisUpdate.IsZero() || c.NextUpdate.IsZero() {
		return errors.New("store: CRL: number, times and DER are required")
	}
	if err := checkTimes(c.ThisUpdate, c.NextUpdate); err != nil {
		return err
	}
	return s.eng.write(ctx, func(ctx context.Context, tx conn) error {
		n, err := tx.exec(ctx, `INSERT INTO crls (kind, number, this_update, next_update, der) VALUES (?, ?, ?, ?, ?)
			ON CONFLICT DO NOTHING`, crlKind(c.Delta), c.Number, c.ThisUpdate, c.NextUpdate, c.DER)
		if err != nil {
			return fmt.Errorf("store: saving CRL %d: %w", c.Number, err)
		}
		if n == 0 {
			return fmt.Errorf("store: %s CRL %d exists: %w", crlKind(c.Delta), c.Number, ErrConflict)
		}
		return nil
	})
}

func (s *core) LatestCRLs(ctx context.Context, afterFull, afterDelta int64) (full, delta *StoredCRL, err error) {
	err = s.eng.read(ctx, func(ctx context.Context, db conn) error {
		for _, d := range []bool{false, true} {
			c, after := StoredCRL{Delta: d}, afterFull
			if d {
				after = afterDelta
			}
			err := db.queryRow(ctx, `SELECT number, this_update, next_update, der FROM crls WHERE kind = ? AND number > ?
				ORDER BY number DESC LIMIT 1`, crlKind(d), after).Scan(&c.Number, &c.ThisUpdate, &c.NextUpdate, &c.DER)
			switch {
			case noRows(err):
				continue
			case err != nil:
				return err
			case d:
				delta = &c
			default:
				full = &c
			}
		}
		return nil
	})
	if err != nil {
		return nil, nil, fmt.Errorf("store: latest CRLs: %w", err)
	}
	return full, delta, nil
}

// LeadCRLs: one SQLite file serves one instance, which publishes.
func (s *SQLite) LeadCRLs(context.Context) (bool, error) { return true, nil }

// LeadCRLs takes PostgreSQL's session-level advisory lock pgLockCRL on a connection kept for it:
// the server releases it when that connection ends (the instance stopped or died).
func (p *Postgres) LeadCRLs(ctx context.Context) (bool, error) {
	var lead bool
	err := p.run(func() error {
		p.crlMu.Lock()
		defer p.crlMu.Unlock()
		if p.crlConn != nil {
			if err := p.crlConn.Ping(ctx); err == nil {
				lead = true
				return nil
			}
			p.crlConn.Release() // broken: its lock went with it
			p.crlConn = nil
		}
		c, err := p.pool.Acquire(ctx)
		if err != nil {
			return fmt.Errorf("store: CRL publisher lock: %w", err)
		}
		if err := c.QueryRow(ctx, "SELECT pg_try_advisory_lock($1)", pgLockCRL).Scan(&lead); err != nil {
			c.Release()
			return fmt.Errorf("store: CRL publisher lock: %w", err)
		}
		if !lead {
			c.Release()
			return nil
		}
		p.crlConn = c
		return nil
	})
	return lead, err
}

// ServerInfo is what the PostgreSQL server says about the instances' shared database.
type ServerInfo struct {
	Version string // server_version
	// CRLPublisher is the application name ("enrollsvc/NAME") of the session holding the CRL
	// publisher's lock; "" when none holds it.
	CRLPublisher string
	// Replicas are the standbys streaming from this server (pg_stat_replication), with their lag.
	Replicas []Replica
}

// Replica is one standby of the database server.
type Replica struct {
	Name      string        // application_name of the standby's WAL receiver
	State     string        // streaming, catchup, ...
	ReplayLag time.Duration // how far behind it replays (0 when the server does not know)
}

// ServerInfo asks the server for its version, the CRL publisher's session and its replicas.
// Reading pg_stat_replication's details needs the pg_monitor role; without it they read empty.
func (p *Postgres) ServerInfo(ctx context.Context) (ServerInfo, error) {
	var info ServerInfo
	err := p.run(func() error {
		if err := p.pool.QueryRow(ctx, "SHOW server_version").Scan(&info.Version); err != nil {
			return err
		}
		err := p.pool.QueryRow(ctx, `SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
			WHERE l.locktype = 'advisory' AND l.granted AND l.classid::bigint = $1 AND l.objid::bigint = $2 AND l.objsubid = 1`,
			pgLockCRL>>32, pgLockCRL&0xffffffff).Scan(&info.CRLPublisher)
		if err != nil && !errors.Is(err, pgx.ErrNoRows) {
			return err
		}
		rows, err := p.pool.Query(ctx, `SELECT COALESCE(application_name, ''), COALESCE(state, ''),
			COALESCE(EXTRACT(EPOCH FROM replay_lag), 0)::float8 FROM pg_stat_replication ORDER BY application_name`)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var r Replica
			var lag float64
			if err := rows.Scan(&r.Name, &r.State, &lag); err != nil {
				return err
			}
			r.ReplayLag = time.Duration(lag * float64(time.Second))
			info.Replicas = append(info.Replicas, r)
		}
		return rows.Err()
	})
	if err != nil {
		return ServerInfo{}, fmt.Errorf("store: asking the database server: %w", err)
	}
	return info, nil
}
