package policy

import (
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/enrollment-appliance/aeappliance/ldap/secdesc"
)

// Account is the user or computer a certificate is for, decoded from its directory object.
type Account struct {
	DN             string
	SID            secdesc.SID
	GUID           secdesc.GUID // string order; see GUIDWire for the bytes AD stores
	HasGUID        bool
	CN             string
	SAMAccountName string
	UPN            string
	Mail           string
	DNSHostName    string
	SPNs           []string
	GivenName      string
	SN             string
	Title          string
	OUs            []string
	DNQualifier    string
	Computer       bool   // objectClass contains "computer"
	Domain         string // DNS name of the domain, from the DC= parts of DN
	// Token is what access checks run against: objectSid, the groups given to ParseAccount,
	// S-1-5-11 (Authenticated Users) and S-1-1-0 (Everyone), without duplicates.
	Token []secdesc.SID
	// Attrs keeps every attribute (lower-cased names) for lookups by name.
	Attrs map[string][][]byte
}

// ParseAccount decodes an account from its DN, its attributes (lower-cased names, raw values
// as the directory returns them) and its transitive group SIDs (tokenGroups).
func ParseAccount(dn string, attrs map[string][][]byte, groups []secdesc.SID) (Account, error) {
	acc := Account{DN: dn, Attrs: attrs}
	rdns, err := parseDN(dn)
	if err != nil {
		return Account{}, fmt.Errorf("policy: account DN: %w", err)
	}
	if len(rdns) == 0 {
		return Account{}, errors.New("policy: account DN is empty")
	}
	var dcs []string
	for _, r := range rdns {
		for _, v := range r {
			if v.typ == "DC" {
				dcs = append(dcs, v.value)
			}
		}
	}
	acc.Domain = strings.ToLower(strings.Join(dcs, "."))

	sids := attrs["objectsid"]
	if len(sids) != 1 {
		return Account{}, fmt.Errorf("policy: account attribute objectSid: %d values, want one", len(sids))
	}
	if acc.SID, err = secdesc.DecodeSID(sids[0]); err != nil {
		return Account{}, fmt.Errorf("policy: account attribute objectSid: %w", err)
	}
	if g := attrs["objectguid"]; len(g) > 0 {
		if len(g) != 1 || len(g[0]) != 16 {
			return Account{}, errors.New("policy: account attribute objectGUID: want one 16-byte value")
		}
		acc.GUID = guidFromWire(g[0])
		acc.HasGUID = true
	}
	single := func(name string) (string, error) {
		vs := attrs[name]
		if len(vs) > 1 {
			return "", fmt.Errorf("policy: account attribute %s: %d values, want one", name, len(vs))
		}
		if len(vs) == 0 {
			return "", nil
		}
		if !utf8.Valid(vs[0]) {
			return "", fmt.Errorf("policy: account attribute %s: not UTF-8", name)
		}
		return string(vs[0]), nil
	}
	for _, f := range []struct {
		name string
		dst  *string
	}{
		{"cn", &acc.CN}, {"samaccountname", &acc.SAMAccountName}, {"userprincipalname", &acc.UPN},
		{"mail", &acc.Mail}, {"dnshostname", &acc.DNSHostName}, {"givenname", &acc.GivenName},
		{"sn", &acc.SN}, {"title", &acc.Title}, {"dnqualifier", &acc.DNQualifier},
	} {
		if *f.dst, err = single(f.name); err != nil {
			return Account{}, err
		}
	}
	if acc.CN == "" && len(rdns[0]) == 1 && rdns[0][0].typ == "CN" {
		acc.CN = rdns[0][0].value
	}
	acc.SPNs = strValues(attrs["serviceprincipalname"])
	acc.OUs = strValues(attrs["ou"])
	for _, c := range attrs["objectclass"] {
		if strings.EqualFold(string(c), "computer") {
			acc.Computer = true
		}
	}
	acc.Token = buildToken(acc.SID, groups)
	return acc, nil
}

// Values returns the values of an attribute as text (name case-insensitive).
func (a Account) Values(name string) []string {
	return strValues(a.Attrs[strings.ToLower(name)])
}

// GUIDString is objectGUID as Windows shows it ("{...}"-less, mixed-endian decoded).
func (a Account) GUIDString() string {
	if !a.HasGUID {
		return ""
	}
	return a.GUID.String()
}

// GUIDWire is objectGUID as AD stores it (the first three fields little-endian).
func (a Account) GUIDWire() []byte {
	g := guidFromWire(a.GUID[:]) // the swap is its own inverse
	return g[:]
}

// Kind is "computer" or "user".
func (a Account) Kind() string {
	if a.Computer {
		return "computer"
	}
	return "user"
}

func guidFromWire(b []byte) secdesc.GUID {
	var g secdesc.GUID
	g[0], g[1], g[2], g[3] = b[3], b[2], b[1], b[0]
	g[4], g[5] = b[5], b[4]
	g[6], g[7] = b[7], b[6]
	copy(g[8:], b[8:16])
	return g
}

func buildToken(sid secdesc.SID, groups []secdesc.SID) []secdesc.SID {
	token := make([]secdesc.SID, 0, len(groups)+3)
	add := func(s secdesc.SID) {
		for _, t := range token {
			if t.Equal(s) {
				return
			}
		}
		token = append(token, s)
	}
	add(sid)
	for _, g := range groups {
		add(g)
	}
	add(secdesc.AuthenticatedUsers)
	add(secdesc.Everyone)
	return token
}

func strValues(vs [][]byte) []string {
	var out []string
	for _, v := range vs {
		if len(v) > 0 {
			out = append(out, string(v))
		}
	}
	return out
}

// atv is one attribute of a parsed DN.
type atv struct {
	typ   string // upper-case short name ("CN", "OU", "DC") or a dotted OID
	value string
}

// parseDN parses an RFC 4514 distinguished name. The result is in string order (the most
// specific RDN first), each RDN a list of attribute-value pairs.
func parseDN(s string) ([][]atv, error) {
	var rdns [][]atv
	var cur []atv
	i := 0
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, nil
	}
	for {
		// attribute type
		j := strings.IndexByte(s[i:], '=')
		if j < 0 {
			return nil, fmt.Errorf("%q: missing '=' after %q", s, s[i:])
		}
		typ := strings.TrimSpace(s[i : i+j])
		if typ == "" || strings.ContainsAny(typ, ",+\\\"") {
			return nil, fmt.Errorf("%q: bad attribute type %q", s, typ)
		}
		i += j + 1
		for i < len(s) && s[i] == ' ' {
			i++
		}
		var val []byte
		if i < len(s) && s[i] == '#' {
			return nil, fmt.Errorf("%q: hex-encoded values are not supported", s)
		}
		trailing := 0 // unescaped trailing spaces to drop
		for i < len(s) && s[i] != ',' && s[i] != '+' && s[i] != ';' {
			c := s[i]
			switch {
			case c == '\\':
				if i+1 >= len(s) {
					return nil, fmt.Errorf("%q: dangling escape", s)
				}
				if h, ok := unhex2(s[i+1:]); ok {
					val = append(val, h)
					i += 3
				} else {
					val = append(val, s[i+1])
					i += 2
				}
				trailing = 0
				continue
			case c == '"' || c == '<' || c == '>' || c == '=':
				return nil, fmt.Errorf("%q: unescaped %q in value", s, c)
			case c == ' ':
				trailing++
			default:
				trailing = 0
			}
			val = append(val, c)
			i++
		}
		val = val[:len(val)-trailing]
		if !utf8.Valid(val) {
			return nil, fmt.Errorf("%q: value is not UTF-8", s)
		}
		cur = append(cur, atv{typ: canonicalType(typ), value: string(val)})
		if i >= len(s) {
			rdns = append(rdns, cur)
			return rdns, nil
		}
		if s[i] != '+' {
			rdns = append(rdns, cur)
			cur = nil
		}
		i++
		for i < len(s) && s[i] == ' ' {
			i++
		}
		if i >= len(s) {
			return nil, fmt.Errorf("%q: ends with a separator", s)
		}
	}
}

// unhex2 decodes the two hex digits at the start of s (an RFC 4514 "\\hh" escape).
func unhex2(s string) (byte, bool) {
	if len(s) < 2 {
		return 0, false
	}
	b, err := hex.DecodeString(s[:2])
	if err != nil {
		return 0, false
	}
	return b[0], true
}

func canonicalType(t string) string {
	if t[0] >= '0' && t[0] <= '9' {
		return t
	}
	u := strings.ToUpper(t)
	if strings.HasPrefix(u, "OID.") {
		return t[4:]
	}
	return u
}
