package ldaptest

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	goldap "github.com/go-ldap/ldap/v3"
)

// Population is the sample domain with many more accounts, for storms and benchmarks:
//
//   - Users enabled users (UserName(i), Password(UserName(i)), UPN and mail <name>@corp.example.test,
//     in OU=Staff) who are members of PKI-Users, so that each may enroll and autoenroll AEUser as
//     alice may;
//   - Bulk enabled users without a password (BulkName(i); userAccountControl PASSWD_NOTREQD, so
//     no one can log on as them, but policy sees them as any account: UPN and mail, in OU=Bulk),
//     in nested groups: user i is a member of Bulk-Leaf-(i mod 1000), leaf group k of
//     Bulk-Mid-(k mod 100), mid group m of Bulk-Top-(m mod 10), and every top group of
//     PKI-Users: four levels to the template's grant.
//
// Samba sets about 50 passwords a second and adds accounts at 400 a second at first, slowing as
// the domain grows, so a population is made once per machine and cached beside the template
// domain (see LaunchPopulated).
type Population struct {
	Users int
	Bulk  int
}

// BulkName is the sAMAccountName of the population's bulk account i (0 ≤ i < Bulk).
func (Population) BulkName(i int) string { return fmt.Sprintf("bulk%06d", i) }

// Bulk group fan-out (Population).
const (
	bulkLeaves = 1000
	bulkMids   = 100
	bulkTops   = 10
)

// UserName is the sAMAccountName of the population's user i (0 ≤ i < Users).
func (Population) UserName(i int) string { return fmt.Sprintf("storm%06d", i) }

// StartPopulatedDC is LaunchPopulated for tests: the DC stops and its files go when the test ends.
func StartPopulatedDC(t testing.TB, p Population) (*DC, *Sample) {
	t.Helper()
	needSamba(t)
	dc, s, err := LaunchPopulated(p)
	if err != nil {
		t.Fatalf("ldaptest: %v", err)
	}
	t.Cleanup(dc.Close)
	return dc, s
}

// LaunchPopulated starts a DC holding the sample domain and population p, from a copy of the
// population's cached directory ($TMPDIR/aeappliance-samba-<hash>-pop-<hash>, made on the
// machine's first call: a domain provisioned with Samba's lmdb store, the sample seeded and the
// users added over LDAP, the DC stopped, its files kept). The caller stops it with Close.
func LaunchPopulated(p Population) (*DC, *Sample, error) {
	if p.Users < 0 || p.Bulk < 0 {
		return nil, nil, fmt.Errorf("population of %d users and %d bulk accounts", p.Users, p.Bulk)
	}
	if err := haveSamba(); err != nil {
		return nil, nil, fmt.Errorf("samba is not installed (%v): run `make deps`", err)
	}
	samba, _ := exec.LookPath("samba")
	base, err := templateDir(samba, true)
	if err != nil {
		return nil, nil, fmt.Errorf("provisioning the template domain: %w", err)
	}
	// The sample's recipe is part of the name: change the sample and populations are made again.
	recipe := fmt.Appendf(nil, "%#v %#v %#v %d", sampleGroups, sampleUsers, sampleTemplates, p.Users)
	if p.Bulk > 0 {
		recipe = fmt.Appendf(recipe, " bulk %d %d %d %d", p.Bulk, bulkLeaves, bulkMids, bulkTops)
	}
	h := sha256.Sum256(recipe)
	dir := base + "-pop-" + hex.EncodeToString(h[:6])
	if err := populate(dir, base, p); err != nil {
		return nil, nil, fmt.Errorf("making the population of %d users and %d bulk accounts: %w", p.Users, p.Bulk, err)
	}
	dc, err := launchFrom(dir)
	if err != nil {
		return nil, nil, err
	}
	conn, err := dc.dialAdmin()
	if err != nil {
		dc.Close()
		return nil, nil, err
	}
	defer conn.Close()
	s, err := load(conn)
	if err != nil {
		dc.Close()
		return nil, nil, fmt.Errorf("reading the sample domain of the population: %w", err)
	}
	dc.sample = s
	return dc, s, nil
}

// populate makes the cached directory dir for p unless it is complete: an flock keeps test
// processes apart, a marker file tells a complete directory from a half-written one.
func populate(dir, base string, p Population) error {
	lock, err := os.OpenFile(dir+".lock", os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return err
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return fmt.Errorf("flock %s: %w", lock.Name(), err)
	}
	marker := filepath.Join(dir, ".complete")
	if _, err := os.Stat(marker); err == nil {
		return nil
	}
	os.RemoveAll(dir)
	dc, err := launchFrom(base)
	if err != nil {
		return err
	}
	defer dc.Close()
	if _, err := dc.SeedSample(); err != nil {
		return err
	}
	conn, err := dc.dialAdmin()
	if err != nil {
		return err
	}
	defer conn.Close()
	start := time.Now()
	var batch []string
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		req := goldap.NewModifyRequest(groupDN("PKI-Users", nil), nil)
		req.Add("member", batch)
		batch = batch[:0]
		return conn.Modify(req)
	}
	for i := range p.Users {
		u, attrs := userEntry(userSpec{Name: p.UserName(i), OU: StaffOU})
		if err := add(conn, u.DN, attrs); err != nil {
			return err
		}
		if batch = append(batch, u.DN); len(batch) == 500 {
			if err := flush(); err != nil {
				return fmt.Errorf("adding users to PKI-Users: %w", err)
			}
		}
		if i > 0 && i%2000 == 0 {
			fmt.Fprintf(os.Stderr, "ldaptest: %d of %d users added (%s)\n", i, p.Users, time.Since(start).Round(time.Second))
		}
	}
	if err := flush(); err != nil {
		return fmt.Errorf("adding users to PKI-Users: %w", err)
	}
	if p.Bulk > 0 {
		if err := addBulk(conn, p); err != nil {
			return err
		}
	}
	conn.Close()
	dc.stop()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if out, err := exec.Command("cp", "-a", dc.Dir+"/.", dir).CombinedOutput(); err != nil {
		os.RemoveAll(dir)
		return fmt.Errorf("keeping the population: %v: %s", err, out)
	}
	// What launchFrom writes anew for each DC (address, TLS, logs, sockets) is not kept.
	for _, d := range []string{"log", "run", "tls"} {
		os.RemoveAll(filepath.Join(dir, d))
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return err
		}
	}
	return os.WriteFile(marker, nil, 0o644)
}

// addBulk adds the population's bulk accounts and their groups over LDAP. Samba's adds slow down as
// the domain grows (each rewrites index records that list every user, and every child of the
// OU): about 400 a second at first, 150 at 15,000 accounts.
func addBulk(conn *goldap.Conn, p Population) error {
	bulkOU := "OU=Bulk," + BaseDN
	if err := add(conn, bulkOU, map[string][]string{"objectClass": {"organizationalUnit"}, "ou": {"Bulk"}}); err != nil {
		return err
	}
	group := func(level string, i int) string { return fmt.Sprintf("CN=Bulk-%s-%04d,%s", level, i, GroupsOU) }
	members := map[string][]string{}
	for _, g := range []struct {
		level  string
		n      int
		parent func(int) string
	}{
		{"Top", bulkTops, func(int) string { return groupDN("PKI-Users", nil) }},
		{"Mid", bulkMids, func(i int) string { return group("Top", i%bulkTops) }},
		{"Leaf", bulkLeaves, func(i int) string { return group("Mid", i%bulkMids) }},
	} {
		for i := range g.n {
			dn := group(g.level, i)
			if err := add(conn, dn, map[string][]string{"objectClass": {"group"},
				"sAMAccountName": {fmt.Sprintf("Bulk-%s-%04d", g.level, i)}}); err != nil {
				return err
			}
			members[g.parent(i)] = append(members[g.parent(i)], dn)
		}
	}
	start := time.Now()
	for i := range p.Bulk {
		name := p.BulkName(i)
		upn := name + "@" + DomainDNS
		dn := "CN=" + name + "," + bulkOU
		if err := add(conn, dn, map[string][]string{"objectClass": {"user"}, "sAMAccountName": {name},
			"userPrincipalName": {upn}, "mail": {upn},
			"userAccountControl": {"66080"}, // NORMAL_ACCOUNT | DONT_EXPIRE_PASSWORD | PASSWD_NOTREQD
		}); err != nil {
			return err
		}
		leaf := group("Leaf", i%bulkLeaves)
		members[leaf] = append(members[leaf], dn)
		if i > 0 && i%5000 == 0 {
			fmt.Fprintf(os.Stderr, "ldaptest: %d of %d bulk accounts added (%s)\n", i, p.Bulk, time.Since(start).Round(time.Second))
		}
	}
	for g, dns := range members {
		for len(dns) > 0 {
			n := min(len(dns), 500)
			req := goldap.NewModifyRequest(g, nil)
			req.Add("member", dns[:n])
			if err := conn.Modify(req); err != nil {
				return fmt.Errorf("adding members to %s: %w", g, err)
			}
			dns = dns[n:]
		}
	}
	return nil
}
