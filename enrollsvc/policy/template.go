package policy

import (
	"crypto/x509"
	"encoding/asn1"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/enrollment-appliance/aeappliance/ldap/secdesc"
)

// Template is a pKICertificateTemplate object as Active Directory stores it, decoded
// (MS-CRTD section 2). Only ParseTemplate makes one from directory attributes.
type Template struct {
	Name          string                // cn
	DisplayName   string                // displayName
	SchemaVersion int                   // msPKI-Template-Schema-Version, 1..4 (absent = 1)
	Major         int                   // revision
	Minor         int                   // msPKI-Template-Minor-Revision
	OID           asn1.ObjectIdentifier // msPKI-Cert-Template-OID (may be empty for schema 1)
	Validity      time.Duration         // pKIExpirationPeriod
	Renewal       time.Duration         // pKIOverlapPeriod

	EnrollmentFlags EnrollmentFlag // msPKI-Enrollment-Flag
	NameFlags       NameFlag       // msPKI-Certificate-Name-Flag
	PrivateKeyFlags PrivateKeyFlag // msPKI-Private-Key-Flag, version fields masked off
	// PrivateKeyClientVersion and PrivateKeyServerVersion are the version fields of
	// msPKI-Private-Key-Flag (bits 24..27 and 16..19).
	PrivateKeyClientVersion, PrivateKeyServerVersion int
	GeneralFlags                                     GeneralFlag // flags

	// EKUs is what the certificate's extended key usage holds: the application policies for
	// schema 2 and later when the template has any (as AD CS does), else pKIExtendedKeyUsage.
	EKUs                []asn1.ObjectIdentifier
	ExtendedKeyUsage    []asn1.ObjectIdentifier // pKIExtendedKeyUsage as stored
	ApplicationPolicies []asn1.ObjectIdentifier // msPKI-Certificate-Application-Policy as stored
	CertificatePolicies []asn1.ObjectIdentifier // msPKI-Certificate-Policy
	CriticalExtensions  []asn1.ObjectIdentifier // pKICriticalExtensions

	MinimalKeySize int           // msPKI-Minimal-Key-Size (0 = not set)
	KeySpec        int           // pKIDefaultKeySpec: 1 AT_KEYEXCHANGE, 2 AT_SIGNATURE
	KeyUsage       x509.KeyUsage // pKIKeyUsage
	// KeyAlgorithm is the schema-4 asymmetric algorithm restriction ("RSA", "ECDSA_P256",
	// "ECDH_P384", "ECDSA", ...) from msPKI-RA-Application-Policies, or "" when unrestricted.
	KeyAlgorithm  string
	HashAlgorithm string // schema-4 msPKI-Hash-Algorithm, for display

	Supersedes            []string // msPKI-Supersede-Templates (template cn values)
	RASignatures          int      // msPKI-RA-Signature
	RAApplicationPolicies []string // msPKI-RA-Application-Policies (schema < 4: OIDs)
	RAIssuancePolicies    []string // msPKI-RA-Policies: issuance policy OIDs an agent's certificate must hold

	SD *secdesc.SD // nTSecurityDescriptor
}

// IsMachine reports whether the template is for computer accounts (CT_FLAG_MACHINE_TYPE).
func (t Template) IsMachine() bool { return t.GeneralFlags&GeneralMachineType != 0 }

// Directory attribute names, lower-cased as the directory client returns them.
const (
	attrCN              = "cn"
	attrDisplayName     = "displayname"
	attrSchemaVersion   = "mspki-template-schema-version"
	attrRevision        = "revision"
	attrMinorRevision   = "mspki-template-minor-revision"
	attrTemplateOID     = "mspki-cert-template-oid"
	attrExpiration      = "pkiexpirationperiod"
	attrOverlap         = "pkioverlapperiod"
	attrEnrollmentFlag  = "mspki-enrollment-flag"
	attrNameFlag        = "mspki-certificate-name-flag"
	attrPrivateKeyFlag  = "mspki-private-key-flag"
	attrFlags           = "flags"
	attrEKU             = "pkiextendedkeyusage"
	attrAppPolicy       = "mspki-certificate-application-policy"
	attrCertPolicy      = "mspki-certificate-policy"
	attrMinKeySize      = "mspki-minimal-key-size"
	attrKeySpec         = "pkidefaultkeyspec"
	attrKeyUsage        = "pkikeyusage"
	attrCriticalExt     = "pkicriticalextensions"
	attrSupersede       = "mspki-supersede-templates"
	attrRASignature     = "mspki-ra-signature"
	attrRAAppPolicies   = "mspki-ra-application-policies"
	attrRAPolicies      = "mspki-ra-policies"
	attrSecurityDescr   = "ntsecuritydescriptor"
	privateKeyVersionMk = 0x000F0000 | 0x0F000000
)

// ParseTemplate decodes a template from its directory attributes (names lower-cased, values
// as the directory returns them). A malformed value is an error naming the attribute.
func ParseTemplate(attrs map[string][][]byte) (Template, error) {
	var t Template
	a := attrReader{attrs: attrs}
	t.Name = a.str(attrCN, true)
	t.DisplayName = a.str(attrDisplayName, false)
	t.SchemaVersion = int(a.integer(attrSchemaVersion, 1, 1, 4))
	t.Major = int(a.integer(attrRevision, 0, 0, math.MaxInt32))
	t.Minor = int(a.integer(attrMinorRevision, 0, 0, math.MaxInt32))
	if s := a.str(attrTemplateOID, false); s != "" {
		oid, err := parseOID(s)
		if err != nil {
			a.fail(attrTemplateOID, err)
		}
		t.OID = oid
	} else if t.SchemaVersion >= 2 && a.err == nil {
		a.fail(attrTemplateOID, errors.New("missing; required for schema version 2 and later"))
	}
	t.Validity = a.period(attrExpiration, true)
	t.Renewal = a.period(attrOverlap, false)
	t.EnrollmentFlags = EnrollmentFlag(a.flags(attrEnrollmentFlag))
	t.NameFlags = NameFlag(a.flags(attrNameFlag))
	pk := a.flags(attrPrivateKeyFlag)
	t.PrivateKeyFlags = PrivateKeyFlag(pk &^ privateKeyVersionMk)
	t.PrivateKeyServerVersion = int(pk>>16) & 0xF
	t.PrivateKeyClientVersion = int(pk>>24) & 0xF
	t.GeneralFlags = GeneralFlag(a.flags(attrFlags))
	t.ExtendedKeyUsage = a.oids(attrEKU)
	t.ApplicationPolicies = a.oids(attrAppPolicy)
	t.CertificatePolicies = a.oids(attrCertPolicy)
	t.CriticalExtensions = a.oids(attrCriticalExt)
	t.EKUs = t.ExtendedKeyUsage
	if t.SchemaVersion >= 2 && len(t.ApplicationPolicies) > 0 {
		t.EKUs = t.ApplicationPolicies
	}
	t.MinimalKeySize = int(a.integer(attrMinKeySize, 0, 0, 16384))
	t.KeySpec = int(a.integer(attrKeySpec, 0, 0, 2))
	t.KeyUsage = a.keyUsage(attrKeyUsage)
	t.Supersedes = a.strs(attrSupersede)
	t.RASignatures = int(a.integer(attrRASignature, 0, 0, math.MaxInt32))
	ra := a.strs(attrRAAppPolicies)
	if t.SchemaVersion >= 4 && len(ra) == 1 && strings.Contains(ra[0], "`") {
		props, err := parseCNGProperties(ra[0])
		if err != nil {
			a.fail(attrRAAppPolicies, err)
		}
		t.KeyAlgorithm = props["mspki-asymmetric-algorithm"]
		t.HashAlgorithm = props["mspki-hash-algorithm"]
		if p := props["mspki-ra-application-policies"]; p != "" {
			t.RAApplicationPolicies = []string{p}
		}
	} else {
		t.RAApplicationPolicies = ra
	}
	t.RAIssuancePolicies = a.strs(attrRAPolicies)
	if a.err == nil {
		sdBytes := attrs[attrSecurityDescr]
		switch {
		case len(sdBytes) == 0 || len(sdBytes[0]) == 0:
			a.fail(attrSecurityDescr, errors.New("missing (read it with the SD_FLAGS control)"))
		case len(sdBytes) > 1:
			a.fail(attrSecurityDescr, errors.New("more than one value"))
		default:
			sd, err := secdesc.Parse(sdBytes[0])
			if err != nil {
				a.fail(attrSecurityDescr, err)
			}
			t.SD = sd
		}
	}
	if a.err != nil {
		return Template{}, a.err
	}
	return t, nil
}

// parseCNGProperties reads the schema-4 form of msPKI-RA-Application-Policies:
// "name`type`value`name`type`value`..." (MS-CRTD 2.23). Names are returned lower-cased.
func parseCNGProperties(s string) (map[string]string, error) {
	parts := strings.Split(strings.TrimSuffix(s, "`"), "`")
	if len(parts)%3 != 0 {
		return nil, fmt.Errorf("schema-4 properties %q are not name`type`value triples", s)
	}
	m := make(map[string]string, len(parts)/3)
	for i := 0; i < len(parts); i += 3 {
		m[strings.ToLower(parts[i])] = parts[i+2]
	}
	return m, nil
}

// attrReader decodes attributes and remembers the first error.
type attrReader struct {
	attrs map[string][][]byte
	err   error
}

func (a *attrReader) fail(name string, err error) {
	if a.err == nil {
		a.err = fmt.Errorf("policy: template attribute %s: %w", name, err)
	}
}

func (a *attrReader) single(name string, required bool) ([]byte, bool) {
	vs := a.attrs[name]
	switch {
	case len(vs) == 0:
		if required {
			a.fail(name, errors.New("missing"))
		}
		return nil, false
	case len(vs) > 1:
		a.fail(name, fmt.Errorf("%d values, want one", len(vs)))
		return nil, false
	}
	return vs[0], true
}

func (a *attrReader) str(name string, required bool) string {
	v, ok := a.single(name, required)
	if !ok {
		return ""
	}
	if required && len(v) == 0 {
		a.fail(name, errors.New("empty"))
	}
	return string(v)
}

func (a *attrReader) strs(name string) []string {
	var out []string
	for _, v := range a.attrs[name] {
		if len(v) > 0 {
			out = append(out, string(v))
		}
	}
	return out
}

// integer reads a decimal INTEGER attribute within [lo, hi]; def when absent.
func (a *attrReader) integer(name string, def, lo, hi int64) int64 {
	v, ok := a.single(name, false)
	if !ok {
		return def
	}
	n, err := strconv.ParseInt(strings.TrimSpace(string(v)), 10, 64)
	if err != nil {
		a.fail(name, fmt.Errorf("%q is not an integer", v))
		return def
	}
	if n < lo || n > hi {
		a.fail(name, fmt.Errorf("%d is outside %d..%d", n, lo, hi))
		return def
	}
	return n
}

// flags reads a 32-bit flag word. AD stores INTEGER attributes signed, so 0x80000000 comes
// back as "-2147483648"; both forms are accepted.
func (a *attrReader) flags(name string) uint32 {
	return uint32(a.integer(name, 0, math.MinInt32, math.MaxUint32))
}

func (a *attrReader) oids(name string) []asn1.ObjectIdentifier {
	var out []asn1.ObjectIdentifier
	for _, v := range a.attrs[name] {
		oid, err := parseOID(string(v))
		if err != nil {
			a.fail(name, err)
			return nil
		}
		out = append(out, oid)
	}
	return out
}

// period decodes pKIExpirationPeriod / pKIOverlapPeriod: an 8-byte little-endian int64 of
// negative 100-nanosecond units (1 year = 00 40 39 87 2e e1 fe ff).
func (a *attrReader) period(name string, required bool) time.Duration {
	v, ok := a.single(name, required)
	if !ok {
		return 0
	}
	d, err := decodePeriod(v)
	if err != nil {
		a.fail(name, err)
		return 0
	}
	if required && d == 0 {
		a.fail(name, errors.New("zero period"))
	}
	return d
}

func decodePeriod(v []byte) (time.Duration, error) {
	if len(v) != 8 {
		return 0, fmt.Errorf("%d bytes, want 8", len(v))
	}
	n := int64(binary.LittleEndian.Uint64(v))
	if n > 0 {
		return 0, fmt.Errorf("positive value %d, want negative 100 ns units", n)
	}
	if n < -math.MaxInt64/100 {
		return 0, errors.New("period too long")
	}
	return time.Duration(-n) * 100, nil
}

// EncodePeriod is the inverse of the pKIExpirationPeriod decoding (for tests and tools that
// write templates).
func EncodePeriod(d time.Duration) []byte {
	b := make([]byte, 8)
	binary.LittleEndian.PutUint64(b, uint64(-int64(d/100)))
	return b
}

// keyUsage decodes pKIKeyUsage: the bytes of the key usage BIT STRING in the order AD stores
// them (Windows' CERT_KEY_USAGE, little-endian): byte 0 holds digitalSignature (0x80) ..
// encipherOnly (0x01), byte 1 holds decipherOnly (0x80).
func (a *attrReader) keyUsage(name string) x509.KeyUsage {
	v, ok := a.single(name, false)
	if !ok {
		return 0
	}
	ku, err := decodeKeyUsage(v)
	if err != nil {
		a.fail(name, err)
	}
	return ku
}

func decodeKeyUsage(v []byte) (x509.KeyUsage, error) {
	if len(v) == 0 || len(v) > 4 {
		return 0, fmt.Errorf("%d bytes, want 1 or 2", len(v))
	}
	var ku x509.KeyUsage
	for bit := range 8 {
		if v[0]&(0x80>>bit) != 0 {
			ku |= 1 << bit
		}
	}
	if len(v) > 1 {
		if v[1]&0x7f != 0 {
			return 0, fmt.Errorf("undefined key usage bits 0x%02x in the second byte", v[1]&0x7f)
		}
		if v[1]&0x80 != 0 {
			ku |= x509.KeyUsageDecipherOnly
		}
		for _, b := range v[2:] {
			if b != 0 {
				return 0, errors.New("undefined key usage bits after the second byte")
			}
		}
	}
	return ku, nil
}

// EncodeKeyUsage is the inverse of the pKIKeyUsage decoding (two bytes).
func EncodeKeyUsage(ku x509.KeyUsage) []byte {
	b := make([]byte, 2)
	for bit := range 8 {
		if ku&(1<<bit) != 0 {
			b[0] |= 0x80 >> bit
		}
	}
	if ku&x509.KeyUsageDecipherOnly != 0 {
		b[1] = 0x80
	}
	return b
}

func parseOID(s string) (asn1.ObjectIdentifier, error) {
	s = strings.TrimSpace(s)
	parts := strings.Split(s, ".")
	if len(parts) < 2 {
		return nil, fmt.Errorf("%q is not a dotted OID", s)
	}
	oid := make(asn1.ObjectIdentifier, len(parts))
	for i, p := range parts {
		n, err := strconv.ParseUint(p, 10, 31)
		if err != nil || p == "" || (len(p) > 1 && p[0] == '0') {
			return nil, fmt.Errorf("%q is not a dotted OID", s)
		}
		oid[i] = int(n)
	}
	if oid[0] > 2 || (oid[0] < 2 && oid[1] >= 40) {
		return nil, fmt.Errorf("%q is not a valid OID", s)
	}
	return oid, nil
}
