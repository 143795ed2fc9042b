package policy

import (
	"crypto/x509"
	"encoding/asn1"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestDecodePeriodArchitectureBytes(t *testing.T) {
	const day = 24 * time.Hour
	tests := []struct {
		in   []byte
		want time.Duration
	}{
		{[]byte{0x00, 0x40, 0x39, 0x87, 0x2e, 0xe1, 0xfe, 0xff}, 365 * day}, // 1 year (ARCHITECTURE §5)
		{[]byte{0x00, 0x80, 0xa6, 0x0a, 0xff, 0xde, 0xff, 0xff}, 42 * day},  // 6 weeks
		{[]byte{0, 0, 0, 0, 0, 0, 0, 0}, 0},
	}
	for _, tc := range tests {
		got, err := decodePeriod(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("decodePeriod(% x) = %v, %v, want %v", tc.in, got, err, tc.want)
		}
		if tc.want != 0 && hexs(EncodePeriod(tc.want)) != hexs(tc.in) {
			t.Errorf("EncodePeriod(%v) = % x, want % x", tc.want, EncodePeriod(tc.want), tc.in)
		}
	}
	for _, bad := range [][]byte{nil, {1, 2, 3}, {1, 0, 0, 0, 0, 0, 0, 0}, {0, 0, 0, 0, 0, 0, 0, 0x80}} {
		if got, err := decodePeriod(bad); err == nil {
			t.Errorf("decodePeriod(% x) = %v, want an error", bad, got)
		}
	}
}

func TestParseTemplate(t *testing.T) {
	tmpl := mustTemplate(t, userTemplateAttrs(t))
	oid := asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 311, 21, 8, 1111, 2222, 3333, 4444, 5555, 6666, 777, 888}
	checks := []struct {
		name      string
		got, want any
	}{
		{"Name", tmpl.Name, "UserAuth"},
		{"DisplayName", tmpl.DisplayName, "User Authentication"},
		{"SchemaVersion", tmpl.SchemaVersion, 2},
		{"Major", tmpl.Major, 100},
		{"Minor", tmpl.Minor, 3},
		{"OID", tmpl.OID.String(), oid.String()},
		{"Validity", tmpl.Validity, 365 * 24 * time.Hour},
		{"Renewal", tmpl.Renewal, 42 * 24 * time.Hour},
		{"EnrollmentFlags", tmpl.EnrollmentFlags.String(), "INCLUDE_SYMMETRIC_ALGORITHMS|PUBLISH_TO_DS|AUTO_ENROLLMENT"},
		{"NameFlags", tmpl.NameFlags.String(), "SUBJECT_ALT_REQUIRE_UPN|SUBJECT_ALT_REQUIRE_EMAIL|SUBJECT_REQUIRE_EMAIL|SUBJECT_REQUIRE_DIRECTORY_PATH"},
		{"PrivateKeyFlags", tmpl.PrivateKeyFlags, PrivateKeyExportable},
		{"PrivateKeyVersions", [2]int{tmpl.PrivateKeyClientVersion, tmpl.PrivateKeyServerVersion}, [2]int{1, 1}},
		{"GeneralFlags", tmpl.GeneralFlags.String(), "ADD_EMAIL|PUBLISH_TO_DS|EXPORTABLE_KEY|AUTO_ENROLLMENT|ADD_TEMPLATE_NAME|IS_MODIFIED"},
		{"EKUs (application policies win for schema 2)", oidList(tmpl.EKUs), "Client Authentication (1.3.6.1.5.5.7.3.2), Secure Email (1.3.6.1.5.5.7.3.4), Encrypting File System (1.3.6.1.4.1.311.10.3.4)"},
		{"ExtendedKeyUsage", len(tmpl.ExtendedKeyUsage), 2},
		{"MinimalKeySize", tmpl.MinimalKeySize, 2048},
		{"KeySpec", tmpl.KeySpec, 1},
		{"KeyUsage", tmpl.KeyUsage, x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment},
		{"CriticalExtensions", oidList(tmpl.CriticalExtensions), "Key Usage (2.5.29.15)"},
		{"IsMachine", tmpl.IsMachine(), false},
		{"SD", tmpl.SD != nil && tmpl.SD.DACL != nil && len(tmpl.SD.DACL.ACEs) == 5, true},
	}
	for _, c := range checks {
		if !reflect.DeepEqual(c.got, c.want) {
			t.Errorf("ParseTemplate(user).%s = %v, want %v", c.name, c.got, c.want)
		}
	}
}

func TestParseTemplateVariants(t *testing.T) {
	// Schema 1: EKUs from pKIExtendedKeyUsage even if application policies are present.
	m := userTemplateAttrs(t)
	delete(m, "mspki-template-schema-version")
	tmpl := mustTemplate(t, m)
	if tmpl.SchemaVersion != 1 || len(tmpl.EKUs) != 2 {
		t.Errorf("ParseTemplate(schema absent) = schema %d, %d EKUs, want 1, 2", tmpl.SchemaVersion, len(tmpl.EKUs))
	}
	// Flags stored as signed 32-bit integers.
	m = userTemplateAttrs(t)
	set(m, "mspki-certificate-name-flag", "-2147483648")
	if tmpl := mustTemplate(t, m); tmpl.NameFlags != NameRequireDirectoryPath {
		t.Errorf("ParseTemplate(name flag -2147483648) = %v, want SUBJECT_REQUIRE_DIRECTORY_PATH", tmpl.NameFlags)
	}
	// Private key flag version fields are masked off before testing bits.
	m = userTemplateAttrs(t)
	set(m, "mspki-private-key-flag", "101056640") // 0x06060080
	if tmpl := mustTemplate(t, m); tmpl.PrivateKeyFlags != PrivateKeyRequireSameKeyRenewal || tmpl.PrivateKeyClientVersion != 6 {
		t.Errorf("ParseTemplate(private key flag 0x06060080) = %v (client version %d), want REQUIRE_SAME_KEY_RENEWAL, 6", tmpl.PrivateKeyFlags, tmpl.PrivateKeyClientVersion)
	}
	// Schema 4: the CNG algorithm restriction.
	m = userTemplateAttrs(t)
	set(m, "mspki-template-schema-version", "4")
	set(m, "mspki-ra-application-policies", "msPKI-Asymmetric-Algorithm`PZPWSTR`ECDSA_P384`msPKI-Hash-Algorithm`PZPWSTR`SHA384`msPKI-Key-Usage`DWORD`16777215`")
	if tmpl := mustTemplate(t, m); tmpl.KeyAlgorithm != "ECDSA_P384" || tmpl.HashAlgorithm != "SHA384" {
		t.Errorf("ParseTemplate(schema 4) key algorithm = %q/%q, want ECDSA_P384/SHA384", tmpl.KeyAlgorithm, tmpl.HashAlgorithm)
	}
}

func TestParseTemplateErrors(t *testing.T) {
	tests := []struct {
		name   string
		modify func(attrs)
		want   string // the attribute the error names
	}{
		{"no cn", func(m attrs) { delete(m, "cn") }, "cn"},
		{"no SD", func(m attrs) { delete(m, "ntsecuritydescriptor") }, "ntsecuritydescriptor"},
		{"bad SD", func(m attrs) { m["ntsecuritydescriptor"] = [][]byte{{1, 0, 4}} }, "ntsecuritydescriptor"},
		{"short period", func(m attrs) { m["pkiexpirationperiod"] = [][]byte{{1, 2, 3}} }, "pkiexpirationperiod"},
		{"positive period", func(m attrs) { m["pkiexpirationperiod"] = [][]byte{EncodePeriod(-time.Hour)} }, "pkiexpirationperiod"},
		{"no period", func(m attrs) { delete(m, "pkiexpirationperiod") }, "pkiexpirationperiod"},
		{"bad schema", func(m attrs) { set(m, "mspki-template-schema-version", "9") }, "mspki-template-schema-version"},
		{"bad flag", func(m attrs) { set(m, "mspki-enrollment-flag", "lots") }, "mspki-enrollment-flag"},
		{"two revisions", func(m attrs) { set(m, "revision", "1", "2") }, "revision"},
		{"bad EKU", func(m attrs) { set(m, "pkiextendedkeyusage", "1.3.x") }, "pkiextendedkeyusage"},
		{"bad OID", func(m attrs) { set(m, "mspki-cert-template-oid", "99.1") }, "mspki-cert-template-oid"},
		{"v2 without OID", func(m attrs) { delete(m, "mspki-cert-template-oid") }, "mspki-cert-template-oid"},
		{"bad key usage", func(m attrs) { m["pkikeyusage"] = [][]byte{{0x80, 0x01}} }, "pkikeyusage"},
		{"bad key size", func(m attrs) { set(m, "mspki-minimal-key-size", "-1") }, "mspki-minimal-key-size"},
	}
	for _, tc := range tests {
		m := userTemplateAttrs(t)
		tc.modify(m)
		_, err := ParseTemplate(m)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ParseTemplate(%s) = %v, want an error naming %s", tc.name, err, tc.want)
		}
	}
}

func TestKeyUsageEncoding(t *testing.T) {
	tests := []struct {
		in   []byte
		want x509.KeyUsage
	}{
		{[]byte{0x80}, x509.KeyUsageDigitalSignature},
		{[]byte{0xa0, 0x00}, x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment},
		{[]byte{0x86, 0x00}, x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign | x509.KeyUsageCRLSign},
		{[]byte{0x08, 0x80}, x509.KeyUsageKeyAgreement | x509.KeyUsageDecipherOnly},
		{[]byte{0x01, 0x00}, x509.KeyUsageEncipherOnly},
	}
	for _, tc := range tests {
		got, err := decodeKeyUsage(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("decodeKeyUsage(% x) = %v, %v, want %v", tc.in, keyUsageString(got), err, keyUsageString(tc.want))
		}
		if back, _ := decodeKeyUsage(EncodeKeyUsage(tc.want)); back != tc.want {
			t.Errorf("decodeKeyUsage(EncodeKeyUsage(%v)) = %v", keyUsageString(tc.want), keyUsageString(back))
		}
	}
}

func TestFlagNames(t *testing.T) {
	tests := []struct {
		got, want string
	}{
		{EnrollmentFlag(0).String(), "0"},
		{(EnrollPendAllRequests | EnrollNoSecurityExtension).String(), "PEND_ALL_REQUESTS|NO_SECURITY_EXTENSION"},
		{NameFlag(0x40000001).String(), "ENROLLEE_SUPPLIES_SUBJECT|SUBJECT_REQUIRE_COMMON_NAME"},
		{PrivateKeyFlag(0x2000 | 0x8000000).String(), "ATTEST_REQUIRED|0x8000000"},
		{GeneralFlag(0x40).String(), "MACHINE_TYPE"},
	}
	for _, tc := range tests {
		if tc.got != tc.want {
			t.Errorf("flag String() = %q, want %q", tc.got, tc.want)
		}
	}
}

func TestFormatPeriod(t *testing.T) {
	const day = 24 * time.Hour
	for d, want := range map[time.Duration]string{365 * day: "1 year", 730 * day: "2 years", 42 * day: "6 weeks", 10 * day: "10 days", 90 * time.Minute: "1h30m0s"} {
		if got := formatPeriod(d); got != want {
			t.Errorf("formatPeriod(%v) = %q, want %q", d, got, want)
		}
	}
}
