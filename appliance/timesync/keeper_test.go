package timesync

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"
)

// fakeClock records what the Keeper asks of the clock; it never touches the system's.
type fakeClock struct {
	mu     sync.Mutex
	now    time.Time
	steps  []time.Duration
	slews  []time.Duration
	failOn error
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Step(d time.Duration) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.failOn != nil {
		return c.failOn
	}
	c.steps = append(c.steps, d)
	c.now = c.now.Add(d)
	return nil
}

func (c *fakeClock) Slew(d time.Duration) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.failOn != nil {
		return c.failOn
	}
	c.slews = append(c.slews, d)
	return nil
}

func (c *fakeClock) calls() (steps, slews []time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]time.Duration(nil), c.steps...), append([]time.Duration(nil), c.slews...)
}

var t0 = time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)

func TestSyncOnceStepsOrSlews(t *testing.T) {
	for _, tc := range []struct {
		offset time.Duration
		step   bool
	}{
		{90 * time.Second, true},
		{-90 * time.Second, true},
		{-300 * time.Millisecond, true},
		{20 * time.Millisecond, false},
		{-20 * time.Millisecond, false},
		{0, false},
	} {
		s := (&fakeServer{offset: tc.offset}).serve(t)
		c := &fakeClock{now: t0}
		k := &Keeper{Servers: []string{s.Addr}, Clock: c, Timeout: time.Second}
		r, err := k.SyncOnce(context.Background())
		if err != nil {
			t.Fatalf("SyncOnce with server offset %v: %v", tc.offset, err)
		}
		steps, slews := c.calls()
		var got []time.Duration
		if tc.step {
			got = steps
			if len(slews) != 0 {
				t.Errorf("offset %v: slewed %v, want a step only", tc.offset, slews)
			}
		} else {
			got = slews
			if len(steps) != 0 {
				t.Errorf("offset %v: stepped %v, want a slew only", tc.offset, steps)
			}
		}
		if len(got) != 1 || !near(got[0], tc.offset) || got[0] != r.Offset {
			t.Errorf("offset %v: step %v slew %v, want one of %v ± %v (step: %v) equal to Result.Offset %v",
				tc.offset, steps, slews, tc.offset, tolerance, tc.step, r.Offset)
		}
		st := k.Status()
		if !st.Synced || st.LastErr != nil || st.Last.Server != s.Addr || !st.LastTry.Equal(c.Now()) {
			t.Errorf("offset %v: Status() = %+v, want synced with %s at %v", tc.offset, st, s.Addr, c.Now())
		}
	}
}

func TestSyncOnceStepThreshold(t *testing.T) {
	s := (&fakeServer{offset: 300 * time.Millisecond}).serve(t)
	c := &fakeClock{now: t0}
	k := &Keeper{Servers: []string{s.Addr}, Clock: c, StepThreshold: time.Second}
	if _, err := k.SyncOnce(context.Background()); err != nil {
		t.Fatal(err)
	}
	if steps, slews := c.calls(); len(steps) != 0 || len(slews) != 1 {
		t.Errorf("300ms offset with StepThreshold 1s: steps %v slews %v, want one slew", steps, slews)
	}
}

func TestSyncOnceFailures(t *testing.T) {
	silent := (&fakeServer{silent: true}).serve(t)
	c := &fakeClock{now: t0}
	k := &Keeper{Servers: []string{silent.Addr}, Clock: c, Timeout: 200 * time.Millisecond}
	_, err := k.SyncOnce(context.Background())
	if want := "ntp " + silent.Addr + ": i/o timeout"; err == nil || err.Error() != want {
		t.Errorf("SyncOnce(silent) = %v, want %q", err, want)
	}
	if st := k.Status(); st.Synced || st.LastErr == nil {
		t.Errorf("Status() after a failure = %+v, want not synced with LastErr", st)
	}
	if steps, slews := c.calls(); len(steps)+len(slews) != 0 {
		t.Errorf("failed sync touched the clock: steps %v slews %v", steps, slews)
	}

	// A clock that refuses to be set is a failed sync.
	s := (&fakeServer{offset: time.Minute}).serve(t)
	c = &fakeClock{now: t0, failOn: errors.New("operation not permitted")}
	k = &Keeper{Servers: []string{s.Addr}, Clock: c}
	if _, err := k.SyncOnce(context.Background()); err == nil || k.Status().Synced {
		t.Errorf("SyncOnce with a failing Clock = %v, synced %v; want an error, not synced", err, k.Status().Synced)
	}

	k = &Keeper{Clock: c}
	if _, err := k.SyncOnce(context.Background()); !errors.Is(err, ErrNoServers) {
		t.Errorf("SyncOnce without servers = %v, want ErrNoServers", err)
	}
}

// A server that says DENY is not asked again (RFC 5905 7.4); one that says RATE is.
func TestKeeperStopsAskingRefusingServers(t *testing.T) {
	deny := (&fakeServer{kiss: "DENY"}).serve(t)
	rate := (&fakeServer{kiss: "RATE"}).serve(t)
	k := &Keeper{Servers: []string{deny.Addr, rate.Addr}, Clock: &fakeClock{now: t0}, Timeout: time.Second}
	for range 3 {
		if _, err := k.SyncOnce(context.Background()); err == nil {
			t.Fatal("SyncOnce with kiss-o'-death servers succeeded")
		}
	}
	if n := deny.requests.Load(); n != 1 {
		t.Errorf("DENY server was asked %d times, want 1", n)
	}
	if n := rate.requests.Load(); n != 3 {
		t.Errorf("RATE server was asked %d times, want 3", n)
	}

	k = &Keeper{Servers: []string{deny.Addr}, Clock: &fakeClock{now: t0}, Timeout: time.Second}
	k.SyncOnce(context.Background())
	if _, err := k.SyncOnce(context.Background()); err == nil || !strings.Contains(err.Error(), "refused service") {
		t.Errorf("second SyncOnce with only a DENY server = %v, want 'refused service'", err)
	}
}

func TestRunSyncsUntilCancelled(t *testing.T) {
	s := (&fakeServer{offset: 90 * time.Second}).serve(t)
	c := &fakeClock{now: t0}
	k := &Keeper{Servers: []string{s.Addr}, Clock: c, Interval: 50 * time.Millisecond}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { k.Run(ctx); close(done) }()
	deadline := time.Now().Add(5 * time.Second)
	for s.requests.Load() < 3 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	select {
	case <-done:
	case <-time.After(2 * time.Second):
		t.Fatal("Run did not return within 2s of its context being cancelled")
	}
	if n := s.requests.Load(); n < 3 {
		t.Errorf("Run with a 50ms interval asked %d times in 5s, want at least 3", n)
	}
	if steps, _ := c.calls(); len(steps) == 0 || !near(steps[0], 90*time.Second) {
		t.Errorf("Run stepped %v, want a first step of 90s", steps)
	}
	if !k.Status().Synced {
		t.Errorf("Status() after Run = %+v, want synced", k.Status())
	}
}

func TestRunWithoutServersWaits(t *testing.T) {
	k := &Keeper{Clock: &fakeClock{now: t0}}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	k.Run(ctx)
	if got, want := k.Status().String(), "no NTP servers configured"; got != want {
		t.Errorf("Status().String() = %q, want %q", got, want)
	}
}

func TestRetryDelay(t *testing.T) {
	for _, tc := range []struct {
		failures int
		interval time.Duration
		want     time.Duration
	}{
		{0, 15 * time.Minute, 10 * time.Second},
		{1, 15 * time.Minute, 30 * time.Second},
		{2, 15 * time.Minute, time.Minute},
		{3, 15 * time.Minute, 2 * time.Minute},
		{4, 15 * time.Minute, 4 * time.Minute},
		{5, 15 * time.Minute, 8 * time.Minute},
		{6, 15 * time.Minute, 15 * time.Minute},
		{1000, 15 * time.Minute, 15 * time.Minute},
		{0, 20 * time.Second, 10 * time.Second},
		{1, 20 * time.Second, 20 * time.Second},
		{5, 20 * time.Second, 20 * time.Second},
	} {
		if got := retryDelay(tc.failures, tc.interval); got != tc.want {
			t.Errorf("retryDelay(%d, %v) = %v, want %v", tc.failures, tc.interval, got, tc.want)
		}
	}
}

func TestStatusString(t *testing.T) {
	now := t0
	synced := Result{Server: "10.0.2.2:123", Offset: 1200 * time.Microsecond, Stratum: 2, At: now.Add(-3 * time.Minute)}
	timeout := fmt.Errorf("ntp 10.0.2.2:123: i/o timeout")
	long := "ntp-primary.corp.internal.example.enrollment-appliance.test:123"
	for i, tc := range []struct {
		s    Status
		want string
	}{
		{Status{}, "no NTP servers configured"},
		{Status{Servers: []string{"a"}}, "not synchronised yet"},
		{Status{Servers: []string{"a"}, Synced: true, Last: synced},
			"synchronised with 10.0.2.2:123 (stratum 2, offset +1.2ms, 3m ago)"},
		{Status{Servers: []string{"a"}, Synced: true, Last: Result{Server: "[::1]:123", Offset: -90 * time.Second, Stratum: 8, At: now}},
			"synchronised with [::1]:123 (stratum 8, offset -1m30s, just now)"},
		{Status{Servers: []string{"a"}, Synced: true, Last: Result{Server: "s:123", Offset: 350 * time.Microsecond, Stratum: 1, At: now.Add(-50 * time.Hour)}},
			"synchronised with s:123 (stratum 1, offset +350us, 2d ago)"},
		{Status{Servers: []string{"a"}, Synced: true, Last: Result{Server: long, Offset: 56 * 365 * 24 * time.Hour, Stratum: 2, At: now}},
			"synchronised with ntp-p... (stratum 2, offset +490560h0m0s, just now)"},
		{Status{Servers: []string{"a"}, LastErr: timeout}, "not synchronised: ntp 10.0.2.2:123: i/o timeout"},
		{Status{Servers: []string{"a"}, LastErr: errors.Join(timeout, errors.New("ntp "+long+": connection refused"))},
			"not synchronised: ntp 10.0.2.2:123: i/o timeout; ntp ntp-primary.c..."},
		{Status{Servers: []string{"a"}, Synced: true, Last: synced, LastErr: timeout},
			"synchronised 3m ago, now failing: ntp 10.0.2.2:123: i/o timeout"},
	} {
		got := tc.s.StringAt(now)
		if got != tc.want {
			t.Errorf("case %d: StringAt() =\n\t%q, want\n\t%q", i, got, tc.want)
		}
		if n := utf8.RuneCountInString(got); n >= 70 {
			t.Errorf("%q is %d characters, want under 70", got, n)
		}
	}
}

func TestFmtOffset(t *testing.T) {
	for d, want := range map[time.Duration]string{
		0:                         "+0us",
		-999 * time.Microsecond:   "-999us",
		1234 * time.Microsecond:   "+1.2ms",
		-20 * time.Millisecond:    "-20.0ms",
		-59900 * time.Millisecond: "-59.9s",
		90 * time.Second:          "+1m30s",
		-(time.Hour + 2*time.Minute + 3*time.Second + 400*time.Millisecond): "-1h2m3s",
	} {
		if got := fmtOffset(d); got != want {
			t.Errorf("fmtOffset(%v) = %q, want %q", d, got, want)
		}
	}
}
