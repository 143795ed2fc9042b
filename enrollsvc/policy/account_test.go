package policy

import (
	"reflect"
	"strings"
	"testing"

	"github.com/enrollment-appliance/aeappliance/ldap/secdesc"
)

func TestParseAccount(t *testing.T) {
	a := alice(t)
	checks := []struct {
		name      string
		got, want any
	}{
		{"SID", a.SID.String(), domainSID + "-1104"},
		{"GUID (mixed-endian decoded)", a.GUIDString(), "6f0c3b2a-1d4e-4f5a-8b9c-0d1e2f3a4b5c"},
		{"GUIDWire", hexs(a.GUIDWire()), hexs(aliceGUID.Wire())},
		{"CN", a.CN, "Alice Adams"},
		{"UPN", a.UPN, "alice@corp.example.test"},
		{"Domain", a.Domain, "corp.example.test"},
		{"Computer", a.Computer, false},
		{"OUs", a.OUs, []string{"Engineering", "Platform"}},
		{"Values(employeeID)", a.Values("employeeID"), []string{"E-1234"}},
		{"Token length (self, 4 groups, AU, Everyone)", len(a.Token), 7},
	}
	for _, c := range checks {
		if !reflect.DeepEqual(c.got, c.want) {
			t.Errorf("ParseAccount(alice).%s = %v, want %v", c.name, c.got, c.want)
		}
	}
	// The wire bytes of the GUID are the first three fields little-endian.
	if w := hexs(aliceGUID.Wire()); w != "2a3b0c6f4e1d5a4f8b9c0d1e2f3a4b5c" {
		t.Errorf("GUID wire = %s, want 2a3b0c6f4e1d5a4f8b9c0d1e2f3a4b5c", w)
	}
	p := pc1(t)
	if !p.Computer || p.DNSHostName != "pc1.corp.example.test" || len(p.SPNs) != 2 || p.Kind() != "computer" {
		t.Errorf("ParseAccount(pc1) = computer %v, %q, %v, want a computer with dNSHostName and 2 SPNs", p.Computer, p.DNSHostName, p.SPNs)
	}
}

func TestParseAccountErrors(t *testing.T) {
	tests := []struct {
		name   string
		dn     string
		modify func(attrs)
		want   string
	}{
		{"no objectSid", aliceDN, func(m attrs) { delete(m, "objectsid") }, "objectSid"},
		{"bad objectSid", aliceDN, func(m attrs) { m["objectsid"] = [][]byte{{1, 5, 0}} }, "objectSid"},
		{"bad objectGUID", aliceDN, func(m attrs) { m["objectguid"] = [][]byte{{1, 2}} }, "objectGUID"},
		{"two UPNs", aliceDN, func(m attrs) { set(m, "userprincipalname", "a@x", "b@x") }, "userprincipalname"},
		{"bad DN", "CN=alice,DC", func(attrs) {}, "DN"},
		{"empty DN", "", func(attrs) {}, "DN"},
	}
	for _, tc := range tests {
		m := aliceAttrs()
		tc.modify(m)
		_, err := ParseAccount(tc.dn, m, nil)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ParseAccount(%s) = %v, want an error naming %s", tc.name, err, tc.want)
		}
	}
}

func TestParseDN(t *testing.T) {
	tests := []struct {
		in   string
		want string // RDNs joined by " | ", values with their types
	}{
		{"CN=Alice Adams,OU=Staff,DC=corp,DC=example,DC=test", "CN=Alice Adams | OU=Staff | DC=corp | DC=example | DC=test"},
		{`CN=Adams\, Alice,OU=R\2BD,DC=corp`, "CN=Adams, Alice | OU=R+D | DC=corp"},
		{"cn = x , dc=y", "CN=x | DC=y"},
		{`CN=a\ ,DC=b`, "CN=a  | DC=b"},
		{"CN=a+UID=b,DC=c", "CN=a+UID=b | DC=c"},
		{"OID.2.5.4.3=z", "2.5.4.3=z"},
	}
	for _, tc := range tests {
		rdns, err := parseDN(tc.in)
		if err != nil {
			t.Errorf("parseDN(%q) = %v", tc.in, err)
			continue
		}
		var parts []string
		for _, r := range rdns {
			var vs []string
			for _, v := range r {
				vs = append(vs, v.typ+"="+v.value)
			}
			parts = append(parts, strings.Join(vs, "+"))
		}
		if got := strings.Join(parts, " | "); got != tc.want {
			t.Errorf("parseDN(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
	for _, bad := range []string{"CN", "CN=a,", "CN=a\\", "=a", "CN=#0403", `CN=a"b`} {
		if _, err := parseDN(bad); err == nil {
			t.Errorf("parseDN(%q) = nil error, want one", bad)
		}
	}
}

func TestTokenDeduplicates(t *testing.T) {
	tok := buildToken(sidAlice, []secdesc.SID{sidNested, sidNested, secdesc.Everyone})
	if len(tok) != 4 {
		t.Errorf("buildToken(alice, nested twice, Everyone) = %d SIDs, want 4", len(tok))
	}
}
