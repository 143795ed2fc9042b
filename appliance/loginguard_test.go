package appliance

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

// Failed console logins back off exponentially up to a cap, the count survives a restart (a new
// guard on the same directory), a corrupted record is treated as the worst case, and a login
// clears it.
func TestLoginGuardBacksOff(t *testing.T) {
	dir := t.TempDir()
	now := time.Date(2026, 12, 5, 8, 0, 0, 0, time.UTC)
	g := loginGuard{dir: dir, now: func() time.Time { return now }}
	if w := g.wait(); w != 0 {
		t.Fatalf("wait before any failure = %s", w)
	}
	var delays []time.Duration
	for range 12 {
		_, d, err := g.failed()
		if err != nil {
			t.Fatal(err)
		}
		delays = append(delays, d)
		if w := g.wait(); w != d {
			t.Fatalf("wait right after a failure = %s, want %s", w, d)
		}
		now = now.Add(d) // the guesser waits it out
		if w := g.wait(); w != 0 {
			t.Fatalf("wait after waiting = %s", w)
		}
	}
	want := []time.Duration{2 * time.Second, 4 * time.Second, 8 * time.Second, 16 * time.Second, 32 * time.Second,
		64 * time.Second, 128 * time.Second, 256 * time.Second, 512 * time.Second, LoginBackoffMax, LoginBackoffMax, LoginBackoffMax}
	for i := range want {
		if delays[i] != want[i] {
			t.Fatalf("delays = %v, want %v", delays, want)
		}
	}
	// A restart does not forget.
	n, _, _ := loginGuard{dir: dir, now: g.now}.failed()
	if n != 13 {
		t.Errorf("failures after a restart = %d, want 13", n)
	}
	if err := os.WriteFile(filepath.Join(dir, loginFailsFile), []byte("{garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	if w := g.wait(); w != LoginBackoffMax {
		t.Errorf("wait with a corrupted record = %s, want the maximum %s", w, LoginBackoffMax)
	}
	if err := g.succeeded(); err != nil {
		t.Fatal(err)
	}
	if w := g.wait(); w != 0 {
		t.Errorf("wait after a login = %s", w)
	}
	if n, d, _ := g.failed(); n != 1 || d != LoginBackoff {
		t.Errorf("first failure after a login = %d, %s; want 1, %s", n, d, LoginBackoff)
	}
}
