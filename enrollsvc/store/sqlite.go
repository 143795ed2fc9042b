// The embedded SQLite implementation of Store: opening and checking the database file,
// connection set-up, Ping and Close, and its engine and conn (core.go). Writes go through the
// group-committing writer in writer.go; the methods themselves are on core.

package store

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	_ "modernc.org/sqlite" // registers the pure-Go driver "sqlite"
)

// busyTimeoutMS is how long a connection waits for a lock held by another connection
// (another process with the file open, or the checkpointer) before failing.
const busyTimeoutMS = 5000

// SQLite is the embedded Store: one database file in WAL mode. All writes go through a
// single writer goroutine that owns the one write connection and commits queued writes in
// groups (see writer.go); reads use a separate pool of connections, which WAL lets run
// concurrently with the writer.
type SQLite struct {
	core
	path string
	log  *slog.Logger

	wdb *sql.DB // exactly one connection, used only by the writer goroutine and Open
	rdb *sql.DB // read-only (query_only) connections

	// mu guards closed and the sending side of ops: senders hold it for reading while they
	// queue an op, Close holds it for writing while it closes ops. Reads hold it for reading
	// for their whole query, so Close waits for them before closing the connections.
	mu         sync.RWMutex
	closed     bool
	ops        chan *writeOp
	writerDone chan struct{}

	batches    atomic.Int64 // transactions committed or attempted by the writer
	batchedOps atomic.Int64 // ops run in those transactions

	// stmts are the writer's prepared statements by query text, used only by the writer
	// goroutine: SQLite then parses each statement once, not once per write.
	stmts      map[string]*sql.Stmt
	unprepared map[string]bool
}

var _ Store = (*SQLite)(nil)

// Open opens the store at path, creating the file if it does not exist, and brings its schema
// up to date. An existing file is checked first, through a read-only connection: a file that
// is not a SQLite database, fails PRAGMA quick_check, belongs to some other application or
// has a schema newer than this code is refused with an error naming path, and is not changed.
// logger may be nil.
func Open(ctx context.Context, path string, logger *slog.Logger) (*SQLite, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if path == "" {
		return nil, errors.New("store: open: empty path")
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("store: open %s: %w", path, err)
	}
	if err := precheck(ctx, abs); err != nil {
		return nil, fmt.Errorf("store: open %s: %w", abs, err)
	}

	wdb, err := sql.Open("sqlite", dsn(abs, url.Values{
		"_pragma": {
			fmt.Sprintf("busy_timeout(%d)", busyTimeoutMS),
			"foreign_keys(1)",
			"journal_mode(WAL)",
			"synchronous(FULL)",
		},
		// The writer's transactions take the write lock at BEGIN, so a conflict with another
		// process shows up there (and waits busy_timeout) instead of in the middle of a batch.
		"_txlock": {"immediate"},
	}))
	if err != nil {
		return nil, fmt.Errorf("store: open %s: %w", abs, err)
	}
	wdb.SetMaxOpenConns(1)
	wdb.SetMaxIdleConns(1)
	wdb.SetConnMaxLifetime(0)
	wdb.SetConnMaxIdleTime(0)

	fail := func(err error, dbs ...*sql.DB) (*SQLite, error) {
		for _, db := range dbs {
			db.Close()
		}
		return nil, fmt.Errorf("store: open %s: %w", abs, err)
	}
	var mode string
	if err := wdb.QueryRowContext(ctx, "PRAGMA journal_mode").Scan(&mode); err != nil {
		return fail(err, wdb)
	}
	if !strings.EqualFold(mode, "wal") {
		return fail(fmt.Errorf("journal mode is %q, want wal (does the file system support shared memory?)", mode), wdb)
	}
	if err := migrate(ctx, wdb, logger, abs); err != nil {
		return fail(err, wdb)
	}

	rdb, err := sql.Open("sqlite", dsn(abs, url.Values{
		"_pragma": {
			fmt.Sprintf("busy_timeout(%d)", busyTimeoutMS),
			"foreign_keys(1)",
			"query_only(1)",
		},
	}))
	if err != nil {
		return fail(err, wdb)
	}
	n := max(4, runtime.GOMAXPROCS(0))
	rdb.SetMaxOpenConns(n)
	rdb.SetMaxIdleConns(n)
	if err := rdb.PingContext(ctx); err != nil {
		return fail(err, rdb, wdb)
	}

	s := &SQLite{
		path:       abs,
		log:        logger,
		wdb:        wdb,
		rdb:        rdb,
		ops:        make(chan *writeOp, 4*maxBatch),
		writerDone: make(chan struct{}),
	}
	s.core = core{eng: s, now: time.Now}
	go s.runWriter()
	return s, nil
}

// dsn makes a driver name for path: a file: URI, so that any character in the path is
// escaped, with params as its query (SQLite's own, like mode, and the driver's, like _pragma).
func dsn(path string, params url.Values) string {
	u := url.URL{Scheme: "file", Path: filepath.ToSlash(path), RawQuery: params.Encode()}
	return u.String()
}

// sqliteMagic starts every SQLite 3 database file.
var sqliteMagic = []byte("SQLite format 3\x00")

// precheck inspects an existing file at path without changing it: its header, PRAGMA
// quick_check through a read-only connection, that it is this application's database (or an
// empty one), and that its schema is not newer than this code. A missing file passes.
func precheck(ctx context.Context, path string) error {
	fi, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("not a regular file (mode %v)", fi.Mode())
	}
	if fi.Size() == 0 {
		// SQLite treats an empty file as an empty database; that is what an interrupted first
		// open leaves. But an empty file next to a write-ahead log is a database that lost its
		// main file, and opening it would throw away what the log holds.
		if wal, err := os.Stat(path + "-wal"); err == nil && wal.Size() > 0 {
			return errors.New("database file is empty but its write-ahead log is not; refusing to open")
		}
		return nil
	}

	f, err := os.Open(path)
	if err != nil {
		return err
	}
	hdr := make([]byte, 100) // the database header
	_, err = io.ReadFull(f, hdr)
	f.Close()
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) {
		return err
	}
	if err != nil || !bytes.HasPrefix(hdr, sqliteMagic) {
		return errors.New("not a SQLite database (bad file header)")
	}

	// mode=ro: nothing on this connection can write to the database file. (It may create or
	// update the -shm index of a database already in WAL mode, which is not the database.)
	db, err := sql.Open("sqlite", dsn(path, url.Values{
		"mode":    {"ro"},
		"_pragma": {fmt.Sprintf("busy_timeout(%d)", busyTimeoutMS)},
	}))
	if err != nil {
		return err
	}
	defer db.Close()
	db.SetMaxOpenConns(1)

	if err := quickCheck(ctx, db); err != nil {
		return err
	}
	var tables, ours int
	err = db.QueryRowContext(ctx, `SELECT count(*), count(*) FILTER (WHERE name = 'schema_migrations')
		FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite\_%' ESCAPE '\'`).Scan(&tables, &ours)
	if err != nil {
		return fmt.Errorf("reading schema: %w", err)
	}
	if tables > 0 && ours == 0 {
		return fmt.Errorf("not an enrollment store: the database has %d tables but no schema_migrations", tables)
	}
	if ours == 0 {
		return nil
	}
	v, err := schemaVersion(ctx, db)
	if err != nil {
		return err
	}
	return checkVersion(v)
}

// quickCheck runs PRAGMA quick_check and turns anything but "ok" into an error.
func quickCheck(ctx context.Context, db *sql.DB) error {
	rows, err := db.QueryContext(ctx, "PRAGMA quick_check")
	if err != nil {
		return fmt.Errorf("integrity check: %w", err)
	}
	defer rows.Close()
	var problems []string
	for rows.Next() {
		var msg string
		if err := rows.Scan(&msg); err != nil {
			return fmt.Errorf("integrity check: %w", err)
		}
		if msg != "ok" && len(problems) < 5 {
			problems = append(problems, msg)
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("integrity check: %w", err)
	}
	if len(problems) > 0 {
		return fmt.Errorf("integrity check failed: %s", strings.Join(problems, "; "))
	}
	return nil
}

// Ping checks that the database answers a query.
func (s *SQLite) Ping(ctx context.Context) error {
	return s.read(ctx, func(ctx context.Context, db conn) error {
		var one int
		if err := db.queryRow(ctx, "SELECT 1").Scan(&one); err != nil {
			return fmt.Errorf("store: ping: %w", err)
		}
		return nil
	})
}

// read runs fn on the read connections unless the store is closed, holding off Close until fn
// returns.
func (s *SQLite) read(ctx context.Context, fn func(ctx context.Context, db conn) error) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return ErrClosed
	}
	return fn(ctx, sqliteConn{s.rdb})
}

// readEvents is read: the one writer commits events in the order of their Seq.
func (s *SQLite) readEvents(ctx context.Context, fn func(ctx context.Context, db conn) error) error {
	return s.read(ctx, fn)
}

// Close finishes the writes already queued, stops the writer and closes the database.
// Later calls of any method return ErrClosed; closing again returns nil.
func (s *SQLite) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	close(s.ops)
	s.mu.Unlock()

	<-s.writerDone
	for _, st := range s.stmts {
		st.Close()
	}
	return errors.Join(s.rdb.Close(), s.wdb.Close())
}

// sqliteConn is conn on the writer's *sql.Tx or the readers' *sql.DB. Times are stored as text
// (see timeLayout).
type sqliteConn struct {
	q interface {
		ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
		QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
		QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
	}
}

func (c sqliteConn) exec(ctx context.Context, query string, args ...any) (int64, error) {
	args, err := convertArgs(args, encTime)
	if err != nil {
		return 0, err
	}
	res, err := c.q.ExecContext(ctx, query, args...)
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}

func (c sqliteConn) queryRow(ctx context.Context, query string, args ...any) scanner {
	args, err := convertArgs(args, encTime)
	if err != nil {
		return errRow{err}
	}
	return convRow{c.q.QueryRowContext(ctx, query, args...).Scan, newSQLiteTime}
}

func (c sqliteConn) query(ctx context.Context, query string, args ...any) (rows, error) {
	args, err := convertArgs(args, encTime)
	if err != nil {
		return nil, err
	}
	rs, err := c.q.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	return convRows{rs, func() { rs.Close() }, newSQLiteTime}, nil
}

// txStmts runs a writer transaction's statements through the writer's prepared statements.
type txStmts struct {
	tx *sql.Tx
	s  *SQLite
}

// stmt is query prepared on the write connection, bound to the transaction; nil when it is not
// prepared yet (the caller then runs the text). The write connection is the transaction's while
// it runs, so a new query is prepared after the batch (prepareNew).
func (t txStmts) stmt(ctx context.Context, query string) *sql.Stmt {
	st, ok := t.s.stmts[query]
	if !ok {
		t.s.unprepared[query] = true
		return nil
	}
	return t.tx.StmtContext(ctx, st)
}

// prepareNew prepares the queries the last batch ran as text, now that the write connection is
// free again. A query that does not prepare stays text.
func (s *SQLite) prepareNew(ctx context.Context) {
	for q := range s.unprepared {
		if st, err := s.wdb.PrepareContext(ctx, q); err == nil {
			s.stmts[q] = st
		}
		delete(s.unprepared, q)
	}
}

func (t txStmts) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	if st := t.stmt(ctx, query); st != nil {
		return st.ExecContext(ctx, args...)
	}
	return t.tx.ExecContext(ctx, query, args...)
}

func (t txStmts) QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	if st := t.stmt(ctx, query); st != nil {
		return st.QueryContext(ctx, args...)
	}
	return t.tx.QueryContext(ctx, query, args...)
}

func (t txStmts) QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row {
	if st := t.stmt(ctx, query); st != nil {
		return st.QueryRowContext(ctx, args...)
	}
	return t.tx.QueryRowContext(ctx, query, args...)
}

// sqliteTime is a time column as SQLite returns it.
type sqliteTime struct{ v sql.NullString }

func newSQLiteTime() timeTarget                      { return &sqliteTime{} }
func (t *sqliteTime) Target() any                    { return &t.v }
func (t *sqliteTime) Set(dst *time.Time) (err error) { *dst, err = decTime(t.v); return err }
