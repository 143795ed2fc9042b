package pgtest

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

func TestMain(m *testing.M) { os.Exit(Main(m)) }

// connect logs in to db over TLS, verifying the server against caFile.
func connect(ctx context.Context, t *testing.T, db *Database, caFile, password string) (*pgx.Conn, error) {
	t.Helper()
	cfg, err := pgx.ParseConfig(db.URL)
	if err != nil {
		t.Fatal(err)
	}
	pem, err := os.ReadFile(caFile)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(pem)
	cfg.TLSConfig = &tls.Config{RootCAs: roots, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12}
	cfg.Fallbacks = nil
	cfg.Password = password
	return pgx.ConnectConfig(ctx, cfg)
}

func TestServer(t *testing.T) {
	s := Shared(t)
	ctx := context.Background()
	start := time.Now()
	db := s.NewDatabase(t)
	t.Logf("CREATE DATABASE took %v", time.Since(start))

	c, err := connect(ctx, t, db, db.CAFile, db.Password)
	if err != nil {
		t.Fatalf("connecting over TLS with the password: %v", err)
	}
	var ssl bool
	if err := c.QueryRow(ctx, "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").Scan(&ssl); err != nil || !ssl {
		t.Errorf("pg_stat_ssl.ssl = %v, %v; want true", ssl, err)
	}
	if _, err := c.Exec(ctx, "CREATE TABLE t (x int)"); err != nil {
		t.Errorf("the role cannot create a table in its database: %v", err)
	}
	start = time.Now()
	for range 50 {
		if _, err := c.Exec(ctx, "INSERT INTO t VALUES (1)"); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("one commit takes %v", time.Since(start)/50)
	c.Close(ctx)

	if _, err := connect(ctx, t, db, db.CAFile, "wrong"); err == nil || !strings.Contains(err.Error(), "password authentication failed") {
		t.Errorf("a wrong password = %v, want password authentication failed", err)
	}
	plain, err := pgx.Connect(ctx, db.URL+"&password="+db.Password)
	if err == nil {
		plain.Close(ctx)
		t.Errorf("connecting with sslmode=verify-full and the system's roots succeeded")
	}
	cfg, _ := pgx.ParseConfig(strings.Replace(db.URL, "sslmode=verify-full", "sslmode=disable", 1))
	cfg.Password = db.Password
	if c, err := pgx.ConnectConfig(ctx, cfg); err == nil || !strings.Contains(err.Error(), "no encryption") {
		if c != nil {
			c.Close(ctx)
		}
		t.Errorf("connecting without TLS = %v, want a refusal (pg_hba reject, no encryption)", err)
	}

	start = time.Now()
	s.Stop(t)
	if _, err := connect(ctx, t, db, db.CAFile, db.Password); err == nil {
		t.Errorf("connected to a stopped server")
	}
	s.Start(t)
	t.Logf("stop and start took %v", time.Since(start))
	c, err = connect(ctx, t, db, db.CAFile, db.Password)
	if err != nil {
		t.Fatalf("connecting after Start: %v", err)
	}
	var n int
	if err := c.QueryRow(ctx, "SELECT count(*) FROM t").Scan(&n); err != nil || n != 50 {
		t.Errorf("rows after a restart = %d, %v; want 50", n, err)
	}
	c.Close(ctx)
}

func TestClientCert(t *testing.T) {
	s := Shared(t)
	ctx := context.Background()
	db := s.NewDatabase(t)
	certFile, keyFile := s.ClientCert(t, CertRole)
	cfg, err := pgx.ParseConfig(strings.Replace(db.URL, Role+"@", CertRole+"@", 1))
	if err != nil {
		t.Fatal(err)
	}
	pem, _ := os.ReadFile(db.CAFile)
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(pem)
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	cfg.TLSConfig = &tls.Config{RootCAs: roots, ServerName: "127.0.0.1", Certificates: []tls.Certificate{pair}}
	c, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatalf("logging in with a client certificate: %v", err)
	}
	defer c.Close(ctx)
	if _, err := c.Exec(ctx, "CREATE TABLE t (x int)"); err != nil {
		t.Errorf("the certificate role cannot create a table: %v", err)
	}

	other := t.TempDir() + "/other.pem"
	WriteOtherCA(t, other)
	if _, err := connect(ctx, t, db, other, db.Password); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("connecting with another CA = %v, want a certificate error", err)
	}
}
