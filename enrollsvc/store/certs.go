// Serials and issued certificates.

package store

import (
	"context"
	"fmt"
	"strings"
	"time"
)

const certColumns = `serial, der, template, account, subject, not_before, not_after, status,
	revoked_at, revocation_reason, request_id, issued_at`

// ReserveSerial records serial as used and appends the events written before signing, in one
// transaction. If serial was ever reserved before it fails with ErrSerialUsed and writes nothing.
func (s *core) ReserveSerial(ctx context.Context, serial string, before ...Event) error {
	if err := checkSerial(serial); err != nil {
		return err
	}
	at := s.now()
	if err := checkTimes(at); err != nil {
		return err
	}
	return s.eng.write(ctx, func(ctx context.Context, tx conn) error {
		if err := reserveSerial(ctx, tx, serial, at); err != nil {
			return err
		}
		return s.insertEvents(ctx, tx, 0, before)
	})
}

// BeginIssuance records a new pending request, reserves its certificate's serial and appends
// the audit events written before signing, in one transaction; the events' fields get the new
// request's ID as "request_id". One durable write instead of two on the issuance path.
func (s *core) BeginIssuance(ctx context.Context, r Request, serial string, before ...Event) (int64, error) {
	if err := checkSerial(serial); err != nil {
		return 0, err
	}
	at := s.now()
	if err := checkTimes(at); err != nil {
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
	err = s.eng.write(ctx, func(ctx context.Context, tx conn) error {
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

// reserveSerial inserts serial into serials, whose primary key is what keeps serials unique:
// a serial inserted before, or by a concurrent transaction that commits, inserts nothing.
func reserveSerial(ctx context.Context, tx conn, serial string, at time.Time) error {
	n, err := tx.exec(ctx, `INSERT INTO serials (serial, reserved_at) VALUES (?, ?)
		ON CONFLICT (serial) DO NOTHING`, serial, at)
	if err != nil {
		return fmt.Errorf("store: reserve serial %s: %w", serial, err)
	}
	if n == 0 {
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
func (s *core) CommitCertificate(ctx context.Context, c Certificate, after ...Event) error {
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
	if err := checkTimes(c.NotBefore, c.NotAfter, c.RevokedAt, c.IssuedAt, now); err != nil {
		return err
	}
	return s.eng.write(ctx, func(ctx context.Context, tx conn) error {
		var reserved int
		err := tx.queryRow(ctx, "SELECT count(*) FROM serials WHERE serial = ?", c.Serial).Scan(&reserved)
		if err != nil {
			return fmt.Errorf("store: commit certificate %s: %w", c.Serial, err)
		}
		if reserved == 0 {
			return fmt.Errorf("store: commit certificate %s: serial was not reserved: %w", c.Serial, ErrConflict)
		}
		// The request first: certificates.request_id refers to it.
		if c.RequestID != 0 {
			n, err := tx.exec(ctx, `UPDATE requests SET state = 'issued', serial = ?, updated = ?
				WHERE id = ? AND state = 'pending'`, c.Serial, now, c.RequestID)
			if err != nil {
				return fmt.Errorf("store: commit certificate %s: request %d: %w", c.Serial, c.RequestID, err)
			}
			if err := checkPendingUpdate(ctx, tx, n, c.RequestID, RequestIssued); err != nil {
				return fmt.Errorf("store: commit certificate %s: %w", c.Serial, err)
			}
		}
		n, err := tx.exec(ctx, `INSERT INTO certificates (`+certColumns+`)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (serial) DO NOTHING`,
			c.Serial, c.DER, c.Template, c.Account, c.Subject, c.NotBefore, c.NotAfter, string(c.Status),
			c.RevokedAt, c.RevocationReason, nullInt64(c.RequestID), c.IssuedAt)
		if err != nil {
			return fmt.Errorf("store: commit certificate %s: %w", c.Serial, err)
		}
		if n == 0 {
			return fmt.Errorf("store: commit certificate %s: certificate already stored: %w", c.Serial, ErrSerialUsed)
		}
		return s.insertEvents(ctx, tx, 0, after)
	})
}

// GetCertificate returns the certificate with serial, or ErrNotFound.
func (s *core) GetCertificate(ctx context.Context, serial string) (Certificate, error) {
	var c Certificate
	err := s.eng.read(ctx, func(ctx context.Context, db conn) error {
		var err error
		c, err = scanCert(db.queryRow(ctx, "SELECT "+certColumns+" FROM certificates WHERE serial = ?", serial))
		if noRows(err) {
			return fmt.Errorf("store: certificate %q: %w", serial, ErrNotFound)
		}
		return err
	})
	return c, err
}

// ListCertificates returns the certificates f selects, ordered by IssuedAt then Serial.
func (s *core) ListCertificates(ctx context.Context, f CertFilter) ([]Certificate, error) {
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
	err = s.eng.read(ctx, func(ctx context.Context, db conn) error {
		return eachRow(ctx, db, func(row scanner) error {
			c, err := scanCert(row)
			out = append(out, c)
			return err
		}, q, args...)
	})
	if err != nil {
		return nil, fmt.Errorf("store: list certificates: %w", err)
	}
	return out, nil
}

// CountCertificates returns the number of stored certificates.
func (s *core) CountCertificates(ctx context.Context) (int64, error) {
	var n int64
	err := s.eng.read(ctx, func(ctx context.Context, db conn) error {
		if err := db.queryRow(ctx, "SELECT count(*) FROM certificates").Scan(&n); err != nil {
			return fmt.Errorf("store: count certificates: %w", err)
		}
		return nil
	})
	return n, err
}

func scanCert(sc scanner) (Certificate, error) {
	var (
		c         Certificate
		status    string
		requestID *int64
	)
	err := sc.Scan(&c.Serial, &c.DER, &c.Template, &c.Account, &c.Subject, &c.NotBefore, &c.NotAfter,
		&status, &c.RevokedAt, &c.RevocationReason, &requestID, &c.IssuedAt)
	if err != nil {
		return Certificate{}, err
	}
	c.Status = CertStatus(status)
	if requestID != nil {
		c.RequestID = *requestID
	}
	return c, nil
}
