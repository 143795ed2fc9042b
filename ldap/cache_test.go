package ldap_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/enrollment-appliance/aeappliance/ldap"
	"github.com/enrollment-appliance/aeappliance/ldap/ldaptest"
	"github.com/enrollment-appliance/aeappliance/ldap/secdesc"
)

func TestCache(t *testing.T) {
	t.Parallel()
	const ttl = time.Minute
	e := newEnv(t, func(c *ldap.Config) { c.CacheTTL = ttl })
	clock := &fakeClock{t: time.Now()}
	ldap.SetNow(e.c, clock.Now)
	ctx := context.Background()

	// calls runs f and returns how many LDAP round trips it cost.
	calls := func(what string, f func() error) int64 {
		t.Helper()
		before := e.c.Stats().RoundTrips
		if err := f(); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		return e.c.Stats().RoundTrips - before
	}
	account := func() error { _, err := e.c.Account(ctx, "deep50"); return err }
	byDN := func() error { _, err := e.c.Account(ctx, e.s.Deep50.DN); return err }
	bySID := func() error {
		a, err := e.c.Account(ctx, ldap.SIDAccount(e.s.Deep50.SID))
		if err == nil && (a.DN != e.s.Deep50.DN || len(a.Groups) < ldaptest.NestDepth) {
			err = fmt.Errorf("Account(SID of deep50) = %s with %d groups, want deep50 with its nested groups", a.DN, len(a.Groups))
		}
		return err
	}
	// A cold decision reads the enrollment service, then its templates: one round trip for both.
	serviceAndTemplates := func() error {
		if _, err := e.c.EnrollmentService(ctx, ldaptest.CACN); err != nil {
			return err
		}
		got, err := e.c.Templates(ctx, e.s.Offered)
		if err == nil && len(got) != len(e.s.Offered) {
			err = fmt.Errorf("Templates = %d entries, want the %d offered", len(got), len(e.s.Offered))
		}
		return err
	}
	templates := func() error { _, err := e.c.Templates(ctx, e.s.Offered); return err }
	service := func() error { _, err := e.c.EnrollmentService(ctx, ldaptest.CACN); return err }

	for _, tc := range []struct {
		name      string
		f         func() error
		coldTrips int64
	}{
		{"Account(deep50)", account, 2}, // find, then tokenGroups on the entry
		{"Account(DN)", byDN, 1},        // one base search returns both
		{"Account(SID)", bySID, 1},      // the same, with <SID=...> as the base (a PAC's SID)
		{"Templates", templates, 1},
		{"EnrollmentService", service, 1},
	} {
		if n := calls(tc.name, tc.f); n != tc.coldTrips {
			t.Errorf("cold %s: %d round trips, want %d", tc.name, n, tc.coldTrips)
		}
		clock.Advance(ttl - time.Second)
		hits := e.c.Stats().Hits
		if n := calls(tc.name, tc.f); n != 0 {
			t.Errorf("%s within the TTL: %d round trips, want 0", tc.name, n)
		}
		if e.c.Stats().Hits != hits+1 {
			t.Errorf("%s within the TTL: Hits %d → %d, want one more", tc.name, hits, e.c.Stats().Hits)
		}
		clock.Advance(2 * time.Second)
		if n := calls(tc.name, tc.f); n != tc.coldTrips {
			t.Errorf("%s after the TTL: %d round trips, want %d", tc.name, n, tc.coldTrips)
		}
		clock.Advance(ttl + time.Second)
	}

	// The enrollment service's search brings every template with it: then Templates costs nothing.
	e.c.Invalidate()
	if n := calls("EnrollmentService + Templates", serviceAndTemplates); n != 1 {
		t.Errorf("cold EnrollmentService then Templates: %d round trips, want 1", n)
	}
	e.c.Invalidate()

	// Templates: a partly cached request fetches only what is missing, absent templates are cached too.
	if n := calls("Templates(AEUser)", func() error { _, err := e.c.Templates(ctx, []string{"AEUser", "Nope"}); return err }); n != 1 {
		t.Errorf("Templates(AEUser, Nope): %d round trips, want 1", n)
	}
	if n := calls("Templates(AEUser, Nope)", func() error { _, err := e.c.Templates(ctx, []string{"Nope", "aeuser"}); return err }); n != 0 {
		t.Errorf("Templates(Nope, aeuser) again: %d round trips, want 0", n)
	}

	// Invalidate drops everything.
	calls("warm", account)
	if n := calls("warm", account); n != 0 {
		t.Errorf("Account before Invalidate: %d round trips", n)
	}
	e.c.Invalidate()
	if n := calls("after Invalidate", account); n != 2 {
		t.Errorf("Account after Invalidate: %d round trips, want 2", n)
	}

	// DC down: within the TTL the cache answers (no round trip); after it, ErrUnavailable, never stale data.
	e.dc.Stop(t)
	if n := calls("cached, DC down", account); n != 0 {
		t.Errorf("Account within the TTL with the DC down: %d round trips", n)
	}
	clock.Advance(ttl)
	if a, err := e.c.Account(ctx, "deep50"); !errors.Is(err, ldap.ErrUnavailable) {
		t.Errorf("Account after the TTL with the DC down = %v, %v; want ErrUnavailable", a, err)
	}
	if _, err := e.c.Templates(ctx, e.s.Offered); !errors.Is(err, ldap.ErrUnavailable) {
		t.Errorf("Templates after the TTL with the DC down = %v; want ErrUnavailable", err)
	}
}

func TestCacheDisabled(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(c *ldap.Config) { c.CacheTTL = -1 })
	ctx := context.Background()
	for range 2 {
		before := e.c.Stats().RoundTrips
		if _, err := e.c.Account(ctx, "alice"); err != nil {
			t.Fatal(err)
		}
		if n := e.c.Stats().RoundTrips - before; n != 2 {
			t.Errorf("Account with the cache disabled: %d round trips, want 2", n)
		}
	}
}

// Concurrent callers share one connection; run with -race.
func TestConcurrent(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(c *ldap.Config) { c.CacheTTL = -1 })
	ctx := context.Background()
	errs := make(chan error, 64)
	for i := range 64 {
		go func() {
			name := []string{"alice", "bob", "WS1$", "deep50"}[i%4]
			_, err := e.c.Account(ctx, name)
			errs <- err
		}()
	}
	for range 64 {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
}

func BenchmarkAccountCached(b *testing.B) {
	e := newEnv(b)
	ctx := context.Background()
	if _, err := e.c.Account(ctx, "deep50"); err != nil {
		b.Fatal(err)
	}
	before := e.c.Stats().RoundTrips
	b.ResetTimer()
	for b.Loop() {
		a, err := e.c.Account(ctx, "deep50")
		if err != nil || len(a.Groups) < ldaptest.NestDepth {
			b.Fatal(a, err)
		}
	}
	if n := e.c.Stats().RoundTrips - before; n != 0 {
		b.Fatalf("%d round trips with a warm cache", n)
	}
}

func BenchmarkAccountCold(b *testing.B) {
	e := newEnv(b)
	ctx := context.Background()
	for b.Loop() {
		e.c.Invalidate()
		a, err := e.c.Account(ctx, "deep50")
		if err != nil || len(a.Groups) < ldaptest.NestDepth {
			b.Fatal(a, err)
		}
	}
}

// The pool: concurrent callers are spread over Config.Connections connections, dialled as load asks
// for them; a paged search keeps to the connection of its first page (the cookie is that
// connection's) while other callers use the others; bad sizes are refused.
func TestConnectionPool(t *testing.T) {
	t.Parallel()
	dc, s := ldaptest.StartPopulatedDC(t, ldaptest.Population{Users: 600})
	cfg := svcConfig(dc, s)
	cfg.CacheTTL, cfg.Connections = -1, 4
	// 64 requests queue on 4 connections to one DC: what must hold is the pool's behaviour, not
	// how fast a loaded machine answers, so each request gets more than the usual 3 s.
	cfg.Timeout = 20 * time.Second
	c, err := ldap.Dial(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if n := c.Stats().Connections; n != 1 {
		t.Errorf("after Dial: %d connections, want 1 (the rest are dialled on demand)", n)
	}
	ctx := context.Background()
	pop := ldaptest.Population{Users: 600}
	var sids []secdesc.SID
	for i := range 600 {
		a, err := c.Account(ctx, pop.UserName(i))
		if err != nil {
			t.Fatal(err)
		}
		sids = append(sids, a.SID)
	}
	all := append(sids, s.Alice.SID) // built before the goroutines share it
	errs := make(chan error, 64)
	for i := range 64 {
		go func() {
			if i%16 == 0 { // 601 entries: two pages of PageSize, on one connection, amid the others
				names, err := c.SIDNames(ctx, all)
				if err == nil && len(names) != 601 {
					err = fmt.Errorf("SIDNames named %d of 601 SIDs", len(names))
				}
				errs <- err
				return
			}
			_, err := c.Account(ctx, []string{"alice", "bob", "WS1$", "deep50"}[i%4])
			errs <- err
		}()
	}
	for range 64 {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	if n := c.Stats().Connections; n != 4 {
		t.Errorf("after 600 sequential and 64 concurrent requests: %d connections, want the pool's 4", n)
	}
	for _, n := range []int{-1, 65} {
		bad := cfg
		bad.Connections = n
		if _, err := ldap.Dial(ctx, bad); err == nil || !strings.Contains(err.Error(), "Connections") {
			t.Errorf("Dial with Connections %d = %v, want an error naming Connections", n, err)
		}
	}
}
