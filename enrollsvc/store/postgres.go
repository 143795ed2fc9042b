// The PostgreSQL implementation of Store, for several appliances sharing one database: opening
// (TLS with a verified server certificate, a password file or a client certificate), its engine
// and conn (core.go), Ping and Close. The schema is in pg_migrate.go; the methods are on core.
//
// What holds across instances, because the database enforces it rather than this process:
// serials are unique by the primary key of serials (a concurrent reservation of the same serial
// waits for the first and then inserts nothing); a request leaves pending, a certificate is
// revoked and a one-time challenge is used by one conditional UPDATE each, so exactly one of
// concurrent callers wins; CRL numbers come from one row updated under its row lock. Every
// method is one transaction, committed with synchronous_commit on, so it is durable (on the
// primary, and on synchronous standbys if the server names any) when it returns.

package store

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"
)

// PGConfig says how to reach a PostgreSQL store. TLS is always used and the server's certificate
// always verified against CAFile. The role logs in with the password in PasswordFile (or in the
// URL, which is discouraged), or with the client certificate, or both.
type PGConfig struct {
	// URL is a postgres:// (or postgresql://) URL naming the host(s), port, database and role,
	// e.g. postgres://enroll@db1.example.net:5432/enroll. sslmode, if given, must be verify-full
	// (the default) or verify-ca; other TLS and password settings belong in the fields below.
	URL string
	// CAFile holds the PEM certificates of the CAs that may issue the server's certificate.
	CAFile string
	// PasswordFile holds the role's password (one trailing newline is ignored).
	PasswordFile string
	// ClientCertFile and ClientKeyFile hold a PEM client certificate and its key, for servers that
	// authenticate clients by certificate (pg_hba.conf "cert" or clientcert=verify-full).
	ClientCertFile, ClientKeyFile string
	// MaxConns bounds the connection pool; 0 means 10.
	MaxConns int32
	// Instance names this instance to the server (application_name "enrollsvc/NAME"), so that
	// the server's views say which instance holds a lock ("" leaves "enrollsvc"), and names the
	// audit chain its events are appended to (proto/auditlog).
	Instance string
}

// Postgres is the Store kept in a PostgreSQL database, which several instances may share.
type Postgres struct {
	core
	pool   *pgxpool.Pool
	secret []string // the password in the forms it could take in an error message

	// mu guards closed; calls hold it for reading while they run, so Close waits for them.
	mu     sync.RWMutex
	closed bool

	// crlMu guards crlConn, the connection holding the CRL publisher's lock (nil: not held).
	crlMu   sync.Mutex
	crlConn *pgxpool.Conn
}

var _ Store = (*Postgres)(nil)

// Advisory lock keys (pg_advisory_xact_lock): one for migrations, one that orders events.
const (
	pgLockMigrate int64 = 0x4145_5354_4f52_0001 // "AESTOR" 1
	pgLockEvents  int64 = 0x4145_5354_4f52_0002
	// pgLockCRL is held (session level, pg_try_advisory_lock) by the instance that publishes CRLs.
	pgLockCRL int64 = 0x4145_5354_4f52_0003
)

const (
	pgDefaultMaxConns       = 10
	pgDefaultConnectTimeout = 5 * time.Second
	pgMinServerVersion      = 130000 // the SQL here needs 13; the appliance is tested on 15
)

// OpenPostgres connects to the database cfg names, checks it and brings its schema up to date.
// A database that holds another application's tables, or whose schema is newer than this code,
// is refused and not changed. Several instances may open the same database at once; migrations
// are applied by one of them under an advisory lock. The password never appears in an error or
// in the log. logger may be nil.
func OpenPostgres(ctx context.Context, cfg PGConfig, logger *slog.Logger) (*Postgres, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	pcfg, where, secret, err := pgPoolConfig(cfg)
	if err != nil {
		return nil, redact(fmt.Errorf("store: open %s: %w", where, err), secret)
	}
	p := &Postgres{secret: secret}
	fail := func(err error) (*Postgres, error) {
		if p.pool != nil {
			p.pool.Close()
		}
		return nil, p.redact(fmt.Errorf("store: open %s: %w", where, err))
	}
	if p.pool, err = pgxpool.NewWithConfig(ctx, pcfg); err != nil {
		return fail(err)
	}
	var syncCommit, fsync string
	var version int
	err = p.pool.QueryRow(ctx, `SELECT current_setting('synchronous_commit'), current_setting('fsync'),
		current_setting('server_version_num')::int`).Scan(&syncCommit, &fsync, &version)
	if err != nil {
		return fail(err)
	}
	if version < pgMinServerVersion {
		return fail(fmt.Errorf("the server's version number is %d; PostgreSQL 13 or later is needed", version))
	}
	if syncCommit != "on" {
		return fail(fmt.Errorf("synchronous_commit is %q for this session, want on", syncCommit))
	}
	if fsync != "on" {
		logger.Warn("store: the PostgreSQL server runs with fsync off: a crash of its machine can lose what was stored", "url", where)
	}
	if err := migratePG(ctx, p.pool, logger, where); err != nil {
		return fail(err)
	}
	p.core = core{eng: p, now: time.Now, chain: cfg.Instance}
	logger.Info("store: opened PostgreSQL store", "url", where, "server_version", version)
	return p, nil
}

// pgPoolConfig checks cfg and turns it into a pool configuration. It also returns the URL
// without password, for messages, and the password in the forms an error could quote it.
func pgPoolConfig(cfg PGConfig) (pcfg *pgxpool.Config, where string, secret []string, err error) {
	where = "PostgreSQL store"
	if cfg.URL == "" {
		return nil, where, nil, errors.New("no URL")
	}
	u, err := url.Parse(cfg.URL)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") || u.Host == "" {
		// url.Parse's error quotes the URL, password and all.
		return nil, where, nil, errors.New("the URL is not a postgres:// URL with a host")
	}
	var urlPassword string
	if u.User != nil {
		urlPassword, _ = u.User.Password()
	}
	secret = secretForms(urlPassword)
	where = u.Redacted()

	q := u.Query()
	for _, k := range []string{"sslrootcert", "sslcert", "sslkey", "sslpassword", "passfile", "password", "service", "servicefile"} {
		if q.Has(k) {
			return nil, where, secret, fmt.Errorf("the URL sets %s: give the CA file, client certificate and password file as options instead", k)
		}
	}
	switch m := q.Get("sslmode"); m {
	case "", "verify-full":
		q.Set("sslmode", "verify-full")
	case "verify-ca":
	default:
		return nil, where, secret, fmt.Errorf("sslmode=%s: TLS with a verified server certificate is required (sslmode verify-full or verify-ca)", m)
	}
	u.RawQuery = q.Encode()
	pcfg, err = pgxpool.ParseConfig(u.String())
	if err != nil {
		return nil, where, secret, err
	}

	// The password: from the file or the URL, never from the environment or ~/.pgpass.
	password := urlPassword
	if cfg.PasswordFile != "" {
		if urlPassword != "" {
			return nil, where, secret, errors.New("both the URL and a password file give a password")
		}
		b, err := os.ReadFile(cfg.PasswordFile)
		if err != nil {
			return nil, where, secret, fmt.Errorf("password file: %w", err)
		}
		password = strings.TrimSuffix(strings.TrimSuffix(string(b), "\n"), "\r")
		if password == "" {
			return nil, where, secret, fmt.Errorf("password file %s is empty", cfg.PasswordFile)
		}
		secret = append(secret, secretForms(password)...)
	}
	pcfg.ConnConfig.Password = password
	if password == "" && cfg.ClientCertFile == "" {
		return nil, where, secret, errors.New("neither a password file nor a client certificate is given")
	}

	if err := pgTLS(&pcfg.ConnConfig.Config, cfg, q.Get("sslmode") == "verify-ca"); err != nil {
		return nil, where, secret, err
	}
	pcfg.MaxConns = pgDefaultMaxConns
	if cfg.MaxConns < 0 {
		return nil, where, secret, fmt.Errorf("MaxConns %d is negative", cfg.MaxConns)
	} else if cfg.MaxConns > 0 {
		pcfg.MaxConns = cfg.MaxConns
	}
	if !q.Has("connect_timeout") {
		pcfg.ConnConfig.ConnectTimeout = pgDefaultConnectTimeout
	}
	rp := pcfg.ConnConfig.RuntimeParams
	rp["synchronous_commit"] = "on" // a write is durable when it returns, whatever the server's default
	if rp["application_name"] == "" {
		rp["application_name"] = "enrollsvc"
		if cfg.Instance != "" {
			rp["application_name"] = "enrollsvc/" + cfg.Instance
		}
	}
	return pcfg, where, secret, nil
}

// pgTLS sets the TLS configuration of every host cc names: the server's certificate must chain
// to cfg.CAFile and, unless verifyCAOnly, name the host.
func pgTLS(cc *pgconn.Config, cfg PGConfig, verifyCAOnly bool) error {
	if cfg.CAFile == "" {
		return errors.New("no CA file: the server's certificate must be verified")
	}
	pem, err := os.ReadFile(cfg.CAFile)
	if err != nil {
		return fmt.Errorf("CA file: %w", err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pem) {
		return fmt.Errorf("CA file %s holds no PEM certificate", cfg.CAFile)
	}
	var client []tls.Certificate
	if (cfg.ClientCertFile == "") != (cfg.ClientKeyFile == "") {
		return errors.New("a client certificate needs both its certificate and key files")
	}
	if cfg.ClientCertFile != "" {
		pair, err := tls.LoadX509KeyPair(cfg.ClientCertFile, cfg.ClientKeyFile)
		if err != nil {
			return fmt.Errorf("client certificate: %w", err)
		}
		client = []tls.Certificate{pair}
	}
	configure := func(host string) (*tls.Config, error) {
		if network, _ := pgconn.NetworkAddress(host, 0); network == "unix" {
			return nil, fmt.Errorf("host %s is a Unix socket, which cannot use TLS: give a TCP host", host)
		}
		tc := &tls.Config{RootCAs: roots, ServerName: host, Certificates: client, MinVersion: tls.VersionTLS12}
		if verifyCAOnly {
			// As libpq's verify-ca: the chain is checked, the name is not.
			tc.InsecureSkipVerify = true
			tc.VerifyConnection = func(cs tls.ConnectionState) error {
				if len(cs.PeerCertificates) == 0 {
					return errors.New("the server sent no certificate")
				}
				inter := x509.NewCertPool()
				for _, c := range cs.PeerCertificates[1:] {
					inter.AddCert(c)
				}
				_, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter})
				return err
			}
		}
		return tc, nil
	}
	if cc.TLSConfig, err = configure(cc.Host); err != nil {
		return err
	}
	for _, fb := range cc.Fallbacks {
		if fb.TLSConfig, err = configure(fb.Host); err != nil {
			return err
		}
	}
	return nil
}

// secretForms returns pw as it may appear in a message: as is and URL-escaped.
func secretForms(pw string) []string {
	if pw == "" {
		return nil
	}
	return []string{pw, url.QueryEscape(pw), url.PathEscape(pw), url.UserPassword("", pw).String()[1:]}
}

// redactedError is an error whose message had a secret taken out; errors.Is and As still see
// the original.
type redactedError struct {
	msg string
	err error
}

func (e *redactedError) Error() string { return e.msg }
func (e *redactedError) Unwrap() error { return e.err }

// redact replaces every form of a secret in err's message.
func redact(err error, secret []string) error {
	if err == nil {
		return nil
	}
	msg := err.Error()
	changed := false
	for _, s := range secret {
		if s != "" && strings.Contains(msg, s) {
			msg, changed = strings.ReplaceAll(msg, s, "xxxxx"), true
		}
	}
	if !changed {
		return err
	}
	return &redactedError{msg: msg, err: err}
}

func (p *Postgres) redact(err error) error { return redact(err, p.secret) }

// run runs f unless the store is closed, holding off Close until f returns.
func (p *Postgres) run(f func() error) error {
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.closed {
		return ErrClosed
	}
	err := p.redact(f())
	if err != nil && unreachable(err) {
		return &unavailableError{err}
	}
	return err
}

// unreachable reports whether err says the server cannot be reached or is going away, rather
// than refusing a statement: connection failures, and the server's own connection-exception,
// shutdown and too-many-connections answers (SQLSTATE classes 08 and 57P, and 53300).
func unreachable(err error) bool {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return strings.HasPrefix(pe.Code, "08") || strings.HasPrefix(pe.Code, "57P") || pe.Code == "53300"
	}
	var ce *pgconn.ConnectError
	var ne net.Error
	return errors.As(err, &ce) || errors.As(err, &ne) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		pgconn.SafeToRetry(err)
}

// unavailableError is an error of an unreachable server: errors.Is(err, ErrUnavailable).
type unavailableError struct{ err error }

func (e *unavailableError) Error() string   { return ErrUnavailable.Error() + ": " + e.err.Error() }
func (e *unavailableError) Unwrap() []error { return []error{ErrUnavailable, e.err} }

// pgMaxAttempts bounds how often a write is tried when the server aborted it for a
// serialization failure or deadlock, which a retry resolves.
const pgMaxAttempts = 3

// write runs fn in one READ COMMITTED transaction. The transaction first takes the events lock
// shared (see readEvents). If the commit fails the outcome is unknown to this process only when
// the connection broke during COMMIT; then the error is returned, and a retry of the call sees
// what happened (a reserved serial stays reserved, so it cannot be issued twice).
func (p *Postgres) write(ctx context.Context, fn func(ctx context.Context, tx conn) error) error {
	return p.run(func() error {
		var err error
		for range pgMaxAttempts {
			if err = p.tryWrite(ctx, fn); !retryable(err) {
				return err
			}
		}
		return err
	})
}

func (p *Postgres) tryWrite(ctx context.Context, fn func(ctx context.Context, tx conn) error) error {
	return p.inTx(ctx, pgx.TxOptions{IsoLevel: pgx.ReadCommitted}, "pg_advisory_xact_lock_shared", fn)
}

// inTx runs fn in a transaction that first takes the events lock with lockFunc, and commits.
func (p *Postgres) inTx(ctx context.Context, opts pgx.TxOptions, lockFunc string, fn func(ctx context.Context, tx conn) error) error {
	tx, err := p.pool.BeginTx(ctx, opts)
	if err != nil {
		return fmt.Errorf("store: begin transaction: %w", err)
	}
	defer tx.Rollback(ctx) // after Commit, a no-op; with ctx done, pgx closes the connection, which rolls back
	if _, err := tx.Exec(ctx, "SELECT "+lockFunc+"($1)", pgLockEvents); err != nil {
		return fmt.Errorf("store: events lock: %w", err)
	}
	if err := fn(ctx, pgConn{tx}); err != nil {
		return err
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("store: commit: %w", err)
	}
	return nil
}

// retryable reports whether the server aborted a transaction that may succeed if run again.
func retryable(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && (pe.Code == "40001" || pe.Code == "40P01") // serialization_failure, deadlock_detected
}

// read runs fn on the pool; each statement sees what was committed when it started.
func (p *Postgres) read(ctx context.Context, fn func(ctx context.Context, db conn) error) error {
	return p.run(func() error { return fn(ctx, pgConn{p.pool}) })
}

// readEvents runs fn in a transaction holding the events lock exclusively. Every write holds it
// shared from its start to its end, so while readEvents holds it no transaction is between
// taking an event's Seq and committing: fn sees every event whose Seq has been handed out
// (less those rolled back). Without it a reader paging by Seq could pass over an event of a
// transaction, of this instance or another, that took a lower Seq but committed later.
func (p *Postgres) readEvents(ctx context.Context, fn func(ctx context.Context, db conn) error) error {
	return p.run(func() error {
		return p.inTx(ctx, pgx.TxOptions{IsoLevel: pgx.ReadCommitted, AccessMode: pgx.ReadOnly}, "pg_advisory_xact_lock", fn)
	})
}

// Ping checks that the database answers a query.
func (p *Postgres) Ping(ctx context.Context) error {
	return p.run(func() error {
		if err := p.pool.Ping(ctx); err != nil {
			return fmt.Errorf("store: ping: %w", err)
		}
		return nil
	})
}

// Close waits for the calls in progress and closes the pool. Later calls of any method return
// ErrClosed; closing again returns nil.
func (p *Postgres) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil
	}
	p.closed = true
	p.crlMu.Lock()
	if p.crlConn != nil {
		p.crlConn.Release() // with the pool closed the connection closes, and the lock is released
		p.crlConn = nil
	}
	p.crlMu.Unlock()
	p.pool.Close()
	return nil
}

// pgQuerier is what pgConn needs of a pool or a transaction.
type pgQuerier interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// pgConn is conn on a pool or transaction. Times are stored as timestamptz, which keeps
// microseconds: a time is truncated to the microsecond when stored.
type pgConn struct{ q pgQuerier }

func pgTimeArg(t time.Time) (any, error) { return t.UTC().Truncate(time.Microsecond), nil }

func (c pgConn) exec(ctx context.Context, query string, args ...any) (int64, error) {
	args, err := convertArgs(args, pgTimeArg)
	if err != nil {
		return 0, err
	}
	tag, err := c.q.Exec(ctx, rebind(query), args...)
	if err != nil {
		return 0, err
	}
	return tag.RowsAffected(), nil
}

func (c pgConn) queryRow(ctx context.Context, query string, args ...any) scanner {
	args, err := convertArgs(args, pgTimeArg)
	if err != nil {
		return errRow{err}
	}
	return convRow{c.q.QueryRow(ctx, rebind(query), args...).Scan, newPGTime}
}

func (c pgConn) query(ctx context.Context, query string, args ...any) (rows, error) {
	args, err := convertArgs(args, pgTimeArg)
	if err != nil {
		return nil, err
	}
	rs, err := c.q.Query(ctx, rebind(query), args...)
	if err != nil {
		return nil, err
	}
	return convRows{rs, rs.Close, newPGTime}, nil
}

// rebind numbers the ? placeholders of query as PostgreSQL's $1, $2, ... (the store's queries
// have no ? anywhere else), and drops SQLite's index hints (indexedBy), which PostgreSQL's
// planner, with its statistics, does not need.
func rebind(query string) string {
	if strings.Contains(query, indexedByPrefix) {
		query = dropIndexedBy(query)
	}
	var b strings.Builder
	b.Grow(len(query) + 16)
	n := 0
	for i := 0; i < len(query); i++ {
		if query[i] == '?' {
			n++
			b.WriteString("$" + strconv.Itoa(n))
			continue
		}
		b.WriteByte(query[i])
	}
	return b.String()
}

// pgTime is a timestamptz column as pgx returns it.
type pgTime struct{ v pgtype.Timestamptz }

func newPGTime() timeTarget   { return &pgTime{} }
func (t *pgTime) Target() any { return &t.v }
func (t *pgTime) Set(dst *time.Time) error {
	switch {
	case !t.v.Valid:
		*dst = time.Time{}
	case t.v.InfinityModifier != pgtype.Finite:
		return errors.New("store: stored time is infinite")
	default:
		*dst = t.v.Time.UTC()
	}
	return nil
}
