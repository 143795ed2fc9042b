package store

import (
	"context"
	"database/sql"
	"fmt"
	"time"
)

// RevokedEntry is one revoked certificate as a CRL lists it.
type RevokedEntry struct {
	Serial    string
	RevokedAt time.Time
	Reason    int // RFC 5280 CRLReason
}

// EachRevoked calls fn for every revoked certificate whose revocation is at or after since (zero:
// all), in order of revocation. It reads row by row, so a CRL of any size is written without
// holding the list in memory. fn must not call the store; an error from fn stops the walk and
// is returned.
func (s *SQLite) EachRevoked(ctx context.Context, since time.Time, fn func(RevokedEntry) error) error {
	from, err := encTime(since)
	if err != nil {
		return err
	}
	if from == nil {
		from = ""
	}
	return s.read(func() error {
		rows, err := s.rdb.QueryContext(ctx, `SELECT serial, revoked_at, revocation_reason FROM certificates
			WHERE status = 'revoked' AND revoked_at >= ? ORDER BY revoked_at, serial`, from)
		if err != nil {
			return fmt.Errorf("store: listing revoked certificates: %w", err)
		}
		defer rows.Close()
		for rows.Next() {
			var e RevokedEntry
			var at sql.NullString
			if err := rows.Scan(&e.Serial, &at, &e.Reason); err != nil {
				return fmt.Errorf("store: listing revoked certificates: %w", err)
			}
			if e.RevokedAt, err = decTime(at); err != nil {
				return err
			}
			if err := fn(e); err != nil {
				return err
			}
		}
		return rows.Err()
	})
}

// NextCRLNumber durably hands out a CRL number greater than every number handed out before
// (a trigger refuses any update that would not grow it).
func (s *SQLite) NextCRLNumber(ctx context.Context) (int64, error) {
	var n int64
	err := s.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		return tx.QueryRowContext(ctx, "UPDATE crl_numbers SET number = number + 1 WHERE id = 1 RETURNING number").Scan(&n)
	})
	if err != nil {
		return 0, fmt.Errorf("store: next CRL number: %w", err)
	}
	return n, nil
}
