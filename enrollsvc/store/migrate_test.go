package store

import (
	"bytes"
	"context"
	"crypto/rand"
	"database/sql"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestMigrationList(t *testing.T) {
	for i, m := range migrations {
		if m.version != i+1 || m.name == "" || m.sql == "" {
			t.Errorf("migrations[%d] = version %d name %q, want version %d with a name and SQL", i, m.version, m.name, i+1)
		}
	}
}

func TestOpenTwice(t *testing.T) {
	path := filepath.Join(t.TempDir(), "store.db")
	for i := range 3 {
		s := openAt(t, path)
		var n, v int
		if err := s.rdb.QueryRow("SELECT count(*), max(version) FROM schema_migrations").Scan(&n, &v); err != nil {
			t.Fatal(err)
		}
		if n != len(migrations) || v != latestVersion() {
			t.Errorf("open %d: schema_migrations has %d rows up to %d, want %d up to %d", i+1, n, v, len(migrations), latestVersion())
		}
		var mode string
		if err := s.rdb.QueryRow("PRAGMA journal_mode").Scan(&mode); err != nil || mode != "wal" {
			t.Errorf("open %d: journal_mode = %q, %v, want wal", i+1, mode, err)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

// rawExec changes a database behind the store's back.
func rawExec(t *testing.T, path string, stmts ...string) {
	t.Helper()
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for _, q := range stmts {
		if _, err := db.Exec(q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
}

// populated makes a closed store with some content, big enough to span many pages.
func populated(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "store.db")
	s := openAt(t, path)
	for range 200 {
		issue(t, s, Certificate{Template: "T", Account: "a"})
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	return path
}

func randomBytes(t *testing.T, n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// TestOpenRefuses checks that files that are not a store this code can use are refused with
// an error that names the file, and are left exactly as they were.
func TestOpenRefuses(t *testing.T) {
	tests := []struct {
		name    string
		make    func(t *testing.T) string
		wantErr string
	}{
		{"random bytes", func(t *testing.T) string {
			path := filepath.Join(t.TempDir(), "store.db")
			os.WriteFile(path, randomBytes(t, 8192), 0o600)
			return path
		}, "not a SQLite database"},
		{"short file", func(t *testing.T) string {
			path := filepath.Join(t.TempDir(), "store.db")
			os.WriteFile(path, []byte("SQLite"), 0o600)
			return path
		}, "not a SQLite database"},
		{"SQLite header then random bytes", func(t *testing.T) string {
			path := filepath.Join(t.TempDir(), "store.db")
			os.WriteFile(path, append(append([]byte{}, sqliteMagic...), randomBytes(t, 8192)...), 0o600)
			return path
		}, ""},
		{"truncated to half", func(t *testing.T) string {
			path := populated(t)
			fi, _ := os.Stat(path)
			if err := os.Truncate(path, fi.Size()/2); err != nil {
				t.Fatal(err)
			}
			return path
		}, ""},
		{"truncated to the first page", func(t *testing.T) string {
			path := populated(t)
			if err := os.Truncate(path, 4096); err != nil {
				t.Fatal(err)
			}
			return path
		}, ""},
		{"page overwritten", func(t *testing.T) string {
			path := populated(t)
			f, err := os.OpenFile(path, os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			f.WriteAt(randomBytes(t, 4096), 3*4096)
			f.Close()
			return path
		}, ""},
		{"future schema", func(t *testing.T) string {
			path := populated(t)
			rawExec(t, path, "INSERT INTO schema_migrations VALUES (999, 'from the future', 'x')")
			return path
		}, "newer"},
		{"another application's database", func(t *testing.T) string {
			path := filepath.Join(t.TempDir(), "store.db")
			rawExec(t, path, "CREATE TABLE foo (x)", "INSERT INTO foo VALUES (1)")
			return path
		}, "not an enrollment store"},
		{"empty file with a write-ahead log", func(t *testing.T) string {
			path := filepath.Join(t.TempDir(), "store.db")
			os.WriteFile(path, nil, 0o600)
			os.WriteFile(path+"-wal", randomBytes(t, 4096), 0o600)
			return path
		}, "write-ahead log"},
		{"directory", func(t *testing.T) string {
			return t.TempDir()
		}, "not a regular file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := tt.make(t)
			before, _ := os.ReadFile(path)
			s, err := Open(context.Background(), path, nil)
			if err == nil {
				s.Close()
				t.Fatalf("Open(%s) = nil error, want refusal", tt.name)
			}
			if !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("Open(%s) = %q, want an error naming %s and saying %q", tt.name, err, path, tt.wantErr)
			}
			after, _ := os.ReadFile(path)
			if !bytes.Equal(before, after) {
				t.Errorf("Open(%s) changed the file", tt.name)
			}
			t.Logf("Open(%s) = %v", tt.name, err)
		})
	}
}

// TestOpenEmptyFile: an empty file (as an interrupted first open leaves) becomes a new store.
func TestOpenEmptyFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "store.db")
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	s := openAt(t, path)
	if err := s.Ping(context.Background()); err != nil {
		t.Errorf("Ping() = %v", err)
	}
}

func TestOpenOddPath(t *testing.T) {
	path := filepath.Join(t.TempDir(), "a dir?#%", "store file.db")
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		t.Fatal(err)
	}
	s := openAt(t, path)
	issue(t, s, Certificate{})
	s.Close()
	if _, err := os.Stat(path); err != nil {
		t.Errorf("database not at %s: %v", path, err)
	}
	s = openAt(t, path)
	if n, err := s.CountCertificates(context.Background()); n != 1 || err != nil {
		t.Errorf("CountCertificates() = %d, %v, want 1", n, err)
	}
}

// SQLite's index hints leave a query PostgreSQL reads as it was written without them.
func TestRebindDropsIndexHints(t *testing.T) {
	q := "SELECT serial FROM certificates" + indexedBy("certificates_revoked") + " WHERE status = ? AND revoked_at >= ?"
	if got, want := rebind(q), "SELECT serial FROM certificates WHERE status = $1 AND revoked_at >= $2"; got != want {
		t.Errorf("rebind = %q, want %q", got, want)
	}
	if got := dropIndexedBy("SELECT 1 FROM t" + indexedBy("i")); got != "SELECT 1 FROM t" {
		t.Errorf("a hint at the end: %q", got)
	}
}
