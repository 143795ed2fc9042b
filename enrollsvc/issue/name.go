package issue

import (
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/hex"
	"fmt"
	"strings"
)

// shortNames are the RFC 4514 names (or LDAP descriptors where RFC 4514 has none) of the
// subject attributes certificates of a Windows domain carry. Go's pkix.Name.String prints DC,
// UID and E as bare OIDs; administrators read these instead.
var shortNames = map[string]string{
	"2.5.4.3": "CN", "2.5.4.4": "SN", "2.5.4.5": "SERIALNUMBER", "2.5.4.6": "C", "2.5.4.7": "L",
	"2.5.4.8": "ST", "2.5.4.9": "STREET", "2.5.4.10": "O", "2.5.4.11": "OU", "2.5.4.12": "title",
	"2.5.4.17": "postalCode", "2.5.4.42": "givenName", "2.5.4.43": "initials", "2.5.4.46": "dnQualifier",
	"0.9.2342.19200300.100.1.25": "DC", "0.9.2342.19200300.100.1.1": "UID", "1.2.840.113549.1.9.1": "E",
}

// ShortName is the display name of a subject attribute type, or its dotted OID.
func ShortName(oid asn1.ObjectIdentifier) string {
	if s, ok := shortNames[oid.String()]; ok {
		return s
	}
	return oid.String()
}

// FormatRDNs is the RFC 4514 text of a name (most specific RDN first).
func FormatRDNs(rdns pkix.RDNSequence) string {
	parts := make([]string, 0, len(rdns))
	for i := len(rdns) - 1; i >= 0; i-- {
		set := make([]string, 0, len(rdns[i]))
		for _, v := range rdns[i] {
			var val string
			switch x := v.Value.(type) {
			case string:
				val = EscapeDNValue(x)
			default:
				der, _ := asn1.Marshal(x)
				val = "#" + hex.EncodeToString(der)
			}
			set = append(set, ShortName(v.Type)+"="+val)
		}
		parts = append(parts, strings.Join(set, "+"))
	}
	return strings.Join(parts, ",")
}

// FormatName is FormatRDNs of a DER Name (as in Certificate.RawSubject); on malformed input it
// says so rather than guessing.
func FormatName(der []byte) string {
	var rdns pkix.RDNSequence
	if rest, err := asn1.Unmarshal(der, &rdns); err != nil || len(rest) != 0 {
		return "(malformed name)"
	}
	return FormatRDNs(rdns)
}

// EscapeDNValue escapes an attribute value for RFC 4514 text.
func EscapeDNValue(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == ',' || c == '+' || c == '"' || c == '\\' || c == '<' || c == '>' || c == ';' || c == '=':
			b.WriteByte('\\')
			b.WriteByte(c)
		case (c == ' ' && (i == 0 || i == len(s)-1)) || (c == '#' && i == 0):
			b.WriteByte('\\')
			b.WriteByte(c)
		case c < 0x20 || c == 0x7f:
			fmt.Fprintf(&b, "\\%02x", c)
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}
