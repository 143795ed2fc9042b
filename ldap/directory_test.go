package ldap_test

import (
	"bytes"
	"context"
	"errors"
	"slices"
	"strings"
	"testing"

	goldap "github.com/go-ldap/ldap/v3"

	"github.com/enrollment-appliance/aeappliance/ldap"
	"github.com/enrollment-appliance/aeappliance/ldap/ldaptest"
	"github.com/enrollment-appliance/aeappliance/ldap/secdesc"
)

func TestEnrollmentService(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	es, err := e.c.EnrollmentService(ctx, ldaptest.CACN)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.EqualFold(es.DN, e.s.EnrollmentServiceDN) || es.CN != ldaptest.CACN || es.DNSHostName != ldaptest.CADNSName {
		t.Errorf("EnrollmentService() = %+v", es)
	}
	got, want := slices.Sorted(slices.Values(es.CertificateTemplates)), slices.Sorted(slices.Values(e.s.Offered))
	if !slices.Equal(got, want) {
		t.Errorf("EnrollmentService().CertificateTemplates = %v, want %v", got, want)
	}
	if _, err := e.c.EnrollmentService(ctx, "No Such CA"); !errors.Is(err, ldap.ErrNotFound) {
		t.Errorf("EnrollmentService(No Such CA) = %v, want ErrNotFound", err)
	}
	if _, err := e.c.EnrollmentService(ctx, "x,CN=Users"); !errors.Is(err, ldap.ErrNotFound) {
		t.Errorf("EnrollmentService(with a comma) = %v, want ErrNotFound", err)
	}
}

func TestTemplates(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	names := append(slices.Clone(e.s.Offered), "NoSuchTemplate", "AEUser")
	got, err := e.c.Templates(ctx, names)
	if err != nil {
		t.Fatal(err)
	}
	var cns []string
	for _, tm := range got {
		cns = append(cns, tm.Get("cn"))
	}
	if !slices.Equal(cns, e.s.Offered) {
		t.Fatalf("Templates(%v) returned %v, want %v", names, cns, e.s.Offered)
	}
	for _, tm := range got {
		want := e.s.Templates[tm.Get("cn")]
		raw := tm.Raw("nTSecurityDescriptor")
		if len(raw) != 1 {
			t.Errorf("%s: %d nTSecurityDescriptor values", want.CN, len(raw))
			continue
		}
		sd, err := secdesc.Parse(raw[0])
		if err != nil {
			t.Errorf("%s: secdesc.Parse(nTSecurityDescriptor) = %v", want.CN, err)
			continue
		}
		if sd.DACL == nil || sd.Owner == nil {
			t.Errorf("%s: security descriptor without DACL or owner: %+v", want.CN, sd)
			continue
		}
		for _, w := range want.ACL {
			if !slices.ContainsFunc(sd.DACL.ACEs, func(a secdesc.ACE) bool { return sameACE(a, w) }) {
				t.Errorf("%s: DACL lacks the ACE we wrote %+v (SID %s); it has %d ACEs", want.CN, w, w.SID, len(sd.DACL.ACEs))
			}
		}
		if tm.Get("msPKI-Cert-Template-OID") != want.OID {
			t.Errorf("%s: msPKI-Cert-Template-OID = %q, want %q", want.CN, tm.Get("msPKI-Cert-Template-OID"), want.OID)
		}
	}

	aeUser := got[slices.IndexFunc(got, func(e ldap.Entry) bool { return e.Get("cn") == "AEUser" })]
	for _, tc := range []struct{ attr, want string }{
		{"revision", "100"},
		{"msPKI-Template-Minor-Revision", "3"},
		{"msPKI-Template-Schema-Version", "2"},
		{"msPKI-Minimal-Key-Size", "2048"},
		{"msPKI-Enrollment-Flag", "40"},                // AUTO_ENROLLMENT | PUBLISH_TO_DS
		{"msPKI-Certificate-Name-Flag", "-2046820352"}, // 0x86000000 as AD's signed int32
		{"pKIExpirationPeriod", "\x00\x40\x39\x87\x2e\xe1\xfe\xff"},
		{"pKIOverlapPeriod", "\x00\x80\xa6\x0a\xff\xde\xff\xff"},
	} {
		if got := aeUser.Get(tc.attr); got != tc.want {
			t.Errorf("AEUser %s = %q, want %q", tc.attr, got, tc.want)
		}
	}
	if ekus := aeUser.GetAll("pKIExtendedKeyUsage"); !slices.Equal(slices.Sorted(slices.Values(ekus)),
		[]string{ldaptest.EKUClientAuth, ldaptest.EKUEmailProtection}) {
		t.Errorf("AEUser pKIExtendedKeyUsage = %v", ekus)
	}
	v2, _ := e.c.Templates(ctx, []string{"AEUserV2"})
	if len(v2) != 1 || v2[0].Get("msPKI-Supersede-Templates") != "AEUser" {
		t.Errorf("AEUserV2 msPKI-Supersede-Templates = %v", v2)
	}
	if got, err := e.c.Templates(ctx, []string{"*", "AEUser)(cn=*"}); err != nil || len(got) != 0 {
		t.Errorf("Templates(filter metacharacters) = %d entries, %v; want none", len(got), err)
	}
}

func TestAccount(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	s := e.s
	for _, tc := range []struct {
		name     string
		want     ldaptest.Principal
		computer bool
	}{
		{"alice", s.Alice, false},
		{"ALICE", s.Alice, false},
		{"alice@corp.example.test", s.Alice, false},
		{"Alice@CORP.EXAMPLE.TEST", s.Alice, false},
		{s.Alice.DN, s.Alice, false},
		{strings.ToLower(s.Alice.DN), s.Alice, false},
		{"WS1$", s.WS1, true},
		{"ws1$@corp.example.test", s.WS1, true}, // implicit UPN: sAMAccountName@domain
		{s.WS1.DN, s.WS1, true},
		{"erin", s.Erin, false},
		{ldap.SIDAccount(s.Alice.SID), s.Alice, false},
		{ldap.SIDAccount(s.WS1.SID), s.WS1, true},
		{ldaptest.Domain + `\alice`, s.Alice, false}, // the down-level name enroll-on-behalf requests carry
		{strings.ToLower(ldaptest.Domain) + `\WS1$`, s.WS1, true},
		{`corp.example.test\alice`, s.Alice, false},
	} {
		a, err := e.c.Account(ctx, tc.name)
		if err != nil {
			t.Errorf("Account(%q) = %v", tc.name, err)
			continue
		}
		if !strings.EqualFold(a.DN, tc.want.DN) || !a.SID.Equal(tc.want.SID) || a.Computer != tc.computer {
			t.Errorf("Account(%q) = %s %s computer=%v, want %s %s computer=%v", tc.name, a.DN, a.SID, a.Computer,
				tc.want.DN, tc.want.SID, tc.computer)
		}
		if len(a.GUID) != 16 {
			t.Errorf("Account(%q).GUID = %x, want 16 bytes", tc.name, a.GUID)
		}
		for _, g := range []secdesc.SID{secdesc.AuthenticatedUsers, secdesc.Everyone} {
			if !containsSID(a.Groups, g) {
				t.Errorf("Account(%q).Groups lacks %s", tc.name, g)
			}
		}
		if a.Disabled() {
			t.Errorf("Account(%q).Disabled() = true", tc.name)
		}
	}

	// A SID names only an account with that objectSid: not a group's, not one of another domain,
	// and a name that merely looks like the SID form is not one.
	for _, name := range []string{ldap.SIDAccount(s.PKIUsers.SID), ldap.SIDAccount(secdesc.MustParseSID("S-1-5-21-1-2-3-1104")),
		"<SID=" + s.Alice.SID.String(), "<SID=alice>", `OTHERDOM\alice`, ldaptest.Domain + `\`, ldaptest.Domain + `\x\alice`} {
		if a, err := e.c.Account(ctx, name); !errors.Is(err, ldap.ErrNotFound) {
			t.Errorf("Account(%q) = %v, %v; want ErrNotFound", name, a, err)
		}
	}

	alice, _ := e.c.Account(ctx, "alice")
	for _, g := range []ldaptest.Principal{s.PKIUsers, s.PKIUsersNested} {
		if !containsSID(alice.Groups, g.SID) {
			t.Errorf("alice's groups lack %s (%s)", g.Name, g.SID)
		}
	}
	for _, g := range []secdesc.SID{s.DomainUsers} {
		if !containsSID(alice.Groups, g) {
			t.Errorf("alice's groups lack Domain Users %s", g)
		}
	}
	if containsSID(alice.Groups, s.DeniedGroup.SID) || containsSID(alice.Groups, alice.SID) {
		t.Errorf("alice's groups contain Denied-Group or herself: %v", alice.Groups)
	}
	seen := map[string]bool{}
	for _, g := range alice.Groups {
		if seen[g.String()] {
			t.Errorf("alice's groups list %s twice", g)
		}
		seen[g.String()] = true
	}
	if got := alice.SIDs(); !got[0].Equal(alice.SID) || len(got) != len(alice.Groups)+1 {
		t.Errorf("alice.SIDs() = %v", got)
	}
	for _, tc := range []struct{ attr, want string }{
		{"userPrincipalName", s.Alice.UPN}, {"mail", s.Alice.Mail}, {"sAMAccountName", "alice"},
		{"givenName", "Alice"}, {"sn", "Archer"}, {"distinguishedName", s.Alice.DN},
	} {
		if got := alice.Get(tc.attr); !strings.EqualFold(got, tc.want) {
			t.Errorf("alice %s = %q, want %q", tc.attr, got, tc.want)
		}
	}

	erin, _ := e.c.Account(ctx, "erin")
	if ous := erin.GetAll("ou"); !slices.Equal(slices.Sorted(slices.Values(ous)), []string{"Datacenter", "PKI Team"}) {
		t.Errorf("erin ou = %v, want both values", ous)
	}
	if erin.Get("title") != "Network Engineer" || erin.Get("department") != "Infrastructure" {
		t.Errorf("erin title, department = %q, %q", erin.Get("title"), erin.Get("department"))
	}

	ws1, _ := e.c.Account(ctx, "WS1$")
	if ws1.Get("dNSHostName") != "ws1.corp.example.test" || !slices.Contains(ws1.GetAll("servicePrincipalName"), "HOST/ws1.corp.example.test") {
		t.Errorf("WS1$ dNSHostName, SPNs = %q, %q", ws1.Get("dNSHostName"), ws1.GetAll("servicePrincipalName"))
	}
	if !containsSID(ws1.Groups, s.DomainComputers) {
		t.Errorf("WS1$'s groups lack Domain Computers")
	}

	deep, err := e.c.Account(ctx, "deep50")
	if err != nil {
		t.Fatal(err)
	}
	for _, g := range append(slices.Clone(s.Nest), s.PKIUsers) {
		if !containsSID(deep.Groups, g.SID) {
			t.Errorf("deep50's groups lack %s", g.Name)
		}
	}

	// Extra attributes by name.
	bob, err := e.c.Account(ctx, "bob", "whenCreated", "memberOf")
	if err != nil || bob.Get("whenCreated") == "" || len(bob.GetAll("memberOf")) != 1 {
		t.Errorf("Account(bob, whenCreated, memberOf) = %v, %v", bob, err)
	}

	for _, name := range []string{"nobody", "*", "al*", "*)(objectClass=*", "alice)(|(sAMAccountName=*",
		"nobody@corp.example.test", "alice@other.example", "", "PKI-Users", s.PKIUsers.DN,
		"CN=nobody," + ldaptest.StaffOU, "CN=nobody,DC=nowhere"} {
		if a, err := e.c.Account(ctx, name); !errors.Is(err, ldap.ErrNotFound) {
			t.Errorf("Account(%q) = %v, %v; want ErrNotFound", name, a, err)
		}
	}
}

// Samba refuses duplicate UPNs and UPNs that collide with another account's implicit one
// (sAMAccountName@domain), so ambiguity and precedence cannot be provoked on the DC: check the choice directly.
func TestPickAccount(t *testing.T) {
	t.Parallel()
	entry := func(dn, upn string) ldap.Entry {
		return ldap.Entry{DN: dn, Attrs: map[string][][]byte{"userprincipalname": {[]byte(upn)}}}
	}
	if _, err := ldap.PickAccount("x@corp.example.test", []ldap.Entry{entry("CN=a", "x@corp.example.test"),
		entry("CN=b", "X@corp.example.test")}); !errors.Is(err, ldap.ErrAmbiguous) {
		t.Errorf("pickAccount(two entries with that UPN) = %v, want ErrAmbiguous", err)
	}
	if e, err := ldap.PickAccount("x@corp.example.test", []ldap.Entry{entry("CN=implicit", ""),
		entry("CN=explicit", "x@corp.example.test")}); err != nil || e.DN != "CN=explicit" {
		t.Errorf("pickAccount(implicit and explicit UPN) = %v, %v; want the explicit one", e.DN, err)
	}
	if _, err := ldap.PickAccount("x", []ldap.Entry{entry("CN=a", ""), entry("CN=b", "")}); !errors.Is(err, ldap.ErrAmbiguous) {
		t.Errorf("pickAccount(two sAMAccountName matches) = %v, want ErrAmbiguous", err)
	}
}

func TestPublishCertificate(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	admin := e.dc.Admin(t)
	read := func(dn string) [][]byte {
		t.Helper()
		res, err := admin.Search(goldap.NewSearchRequest(dn, goldap.ScopeBaseObject, goldap.NeverDerefAliases, 0, 0,
			false, "(objectClass=*)", []string{"userCertificate"}, nil))
		if err != nil {
			t.Fatal(err)
		}
		return res.Entries[0].GetRawAttributeValues("userCertificate")
	}
	certA, certB := []byte("\x30\x03\x02\x01\x01 not a real certificate A"), []byte("\x30\x03\x02\x01\x02 B")
	for _, who := range []ldaptest.Principal{e.s.Alice, e.s.WS1} {
		for _, der := range [][]byte{certA, certB, certA} { // the second certA: already there, no error
			if err := e.c.PublishCertificate(ctx, who.DN, der); err != nil {
				t.Fatalf("PublishCertificate(%s) as svc-enroll = %v", who.Name, err)
			}
		}
		if got := read(who.DN); len(got) != 2 || !slices.ContainsFunc(got, func(b []byte) bool { return bytes.Equal(b, certA) }) {
			t.Errorf("%s userCertificate after publishing = %q, want A and B", who.Name, got)
		}
		for range 2 { // the second time: absent, no error
			if err := e.c.UnpublishCertificate(ctx, who.DN, certA); err != nil {
				t.Fatalf("UnpublishCertificate(%s) = %v", who.Name, err)
			}
		}
		if got := read(who.DN); len(got) != 1 || !bytes.Equal(got[0], certB) {
			t.Errorf("%s userCertificate after unpublishing A = %q, want only B", who.Name, got)
		}
	}
	if err := e.c.PublishCertificate(ctx, "CN=nobody,"+ldaptest.StaffOU, certA); !errors.Is(err, ldap.ErrNotFound) {
		t.Errorf("PublishCertificate(no such object) = %v, want ErrNotFound", err)
	}
	// The cache does not hide what we published: an account read with userCertificate sees it.
	a, err := e.c.Account(ctx, e.s.Alice.DN, "userCertificate")
	if err != nil || len(a.Raw("userCertificate")) != 1 {
		t.Errorf("Account(alice, userCertificate) = %v, %v", a, err)
	}
	if err := e.c.PublishCertificate(ctx, e.s.Alice.DN, certA); err != nil {
		t.Fatal(err)
	}
	if a, _ := e.c.Account(ctx, e.s.Alice.DN, "userCertificate"); len(a.Raw("userCertificate")) != 2 {
		t.Errorf("after publishing, the cached account still shows %d certificates", len(a.Raw("userCertificate")))
	}
}

// TestPrincipal: users, computers and groups by name, down-level name, UPN, DN or SID text; an
// unknown name is ErrNotFound.
func TestPrincipal(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	s := e.s
	for _, tc := range []struct {
		name string
		want ldaptest.Principal
	}{
		{"alice", s.Alice}, {ldaptest.Domain + `\alice`, s.Alice}, {"alice@corp.example.test", s.Alice}, {s.Alice.SID.String(), s.Alice},
		{"PKI-Users", s.PKIUsers}, {ldaptest.Domain + `\PKI-Users`, s.PKIUsers}, {s.PKIUsers.DN, s.PKIUsers}, {"WS1$", s.WS1},
	} {
		sid, name, err := e.c.Principal(ctx, tc.name)
		if err != nil || !sid.Equal(tc.want.SID) || !strings.EqualFold(name, tc.want.Name) {
			t.Errorf("Principal(%q) = %s %q %v, want %s %s", tc.name, sid, name, err, tc.want.SID, tc.want.Name)
		}
	}
	for _, name := range []string{"nobody-here", `OTHER\alice`, "S-1-5-21-1-2-3-4"} {
		if _, _, err := e.c.Principal(ctx, name); !errors.Is(err, ldap.ErrNotFound) {
			t.Errorf("Principal(%q) = %v, want ErrNotFound", name, err)
		}
	}
}
