package store

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"
)

func TestMDMJobs(t *testing.T) { eachStore(t, testMDMJobs) }

// testMDMJobs: a job is added once, finished once (a second outcome is a conflict), its first
// collection is recorded once, and at its expiry it is erased with its result.
func testMDMJobs(t *testing.T, s Store) {
	ctx := context.Background()
	js, ok := s.(MDMJobStore)
	if !ok {
		t.Fatal("the store keeps no MDM jobs")
	}
	j := MDMJob{ID: "0123abcd", MDM: "intune", Template: "SMIME", Account: "alice", DeviceID: "dev-1", Delivery: "password",
		Created: epoch, Expires: epoch.Add(time.Hour)}
	if err := js.AddMDMJob(ctx, j, ev(4100, "submitted")); err != nil {
		t.Fatal(err)
	}
	if err := js.AddMDMJob(ctx, j, ev(4100, "submitted")); !errors.Is(err, ErrConflict) {
		t.Errorf("the same job again: %v, want ErrConflict", err)
	}
	if err := js.AddMDMJob(ctx, MDMJob{ID: "x", MDM: "m", Template: "T", Account: "a", Delivery: "clear", Created: epoch, Expires: epoch}, ev(4100, "x")); err == nil {
		t.Error("a job with an unknown delivery was stored")
	}
	got, err := js.GetMDMJob(ctx, j.ID)
	if err != nil || got.State != MDMJobQueued || got.Account != "alice" || got.Result != nil || !got.Collected.IsZero() {
		t.Fatalf("GetMDMJob = %+v, %v; want the queued job without a result", got, err)
	}
	if _, err := js.GetMDMJob(ctx, "nope"); !errors.Is(err, ErrNotFound) {
		t.Errorf("GetMDMJob(unknown) = %v, want ErrNotFound", err)
	}
	done := j
	done.State, done.RequestID, done.Serial, done.Result = MDMJobIssued, 7, "01AB", []byte("encrypted pfx")
	done.Updated, done.Expires = epoch.Add(time.Minute), epoch.Add(2*time.Hour)
	if err := js.FinishMDMJob(ctx, MDMJob{ID: j.ID, State: MDMJobIssued, Updated: epoch, Expires: epoch}, ev(4101, "x")); err == nil {
		t.Error("an issued outcome without a result was stored")
	}
	if err := js.FinishMDMJob(ctx, done, ev(4101, "issued")); err != nil {
		t.Fatal(err)
	}
	again := done
	again.State, again.Result, again.Reason = MDMJobFailed, nil, "late"
	if err := js.FinishMDMJob(ctx, again, ev(4103, "failed")); !errors.Is(err, ErrConflict) {
		t.Errorf("a second outcome: %v, want ErrConflict", err)
	}
	got, err = js.GetMDMJob(ctx, j.ID)
	if err != nil || got.State != MDMJobIssued || !bytes.Equal(got.Result, done.Result) || got.RequestID != 7 || got.Serial != "01AB" ||
		!got.Expires.Equal(done.Expires) {
		t.Fatalf("after finishing: %+v, %v", got, err)
	}
	for i, want := range []bool{true, false} {
		first, err := js.CollectMDMJob(ctx, j.ID, epoch.Add(2*time.Minute), ev(4104, "collected"))
		if err != nil || first != want {
			t.Errorf("collection %d: first = %v, %v; want %v", i+1, first, err, want)
		}
	}
	if gone, err := js.ExpireMDMJobs(ctx, epoch.Add(time.Hour)); err != nil || len(gone) != 0 {
		t.Errorf("ExpireMDMJobs before the expiry = %v, %v; want nothing", gone, err)
	}
	gone, err := js.ExpireMDMJobs(ctx, epoch.Add(2*time.Hour))
	if err != nil || len(gone) != 1 || gone[0].ID != j.ID || gone[0].Result != nil || gone[0].Collected.IsZero() {
		t.Fatalf("ExpireMDMJobs = %+v, %v; want the job, collected, without its result", gone, err)
	}
	if _, err := js.GetMDMJob(ctx, j.ID); !errors.Is(err, ErrNotFound) {
		t.Errorf("the expired job is still there: %v", err)
	}
}

func TestMDMChallengesAndNotifications(t *testing.T) { eachStore(t, testMDMChallengesAndNotifications) }

// testMDMChallengesAndNotifications: an MDM-validated challenge is spent once; notifications are
// due from their time, retried later, and gone once delivered.
func testMDMChallengesAndNotifications(t *testing.T, s Store) {
	ctx := context.Background()
	ss := s.(interface {
		SCEPStoreForTest
		SpendSCEPChallenge(ctx context.Context, profile string, sha []byte, now, expires time.Time) error
		SCEPChallengeSpent(ctx context.Context, sha []byte) (bool, error)
	})
	if err := ss.AddSCEPProfile(ctx, SCEPProfile{Name: "phones", Template: "T", Mode: SCEPOneTime, MDM: "intune", Created: epoch}, ev(3010, "added")); err != nil {
		t.Fatal(err)
	}
	if p, err := ss.GetSCEPProfile(ctx, "phones"); err != nil || p.MDM != "intune" {
		t.Fatalf("GetSCEPProfile = %+v, %v; want MDM intune", p, err)
	}
	if err := ss.AddSCEPProfile(ctx, SCEPProfile{Name: "bad", Template: "T", Mode: SCEPStatic, MDM: "intune", ChallengeSHA256: make([]byte, 32), Created: epoch}, ev(3010, "added")); err == nil {
		t.Error("a static profile validated by an MDM was stored")
	}
	sha := make([]byte, 32)
	sha[0] = 7
	if spent, err := ss.SCEPChallengeSpent(ctx, sha); err != nil || spent {
		t.Fatalf("SCEPChallengeSpent before = %v, %v", spent, err)
	}
	if err := ss.SpendSCEPChallenge(ctx, "phones", sha, epoch, epoch.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if err := ss.SpendSCEPChallenge(ctx, "phones", sha, epoch, epoch.Add(time.Hour)); !errors.Is(err, ErrConflict) {
		t.Errorf("spending again: %v, want ErrConflict", err)
	}
	if spent, err := ss.SCEPChallengeSpent(ctx, sha); err != nil || !spent {
		t.Errorf("SCEPChallengeSpent after = %v, %v", spent, err)
	}

	ns := s.(MDMNotificationStore)
	for i, id := range []string{"b", "a"} {
		if err := ns.AddMDMNotification(ctx, MDMNotification{ID: id, MDM: "intune", Payload: []byte(`{"n":1}`), Created: epoch,
			NextTry: epoch.Add(time.Duration(i) * time.Minute)}); err != nil {
			t.Fatal(err)
		}
	}
	due, err := ns.DueMDMNotifications(ctx, epoch, 10)
	if err != nil || len(due) != 1 || due[0].ID != "b" || string(due[0].Payload) != `{"n":1}` {
		t.Fatalf("due at the start = %+v, %v; want b", due, err)
	}
	if err := ns.RetryMDMNotification(ctx, "b", epoch.Add(5*time.Minute), 1, "500"); err != nil {
		t.Fatal(err)
	}
	due, _ = ns.DueMDMNotifications(ctx, epoch.Add(2*time.Minute), 10)
	if len(due) != 1 || due[0].ID != "a" {
		t.Fatalf("due after 2 minutes = %+v, want a (b waits)", due)
	}
	// Two instances read a as due: the first to claim it sends it, the other does not; it is not
	// due again until the lease ends.
	if ok, err := ns.ClaimMDMNotification(ctx, due[0], epoch.Add(3*time.Minute)); err != nil || !ok {
		t.Errorf("first claim = %v, %v; want claimed", ok, err)
	}
	if ok, err := ns.ClaimMDMNotification(ctx, due[0], epoch.Add(3*time.Minute)); err != nil || ok {
		t.Errorf("second claim of the same read = %v, %v; want refused", ok, err)
	}
	if again, _ := ns.DueMDMNotifications(ctx, epoch.Add(2*time.Minute), 10); len(again) != 0 {
		t.Errorf("due while claimed = %+v, want none", again)
	}
	if err := ns.DeleteMDMNotification(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	due, _ = ns.DueMDMNotifications(ctx, epoch.Add(time.Hour), 10)
	if len(due) != 1 || due[0].ID != "b" || due[0].Attempts != 1 || due[0].LastError != "500" {
		t.Errorf("due after an hour = %+v, want b after one failed attempt", due)
	}
}

// SCEPStoreForTest is the SCEP profile part of the store.
type SCEPStoreForTest interface {
	AddSCEPProfile(ctx context.Context, p SCEPProfile, e Event) error
	GetSCEPProfile(ctx context.Context, name string) (SCEPProfile, error)
}
