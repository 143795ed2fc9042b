package store

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/enrollment-appliance/aeappliance/enrollsvc/store/pgtest"
)

// testClock is a fake clock: each reading advances it by a millisecond, so stored times are
// distinct and ordered without sleeping.
type testClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *testClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(time.Millisecond)
	return c.t
}

// epoch starts the fake clocks. Stores keep microseconds, so it has none below.
var epoch = time.Date(2030, 1, 2, 3, 4, 5, 123456000, time.UTC)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

// backend opens stores of one implementation for the tests every implementation must pass.
type backend struct {
	name string
	// open returns a new, empty store with a fake clock, closed when the test ends, and a function
	// that closes it and opens the same database again.
	open func(t testing.TB) (s Store, reopen func() Store)
}

var backends = []backend{
	{"sqlite", func(t testing.TB) (Store, func() Store) {
		s, path := openTest(t)
		return s, func() Store { s.Close(); return openAt(t, path) }
	}},
	{"postgres", func(t testing.TB) (Store, func() Store) {
		db := pgtest.Shared(t).NewDatabase(t)
		s := openPG(t, db)
		return s, func() Store { s.Close(); return openPG(t, db) }
	}},
}

// eachStore runs test on a new store of each implementation, as subtests named after them.
func eachStore(t *testing.T, test func(t *testing.T, s Store)) {
	eachStoreReopen(t, func(t *testing.T, s Store, _ func() Store) { test(t, s) })
}

// eachStoreReopen is eachStore for tests that reopen the store.
func eachStoreReopen(t *testing.T, test func(t *testing.T, s Store, reopen func() Store)) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			s, reopen := b.open(t)
			test(t, s, reopen)
		})
	}
}

// openTest opens a new store in a temporary directory with a fake clock and closes it when
// the test ends.
func openTest(t testing.TB) (*SQLite, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "store.db")
	return openAt(t, path), path
}

func openAt(t testing.TB, path string) *SQLite {
	t.Helper()
	s, err := Open(context.Background(), path, nil)
	if err != nil {
		t.Fatalf("Open(%s) = %v", path, err)
	}
	c := &testClock{t: epoch}
	s.now = c.now
	t.Cleanup(func() { s.Close() })
	return s
}

// pgConfig is the configuration of the store in db.
func pgConfig(db *pgtest.Database) PGConfig {
	return PGConfig{URL: db.URL, CAFile: db.CAFile, PasswordFile: db.PasswordFile}
}

// openPG opens the PostgreSQL store in db with a fake clock and closes it when the test ends.
func openPG(t testing.TB, db *pgtest.Database) *Postgres {
	t.Helper()
	s, err := OpenPostgres(context.Background(), pgConfig(db), nil)
	if err != nil {
		t.Fatalf("OpenPostgres(%s) = %v", db.URL, err)
	}
	c := &testClock{t: epoch}
	s.now = c.now
	t.Cleanup(func() { s.Close() })
	return s
}

// newSerial returns a random 128-bit serial in canonical form.
func newSerial(t testing.TB) string {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	b[0] |= 0x80
	return new(big.Int).SetBytes(b).Text(16) // as certutil.SerialString
}

// testDER is a stand-in for certificate bytes, different for every serial.
func testDER(serial string) []byte {
	return bytes.Repeat([]byte("der:"+serial+";"), 20)
}

func ev(id int, msg string) Event {
	return Event{ID: id, Category: "Operational", Level: "info", Time: epoch, Message: msg}
}

// issue reserves a serial and commits a certificate for it.
func issue(t testing.TB, s Store, c Certificate) Certificate {
	t.Helper()
	ctx := context.Background()
	if c.Serial == "" {
		c.Serial = newSerial(t)
	}
	if c.DER == nil {
		c.DER = testDER(c.Serial)
	}
	if err := s.ReserveSerial(ctx, c.Serial, ev(2100, "signing")); err != nil {
		t.Fatalf("ReserveSerial(%s) = %v", c.Serial, err)
	}
	if err := s.CommitCertificate(ctx, c, ev(2101, "issued")); err != nil {
		t.Fatalf("CommitCertificate(%s) = %v", c.Serial, err)
	}
	return c
}

func TestRequestRoundTrip(t *testing.T) { eachStore(t, testRequestRoundTrip) }

func testRequestRoundTrip(t *testing.T, s Store) {
	ctx := context.Background()
	submitted := time.Date(2031, 5, 6, 7, 8, 9, 987654321, time.FixedZone("X", 3600))
	in := Request{
		State: RequestPending, Template: "Machine", Requester: "HOST\\pc1$", Account: "pc1$",
		CSR: []byte{0x30, 0x82, 0x01, 0x00}, Submitted: submitted, Reason: "waiting",
	}
	id, err := s.CreateRequest(ctx, in)
	if err != nil {
		t.Fatalf("CreateRequest = %v", err)
	}
	got, err := s.GetRequest(ctx, id)
	if err != nil {
		t.Fatalf("GetRequest(%d) = %v", id, err)
	}
	want := in
	want.ID = id
	want.Submitted = submitted.UTC().Truncate(time.Microsecond) // stores keep microseconds
	want.Updated = want.Submitted
	if !reflect.DeepEqual(got, want) {
		t.Errorf("GetRequest(%d) = %+v, want %+v", id, got, want)
	}
	if got.Submitted.Location() != time.UTC {
		t.Errorf("GetRequest(%d).Submitted location = %v, want UTC", id, got.Submitted.Location())
	}

	// Defaults: empty state is pending, zero times are now.
	id2, err := s.CreateRequest(ctx, Request{Template: "User", Account: "alice"})
	if err != nil {
		t.Fatalf("CreateRequest = %v", err)
	}
	got, err = s.GetRequest(ctx, id2)
	if err != nil {
		t.Fatalf("GetRequest(%d) = %v", id2, err)
	}
	if got.State != RequestPending || got.Submitted.IsZero() || !got.Updated.Equal(got.Submitted) || got.CSR != nil {
		t.Errorf("GetRequest(%d) = %+v, want pending, Submitted=Updated=now, nil CSR", id2, got)
	}
	if id2 <= id {
		t.Errorf("second CreateRequest = %d, want > %d", id2, id)
	}

	if _, err := s.GetRequest(ctx, 999); !errors.Is(err, ErrNotFound) {
		t.Errorf("GetRequest(999) = %v, want ErrNotFound", err)
	}
	if _, err := s.CreateRequest(ctx, Request{State: "approved"}); err == nil {
		t.Errorf("CreateRequest(state approved) = nil, want error")
	}
}

func TestSetRequestState(t *testing.T) { eachStore(t, testSetRequestState) }

func testSetRequestState(t *testing.T, s Store) {
	ctx := context.Background()
	tests := []struct {
		from, to RequestState
		want     error
	}{
		{RequestPending, RequestDenied, nil},
		{RequestPending, RequestFailed, nil},
		{RequestPending, RequestPending, nil},
		{RequestDenied, RequestPending, ErrConflict},
		{RequestDenied, RequestFailed, ErrConflict},
		{RequestFailed, RequestDenied, ErrConflict},
		{RequestIssued, RequestDenied, ErrConflict},
	}
	for _, tt := range tests {
		id, err := s.CreateRequest(ctx, Request{State: tt.from, Template: "T", Account: "a"})
		if err != nil {
			t.Fatalf("CreateRequest(%s) = %v", tt.from, err)
		}
		before, _ := s.GetRequest(ctx, id)
		err = s.SetRequestState(ctx, id, tt.to, "because")
		if !errors.Is(err, tt.want) || (tt.want == nil) != (err == nil) {
			t.Errorf("SetRequestState(%s→%s) = %v, want %v", tt.from, tt.to, err, tt.want)
		}
		got, err := s.GetRequest(ctx, id)
		if err != nil {
			t.Fatalf("GetRequest(%d) = %v", id, err)
		}
		wantState, wantReason := tt.from, ""
		if tt.want == nil {
			wantState, wantReason = tt.to, "because"
		}
		if got.State != wantState || got.Reason != wantReason {
			t.Errorf("after SetRequestState(%s→%s): state %s reason %q, want %s %q", tt.from, tt.to, got.State, got.Reason, wantState, wantReason)
		}
		if tt.want == nil && !got.Updated.After(before.Updated) {
			t.Errorf("after SetRequestState(%s→%s): Updated %v, want after %v", tt.from, tt.to, got.Updated, before.Updated)
		}
	}
	if err := s.SetRequestState(ctx, 12345, RequestDenied, ""); !errors.Is(err, ErrNotFound) {
		t.Errorf("SetRequestState(missing) = %v, want ErrNotFound", err)
	}
	id, _ := s.CreateRequest(ctx, Request{})
	for _, st := range []RequestState{RequestIssued, "bogus", ""} {
		if err := s.SetRequestState(ctx, id, st, ""); err == nil {
			t.Errorf("SetRequestState(%q) = nil, want error", st)
		}
	}
}

func TestCertificateRoundTrip(t *testing.T) { eachStore(t, testCertificateRoundTrip) }

func testCertificateRoundTrip(t *testing.T, s Store) {
	ctx := context.Background()
	reqID, err := s.CreateRequest(ctx, Request{Template: "Web", Account: "www"})
	if err != nil {
		t.Fatal(err)
	}
	in := Certificate{
		Serial: newSerial(t), Template: "Web", Account: "www", Subject: "CN=www",
		NotBefore: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC),
		NotAfter:  time.Date(9999, 12, 31, 23, 59, 59, 0, time.UTC), // RFC 5280 "no expiry"
		Status:    CertValid, RequestID: reqID, IssuedAt: epoch.Add(time.Nanosecond),
	}
	in = issue(t, s, in)
	got, err := s.GetCertificate(ctx, in.Serial)
	if err != nil {
		t.Fatalf("GetCertificate(%s) = %v", in.Serial, err)
	}
	in.IssuedAt = epoch // the nanosecond is not kept
	if !reflect.DeepEqual(got, in) {
		t.Errorf("GetCertificate(%s) = %+v, want %+v", in.Serial, got, in)
	}
	r, err := s.GetRequest(ctx, reqID)
	if err != nil {
		t.Fatal(err)
	}
	if r.State != RequestIssued || r.Serial != in.Serial {
		t.Errorf("request after CommitCertificate = %s serial %q, want issued %q", r.State, r.Serial, in.Serial)
	}

	// A revoked one with defaults.
	rev := issue(t, s, Certificate{Status: CertRevoked, RevokedAt: epoch, RevocationReason: 4})
	got, err = s.GetCertificate(ctx, rev.Serial)
	if err != nil {
		t.Fatal(err)
	}
	if got.Status != CertRevoked || !got.RevokedAt.Equal(epoch) || got.RevocationReason != 4 || got.IssuedAt.IsZero() || got.RequestID != 0 {
		t.Errorf("GetCertificate(revoked) = %+v", got)
	}
	if _, err := s.GetCertificate(ctx, "abc"); !errors.Is(err, ErrNotFound) {
		t.Errorf("GetCertificate(missing) = %v, want ErrNotFound", err)
	}
	if n, err := s.CountCertificates(ctx); n != 2 || err != nil {
		t.Errorf("CountCertificates() = %d, %v, want 2", n, err)
	}
}

func TestReserveSerialErrors(t *testing.T) { eachStore(t, testReserveSerialErrors) }

func testReserveSerialErrors(t *testing.T, s Store) {
	ctx := context.Background()
	serial := newSerial(t)
	if err := s.ReserveSerial(ctx, serial, ev(1, "first")); err != nil {
		t.Fatalf("ReserveSerial = %v", err)
	}
	if err := s.ReserveSerial(ctx, serial, ev(2, "second")); !errors.Is(err, ErrSerialUsed) {
		t.Errorf("ReserveSerial(again) = %v, want ErrSerialUsed", err)
	}
	events, err := s.ListEvents(ctx, EventFilter{})
	if err != nil {
		t.Fatal(err)
	}
	if len(events) != 1 || events[0].Message != "first" {
		t.Errorf("events after a refused ReserveSerial = %+v, want only the first", events)
	}
	for _, bad := range []string{"", "0", "0a", "AB", "xyz", "-1", "a b", string(make([]byte, 41))} {
		if err := s.ReserveSerial(ctx, bad, ev(1, "")); err == nil || errors.Is(err, ErrSerialUsed) {
			t.Errorf("ReserveSerial(%q) = %v, want an invalid-serial error", bad, err)
		}
	}
}

func TestCommitCertificateErrors(t *testing.T) { eachStore(t, testCommitCertificateErrors) }

func testCommitCertificateErrors(t *testing.T, s Store) {
	ctx := context.Background()
	issuedReq, _ := s.CreateRequest(ctx, Request{})
	issued := issue(t, s, Certificate{RequestID: issuedReq})
	deniedReq, _ := s.CreateRequest(ctx, Request{State: RequestDenied})

	tests := []struct {
		name    string
		reserve bool
		c       Certificate
		want    error // nil: just any error
	}{
		{"unreserved serial", false, Certificate{}, ErrConflict},
		{"stored twice", false, Certificate{Serial: issued.Serial}, ErrSerialUsed},
		{"missing request", true, Certificate{RequestID: 4242}, ErrNotFound},
		{"request not pending", true, Certificate{RequestID: deniedReq}, ErrConflict},
		{"request already issued", true, Certificate{RequestID: issuedReq}, ErrConflict},
		{"empty DER", true, Certificate{DER: []byte{}}, nil},
		{"bad status", true, Certificate{Status: "expired"}, nil},
		{"bad serial", false, Certificate{Serial: "00ff"}, nil},
	}
	for _, tt := range tests {
		c := tt.c
		if c.Serial == "" {
			c.Serial = newSerial(t)
		}
		if c.DER == nil {
			c.DER = testDER(c.Serial)
		}
		if tt.reserve {
			if err := s.ReserveSerial(ctx, c.Serial, ev(1, "")); err != nil {
				t.Fatal(err)
			}
		}
		before, _ := s.ListEvents(ctx, EventFilter{Limit: 1000})
		err := s.CommitCertificate(ctx, c, ev(2, tt.name))
		if err == nil || (tt.want != nil && !errors.Is(err, tt.want)) {
			t.Errorf("CommitCertificate(%s) = %v, want %v", tt.name, err, tt.want)
		}
		after, _ := s.ListEvents(ctx, EventFilter{Limit: 1000})
		if len(after) != len(before) {
			t.Errorf("CommitCertificate(%s) failed but wrote %d events", tt.name, len(after)-len(before))
		}
		if c.Serial != issued.Serial {
			if _, err := s.GetCertificate(ctx, c.Serial); !errors.Is(err, ErrNotFound) {
				t.Errorf("CommitCertificate(%s) failed but GetCertificate = %v, want ErrNotFound", tt.name, err)
			}
		}
	}
	for _, id := range []int64{deniedReq, issuedReq} {
		r, _ := s.GetRequest(ctx, id)
		if id == deniedReq && (r.State != RequestDenied || r.Serial != "") {
			t.Errorf("denied request after failed commits = %s %q", r.State, r.Serial)
		}
		if id == issuedReq && r.Serial != issued.Serial {
			t.Errorf("issued request serial = %q, want %q", r.Serial, issued.Serial)
		}
	}
	if n, _ := s.CountCertificates(ctx); n != 1 {
		t.Errorf("CountCertificates() = %d, want 1", n)
	}
}

func TestEvents(t *testing.T) { eachStore(t, testEvents) }

func testEvents(t *testing.T, s Store) {
	ctx := context.Background()
	large := int64(1) << 60
	in := []Event{
		{ID: 1000, Category: "Operational", Level: "info", Time: epoch, Message: "started"},
		{ID: 3001, Category: "Admin", Level: "warning", Time: epoch.Add(time.Second), Message: "auth failed",
			Fields: map[string]any{"user": "bob", "n": large, "ok": false, "list": []any{"a"}}},
		{ID: 1000, Category: "Operational", Level: "info", Message: "again", Fields: map[string]any{}},
	}
	var seqs []int64
	for _, e := range in {
		seq, err := s.AppendEvent(ctx, e)
		if err != nil {
			t.Fatalf("AppendEvent(%v) = %v", e, err)
		}
		if len(seqs) > 0 && seq <= seqs[len(seqs)-1] {
			t.Errorf("AppendEvent seq = %d after %d, want increasing", seq, seqs[len(seqs)-1])
		}
		seqs = append(seqs, seq)
	}
	all, err := s.ListEvents(ctx, EventFilter{})
	if err != nil || len(all) != 3 {
		t.Fatalf("ListEvents() = %d events, %v, want 3", len(all), err)
	}
	if all[0].Fields != nil {
		t.Errorf("event without fields: Fields = %#v, want nil", all[0].Fields)
	}
	if all[2].Fields == nil || len(all[2].Fields) != 0 {
		t.Errorf("event with empty fields: Fields = %#v, want empty map", all[2].Fields)
	}
	f := all[1].Fields
	if f["user"] != "bob" || f["ok"] != false || fmt.Sprint(f["n"]) != fmt.Sprint(large) || !reflect.DeepEqual(f["list"], []any{"a"}) {
		t.Errorf("event fields = %#v, want user bob, ok false, n %d, list [a]", f, large)
	}
	if all[1].Seq != seqs[1] || all[1].ID != 3001 || all[1].Category != "Admin" || all[1].Level != "warning" ||
		!all[1].Time.Equal(epoch.Add(time.Second)) || all[1].Message != "auth failed" {
		t.Errorf("ListEvents()[1] = %+v, want %+v", all[1], in[1])
	}
	if all[2].Time.IsZero() {
		t.Errorf("event appended with zero Time: stored Time is zero, want now")
	}

	tests := []struct {
		f    EventFilter
		want []int64
	}{
		{EventFilter{ID: 1000}, []int64{seqs[0], seqs[2]}},
		{EventFilter{Category: "Admin"}, []int64{seqs[1]}},
		{EventFilter{AfterSeq: seqs[0]}, []int64{seqs[1], seqs[2]}},
		{EventFilter{AfterSeq: seqs[0], ID: 1000}, []int64{seqs[2]}},
		{EventFilter{Limit: 2}, []int64{seqs[0], seqs[1]}},
		{EventFilter{ID: 9}, nil},
	}
	for _, tt := range tests {
		got, err := s.ListEvents(ctx, tt.f)
		if err != nil {
			t.Errorf("ListEvents(%+v) = %v", tt.f, err)
			continue
		}
		var gotSeqs []int64
		for _, e := range got {
			gotSeqs = append(gotSeqs, e.Seq)
		}
		if !reflect.DeepEqual(gotSeqs, tt.want) {
			t.Errorf("ListEvents(%+v) = seqs %v, want %v", tt.f, gotSeqs, tt.want)
		}
	}
	for _, f := range []EventFilter{{Limit: -1}, {AfterSeq: -1}, {ID: -5}} {
		if _, err := s.ListEvents(ctx, f); err == nil {
			t.Errorf("ListEvents(%+v) = nil error, want error", f)
		}
	}
	if _, err := s.AppendEvent(ctx, Event{Fields: map[string]any{"f": func() {}}}); err == nil {
		t.Errorf("AppendEvent(unencodable fields) = nil, want error")
	}
}

func TestListRequests(t *testing.T) { eachStore(t, testListRequests) }

func testListRequests(t *testing.T, s Store) {
	ctx := context.Background()
	var ids []int64
	for i := range 250 {
		r := Request{Template: "T", Account: fmt.Sprintf("acct%d", i%3)}
		if i%5 == 0 {
			r.State = RequestDenied
		}
		id, err := s.CreateRequest(ctx, r)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	count := func(f RequestFilter) (n int, last int64) {
		got, err := s.ListRequests(ctx, f)
		if err != nil {
			t.Fatalf("ListRequests(%+v) = %v", f, err)
		}
		for i, r := range got {
			if i > 0 && r.ID <= got[i-1].ID {
				t.Errorf("ListRequests(%+v) not ordered by ID", f)
			}
			if (f.State != "" && r.State != f.State) || (f.Account != "" && r.Account != f.Account) || r.ID <= f.AfterID {
				t.Errorf("ListRequests(%+v) returned %+v", f, r)
			}
		}
		if len(got) > 0 {
			last = got[len(got)-1].ID
		}
		return len(got), last
	}
	tests := []struct {
		f    RequestFilter
		want int
	}{
		{RequestFilter{}, 100},
		{RequestFilter{Limit: 5000}, 250},
		{RequestFilter{Limit: 7}, 7},
		{RequestFilter{State: RequestDenied, Limit: 1000}, 50},
		{RequestFilter{State: RequestPending, Limit: 1000}, 200},
		{RequestFilter{Account: "acct1", Limit: 1000}, 83},
		{RequestFilter{Account: "acct1", State: RequestDenied, Limit: 1000}, 16},
		{RequestFilter{AfterID: ids[239]}, 10},
		{RequestFilter{State: RequestIssued}, 0},
	}
	for _, tt := range tests {
		if n, _ := count(tt.f); n != tt.want {
			t.Errorf("ListRequests(%+v) = %d requests, want %d", tt.f, n, tt.want)
		}
	}
	// Paging visits every request once.
	seen, after := 0, int64(0)
	for {
		n, last := count(RequestFilter{AfterID: after, Limit: 30})
		if n == 0 {
			break
		}
		seen, after = seen+n, last
	}
	if seen != 250 {
		t.Errorf("paging ListRequests by 30 saw %d requests, want 250", seen)
	}
	for _, f := range []RequestFilter{{Limit: -1}, {State: "approved"}, {AfterID: -1}} {
		if _, err := s.ListRequests(ctx, f); err == nil {
			t.Errorf("ListRequests(%+v) = nil error, want error", f)
		}
	}
}

func TestListCertificates(t *testing.T) { eachStore(t, testListCertificates) }

func testListCertificates(t *testing.T, s Store) {
	ctx := context.Background()
	for i := range 120 {
		c := Certificate{Template: []string{"Web", "User"}[i%2], Account: fmt.Sprintf("a%d", i%4)}
		if i%10 == 0 {
			c.Status, c.RevokedAt, c.RevocationReason = CertRevoked, epoch, 1
		}
		issue(t, s, c)
	}
	tests := []struct {
		f    CertFilter
		want int
	}{
		{CertFilter{}, 100},
		{CertFilter{Limit: 200000}, 120},
		{CertFilter{Offset: 100}, 20},
		{CertFilter{Offset: 500}, 0},
		{CertFilter{Template: "Web", Limit: 1000}, 60},
		{CertFilter{Account: "a1", Limit: 1000}, 30},
		{CertFilter{Template: "Web", Account: "a1", Limit: 1000}, 0},
		{CertFilter{Template: "Web", Account: "a2", Limit: 1000}, 30},
		{CertFilter{Status: CertRevoked}, 12},
		{CertFilter{Status: CertValid, Limit: 1000}, 108},
		{CertFilter{Status: CertRevoked, Template: "Web", Limit: 5}, 5},
	}
	for _, tt := range tests {
		got, err := s.ListCertificates(ctx, tt.f)
		if err != nil {
			t.Errorf("ListCertificates(%+v) = %v", tt.f, err)
			continue
		}
		if len(got) != tt.want {
			t.Errorf("ListCertificates(%+v) = %d certificates, want %d", tt.f, len(got), tt.want)
		}
		for i, c := range got {
			if (tt.f.Template != "" && c.Template != tt.f.Template) || (tt.f.Account != "" && c.Account != tt.f.Account) ||
				(tt.f.Status != "" && c.Status != tt.f.Status) {
				t.Errorf("ListCertificates(%+v) returned %s %s %s", tt.f, c.Template, c.Account, c.Status)
			}
			if i > 0 && !got[i-1].IssuedAt.Before(c.IssuedAt) {
				t.Errorf("ListCertificates(%+v) not ordered by IssuedAt", tt.f)
			}
			if !bytes.Equal(c.DER, testDER(c.Serial)) {
				t.Errorf("ListCertificates(%+v): DER of %s differs", tt.f, c.Serial)
			}
		}
	}
	// Paging by offset visits every certificate once.
	seen := map[string]bool{}
	for off := 0; ; off += 25 {
		got, err := s.ListCertificates(ctx, CertFilter{Limit: 25, Offset: off})
		if err != nil {
			t.Fatal(err)
		}
		if len(got) == 0 {
			break
		}
		for _, c := range got {
			seen[c.Serial] = true
		}
	}
	if len(seen) != 120 {
		t.Errorf("paging ListCertificates by 25 saw %d certificates, want 120", len(seen))
	}
	for _, f := range []CertFilter{{Limit: -1}, {Offset: -1}, {Status: "expired"}} {
		if _, err := s.ListCertificates(ctx, f); err == nil {
			t.Errorf("ListCertificates(%+v) = nil error, want error", f)
		}
	}
}

func TestClosed(t *testing.T) { eachStore(t, testClosed) }

func testClosed(t *testing.T, s Store) {
	ctx := context.Background()
	if err := s.Ping(ctx); err != nil {
		t.Fatalf("Ping() = %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close() = %v", err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("Close() again = %v, want nil", err)
	}
	calls := map[string]error{
		"Ping":              s.Ping(ctx),
		"ReserveSerial":     s.ReserveSerial(ctx, "abc", Event{}),
		"CommitCertificate": s.CommitCertificate(ctx, Certificate{Serial: "abc", DER: []byte{1}}, Event{}),
		"SetRequestState":   s.SetRequestState(ctx, 1, RequestDenied, ""),
	}
	_, calls["CreateRequest"] = s.CreateRequest(ctx, Request{})
	_, calls["GetRequest"] = s.GetRequest(ctx, 1)
	_, calls["ListRequests"] = s.ListRequests(ctx, RequestFilter{})
	_, calls["GetCertificate"] = s.GetCertificate(ctx, "abc")
	_, calls["ListCertificates"] = s.ListCertificates(ctx, CertFilter{})
	_, calls["CountCertificates"] = s.CountCertificates(ctx)
	_, calls["AppendEvent"] = s.AppendEvent(ctx, Event{})
	_, calls["ListEvents"] = s.ListEvents(ctx, EventFilter{})
	for name, err := range calls {
		if !errors.Is(err, ErrClosed) {
			t.Errorf("%s after Close = %v, want ErrClosed", name, err)
		}
	}
}

func TestCheckSerial(t *testing.T) {
	tests := []struct {
		serial string
		ok     bool
	}{
		{"1", true},
		{"abc", true},
		{new(big.Int).SetBytes([]byte{0x00, 0x0f, 0xff}).Text(16), true},
		{strings.Repeat("f", 40), true},
		{strings.Repeat("f", 41), false},
		{"", false},
		{"0", false},
		{"0abc", false},
		{"ABC", false},
		{"ab:cd", false},
		{" ab", false},
	}
	for _, tt := range tests {
		if err := checkSerial(tt.serial); (err == nil) != tt.ok {
			t.Errorf("checkSerial(%q) = %v, want ok %v", tt.serial, err, tt.ok)
		}
	}
}

func TestBeginIssuance(t *testing.T) { eachStore(t, testBeginIssuance) }

func testBeginIssuance(t *testing.T, s Store) {
	ctx := context.Background()
	serial := newSerial(t)
	id, err := s.BeginIssuance(ctx, Request{Template: "Machine", Account: "host1$", CSR: []byte{1, 2}, Decision: []byte(`{"subject":"CN=host1"}`)}, serial, ev(2100, "signing"))
	if err != nil || id == 0 {
		t.Fatalf("BeginIssuance = %d, %v", id, err)
	}
	r, err := s.GetRequest(ctx, id)
	if err != nil || r.State != RequestPending || r.Account != "host1$" || string(r.Decision) != `{"subject":"CN=host1"}` {
		t.Errorf("request = %+v, %v; want a pending request for host1$ with its decision", r, err)
	}
	evs, err := s.ListEvents(ctx, EventFilter{ID: 2100})
	if err != nil || len(evs) != 1 || fmt.Sprint(evs[0].Fields["request_id"]) != fmt.Sprint(id) {
		t.Fatalf("events = %+v, %v; want one 2100 with request_id %d", evs, err, id)
	}
	// The serial is reserved: committing a certificate under it works, reusing it does not.
	issueAfterBegin := Certificate{Serial: serial, DER: testDER(serial), Subject: "CN=host1", RequestID: id,
		NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour)}
	if err := s.CommitCertificate(ctx, issueAfterBegin, ev(2101, "issued")); err != nil {
		t.Fatalf("CommitCertificate after BeginIssuance = %v", err)
	}

	// A used serial: nothing at all is written, not even the request.
	before, _ := s.ListRequests(ctx, RequestFilter{})
	if _, err := s.BeginIssuance(ctx, Request{Account: "other"}, serial, ev(2100, "again")); !errors.Is(err, ErrSerialUsed) {
		t.Errorf("BeginIssuance(used serial) = %v, want ErrSerialUsed", err)
	}
	after, _ := s.ListRequests(ctx, RequestFilter{})
	if len(after) != len(before) {
		t.Errorf("requests %d after a refused BeginIssuance, want %d", len(after), len(before))
	}
	if evs, _ := s.ListEvents(ctx, EventFilter{ID: 2100}); len(evs) != 1 {
		t.Errorf("2100 events = %d after a refused BeginIssuance, want 1", len(evs))
	}
	if _, err := s.BeginIssuance(ctx, Request{State: RequestIssued}, newSerial(t), ev(2100, "")); err == nil {
		t.Error("BeginIssuance(state issued) = nil error, want one")
	}
}

func TestRevokeCertificate(t *testing.T) { eachStore(t, testRevokeCertificate) }

func testRevokeCertificate(t *testing.T, s Store) {
	ctx := context.Background()
	c := issue(t, s, Certificate{Serial: newSerial(t), Subject: "CN=x", NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour)})
	at := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	if err := s.RevokeCertificate(ctx, c.Serial, 1, at, ev(2200, "revoked")); err != nil {
		t.Fatal(err)
	}
	got, err := s.GetCertificate(ctx, c.Serial)
	if err != nil || got.Status != CertRevoked || !got.RevokedAt.Equal(at) || got.RevocationReason != 1 {
		t.Errorf("after RevokeCertificate = %+v, %v; want revoked at %v, reason 1", got, err, at)
	}
	if err := s.RevokeCertificate(ctx, c.Serial, 4, at.Add(time.Hour), ev(2200, "again")); !errors.Is(err, ErrConflict) {
		t.Errorf("second RevokeCertificate = %v, want ErrConflict", err)
	}
	if again, _ := s.GetCertificate(ctx, c.Serial); again.RevocationReason != 1 || !again.RevokedAt.Equal(at) {
		t.Errorf("a refused revocation changed time or reason: %+v", again)
	}
	if err := s.RevokeCertificate(ctx, newSerial(t), 0, at, ev(2200, "")); !errors.Is(err, ErrNotFound) {
		t.Errorf("RevokeCertificate(unknown) = %v, want ErrNotFound", err)
	}
	if err := s.RevokeCertificate(ctx, c.Serial, 7, at, ev(2200, "")); err == nil {
		t.Error("RevokeCertificate with reason 7 (unused) succeeded")
	}
	if evs, _ := s.ListEvents(ctx, EventFilter{ID: 2200}); len(evs) != 1 {
		t.Errorf("2200 events = %d, want 1 (refused revocations write none)", len(evs))
	}
}

// TestNewestEvents: Newest gives the last events that match, oldest first.
func TestNewestEvents(t *testing.T) { eachStore(t, testNewestEvents) }

func testNewestEvents(t *testing.T, s Store) {
	ctx := context.Background()
	for i := 1; i <= 10; i++ {
		e := ev(i%2+1, fmt.Sprintf("event %d", i))
		if _, err := s.AppendEvent(ctx, e); err != nil {
			t.Fatal(err)
		}
	}
	got, err := s.ListEvents(ctx, EventFilter{Limit: 3, Newest: true})
	if err != nil || len(got) != 3 || got[0].Message != "event 8" || got[2].Message != "event 10" {
		t.Errorf("newest 3 = %+v, %v; want events 8, 9, 10", got, err)
	}
	got, err = s.ListEvents(ctx, EventFilter{Limit: 2, Newest: true, ID: 2})
	if err != nil || len(got) != 2 || got[0].Message != "event 7" || got[1].Message != "event 9" {
		t.Errorf("newest 2 with id 2 = %+v, %v; want events 7 and 9", got, err)
	}
	if got, _ := s.ListEvents(ctx, EventFilter{Limit: 2}); len(got) != 2 || got[0].Message != "event 1" {
		t.Errorf("first 2 = %+v", got)
	}
}

// TestTextRefused: both stores refuse strings that are not UTF-8 or hold NUL (PostgreSQL cannot
// keep them in text) with an error, and write nothing.
func TestTextRefused(t *testing.T) { eachStore(t, testTextRefused) }

func testTextRefused(t *testing.T, s Store) {
	ctx := context.Background()
	for _, bad := range []string{"a\x00b", "\xff\xfe", "ok\xc3"} {
		if _, err := s.CreateRequest(ctx, Request{Template: "T", Account: "a", Reason: bad}); err == nil || !strings.Contains(err.Error(), "UTF-8") {
			t.Errorf("CreateRequest(reason %q) = %v, want a UTF-8 error", bad, err)
		}
		if _, err := s.AppendEvent(ctx, Event{ID: 1, Message: bad}); err == nil {
			t.Errorf("AppendEvent(message %q) = nil error", bad)
		}
	}
	if list, err := s.ListRequests(ctx, RequestFilter{}); err != nil || len(list) != 0 {
		t.Errorf("requests after refusals = %v, %v; want none", list, err)
	}
	// Inside event fields, JSON escapes whatever a string holds.
	if _, err := s.AppendEvent(ctx, Event{ID: 1, Fields: map[string]any{"subject": "a\x00b"}}); err != nil {
		t.Errorf("AppendEvent(field with NUL) = %v", err)
	}
	evs, err := s.ListEvents(ctx, EventFilter{})
	if err != nil || len(evs) != 1 || evs[0].Fields["subject"] != "a\x00b" {
		t.Errorf("ListEvents() = %+v, %v; want the one event with its field intact", evs, err)
	}
}
