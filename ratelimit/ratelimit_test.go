package ratelimit

import (
	"fmt"
	"net/http/httptest"
	"net/netip"
	"sync"
	"testing"
	"time"
)

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func newClock() *clock { return &clock{t: time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)} }

// Each key has its own bucket: one source's burst does not touch another's; a refused request
// says when to come back and is reported once per window.
func TestLimiterPerKey(t *testing.T) {
	c := newClock()
	l, err := NewLimiter(Options{Rate: Rate{PerSecond: 1, Burst: 3}, Now: c.Now})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if d := l.Allow("a"); !d.Allowed {
			t.Fatalf("request %d of a refused: %+v", i, d)
		}
	}
	d := l.Allow("a")
	if d.Allowed || !d.Report || d.RetryAfter != time.Second || RetryAfterSeconds(d.RetryAfter) != "1" {
		t.Fatalf("4th request of a = %+v, want refused, reported, retry after 1s", d)
	}
	for range 5 {
		if d := l.Allow("a"); d.Allowed || d.Report {
			t.Fatalf("a again = %+v, want refused and not reported", d)
		}
	}
	if d := l.Allow("b"); !d.Allowed {
		t.Fatalf("b = %+v, want allowed", d)
	}
	c.Add(time.Second)
	if d := l.Allow("a"); !d.Allowed {
		t.Fatalf("a a second later = %+v, want allowed (refusals take no token)", d)
	}
	c.Add(time.Minute)
	for range 3 {
		l.Allow("a")
	}
	if d := l.Allow("a"); d.Allowed || !d.Report || d.Suppressed != 5 {
		t.Fatalf("a in the next window = %+v, want refused, reported again with 5 suppressed", d)
	}
	if _, err := NewLimiter(Options{Rate: Rate{PerSecond: 0, Burst: 1}}); err == nil {
		t.Error("NewLimiter(rate 0) = nil error")
	}
}

// A flood of distinct keys keeps the table at its capacity.
func TestBounded(t *testing.T) {
	l, _ := NewLimiter(Options{Rate: Rate{PerSecond: 1, Burst: 1}, Capacity: 100})
	f := NewFailures(FailureOptions{Max: 3, Window: time.Minute, Capacity: 100})
	for i := range 10000 {
		k := fmt.Sprint("key", i)
		l.Allow(k)
		f.Fail(k)
	}
	if l.Len() != 100 || f.Len() != 100 {
		t.Errorf("after 10000 keys: limiter holds %d, failures %d; want 100 each", l.Len(), f.Len())
	}
	// The most recently used stay.
	f.Fail("key9999")
	f.Fail("key9999")
	if d := f.Check("key9999"); d.Allowed {
		t.Errorf("key9999 after 3 failures = %+v, want refused", d)
	}
}

// Failures lock a key out after Max in the window, counted from the first failure or, with
// Sliding, from the latest; Reset forgets them.
func TestFailures(t *testing.T) {
	for _, sliding := range []bool{false, true} {
		c := newClock()
		f := NewFailures(FailureOptions{Max: 3, Window: time.Minute, Sliding: sliding, Now: c.Now})
		f.Fail("a")
		c.Add(30 * time.Second)
		f.Fail("a")
		if d := f.Check("a"); !d.Allowed {
			t.Fatalf("sliding %v: after 2 failures = %+v, want allowed", sliding, d)
		}
		f.Fail("a")
		d := f.Check("a")
		want := 30 * time.Second // a minute after the first
		if sliding {
			want = time.Minute // a minute after the latest
		}
		if d.Allowed || !d.Report || d.RetryAfter != want {
			t.Fatalf("sliding %v: after 3 failures = %+v, want refused, reported, retry after %v", sliding, d, want)
		}
		if d := f.Check("a"); d.Allowed || d.Report {
			t.Fatalf("sliding %v: again = %+v, want refused, not reported", sliding, d)
		}
		if d := f.Check("b"); !d.Allowed {
			t.Fatalf("sliding %v: b = %+v, want allowed", sliding, d)
		}
		c.Add(30 * time.Second)
		if d := f.Check("a"); d.Allowed != !sliding {
			t.Fatalf("sliding %v: a minute after the first failure = %+v", sliding, d)
		}
		c.Add(30 * time.Second)
		if d := f.Check("a"); !d.Allowed {
			t.Fatalf("sliding %v: a minute after the latest failure = %+v, want allowed", sliding, d)
		}
		if n := f.Fail("a"); n != 1 {
			t.Fatalf("sliding %v: first failure of a new window counted %d", sliding, n)
		}
		f.Fail("a")
		f.Fail("a")
		if d := f.Check("a"); d.Allowed || !d.Report {
			t.Fatalf("sliding %v: a new lockout = %+v, want refused and reported", sliding, d)
		}
		f.Reset("a")
		if d := f.Check("a"); !d.Allowed {
			t.Fatalf("sliding %v: after Reset = %+v", sliding, d)
		}
	}
	f := NewFailures(FailureOptions{Max: 0, Window: time.Minute})
	if d := f.Check("x"); d.Allowed || d.RetryAfter != time.Minute {
		t.Errorf("Max 0: %+v, want refused for a minute", d)
	}
}

// The client is the socket's peer unless that is a trusted proxy; then the rightmost hop of
// X-Forwarded-For that no trusted proxy holds.
func TestClientAddr(t *testing.T) {
	trusted, err := ParseProxies([]string{"10.0.0.0/24", "2001:db8::1"})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		proxies Proxies
		remote  string
		xff     []string
		want    string
	}{
		{nil, "192.0.2.7:4444", []string{"198.51.100.1"}, "192.0.2.7"},                // nothing trusted: the header is ignored
		{trusted, "192.0.2.7:4444", []string{"198.51.100.1"}, "192.0.2.7"},            // an untrusted peer cannot claim another address
		{trusted, "10.0.0.5:4444", []string{"198.51.100.1"}, "198.51.100.1"},          // behind the proxy
		{trusted, "10.0.0.5:4444", []string{"6.6.6.6, 198.51.100.1"}, "198.51.100.1"}, // the client's own claim is left of its address
		{trusted, "10.0.0.5:4444", []string{"6.6.6.6", "198.51.100.1, 10.0.0.9"}, "198.51.100.1"},
		{trusted, "[2001:db8::1]:443", []string{"2001:db8:1::5"}, "2001:db8:1::5"},
		{trusted, "10.0.0.5:4444", []string{"6.6.6.6, garbage"}, "10.0.0.5"},
		{trusted, "10.0.0.5:4444", nil, "10.0.0.5"},
		{trusted, "10.0.0.5:4444", []string{"10.0.0.7"}, "10.0.0.7"},
		{trusted, "[::ffff:10.0.0.5]:4444", []string{"198.51.100.1"}, "198.51.100.1"},
	} {
		r := httptest.NewRequest("GET", "/", nil)
		r.RemoteAddr = tc.remote
		for _, h := range tc.xff {
			r.Header.Add("X-Forwarded-For", h)
		}
		if got := tc.proxies.ClientAddr(r); got.String() != tc.want {
			t.Errorf("ClientAddr(%s, XFF %q, %d proxies) = %s, want %s", tc.remote, tc.xff, len(tc.proxies), got, tc.want)
		}
	}
	if _, err := ParseProxies([]string{"10.0.0.0/33"}); err == nil {
		t.Error("ParseProxies(10.0.0.0/33) = nil error")
	}
	if k := SourceKey(netip.MustParseAddr("2001:db8:1:2:3::4")); k != "2001:db8:1:2::/64" {
		t.Errorf("SourceKey(v6) = %s", k)
	}
	if k := SourceKey(netip.MustParseAddr("192.0.2.1")); k != "192.0.2.1" {
		t.Errorf("SourceKey(v4) = %s", k)
	}
}

// Attempt counts before the outcome is known, so parallel attempts cannot overtake the
// limit; Forgive takes one back.
func TestAttemptAndForgive(t *testing.T) {
	c := newClock()
	f := NewFailures(FailureOptions{Max: 3, Window: time.Minute, Sliding: true, Now: c.Now})
	var wg sync.WaitGroup
	var mu sync.Mutex
	allowed := 0
	for range 50 {
		wg.Go(func() {
			if f.Attempt("a").Allowed {
				mu.Lock()
				allowed++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if allowed != 3 {
		t.Fatalf("50 parallel attempts: %d allowed, want 3", allowed)
	}
	f.Forgive("a")
	if d := f.Attempt("a"); !d.Allowed {
		t.Fatalf("after Forgive: %+v, want allowed", d)
	}
	if d := f.Attempt("a"); d.Allowed {
		t.Fatalf("then: %+v, want refused", d)
	}
}
