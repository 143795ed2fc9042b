package ldaptest

import (
	"cmp"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf16"

	goldap "github.com/go-ldap/ldap/v3"

	"github.com/enrollment-appliance/aeappliance/ldap/secdesc"
)

// Admin opens an LDAPS connection bound as Administrator, closed when the test ends.
func (dc *DC) Admin(t testing.TB) *goldap.Conn {
	t.Helper()
	conn, err := dc.dialAdmin()
	if err != nil {
		t.Fatalf("ldaptest: %v", err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

func (dc *DC) dialAdmin() (*goldap.Conn, error) {
	pem, err := os.ReadFile(dc.CAFile)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	conn, err := goldap.DialURL(dc.LDAPSURL, goldap.DialWithTLSConfig(&tls.Config{RootCAs: pool, ServerName: DCDNSName}))
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", dc.LDAPSURL, err)
	}
	conn.SetTimeout(30 * time.Second)
	if err := conn.Bind(dc.AdminUser, dc.AdminPassword); err != nil {
		conn.Close()
		return nil, fmt.Errorf("bind as %s: %w", dc.AdminUser, err)
	}
	return conn, nil
}

// Seed creates the sample domain (sample.go) over LDAP as Administrator and returns it. Seeding twice
// returns the first result.
func (dc *DC) Seed(t testing.TB) *Sample {
	t.Helper()
	s, err := dc.SeedSample()
	if err != nil {
		t.Fatalf("ldaptest: %v", err)
	}
	return s
}

// SeedSample is Seed for programs that are not tests.
func (dc *DC) SeedSample() (*Sample, error) {
	dc.mu.Lock()
	defer dc.mu.Unlock()
	if dc.sample != nil {
		return dc.sample, nil
	}
	conn, err := dc.dialAdmin()
	if err != nil {
		return nil, fmt.Errorf("seeding: %w", err)
	}
	defer conn.Close()
	if err := create(conn); err != nil {
		return nil, fmt.Errorf("seeding the sample domain: %w", err)
	}
	s, err := load(conn)
	if err != nil {
		return nil, fmt.Errorf("reading the seeded sample domain: %w", err)
	}
	dc.sample = s
	return s, nil
}

// Password is the sample password of an account.
func Password(name string) string { return "Passw0rd-" + strings.TrimSuffix(name, "$") + "!" }

// create adds the sample domain's objects: OUs, groups and their members, users, the computer,
// the templates (whose ACLs need the SIDs the objects got) and the enrollment service.
func create(conn *goldap.Conn) error {
	byName, err := wellKnown(conn)
	if err != nil {
		return err
	}
	for _, ou := range []string{StaffOU, GroupsOU, ComputersOU, ServiceOU} {
		name, _, _ := strings.Cut(strings.TrimPrefix(ou, "OU="), ",")
		if err := add(conn, ou, map[string][]string{"objectClass": {"organizationalUnit"}, "ou": {name}}); err != nil {
			return err
		}
	}
	members := map[string][]string{} // group name → member DNs
	for _, g := range sampleGroups {
		dn := "CN=" + g.Name + "," + GroupsOU
		if err := add(conn, dn, map[string][]string{"objectClass": {"group"}, "sAMAccountName": {g.Name}}); err != nil {
			return err
		}
		for _, parent := range g.MemberOf {
			members[parent] = append(members[parent], dn)
		}
	}
	for _, u := range sampleUsers {
		p, attrs := userEntry(u)
		if err := add(conn, p.DN, attrs); err != nil {
			return err
		}
		for _, parent := range u.MemberOf {
			members[parent] = append(members[parent], p.DN)
		}
	}
	for group, dns := range members {
		req := goldap.NewModifyRequest(groupDN(group, byName), nil)
		req.Add("member", dns)
		if err := conn.Modify(req); err != nil {
			return fmt.Errorf("adding members to %s: %w", group, err)
		}
	}
	if err := principals(conn, byName); err != nil {
		return err
	}
	var offered []string
	for _, ts := range sampleTemplates {
		_, attrs, err := templateEntry(ts, byName)
		if err != nil {
			return err
		}
		if err := add(conn, "CN="+ts.CN+","+TemplatesDN, attrs); err != nil {
			return err
		}
		if !ts.NotOffered {
			offered = append(offered, ts.CN)
		}
	}
	return add(conn, EnrollSvcDN, map[string][]string{"objectClass": {"pKIEnrollmentService"},
		"dNSHostName": {CADNSName}, "certificateTemplates": offered, "flags": {"10"}})
}

// groupDN is the DN of a sample group or well-known group by name.
func groupDN(name string, wellKnown map[string]Principal) string {
	if p, ok := wellKnown[name]; ok {
		return p.DN
	}
	return "CN=" + name + "," + GroupsOU
}

// wellKnown reads the domain's SID and returns the well-known principals the sample names.
func wellKnown(conn *goldap.Conn) (map[string]Principal, error) {
	domain, err := readSID(conn, BaseDN)
	if err != nil {
		return nil, err
	}
	rid := func(r uint32) secdesc.SID {
		return secdesc.SID{Revision: 1, Authority: 5, Sub: append(append([]uint32(nil), domain.Sub...), r)}
	}
	return map[string]Principal{
		"":                 {SID: domain}, // the domain itself
		AuthenticatedUsers: {Name: AuthenticatedUsers, SID: secdesc.AuthenticatedUsers},
		DomainAdmins:       {Name: DomainAdmins, DN: "CN=Domain Admins,CN=Users," + BaseDN, SID: rid(512)},
		DomainUsers:        {Name: DomainUsers, DN: "CN=Domain Users,CN=Users," + BaseDN, SID: rid(513)},
		DomainComputers:    {Name: DomainComputers, DN: "CN=Domain Computers,CN=Users," + BaseDN, SID: rid(515)},
		CertPublishers:     {Name: CertPublishers, DN: "CN=Cert Publishers,CN=Users," + BaseDN, SID: rid(517)},
	}, nil
}

// principals adds the sample's groups and accounts, with the SIDs the DC gave them, to byName.
func principals(conn *goldap.Conn, byName map[string]Principal) error {
	for _, g := range sampleGroups {
		byName[g.Name] = Principal{Name: g.Name, DN: "CN=" + g.Name + "," + GroupsOU}
	}
	for _, u := range sampleUsers {
		p, _ := userEntry(u)
		byName[p.Name] = p
	}
	for name, p := range byName {
		if p.DN == "" || p.SID.Revision != 0 {
			continue // the domain, and well-known principals whose SIDs are known
		}
		var err error
		if p.SID, err = readSID(conn, p.DN); err != nil {
			return err
		}
		byName[name] = p
	}
	return nil
}

// load reads the sample domain back from a DC that holds it (seeded now, or copied from a cache).
func load(conn *goldap.Conn) (*Sample, error) {
	byName, err := wellKnown(conn)
	if err != nil {
		return nil, err
	}
	s := &Sample{CACN: CACN, EnrollmentServiceDN: EnrollSvcDN, TemplatesDN: TemplatesDN,
		Templates: map[string]Template{}, byName: byName, DomainSID: byName[""].SID}
	delete(byName, "")
	s.DomainAdmins, s.DomainUsers = byName[DomainAdmins].SID, byName[DomainUsers].SID
	s.DomainComputers, s.CertPublishers = byName[DomainComputers].SID, byName[CertPublishers].SID
	if err := principals(conn, byName); err != nil {
		return nil, err
	}
	for _, ts := range sampleTemplates {
		tmpl, _, err := templateEntry(ts, byName)
		if err != nil {
			return nil, err
		}
		s.Templates[ts.CN] = tmpl
		if !ts.NotOffered {
			s.Offered = append(s.Offered, ts.CN)
		}
	}
	get := func(n string) Principal { return s.byName[n] }
	s.Alice, s.Bob, s.Carol, s.Dave, s.Erin = get("alice"), get("bob"), get("carol"), get("dave"), get("erin")
	s.Deep50, s.SvcEnroll, s.WS1 = get("deep50"), get("svc-enroll"), get("WS1$")
	s.PKIUsers, s.PKIUsersNested, s.DeniedGroup = get("PKI-Users"), get("PKI-Users-Nested"), get("Denied-Group")
	for k := 1; k <= NestDepth; k++ {
		s.Nest = append(s.Nest, get(NestName(k)))
	}
	return s, nil
}

func userEntry(u userSpec) (Principal, map[string][]string) {
	p := Principal{Name: u.Name, DN: "CN=" + u.Name + "," + u.OU, Password: Password(u.Name)}
	attrs := map[string][]string{"unicodePwd": {unicodePwd(p.Password)}}
	if u.Computer {
		p.Name = strings.ToUpper(u.Name) + "$"
		attrs["objectClass"] = []string{"computer"}
		attrs["userAccountControl"] = []string{"4096"} // WORKSTATION_TRUST_ACCOUNT
	} else {
		p.UPN = u.Name + "@" + DomainDNS
		attrs["objectClass"] = []string{"user"}
		attrs["userAccountControl"] = []string{"66048"} // NORMAL_ACCOUNT | DONT_EXPIRE_PASSWORD
		attrs["userPrincipalName"] = []string{p.UPN}
		if !u.NoMail {
			p.Mail = p.UPN
			attrs["mail"] = []string{p.Mail}
		}
	}
	attrs["sAMAccountName"] = []string{p.Name}
	for k, v := range u.Attrs {
		attrs[k] = v
	}
	return p, attrs
}

func templateEntry(ts templateSpec, byName map[string]Principal) (Template, map[string][]string, error) {
	t := Template{CN: ts.CN, DN: "CN=" + ts.CN + "," + TemplatesDN,
		OID: fmt.Sprintf("%s.%d.%d", templateOIDv2, ts.OIDArc, ts.OIDArc*7)}
	t.ACL = []secdesc.ACE{secdesc.AllowAll(byName[DomainAdmins].SID)}
	for _, a := range ts.ACL {
		p, ok := byName[a.Who]
		if !ok {
			return t, nil, fmt.Errorf("template %s: unknown principal %q", ts.CN, a.Who)
		}
		switch a.Kind {
		case allowRead:
			t.ACL = append(t.ACL, secdesc.AllowRead(p.SID))
		case allowEnroll:
			t.ACL = append(t.ACL, secdesc.AllowEnroll(p.SID))
		case allowAutoenroll:
			t.ACL = append(t.ACL, secdesc.AllowAutoenroll(p.SID))
		case denyEnroll:
			t.ACL = append(t.ACL, secdesc.DenyEnroll(p.SID))
		}
	}
	// Canonical order, as Windows' ACL editor writes it: explicit deny ACEs before allow ACEs. Then
	// "deny wins" and Windows' first-match evaluation agree.
	deny := func(a secdesc.ACE) int {
		if a.Type == secdesc.AccessDeniedObject || a.Type == secdesc.AccessDenied {
			return 0
		}
		return 1
	}
	slices.SortStableFunc(t.ACL, func(a, b secdesc.ACE) int { return cmp.Compare(deny(a), deny(b)) })
	da := byName[DomainAdmins].SID
	sd := &secdesc.SD{Control: secdesc.ControlDACLPresent | secdesc.ControlDACLProtect | secdesc.ControlSelfRelative,
		Owner: &da, Group: &da, DACL: &secdesc.ACL{ACEs: t.ACL}}
	sdBytes, err := sd.Marshal()
	if err != nil {
		return t, nil, fmt.Errorf("template %s: %w", ts.CN, err)
	}
	itoa := func(v int) []string { return []string{strconv.Itoa(v)} }
	// AD stores these 32-bit flags as signed integers.
	flag := func(v uint32) []string { return []string{strconv.Itoa(int(int32(v)))} }
	attrs := map[string][]string{
		"objectClass":                          {"pKICertificateTemplate"},
		"displayName":                          {ts.CN},
		"nTSecurityDescriptor":                 {string(sdBytes)},
		"flags":                                flag(ts.General),
		"revision":                             itoa(ts.Major),
		"msPKI-Template-Minor-Revision":        itoa(ts.Minor),
		"msPKI-Template-Schema-Version":        itoa(ts.Schema),
		"msPKI-Cert-Template-OID":              {t.OID},
		"pKIExpirationPeriod":                  {period(ts.Validity)},
		"pKIOverlapPeriod":                     {period(ts.Renewal)},
		"pKIExtendedKeyUsage":                  ts.EKUs,
		"msPKI-Certificate-Application-Policy": ts.EKUs,
		"msPKI-Certificate-Name-Flag":          flag(ts.NameFlag),
		"msPKI-Enrollment-Flag":                flag(ts.EnrollFlag),
		"msPKI-Private-Key-Flag":               flag(ts.PrivateKeyFlag),
		"msPKI-Minimal-Key-Size":               itoa(ts.MinKeySize),
		"msPKI-RA-Signature":                   {"0"},
		"pKIDefaultKeySpec":                    {"1"},
		"pKIMaxIssuingDepth":                   {"0"},
		"pKIKeyUsage":                          {"\xa0\x00"}, // digitalSignature | keyEncipherment
		"pKICriticalExtensions":                {"2.5.29.15"},
	}
	if len(ts.Supersedes) > 0 {
		attrs["msPKI-Supersede-Templates"] = ts.Supersedes
	}
	return t, attrs, nil
}

// period encodes a duration as pKIExpirationPeriod does: little-endian int64 of negative 100 ns units.
func period(d time.Duration) string {
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], uint64(-int64(d/100)))
	return string(b[:])
}

func unicodePwd(pw string) string {
	u := utf16.Encode([]rune(`"` + pw + `"`))
	b := make([]byte, 2*len(u))
	for i, c := range u {
		binary.LittleEndian.PutUint16(b[2*i:], c)
	}
	return string(b)
}

func add(conn *goldap.Conn, dn string, attrs map[string][]string) error {
	req := goldap.NewAddRequest(dn, nil)
	for k, v := range attrs {
		req.Attribute(k, v)
	}
	if err := conn.Add(req); err != nil {
		return fmt.Errorf("adding %s: %w", dn, err)
	}
	return nil
}

// AddUser creates an enabled user in ou with sAMAccountName name, Password(name), the
// userPrincipalName name@<domain> and membership of groups (by DN), as an administrator would.
func (dc *DC) AddUser(t testing.TB, ou, name string, groups ...string) Principal {
	t.Helper()
	conn := dc.Admin(t)
	p, attrs := userEntry(userSpec{Name: name, OU: ou, NoMail: true})
	if err := add(conn, p.DN, attrs); err != nil {
		t.Fatal(err)
	}
	for _, g := range groups {
		req := goldap.NewModifyRequest(g, nil)
		req.Add("member", []string{p.DN})
		if err := conn.Modify(req); err != nil {
			t.Fatalf("adding %s to %s: %v", name, g, err)
		}
	}
	sid, err := readSID(conn, p.DN)
	if err != nil {
		t.Fatal(err)
	}
	p.SID = sid
	return p
}

// AddComputer creates an enabled computer account in OU=Workstations with sAMAccountName NAME$,
// Password(name), primary group Domain Computers and attrs (dNSHostName, servicePrincipalName, ...),
// as an administrator (or a user within ms-DS-MachineAccountQuota) would.
func (dc *DC) AddComputer(t testing.TB, name string, attrs map[string][]string) Principal {
	t.Helper()
	conn := dc.Admin(t)
	p, entry := userEntry(userSpec{Name: name, OU: ComputersOU, Computer: true, Attrs: attrs})
	if err := add(conn, p.DN, entry); err != nil {
		t.Fatal(err)
	}
	sid, err := readSID(conn, p.DN)
	if err != nil {
		t.Fatal(err)
	}
	p.SID = sid
	return p
}

// SetUPNUnchecked gives the object dn the userPrincipalName upn by writing the domain partition's
// database directly (Samba's ldb Python binding, python3-ldb), past Samba's uniqueness checks: its
// samldb module refuses an explicit UPN equal to another account's explicit or implicit
// (sAMAccountName@domain) one. AD let such collisions be made before its 2021 uniqueness checks, and
// still does where dSHeuristics turns them off (DoNotVerifyUPNAndOrSPNUniqueness, MS-ADTS
// 6.1.1.2.4.1.2); tests use this to make one. The running DC sees the change at once.
func (dc *DC) SetUPNUnchecked(t testing.TB, dn, upn string) {
	t.Helper()
	const script = `
import sys, ldb
db = ldb.Ldb()
db.connect(sys.argv[1])
m = ldb.Message()
m.dn = ldb.Dn(db, sys.argv[2])
m["userPrincipalName"] = ldb.MessageElement([sys.argv[3]], ldb.FLAG_MOD_REPLACE, "userPrincipalName")
db.modify(m)
`
	partition := filepath.Join(dc.Dir, "private", "sam.ldb.d", strings.ToUpper(dc.BaseDN)+".ldb")
	if out, err := exec.Command("/usr/bin/python3", "-c", script, partition, dn, upn).CombinedOutput(); err != nil {
		t.Fatalf("ldaptest: writing userPrincipalName %s on %s past Samba's checks: %v\n%s", upn, dn, err, out)
	}
	res, err := dc.Admin(t).Search(goldap.NewSearchRequest(dn, goldap.ScopeBaseObject, goldap.NeverDerefAliases, 0, 0, false,
		"(objectClass=*)", []string{"userPrincipalName"}, nil))
	if err != nil || len(res.Entries) != 1 || res.Entries[0].GetAttributeValue("userPrincipalName") != upn {
		t.Fatalf("ldaptest: the DC does not show userPrincipalName %s on %s: %v", upn, dn, err)
	}
}

// DomainController is the DN and dNSHostName of the test DC's own computer object.
func (dc *DC) DomainController(t testing.TB) (dn, dnsHostName string) {
	t.Helper()
	res, err := dc.Admin(t).Search(goldap.NewSearchRequest("OU=Domain Controllers,"+BaseDN, goldap.ScopeSingleLevel,
		goldap.NeverDerefAliases, 0, 0, false, "(objectClass=computer)", []string{"dNSHostName"}, nil))
	if err != nil || len(res.Entries) != 1 {
		t.Fatalf("finding the domain controller's computer object: %v (%d entries)", err, len(res.Entries))
	}
	return res.Entries[0].DN, res.Entries[0].GetAttributeValue("dNSHostName")
}

func readSID(conn *goldap.Conn, dn string) (secdesc.SID, error) {
	res, err := conn.Search(goldap.NewSearchRequest(dn, goldap.ScopeBaseObject, goldap.NeverDerefAliases, 0, 0,
		false, "(objectClass=*)", []string{"objectSid"}, nil))
	if err != nil {
		return secdesc.SID{}, fmt.Errorf("reading objectSid of %s: %w", dn, err)
	}
	if len(res.Entries) != 1 {
		return secdesc.SID{}, fmt.Errorf("reading objectSid of %s: %d entries", dn, len(res.Entries))
	}
	return secdesc.DecodeSID(res.Entries[0].GetRawAttributeValue("objectSid"))
}

// Keytab exports the Kerberos keys of an account (e.g. "svc-enroll") into a keytab file, as an administrator
// would with `samba-tool domain exportkeytab` (or ktpass on Windows), and returns its path.
func (dc *DC) Keytab(t testing.TB, account string) string {
	t.Helper()
	path := filepath.Join(dc.Dir, "private", account+".keytab")
	out, err := exec.Command("samba-tool", "domain", "exportkeytab", path, "--principal="+account+"@"+Realm,
		"-s", filepath.Join(dc.Dir, "etc", "smb.conf")).CombinedOutput()
	if err != nil {
		t.Fatalf("ldaptest: samba-tool domain exportkeytab %s: %v\n%s", account, err, out)
	}
	return path
}
