package api_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/enrollment-appliance/aeappliance/apiclient"
	"github.com/enrollment-appliance/aeappliance/enrollsvc/api"
	"github.com/enrollment-appliance/aeappliance/enrollsvc/daemon"
	"github.com/enrollment-appliance/aeappliance/enrollsvc/store"
	"github.com/enrollment-appliance/aeappliance/hsm/softhsm"
	"github.com/enrollment-appliance/aeappliance/provisioning/ceremony"
	"github.com/enrollment-appliance/aeappliance/ratelimit"
)

const token = "the-admin-token"

// clock is the limits' clock: Unix nanoseconds, moved by the test.
type clock struct{ ns atomic.Int64 }

func newClock() *clock {
	c := &clock{}
	c.ns.Store(time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC).UnixNano())
	return c
}

func (c *clock) Now() time.Time      { return time.Unix(0, c.ns.Load()).UTC() }
func (c *clock) Add(d time.Duration) { c.ns.Add(int64(d)) }

// newAPI is the API over a real data directory (SoftHSM token, SQLite store, the core), with
// the admin token above and the clock c.
func newAPI(t *testing.T, c *clock, health *ratelimit.Limiter) (*api.Server, *daemon.Runtime) {
	t.Helper()
	if _, err := softhsm.ModulePath(); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("SoftHSM2 is required on CI: %v", err)
		}
		t.Skip(err)
	}
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	t.Setenv("SOFTHSM2_CONF", "")
	dir := filepath.Join(t.TempDir(), "var")
	if _, err := ceremony.Init(context.Background(), ceremony.InitOptions{Dir: dir, CAName: "Limits CA", Logger: quiet}); err != nil {
		t.Fatal(err)
	}
	rt, err := daemon.Open(context.Background(), dir, quiet)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(rt.Close)
	sum := sha256.Sum256([]byte(token))
	srv, err := api.New(api.Config{TokenSHA256: hex.EncodeToString(sum[:]), CACert: rt.CACert, Store: rt.Store, Service: rt.Service,
		Recorder: rt.Recorder, Logger: quiet, Now: c.Now, Health: health,
		Status: func(ctx context.Context) apiclient.Status { return apiclient.Status{Healthy: true} }})
	if err != nil {
		t.Fatal(err)
	}
	return srv, rt
}

func call(srv *api.Server, remote, path, tok string) *httptest.ResponseRecorder {
	r := httptest.NewRequest(http.MethodGet, path, nil)
	r.RemoteAddr = remote
	if tok != "" {
		r.Header.Set("Authorization", "Bearer "+tok)
	}
	w := httptest.NewRecorder()
	srv.Handler().ServeHTTP(w, r)
	return w
}

func countEvents(t *testing.T, rt *daemon.Runtime, id int) int {
	t.Helper()
	evs, err := rt.Store.ListEvents(context.Background(), store.EventFilter{ID: id})
	if err != nil {
		t.Fatal(err)
	}
	return len(evs)
}

// Failed authentications lock out the address they come from, not the admin elsewhere; the
// lockout is audited once per window.
func TestLockoutPerSource(t *testing.T) {
	c := newClock()
	srv, rt := newAPI(t, c, nil)
	const a, b = "192.0.2.10:5000", "198.51.100.20:6000"
	for i := range api.MaxFailures {
		if w := call(srv, a, "/api/v1/status", "wrong"); w.Code != http.StatusUnauthorized {
			t.Fatalf("failure %d from A: %d, want 401", i+1, w.Code)
		}
	}
	for range 5 {
		w := call(srv, a, "/api/v1/status", "wrong")
		if w.Code != http.StatusTooManyRequests || w.Header().Get("Retry-After") != "60" {
			t.Fatalf("A after %d failures: %d, Retry-After %q; want 429, 60", api.MaxFailures, w.Code, w.Header().Get("Retry-After"))
		}
	}
	// B is not locked out: its wrong token is a 401, its right token works.
	if w := call(srv, b, "/api/v1/status", "wrong"); w.Code != http.StatusUnauthorized {
		t.Errorf("a wrong token from B while A is locked out: %d, want 401", w.Code)
	}
	if w := call(srv, b, "/api/v1/status", token); w.Code != http.StatusOK {
		t.Errorf("the right token from B while A is locked out: %d, want 200", w.Code)
	}
	if n := countEvents(t, rt, 3040); n != 1 {
		t.Errorf("lockout events after 5 refusals = %d, want 1", n)
	}
	if n := countEvents(t, rt, 3001); n != api.MaxFailures+1 {
		t.Errorf("failed-authentication events = %d, want %d (A's before the lockout, B's)", n, api.MaxFailures+1)
	}
	c.Add(api.FailureWindow)
	if w := call(srv, a, "/api/v1/status", "wrong"); w.Code != http.StatusUnauthorized {
		t.Errorf("A after the window: %d, want 401", w.Code)
	}
}

// The health check is limited per client address, with Retry-After and one audit event per
// window.
func TestHealthLimitPerSource(t *testing.T) {
	c := newClock()
	lim, err := ratelimit.NewLimiter(ratelimit.Options{Rate: ratelimit.Rate{PerSecond: 1, Burst: 3}, Now: c.Now})
	if err != nil {
		t.Fatal(err)
	}
	srv, rt := newAPI(t, c, lim)
	for i := range 3 {
		if w := call(srv, "192.0.2.10:1", "/api/v1/health", ""); w.Code != http.StatusOK {
			t.Fatalf("health %d: %d", i, w.Code)
		}
	}
	for range 10 {
		if w := call(srv, "192.0.2.10:2", "/api/v1/health", ""); w.Code != http.StatusTooManyRequests || w.Header().Get("Retry-After") != "1" {
			t.Fatalf("health beyond the burst: %d, Retry-After %q; want 429, 1", w.Code, w.Header().Get("Retry-After"))
		}
	}
	if w := call(srv, "198.51.100.20:1", "/api/v1/health", ""); w.Code != http.StatusOK {
		t.Errorf("health from another address: %d, want 200", w.Code)
	}
	if n := countEvents(t, rt, 3041); n != 1 {
		t.Errorf("rate-limit events = %d, want 1", n)
	}
	c.Add(time.Second)
	if w := call(srv, "192.0.2.10:1", "/api/v1/health", ""); w.Code != http.StatusOK {
		t.Errorf("health a second later: %d, want 200", w.Code)
	}
}
