package ldap

import (
	"testing"
	"time"
)

func TestParseLockoutPolicy(t *testing.T) {
	p, err := parseLockoutPolicy("5", "-18000000000")
	if err != nil || p.Threshold != 5 || p.Window != 30*time.Minute {
		t.Errorf("parseLockoutPolicy(5, 30 min) = %+v, %v", p, err)
	}
	if p, err := parseLockoutPolicy("", ""); err != nil || p != (LockoutPolicy{}) {
		t.Errorf("parseLockoutPolicy(absent) = %+v, %v; want no lockout", p, err)
	}
	for _, bad := range [][2]string{{"x", "0"}, {"-1", "0"}, {"3", "soon"}} {
		if _, err := parseLockoutPolicy(bad[0], bad[1]); err == nil {
			t.Errorf("parseLockoutPolicy(%q, %q) = nil error", bad[0], bad[1])
		}
	}
}

// The guard passes threshold-margin wrong passwords, never the threshold, and at least one
// where that leaves one to the user; the configured cap without a threshold.
func TestGuardLimits(t *testing.T) {
	g := NewPasswordGuard(nil, GuardOptions{Margin: 2, NoLockoutCap: 10, NoLockoutWindow: 30 * time.Minute})
	for _, tc := range []struct {
		p      LockoutPolicy
		max    int
		window time.Duration
	}{
		{LockoutPolicy{Threshold: 5, Window: 30 * time.Minute}, 3, 30 * time.Minute},
		{LockoutPolicy{Threshold: 3, Window: time.Hour}, 1, time.Hour},
		{LockoutPolicy{Threshold: 2, Window: time.Hour}, 1, time.Hour},
		{LockoutPolicy{Threshold: 1, Window: time.Hour}, 0, time.Hour},
		{LockoutPolicy{Threshold: 0}, 10, 30 * time.Minute},
		{LockoutPolicy{Threshold: 10, Window: 0}, 8, 24 * time.Hour},
	} {
		if max, w := g.limits(tc.p); max != tc.max || w != tc.window {
			t.Errorf("limits(%+v) = %d, %v; want %d, %v", tc.p, max, w, tc.max, tc.window)
		}
	}
}

func TestNormaliseBindName(t *testing.T) {
	for _, in := range []string{"Alice@corp.example.test", "ALICE@CORP", `CORP\alice`, `corp.example.test\Alice`, " alice "} {
		if got := NormaliseBindName(in); got != "alice" {
			t.Errorf("NormaliseBindName(%q) = %q, want alice", in, got)
		}
	}
}
