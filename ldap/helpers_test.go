package ldap_test

import (
	"context"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/enrollment-appliance/aeappliance/ldap"
	"github.com/enrollment-appliance/aeappliance/ldap/ldaptest"
	"github.com/enrollment-appliance/aeappliance/ldap/secdesc"
)

// env is a seeded DC and a client bound as the service account over StartTLS.
type env struct {
	dc *ldaptest.DC
	s  *ldaptest.Sample
	c  *ldap.Client
}

func newEnv(t testing.TB, mod ...func(*ldap.Config)) env {
	t.Helper()
	dc := ldaptest.StartDC(t)
	s := dc.Seed(t)
	cfg := svcConfig(dc, s)
	cfg.Logger = slog.New(slog.NewTextHandler(t.Output(), nil))
	for _, m := range mod {
		m(&cfg)
	}
	c, err := ldap.Dial(context.Background(), cfg)
	if err != nil {
		t.Fatalf("Dial(%s) = %v", cfg.URL, err)
	}
	t.Cleanup(func() { c.Close() })
	return env{dc, s, c}
}

func svcConfig(dc *ldaptest.DC, s *ldaptest.Sample) ldap.Config {
	return ldap.Config{URL: dc.URL, CAFile: dc.CAFile, BindUser: s.SvcEnroll.UPN, Password: s.SvcEnroll.Password,
		Timeout: 3 * time.Second}
}

// fakeClock is an injectable clock for the cache.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (f *fakeClock) Now() time.Time          { f.mu.Lock(); defer f.mu.Unlock(); return f.t }
func (f *fakeClock) Advance(d time.Duration) { f.mu.Lock(); f.t = f.t.Add(d); f.mu.Unlock() }

func containsSID(list []secdesc.SID, s secdesc.SID) bool {
	for _, x := range list {
		if x.Equal(s) {
			return true
		}
	}
	return false
}

func sameACE(a, b secdesc.ACE) bool {
	if a.Type != b.Type || a.Mask != b.Mask || !a.SID.Equal(b.SID) {
		return false
	}
	if (a.ObjectType == nil) != (b.ObjectType == nil) {
		return false
	}
	return a.ObjectType == nil || *a.ObjectType == *b.ObjectType
}
