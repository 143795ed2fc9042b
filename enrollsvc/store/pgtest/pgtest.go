// Package pgtest runs a throwaway PostgreSQL 15 server for the tests of one test binary, the way a
// store of several appliances reaches one: over TCP on 127.0.0.1, TLS only (a test CA made here),
// a role that logs in with a SCRAM-SHA-256 password (RFC 7677). Each test gets a fresh database.
//
// The server is started on first use (Shared) by running Debian's binaries in
// /usr/lib/postgresql/15/bin as the postgres user, with its data, socket and certificates in a
// temporary directory it owns, on a free port. Tests can Stop and Start it again (same port, same
// data), or Freeze and Thaw it (a hung server), to see what clients do meanwhile; the next Shared
// undoes what a failed test left. Main, called from TestMain, stops it and removes its files when
// the tests end; a server whose test binary died anyway shuts down by itself (parent-death
// signal), and a later Shared removes its directory.
//
// Without root, the postgres user or the binaries, Shared skips the test, or fails it when CI=true.
package pgtest

import (
	"context"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/enrollment-appliance/aeappliance/internal/freeport"
)

// BinDir holds the PostgreSQL 15 server binaries of Debian's postgresql-15 package.
const BinDir = "/usr/lib/postgresql/15/bin"

// Role is the login role of every test database, with a password.
const Role = "enroll"

// CertRole is a member of Role that logs in with a client certificate (ClientCert) instead.
const CertRole = "enroll_cert"

const (
	startTimeout = 30 * time.Second
	stopTimeout  = 10 * time.Second
	dirPrefix    = "aepg-" // under os.TempDir; short, as the Unix socket lives in it
)

// Server is one PostgreSQL server. Its fields do not change while it runs or after Stop.
type Server struct {
	Host         string // 127.0.0.1
	Port         int
	CAFile       string // PEM of the CA that issued the server certificate (names 127.0.0.1, localhost and VMHost)
	Password     string // Role's password
	PasswordFile string // Password in a file, as the store reads it
	Dir          string // the server's files: data/, the socket, certificates, server.log

	uid, gid int
	ca       *x509.Certificate
	caKey    *ecdsa.PrivateKey
	lock     *os.File // flock held while this process owns Dir

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{}
	dbs    atomic.Int64
}

// VMHost is the host's loopback as a QEMU guest on a user-mode network sees it; the server's
// certificate names it too.
const VMHost = "10.0.2.2"

// Database is a fresh database owned by Role.
type Database struct {
	Name         string
	URL          string // postgres://enroll@127.0.0.1:PORT/NAME?sslmode=verify-full (no password)
	CAFile       string
	PasswordFile string
	Password     string
}

var (
	sharedMu  sync.Mutex
	shared    *Server
	sharedErr error
)

// Shared returns the test binary's server, starting it on first use. It skips the test (fails it
// when CI=true) if PostgreSQL cannot run here, and fails it if the server did not start.
func Shared(t testing.TB) *Server {
	t.Helper()
	if why := unavailable(); why != "" {
		if os.Getenv("CI") == "true" {
			t.Fatalf("pgtest: %s; CI=true needs PostgreSQL 15 run by root (`make deps` installs it)", why)
		}
		t.Skipf("pgtest: %s; skipping (CI=true makes this a failure)", why)
	}
	sharedMu.Lock()
	defer sharedMu.Unlock()
	if shared == nil && sharedErr == nil {
		shared, sharedErr = start()
	}
	if sharedErr != nil {
		t.Fatalf("pgtest: %v", sharedErr)
	}
	// A test that failed while it had the server stopped or frozen leaves it so: undo that.
	if err := shared.revive(); err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	return shared
}

// Main runs the tests of m and then stops the shared server, if one was started, and removes its
// files. Use it as `func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }`.
func Main(m *testing.M) int {
	code := m.Run()
	sharedMu.Lock()
	defer sharedMu.Unlock()
	if shared != nil {
		shared.destroy()
		shared = nil
	}
	return code
}

// unavailable says why PostgreSQL cannot be run here, or "".
func unavailable() string {
	if os.Geteuid() != 0 {
		return "not running as root (the server runs as the postgres user)"
	}
	for _, b := range []string{"postgres", "initdb"} {
		if _, err := os.Stat(filepath.Join(BinDir, b)); err != nil {
			return fmt.Sprintf("PostgreSQL 15 is not installed (%v)", err)
		}
	}
	if _, err := user.Lookup("postgres"); err != nil {
		return fmt.Sprintf("no postgres user (%v)", err)
	}
	return ""
}

// start makes a new cluster and starts it.
func start() (*Server, error) {
	sweep()
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, err
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	dir, err := os.MkdirTemp("", dirPrefix)
	if err != nil {
		return nil, err
	}
	s := &Server{Host: "127.0.0.1", Dir: dir, uid: uid, gid: gid}
	fail := func(err error) (*Server, error) {
		s.destroy()
		return nil, err
	}
	if s.lock, err = lockDir(dir); err != nil {
		return fail(err)
	}
	if err := os.Chown(dir, uid, gid); err != nil { // the server puts its socket here
		return fail(err)
	}
	if s.Port, err = freePort(); err != nil {
		return fail(err)
	}
	if err := s.writeTLS(); err != nil {
		return fail(fmt.Errorf("making TLS files: %w", err))
	}
	s.Password = hex.EncodeToString(randomBytes(16))
	s.PasswordFile = filepath.Join(dir, "password")
	if err := os.WriteFile(s.PasswordFile, []byte(s.Password+"\n"), 0o600); err != nil {
		return fail(err)
	}

	data := filepath.Join(dir, "data")
	if err := os.Mkdir(data, 0o700); err != nil {
		return fail(err)
	}
	if err := os.Chown(data, uid, gid); err != nil {
		return fail(err)
	}
	out, err := s.asPostgres(filepath.Join(BinDir, "initdb"), "-D", data, "-U", "postgres", "--encoding=UTF8",
		"--locale=C", "--auth-local=trust", "--auth-host=reject", "--no-sync", "--no-instructions").CombinedOutput()
	if err != nil {
		return fail(fmt.Errorf("initdb: %v: %s", err, out))
	}
	if err := s.configure(); err != nil {
		return fail(err)
	}
	// The port was free a moment ago; should another program have taken it since, take another.
	for try := 1; ; try++ {
		err := s.start()
		if err == nil {
			break
		}
		if try == 3 || !strings.Contains(err.Error(), "could not create any TCP/IP sockets") {
			return fail(err)
		}
		if s.Port, err = freePort(); err != nil {
			return fail(err)
		}
		if err := appendFile(filepath.Join(data, "postgresql.conf"), fmt.Sprintf("port = %d\n", s.Port)); err != nil {
			return fail(err)
		}
	}
	for _, q := range []string{
		fmt.Sprintf("CREATE ROLE %s LOGIN PASSWORD '%s'", Role, s.Password),
		// CertRole logs in with a client certificate and may do what Role may.
		fmt.Sprintf("CREATE ROLE %s LOGIN IN ROLE %s", CertRole, Role),
	} {
		if err := s.admin(context.Background(), "postgres", q); err != nil {
			return fail(fmt.Errorf("creating roles: %w", err))
		}
	}
	return s, nil
}

// configure writes the server's settings and its client authentication rules.
func (s *Server) configure() error {
	conf := fmt.Sprintf(`
listen_addresses = '127.0.0.1'
port = %d
unix_socket_directories = '%s'
unix_socket_permissions = 0700
max_connections = 100
shared_buffers = 32MB
ssl = on
ssl_cert_file = '%s'
ssl_key_file = '%s'
ssl_ca_file = '%s'
password_encryption = 'scram-sha-256'
log_min_messages = warning
log_connections = off
`, s.Port, s.Dir, filepath.Join(s.Dir, "tls", "server.pem"), filepath.Join(s.Dir, "tls", "server.key"), s.CAFile)
	// The superuser logs in only over the socket, which only the postgres user (and root) can reach.
	// Over TCP: TLS and a SCRAM password, nothing else.
	hba := `
local     all  postgres                     trust
hostnossl all  all       0.0.0.0/0          reject
hostssl   all  ` + CertRole + ` 127.0.0.1/32 cert
hostssl   all  all       127.0.0.1/32       scram-sha-256
`
	data := filepath.Join(s.Dir, "data")
	if err := appendFile(filepath.Join(data, "postgresql.conf"), conf); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(data, "pg_hba.conf"), []byte(hba), 0o600)
}

func appendFile(path, text string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return err
	}
	_, err = f.WriteString(text)
	return errors.Join(err, f.Close())
}

// asPostgres prepares a command run as the postgres user.
func (s *Server) asPostgres(name string, args ...string) *exec.Cmd {
	cmd := exec.Command(name, args...)
	cmd.Dir = s.Dir
	cmd.Env = []string{"PATH=/usr/bin:/bin", "LC_ALL=C", "HOME=" + s.Dir}
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Credential: &syscall.Credential{Uid: uint32(s.uid), Gid: uint32(s.gid)},
		// Shut down at once (SIGQUIT: immediate shutdown) if the test binary dies.
		Pdeathsig: syscall.SIGQUIT,
		Setpgid:   true,
	}
	return cmd
}

// Start starts the server again after Stop, on the same port with the same data, and waits until
// it accepts connections. It does nothing if the server runs.
func (s *Server) Start(t testing.TB) {
	t.Helper()
	if err := s.start(); err != nil {
		t.Fatalf("pgtest: %v", err)
	}
}

func (s *Server) start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil {
		return nil
	}
	logf, err := os.OpenFile(filepath.Join(s.Dir, "server.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd := s.asPostgres(filepath.Join(BinDir, "postgres"), "-D", filepath.Join(s.Dir, "data"))
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting postgres: %w", err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	s.cmd, s.exited = cmd, exited

	deadline := time.Now().Add(startTimeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		err := s.adminLocked(ctx, "postgres", "SELECT 1")
		cancel()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			s.stopLocked()
			return fmt.Errorf("postgres did not accept connections within %v (%v); log:\n%s", startTimeout, err, s.logTail())
		}
		select {
		case <-exited:
			s.cmd = nil
			return fmt.Errorf("postgres exited during start-up (%v); log:\n%s", cmd.ProcessState, s.logTail())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// revive resumes the server if it is frozen and starts it if it is stopped.
func (s *Server) revive() error {
	s.mu.Lock()
	if s.cmd != nil {
		s.continueLocked()
	}
	s.mu.Unlock()
	return s.start()
}

// continueLocked sends SIGCONT to the server and its backends, in case Freeze stopped them.
func (s *Server) continueLocked() {
	pid := s.cmd.Process.Pid
	for _, p := range append([]int{pid}, children(pid)...) {
		syscall.Kill(p, syscall.SIGCONT)
	}
}

// Stop shuts the server down (fast shutdown: clients are disconnected), keeping its data and port
// for Start. It does nothing if the server is stopped.
func (s *Server) Stop(t testing.TB) {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stopLocked()
}

func (s *Server) stopLocked() {
	if s.cmd == nil {
		return
	}
	s.continueLocked()
	pid := s.cmd.Process.Pid
	syscall.Kill(pid, syscall.SIGINT) // fast shutdown
	select {
	case <-s.exited:
	case <-time.After(stopTimeout):
		syscall.Kill(-pid, syscall.SIGKILL)
		<-s.exited
	}
	s.cmd = nil
}

// Freeze stops the server and its backends with SIGSTOP: connections stay open and new ones are
// accepted by the kernel, but nothing answers, as with a hung server. Thaw resumes them.
func (s *Server) Freeze(t testing.TB) { t.Helper(); s.signal(t, syscall.SIGSTOP) }

// Thaw resumes a server Freeze stopped.
func (s *Server) Thaw(t testing.TB) { t.Helper(); s.signal(t, syscall.SIGCONT) }

func (s *Server) signal(t testing.TB, sig syscall.Signal) {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		t.Fatalf("pgtest: %v to a stopped server", sig)
	}
	// Each backend is its own process group (PostgreSQL makes it one): signal them one by one.
	pid := s.cmd.Process.Pid
	for _, p := range append([]int{pid}, children(pid)...) {
		if err := syscall.Kill(p, sig); err != nil && p == pid {
			t.Fatalf("pgtest: %v: %v", sig, err)
		}
	}
}

// children lists the processes whose parent is pid.
func children(pid int) []int {
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	var out []int
	for _, st := range stats {
		b, err := os.ReadFile(st)
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...; comm may hold spaces and parentheses.
		rest := string(b[strings.LastIndexByte(string(b), ')')+1:])
		f := strings.Fields(rest)
		if len(f) > 1 && f[1] == strconv.Itoa(pid) {
			child, _ := strconv.Atoi(filepath.Base(filepath.Dir(st)))
			out = append(out, child)
		}
	}
	return out
}

// destroy stops the server and removes its files.
func (s *Server) destroy() {
	s.mu.Lock()
	s.stopLocked()
	s.mu.Unlock()
	os.RemoveAll(s.Dir)
	if s.lock != nil {
		s.lock.Close()
	}
}

func (s *Server) logTail() string {
	b, _ := os.ReadFile(filepath.Join(s.Dir, "server.log"))
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-30):], "\n")
}

// NewDatabase creates a fresh database owned by Role and drops it when the test ends.
func (s *Server) NewDatabase(t testing.TB) *Database {
	t.Helper()
	db, err := s.CreateDatabase()
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	t.Cleanup(func() {
		// The server may be stopped by a failed test; its files go at the end anyway.
		s.admin(context.Background(), "postgres", fmt.Sprintf("DROP DATABASE IF EXISTS %s WITH (FORCE)", db.Name))
	})
	return db
}

// CreateDatabase is NewDatabase for programs that are not tests (enrollbench): the database
// goes with the server (Destroy).
func (s *Server) CreateDatabase() (*Database, error) {
	name := fmt.Sprintf("t%d_%s", s.dbs.Add(1), hex.EncodeToString(randomBytes(4)))
	if err := s.admin(context.Background(), "postgres", fmt.Sprintf("CREATE DATABASE %s OWNER %s", name, Role)); err != nil {
		return nil, err
	}
	u := url.URL{Scheme: "postgres", User: url.User(Role), Host: net.JoinHostPort(s.Host, strconv.Itoa(s.Port)),
		Path: "/" + name, RawQuery: "sslmode=verify-full"}
	return &Database{Name: name, URL: u.String(), CAFile: s.CAFile, PasswordFile: s.PasswordFile, Password: s.Password}, nil
}

// Start starts a server of the calling program's own, for programs that are not tests
// (enrollbench); Destroy stops it and removes its files.
func Start() (*Server, error) {
	if why := unavailable(); why != "" {
		return nil, fmt.Errorf("pgtest: %s", why)
	}
	return start()
}

// Destroy stops a server Start started and removes its files.
func (s *Server) Destroy() { s.destroy() }

// Exec runs statements in database db as the superuser, failing the test on an error.
func (s *Server) Exec(t testing.TB, db string, stmts ...string) {
	t.Helper()
	for _, q := range stmts {
		if err := s.admin(context.Background(), db, q); err != nil {
			t.Fatalf("pgtest: %v", err)
		}
	}
}

// QueryRow runs query in database db as the superuser and scans its one row into dest, failing
// the test on an error.
func (s *Server) QueryRow(t testing.TB, db, query string, dest ...any) {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	err := s.withAdmin(context.Background(), db, func(c *pgx.Conn) error {
		return c.QueryRow(context.Background(), query).Scan(dest...)
	})
	if err != nil {
		t.Fatalf("pgtest: %s: %v", query, err)
	}
}

// admin runs one statement in database db as the superuser.
func (s *Server) admin(ctx context.Context, db, stmt string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.adminLocked(ctx, db, stmt)
}

func (s *Server) adminLocked(ctx context.Context, db, stmt string) error {
	return s.withAdmin(ctx, db, func(c *pgx.Conn) error {
		if _, err := c.Exec(ctx, stmt); err != nil {
			return fmt.Errorf("%s: %w", stmt, err)
		}
		return nil
	})
}

// withAdmin connects to database db as the superuser, over the Unix socket, and calls f.
func (s *Server) withAdmin(ctx context.Context, db string, f func(*pgx.Conn) error) error {
	cfg, err := pgx.ParseConfig(fmt.Sprintf("host=%s port=%d user=postgres dbname=%s sslmode=disable", s.Dir, s.Port, db))
	if err != nil {
		return err
	}
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	return f(conn)
}

// freePort returns a TCP port on 127.0.0.1 that nothing listens on now (freeport: outside the
// kernel's ephemeral range).
func freePort() (int, error) { return freeport.Port() }

// lockDir takes an exclusive flock on dir/owner.lock for as long as this process lives.
func lockDir(dir string) (*os.File, error) {
	f, err := os.OpenFile(filepath.Join(dir, "owner.lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// sweep removes the directories of servers whose test binary died without cleaning up (no one
// holds their lock). Their server shut itself down when its parent died.
func sweep() {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), dirPrefix+"*"))
	for _, d := range dirs {
		if fi, err := os.Stat(d); err != nil || time.Since(fi.ModTime()) < time.Minute {
			continue // perhaps another test binary setting up
		}
		f, err := os.Open(filepath.Join(d, "owner.lock"))
		if err != nil {
			continue // being created, or not ours
		}
		if syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB) == nil {
			os.RemoveAll(d)
		}
		f.Close()
	}
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

// VMURL is d's URL as an appliance in a QEMU guest on a user-mode network reaches it (VMHost).
func (d *Database) VMURL() string {
	u, err := url.Parse(d.URL)
	if err != nil {
		panic(err) // made by CreateDatabase
	}
	u.Host = net.JoinHostPort(VMHost, u.Port())
	return u.String()
}
