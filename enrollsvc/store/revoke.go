package store

import (
	"context"
	"fmt"
	"time"
)

// RevokeCertificate marks a valid certificate revoked at `at` with an RFC 5280 CRLReason and
// appends the audit event, in one transaction. ErrNotFound for an unknown serial, ErrConflict
// for a certificate already revoked (revocation is final; its time and reason never change).
func (s *core) RevokeCertificate(ctx context.Context, serial string, reason int, at time.Time, e Event) error {
	if err := checkSerial(serial); err != nil {
		return err
	}
	if reason < 0 || reason > 10 || reason == 7 { // CRLReason values; 7 is unused
		return fmt.Errorf("store: revoke %s: %d is not an RFC 5280 CRLReason", serial, reason)
	}
	if err := checkTimes(at); err != nil {
		return err
	}
	event, err := s.prepareEvent(e)
	if err != nil {
		return err
	}
	return s.eng.write(ctx, func(ctx context.Context, tx conn) error {
		n, err := tx.exec(ctx, `UPDATE certificates SET status = 'revoked', revoked_at = ?, revocation_reason = ?
			WHERE serial = ? AND status = 'valid'`, at, reason, serial)
		if err != nil {
			return fmt.Errorf("store: revoke %s: %w", serial, err)
		}
		if n == 0 {
			var status string
			err := tx.queryRow(ctx, "SELECT status FROM certificates WHERE serial = ?", serial).Scan(&status)
			if noRows(err) {
				return fmt.Errorf("store: revoke %s: %w", serial, ErrNotFound)
			}
			if err != nil {
				return err
			}
			return fmt.Errorf("store: revoke %s: already %s: %w", serial, status, ErrConflict)
		}
		_, err = event(ctx, tx)
		return err
	})
}
