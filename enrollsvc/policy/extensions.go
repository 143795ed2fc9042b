package policy

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
)

// CustomExtension is a private extension configured per template in the appliance (the
// template object has no place for it): its value comes from a directory attribute of the
// account, encoded as Encoding says.
type CustomExtension struct {
	OID       asn1.ObjectIdentifier
	Attribute string // directory attribute name (case-insensitive)
	// Encoding is explicit: "utf8string", "ia5string", "printablestring" (the attribute's text
	// as that string type), "octetstring-hex" (the text is hex; the value is an OCTET STRING of
	// those bytes) or "der-base64" (the text is base64 of one DER value, used as it is).
	Encoding string
	Critical bool
}

// Custom extension encodings.
const (
	EncodingUTF8      = "utf8string"
	EncodingIA5       = "ia5string"
	EncodingPrintable = "printablestring"
	EncodingOctetHex  = "octetstring-hex"
	EncodingDERBase64 = "der-base64"
)

// reservedExtensions are built by policy or issue; a custom extension may not replace them.
var reservedExtensions = []asn1.ObjectIdentifier{
	oidExtSAN, oidExtBasicConstr, oidExtKeyUsage, oidExtEKU, oidExtCertPolicies, oidExtSKI, oidExtAKI,
	oidExtCDP, oidExtAIA, oidExtSID, oidExtTemplateV2, oidExtTemplateV1, oidExtAppPolicies, oidExtOCSPNoCheck,
	{2, 5, 29, 30}, {2, 5, 29, 36}, {2, 5, 29, 54}, // name constraints, policy constraints, inhibit anyPolicy
}

// customExtension builds c's extension from the account's attribute.
func customExtension(c CustomExtension, acc Account) (pkix.Extension, error) {
	if len(c.OID) < 2 {
		return pkix.Extension{}, errors.New("custom extension has no OID")
	}
	for _, r := range reservedExtensions {
		if c.OID.Equal(r) {
			return pkix.Extension{}, fmt.Errorf("custom extension %s would replace an extension the CA builds itself", c.OID)
		}
	}
	vals := acc.Attrs[strings.ToLower(c.Attribute)]
	if c.Attribute == "" || len(vals) == 0 || len(vals[0]) == 0 {
		return pkix.Extension{}, fmt.Errorf("custom extension %s: the account has no %s attribute", c.OID, c.Attribute)
	}
	if len(vals) > 1 {
		return pkix.Extension{}, fmt.Errorf("custom extension %s: %s has %d values, want one", c.OID, c.Attribute, len(vals))
	}
	text := string(vals[0])
	var value []byte
	var err error
	str := func(tag int, ok bool, what string) {
		if !ok {
			err = fmt.Errorf("custom extension %s: %s %q cannot be a %s", c.OID, c.Attribute, text, what)
			return
		}
		value, err = asn1.Marshal(asn1.RawValue{Class: asn1.ClassUniversal, Tag: tag, Bytes: []byte(text)})
	}
	switch c.Encoding {
	case EncodingUTF8:
		str(asn1.TagUTF8String, isUTF8(text), "UTF8String")
	case EncodingIA5:
		str(asn1.TagIA5String, isIA5(text), "IA5String")
	case EncodingPrintable:
		str(asn1.TagPrintableString, isPrintable(text), "PrintableString")
	case EncodingOctetHex:
		b, herr := hex.DecodeString(strings.TrimSpace(text))
		if herr != nil {
			return pkix.Extension{}, fmt.Errorf("custom extension %s: %s is not hex: %v", c.OID, c.Attribute, herr)
		}
		value, err = asn1.Marshal(b)
	case EncodingDERBase64:
		b, berr := base64.StdEncoding.DecodeString(strings.TrimSpace(text))
		if berr != nil {
			return pkix.Extension{}, fmt.Errorf("custom extension %s: %s is not base64: %v", c.OID, c.Attribute, berr)
		}
		var v asn1.RawValue
		if rest, derr := asn1.Unmarshal(b, &v); derr != nil || len(rest) > 0 {
			return pkix.Extension{}, fmt.Errorf("custom extension %s: %s is not one DER value", c.OID, c.Attribute)
		}
		value = b
	default:
		return pkix.Extension{}, fmt.Errorf("custom extension %s: unknown encoding %q (want %s, %s, %s, %s or %s)", c.OID, c.Encoding,
			EncodingUTF8, EncodingIA5, EncodingPrintable, EncodingOctetHex, EncodingDERBase64)
	}
	if err != nil {
		return pkix.Extension{}, err
	}
	return pkix.Extension{Id: c.OID, Critical: c.Critical, Value: value}, nil
}

func isUTF8(s string) bool { return strings.ToValidUTF8(s, "\uFFFD") == s }

// sidExtension is the SID security extension (KB5014754): SEQUENCE OF GeneralName holding one
// otherName 1.3.6.1.4.1.311.25.2.1 whose value is an OCTET STRING of the SID's text.
func sidExtension(sid string) pkix.Extension {
	v, _ := asn1.Marshal(asn1.RawValue{Class: asn1.ClassUniversal, Tag: asn1.TagSequence, IsCompound: true, Bytes: sidName(sid).DER})
	return pkix.Extension{Id: oidExtSID, Value: v}
}

// templateV2Extension is Certificate Template Information: SEQUENCE { OID, major, minor }.
func templateV2Extension(oid asn1.ObjectIdentifier, major, minor int) pkix.Extension {
	v, _ := asn1.Marshal(struct {
		OID          asn1.ObjectIdentifier
		Major, Minor int
	}{oid, major, minor})
	return pkix.Extension{Id: oidExtTemplateV2, Value: v}
}

// templateV1Extension is the Certificate Template Name extension of schema-1 templates
// (a BMPString holding the template's cn), as AD CS writes it.
func templateV1Extension(name string) pkix.Extension {
	v, _ := asn1.Marshal(asn1.RawValue{Class: asn1.ClassUniversal, Tag: asn1.TagBMPString, Bytes: encodeBMP(name)})
	return pkix.Extension{Id: oidExtTemplateV1, Value: v}
}

// policiesExtension is SEQUENCE OF SEQUENCE { OID } (certificate policies and Microsoft's
// application policies share the shape).
func policiesExtension(id asn1.ObjectIdentifier, oids []asn1.ObjectIdentifier, critical bool) pkix.Extension {
	type policy struct{ OID asn1.ObjectIdentifier }
	ps := make([]policy, len(oids))
	for i, o := range oids {
		ps[i] = policy{o}
	}
	v, _ := asn1.Marshal(ps)
	return pkix.Extension{Id: id, Critical: critical, Value: v}
}

func ekuExtension(oids []asn1.ObjectIdentifier, critical bool) pkix.Extension {
	v, _ := asn1.Marshal(oids)
	return pkix.Extension{Id: oidExtEKU, Critical: critical, Value: v}
}

func ocspNoCheckExtension() pkix.Extension {
	return pkix.Extension{Id: oidExtOCSPNoCheck, Value: []byte{0x05, 0x00}}
}

// knownEKUs maps EKU OIDs to Go's constants; others go to Order.UnknownEKUs.
var knownEKUs = map[string]x509.ExtKeyUsage{
	"2.5.29.37.0":            x509.ExtKeyUsageAny,
	"1.3.6.1.5.5.7.3.1":      x509.ExtKeyUsageServerAuth,
	"1.3.6.1.5.5.7.3.2":      x509.ExtKeyUsageClientAuth,
	"1.3.6.1.5.5.7.3.3":      x509.ExtKeyUsageCodeSigning,
	"1.3.6.1.5.5.7.3.4":      x509.ExtKeyUsageEmailProtection,
	"1.3.6.1.5.5.7.3.5":      x509.ExtKeyUsageIPSECEndSystem,
	"1.3.6.1.5.5.7.3.6":      x509.ExtKeyUsageIPSECTunnel,
	"1.3.6.1.5.5.7.3.7":      x509.ExtKeyUsageIPSECUser,
	"1.3.6.1.5.5.7.3.8":      x509.ExtKeyUsageTimeStamping,
	"1.3.6.1.5.5.7.3.9":      x509.ExtKeyUsageOCSPSigning,
	"1.3.6.1.4.1.311.10.3.3": x509.ExtKeyUsageMicrosoftServerGatedCrypto,
	"2.16.840.1.113730.4.1":  x509.ExtKeyUsageNetscapeServerGatedCrypto,
	"1.3.6.1.4.1.311.2.1.22": x509.ExtKeyUsageMicrosoftCommercialCodeSigning,
	"1.3.6.1.4.1.311.61.1.1": x509.ExtKeyUsageMicrosoftKernelCodeSigning,
}

// oidNames names the OIDs explain shows.
var oidNames = map[string]string{
	"2.5.29.37.0":              "Any Purpose",
	"1.3.6.1.5.5.7.3.1":        "Server Authentication",
	"1.3.6.1.5.5.7.3.2":        "Client Authentication",
	"1.3.6.1.5.5.7.3.3":        "Code Signing",
	"1.3.6.1.5.5.7.3.4":        "Secure Email",
	"1.3.6.1.5.5.7.3.8":        "Time Stamping",
	"1.3.6.1.5.5.7.3.9":        "OCSP Signing",
	"1.3.6.1.5.5.7.3.17":       "IP security IKE intermediate",
	"1.3.6.1.4.1.311.20.2.2":   "Smart Card Logon",
	"1.3.6.1.4.1.311.10.3.4":   "Encrypting File System",
	"1.3.6.1.4.1.311.10.3.4.1": "File Recovery",
	"1.3.6.1.4.1.311.20.2.1":   "Certificate Request Agent",
	"1.3.6.1.5.2.3.5":          "KDC Authentication",
	"1.3.6.1.5.2.3.4":          "PKINIT Client Authentication",
	"2.5.29.17":                "Subject Alternative Name",
	"2.5.29.19":                "Basic Constraints",
	"2.5.29.15":                "Key Usage",
	"2.5.29.37":                "Extended Key Usage",
	"2.5.29.32":                "Certificate Policies",
	"1.3.6.1.4.1.311.25.2":     "SID security extension",
	"1.3.6.1.4.1.311.21.7":     "Certificate Template Information",
	"1.3.6.1.4.1.311.20.2":     "Certificate Template Name",
	"1.3.6.1.4.1.311.21.10":    "Application Policies",
	"1.3.6.1.5.5.7.48.1.5":     "OCSP No Check",
}

// oidName is "Name (1.2.3)" or the dotted OID.
func oidName(o asn1.ObjectIdentifier) string {
	if n, ok := oidNames[o.String()]; ok {
		return n + " (" + o.String() + ")"
	}
	return o.String()
}

func oidList(oids []asn1.ObjectIdentifier) string {
	if len(oids) == 0 {
		return "none"
	}
	s := make([]string, len(oids))
	for i, o := range oids {
		s[i] = oidName(o)
	}
	return strings.Join(s, ", ")
}

func containsOID(list []asn1.ObjectIdentifier, o asn1.ObjectIdentifier) bool {
	for _, x := range list {
		if x.Equal(o) {
			return true
		}
	}
	return false
}
