// Operations settings: what an administrator changes while the service runs, shared by every
// instance of the store.

package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// Setting is one operations setting: a name and its JSON value, with who set it and when.
type Setting struct {
	Name    string          `json:"name"`
	Value   json.RawMessage `json:"value"`
	Updated time.Time       `json:"updated"`
	By      string          `json:"by"`
}

// SettingsStore keeps the operations settings.
type SettingsStore interface {
	// GetSetting returns the setting, or ErrNotFound when it was never set.
	GetSetting(ctx context.Context, name string) (Setting, error)
	// PutSetting sets (or replaces) the setting with its audit event, in one transaction.
	PutSetting(ctx context.Context, st Setting, e Event) error
}

var (
	_ SettingsStore = (*SQLite)(nil)
	_ SettingsStore = (*Postgres)(nil)
)

// GetSetting returns the setting name, or ErrNotFound.
func (s *core) GetSetting(ctx context.Context, name string) (Setting, error) {
	st := Setting{Name: name}
	err := s.eng.read(ctx, func(ctx context.Context, db conn) error {
		var v string
		err := db.queryRow(ctx, `SELECT value, updated, by FROM settings WHERE name = ?`, name).Scan(&v, &st.Updated, &st.By)
		if noRows(err) {
			return fmt.Errorf("store: setting %q: %w", name, ErrNotFound)
		}
		st.Value = json.RawMessage(v)
		return err
	})
	return st, err
}

// PutSetting stores st (its Value must be JSON) with e.
func (s *core) PutSetting(ctx context.Context, st Setting, e Event) error {
	if st.Name == "" || st.By == "" || st.Updated.IsZero() || !json.Valid(st.Value) {
		return errors.New("store: setting: name, JSON value, who and when are required")
	}
	if err := checkTimes(st.Updated); err != nil {
		return err
	}
	event, err := s.prepareEvent(e)
	if err != nil {
		return err
	}
	return s.eng.write(ctx, func(ctx context.Context, tx conn) error {
		if _, err := tx.exec(ctx, `INSERT INTO settings (name, value, updated, by) VALUES (?, ?, ?, ?)
			ON CONFLICT (name) DO UPDATE SET value = excluded.value, updated = excluded.updated, by = excluded.by`,
			st.Name, string(st.Value), st.Updated, st.By); err != nil {
			return fmt.Errorf("store: setting %q: %w", st.Name, err)
		}
		_, err := event(ctx, tx)
		return err
	})
}

// OpsStats are the figures monitoring reads from the store.
type OpsStats struct {
	Pending  int64 // requests held for a certificate manager (not issuances in progress)
	Expiring int64 // valid certificates whose notAfter is within the window asked for
	// IssuedToday counts the certificates issued since 00:00 UTC of now's day, by every
	// instance of the CA.
	IssuedToday int64
	Size        int64 // bytes the database takes
}

// OpsStats counts pending requests, valid certificates expiring between now and now+within,
// certificates issued since now's day began (UTC), and the database's size. Each is one indexed
// count.
func (s *core) opsStats(ctx context.Context, now time.Time, within time.Duration, sizeQuery string) (OpsStats, error) {
	var st OpsStats
	err := s.eng.read(ctx, func(ctx context.Context, db conn) error {
		if err := db.queryRow(ctx, "SELECT count(*) FROM requests WHERE "+heldRequests).Scan(&st.Pending); err != nil {
			return err
		}
		if err := db.queryRow(ctx, "SELECT count(*) FROM certificates WHERE status = 'valid' AND not_after > ? AND not_after <= ?",
			now, now.Add(within)).Scan(&st.Expiring); err != nil {
			return err
		}
		day := now.UTC().Truncate(24 * time.Hour) // UTC days are 24 hours from the epoch
		if err := db.queryRow(ctx, "SELECT count(*) FROM certificates WHERE issued_at >= ?", day).Scan(&st.IssuedToday); err != nil {
			return err
		}
		return db.queryRow(ctx, sizeQuery).Scan(&st.Size)
	})
	if err != nil {
		return OpsStats{}, fmt.Errorf("store: statistics: %w", err)
	}
	return st, nil
}

// OpsStats is core.opsStats; Size counts the database file's pages (not its write-ahead log).
func (s *SQLite) OpsStats(ctx context.Context, now time.Time, within time.Duration) (OpsStats, error) {
	return s.opsStats(ctx, now, within, "SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()")
}

// OpsStats is core.opsStats; Size is the whole database's (pg_database_size).
func (p *Postgres) OpsStats(ctx context.Context, now time.Time, within time.Duration) (OpsStats, error) {
	return p.opsStats(ctx, now, within, "SELECT pg_database_size(current_database())")
}
