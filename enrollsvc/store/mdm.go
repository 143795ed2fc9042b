// The MDM connector's PKCS jobs: a request for a key pair made here, its result (the PKCS#12
// already encrypted for its delivery) until it is collected or expires.

package store

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// MDM job states.
const (
	MDMJobQueued  = "queued"
	MDMJobIssued  = "issued"
	MDMJobRefused = "refused"
	MDMJobFailed  = "failed"
)

// MDMJob is one PKCS request of the MDM connector.
type MDMJob struct {
	ID       string // random, chosen by the caller
	MDM      string // who asked: an MDM's name, or "admin"
	Template string
	Account  string
	DeviceID string
	Delivery string // "password" or "device-key"
	State    string // MDMJobQueued, ...
	// RequestID and Serial are the request and certificate the job led to (0 and "" none).
	RequestID int64
	Serial    string
	// Result is the PKCS#12 (or the EnvelopedData holding it), encrypted for its delivery: never
	// a clear key. Nil until issued, and once expired.
	Result    []byte
	Reason    string // why refused or failed
	Created   time.Time
	Updated   time.Time
	Expires   time.Time // the job and its result are erased then
	Collected time.Time // first fetched (zero: not yet)
}

// MDMJobStore keeps the MDM connector's jobs.
type MDMJobStore interface {
	AddMDMJob(ctx context.Context, j MDMJob, e Event) error
	FinishMDMJob(ctx context.Context, j MDMJob, e Event) error
	GetMDMJob(ctx context.Context, id string) (MDMJob, error)
	CollectMDMJob(ctx context.Context, id string, now time.Time, e Event) (first bool, err error)
	ExpireMDMJobs(ctx context.Context, now time.Time) ([]MDMJob, error)
}

var (
	_ MDMJobStore = (*SQLite)(nil)
	_ MDMJobStore = (*Postgres)(nil)
)

// AddMDMJob stores a new queued job with its audit event. ErrConflict if the ID is taken.
func (s *core) AddMDMJob(ctx context.Context, j MDMJob, e Event) error {
	if j.ID == "" || j.MDM == "" || j.Template == "" || j.Account == "" || (j.Delivery != "password" && j.Delivery != "device-key") {
		return errors.New("store: MDM job: id, mdm, template, account and delivery (password or device-key) are required")
	}
	if j.Created.IsZero() || j.Expires.IsZero() || checkTimes(j.Created, j.Expires) != nil {
		return errors.New("store: MDM job: creation and expiry times are required")
	}
	event, err := s.prepareEvent(e)
	if err != nil {
		return err
	}
	return s.eng.write(ctx, func(ctx context.Context, tx conn) error {
		n, err := tx.exec(ctx, `INSERT INTO mdm_jobs (id, mdm, template, account, device_id, delivery, state, created, updated, expires)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING`,
			j.ID, j.MDM, j.Template, j.Account, j.DeviceID, j.Delivery, MDMJobQueued, j.Created, j.Created, j.Expires)
		if err != nil {
			return fmt.Errorf("store: adding MDM job: %w", err)
		}
		if n == 0 {
			return fmt.Errorf("store: MDM job %s exists: %w", j.ID, ErrConflict)
		}
		_, err = event(ctx, tx)
		return err
	})
}

// FinishMDMJob records the outcome of a queued job (State, RequestID, Serial, Result, Reason,
// Updated, Expires) with its audit event. ErrConflict if it is no longer queued, ErrNotFound if
// it is gone.
func (s *core) FinishMDMJob(ctx context.Context, j MDMJob, e Event) error {
	if j.State != MDMJobIssued && j.State != MDMJobRefused && j.State != MDMJobFailed {
		return fmt.Errorf("store: MDM job %s: %q is not an outcome", j.ID, j.State)
	}
	if (j.State == MDMJobIssued) != (len(j.Result) > 0) {
		return fmt.Errorf("store: MDM job %s: an issued job has a result, no other", j.ID)
	}
	if j.Updated.IsZero() || j.Expires.IsZero() || checkTimes(j.Updated, j.Expires) != nil {
		return errors.New("store: MDM job: update and expiry times are required")
	}
	event, err := s.prepareEvent(e)
	if err != nil {
		return err
	}
	var result any
	if len(j.Result) > 0 {
		result = j.Result
	}
	return s.eng.write(ctx, func(ctx context.Context, tx conn) error {
		n, err := tx.exec(ctx, `UPDATE mdm_jobs SET state = ?, request_id = ?, serial = ?, result = ?, reason = ?, updated = ?, expires = ?
			WHERE id = ? AND state = ?`, j.State, j.RequestID, j.Serial, result, j.Reason, j.Updated, j.Expires, j.ID, MDMJobQueued)
		if err != nil {
			return fmt.Errorf("store: finishing MDM job %s: %w", j.ID, err)
		}
		if n == 0 {
			var state string
			err := tx.queryRow(ctx, "SELECT state FROM mdm_jobs WHERE id = ?", j.ID).Scan(&state)
			if noRows(err) {
				return fmt.Errorf("store: MDM job %s: %w", j.ID, ErrNotFound)
			}
			if err != nil {
				return err
			}
			return fmt.Errorf("store: MDM job %s is %s already: %w", j.ID, state, ErrConflict)
		}
		_, err = event(ctx, tx)
		return err
	})
}

const mdmJobColumns = "id, mdm, template, account, device_id, delivery, state, request_id, serial, result, reason, created, updated, expires, collected"

// GetMDMJob returns a job, or ErrNotFound.
func (s *core) GetMDMJob(ctx context.Context, id string) (MDMJob, error) {
	var j MDMJob
	err := s.eng.read(ctx, func(ctx context.Context, db conn) error {
		err := db.queryRow(ctx, "SELECT "+mdmJobColumns+" FROM mdm_jobs WHERE id = ?", id).Scan(&j.ID, &j.MDM, &j.Template,
			&j.Account, &j.DeviceID, &j.Delivery, &j.State, &j.RequestID, &j.Serial, &j.Result, &j.Reason, &j.Created,
			&j.Updated, &j.Expires, &j.Collected)
		if noRows(err) {
			return fmt.Errorf("store: MDM job %s: %w", id, ErrNotFound)
		}
		return err
	})
	return j, err
}

// CollectMDMJob records the first collection of an issued job's result, with its audit event
// (first true); later collections change nothing (first false).
func (s *core) CollectMDMJob(ctx context.Context, id string, now time.Time, e Event) (bool, error) {
	if now.IsZero() || checkTimes(now) != nil {
		return false, errors.New("store: collecting an MDM job: bad time")
	}
	event, err := s.prepareEvent(e)
	if err != nil {
		return false, err
	}
	first := false
	err = s.eng.write(ctx, func(ctx context.Context, tx conn) error {
		n, err := tx.exec(ctx, "UPDATE mdm_jobs SET collected = ? WHERE id = ? AND state = ? AND collected IS NULL", now, id, MDMJobIssued)
		if err != nil || n == 0 {
			return err
		}
		first = true
		_, err = event(ctx, tx)
		return err
	})
	return first, err
}

// ExpireMDMJobs erases the jobs whose time is up (with their results) and returns them, without
// their results.
func (s *core) ExpireMDMJobs(ctx context.Context, now time.Time) ([]MDMJob, error) {
	var out []MDMJob
	err := s.eng.write(ctx, func(ctx context.Context, tx conn) error {
		out = out[:0]
		err := eachRow(ctx, tx, func(row scanner) error {
			var j MDMJob
			err := row.Scan(&j.ID, &j.MDM, &j.Template, &j.Account, &j.DeviceID, &j.Delivery, &j.State, &j.RequestID, &j.Serial,
				&j.Reason, &j.Created, &j.Updated, &j.Expires, &j.Collected)
			out = append(out, j)
			return err
		}, `DELETE FROM mdm_jobs WHERE expires <= ? RETURNING id, mdm, template, account, device_id, delivery, state, request_id,
			serial, reason, created, updated, expires, collected`, now)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("store: expiring MDM jobs: %w", err)
	}
	return out, nil
}

// SpendSCEPChallenge records the challenge with hash sha of profile, which its MDM validated, as
// used at now (kept until expires, after which the MDM's own expiry refuses it). ErrConflict when
// it was spent before: of concurrent callers exactly one succeeds.
func (s *core) SpendSCEPChallenge(ctx context.Context, profile string, sha []byte, now, expires time.Time) error {
	if len(sha) != 32 || now.IsZero() || expires.IsZero() || checkTimes(now, expires) != nil {
		return errors.New("store: spending a SCEP challenge: a SHA-256 and times are required")
	}
	return s.eng.write(ctx, func(ctx context.Context, tx conn) error {
		n, err := tx.exec(ctx, `INSERT INTO scep_challenges (sha256, profile, created, expires, used_at) VALUES (?, ?, ?, ?, ?)
			ON CONFLICT (sha256) DO NOTHING`, sha, profile, now, expires, now)
		if err != nil {
			return fmt.Errorf("store: spending a SCEP challenge: %w", err)
		}
		if n == 0 {
			return fmt.Errorf("store: SCEP challenge spent before: %w", ErrConflict)
		}
		return nil
	})
}

// SCEPChallengeSpent reports whether the challenge with hash sha was spent (or issued) before.
func (s *core) SCEPChallengeSpent(ctx context.Context, sha []byte) (bool, error) {
	var n int64
	err := s.eng.read(ctx, func(ctx context.Context, db conn) error {
		return db.queryRow(ctx, "SELECT count(*) FROM scep_challenges WHERE sha256 = ?", sha).Scan(&n)
	})
	return n > 0, err
}

// MDMNotification is a message for an MDM, kept until the MDM acknowledged it.
type MDMNotification struct {
	ID        string
	MDM       string
	Payload   []byte // JSON, as sent
	Created   time.Time
	NextTry   time.Time
	Attempts  int
	LastError string
}

// MDMNotificationStore keeps the MDM notifications still to deliver.
type MDMNotificationStore interface {
	AddMDMNotification(ctx context.Context, n MDMNotification) error
	DueMDMNotifications(ctx context.Context, now time.Time, limit int) ([]MDMNotification, error)
	ClaimMDMNotification(ctx context.Context, n MDMNotification, until time.Time) (bool, error)
	RetryMDMNotification(ctx context.Context, id string, next time.Time, attempts int, lastError string) error
	DeleteMDMNotification(ctx context.Context, id string) error
}

var (
	_ MDMNotificationStore = (*SQLite)(nil)
	_ MDMNotificationStore = (*Postgres)(nil)
)

// AddMDMNotification stores a notification to deliver from n.NextTry.
func (s *core) AddMDMNotification(ctx context.Context, n MDMNotification) error {
	if n.ID == "" || n.MDM == "" || len(n.Payload) == 0 || n.Created.IsZero() || n.NextTry.IsZero() || checkTimes(n.Created, n.NextTry) != nil {
		return errors.New("store: MDM notification: id, mdm, payload and times are required")
	}
	return s.eng.write(ctx, func(ctx context.Context, tx conn) error {
		_, err := tx.exec(ctx, `INSERT INTO mdm_notifications (id, mdm, payload, created, next_try) VALUES (?, ?, ?, ?, ?)`,
			n.ID, n.MDM, string(n.Payload), n.Created, n.NextTry)
		return err
	})
}

// DueMDMNotifications returns up to limit notifications due at now, oldest first.
func (s *core) DueMDMNotifications(ctx context.Context, now time.Time, limit int) ([]MDMNotification, error) {
	var out []MDMNotification
	err := s.eng.read(ctx, func(ctx context.Context, db conn) error {
		return eachRow(ctx, db, func(row scanner) error {
			var n MDMNotification
			var payload string
			err := row.Scan(&n.ID, &n.MDM, &payload, &n.Created, &n.NextTry, &n.Attempts, &n.LastError)
			n.Payload = []byte(payload)
			out = append(out, n)
			return err
		}, `SELECT id, mdm, payload, created, next_try, attempts, last_error FROM mdm_notifications
			WHERE next_try <= ? ORDER BY next_try, id LIMIT ?`, now, limit)
	})
	return out, err
}

// ClaimMDMNotification takes n (as DueMDMNotifications returned it) for delivery by this
// instance: its next try moves to until, so that no other instance of a shared store sends it
// meanwhile. False when another instance took it first (or it is gone).
func (s *core) ClaimMDMNotification(ctx context.Context, n MDMNotification, until time.Time) (bool, error) {
	if checkTimes(until) != nil {
		return false, errors.New("store: MDM notification: bad time")
	}
	var claimed bool
	err := s.eng.write(ctx, func(ctx context.Context, tx conn) error {
		k, err := tx.exec(ctx, "UPDATE mdm_notifications SET next_try = ? WHERE id = ? AND next_try = ? AND attempts = ?",
			until, n.ID, n.NextTry, n.Attempts)
		claimed = k == 1
		return err
	})
	return claimed, err
}

// RetryMDMNotification records a failed delivery and when to try again.
func (s *core) RetryMDMNotification(ctx context.Context, id string, next time.Time, attempts int, lastError string) error {
	if checkTimes(next) != nil {
		return errors.New("store: MDM notification: bad time")
	}
	return s.eng.write(ctx, func(ctx context.Context, tx conn) error {
		_, err := tx.exec(ctx, "UPDATE mdm_notifications SET next_try = ?, attempts = ?, last_error = ? WHERE id = ?", next, attempts, lastError, id)
		return err
	})
}

// DeleteMDMNotification removes a delivered (or abandoned) notification.
func (s *core) DeleteMDMNotification(ctx context.Context, id string) error {
	return s.eng.write(ctx, func(ctx context.Context, tx conn) error {
		_, err := tx.exec(ctx, "DELETE FROM mdm_notifications WHERE id = ?", id)
		return err
	})
}

// MDMImport is an imported key and certificate (a user's existing S/MIME PKCS#12), kept
// encrypted to the appliance's import key.
type MDMImport struct {
	ID         string
	MDM        string // who uploaded it ("admin" for an administrator)
	Account    string
	Subject    string
	Email      string
	Serial     string // of the imported certificate (its own CA's)
	Thumbprint string // hex SHA-256 of the certificate
	NotAfter   time.Time
	Envelope   []byte // CMS EnvelopedData to the import key, holding the PKCS#12
	Created    time.Time
}

// MDMImportStore keeps the imported keys.
type MDMImportStore interface {
	AddMDMImport(ctx context.Context, im MDMImport, e Event) error
	GetMDMImport(ctx context.Context, id string) (MDMImport, error)
	ListMDMImports(ctx context.Context, account string) ([]MDMImport, error)
}

var (
	_ MDMImportStore = (*SQLite)(nil)
	_ MDMImportStore = (*Postgres)(nil)
)

// AddMDMImport stores an imported key with its audit event. ErrConflict if the account has that
// certificate already.
func (s *core) AddMDMImport(ctx context.Context, im MDMImport, e Event) error {
	if im.ID == "" || im.MDM == "" || im.Account == "" || im.Thumbprint == "" || len(im.Envelope) == 0 ||
		im.Created.IsZero() || im.NotAfter.IsZero() || checkTimes(im.Created, im.NotAfter) != nil {
		return errors.New("store: MDM import: id, mdm, account, thumbprint, envelope and times are required")
	}
	event, err := s.prepareEvent(e)
	if err != nil {
		return err
	}
	return s.eng.write(ctx, func(ctx context.Context, tx conn) error {
		var n int64
		if err := tx.queryRow(ctx, "SELECT count(*) FROM mdm_imports WHERE account = ? AND thumbprint = ?", im.Account, im.Thumbprint).Scan(&n); err != nil {
			return err
		}
		if n > 0 {
			return fmt.Errorf("store: %s's certificate %s is imported already: %w", im.Account, im.Thumbprint, ErrConflict)
		}
		if _, err := tx.exec(ctx, `INSERT INTO mdm_imports (id, mdm, account, subject, email, serial, thumbprint, not_after, envelope, created)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`, im.ID, im.MDM, im.Account, im.Subject, im.Email, im.Serial, im.Thumbprint,
			im.NotAfter, im.Envelope, im.Created); err != nil {
			return fmt.Errorf("store: adding an MDM import: %w", err)
		}
		_, err := event(ctx, tx)
		return err
	})
}

const mdmImportColumns = "id, mdm, account, subject, email, serial, thumbprint, not_after, envelope, created"

func scanMDMImport(row scanner) (MDMImport, error) {
	var im MDMImport
	err := row.Scan(&im.ID, &im.MDM, &im.Account, &im.Subject, &im.Email, &im.Serial, &im.Thumbprint, &im.NotAfter, &im.Envelope, &im.Created)
	return im, err
}

// GetMDMImport returns an imported key, or ErrNotFound.
func (s *core) GetMDMImport(ctx context.Context, id string) (MDMImport, error) {
	var im MDMImport
	err := s.eng.read(ctx, func(ctx context.Context, db conn) error {
		var err error
		im, err = scanMDMImport(db.queryRow(ctx, "SELECT "+mdmImportColumns+" FROM mdm_imports WHERE id = ?", id))
		if noRows(err) {
			return fmt.Errorf("store: MDM import %s: %w", id, ErrNotFound)
		}
		return err
	})
	return im, err
}

// ListMDMImports returns the imported keys of account ("" every account), oldest first.
func (s *core) ListMDMImports(ctx context.Context, account string) ([]MDMImport, error) {
	var out []MDMImport
	err := s.eng.read(ctx, func(ctx context.Context, db conn) error {
		return eachRow(ctx, db, func(row scanner) error {
			im, err := scanMDMImport(row)
			out = append(out, im)
			return err
		}, "SELECT "+mdmImportColumns+" FROM mdm_imports WHERE ? = '' OR account = ? ORDER BY created, id", account, account)
	})
	return out, err
}
