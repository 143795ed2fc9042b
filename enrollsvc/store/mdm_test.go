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
