package daemon_test

import (
	"context"
	"crypto/x509/pkix"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/enrollment-appliance/aeappliance/config"
	"github.com/enrollment-appliance/aeappliance/enrollsvc"
	"github.com/enrollment-appliance/aeappliance/enrollsvc/daemon"
	"github.com/enrollment-appliance/aeappliance/enrollsvc/store/pgtest"
	"github.com/enrollment-appliance/aeappliance/provisioning/ceremony"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

// Two instances of one CA on one PostgreSQL (the second made by ceremony.Join): a one-time SCEP
// challenge raced from both, many times, is consumed exactly once each time, and one of each
// pair of requests is issued while the other is refused as a used challenge.
func TestOneTimeChallengeRacedAcrossInstances(t *testing.T) {
	db := pgtest.Shared(t).NewDatabase(t)
	f := initDirFixture(t, "")
	// A's store is the database, as init --store-url makes it.
	c, err := config.Load(f.dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(f.dir, config.StoreDir), 0o700); err != nil {
		t.Fatal(err)
	}
	for from, to := range map[string]string{db.CAFile: config.StoreCAFile, db.PasswordFile: config.StorePassword} {
		b, err := os.ReadFile(from)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(f.dir, to), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	c.Store, c.Instance = "", "a"
	c.Postgres = &config.Postgres{URL: db.URL, CAFile: config.StoreCAFile, PasswordFile: config.StorePassword}
	if err := c.Write(f.dir); err != nil {
		t.Fatal(err)
	}
	a := openRuntime(t, f.dir)
	pw := filepath.Join(t.TempDir(), "pw")
	if err := os.WriteFile(pw, []byte(f.s.SvcEnroll.Password), 0o600); err != nil {
		t.Fatal(err)
	}
	dirB := filepath.Join(t.TempDir(), "b")
	ctx := context.Background()
	if _, err := ceremony.Join(ctx, ceremony.JoinOptions{Dir: dirB, TokenFrom: filepath.Join(f.dir, "hsm"), Instance: "b",
		LDAPPasswordFile: pw, Logger: quiet, Store: ceremony.StoreOptions{URL: db.URL, CAFile: db.CAFile, PasswordFile: db.PasswordFile}}); err != nil {
		t.Fatalf("Join: %v", err)
	}
	b, err := daemon.Open(ctx, dirB, quiet)
	if err != nil {
		t.Fatalf("opening B: %v", err)
	}
	defer b.Close()

	if _, err := a.Service.AddSCEPProfile(ctx, enrollsvc.SCEPProfileSpec{Name: "devices", Template: "SuppliesSubject", OneTime: true}, "test"); err != nil {
		t.Fatal(err)
	}
	const rounds = 10
	for i := range rounds {
		ch, _, err := a.Service.NewSCEPChallenge(ctx, enrollsvc.SCEPChallengeSpec{Profile: "devices", Account: "dave"}, "test")
		if err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		results := make([]*enrollsvc.EnrollResult, 2)
		errs := make([]error, 2)
		csrs := [][]byte{rsaCSR(t, pkix.Name{CommonName: "device.corp.example.test"}), rsaCSR(t, pkix.Name{CommonName: "device.corp.example.test"})}
		for j, svc := range []*enrollsvc.Service{a.Service, b.Service} {
			wg.Go(func() {
				csr := csrs[j]
				results[j], errs[j] = svc.SCEPEnroll(ctx, enrollsvc.SCEPRequest{Profile: "devices",
					TransactionID: string(rune('a'+i)) + string(rune('0'+j)), CSR: csr, Challenge: ch})
			})
		}
		wg.Wait()
		issued := 0
		for j := range 2 {
			if errs[j] != nil {
				t.Fatalf("round %d, instance %d: %v", i, j, errs[j])
			}
			if results[j].Status == enrollsvc.StatusIssued {
				issued++
			}
		}
		if issued != 1 {
			t.Errorf("round %d: the challenge raced from both instances issued %d certificates, want exactly 1 (%+v, %+v)",
				i, issued, results[0], results[1])
		}
	}
}
