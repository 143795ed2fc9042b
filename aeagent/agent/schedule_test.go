package agent

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/enrollment-appliance/aeappliance/aeagent/store"
)

func TestNextPulse(t *testing.T) {
	h := time.Hour
	for _, c := range []struct {
		interval, jitter time.Duration
		nextUpdate       int
		failed           bool
		min, max         time.Duration
	}{
		{8 * h, 0, 0, false, 8 * h, 8 * h},
		{8 * h, 30 * time.Minute, 0, false, 8 * h, 8*h + 30*time.Minute},
		{8 * h, 30 * time.Minute, 2, false, 2 * h, 2 * h}, // the policy asks for sooner
		{8 * h, 0, 24, false, 8 * h, 8 * h},               // but never later than the interval
		{8 * h, 0, 0, true, RetryAfterFailure, RetryAfterFailure},
		{10 * time.Minute, 0, 0, true, 10 * time.Minute, 10 * time.Minute},
	} {
		for range 50 {
			if got := NextPulse(c.interval, c.jitter, c.nextUpdate, c.failed); got < c.min || got > c.max {
				t.Fatalf("NextPulse(%v, %v, %d, %v) = %v, want within [%v, %v]", c.interval, c.jitter, c.nextUpdate, c.failed, got, c.min, c.max)
			}
		}
	}
}

// Run passes at start and again when woken, records each pass, and ends with its context. The
// policy server is down here, so each pass fails and is recorded as failed.
func TestRun(t *testing.T) {
	dir := t.TempDir()
	pw := filepath.Join(dir, "pw")
	os.WriteFile(pw, []byte("x"), 0o600)
	a, err := New(Config{Server: "https://localhost:1/ADPolicyProvider_CEP_UsernamePassword/service.svc/CEP", Auth: AuthPassword,
		User: "nobody@example.test", PasswordFile: pw, Store: filepath.Join(dir, "store"), Context: ContextUser}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	wake := make(chan struct{})
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx, wake) }()
	passes := func() *Status {
		for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
			if st, err := a.Status(ctx); err == nil && st.LastPass != nil {
				return st
			}
		}
		t.Fatal("no pass was recorded")
		return nil
	}
	first := passes()
	if first.LastPass.OK || first.LastPass.Error == "" {
		t.Errorf("first pass = %+v, want a failure (server down) with its reason", first.LastPass)
	}
	wake <- struct{}{} // Run takes it only once it waits for the next pass
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if st := passes(); st.LastPass.Finished.After(first.LastPass.Finished) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("waking Run did not start a pass")
		}
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("Run = %v, want context.Canceled", err)
	}
}

// A call waits while another process (here: another open Store) holds the store, instead of
// failing: `aeagent status` during a resident run's pass.
func TestWaitsForTheStoreLock(t *testing.T) {
	dir := t.TempDir()
	pw := filepath.Join(dir, "pw")
	os.WriteFile(pw, []byte("x"), 0o600)
	a, err := New(Config{Server: "https://localhost:1/CEP", Auth: AuthPassword, User: "u@example.test", PasswordFile: pw,
		Store: filepath.Join(dir, "store"), Context: ContextUser}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	held, err := store.Open(filepath.Join(dir, "store"))
	if err != nil {
		t.Fatal(err)
	}
	released := make(chan time.Time, 1)
	go func() {
		time.Sleep(300 * time.Millisecond)
		released <- time.Now()
		held.Close()
	}()
	_, err = a.Status(context.Background())
	returned := time.Now()
	if err != nil {
		t.Fatalf("Status while the store was held = %v, want it to wait and succeed", err)
	}
	if at := <-released; returned.Before(at) {
		t.Error("Status returned before the lock was released")
	}
}
