package store

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/enrollment-appliance/aeappliance/enrollsvc/store/pgtest"
)

// pgCount runs a count query on the database of s.
func pgCount(t *testing.T, s *Postgres, query string) int {
	t.Helper()
	var n int
	if err := s.pool.QueryRow(context.Background(), query).Scan(&n); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	return n
}

// TestPGMigrationsMatchSQLite: both stores have the same schema versions under the same names.
func TestPGMigrationsMatchSQLite(t *testing.T) {
	if len(pgMigrations) != len(migrations) {
		t.Fatalf("PostgreSQL has %d migrations, SQLite %d", len(pgMigrations), len(migrations))
	}
	for i, m := range pgMigrations {
		if m.version != migrations[i].version || m.name != migrations[i].name || m.sql == "" {
			t.Errorf("pgMigrations[%d] = %d %q, want %d %q with SQL", i, m.version, m.name, migrations[i].version, migrations[i].name)
		}
	}
}

// TestPGConcurrentFirstOpen: instances opening a new database at once all succeed, and the schema
// is created once.
func TestPGConcurrentFirstOpen(t *testing.T) {
	srv := pgtest.Shared(t)
	for range 3 {
		db := srv.NewDatabase(t)
		const n = 4
		stores := make([]*Postgres, n)
		errs := make([]error, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() { stores[i], errs[i] = OpenPostgres(context.Background(), pgConfig(db), nil) })
		}
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Fatalf("OpenPostgres #%d at the same time = %v", i, err)
			}
			defer stores[i].Close()
		}
		if got := pgCount(t, stores[0], "SELECT count(*) FROM schema_migrations"); got != len(pgMigrations) {
			t.Errorf("schema_migrations has %d rows, want %d", got, len(pgMigrations))
		}
		if _, err := stores[1].NextCRLNumber(context.Background()); err != nil {
			t.Errorf("NextCRLNumber = %v", err)
		}
	}
}

// TestPGTwoInstances: two stores on one database (two appliances) issuing from 16 goroutines give
// distinct serials, each stored once, and a serial used by one is refused to the other.
func TestPGTwoInstances(t *testing.T) {
	db := pgtest.Shared(t).NewDatabase(t)
	a, b := openPG(t, db), openPG(t, db)
	both := []*Postgres{a, b}
	ctx := context.Background()

	const workers, each = 16, 125 // 2,000 issuances
	serials := make([][]string, workers)
	var wg sync.WaitGroup
	for w := range workers {
		s := both[w%2]
		wg.Go(func() {
			for i := range each {
				sr := newSerial(t)
				id, err := s.BeginIssuance(ctx, Request{Template: "T", Account: fmt.Sprintf("w%d-%d", w, i)}, sr, ev(2100, "signing"))
				if err != nil {
					t.Errorf("worker %d: BeginIssuance = %v", w, err)
					return
				}
				c := Certificate{Serial: sr, DER: testDER(sr), Template: "T", Account: "a", RequestID: id}
				if err := s.CommitCertificate(ctx, c, ev(2101, "issued")); err != nil {
					t.Errorf("worker %d: CommitCertificate(%s) = %v", w, sr, err)
					return
				}
				serials[w] = append(serials[w], sr)
			}
		})
	}
	wg.Wait()
	seen := map[string]bool{}
	for w, list := range serials {
		for _, sr := range list {
			if seen[sr] {
				t.Errorf("serial %s issued twice", sr)
			}
			seen[sr] = true
			// Each instance sees what the other stored.
			if c, err := both[1-w%2].GetCertificate(ctx, sr); err != nil || !bytes.Equal(c.DER, testDER(sr)) {
				t.Errorf("GetCertificate(%s) on the other instance = %v", sr, err)
			}
		}
	}
	if n, err := b.CountCertificates(ctx); n != workers*each || len(seen) != workers*each || err != nil {
		t.Errorf("CountCertificates() = %d, %v; %d distinct serials issued; want %d", n, err, len(seen), workers*each)
	}
	if n := pgCount(t, a, "SELECT count(*) FROM requests WHERE state = 'issued'"); n != workers*each {
		t.Errorf("issued requests = %d, want %d", n, workers*each)
	}
	if n := pgCount(t, a, "SELECT count(*) FROM events"); n != 2*workers*each {
		t.Errorf("events = %d, want %d", n, 2*workers*each)
	}

	// A serial used on one instance is refused on the other, and nothing is written.
	used := serials[0][0]
	if err := b.ReserveSerial(ctx, used, ev(2100, "")); !errors.Is(err, ErrSerialUsed) {
		t.Errorf("ReserveSerial(serial of A) on B = %v, want ErrSerialUsed", err)
	}
	before := pgCount(t, a, "SELECT count(*) FROM requests")
	if _, err := a.BeginIssuance(ctx, Request{}, serials[1][0], ev(2100, "")); !errors.Is(err, ErrSerialUsed) {
		t.Errorf("BeginIssuance(serial of B) on A = %v, want ErrSerialUsed", err)
	}
	if after := pgCount(t, a, "SELECT count(*) FROM requests"); after != before {
		t.Errorf("a refused BeginIssuance wrote %d requests", after-before)
	}

	// The same serial reserved by both at once: one wins.
	for range 50 {
		sr := newSerial(t)
		errs := race(func(i int) error { return both[i].ReserveSerial(ctx, sr, ev(2100, "")) })
		if ok := countNil(errs); ok != 1 || !errors.Is(errors.Join(errs...), ErrSerialUsed) {
			t.Errorf("ReserveSerial(%s) on both at once = %v, want one nil and one ErrSerialUsed", sr, errs)
		}
	}
}

// race calls f(0) and f(1) at the same moment and returns their errors.
func race(f func(i int) error) []error {
	errs := make([]error, 2)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range 2 {
		wg.Go(func() {
			<-start
			errs[i] = f(i)
		})
	}
	close(start)
	wg.Wait()
	return errs
}

func countNil(errs []error) int {
	n := 0
	for _, err := range errs {
		if err == nil {
			n++
		}
	}
	return n
}

// TestPGChallengeRace: a one-time challenge used from two instances at once is taken once.
func TestPGChallengeRace(t *testing.T) {
	db := pgtest.Shared(t).NewDatabase(t)
	a, b := openPG(t, db), openPG(t, db)
	both := []*Postgres{a, b}
	ctx := context.Background()
	if err := a.AddSCEPProfile(ctx, SCEPProfile{Name: "mdm", Template: "Device", Mode: SCEPOneTime, Created: epoch}, ev(3000, "")); err != nil {
		t.Fatal(err)
	}
	for i := range 50 {
		h := sha256.Sum256(fmt.Appendf(nil, "challenge %d", i))
		c := SCEPChallenge{SHA256: h[:], Profile: "mdm", Subject: "CN=phone", Created: epoch, Expires: epoch.Add(time.Hour)}
		if err := both[i%2].AddSCEPChallenge(ctx, c, ev(3000, "")); err != nil {
			t.Fatal(err)
		}
		got := make([]SCEPChallenge, 2)
		errs := race(func(j int) (err error) {
			got[j], err = both[j].UseSCEPChallenge(ctx, "mdm", h[:], epoch.Add(time.Minute))
			return err
		})
		if countNil(errs) != 1 || !errors.Is(errors.Join(errs...), ErrConflict) {
			t.Fatalf("round %d: UseSCEPChallenge on both at once = %v, want one nil and one ErrConflict", i, errs)
		}
		winner := got[slices.IndexFunc(errs, func(err error) bool { return err == nil })]
		if winner.Subject != "CN=phone" || !winner.UsedAt.Equal(epoch.Add(time.Minute)) {
			t.Errorf("round %d: the winner got %+v", i, winner)
		}
	}
}

// TestPGCRLNumbers: CRL numbers handed out by two instances, interleaved or at once, only grow.
func TestPGCRLNumbers(t *testing.T) {
	db := pgtest.Shared(t).NewDatabase(t)
	a, b := openPG(t, db), openPG(t, db)
	ctx := context.Background()
	last := int64(0)
	for i := range 10 {
		n, err := []*Postgres{a, b}[i%2].NextCRLNumber(ctx)
		if err != nil || n <= last {
			t.Fatalf("NextCRLNumber #%d = %d, %v after %d", i, n, err, last)
		}
		last = n
	}
	const workers, each = 4, 25
	got := make([][]int64, workers)
	var wg sync.WaitGroup
	for w := range workers {
		s := []*Postgres{a, b}[w%2]
		wg.Go(func() {
			for range each {
				n, err := s.NextCRLNumber(ctx)
				if err != nil {
					t.Errorf("NextCRLNumber = %v", err)
					return
				}
				got[w] = append(got[w], n)
			}
		})
	}
	wg.Wait()
	all := map[int64]bool{}
	for w, list := range got {
		for i, n := range list {
			if n <= last || all[n] || (i > 0 && n <= list[i-1]) {
				t.Errorf("worker %d: number %d (after %v) repeats or does not grow", w, n, list[:i])
			}
			all[n] = true
		}
	}
	if len(all) != workers*each {
		t.Errorf("%d distinct numbers, want %d", len(all), workers*each)
	}
	if n, err := b.NextCRLNumber(ctx); err != nil || n != last+workers*each+1 {
		t.Errorf("NextCRLNumber after the burst = %d, %v, want %d", n, err, last+workers*each+1)
	}
}

// TestPGEventsPaging: a reader paging events by Seq while two instances append them from several
// goroutines sees every event exactly once, in order, even though transactions commit in another
// order than they took their Seq.
func TestPGEventsPaging(t *testing.T) {
	db := pgtest.Shared(t).NewDatabase(t)
	a, b := openPG(t, db), openPG(t, db)
	ctx := context.Background()
	const workers, each = 8, 150
	var done atomic.Bool
	var wg sync.WaitGroup
	for w := range workers {
		s := []*Postgres{a, b}[w%2]
		wg.Go(func() {
			for i := range each {
				// Some transactions do more than append, so that commits overtake each other.
				var err error
				if i%3 == 0 {
					err = s.ReserveSerial(ctx, newSerial(t), ev(1, ""), ev(2, ""))
				} else {
					_, err = s.AppendEvent(ctx, ev(3, ""))
				}
				if err != nil {
					t.Errorf("writing events: %v", err)
					return
				}
			}
		})
	}
	go func() { wg.Wait(); done.Store(true) }()

	var seen []int64
	after := int64(0)
	for tail := 0; ; tail++ {
		finished := done.Load()
		list, err := []*Postgres{a, b}[tail%2].ListEvents(ctx, EventFilter{AfterSeq: after, Limit: 1000})
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range list {
			seen = append(seen, e.Seq)
			after = e.Seq
		}
		if finished && len(list) == 0 {
			break
		}
	}
	all, err := a.ListEvents(ctx, EventFilter{Limit: 1000})
	for len(all) > 0 && err == nil {
		more, err2 := a.ListEvents(ctx, EventFilter{AfterSeq: all[len(all)-1].Seq, Limit: 1000})
		if len(more) == 0 || err2 != nil {
			err = err2
			break
		}
		all = append(all, more...)
	}
	if err != nil {
		t.Fatal(err)
	}
	if want := workers * each * 4 / 3; len(all) != want {
		t.Errorf("%d events stored, want %d", len(all), want)
	}
	if len(seen) != len(all) {
		t.Errorf("the paging reader saw %d events of %d: it passed over some", len(seen), len(all))
	}
}

// TestPGServerDown: while the server is stopped or hung, calls fail with errors within their
// context's deadline; when it is back, the same store serves again, and every write that
// succeeded is stored.
func TestPGServerDown(t *testing.T) {
	srv := pgtest.Shared(t)
	db := srv.NewDatabase(t)
	s := openPG(t, db)
	const callTimeout = 700 * time.Millisecond

	type result struct {
		serial    string
		err       error
		start, at time.Time // when the call began and ended
	}
	var (
		mu      sync.Mutex
		results []result
		stop    atomic.Bool
		wg      sync.WaitGroup
	)
	for range 4 {
		wg.Go(func() {
			for !stop.Load() {
				sr := newSerial(t)
				ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
				start := time.Now()
				err := func() (err error) {
					defer func() {
						if r := recover(); r != nil {
							err = fmt.Errorf("panic: %v", r)
						}
					}()
					if err := s.ReserveSerial(ctx, sr, ev(2100, "")); err != nil {
						return err
					}
					return s.CommitCertificate(ctx, Certificate{Serial: sr, DER: testDER(sr)}, ev(2101, ""))
				}()
				cancel()
				mu.Lock()
				results = append(results, result{sr, err, start, time.Now()})
				mu.Unlock()
				if err != nil {
					time.Sleep(20 * time.Millisecond) // as a client would before trying again
				}
			}
		})
	}
	phase := func(name string, f func()) (from, to time.Time) {
		from = time.Now()
		f()
		t.Logf("%s: %v", name, time.Since(from))
		return from, time.Now()
	}
	time.Sleep(300 * time.Millisecond)
	downFrom, downTo := phase("stopped", func() {
		srv.Stop(t)
		time.Sleep(2 * time.Second)
		srv.Start(t)
	})
	time.Sleep(500 * time.Millisecond)
	hungFrom, hungTo := phase("hung", func() {
		srv.Freeze(t)
		time.Sleep(1500 * time.Millisecond)
		srv.Thaw(t)
	})
	recovered := time.Now()
	deadline := recovered.Add(10 * time.Second)
	for {
		time.Sleep(100 * time.Millisecond)
		mu.Lock()
		ok := 0
		for _, r := range results {
			if r.at.After(recovered) && r.err == nil {
				ok++
			}
		}
		mu.Unlock()
		if ok >= 20 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the store did not serve again within 10 s after the server came back")
		}
	}
	stop.Store(true)
	wg.Wait()

	var failedDown, failedHung int
	for _, r := range results {
		if r.err != nil && strings.Contains(r.err.Error(), "panic") {
			t.Errorf("a call panicked: %v", r.err)
		}
		if took := r.at.Sub(r.start); took > callTimeout+time.Second {
			t.Errorf("a call took %v with a %v deadline (%v)", took, callTimeout, r.err)
		}
		// Calls that failed while the server was away (a hung call fails at its deadline).
		switch {
		case r.err != nil && r.at.After(downFrom) && r.at.Before(downTo):
			failedDown++
		case r.err != nil && r.at.After(hungFrom) && r.at.Before(hungTo.Add(callTimeout)):
			failedHung++
		}
		if r.err == nil {
			if c, err := s.GetCertificate(context.Background(), r.serial); err != nil || !bytes.Equal(c.DER, testDER(r.serial)) {
				t.Errorf("certificate %s whose commit succeeded: GetCertificate = %v", r.serial, err)
			}
		}
	}
	t.Logf("%d calls: %d failed while stopped, %d while hung", len(results), failedDown, failedHung)
	if failedDown == 0 || failedHung == 0 {
		t.Errorf("no call failed while the server was stopped (%d) or hung (%d)", failedDown, failedHung)
	}
	for _, r := range results {
		if r.err != nil && r.start.After(recovered.Add(callTimeout)) {
			t.Errorf("a call begun %v after the server came back failed: %v", r.start.Sub(recovered), r.err)
		}
	}
	if err := s.Ping(context.Background()); err != nil {
		t.Errorf("Ping() after the server came back = %v", err)
	}
}

// TestPGOpenRefuses: what OpenPostgres must refuse, with a clear error that never holds the
// password (nor does the log).
func TestPGOpenRefuses(t *testing.T) {
	srv := pgtest.Shared(t)
	ctx := context.Background()
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	otherCA := filepath.Join(dir, "other-ca.pem")
	pgtest.WriteOtherCA(t, otherCA)
	const urlSecret = "Url-S3cret-pw"
	wrongPW := write("wrong", "Wr0ng-S3cret-pw\n")

	tests := []struct {
		name    string
		setup   func(t *testing.T, db *pgtest.Database, cfg *PGConfig)
		wantErr string
	}{
		{"sslmode=disable", func(t *testing.T, db *pgtest.Database, cfg *PGConfig) {
			cfg.URL = strings.Replace(db.URL, "verify-full", "disable", 1)
		}, "TLS with a verified server certificate is required"},
		{"sslmode=require", func(t *testing.T, db *pgtest.Database, cfg *PGConfig) {
			cfg.URL = strings.Replace(db.URL, "verify-full", "require", 1)
		}, "sslmode=require"},
		{"Unix socket", func(t *testing.T, db *pgtest.Database, cfg *PGConfig) {
			cfg.URL = db.URL + "&host=" + srv.Dir
		}, "Unix socket"},
		{"key=value form", func(t *testing.T, db *pgtest.Database, cfg *PGConfig) {
			cfg.URL = "host=127.0.0.1 dbname=" + db.Name + " password=" + urlSecret
		}, "not a postgres:// URL"},
		{"TLS file in the URL", func(t *testing.T, db *pgtest.Database, cfg *PGConfig) {
			cfg.URL = db.URL + "&sslrootcert=/etc/ssl/certs/ca-certificates.crt"
		}, "sets sslrootcert"},
		{"no CA file", func(t *testing.T, db *pgtest.Database, cfg *PGConfig) { cfg.CAFile = "" }, "no CA file"},
		{"missing CA file", func(t *testing.T, db *pgtest.Database, cfg *PGConfig) {
			cfg.CAFile = filepath.Join(dir, "missing.pem")
		}, "no such file"},
		{"CA file without certificates", func(t *testing.T, db *pgtest.Database, cfg *PGConfig) {
			cfg.CAFile = write("junk.pem", "not PEM")
		}, "holds no PEM certificate"},
		{"wrong CA", func(t *testing.T, db *pgtest.Database, cfg *PGConfig) { cfg.CAFile = otherCA }, "certificate"},
		{"wrong CA, verify-ca", func(t *testing.T, db *pgtest.Database, cfg *PGConfig) {
			cfg.URL = strings.Replace(db.URL, "verify-full", "verify-ca", 1)
			cfg.CAFile = otherCA
		}, "certificate"},
		{"wrong password", func(t *testing.T, db *pgtest.Database, cfg *PGConfig) { cfg.PasswordFile = wrongPW },
			"password authentication failed"},
		{"wrong password in the URL", func(t *testing.T, db *pgtest.Database, cfg *PGConfig) {
			cfg.URL = strings.Replace(db.URL, pgtest.Role+"@", pgtest.Role+":"+urlSecret+"@", 1)
			cfg.PasswordFile = ""
		}, "password authentication failed"},
		{"password in the URL and a file", func(t *testing.T, db *pgtest.Database, cfg *PGConfig) {
			cfg.URL = strings.Replace(db.URL, pgtest.Role+"@", pgtest.Role+":"+urlSecret+"@", 1)
		}, "both the URL and a password file"},
		{"empty password file", func(t *testing.T, db *pgtest.Database, cfg *PGConfig) {
			cfg.PasswordFile = write("empty", "\n")
		}, "is empty"},
		{"no credentials", func(t *testing.T, db *pgtest.Database, cfg *PGConfig) { cfg.PasswordFile = "" },
			"neither a password file nor a client certificate"},
		{"newer schema", func(t *testing.T, db *pgtest.Database, cfg *PGConfig) {
			openPG(t, db).Close()
			srv.Exec(t, db.Name, "INSERT INTO schema_migrations VALUES (999, 'from the future', now())")
		}, "newer"},
		{"another application's database", func(t *testing.T, db *pgtest.Database, cfg *PGConfig) {
			srv.Exec(t, db.Name, "CREATE TABLE foo (x int)", "INSERT INTO foo VALUES (1)")
		}, "not an enrollment store"},
		{"another program's schema_migrations", func(t *testing.T, db *pgtest.Database, cfg *PGConfig) {
			srv.Exec(t, db.Name, "CREATE TABLE schema_migrations (version bigint PRIMARY KEY, dirty boolean)",
				"INSERT INTO schema_migrations VALUES (20240101, false)")
		}, "not an enrollment store"},
		{"server down", func(t *testing.T, db *pgtest.Database, cfg *PGConfig) {
			cfg.URL = strings.Replace(db.URL, fmt.Sprint(srv.Port), "1", 1)
		}, "connect"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			db := srv.NewDatabase(t)
			cfg := pgConfig(db)
			tt.setup(t, db, &cfg)
			before := pgTables(t, srv, db)
			var logs bytes.Buffer
			s, err := OpenPostgres(ctx, cfg, slog.New(slog.NewTextHandler(&logs, nil)))
			if err == nil {
				s.Close()
				t.Fatalf("OpenPostgres = nil error, want refusal")
			}
			msg := err.Error()
			if !strings.Contains(msg, tt.wantErr) {
				t.Errorf("OpenPostgres = %q, want it to say %q", msg, tt.wantErr)
			}
			for _, secret := range []string{db.Password, urlSecret, "Wr0ng-S3cret-pw"} {
				if strings.Contains(msg, secret) || strings.Contains(logs.String(), secret) {
					t.Errorf("the error or log holds a password: %q; log %q", msg, logs.String())
				}
			}
			if after := pgTables(t, srv, db); after != before {
				t.Errorf("a refused open changed the tables from %q to %q", before, after)
			}
			t.Logf("OpenPostgres(%s) = %v", tt.name, err)
		})
	}
}

// pgTables describes the tables of db's public schema and their rows, as the superuser sees them.
func pgTables(t *testing.T, srv *pgtest.Server, db *pgtest.Database) string {
	t.Helper()
	var tables string
	srv.QueryRow(t, db.Name, `SELECT coalesce(string_agg(table_name || ':' ||
		(xpath('/row/n/text()', query_to_xml('SELECT count(*) AS n FROM ' || quote_ident(table_name), false, true, '')))[1]::text,
		',' ORDER BY table_name), '') FROM information_schema.tables WHERE table_schema = 'public'`, &tables)
	return tables
}

// TestPGOpenAccepts: the other ways in: verify-ca, a client certificate instead of a password, a
// password in the URL (kept out of the log).
func TestPGOpenAccepts(t *testing.T) {
	srv := pgtest.Shared(t)
	ctx := context.Background()
	certFile, keyFile := srv.ClientCert(t, pgtest.CertRole)
	tests := []struct {
		name  string
		setup func(db *pgtest.Database, cfg *PGConfig)
	}{
		{"verify-ca", func(db *pgtest.Database, cfg *PGConfig) {
			cfg.URL = strings.Replace(db.URL, "verify-full", "verify-ca", 1)
		}},
		{"no sslmode", func(db *pgtest.Database, cfg *PGConfig) {
			cfg.URL = strings.TrimSuffix(db.URL, "?sslmode=verify-full")
		}},
		{"client certificate", func(db *pgtest.Database, cfg *PGConfig) {
			cfg.URL = strings.Replace(db.URL, pgtest.Role+"@", pgtest.CertRole+"@", 1)
			cfg.PasswordFile, cfg.ClientCertFile, cfg.ClientKeyFile = "", certFile, keyFile
		}},
		{"password in the URL", func(db *pgtest.Database, cfg *PGConfig) {
			cfg.URL = strings.Replace(db.URL, pgtest.Role+"@", pgtest.Role+":"+db.Password+"@", 1)
			cfg.PasswordFile = ""
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			db := srv.NewDatabase(t)
			cfg := pgConfig(db)
			tt.setup(db, &cfg)
			var logs bytes.Buffer
			s, err := OpenPostgres(ctx, cfg, slog.New(slog.NewTextHandler(&logs, nil)))
			if err != nil {
				t.Fatalf("OpenPostgres = %v", err)
			}
			defer s.Close()
			if err := s.ReserveSerial(ctx, newSerial(t), ev(1, "")); err != nil {
				t.Errorf("ReserveSerial = %v", err)
			}
			var ssl bool
			if err := s.pool.QueryRow(ctx, "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").Scan(&ssl); err != nil || !ssl {
				t.Errorf("the connection uses TLS: %v, %v; want true", ssl, err)
			}
			if strings.Contains(logs.String(), db.Password) || !strings.Contains(logs.String(), "opened PostgreSQL store") {
				t.Errorf("log = %q, want the opening logged without the password", logs.String())
			}
		})
	}
}

// Of two instances one publishes CRLs (the advisory lock), and keeps doing so; when it closes
// the other one takes over.
func TestPGCRLLeader(t *testing.T) {
	db := pgtest.Shared(t).NewDatabase(t)
	a, b := openPG(t, db), openPG(t, db)
	ctx := context.Background()
	for i := range 3 {
		la, errA := a.LeadCRLs(ctx)
		lb, errB := b.LeadCRLs(ctx)
		if errA != nil || errB != nil || !la || lb {
			t.Fatalf("round %d: A leads %v (%v), B leads %v (%v); want A only", i, la, errA, lb, errB)
		}
	}
	a.Close() // the server releases A's lock once its backend has ended
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		lb, err := b.LeadCRLs(ctx)
		if err == nil && lb {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("B five seconds after A closed: leads %v, %v; want B", lb, err)
		}
	}
}

// The server names the instance holding the CRL publisher's lock (by its application_name).
func TestPGServerInfo(t *testing.T) {
	db := pgtest.Shared(t).NewDatabase(t)
	cfg := pgConfig(db)
	cfg.Instance = "node-a"
	a, err := OpenPostgres(context.Background(), cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	ctx := context.Background()
	if info, err := a.ServerInfo(ctx); err != nil || info.CRLPublisher != "" || !strings.HasPrefix(info.Version, "15") {
		t.Fatalf("ServerInfo before any lead = %+v, %v", info, err)
	}
	if lead, err := a.LeadCRLs(ctx); err != nil || !lead {
		t.Fatal(lead, err)
	}
	if info, err := a.ServerInfo(ctx); err != nil || info.CRLPublisher != "enrollsvc/node-a" {
		t.Errorf("ServerInfo while node-a leads = %+v, %v", info, err)
	}
}
