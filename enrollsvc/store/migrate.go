// Schema migrations of the SQLite store. Each step is applied in its own transaction together
// with its row in schema_migrations, so a database is always at exactly one version. Steps are
// only ever appended: never edit or renumber one that has shipped.

package store

import (
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"time"
)

// migration is one step of the schema.
type migration struct {
	version int
	name    string
	sql     string
}

// Times are stored as TEXT in the fixed-width form of timeLayout (UTC, nanoseconds), which
// sorts like the times themselves. Not unix nanoseconds: an INTEGER of nanoseconds ends in
// 2262, and a certificate may carry notAfter 9999-12-31 (RFC 5280 section 4.1.2.5).
var migrations = []migration{
	{1, "initial schema", `
CREATE TABLE serials (
	serial      TEXT PRIMARY KEY,
	reserved_at TEXT NOT NULL
) WITHOUT ROWID;

-- The record that a serial was used is what keeps serials unique: it is never removed or changed.
CREATE TRIGGER serials_no_delete BEFORE DELETE ON serials
BEGIN SELECT RAISE(ABORT, 'serials are never deleted'); END;
CREATE TRIGGER serials_no_update BEFORE UPDATE ON serials
BEGIN SELECT RAISE(ABORT, 'serials are never changed'); END;

CREATE TABLE requests (
	id        INTEGER PRIMARY KEY AUTOINCREMENT, -- AUTOINCREMENT: an ID is never reused
	state     TEXT NOT NULL CHECK (state IN ('pending', 'issued', 'denied', 'failed')),
	template  TEXT NOT NULL,
	requester TEXT NOT NULL,
	account   TEXT NOT NULL,
	csr       BLOB,
	submitted TEXT NOT NULL,
	updated   TEXT NOT NULL,
	reason    TEXT NOT NULL DEFAULT '',
	serial    TEXT REFERENCES serials (serial)
);
CREATE INDEX requests_state ON requests (state, id);
CREATE INDEX requests_account ON requests (account, id);

CREATE TABLE certificates (
	serial            TEXT PRIMARY KEY REFERENCES serials (serial),
	der               BLOB NOT NULL,
	template          TEXT NOT NULL,
	account           TEXT NOT NULL,
	subject           TEXT NOT NULL,
	not_before        TEXT,
	not_after         TEXT,
	status            TEXT NOT NULL CHECK (status IN ('valid', 'revoked')),
	revoked_at        TEXT,
	revocation_reason INTEGER NOT NULL DEFAULT 0,
	request_id        INTEGER REFERENCES requests (id),
	issued_at         TEXT NOT NULL
);
CREATE INDEX certificates_account ON certificates (account, issued_at, serial);
CREATE INDEX certificates_template ON certificates (template, issued_at, serial);
CREATE INDEX certificates_status ON certificates (status, issued_at, serial);
CREATE INDEX certificates_issued_at ON certificates (issued_at, serial);

CREATE TABLE events (
	seq      INTEGER PRIMARY KEY AUTOINCREMENT,
	id       INTEGER NOT NULL,
	category TEXT NOT NULL,
	level    TEXT NOT NULL,
	time     TEXT NOT NULL,
	message  TEXT NOT NULL,
	fields   TEXT CHECK (fields IS NULL OR json_valid(fields))
);
CREATE INDEX events_id ON events (id, seq);
`},
	{2, "requests keep the policy decision", `
-- What policy decided for a request (JSON, opaque to the store): a pending request is issued on
-- approval exactly as the certificate manager saw it.
ALTER TABLE requests ADD COLUMN decision BLOB;
`},
	{3, "revocation publishing and SCEP", `
-- CRLs list revoked certificates; deltas those revoked since a time.
CREATE INDEX certificates_revoked ON certificates (revoked_at, serial) WHERE status = 'revoked';

-- The last CRL number handed out: CRL numbers only ever grow (RFC 5280 5.2.3).
CREATE TABLE crl_numbers (
	id     INTEGER PRIMARY KEY CHECK (id = 1),
	number INTEGER NOT NULL CHECK (number >= 0)
);
INSERT INTO crl_numbers (id, number) VALUES (1, 0);
CREATE TRIGGER crl_numbers_grow BEFORE UPDATE ON crl_numbers WHEN NEW.number <= OLD.number
BEGIN SELECT RAISE(ABORT, 'CRL numbers only grow'); END;

-- SCEP profiles bind /scep/<name> to a directory template and say how requests are authorised.
CREATE TABLE scep_profiles (
	name             TEXT PRIMARY KEY,
	template         TEXT NOT NULL,
	account          TEXT NOT NULL DEFAULT '',
	mode             TEXT NOT NULL CHECK (mode IN ('static', 'one-time')),
	challenge_sha256 BLOB, -- static mode: SHA-256 of the challenge password; the password itself is not kept
	created          TEXT NOT NULL
);

-- One-time challenges, by the SHA-256 of the challenge (never the challenge itself).
CREATE TABLE scep_challenges (
	sha256   BLOB PRIMARY KEY,
	profile  TEXT NOT NULL REFERENCES scep_profiles (name) ON DELETE CASCADE,
	subject  TEXT NOT NULL DEFAULT '', -- bound subject or SAN value; '' none
	account  TEXT NOT NULL DEFAULT '', -- '' the profile's
	created  TEXT NOT NULL,
	expires  TEXT NOT NULL,
	used_at  TEXT
);

-- SCEP transactions: a transactionID is bound to one request body (a retry with the same body
-- gets the same request; other content is refused).
CREATE TABLE scep_transactions (
	profile        TEXT NOT NULL,
	transaction_id TEXT NOT NULL,
	body_sha256    BLOB NOT NULL,
	request_id     INTEGER REFERENCES requests (id),
	created        TEXT NOT NULL,
	PRIMARY KEY (profile, transaction_id)
) WITHOUT ROWID;
`},
	{4, "SCEP profiles say whether they accept DES", `
-- DES and 3DES request envelopes are refused unless a profile allows them for legacy devices.
ALTER TABLE scep_profiles ADD COLUMN allow_des INTEGER NOT NULL DEFAULT 0 CHECK (allow_des IN (0, 1));
`},
	{5, "SCEP accounts are bound by SID", `
-- The objectSid of the account a profile or challenge enrolls, taken when it was made: a
-- re-created account of the same name is another object and gets nothing. '' for rows made
-- before this step, which stay bound by name (and are listed as such).
ALTER TABLE scep_profiles ADD COLUMN account_sid TEXT NOT NULL DEFAULT '';
ALTER TABLE scep_challenges ADD COLUMN account_sid TEXT NOT NULL DEFAULT '';
`},
	{6, "the CA the instances serve, and the instances", `
-- One row: the CA every instance sharing the store serves; an instance that joins checks its
-- HSM key against it and takes the shared settings from it.
CREATE TABLE cluster (
	id       INTEGER PRIMARY KEY CHECK (id = 1),
	ca_cert  BLOB NOT NULL,
	ca_chain TEXT NOT NULL DEFAULT '',
	key_uri  TEXT NOT NULL,
	settings TEXT NOT NULL,
	created  TEXT NOT NULL
);
CREATE TABLE instances (
	name      TEXT PRIMARY KEY,
	version   TEXT NOT NULL,
	addresses TEXT NOT NULL,
	started   TEXT NOT NULL,
	heartbeat TEXT NOT NULL
) WITHOUT ROWID;
`},
	{7, "the CRLs the instances serve", `
-- Every CRL published (DER), so that each instance serves the newest one, whichever published it.
CREATE TABLE crls (
	kind        TEXT NOT NULL CHECK (kind IN ('full', 'delta')),
	number      INTEGER NOT NULL,
	this_update TEXT NOT NULL,
	next_update TEXT NOT NULL,
	der         BLOB NOT NULL,
	PRIMARY KEY (kind, number)
) WITHOUT ROWID;
`},
	{8, "instances name their enrollment web services", `
-- The base URLs (https://host[:port]) of an instance's enrollment web services, which the
-- MS-XCEP policy of every instance lists, so that clients fail over.
ALTER TABLE instances ADD COLUMN enroll_urls TEXT NOT NULL DEFAULT '[]';
`},
	{9, "the CRL walk reads the index alone", `
-- A CRL lists every revoked certificate's serial, revocation time and reason: with the reason in
-- the index the walk reads the index alone, not also each certificate's row (with its DER).
DROP INDEX certificates_revoked;
CREATE INDEX certificates_revoked ON certificates (revoked_at, serial, revocation_reason) WHERE status = 'revoked';
`},
	{10, "the audit trail is a hash chain per instance", `
-- Each instance chains the events it records (proto/auditlog): n is the event's position in its
-- instance's chain, prev the hash of the one before, hash its own. Events recorded before this
-- step have none. event_chains holds each chain's head, whose row lock orders an instance's
-- writers. Events are never changed or removed; the triggers keep honest code to that, and the
-- chain shows when something else did not.
ALTER TABLE events ADD COLUMN instance TEXT;
ALTER TABLE events ADD COLUMN n INTEGER;
ALTER TABLE events ADD COLUMN prev BLOB;
ALTER TABLE events ADD COLUMN hash BLOB;
CREATE TABLE event_chains (
	instance TEXT PRIMARY KEY,
	n        INTEGER NOT NULL,
	hash     BLOB
) WITHOUT ROWID;
CREATE TRIGGER events_no_delete BEFORE DELETE ON events
BEGIN SELECT RAISE(ABORT, 'audit events are never deleted'); END;
CREATE TRIGGER events_no_update BEFORE UPDATE ON events
BEGIN SELECT RAISE(ABORT, 'audit events are never changed'); END;
`},
	{11, "operations settings", `
-- Settings an administrator changes while the service runs (the metrics token, remote syslog, the
-- backup schedule), shared by every instance of the store: name -> JSON, with who set it when.
CREATE TABLE settings (
	name    TEXT PRIMARY KEY,
	value   TEXT NOT NULL CHECK (json_valid(value)),
	updated TEXT NOT NULL,
	by      TEXT NOT NULL
) WITHOUT ROWID;
-- Monitoring counts the valid certificates that expire soon.
CREATE INDEX certificates_expiry ON certificates (not_after) WHERE status = 'valid';
`},
	{12, "MDM connector jobs", `
-- PKCS requests of the MDM connector (a key pair made here, delivered as a PKCS#12): the job, and
-- its result (the PKCS#12 encrypted to the delivery password or the device's key, never a clear
-- key) until it is collected or expires. Transient: a store move or backup does not carry them.
CREATE TABLE mdm_jobs (
	id         TEXT PRIMARY KEY,
	mdm        TEXT NOT NULL,
	template   TEXT NOT NULL,
	account    TEXT NOT NULL,
	device_id  TEXT NOT NULL DEFAULT '',
	delivery   TEXT NOT NULL CHECK (delivery IN ('password', 'device-key')),
	state      TEXT NOT NULL CHECK (state IN ('queued', 'issued', 'refused', 'failed')),
	request_id INTEGER NOT NULL DEFAULT 0,
	serial     TEXT NOT NULL DEFAULT '',
	result     BLOB,
	reason     TEXT NOT NULL DEFAULT '',
	created    TEXT NOT NULL,
	updated    TEXT NOT NULL,
	expires    TEXT NOT NULL,
	collected  TEXT
) WITHOUT ROWID;
CREATE INDEX mdm_jobs_expires ON mdm_jobs (expires);
`},
	{13, "MDM-validated SCEP", `
-- A SCEP profile may have an MDM issue and validate its challenges: each one the MDM validated is
-- spent in scep_challenges, so that a replay is refused without asking the MDM again.
ALTER TABLE scep_profiles ADD COLUMN mdm TEXT NOT NULL DEFAULT '';
-- What the MDM is told of the requests its challenges authorised (issued or failed), kept until
-- the MDM acknowledged it, and retried; the id lets the MDM recognise a notification sent again.
CREATE TABLE mdm_notifications (
	id         TEXT PRIMARY KEY,
	mdm        TEXT NOT NULL,
	payload    TEXT NOT NULL,
	created    TEXT NOT NULL,
	next_try   TEXT NOT NULL,
	attempts   INTEGER NOT NULL DEFAULT 0,
	last_error TEXT NOT NULL DEFAULT ''
) WITHOUT ROWID;
CREATE INDEX mdm_notifications_due ON mdm_notifications (next_try);
`},
	{14, "MDM imported keys", `
-- Imported PKCS: a user's existing key and certificate (S/MIME), uploaded encrypted to the
-- appliance's import key (an RSA key in the HSM that only decrypts) and kept so: the blob is a
-- CMS EnvelopedData to that key holding the PKCS#12, re-encrypted per device on request.
CREATE TABLE mdm_imports (
	id         TEXT PRIMARY KEY,
	mdm        TEXT NOT NULL,
	account    TEXT NOT NULL,
	subject    TEXT NOT NULL,
	email      TEXT NOT NULL,
	serial     TEXT NOT NULL,
	thumbprint TEXT NOT NULL,
	not_after  TEXT NOT NULL,
	envelope   BLOB NOT NULL,
	created    TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX mdm_imports_account ON mdm_imports (account);
`},
	{15, "archived keys", `
-- Key archival (templates with CT_FLAG_REQUIRE_PRIVATE_KEY_ARCHIVAL): a private key, encrypted to
-- the key recovery agents' certificates (a CMS EnvelopedData only their keys open), by the SHA-256
-- of its public key (the certificate's SubjectPublicKeyInfo), stored before the certificate is issued.
CREATE TABLE archived_keys (
	spki_sha256 TEXT PRIMARY KEY,
	account     TEXT NOT NULL,
	template    TEXT NOT NULL,
	envelope    BLOB NOT NULL,
	kras        TEXT NOT NULL, -- thumbprints of the agents it is encrypted to
	created     TEXT NOT NULL
) WITHOUT ROWID;
`},
	{16, "SCEP transactions by request", `
-- The SCEP transaction of a request, for telling the MDM that validated it what became of it when
-- a certificate manager approves or denies it later.
CREATE INDEX scep_transactions_request ON scep_transactions (request_id);
`},
}

// latestVersion is the schema version this code writes.
func latestVersion() int { return migrations[len(migrations)-1].version }

// checkVersion refuses a database written by newer code: its meaning is unknown here.
func checkVersion(v int) error {
	if v > latestVersion() {
		return fmt.Errorf("schema version %d is newer than this program knows (%d); refusing to open", v, latestVersion())
	}
	return nil
}

// querier is the part of *sql.DB and *sql.Tx that schemaVersion needs.
type querier interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// schemaVersion returns the highest applied migration, 0 if none.
func schemaVersion(ctx context.Context, q querier) (int, error) {
	var v sql.NullInt64
	if err := q.QueryRowContext(ctx, "SELECT max(version) FROM schema_migrations").Scan(&v); err != nil {
		return 0, fmt.Errorf("reading schema version: %w", err)
	}
	return int(v.Int64), nil
}

// migrate brings the database to latestVersion. Each step runs in a BEGIN IMMEDIATE
// transaction that first reads the version again, so two processes opening the same new file
// do not both apply a step.
func migrate(ctx context.Context, db *sql.DB, log *slog.Logger, path string) error {
	if _, err := db.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		version    INTEGER PRIMARY KEY,
		name       TEXT NOT NULL,
		applied_at TEXT NOT NULL
	)`); err != nil {
		return fmt.Errorf("creating schema_migrations: %w", err)
	}
	for _, m := range migrations {
		applied, err := applyMigration(ctx, db, m)
		if err != nil {
			return fmt.Errorf("migration %d (%s): %w", m.version, m.name, err)
		}
		if applied {
			log.Info("store: schema migration applied", "path", path, "version", m.version, "name", m.name)
		}
	}
	return nil
}

// applyMigration applies m unless the database already has it.
func applyMigration(ctx context.Context, db *sql.DB, m migration) (applied bool, err error) {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return false, err
	}
	defer func() {
		if !applied {
			tx.Rollback()
		}
	}()
	v, err := schemaVersion(ctx, tx)
	if err != nil {
		return false, err
	}
	if err := checkVersion(v); err != nil {
		return false, err
	}
	if v >= m.version {
		return false, nil
	}
	if v != m.version-1 {
		return false, fmt.Errorf("database is at version %d, cannot apply %d", v, m.version)
	}
	if _, err := tx.ExecContext(ctx, m.sql); err != nil {
		return false, err
	}
	at, _ := encTime(time.Now())
	if _, err := tx.ExecContext(ctx, "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
		m.version, m.name, at); err != nil {
		return false, err
	}
	if err := tx.Commit(); err != nil {
		return false, err
	}
	return true, nil
}
