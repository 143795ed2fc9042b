package ldap_test

import (
	"context"
	"testing"

	"github.com/enrollment-appliance/aeappliance/ldap/secdesc"
)

func TestSIDNames(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	unknown := secdesc.MustParseSID(e.s.DomainSID.String() + "-999999")
	sids := []secdesc.SID{e.s.PKIUsers.SID, e.s.DeniedGroup.SID, e.s.Alice.SID, secdesc.AuthenticatedUsers, e.s.DomainAdmins, unknown}
	names, err := e.c.SIDNames(ctx, sids)
	if err != nil {
		t.Fatal(err)
	}
	for sid, want := range map[string]string{e.s.PKIUsers.SID.String(): "PKI-Users", e.s.DeniedGroup.SID.String(): "Denied-Group",
		e.s.Alice.SID.String(): "alice", secdesc.AuthenticatedUsers.String(): "Authenticated Users", e.s.DomainAdmins.String(): "Domain Admins"} {
		if got := names[sid]; got != want {
			t.Errorf("SIDNames[%s] = %q, want %q", sid, got, want)
		}
	}
	if _, ok := names[unknown.String()]; ok {
		t.Errorf("SIDNames named an unknown SID: %q", names[unknown.String()])
	}
	// Warm: answered from the cache, unknown SIDs included, with no round trip.
	before := e.c.Stats().RoundTrips
	again, err := e.c.SIDNames(ctx, sids)
	if err != nil || len(again) != len(names) {
		t.Fatalf("SIDNames again = %v, %v", again, err)
	}
	if rt := e.c.Stats().RoundTrips - before; rt != 0 {
		t.Errorf("warm SIDNames made %d round trips, want 0", rt)
	}
}
