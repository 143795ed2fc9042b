// Schema migrations of the PostgreSQL store. They mirror those of SQLite (migrate.go) step for
// step, with the same versions and names (a test holds them together), in PostgreSQL's types:
// timestamptz for times, bytea for bytes, identity columns for IDs. Steps are only ever appended.
//
// An opener applies what is missing in one transaction that first takes an advisory lock, so of
// several instances opening a new database at once one migrates and the others then find the
// schema in place; and a failed migration leaves the database as it was (PostgreSQL's DDL is
// transactional).

package store

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

var pgMigrations = []migration{
	{1, "initial schema", `
CREATE FUNCTION serials_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	RAISE EXCEPTION 'serials are never deleted or changed';
END $$;

-- The record that a serial was used is what keeps serials unique: it is never removed or changed.
CREATE TABLE serials (
	serial      text PRIMARY KEY,
	reserved_at timestamptz NOT NULL
);
CREATE TRIGGER serials_no_change BEFORE UPDATE OR DELETE ON serials
	FOR EACH ROW EXECUTE FUNCTION serials_immutable();
CREATE TRIGGER serials_no_truncate BEFORE TRUNCATE ON serials
	FOR EACH STATEMENT EXECUTE FUNCTION serials_immutable();

CREATE TABLE requests (
	id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, -- an ID is never reused
	state     text NOT NULL CHECK (state IN ('pending', 'issued', 'denied', 'failed')),
	template  text NOT NULL,
	requester text NOT NULL,
	account   text NOT NULL,
	csr       bytea,
	submitted timestamptz NOT NULL,
	updated   timestamptz NOT NULL,
	reason    text NOT NULL DEFAULT '',
	serial    text REFERENCES serials (serial)
);
CREATE INDEX requests_state ON requests (state, id);
CREATE INDEX requests_account ON requests (account, id);

CREATE TABLE certificates (
	serial            text PRIMARY KEY REFERENCES serials (serial),
	der               bytea NOT NULL,
	template          text NOT NULL,
	account           text NOT NULL,
	subject           text NOT NULL,
	not_before        timestamptz,
	not_after         timestamptz,
	status            text NOT NULL CHECK (status IN ('valid', 'revoked')),
	revoked_at        timestamptz,
	revocation_reason integer NOT NULL DEFAULT 0,
	request_id        bigint REFERENCES requests (id),
	issued_at         timestamptz NOT NULL
);
CREATE INDEX certificates_account ON certificates (account, issued_at, serial);
CREATE INDEX certificates_template ON certificates (template, issued_at, serial);
CREATE INDEX certificates_status ON certificates (status, issued_at, serial);
CREATE INDEX certificates_issued_at ON certificates (issued_at, serial);

-- seq comes from the identity's sequence (no per-session cache), so it grows in the order
-- events are inserted, across instances.
CREATE TABLE events (
	seq      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	id       integer NOT NULL,
	category text NOT NULL,
	level    text NOT NULL,
	"time"   timestamptz NOT NULL,
	message  text NOT NULL,
	fields   json -- json, not jsonb: kept as written, and \u0000 in a string is accepted
);
CREATE INDEX events_id ON events (id, seq);
`},
	{2, "requests keep the policy decision", `
-- What policy decided for a request (JSON, opaque to the store): a pending request is issued on
-- approval exactly as the certificate manager saw it.
ALTER TABLE requests ADD COLUMN decision bytea;
`},
	{3, "revocation publishing and SCEP", `
-- CRLs list revoked certificates; deltas those revoked since a time.
CREATE INDEX certificates_revoked ON certificates (revoked_at, serial) WHERE status = 'revoked';

-- The last CRL number handed out: CRL numbers only ever grow (RFC 5280 5.2.3).
CREATE TABLE crl_numbers (
	id     integer PRIMARY KEY CHECK (id = 1),
	number bigint NOT NULL CHECK (number >= 0)
);
INSERT INTO crl_numbers (id, number) VALUES (1, 0);
CREATE FUNCTION crl_numbers_grow() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	IF NEW.number <= OLD.number THEN
		RAISE EXCEPTION 'CRL numbers only grow';
	END IF;
	RETURN NEW;
END $$;
CREATE TRIGGER crl_numbers_grow BEFORE UPDATE ON crl_numbers
	FOR EACH ROW EXECUTE FUNCTION crl_numbers_grow();

-- SCEP profiles bind /scep/<name> to a directory template and say how requests are authorised.
CREATE TABLE scep_profiles (
	name             text PRIMARY KEY,
	template         text NOT NULL,
	account          text NOT NULL DEFAULT '',
	mode             text NOT NULL CHECK (mode IN ('static', 'one-time')),
	challenge_sha256 bytea, -- static mode: SHA-256 of the challenge password; the password itself is not kept
	created          timestamptz NOT NULL
);

-- One-time challenges, by the SHA-256 of the challenge (never the challenge itself).
CREATE TABLE scep_challenges (
	sha256   bytea PRIMARY KEY,
	profile  text NOT NULL REFERENCES scep_profiles (name) ON DELETE CASCADE,
	subject  text NOT NULL DEFAULT '', -- bound subject or SAN value; '' none
	account  text NOT NULL DEFAULT '', -- '' the profile's
	created  timestamptz NOT NULL,
	expires  timestamptz NOT NULL,
	used_at  timestamptz
);

-- SCEP transactions: a transactionID is bound to one request body (a retry with the same body
-- gets the same request; other content is refused).
CREATE TABLE scep_transactions (
	profile        text NOT NULL,
	transaction_id text NOT NULL,
	body_sha256    bytea NOT NULL,
	request_id     bigint REFERENCES requests (id),
	created        timestamptz NOT NULL,
	PRIMARY KEY (profile, transaction_id)
);
`},
	{4, "SCEP profiles say whether they accept DES", `
-- DES and 3DES request envelopes are refused unless a profile allows them for legacy devices.
ALTER TABLE scep_profiles ADD COLUMN allow_des boolean NOT NULL DEFAULT false;
`},
	{5, "SCEP accounts are bound by SID", `
-- The objectSid of the account a profile or challenge enrolls, taken when it was made: a
-- re-created account of the same name is another object and gets nothing. '' for rows made
-- before this step, which stay bound by name (and are listed as such).
ALTER TABLE scep_profiles ADD COLUMN account_sid text NOT NULL DEFAULT '';
ALTER TABLE scep_challenges ADD COLUMN account_sid text NOT NULL DEFAULT '';
`},
	{6, "the CA the instances serve, and the instances", `
-- One row: the CA every instance sharing the store serves; an instance that joins checks its
-- HSM key against it and takes the shared settings from it.
CREATE TABLE cluster (
	id       integer PRIMARY KEY CHECK (id = 1),
	ca_cert  bytea NOT NULL,
	ca_chain text NOT NULL DEFAULT '',
	key_uri  text NOT NULL,
	settings text NOT NULL,
	created  timestamptz NOT NULL
);
CREATE TABLE instances (
	name      text PRIMARY KEY,
	version   text NOT NULL,
	addresses text NOT NULL,
	started   timestamptz NOT NULL,
	heartbeat timestamptz NOT NULL
);
`},
	{7, "the CRLs the instances serve", `
-- Every CRL published (DER), so that each instance serves the newest one, whichever published it.
CREATE TABLE crls (
	kind        text NOT NULL CHECK (kind IN ('full', 'delta')),
	number      bigint NOT NULL,
	this_update timestamptz NOT NULL,
	next_update timestamptz NOT NULL,
	der         bytea NOT NULL,
	PRIMARY KEY (kind, number)
);
`},
	{8, "instances name their enrollment web services", `
-- The base URLs (https://host[:port]) of an instance's enrollment web services, which the
-- MS-XCEP policy of every instance lists, so that clients fail over.
ALTER TABLE instances ADD COLUMN enroll_urls text NOT NULL DEFAULT '[]';
`},
	{9, "the CRL walk reads the index alone", `
-- A CRL lists every revoked certificate's serial, revocation time and reason: with the reason in
-- the index the walk reads the index alone, not also each certificate's row (with its DER).
DROP INDEX certificates_revoked;
CREATE INDEX certificates_revoked ON certificates (revoked_at, serial) INCLUDE (revocation_reason) WHERE status = 'revoked';
`},
	{10, "the audit trail is a hash chain per instance", `
-- Each instance chains the events it records (proto/auditlog): n is the event's position in its
-- instance's chain, prev the hash of the one before, hash its own. Events recorded before this
-- step have none. event_chains holds each chain's head, whose row lock orders an instance's
-- writers. Events are never changed or removed; the triggers keep honest code to that, and the
-- chain shows when something else did not.
ALTER TABLE events ADD COLUMN instance text, ADD COLUMN n bigint, ADD COLUMN prev bytea, ADD COLUMN hash bytea;
CREATE TABLE event_chains (
	instance text PRIMARY KEY,
	n        bigint NOT NULL,
	hash     bytea
);
CREATE FUNCTION events_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	RAISE EXCEPTION 'audit events are never changed or deleted';
END $$;
CREATE TRIGGER events_no_change BEFORE UPDATE OR DELETE ON events
	FOR EACH ROW EXECUTE FUNCTION events_immutable();
CREATE TRIGGER events_no_truncate BEFORE TRUNCATE ON events
	FOR EACH STATEMENT EXECUTE FUNCTION events_immutable();
`},
	{11, "operations settings", `
-- Settings an administrator changes while the service runs (the metrics token, remote syslog, the
-- backup schedule), shared by every instance of the store: name -> JSON, with who set it when.
CREATE TABLE settings (
	name    text PRIMARY KEY,
	value   json NOT NULL,
	updated timestamptz NOT NULL,
	by      text NOT NULL
);
-- Monitoring counts the valid certificates that expire soon.
CREATE INDEX certificates_expiry ON certificates (not_after) WHERE status = 'valid';
`},
	{12, "MDM connector jobs", `
-- PKCS requests of the MDM connector (a key pair made here, delivered as a PKCS#12): the job, and
-- its result (the PKCS#12 encrypted to the delivery password or the device's key, never a clear
-- key) until it is collected or expires. Transient: a store move or backup does not carry them.
CREATE TABLE mdm_jobs (
	id         text PRIMARY KEY,
	mdm        text NOT NULL,
	template   text NOT NULL,
	account    text NOT NULL,
	device_id  text NOT NULL DEFAULT '',
	delivery   text NOT NULL CHECK (delivery IN ('password', 'device-key')),
	state      text NOT NULL CHECK (state IN ('queued', 'issued', 'refused', 'failed')),
	request_id bigint NOT NULL DEFAULT 0,
	serial     text NOT NULL DEFAULT '',
	result     bytea,
	reason     text NOT NULL DEFAULT '',
	created    timestamptz NOT NULL,
	updated    timestamptz NOT NULL,
	expires    timestamptz NOT NULL,
	collected  timestamptz
);
CREATE INDEX mdm_jobs_expires ON mdm_jobs (expires);
`},
	{13, "MDM-validated SCEP", `
-- A SCEP profile may have an MDM issue and validate its challenges: each one the MDM validated is
-- spent in scep_challenges, so that a replay is refused without asking the MDM again.
ALTER TABLE scep_profiles ADD COLUMN mdm text NOT NULL DEFAULT '';
-- What the MDM is told of the requests its challenges authorised (issued or failed), kept until
-- the MDM acknowledged it, and retried; the id lets the MDM recognise a notification sent again.
CREATE TABLE mdm_notifications (
	id         text PRIMARY KEY,
	mdm        text NOT NULL,
	payload    text NOT NULL,
	created    timestamptz NOT NULL,
	next_try   timestamptz NOT NULL,
	attempts   integer NOT NULL DEFAULT 0,
	last_error text NOT NULL DEFAULT ''
);
CREATE INDEX mdm_notifications_due ON mdm_notifications (next_try);
`},
	{14, "MDM imported keys", `
-- Imported PKCS: a user's existing key and certificate (S/MIME), uploaded encrypted to the
-- appliance's import key (an RSA key in the HSM that only decrypts) and kept so: the blob is a
-- CMS EnvelopedData to that key holding the PKCS#12, re-encrypted per device on request.
CREATE TABLE mdm_imports (
	id         text PRIMARY KEY,
	mdm        text NOT NULL,
	account    text NOT NULL,
	subject    text NOT NULL,
	email      text NOT NULL,
	serial     text NOT NULL,
	thumbprint text NOT NULL,
	not_after  timestamptz NOT NULL,
	envelope   bytea NOT NULL,
	created    timestamptz NOT NULL
);
CREATE INDEX mdm_imports_account ON mdm_imports (account);
`},
	{15, "archived keys", `
-- Key archival (templates with CT_FLAG_REQUIRE_PRIVATE_KEY_ARCHIVAL): a private key, encrypted to
-- the key recovery agents' certificates (a CMS EnvelopedData only their keys open), by the SHA-256
-- of its public key (the certificate's SubjectPublicKeyInfo), stored before the certificate is issued.
CREATE TABLE archived_keys (
	spki_sha256 text PRIMARY KEY,
	account     text NOT NULL,
	template    text NOT NULL,
	envelope    bytea NOT NULL,
	kras        text NOT NULL, -- thumbprints of the agents it is encrypted to
	created     timestamptz NOT NULL
);
`},
	{16, "SCEP transactions by request", `
-- The SCEP transaction of a request, for telling the MDM that validated it what became of it when
-- a certificate manager approves or denies it later.
CREATE INDEX scep_transactions_request ON scep_transactions (request_id);
`},
}

// migratePG brings the database to latestVersion, or refuses it without changing it.
func migratePG(ctx context.Context, pool *pgxpool.Pool, log *slog.Logger, where string) error {
	tx, err := pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.ReadCommitted})
	if err != nil {
		return err
	}
	defer tx.Rollback(ctx)
	// Held until this transaction ends: one opener at a time inspects and migrates.
	if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", pgLockMigrate); err != nil {
		return fmt.Errorf("taking the migration lock: %w", err)
	}
	v, err := pgSchemaVersion(ctx, tx)
	if err != nil {
		return err
	}
	if v < 0 {
		if _, err := tx.Exec(ctx, `CREATE TABLE schema_migrations (
			version    integer PRIMARY KEY,
			name       text NOT NULL,
			applied_at timestamptz NOT NULL
		)`); err != nil {
			return fmt.Errorf("creating schema_migrations: %w", err)
		}
	}
	var applied []migration
	for _, m := range pgMigrations {
		if m.version <= v {
			continue
		}
		if _, err := tx.Exec(ctx, m.sql); err != nil {
			return fmt.Errorf("migration %d (%s): %w", m.version, m.name, err)
		}
		if _, err := tx.Exec(ctx, "INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, now())",
			m.version, m.name); err != nil {
			return fmt.Errorf("migration %d (%s): %w", m.version, m.name, err)
		}
		applied = append(applied, m)
	}
	if err := tx.Commit(ctx); err != nil {
		return err
	}
	for _, m := range applied {
		log.Info("store: schema migration applied", "url", where, "version", m.version, "name", m.name)
	}
	return nil
}

// pgSchemaVersion returns the highest migration applied to the current schema, -1 if the
// schema is empty (no schema_migrations), or an error if the schema holds something else: the
// tables of another application, or a schema_migrations that is not ours, or a newer schema.
func pgSchemaVersion(ctx context.Context, tx pgx.Tx) (int, error) {
	var schema *string
	var tables, ours int
	err := tx.QueryRow(ctx, `SELECT current_schema(), count(c.oid), count(c.oid) FILTER (WHERE c.relname = 'schema_migrations')
		FROM pg_namespace n LEFT JOIN pg_class c ON c.relnamespace = n.oid AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
		WHERE n.nspname = current_schema()`).Scan(&schema, &tables, &ours)
	if errors.Is(err, pgx.ErrNoRows) || (err == nil && schema == nil) {
		return 0, errors.New("no schema to keep the tables in: the search_path names none that exists")
	}
	if err != nil {
		return 0, fmt.Errorf("reading the schema: %w", err)
	}
	if ours == 0 {
		if tables > 0 {
			return 0, fmt.Errorf("not an enrollment store: schema %s has %d tables but no schema_migrations", *schema, tables)
		}
		return -1, nil
	}
	type step struct {
		Version int
		Name    string
	}
	rows, _ := tx.Query(ctx, "SELECT version, name FROM schema_migrations ORDER BY version")
	steps, err := pgx.CollectRows(rows, pgx.RowToStructByPos[step])
	if err != nil {
		return 0, fmt.Errorf("not an enrollment store: schema_migrations is another program's (%v)", err)
	}
	v := 0
	for _, s := range steps {
		if s.Version > latestVersion() {
			return 0, checkVersion(steps[len(steps)-1].Version)
		}
		i := slices.IndexFunc(pgMigrations, func(m migration) bool { return m.version == s.Version })
		if i < 0 || pgMigrations[i].name != s.Name {
			return 0, fmt.Errorf("not an enrollment store: schema_migrations records version %d as %q", s.Version, s.Name)
		}
		v = s.Version
	}
	return v, nil
}
