package daemon_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	goldap "github.com/go-ldap/ldap/v3"

	"github.com/enrollment-appliance/aeappliance/aeagent/wsclient"
	"github.com/enrollment-appliance/aeappliance/enrollsvc/daemon/daemontest"
	"github.com/enrollment-appliance/aeappliance/enrollsvc/events"
	"github.com/enrollment-appliance/aeappliance/enrollsvc/store"
	"github.com/enrollment-appliance/aeappliance/ldap/ldaptest"
)

// Password guessing for one account over the password endpoint stops before the domain's
// lockoutThreshold: with a threshold of 5 (and the default margin of 2) three wrong passwords
// reach the Samba DC, every further attempt (in any spelling of the name) is refused by the
// appliance without a bind, with a 429 fault and one audit event; the account is not locked
// out in AD, and after the domain's observation window the right password works.
func TestPasswordGuessingStopsBeforeDomainLockout(t *testing.T) {
	needSoftHSM(t)
	dc := ldaptest.StartDC(t)
	s := dc.Seed(t)
	const window = 8 * time.Second
	admin := dc.Admin(t)
	interval := fmt.Sprint(-int64(window / 100)) // negative 100 ns units
	mod := goldap.NewModifyRequest(dc.BaseDN, nil)
	mod.Replace("lockoutDuration", []string{interval})
	mod.Replace("lockoutObservationWindow", []string{interval})
	mod.Replace("lockoutThreshold", []string{"5"})
	if err := admin.Modify(mod); err != nil {
		t.Fatalf("setting the domain's lockout policy: %v", err)
	}
	srv := daemontest.Start(t, dc, s, daemontest.Options{CAName: "Lockout Test CA"})
	ctx := context.Background()
	policies := func(user, password string) error {
		c, err := wsclient.New(srv.CEP("UsernamePassword"), wsclient.PasswordAuth{Username: user, Password: password}, srv.Roots)
		if err != nil {
			t.Fatal(err)
		}
		defer c.CloseIdleConnections()
		_, err = c.GetPolicies(ctx, nil)
		return err
	}
	badPwd := func() (count, lockoutTime string) {
		res, err := admin.Search(goldap.NewSearchRequest(s.Alice.DN, goldap.ScopeBaseObject, goldap.NeverDerefAliases, 0, 0, false,
			"(objectClass=*)", []string{"badPwdCount", "lockoutTime"}, nil))
		if err != nil || len(res.Entries) != 1 {
			t.Fatalf("reading alice's badPwdCount: %v", err)
		}
		return res.Entries[0].GetAttributeValue("badPwdCount"), res.Entries[0].GetAttributeValue("lockoutTime")
	}

	spellings := []string{s.Alice.UPN, strings.ToUpper(s.Alice.UPN), ldaptest.Domain + `\` + s.Alice.Name, strings.ToLower(ldaptest.Domain) + `\` + strings.ToUpper(s.Alice.Name)}
	for i := range 12 {
		user := spellings[i%len(spellings)]
		err := policies(user, fmt.Sprintf("wrong-%d", i))
		var we *wsclient.Error
		if !errors.As(err, &we) {
			t.Fatalf("guess %d as %s: %v, want a fault", i+1, user, err)
		}
		if i < 3 {
			if we.StatusCode != http.StatusUnauthorized {
				t.Fatalf("guess %d as %s: %v, want 401 (it reaches the DC)", i+1, user, err)
			}
			continue
		}
		if we.StatusCode != http.StatusTooManyRequests || !strings.Contains(we.Reason, "too many wrong passwords for this account") {
			t.Fatalf("guess %d as %s: %v, want 429 with a clear reason", i+1, user, err)
		}
	}
	if n, lt := badPwd(); n != "3" || (lt != "" && lt != "0") {
		t.Errorf("alice in AD after 12 guesses: badPwdCount %s, lockoutTime %s; want 3 and not locked out", n, lt)
	}
	// The right password is refused too until the window has passed: answering it would let
	// guessing go on.
	if err := policies(s.Alice.UPN, s.Alice.Password); err == nil || !strings.Contains(err.Error(), "HTTP 429") {
		t.Errorf("the right password inside the window: %v, want 429", err)
	}
	evs, err := srv.Runtime.Store.ListEvents(ctx, store.EventFilter{ID: int(events.PasswordStopped)})
	if err != nil || len(evs) != 1 {
		t.Fatalf("password-stopped events = %d (%v), want 1", len(evs), err)
	}
	if evs[0].Fields["account"] != s.Alice.SID.String() || evs[0].Fields["remote"] == nil {
		t.Errorf("the event names %v from %v, want alice's SID %s and the client", evs[0].Fields["account"], evs[0].Fields["remote"], s.Alice.SID)
	}
	time.Sleep(window + time.Second) // the domain's own window: its clock is the DC's
	if err := policies(s.Alice.UPN, s.Alice.Password); err != nil {
		t.Fatalf("the right password after the window: %v", err)
	}
	// (Samba leaves the stored badPwdCount of a simple bind as it was; past the window it
	// counts from zero again, so only the lockout is checked here.)
	if _, lt := badPwd(); lt != "" && lt != "0" {
		t.Errorf("alice in AD after logging on: lockoutTime %s, want not locked out", lt)
	}
}
