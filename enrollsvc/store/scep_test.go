package store

import (
	"context"
	"crypto/sha256"
	"errors"
	"testing"
	"time"
)

func TestEachRevokedAndCRLNumbers(t *testing.T) { eachStoreReopen(t, testEachRevokedAndCRLNumbers) }

func testEachRevokedAndCRLNumbers(t *testing.T, s Store, reopen func() Store) {
	ctx := context.Background()
	var serials []string
	for i := range 5 {
		c := issue(t, s, Certificate{Template: "T", Account: "a", Subject: "CN=a"})
		serials = append(serials, c.Serial)
		if i < 3 {
			if err := s.RevokeCertificate(ctx, c.Serial, i+1, epoch.Add(time.Duration(i)*time.Hour), ev(2200, "revoked")); err != nil {
				t.Fatal(err)
			}
		}
	}
	walk := func(since time.Time) []RevokedEntry {
		var out []RevokedEntry
		if err := s.EachRevoked(ctx, since, func(e RevokedEntry) error { out = append(out, e); return nil }); err != nil {
			t.Fatalf("EachRevoked: %v", err)
		}
		return out
	}
	all := walk(time.Time{})
	if len(all) != 3 {
		t.Fatalf("EachRevoked(all) = %v, want the 3 revoked", all)
	}
	for i, e := range all {
		if e.Serial != serials[i] || e.Reason != i+1 || !e.RevokedAt.Equal(epoch.Add(time.Duration(i)*time.Hour)) {
			t.Errorf("entry %d = %+v, want serial %s reason %d", i, e, serials[i], i+1)
		}
	}
	if d := walk(epoch.Add(30 * time.Minute)); len(d) != 2 || d[0].Serial != serials[1] {
		t.Errorf("EachRevoked(since 30m) = %v, want the last 2", d)
	}
	stop := errors.New("stop")
	if err := s.EachRevoked(ctx, time.Time{}, func(RevokedEntry) error { return stop }); !errors.Is(err, stop) {
		t.Errorf("EachRevoked with fn failing = %v, want its error", err)
	}

	last := int64(0)
	for range 3 {
		n, err := s.NextCRLNumber(ctx)
		if err != nil || n <= last {
			t.Fatalf("NextCRLNumber = %d, %v after %d", n, err, last)
		}
		last = n
	}
	s2 := reopen()
	if n, err := s2.NextCRLNumber(ctx); err != nil || n != last+1 {
		t.Errorf("NextCRLNumber after reopening = %d, %v, want %d", n, err, last+1)
	}
}

func TestSCEPProfilesAndChallenges(t *testing.T) { eachStore(t, testSCEPProfilesAndChallenges) }

func testSCEPProfilesAndChallenges(t *testing.T, s Store) {
	ctx := context.Background()
	h := sha256.Sum256([]byte("static secret"))
	static := SCEPProfile{Name: "printers", Template: "Printer", Account: "PRN1$", AccountSID: "S-1-5-21-1-2-3-1104", Mode: SCEPStatic, ChallengeSHA256: h[:], Created: epoch}
	if err := s.AddSCEPProfile(ctx, static, ev(3000, "profile")); err != nil {
		t.Fatal(err)
	}
	if err := s.AddSCEPProfile(ctx, static, ev(3000, "profile")); !errors.Is(err, ErrConflict) {
		t.Errorf("adding a profile twice = %v, want ErrConflict", err)
	}
	for _, bad := range []SCEPProfile{
		{Name: "x", Template: "T", Mode: SCEPStatic, Created: epoch},                         // static without hash
		{Name: "x", Template: "T", Mode: SCEPOneTime, ChallengeSHA256: h[:], Created: epoch}, // one-time with hash
		{Name: "x", Template: "T", Mode: "magic", Created: epoch},
		{Name: "", Template: "T", Mode: SCEPOneTime, Created: epoch},
	} {
		if err := s.AddSCEPProfile(ctx, bad, ev(3000, "profile")); err == nil {
			t.Errorf("AddSCEPProfile(%+v) succeeded", bad)
		}
	}
	if err := s.AddSCEPProfile(ctx, SCEPProfile{Name: "mdm", Template: "Device", Mode: SCEPOneTime, Created: epoch}, ev(3000, "profile")); err != nil {
		t.Fatal(err)
	}
	ps, err := s.ListSCEPProfiles(ctx)
	if err != nil || len(ps) != 2 || ps[0].Name != "mdm" || ps[1].Name != "printers" || string(ps[1].ChallengeSHA256) != string(h[:]) ||
		ps[1].AccountSID != static.AccountSID || ps[0].AccountSID != "" {
		t.Errorf("ListSCEPProfiles = %+v, %v", ps, err)
	}
	if _, err := s.GetSCEPProfile(ctx, "nope"); !errors.Is(err, ErrNotFound) {
		t.Errorf("GetSCEPProfile(nope) = %v, want ErrNotFound", err)
	}

	one := sha256.Sum256([]byte("one-time"))
	c := SCEPChallenge{SHA256: one[:], Profile: "mdm", Subject: "CN=phone1", Account: "alice", AccountSID: "S-1-5-21-1-2-3-1105", Created: epoch, Expires: epoch.Add(time.Hour)}
	if err := s.AddSCEPChallenge(ctx, c, ev(3000, "challenge")); err != nil {
		t.Fatal(err)
	}
	if err := s.AddSCEPChallenge(ctx, SCEPChallenge{SHA256: h[:], Profile: "printers", Created: epoch, Expires: epoch.Add(time.Hour)}, ev(3000, "c")); !errors.Is(err, ErrConflict) {
		t.Errorf("a one-time challenge for a static profile = %v, want ErrConflict", err)
	}
	if _, err := s.UseSCEPChallenge(ctx, "printers", one[:], epoch); !errors.Is(err, ErrNotFound) {
		t.Errorf("using a challenge of another profile = %v, want ErrNotFound", err)
	}
	if _, err := s.UseSCEPChallenge(ctx, "mdm", one[:], epoch.Add(time.Hour)); !errors.Is(err, ErrConflict) {
		t.Errorf("using an expired challenge = %v, want ErrConflict", err)
	}
	got, err := s.UseSCEPChallenge(ctx, "mdm", one[:], epoch.Add(time.Minute))
	if err != nil || got.Subject != "CN=phone1" || got.Account != "alice" || got.AccountSID != c.AccountSID || !got.UsedAt.Equal(epoch.Add(time.Minute)) {
		t.Errorf("UseSCEPChallenge = %+v, %v", got, err)
	}
	if _, err := s.UseSCEPChallenge(ctx, "mdm", one[:], epoch.Add(2*time.Minute)); !errors.Is(err, ErrConflict) {
		t.Errorf("using a challenge twice = %v, want ErrConflict", err)
	}

	// A transaction is recorded with its request (Request.SCEP), once; the request's transaction
	// is found from the request (an MDM is told about a held request once it is decided).
	if _, err := s.GetSCEPTransaction(ctx, "mdm", "held"); !errors.Is(err, ErrNotFound) {
		t.Errorf("GetSCEPTransaction before = %v", err)
	}
	held := func(tx *SCEPTransaction) Request {
		return Request{State: RequestPending, Template: "PendUser", Requester: "scep:mdm", Account: "dave",
			Submitted: epoch, Updated: epoch, SCEP: tx}
	}
	plain, err := s.CreateRequest(ctx, held(nil), ev(2001, "pending"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.SCEPTransactionOfRequest(ctx, plain); !errors.Is(err, ErrNotFound) {
		t.Errorf("SCEPTransactionOfRequest of a request without one = %v, want ErrNotFound", err)
	}
	tx := &SCEPTransaction{Profile: "mdm", TransactionID: "held", BodySHA256: one[:], Created: epoch}
	id, err := s.CreateRequest(ctx, held(tx), ev(2001, "pending"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateRequest(ctx, held(tx), ev(2001, "pending")); !errors.Is(err, ErrConflict) {
		t.Errorf("a second request with the transaction = %v, want ErrConflict", err)
	}
	if got, err := s.GetSCEPTransaction(ctx, "mdm", "held"); err != nil || string(got.BodySHA256) != string(one[:]) || got.RequestID != id {
		t.Errorf("GetSCEPTransaction = %+v, %v; want request %d", got, err, id)
	}
	if got, err := s.SCEPTransactionOfRequest(ctx, id); err != nil || got.TransactionID != "held" || got.Profile != "mdm" || got.RequestID != id {
		t.Errorf("SCEPTransactionOfRequest = %+v, %v", got, err)
	}
}

func TestSCEPTransactionWithRequest(t *testing.T) { eachStore(t, testSCEPTransactionWithRequest) }

// testSCEPTransactionWithRequest: a request's SCEP transaction is recorded in the request's own
// commit, with its ID; a second request with the same transaction writes nothing at all (no
// request, no serial, no event) and fails with ErrConflict, so that no second certificate is
// signed for one transaction.
func testSCEPTransactionWithRequest(t *testing.T, s Store) {
	ctx := context.Background()
	body := sha256.Sum256([]byte("csr"))
	tx := &SCEPTransaction{Profile: "devices", TransactionID: "T1", BodySHA256: body[:], Created: epoch}
	serial := newSerial(t)
	id, err := s.BeginIssuance(ctx, Request{Template: "Device", Account: "d1", SCEP: tx}, serial, ev(2100, "signing"))
	if err != nil {
		t.Fatal(err)
	}
	if got, err := s.GetSCEPTransaction(ctx, "devices", "T1"); err != nil || got.RequestID != id || string(got.BodySHA256) != string(body[:]) {
		t.Errorf("GetSCEPTransaction = %+v, %v; want request %d", got, err, id)
	}
	if tx.RequestID != 0 {
		t.Errorf("the caller's transaction was changed: %+v", tx)
	}
	// counts is how many requests and events the store holds.
	counts := func() (requests, events int) {
		t.Helper()
		rs, err := s.ListRequests(ctx, RequestFilter{})
		if err != nil {
			t.Fatal(err)
		}
		evs, err := s.ListEvents(ctx, EventFilter{})
		if err != nil {
			t.Fatal(err)
		}
		return len(rs), len(evs)
	}
	reqsBefore, evsBefore := counts()
	other := newSerial(t)
	if _, err := s.BeginIssuance(ctx, Request{Template: "Device", Account: "d1", SCEP: tx}, other, ev(2100, "signing")); !errors.Is(err, ErrTransactionRecorded) {
		t.Errorf("BeginIssuance with a recorded transaction = %v, want ErrTransactionRecorded", err)
	}
	if _, err := s.CreateRequest(ctx, Request{State: RequestDenied, Template: "Device", SCEP: tx}, ev(2002, "refused")); !errors.Is(err, ErrConflict) {
		t.Errorf("CreateRequest with a recorded transaction = %v, want ErrConflict", err)
	}
	reqsAfter, evsAfter := counts()
	if reqsAfter != reqsBefore || evsAfter != evsBefore {
		t.Errorf("the refused requests wrote something: %d -> %d requests, %d -> %d events", reqsBefore, reqsAfter, evsBefore, evsAfter)
	}
	if err := s.ReserveSerial(ctx, other); err != nil {
		t.Errorf("the refused issuance's serial was reserved: %v", err)
	}
	// A request refused by policy keeps its transaction too.
	refused := &SCEPTransaction{Profile: "devices", TransactionID: "T2", BodySHA256: body[:], Created: epoch}
	rid, err := s.CreateRequest(ctx, Request{State: RequestDenied, Template: "Device", SCEP: refused}, ev(2002, "refused"))
	if err != nil {
		t.Fatal(err)
	}
	if got, err := s.SCEPTransactionOfRequest(ctx, rid); err != nil || got.TransactionID != "T2" {
		t.Errorf("SCEPTransactionOfRequest(%d) = %+v, %v", rid, got, err)
	}
	if _, err := s.CreateRequest(ctx, Request{Template: "Device", SCEP: &SCEPTransaction{Profile: "devices", TransactionID: " "}}); err == nil {
		t.Error("a transaction without its ID, hash and time was accepted")
	}

	// A transaction whose request failed (the HSM or the store failed; an interrupted issuance
	// marked failed) is taken over by the next request with the same body: the retry is a new
	// attempt. With another body it is not, nor while its request is pending or refused.
	failing := &SCEPTransaction{Profile: "devices", TransactionID: "T3", BodySHA256: body[:], Created: epoch}
	fid, err := s.BeginIssuance(ctx, Request{Template: "Device", Account: "d1", SCEP: failing}, newSerial(t), ev(2100, "signing"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.BeginIssuance(ctx, Request{Template: "Device", Account: "d1", SCEP: failing}, newSerial(t)); !errors.Is(err, ErrTransactionRecorded) {
		t.Errorf("a pending request's transaction was taken over: %v", err)
	}
	if err := s.SetRequestState(ctx, fid, RequestFailed, "HSM down", ev(2003, "failed")); err != nil {
		t.Fatal(err)
	}
	otherBody := sha256.Sum256([]byte("another csr"))
	if _, err := s.BeginIssuance(ctx, Request{Template: "Device", SCEP: &SCEPTransaction{Profile: "devices", TransactionID: "T3",
		BodySHA256: otherBody[:], Created: epoch}}, newSerial(t)); !errors.Is(err, ErrTransactionRecorded) {
		t.Errorf("a failed request's transaction was taken over with another body: %v", err)
	}
	nid, err := s.BeginIssuance(ctx, Request{Template: "Device", Account: "d1", SCEP: failing}, newSerial(t), ev(2100, "signing"))
	if err != nil {
		t.Fatalf("retrying a failed request's transaction: %v", err)
	}
	if got, err := s.GetSCEPTransaction(ctx, "devices", "T3"); err != nil || got.RequestID != nid || nid == fid {
		t.Errorf("after the retry the transaction = %+v, %v; want request %d", got, err, nid)
	}
	if _, err := s.CreateRequest(ctx, Request{State: RequestDenied, Template: "Device", SCEP: refused}); !errors.Is(err, ErrTransactionRecorded) {
		t.Errorf("a refused request's transaction was taken over: %v", err)
	}
}
