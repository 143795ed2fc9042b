package store

import (
	"context"
	"fmt"
	"strings"
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
func (s *core) EachRevoked(ctx context.Context, since time.Time, fn func(RevokedEntry) error) error {
	if err := checkTimes(since); err != nil {
		return err
	}
	q := "SELECT serial, revoked_at, revocation_reason FROM certificates" + indexedBy("certificates_revoked") +
		" WHERE status = 'revoked' AND revoked_at IS NOT NULL"
	var args []any
	if !since.IsZero() {
		q += " AND revoked_at >= ?"
		args = append(args, since)
	}
	q += " ORDER BY revoked_at, serial"
	return s.eng.read(ctx, func(ctx context.Context, db conn) error {
		var fnErr error
		err := eachRow(ctx, db, func(row scanner) error {
			var e RevokedEntry
			if err := row.Scan(&e.Serial, &e.RevokedAt, &e.Reason); err != nil {
				return err
			}
			fnErr = fn(e)
			return fnErr
		}, q, args...)
		if err != nil && fnErr == nil {
			return fmt.Errorf("store: listing revoked certificates: %w", err)
		}
		return err
	})
}

// NextCRLNumber durably hands out a CRL number greater than every number handed out before
// (a trigger refuses any update that would not grow it). The update locks the one row until
// the transaction ends, so concurrent callers, of this process or another, get distinct
// numbers in the order they commit.
func (s *core) NextCRLNumber(ctx context.Context) (int64, error) {
	var n int64
	err := s.eng.write(ctx, func(ctx context.Context, tx conn) error {
		return tx.queryRow(ctx, "UPDATE crl_numbers SET number = number + 1 WHERE id = 1 RETURNING number").Scan(&n)
	})
	if err != nil {
		return 0, fmt.Errorf("store: next CRL number: %w", err)
	}
	return n, nil
}

// indexedBy is SQLite's hint to walk a table by index (INDEXED BY, a SQLite extension), for the
// queries whose best index SQLite's planner does not pick without statistics: the revoked
// certificates in revocation order are the partial index certificates_revoked, which it passed
// over for certificates_status and then sorted a million rows. rebind drops it for PostgreSQL.
func indexedBy(index string) string { return indexedByPrefix + index }

const indexedByPrefix = " INDEXED BY "

// dropIndexedBy removes the indexedBy hints from query.
func dropIndexedBy(query string) string {
	for {
		i := strings.Index(query, indexedByPrefix)
		if i < 0 {
			return query
		}
		rest := query[i+len(indexedByPrefix):]
		j := strings.IndexAny(rest, " \t\n")
		if j < 0 {
			j = len(rest)
		}
		query = query[:i] + rest[j:]
	}
}
