package daemon_test

import (
	"context"
	"os"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	goldap "github.com/go-ldap/ldap/v3"

	"github.com/enrollment-appliance/aeappliance/enrollsvc/daemon/daemontest"
	"github.com/enrollment-appliance/aeappliance/ldap"
	"github.com/enrollment-appliance/aeappliance/ldap/ldaptest"
	"github.com/enrollment-appliance/aeappliance/ldap/secdesc"
)

// BenchmarkDirectoryAtScale: policy decisions in a domain of 100,000 accounts (DIRECTORY_ACCOUNTS
// for fewer), each four nested groups below the template's grant (ldaptest.Population; made once
// per machine over LDAP, which takes Samba most of an hour for 100,000, then cached). A decision is what every MS-XCEP client asks first: each offered template
// decided for the account (Read, Enroll, Autoenroll), the account named by its SID as Kerberos
// and password clients are. cold: the directory cache emptied before each decision, which must
// cost at most 3 LDAP round trips (the enrollment service with every template, the account with
// its groups, the holders of its UPN); new-account: templates cached, every decision for an
// account not seen before, from 32 goroutines over the directory client's connection pool (the
// logon storm); warm: the same accounts again, which must cost none. Run with a fixed count (make
// bench: -benchtime 2000x).
func BenchmarkDirectoryAtScale(b *testing.B) {
	pop := ldaptest.Population{Bulk: 100000}
	if v := os.Getenv("DIRECTORY_ACCOUNTS"); v != "" { // a smaller domain, to try the benchmark quickly
		n, err := strconv.Atoi(v)
		if err != nil || n < 3000 {
			b.Fatalf("DIRECTORY_ACCOUNTS=%q: want a number of at least 3000", v)
		}
		pop.Bulk = n
	}
	dc, s := ldaptest.StartPopulatedDC(b, pop)
	srv := daemontest.Start(b, dc, s, daemontest.Options{})
	rt := srv.Runtime
	ctx := context.Background()
	sids := bulkSIDs(b, dc)
	if len(sids) != pop.Bulk {
		b.Fatalf("%d bulk accounts in the directory, want %d", len(sids), pop.Bulk)
	}
	decide := func(b *testing.B, sid secdesc.SID) {
		set, err := rt.Service.Policies(ctx, ldap.SIDAccount(sid))
		if err != nil {
			b.Fatalf("Policies(%s): %v", sid, err)
		}
		for _, t := range set.Templates {
			if t.Template.Name == "AEUser" && t.Autoenroll {
				return
			}
		}
		b.Fatalf("Policies(%s) = %d templates without AEUser to autoenroll; every bulk account may", sid, len(set.Templates))
	}
	var next atomic.Int64 // accounts not decided before
	var seen []secdesc.SID
	measure := func(b *testing.B, f func(b *testing.B)) float64 {
		before, _ := rt.DirectoryStats()
		start := time.Now()
		f(b)
		b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "decisions/s")
		after, _ := rt.DirectoryStats()
		trips := float64(after.RoundTrips-before.RoundTrips) / float64(b.N)
		b.ReportMetric(trips, "ldap-roundtrips/op")
		return trips
	}
	b.Run("cold", func(b *testing.B) {
		trips := measure(b, func(b *testing.B) {
			for b.Loop() {
				rt.InvalidateDirectoryCache()
				decide(b, sids[next.Add(1)-1])
			}
		})
		if trips > 3 {
			b.Errorf("a cold decision made %.2f LDAP round trips, want at most 3", trips)
		}
	})
	decide(b, sids[next.Add(1)-1]) // the enrollment service and templates in the cache
	b.Run("new-account", func(b *testing.B) {
		first := int(next.Load())
		b.SetParallelism(16) // 32 goroutines on 2 CPUs
		measure(b, func(b *testing.B) {
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					decide(b, sids[next.Add(1)-1])
				}
			})
		})
		seen = sids[first:next.Load()]
	})
	b.Run("warm", func(b *testing.B) {
		var i atomic.Int64
		b.SetParallelism(16)
		trips := measure(b, func(b *testing.B) {
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					decide(b, seen[int(i.Add(1)-1)%len(seen)])
				}
			})
		})
		if trips != 0 {
			b.Errorf("warm decisions made %.2f LDAP round trips each, want 0", trips)
		}
	})
}

// bulkSIDs reads the SIDs of the population's bulk accounts.
func bulkSIDs(b *testing.B, dc *ldaptest.DC) []secdesc.SID {
	b.Helper()
	res, err := dc.Admin(b).SearchWithPaging(goldap.NewSearchRequest("OU=Bulk,"+ldaptest.BaseDN, goldap.ScopeSingleLevel,
		goldap.NeverDerefAliases, 0, 0, false, "(objectClass=user)", []string{"objectSid"}, nil), 1000)
	if err != nil {
		b.Fatal(err)
	}
	var out []secdesc.SID
	for _, e := range res.Entries {
		sid, err := secdesc.DecodeSID(e.GetRawAttributeValue("objectSid"))
		if err != nil {
			b.Fatal(err)
		}
		out = append(out, sid)
	}
	return out
}
