package store

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
)

// SCEP profile modes.
const (
	SCEPStatic  = "static"   // one challenge password for the profile
	SCEPOneTime = "one-time" // challenges issued one by one, each good once
)

// SCEPProfile binds a SCEP endpoint (/scep/<Name>) to a directory template.
type SCEPProfile struct {
	Name     string `json:"name"`
	Template string `json:"template"`
	Account  string `json:"account,omitempty"` // the account certificates are for; "" the challenge names it
	// AccountSID is Account's objectSid when the profile was made: the profile enrolls that object
	// only. "" for profiles made before accounts were bound by SID (bound by name).
	AccountSID string    `json:"account_sid,omitempty"`
	Mode       string    `json:"mode"` // SCEPStatic or SCEPOneTime
	Created    time.Time `json:"created"`
	// AllowDES accepts request envelopes encrypted with single DES or 3DES (legacy devices only).
	AllowDES bool `json:"allow_des,omitempty"`
	// ChallengeSHA256 is the SHA-256 of the static challenge password (static mode only).
	ChallengeSHA256 []byte `json:"-"`
	// MDM names the registered MDM that issues and validates this profile's challenges ("" none;
	// the profile's Mode is then SCEPOneTime: each challenge the MDM validated is spent).
	MDM string `json:"mdm,omitempty"`
}

// SCEPChallenge is a one-time challenge, known by the SHA-256 of its password.
type SCEPChallenge struct {
	SHA256  []byte
	Profile string
	Subject string // the subject or SAN value it is bound to; "" any
	Account string // the account it enrolls; "" the profile's
	// AccountSID is Account's objectSid when the challenge was made ("" with Account "").
	AccountSID string
	Created    time.Time
	Expires    time.Time
	UsedAt     time.Time // zero while unused
}

// SCEPTransaction ties a SCEP transactionID to the one request body it came with.
type SCEPTransaction struct {
	Profile, TransactionID string
	BodySHA256             []byte
	RequestID              int64
	Created                time.Time
}

// AddSCEPProfile stores a new profile with its audit event. ErrConflict if the name is taken.
func (s *core) AddSCEPProfile(ctx context.Context, p SCEPProfile, e Event) error {
	if p.Name == "" || p.Template == "" || (p.Mode != SCEPStatic && p.Mode != SCEPOneTime) {
		return fmt.Errorf("store: SCEP profile %q: name, template and mode (static or one-time) are required", p.Name)
	}
	if p.MDM != "" && p.Mode != SCEPOneTime {
		return fmt.Errorf("store: SCEP profile %q: a profile an MDM validates spends each challenge once (one-time mode)", p.Name)
	}
	if (p.Mode == SCEPStatic) != (len(p.ChallengeSHA256) == 32) {
		return fmt.Errorf("store: SCEP profile %q: a static profile needs a challenge hash, a one-time profile none", p.Name)
	}
	if p.Created.IsZero() || checkTimes(p.Created) != nil {
		return fmt.Errorf("store: SCEP profile %q: bad creation time", p.Name)
	}
	event, err := s.prepareEvent(e)
	if err != nil {
		return err
	}
	var hash any
	if p.ChallengeSHA256 != nil {
		hash = p.ChallengeSHA256
	}
	return s.eng.write(ctx, func(ctx context.Context, tx conn) error {
		n, err := tx.exec(ctx, `INSERT INTO scep_profiles (name, template, account, mode, challenge_sha256, created, allow_des, account_sid, mdm)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (name) DO NOTHING`, p.Name, p.Template, p.Account, p.Mode, hash, p.Created, p.AllowDES, p.AccountSID, p.MDM)
		if err != nil {
			return fmt.Errorf("store: adding SCEP profile %q: %w", p.Name, err)
		}
		if n == 0 {
			return fmt.Errorf("store: SCEP profile %q exists: %w", p.Name, ErrConflict)
		}
		_, err = event(ctx, tx)
		return err
	})
}

const scepProfileColumns = "name, template, account, mode, challenge_sha256, created, allow_des, account_sid, mdm"

func scanSCEPProfile(row scanner) (SCEPProfile, error) {
	var p SCEPProfile
	err := row.Scan(&p.Name, &p.Template, &p.Account, &p.Mode, &p.ChallengeSHA256, &p.Created, &p.AllowDES, &p.AccountSID, &p.MDM)
	return p, err
}

// GetSCEPProfile returns a profile, or ErrNotFound.
func (s *core) GetSCEPProfile(ctx context.Context, name string) (SCEPProfile, error) {
	var p SCEPProfile
	err := s.eng.read(ctx, func(ctx context.Context, db conn) error {
		var err error
		p, err = scanSCEPProfile(db.queryRow(ctx, "SELECT "+scepProfileColumns+" FROM scep_profiles WHERE name = ?", name))
		if noRows(err) {
			return fmt.Errorf("store: SCEP profile %q: %w", name, ErrNotFound)
		}
		return err
	})
	return p, err
}

// ListSCEPProfiles returns every profile, by name.
func (s *core) ListSCEPProfiles(ctx context.Context) ([]SCEPProfile, error) {
	var out []SCEPProfile
	err := s.eng.read(ctx, func(ctx context.Context, db conn) error {
		return eachRow(ctx, db, func(row scanner) error {
			p, err := scanSCEPProfile(row)
			out = append(out, p)
			return err
		}, "SELECT "+scepProfileColumns+" FROM scep_profiles ORDER BY name")
	})
	if err != nil {
		return nil, fmt.Errorf("store: listing SCEP profiles: %w", err)
	}
	return out, nil
}

// AddSCEPChallenge stores a one-time challenge of a one-time profile, with its audit event.
func (s *core) AddSCEPChallenge(ctx context.Context, c SCEPChallenge, e Event) error {
	if len(c.SHA256) != 32 {
		return errors.New("store: SCEP challenge: want a SHA-256 hash")
	}
	if c.Created.IsZero() || c.Expires.IsZero() || checkTimes(c.Created, c.Expires) != nil {
		return errors.New("store: SCEP challenge: creation and expiry times are required")
	}
	event, err := s.prepareEvent(e)
	if err != nil {
		return err
	}
	return s.eng.write(ctx, func(ctx context.Context, tx conn) error {
		var mode string
		err := tx.queryRow(ctx, "SELECT mode FROM scep_profiles WHERE name = ?", c.Profile).Scan(&mode)
		if noRows(err) {
			return fmt.Errorf("store: SCEP profile %q: %w", c.Profile, ErrNotFound)
		}
		if err != nil {
			return err
		}
		if mode != SCEPOneTime {
			return fmt.Errorf("store: SCEP profile %q uses a static challenge: %w", c.Profile, ErrConflict)
		}
		if _, err := tx.exec(ctx, `INSERT INTO scep_challenges (sha256, profile, subject, account, created, expires, account_sid)
			VALUES (?, ?, ?, ?, ?, ?, ?)`, c.SHA256, c.Profile, c.Subject, c.Account, c.Created, c.Expires, c.AccountSID); err != nil {
			return fmt.Errorf("store: adding a SCEP challenge: %w", err)
		}
		_, err = event(ctx, tx)
		return err
	})
}

// UseSCEPChallenge marks the one-time challenge with hash sha of profile used at now and returns
// it. ErrNotFound when there is none (or it belongs to another profile), ErrConflict when it was
// used before or has expired; nothing changes then. The challenge is taken by one conditional
// UPDATE, so of concurrent callers (of this process or another sharing the database) exactly one
// succeeds.
func (s *core) UseSCEPChallenge(ctx context.Context, profile string, sha []byte, now time.Time) (SCEPChallenge, error) {
	if now.IsZero() || checkTimes(now) != nil {
		return SCEPChallenge{}, errors.New("store: using a SCEP challenge: bad time")
	}
	const cols = "sha256, profile, subject, account, created, expires, used_at, account_sid"
	var c SCEPChallenge
	scan := func(row scanner) error {
		return row.Scan(&c.SHA256, &c.Profile, &c.Subject, &c.Account, &c.Created, &c.Expires, &c.UsedAt, &c.AccountSID)
	}
	err := s.eng.write(ctx, func(ctx context.Context, tx conn) error {
		err := scan(tx.queryRow(ctx, `UPDATE scep_challenges SET used_at = ?
			WHERE sha256 = ? AND profile = ? AND used_at IS NULL AND expires > ? RETURNING `+cols, now, sha, profile, now))
		if !noRows(err) {
			return err
		}
		// Nothing taken: say why.
		err = scan(tx.queryRow(ctx, "SELECT "+cols+" FROM scep_challenges WHERE sha256 = ? AND profile = ?", sha, profile))
		switch {
		case noRows(err):
			return fmt.Errorf("store: SCEP challenge: %w", ErrNotFound)
		case err != nil:
			return err
		case !c.UsedAt.IsZero():
			return fmt.Errorf("store: SCEP challenge already used: %w", ErrConflict)
		default:
			return fmt.Errorf("store: SCEP challenge expired at %s: %w", c.Expires.Format(time.RFC3339), ErrConflict)
		}
	})
	if err != nil {
		return SCEPChallenge{}, err
	}
	return c, nil
}

// GetSCEPTransaction returns the transaction recorded for (profile, id), or ErrNotFound.
func (s *core) GetSCEPTransaction(ctx context.Context, profile, id string) (SCEPTransaction, error) {
	t := SCEPTransaction{Profile: profile, TransactionID: id}
	err := s.eng.read(ctx, func(ctx context.Context, db conn) error {
		var req *int64
		err := db.queryRow(ctx, `SELECT body_sha256, request_id, created FROM scep_transactions
			WHERE profile = ? AND transaction_id = ?`, profile, id).Scan(&t.BodySHA256, &req, &t.Created)
		if noRows(err) {
			return fmt.Errorf("store: SCEP transaction %q: %w", id, ErrNotFound)
		}
		if req != nil {
			t.RequestID = *req
		}
		return err
	})
	return t, err
}

// SCEPTransactionOfRequest returns the transaction that made request id, or ErrNotFound.
func (s *core) SCEPTransactionOfRequest(ctx context.Context, id int64) (SCEPTransaction, error) {
	var t SCEPTransaction
	err := s.eng.read(ctx, func(ctx context.Context, db conn) error {
		err := db.queryRow(ctx, `SELECT profile, transaction_id, body_sha256, created FROM scep_transactions
			WHERE request_id = ? ORDER BY created LIMIT 1`, id).Scan(&t.Profile, &t.TransactionID, &t.BodySHA256, &t.Created)
		if noRows(err) {
			return fmt.Errorf("store: no SCEP transaction made request %d: %w", id, ErrNotFound)
		}
		t.RequestID = id
		return err
	})
	return t, err
}

// check refuses a transaction without its ID, body hash or time.
func (t SCEPTransaction) check() error {
	if t.Created.IsZero() || checkTimes(t.Created) != nil || strings.TrimSpace(t.TransactionID) == "" || len(t.BodySHA256) != 32 {
		return errors.New("store: SCEP transaction: id, body hash and time are required")
	}
	return nil
}

// insertSCEPTransaction inserts t inside a write transaction; ErrTransactionRecorded if (profile,
// id) is recorded already, by this transaction's commit or a concurrent one's. One exception: a
// transaction recorded with the same body for a request that failed (the HSM or the store
// failed, or an interrupted issuance was marked failed) is taken over by t's request, so that the
// client's retry is a new attempt rather than the old failure again.
func insertSCEPTransaction(ctx context.Context, tx conn, t SCEPTransaction) error {
	n, err := tx.exec(ctx, `INSERT INTO scep_transactions (profile, transaction_id, body_sha256, request_id, created)
		VALUES (?, ?, ?, ?, ?)
		ON CONFLICT (profile, transaction_id) DO UPDATE SET request_id = excluded.request_id, created = excluded.created
		WHERE scep_transactions.body_sha256 = excluded.body_sha256 AND excluded.request_id IS NOT NULL
			AND scep_transactions.request_id IN (SELECT id FROM requests WHERE state = 'failed')`,
		t.Profile, t.TransactionID, t.BodySHA256, nullInt64(t.RequestID), t.Created)
	if err != nil {
		return fmt.Errorf("store: recording SCEP transaction %q: %w", t.TransactionID, err)
	}
	if n == 0 {
		return fmt.Errorf("store: SCEP transaction %q: %w", t.TransactionID, ErrTransactionRecorded)
	}
	return nil
}
