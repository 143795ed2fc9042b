package policy

import (
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/hex"
	"fmt"
	"net"
	"strings"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/enrollment-appliance/aeappliance/enrollsvc/issue"
)

// subjectType describes a subject attribute this CA writes.
type subjectType struct {
	oid    asn1.ObjectIdentifier
	short  string // RFC 4514 name (or the LDAP descriptor where RFC 4514 has none)
	tag    int    // universal string tag of the value
	maxLen int    // RFC 5280 upper bound in characters, 0 = none
}

// subjectTypes is keyed by lower-case LDAP attribute name and the RFC 4514 short names.
var subjectTypes = map[string]subjectType{
	"cn":           {asn1.ObjectIdentifier{2, 5, 4, 3}, "CN", asn1.TagUTF8String, 64},
	"sn":           {asn1.ObjectIdentifier{2, 5, 4, 4}, "SN", asn1.TagUTF8String, 32768},
	"serialnumber": {asn1.ObjectIdentifier{2, 5, 4, 5}, "SERIALNUMBER", asn1.TagPrintableString, 64},
	"c":            {asn1.ObjectIdentifier{2, 5, 4, 6}, "C", asn1.TagPrintableString, 2},
	"l":            {asn1.ObjectIdentifier{2, 5, 4, 7}, "L", asn1.TagUTF8String, 128},
	"st":           {asn1.ObjectIdentifier{2, 5, 4, 8}, "ST", asn1.TagUTF8String, 128},
	"street":       {asn1.ObjectIdentifier{2, 5, 4, 9}, "STREET", asn1.TagUTF8String, 128},
	"o":            {asn1.ObjectIdentifier{2, 5, 4, 10}, "O", asn1.TagUTF8String, 64},
	"ou":           {asn1.ObjectIdentifier{2, 5, 4, 11}, "OU", asn1.TagUTF8String, 64},
	"title":        {asn1.ObjectIdentifier{2, 5, 4, 12}, "title", asn1.TagUTF8String, 64},
	"postalcode":   {asn1.ObjectIdentifier{2, 5, 4, 17}, "postalCode", asn1.TagUTF8String, 40},
	"givenname":    {asn1.ObjectIdentifier{2, 5, 4, 42}, "givenName", asn1.TagUTF8String, 32768},
	"initials":     {asn1.ObjectIdentifier{2, 5, 4, 43}, "initials", asn1.TagUTF8String, 32768},
	"dnqualifier":  {asn1.ObjectIdentifier{2, 5, 4, 46}, "dnQualifier", asn1.TagPrintableString, 0},
	"dc":           {asn1.ObjectIdentifier{0, 9, 2342, 19200300, 100, 1, 25}, "DC", asn1.TagIA5String, 63},
	"uid":          {asn1.ObjectIdentifier{0, 9, 2342, 19200300, 100, 1, 1}, "UID", asn1.TagUTF8String, 256},
	"e":            {asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 1}, "E", asn1.TagIA5String, 255},
}

func init() {
	subjectTypes["emailaddress"] = subjectTypes["e"]
	subjectTypes["s"] = subjectTypes["st"]
	subjectTypes["g"] = subjectTypes["givenname"]
	subjectTypes["t"] = subjectTypes["title"]
}

// subjectAttr is one attribute of the subject being built; each becomes its own RDN.
type subjectAttr struct {
	typ   subjectType
	value string
}

// newSubjectAttr checks value against the attribute's string type and upper bound.
func newSubjectAttr(name, value string) (subjectAttr, error) {
	t, ok := subjectTypes[strings.ToLower(name)]
	if !ok {
		return subjectAttr{}, fmt.Errorf("subject attribute %q is not one this CA writes", name)
	}
	if value == "" {
		return subjectAttr{}, fmt.Errorf("%s is empty", t.short)
	}
	if !utf8.ValidString(value) {
		return subjectAttr{}, fmt.Errorf("%s is not valid UTF-8", t.short)
	}
	if n := utf8.RuneCountInString(value); t.maxLen > 0 && n > t.maxLen {
		return subjectAttr{}, fmt.Errorf("%s %q has %d characters, more than the RFC 5280 upper bound of %d", t.short, value, n, t.maxLen)
	}
	switch t.tag {
	case asn1.TagPrintableString:
		if !isPrintable(value) {
			return subjectAttr{}, fmt.Errorf("%s %q has characters a PrintableString cannot hold", t.short, value)
		}
	case asn1.TagIA5String:
		if !isIA5(value) {
			return subjectAttr{}, fmt.Errorf("%s %q is not ASCII", t.short, value)
		}
	}
	return subjectAttr{typ: t, value: value}, nil
}

// pkixName is the subject as a pkix.Name whose ExtraNames hold every attribute in order, each
// as its own RDN with an explicit string type, so Go writes exactly this sequence.
func pkixName(attrs []subjectAttr) pkix.Name {
	var n pkix.Name
	for _, a := range attrs {
		n.ExtraNames = append(n.ExtraNames, pkix.AttributeTypeAndValue{
			Type:  a.typ.oid,
			Value: asn1.RawValue{Class: asn1.ClassUniversal, Tag: a.typ.tag, Bytes: []byte(a.value)},
		})
	}
	return n
}

// formatSubject is the RFC 4514 text of attrs (which are in DER order, so printed reversed).
func formatSubject(attrs []subjectAttr) string {
	var b strings.Builder
	for i := len(attrs) - 1; i >= 0; i-- {
		if b.Len() > 0 {
			b.WriteByte(',')
		}
		b.WriteString(attrs[i].typ.short)
		b.WriteByte('=')
		b.WriteString(issue.EscapeDNValue(attrs[i].value))
	}
	return b.String()
}

func isPrintable(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte(" '()+,-./:=?", c) >= 0) {
			return false
		}
	}
	return true
}

func isIA5(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

// OIDs of names and extensions.
var (
	oidUPN          = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 311, 20, 2, 3}
	oidDSObjectGUID = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 311, 25, 1}
	oidSIDOtherName = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 311, 25, 2, 1}
	oidPKINITSAN    = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 2, 2}
)

// sidURIPrefix is the URL form of a SID in a SAN (KB5014754 strong mapping).
const sidURIPrefix = "tag:microsoft.com,2022-09-14:sid:"

// GeneralName is one subjectAltName entry, with its exact DER.
type GeneralName struct {
	Kind   string // "DNS", "email", "URI", "IP", "UPN", "GUID", "SID", "SPN", "otherName", "dirName", "other"
	Value  string
	TypeID asn1.ObjectIdentifier // otherName type-id
	DER    []byte                // the whole GeneralName
}

// String is the display form, "DNS:host.example", "UPN:alice@corp.example".
func (g GeneralName) String() string { return g.Kind + ":" + g.Value }

func simpleName(kind string, tag int, value []byte, display string) GeneralName {
	der, _ := asn1.Marshal(asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: tag, Bytes: value})
	return GeneralName{Kind: kind, Value: display, DER: der}
}

func dnsName(s string) GeneralName   { return simpleName("DNS", 2, []byte(s), s) }
func emailName(s string) GeneralName { return simpleName("email", 1, []byte(s), s) }
func uriName(s string) GeneralName   { return simpleName("URI", 6, []byte(s), s) }
func ipName(ip net.IP) GeneralName {
	if v4 := ip.To4(); v4 != nil {
		ip = v4
	}
	return simpleName("IP", 7, ip, ip.String())
}

// otherName builds [0] IMPLICIT SEQUENCE { type-id, [0] EXPLICIT value }.
func otherName(kind string, typeID asn1.ObjectIdentifier, valueDER []byte, display string) GeneralName {
	oid, _ := asn1.Marshal(typeID)
	val, _ := asn1.Marshal(asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 0, IsCompound: true, Bytes: valueDER})
	der, _ := asn1.Marshal(asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 0, IsCompound: true, Bytes: append(oid, val...)})
	return GeneralName{Kind: kind, Value: display, TypeID: typeID, DER: der}
}

func upnName(upn string) GeneralName {
	v, _ := asn1.Marshal(asn1.RawValue{Class: asn1.ClassUniversal, Tag: asn1.TagUTF8String, Bytes: []byte(upn)})
	return otherName("UPN", oidUPN, v, upn)
}

func guidName(wire []byte, display string) GeneralName {
	v, _ := asn1.Marshal(wire)
	return otherName("GUID", oidDSObjectGUID, v, display)
}

func sidName(sid string) GeneralName {
	v, _ := asn1.Marshal([]byte(sid))
	return otherName("SID", oidSIDOtherName, v, sid)
}

// spnName encodes a service principal name as a Kerberos principal (RFC 4556 KRB5PrincipalName,
// otherName id-pkinit-san, name type NT-SRV-INST), the one standard GeneralName form for it.
func spnName(spn, realm string) GeneralName {
	gs := func(s string) asn1.RawValue {
		return asn1.RawValue{Class: asn1.ClassUniversal, Tag: 27, Bytes: []byte(s)} // GeneralString
	}
	explicit := func(tag int, v any) asn1.RawValue {
		b, _ := asn1.Marshal(v)
		return asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: tag, IsCompound: true, Bytes: b}
	}
	var parts []asn1.RawValue
	for _, p := range strings.Split(spn, "/") {
		parts = append(parts, gs(p))
	}
	principal := struct {
		Type, Strings asn1.RawValue
	}{explicit(0, 2), explicit(1, parts)}
	v, _ := asn1.Marshal(struct{ Realm, Name asn1.RawValue }{explicit(0, gs(realm)), explicit(1, principal)})
	return otherName("SPN", oidPKINITSAN, v, spn)
}

// sanExtension encodes names as a subjectAltName extension (critical when the subject is empty,
// RFC 5280 4.2.1.6).
func sanExtension(names []GeneralName, subjectEmpty bool) pkix.Extension {
	var body []byte
	for _, n := range names {
		body = append(body, n.DER...)
	}
	v, _ := asn1.Marshal(asn1.RawValue{Class: asn1.ClassUniversal, Tag: asn1.TagSequence, IsCompound: true, Bytes: body})
	return pkix.Extension{Id: oidExtSAN, Critical: subjectEmpty, Value: v}
}

// parseGeneralNames decodes a SEQUENCE OF GeneralName (subjectAltName, SID extension).
func parseGeneralNames(der []byte) ([]GeneralName, error) {
	var seq asn1.RawValue
	if rest, err := asn1.Unmarshal(der, &seq); err != nil || len(rest) > 0 || seq.Tag != asn1.TagSequence || seq.Class != asn1.ClassUniversal {
		return nil, fmt.Errorf("not a SEQUENCE OF GeneralName")
	}
	var out []GeneralName
	for rest := seq.Bytes; len(rest) > 0; {
		var gn asn1.RawValue
		var err error
		if rest, err = asn1.Unmarshal(rest, &gn); err != nil {
			return nil, fmt.Errorf("bad GeneralName: %v", err)
		}
		if gn.Class != asn1.ClassContextSpecific {
			return nil, fmt.Errorf("GeneralName with class %d", gn.Class)
		}
		g := GeneralName{DER: gn.FullBytes}
		switch gn.Tag {
		case 0:
			if err := parseOtherName(gn.Bytes, &g); err != nil {
				return nil, err
			}
		case 1:
			g.Kind, g.Value = "email", string(gn.Bytes)
		case 2:
			g.Kind, g.Value = "DNS", string(gn.Bytes)
		case 4:
			g.Kind, g.Value = "dirName", hex.EncodeToString(gn.Bytes)
			var rdns pkix.RDNSequence
			if r, err := asn1.Unmarshal(gn.Bytes, &rdns); err == nil && len(r) == 0 {
				g.Value = issue.FormatRDNs(rdns)
			}
		case 6:
			g.Kind, g.Value = "URI", string(gn.Bytes)
		case 7:
			if len(gn.Bytes) != 4 && len(gn.Bytes) != 16 {
				return nil, fmt.Errorf("iPAddress of %d bytes", len(gn.Bytes))
			}
			g.Kind, g.Value = "IP", net.IP(gn.Bytes).String()
		default:
			g.Kind, g.Value = "other", fmt.Sprintf("[%d] %x", gn.Tag, gn.Bytes)
		}
		if (g.Kind == "email" || g.Kind == "DNS" || g.Kind == "URI") && !isIA5(g.Value) {
			return nil, fmt.Errorf("%s name is not IA5String", g.Kind)
		}
		out = append(out, g)
	}
	return out, nil
}

func parseOtherName(b []byte, g *GeneralName) error {
	var oid asn1.ObjectIdentifier
	rest, err := asn1.Unmarshal(b, &oid)
	if err != nil {
		return fmt.Errorf("bad otherName: %v", err)
	}
	var wrap asn1.RawValue
	if r, err := asn1.Unmarshal(rest, &wrap); err != nil || len(r) > 0 || wrap.Class != asn1.ClassContextSpecific || wrap.Tag != 0 {
		return fmt.Errorf("bad otherName value")
	}
	g.Kind, g.TypeID = "otherName", oid
	g.Value = oid.String() + ";" + hex.EncodeToString(wrap.Bytes)
	var inner asn1.RawValue
	if r, err := asn1.Unmarshal(wrap.Bytes, &inner); err != nil || len(r) > 0 {
		return nil
	}
	switch {
	case oid.Equal(oidUPN) && inner.Class == asn1.ClassUniversal && inner.Tag == asn1.TagUTF8String:
		g.Kind, g.Value = "UPN", string(inner.Bytes)
	case oid.Equal(oidDSObjectGUID) && inner.Tag == asn1.TagOctetString && len(inner.Bytes) == 16:
		g.Kind, g.Value = "GUID", guidFromWire(inner.Bytes).String()
	case oid.Equal(oidSIDOtherName) && inner.Tag == asn1.TagOctetString:
		g.Kind, g.Value = "SID", string(inner.Bytes)
	case oid.Equal(oidPKINITSAN):
		if name, ok := decodeKRB5Principal(wrap.Bytes); ok {
			g.Kind, g.Value = "SPN", name
		}
	}
	return nil
}

// decodeKRB5Principal reads the name of a KRB5PrincipalName (realm left out): the
// name-string components joined by "/".
func decodeKRB5Principal(der []byte) (string, bool) {
	var p struct {
		Realm asn1.RawValue `asn1:"explicit,tag:0"`
		Name  struct {
			Type    int             `asn1:"explicit,tag:0"`
			Strings []asn1.RawValue `asn1:"explicit,tag:1"`
		} `asn1:"explicit,tag:1"`
	}
	if rest, err := asn1.Unmarshal(der, &p); err != nil || len(rest) > 0 || len(p.Name.Strings) == 0 {
		return "", false
	}
	parts := make([]string, len(p.Name.Strings))
	for i, s := range p.Name.Strings {
		if s.Tag != 27 || !utf8.Valid(s.Bytes) {
			return "", false
		}
		parts[i] = string(s.Bytes)
	}
	return strings.Join(parts, "/"), true
}

// decodeBMP decodes a BMPString body (UTF-16 big-endian).
func decodeBMP(b []byte) (string, error) {
	if len(b)%2 != 0 {
		return "", fmt.Errorf("BMPString of odd length")
	}
	u := make([]uint16, len(b)/2)
	for i := range u {
		u[i] = uint16(b[2*i])<<8 | uint16(b[2*i+1])
	}
	return strings.TrimRight(string(utf16.Decode(u)), "\x00"), nil
}

func encodeBMP(s string) []byte {
	u := utf16.Encode([]rune(s))
	b := make([]byte, 2*len(u))
	for i, c := range u {
		b[2*i], b[2*i+1] = byte(c>>8), byte(c)
	}
	return b
}
