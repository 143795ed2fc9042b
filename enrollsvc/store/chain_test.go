package store

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/enrollment-appliance/aeappliance/enrollsvc/store/pgtest"
	"github.com/enrollment-appliance/aeappliance/proto/auditlog"
)

// verifyTrail walks every event of s in order, as `aectl events verify` does over the API, and
// returns what the verifier found.
func verifyTrail(t *testing.T, s Store) auditlog.Result {
	t.Helper()
	v := auditlog.NewVerifier()
	after := int64(0)
	for {
		page, err := s.ListEvents(context.Background(), EventFilter{AfterSeq: after, Limit: 7})
		if err != nil {
			t.Fatal(err)
		}
		if len(page) == 0 {
			return v.Result()
		}
		for _, e := range page {
			_ = v.Add(auditlog.Record{Seq: e.Seq, Instance: e.Instance, N: e.N, Prev: e.Prev, Hash: e.Hash, ID: e.ID,
				Category: e.Category, Level: e.Level, Time: e.Time, Message: e.Message, Fields: e.Fields})
			after = e.Seq
		}
	}
}

// tamper runs sql on s's database past the triggers that keep events unchanged, as someone with
// the database file or a superuser's connection could.
func tamper(t *testing.T, s Store, sql string, args ...any) {
	t.Helper()
	var eng engine
	drop := []string{"DROP TRIGGER IF EXISTS events_no_update", "DROP TRIGGER IF EXISTS events_no_delete"}
	switch st := s.(type) {
	case *SQLite:
		eng = st
	case *Postgres:
		eng = st
		drop = []string{"DROP TRIGGER IF EXISTS events_no_change ON events"}
	}
	err := eng.write(context.Background(), func(ctx context.Context, tx conn) error {
		for _, d := range drop {
			if _, err := tx.exec(ctx, d); err != nil {
				return err
			}
		}
		_, err := tx.exec(ctx, sql, args...)
		return err
	})
	if err != nil {
		t.Fatalf("tampering: %v", err)
	}
}

// writeTrail records events through every path that writes them and returns their Seqs.
func writeTrail(t *testing.T, s Store) []int64 {
	t.Helper()
	ctx := context.Background()
	fields := map[string]any{"big": uint64(1) << 63, "html": "<a&b>", "nested": struct {
		Z string `json:"z"`
		A []int  `json:"a"`
	}{"last", []int{3, 1}}, "float": 0.1, "none": nil}
	for i := range 3 {
		e := ev(2000, fmt.Sprintf("event %d", i))
		e.Fields = fields
		if _, err := s.AppendEvent(ctx, e); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.CreateRequest(ctx, Request{Template: "T", Account: "a", Decision: []byte(`{"held":true}`)}, ev(2000, "received"), ev(2001, "pending")); err != nil {
		t.Fatal(err)
	}
	// An event that cannot be stored fails its write and takes no place in the chain.
	bad := ev(2000, "bad")
	bad.Fields = map[string]any{"x": make(chan int)}
	if _, err := s.AppendEvent(ctx, bad); err == nil {
		t.Fatal("an event with fields that are not JSON was stored")
	}
	if _, err := s.AppendEvent(ctx, ev(2000, "empty fields")); err != nil {
		t.Fatal(err)
	}
	var seqs []int64
	evs, err := s.ListEvents(ctx, EventFilter{Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range evs {
		seqs = append(seqs, e.Seq)
	}
	return seqs
}

// Every event is chained, and the chain verifies from the events as a reader gets them.
func TestAuditTrailChains(t *testing.T) { eachStore(t, testAuditTrailChains) }

func testAuditTrailChains(t *testing.T, s Store) {
	seqs := writeTrail(t, s)
	res := verifyTrail(t, s)
	if res.Broken != nil {
		t.Fatalf("untouched trail: %v", res.Broken)
	}
	if res.Events != int64(len(seqs)) || res.Unchained != 0 || len(res.Chains) != 1 {
		t.Fatalf("verified %+v; want %d chained events in one chain", res, len(seqs))
	}
	evs, _ := s.ListEvents(context.Background(), EventFilter{Limit: 1})
	if fmt.Sprint(evs[0].Fields["big"]) != "9223372036854775808" {
		t.Errorf("a large integer field reads back as %v", evs[0].Fields["big"])
	}
}

// Editing, removing or re-hashing one event breaks the chain exactly there.
func TestAuditTrailTamper(t *testing.T) {
	cases := []struct {
		name   string
		sql    string
		at     int // index of the event the verifier must name (into the trail's events)
		reason string
	}{
		{"message edited", "UPDATE events SET message = 'nothing happened' WHERE seq = ?", 2, "contents do not match"},
		{"fields edited", `UPDATE events SET fields = '{"by":"someone else"}' WHERE seq = ?`, 3, "contents do not match"},
		{"time edited", `UPDATE events SET "time" = ? WHERE seq = ?`, 4, "contents do not match"},
		{"removed", "DELETE FROM events WHERE seq = ?", 3, "missing"},
		{"hash recomputed", "UPDATE events SET message = ?, hash = ? WHERE seq = ?", 3, "does not link"},
		{"hash removed", "UPDATE events SET hash = NULL, n = NULL, prev = NULL, instance = NULL WHERE seq = ?", 2, "no hash"},
	}
	for _, b := range backends {
		for _, c := range cases {
			t.Run(b.name+"/"+c.name, func(t *testing.T) {
				s, _ := b.open(t)
				seqs := writeTrail(t, s)
				target := seqs[2]
				if c.name == "fields edited" || c.name == "time edited" {
					target = seqs[c.at]
				}
				switch c.name {
				case "time edited":
					tamper(t, s, c.sql, epoch.Add(-time.Hour), target)
				case "hash recomputed": // the edited event's hash made anew: it verifies, the next does not
					evs, err := s.ListEvents(context.Background(), EventFilter{AfterSeq: target - 1, Limit: 1})
					if err != nil {
						t.Fatal(err)
					}
					e := evs[0]
					h, err := auditlog.Hash(auditlog.Record{Instance: e.Instance, N: e.N, Prev: e.Prev, ID: e.ID, Category: e.Category,
						Level: e.Level, Time: e.Time, Message: "nothing happened", Fields: e.Fields})
					if err != nil {
						t.Fatal(err)
					}
					tamper(t, s, c.sql, "nothing happened", h, target)
				default:
					tamper(t, s, c.sql, target)
				}
				want := seqs[c.at]
				if c.name == "removed" || c.name == "hash recomputed" {
					want = seqs[3] // the next event shows it
				}
				res := verifyTrail(t, s)
				if res.Broken == nil {
					t.Fatalf("%s: the trail still verifies: %+v", c.name, res)
				}
				if res.Broken.Seq != want || !strings.Contains(res.Broken.Reason, c.reason) {
					t.Fatalf("%s: broken at seq %d (%s); want seq %d (%s)", c.name, res.Broken.Seq, res.Broken.Reason, want, c.reason)
				}
			})
		}
	}
}

// The store refuses to change or delete an event through SQL (the triggers).
func TestEventsAreImmutable(t *testing.T) { eachStore(t, testEventsAreImmutable) }

func testEventsAreImmutable(t *testing.T, s Store) {
	writeTrail(t, s)
	var eng engine
	switch st := s.(type) {
	case *SQLite:
		eng = st
	case *Postgres:
		eng = st
	}
	for _, q := range []string{"UPDATE events SET message = 'x' WHERE seq = 1", "DELETE FROM events WHERE seq = 1"} {
		err := eng.write(context.Background(), func(ctx context.Context, tx conn) error {
			_, err := tx.exec(ctx, q)
			return err
		})
		if err == nil || !strings.Contains(err.Error(), "audit events are never") {
			t.Errorf("%s: %v; want refused by the trigger", q, err)
		}
	}
}

// Several instances (and several connections of each) append to a shared PostgreSQL store at
// once: each instance's chain stays whole, in the order of Seq.
func TestAuditTrailConcurrentInstances(t *testing.T) {
	db := pgtest.Shared(t).NewDatabase(t)
	var stores []*Postgres
	for _, name := range []string{"a", "b", "a"} { // two stores of instance a: one chain, two pools
		cfg := pgConfig(db)
		cfg.Instance = name
		s, err := OpenPostgres(context.Background(), cfg, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		stores = append(stores, s)
	}
	var wg sync.WaitGroup
	const perWorker = 25
	for i, s := range stores {
		for w := range 4 {
			wg.Go(func() {
				for k := range perWorker {
					if _, err := s.AppendEvent(context.Background(), ev(2000, fmt.Sprintf("store %d worker %d event %d", i, w, k))); err != nil {
						t.Error(err)
						return
					}
				}
			})
		}
	}
	wg.Wait()
	res := verifyTrail(t, stores[0])
	if res.Broken != nil {
		t.Fatal(res.Broken)
	}
	if len(res.Chains) != 2 || res.Chains[0].Events != 2*4*perWorker || res.Chains[1].Events != 4*perWorker {
		t.Fatalf("chains %+v; want a with %d events and b with %d", res.Chains, 2*4*perWorker, 4*perWorker)
	}
}

// A setting is kept with who set it and when, replaced as a whole, and its change is audited.
func TestSettings(t *testing.T) { eachStore(t, testSettings) }

func testSettings(t *testing.T, s Store) {
	ctx := context.Background()
	ss := s.(SettingsStore)
	if _, err := ss.GetSetting(ctx, "syslog"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("a setting never set: %v; want ErrNotFound", err)
	}
	for i, v := range []string{`{"address":"a:514"}`, `{"address":"b:6514","tls":true}`} {
		if err := ss.PutSetting(ctx, Setting{Name: "syslog", Value: []byte(v), Updated: epoch.Add(time.Duration(i) * time.Hour), By: "admin"},
			ev(3060, "set")); err != nil {
			t.Fatal(err)
		}
	}
	got, err := ss.GetSetting(ctx, "syslog")
	if err != nil || string(got.Value) != `{"address":"b:6514","tls":true}` || got.By != "admin" || !got.Updated.Equal(epoch.Add(time.Hour)) {
		t.Fatalf("setting = %+v %s, %v", got, got.Value, err)
	}
	if err := ss.PutSetting(ctx, Setting{Name: "syslog", Value: []byte(`{`), Updated: epoch, By: "admin"}, ev(3060, "bad")); err == nil {
		t.Fatal("a setting that is not JSON was stored")
	}
	if evs, _ := s.ListEvents(ctx, EventFilter{ID: 3060}); len(evs) != 2 {
		t.Fatalf("settings events = %d, want 2", len(evs))
	}
}

// The monitoring figures: pending requests, valid certificates expiring within the window (not
// expired ones, not revoked ones), and a database size.
func TestOpsStats(t *testing.T) { eachStore(t, testOpsStats) }

func testOpsStats(t *testing.T, s Store) {
	ctx := context.Background()
	// One request held for approval (with the policy's decision), one issuance in progress
	// (pending without one): only the first waits for a certificate manager.
	if _, err := s.CreateRequest(ctx, Request{State: RequestPending, Template: "T", Account: "a", Decision: []byte(`{"held":true}`)},
		ev(2001, "held")); err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateRequest(ctx, Request{State: RequestPending, Template: "T", Account: "b"}); err != nil {
		t.Fatal(err)
	}
	// epoch is 03:04:05 UTC: its day began 3 hours before; the certificate issued 4 hours before
	// was issued the day before.
	dayStart := time.Date(2030, 1, 2, 0, 0, 0, 0, time.UTC)
	soon := issue(t, s, Certificate{NotAfter: epoch.Add(10 * 24 * time.Hour), IssuedAt: epoch.Add(-time.Hour)})
	issue(t, s, Certificate{NotAfter: epoch.Add(40 * 24 * time.Hour), IssuedAt: dayStart})
	issue(t, s, Certificate{NotAfter: epoch.Add(-time.Hour), IssuedAt: dayStart.Add(-time.Microsecond)})
	revoked := issue(t, s, Certificate{NotAfter: epoch.Add(5 * 24 * time.Hour), IssuedAt: epoch.Add(-4 * time.Hour)})
	if err := s.RevokeCertificate(ctx, revoked.Serial, 1, epoch, ev(2200, "revoked")); err != nil {
		t.Fatal(err)
	}
	st, err := s.(interface {
		OpsStats(context.Context, time.Time, time.Duration) (OpsStats, error)
	}).OpsStats(ctx, epoch, 30*24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if st.Pending != 1 || st.Expiring != 1 || st.IssuedToday != 2 || st.Size <= 0 {
		t.Fatalf("stats %+v; want 1 held, 1 expiring (%s), 2 issued since 00:00 UTC and a size", st, soon.Serial)
	}
	// The same instant in another zone is the same UTC day.
	st, err = s.(interface {
		OpsStats(context.Context, time.Time, time.Duration) (OpsStats, error)
	}).OpsStats(ctx, epoch.In(time.FixedZone("UTC-5", -5*3600)), 30*24*time.Hour)
	if err != nil || st.IssuedToday != 2 {
		t.Fatalf("stats at epoch in UTC-5: %+v, %v; want 2 issued today (UTC)", st, err)
	}
}

// A snapshot taken while the writer commits holds a consistent state: every certificate it has
// is there with its serial, and counting it agrees with its rows.
func TestSnapshotUnderWrites(t *testing.T) {
	s, _ := openTest(t)
	ctx := context.Background()
	for range 20 {
		issue(t, s, Certificate{NotAfter: epoch.Add(time.Hour)})
	}
	stop := make(chan struct{})
	done := make(chan int)
	go func() {
		n := 0
		for {
			select {
			case <-stop:
				done <- n
				return
			default:
			}
			serial := newSerial(t)
			if err := s.ReserveSerial(ctx, serial, ev(2100, "signing")); err != nil {
				t.Error(err)
			} else if err := s.CommitCertificate(ctx, Certificate{Serial: serial, DER: testDER(serial), NotAfter: epoch.Add(time.Hour)},
				ev(2101, "issued")); err != nil {
				t.Error(err)
			}
			n++
		}
	}()
	path := filepath.Join(t.TempDir(), "snap.db")
	if err := s.Snapshot(ctx, path); err != nil {
		t.Fatal(err)
	}
	close(stop)
	more := <-done
	sum, err := SummarizeFile(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	snap := openAt(t, path)
	var serials int64
	if err := snap.eng.read(ctx, func(ctx context.Context, db conn) error {
		return db.queryRow(ctx, "SELECT count(*) FROM serials").Scan(&serials)
	}); err != nil {
		t.Fatal(err)
	}
	// Each issuance is two transactions (the serial reserved with its event, then the certificate
	// with its event): a consistent snapshot holds whole transactions, so its events are exactly
	// one per reserved serial and one per certificate.
	if sum.Certificates < 20 || serials < sum.Certificates || serials > sum.Certificates+1 || sum.Events != serials+sum.Certificates {
		t.Fatalf("snapshot summary %+v with %d serials (writer added %d meanwhile): want >= 20 certificates, each transaction whole", sum, serials, more)
	}
	if n, err := snap.CountCertificates(ctx); err != nil || n != sum.Certificates {
		t.Fatalf("the snapshot opens as a store with %d certificates (%v), summary says %d", n, err, sum.Certificates)
	}
	if res := verifyTrail(t, snap); res.Broken != nil {
		t.Fatalf("the snapshot's audit trail: %v", res.Broken)
	}
	if err := s.Snapshot(ctx, path); err == nil {
		t.Error("a snapshot over an existing file succeeded")
	}
}

// A PostgreSQL store snapshots into a SQLite file that opens as a store with the same rows, the
// CRL number, and every instance's audit chain whole.
func TestPostgresSnapshot(t *testing.T) {
	db := pgtest.Shared(t).NewDatabase(t)
	cfg := pgConfig(db)
	cfg.Instance = "ca1"
	p, err := OpenPostgres(context.Background(), cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	ctx := context.Background()
	writeTrail(t, p)
	c := issue(t, p, Certificate{NotAfter: epoch.Add(time.Hour)})
	if err := p.RevokeCertificate(ctx, c.Serial, 1, epoch, ev(2200, "revoked")); err != nil {
		t.Fatal(err)
	}
	if _, err := p.NextCRLNumber(ctx); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "snap.db")
	if err := p.Snapshot(ctx, path); err != nil {
		t.Fatal(err)
	}
	sum, err := SummarizeFile(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	if sum.Certificates != 1 || sum.Revoked != 1 || sum.Pending != 1 || sum.CRLNumber != 1 {
		t.Fatalf("snapshot summary %+v", sum)
	}
	snap := openAt(t, path)
	res := verifyTrail(t, snap)
	if res.Broken != nil || len(res.Chains) != 1 || res.Chains[0].Instance != "ca1" || res.Events != sum.Events {
		t.Fatalf("the snapshot's trail: %+v", res)
	}
	// It goes on as a single appliance's store: its own chain, and CRL numbers upward.
	if _, err := snap.AppendEvent(ctx, ev(3053, "restored")); err != nil {
		t.Fatal(err)
	}
	if n, err := snap.NextCRLNumber(ctx); err != nil || n != 2 {
		t.Fatalf("next CRL number in the snapshot: %v %v; want 2", n, err)
	}
	if res := verifyTrail(t, snap); res.Broken != nil || len(res.Chains) != 2 {
		t.Fatalf("after an event: %+v", res)
	}
}
