package ldap_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/enrollment-appliance/aeappliance/ldap"
	"github.com/enrollment-appliance/aeappliance/ldap/ldaptest"
)

// The guard against Samba, with its clock injected: the domain's policy is read (a seeded
// Samba domain locks no account out, so the configured cap applies); wrong passwords for one
// account in any spelling share one count, by SID; past the cap attempts are refused without a
// bind; after the window the right password works, and a
// success starts the count again. A name that means no account has a count of its own.
func TestPasswordGuardAgainstSamba(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	clock := &fakeClock{t: time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)}
	p, err := e.c.LockoutPolicy(ctx)
	if err != nil || p.Threshold != 0 || p.Window != 30*time.Minute {
		t.Fatalf("LockoutPolicy() = %+v, %v; want Samba's default: no threshold, a 30 minute window", p, err)
	}
	g := ldap.NewPasswordGuard(e.c, ldap.GuardOptions{Margin: 2, NoLockoutCap: 3, NoLockoutWindow: time.Hour,
		Refresh: time.Hour, Now: clock.Now})
	alice := e.s.Alice
	spellings := []string{alice.UPN, ldaptest.Domain + `\` + alice.Name, strings.ToUpper(alice.UPN)}
	for _, user := range spellings {
		_, err := g.Authenticate(ctx, user, "wrong-Passw0rd!")
		var stopped *ldap.PasswordsStopped
		if !errors.Is(err, ldap.ErrBind) || errors.As(err, &stopped) {
			t.Fatalf("Authenticate(%s, wrong) = %v, want the DC's refusal", user, err)
		}
	}
	before := e.c.Stats().RoundTrips
	_, err = g.Authenticate(ctx, strings.ToLower(ldaptest.Domain)+`\`+alice.Name, alice.Password)
	var stopped *ldap.PasswordsStopped
	if !errors.As(err, &stopped) || stopped.Account != alice.SID.String() || stopped.Decision.RetryAfter != time.Hour || !stopped.Decision.Report {
		t.Fatalf("Authenticate after 3 wrong passwords = %v, want PasswordsStopped for alice's SID for an hour, to be reported", err)
	}
	if n := e.c.Stats().RoundTrips - before; n != 1 {
		t.Errorf("the refused attempt cost %d LDAP round trips, want 1 (the search for the name's accounts, no bind)", n)
	}
	clock.Advance(time.Hour)
	if sid, err := g.Authenticate(ctx, alice.UPN, alice.Password); err != nil || !sid.Equal(alice.SID) {
		t.Fatalf("Authenticate after the window = %s, %v; want alice", sid, err)
	}
	for i := range 2 {
		if _, err := g.Authenticate(ctx, alice.UPN, "wrong-Passw0rd!"); errors.As(err, &stopped) {
			t.Fatalf("wrong password %d after a success: %v, want the DC's refusal (a success starts the count again)", i+1, err)
		}
	}
	for _, user := range []string{"nobody@corp.example.test", `CORP\nobody`, "NOBODY@elsewhere"} {
		if _, err := g.Authenticate(ctx, user, "x"); errors.As(err, &stopped) {
			t.Fatalf("Authenticate(%s) = %v, want the DC's refusal", user, err)
		}
	}
	if _, err := g.Authenticate(ctx, "Nobody@corp.example.test", "x"); !errors.As(err, &stopped) || stopped.Account != "nobody" {
		t.Errorf("a fourth guess for a name that means no account = %v, want PasswordsStopped for \"nobody\"", err)
	}
}
