package ldaptest

import (
	"testing"

	goldap "github.com/go-ldap/ldap/v3"
)

// Two DCs at once get their own addresses and their own data; Stop and Start keep the data.
func TestTwoDCs(t *testing.T) {
	a, b := StartDC(t), StartDC(t)
	if a.IP == b.IP || a.Dir == b.Dir {
		t.Fatalf("two DCs share an address or a directory: %s %s, %s %s", a.IP, b.IP, a.Dir, b.Dir)
	}
	s := a.Seed(t)
	if again := a.Seed(t); again != s {
		t.Errorf("Seed twice created the domain twice")
	}
	count := func(dc *DC) int {
		t.Helper()
		res, err := dc.Admin(t).Search(goldap.NewSearchRequest(StaffOU, goldap.ScopeSingleLevel,
			goldap.NeverDerefAliases, 0, 0, false, "(objectClass=user)", []string{"dn"}, nil))
		if goldap.IsErrorWithCode(err, goldap.LDAPResultNoSuchObject) {
			return 0
		}
		if err != nil {
			t.Fatal(err)
		}
		return len(res.Entries)
	}
	if n := count(b); n != 0 {
		t.Errorf("the second DC has %d sample users; it should be empty", n)
	}
	want := count(a)
	a.Stop(t)
	a.Stop(t) // idempotent
	a.Start(t)
	if n := count(a); n != want || n == 0 {
		t.Errorf("after Stop and Start the DC has %d users in %s, want %d", n, StaffOU, want)
	}
	if p, ok := s.Principal("WS1$"); !ok || p.DN != s.WS1.DN || s.WS1.SID.IsZero() {
		t.Errorf("Sample.Principal(WS1$) = %+v, %v", p, ok)
	}
	if len(s.Nest) != NestDepth || len(s.Offered) != len(sampleTemplates)-1 {
		t.Errorf("sample has %d nesting groups and offers %d templates", len(s.Nest), len(s.Offered))
	}
}
