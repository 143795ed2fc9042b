// Serials and issued certificates in the SQLite store.

package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"
)

const certColumns = `serial, der, template, account, subject, not_before, not_after, status,
	revoked_at, revocation_reason, request_id, issued_at`

// ReserveSerial records serial as used and appends the events written before signing, in one
// transaction. If serial was ever reserved before it fails with ErrSerialUsed and writes nothing.
func (s *SQLite) ReserveSerial(ctx context.Context, serial string, before ...Event) error {
	if err := checkSerial(serial); err != nil {
		return err
	}
	at, err := encTime(s.now())
	if err != nil {
		return err
	}
	return s.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		if err := reserveSerial(ctx, tx, serial, at); err != nil {
			return err
		}
		return s.insertEvents(ctx, tx, 0, before)
	})
}

// BeginIssuance records a new pending request, reserves its certificate's serial and appends
// the audit events written before signing, in one transaction; the events' fields get the new
// request's ID as "request_id". One durable write instead of two on the issuance path.
func (s *SQLite) BeginIssuance(ctx context.Context, r Request, serial string, before ...Event) (int64, error) {
	if err := checkSerial(serial); err != nil {
		return 0, err
	}
	at, err := encTime(s.now())
	if err != nil {
		return 0, err
	}
	if r.State != "" && r.State != RequestPending {
		return 0, fmt.Errorf("store: begin issuance: request state %q, want pending", r.State)
	}
	insert, err := s.prepareRequest(r)
	if err != nil {
		return 0, err
	}
	var id int64
	err = s.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		if id, err = insert(ctx, tx); err != nil {
			return err
		}
		if err := reserveSerial(ctx, tx, serial, at); err != nil {
			return err
		}
		return s.insertEvents(ctx, tx, id, before)
	})
	if err != nil {
		return 0, err
	}
	return id, nil
}

func reserveSerial(ctx context.Context, tx *sql.Tx, serial string, at any) error {
	res, err := tx.ExecContext(ctx, `INSERT INTO serials (serial, reserved_at) VALUES (?, ?)
		ON CONFLICT (serial) DO NOTHING`, serial, at)
	if err != nil {
		return fmt.Errorf("store: reserve serial %s: %w", serial, err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return err
	} else if n == 0 {
		return fmt.Errorf("store: reserve serial %s: %w", serial, ErrSerialUsed)
	}
	return nil
}

// CommitCertificate stores c, whose serial must have been reserved, marks request c.RequestID
// (if not 0) issued with the serial, and appends after, in one transaction. A zero IssuedAt
// means now and an empty Status means valid. Errors: ErrConflict if the serial was not
// reserved or the request is not pending, ErrSerialUsed if a certificate with the serial is
// already stored, ErrNotFound if the request does not exist, or the error of an event that
// cannot be written; nothing is written then.
func (s *SQLite) CommitCertificate(ctx context.Context, c Certificate, after ...Event) error {
	if err := checkSerial(c.Serial); err != nil {
		return err
	}
	if len(c.DER) == 0 {
		return fmt.Errorf("store: commit certificate %s: empty DER", c.Serial)
	}
	if c.Status == "" {
		c.Status = CertValid
	}
	if c.Status != CertValid && c.Status != CertRevoked {
		return fmt.Errorf("store: commit certificate %s: invalid status %q", c.Serial, c.Status)
	}
	if c.RequestID < 0 {
		return fmt.Errorf("store: commit certificate %s: invalid request ID %d", c.Serial, c.RequestID)
	}
	now := s.now()
	if c.IssuedAt.IsZero() {
		c.IssuedAt = now
	}
	ts, err := encTimes(c.NotBefore, c.NotAfter, c.RevokedAt, c.IssuedAt, now)
	if err != nil {
		return err
	}
	return s.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		var reserved int
		err := tx.QueryRowContext(ctx, "SELECT count(*) FROM serials WHERE serial = ?", c.Serial).Scan(&reserved)
		if err != nil {
			return fmt.Errorf("store: commit certificate %s: %w", c.Serial, err)
		}
		if reserved == 0 {
			return fmt.Errorf("store: commit certificate %s: serial was not reserved: %w", c.Serial, ErrConflict)
		}
		// The request first: certificates.request_id refers to it.
		if c.RequestID != 0 {
			res, err := tx.ExecContext(ctx, `UPDATE requests SET state = 'issued', serial = ?, updated = ?
				WHERE id = ? AND state = 'pending'`, c.Serial, ts[4], c.RequestID)
			if err != nil {
				return fmt.Errorf("store: commit certificate %s: request %d: %w", c.Serial, c.RequestID, err)
			}
			if err := checkPendingUpdate(ctx, tx, res, c.RequestID, RequestIssued); err != nil {
				return fmt.Errorf("store: commit certificate %s: %w", c.Serial, err)
			}
		}
		res, err := tx.ExecContext(ctx, `INSERT INTO certificates (`+certColumns+`)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (serial) DO NOTHING`,
			c.Serial, c.DER, c.Template, c.Account, c.Subject, ts[0], ts[1], string(c.Status),
			ts[2], c.RevocationReason, nullInt64(c.RequestID), ts[3])
		if err != nil {
			return fmt.Errorf("store: commit certificate %s: %w", c.Serial, err)
		}
		if n, err := res.RowsAffected(); err != nil {
			return err
		} else if n == 0 {
			return fmt.Errorf("store: commit certificate %s: certificate already stored: %w", c.Serial, ErrSerialUsed)
		}
		return s.insertEvents(ctx, tx, 0, after)
	})
}

// GetCertificate returns the certificate with serial, or ErrNotFound.
func (s *SQLite) GetCertificate(ctx context.Context, serial string) (Certificate, error) {
	var c Certificate
	err := s.read(func() error {
		row := s.rdb.QueryRowContext(ctx, "SELECT "+certColumns+" FROM certificates WHERE serial = ?", serial)
		var err error
		c, err = scanCert(row)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("store: certificate %q: %w", serial, ErrNotFound)
		}
		return err
	})
	return c, err
}

// ListCertificates returns the certificates f selects, ordered by IssuedAt then Serial.
func (s *SQLite) ListCertificates(ctx context.Context, f CertFilter) ([]Certificate, error) {
	n, err := limit("list certificates", f.Limit, 100, 100000)
	if err != nil {
		return nil, err
	}
	if f.Offset < 0 {
		return nil, fmt.Errorf("store: list certificates: negative offset %d", f.Offset)
	}
	if f.Status != "" && f.Status != CertValid && f.Status != CertRevoked {
		return nil, fmt.Errorf("store: list certificates: invalid status %q", f.Status)
	}
	var (
		where []string
		args  []any
	)
	for _, c := range []struct{ col, val string }{
		{"account", f.Account}, {"template", f.Template}, {"status", string(f.Status)},
	} {
		if c.val != "" {
			where = append(where, c.col+" = ?")
			args = append(args, c.val)
		}
	}
	q := "SELECT " + certColumns + " FROM certificates"
	if len(where) > 0 {
		q += " WHERE " + strings.Join(where, " AND ")
	}
	q += " ORDER BY issued_at, serial LIMIT ? OFFSET ?"
	args = append(args, n, f.Offset)

	var out []Certificate
	err = s.read(func() error {
		rows, err := s.rdb.QueryContext(ctx, q, args...)
		if err != nil {
			return fmt.Errorf("store: list certificates: %w", err)
		}
		defer rows.Close()
		for rows.Next() {
			c, err := scanCert(rows)
			if err != nil {
				return fmt.Errorf("store: list certificates: %w", err)
			}
			out = append(out, c)
		}
		if err := rows.Err(); err != nil {
			return fmt.Errorf("store: list certificates: %w", err)
		}
		return nil
	})
	return out, err
}

// CountCertificates returns the number of stored certificates.
func (s *SQLite) CountCertificates(ctx context.Context) (int64, error) {
	var n int64
	err := s.read(func() error {
		if err := s.rdb.QueryRowContext(ctx, "SELECT count(*) FROM certificates").Scan(&n); err != nil {
			return fmt.Errorf("store: count certificates: %w", err)
		}
		return nil
	})
	return n, err
}

func scanCert(sc scanner) (Certificate, error) {
	var (
		c                                        Certificate
		status                                   string
		notBefore, notAfter, revokedAt, issuedAt sql.NullString
		requestID                                sql.NullInt64
	)
	err := sc.Scan(&c.Serial, &c.DER, &c.Template, &c.Account, &c.Subject, &notBefore, &notAfter,
		&status, &revokedAt, &c.RevocationReason, &requestID, &issuedAt)
	if err != nil {
		return Certificate{}, err
	}
	c.Status = CertStatus(status)
	c.RequestID = requestID.Int64
	for _, t := range []struct {
		dst *time.Time
		v   sql.NullString
	}{{&c.NotBefore, notBefore}, {&c.NotAfter, notAfter}, {&c.RevokedAt, revokedAt}, {&c.IssuedAt, issuedAt}} {
		if *t.dst, err = decTime(t.v); err != nil {
			return Certificate{}, err
		}
	}
	return c, nil
}
