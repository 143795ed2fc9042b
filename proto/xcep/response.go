package xcep

import (
	"bytes"
	"encoding/base64"
	"encoding/xml"
	"strconv"
)

// Response is a GetPoliciesResponse (MS-XCEP 3.1.4.1.2.2 and 3.1.4.1.3.23).
type Response struct {
	PolicyID           string // unique identifier of this policy server's policy, e.g. a GUID in braces
	PolicyFriendlyName string // "" is written as nil
	NextUpdateHours    int    // hours the client should wait before asking again; 0 is written as nil
	// PoliciesNotChanged says the policies have not changed since the client's lastUpdate. It is
	// written as true, or as nil when false ("false or nil: changed"), and when true Policies is
	// written as nil.
	PoliciesNotChanged bool
	Policies           []Policy // empty is written as nil
	CAs                []CA     // empty is written as nil
	OIDs               []OID    // empty is written as nil
}

// Policy is one certificate enrollment policy, that is one template (CertificateEnrollmentPolicy
// and its Attributes, 3.1.4.1.3.7 and 3.1.4.1.3.1).
type Policy struct {
	PolicyOIDReference int   // oIDReferenceID of the template's OID (group 9)
	CAReferences       []int // cAReferenceID of each CA that issues it; empty is written as nil

	CommonName                                  string
	SchemaVersion                               int // policySchema: the template's schema version (1 to 4)
	ValidityPeriodSeconds, RenewalPeriodSeconds int64
	Enroll, AutoEnroll                          bool

	// privateKeyAttributes
	MinimalKeyLength      int
	KeySpec               int    // pKIDefaultKeySpec: 1 exchange, 2 signature; 0 is written as nil
	KeyUsageProperty      *int   // CNG key usage property (pKIKeyUsage semantics); nil is written as nil
	Permissions           string // SDDL for the private key; "" is written as nil
	AlgorithmOIDReference *int   // oIDReferenceID of the key algorithm OID (group 3); nil is written as nil
	CryptoProviders       []string

	MajorRevision, MinorRevision int
	SupersededPolicies           []string // common names of superseded templates; empty is written as nil

	PrivateKeyFlags, SubjectNameFlags, EnrollmentFlags, GeneralFlags uint32

	HashAlgorithmOIDReference *int            // oIDReferenceID of the hash OID (group 1)
	RARequirements            *RARequirements // nil is written as nil
	KeyArchivalAttributes     *KeyArchival    // nil is written as nil
	Extensions                []Extension     // empty is written as nil
}

// RARequirements says how many registration authority signatures a request needs
// (3.1.4.1.3.21). The references are oIDReferenceIDs; empty lists are written as nil.
type RARequirements struct {
	Signatures       uint32
	EKUReferences    []int
	PolicyReferences []int
}

// KeyArchival names the symmetric algorithm for key archival (3.1.4.1.3.15).
type KeyArchival struct {
	SymmetricAlgorithmOIDReference int
	SymmetricAlgorithmKeyLength    uint32
}

// Extension is a certificate extension the template puts in its certificates (3.1.4.1.3.11).
type Extension struct {
	OIDReference int
	Critical     bool
	Value        []byte // DER extnValue contents, base64 in XML; nil is written as nil
}

// CA is an issuer of the policies (3.1.4.1.3.2).
type CA struct {
	URIs             []CAURI
	Certificate      []byte // DER
	EnrollPermission bool
	ReferenceID      int // cAReferenceID, what Policy.CAReferences point at
}

// Client authentication modes of a CAURI (3.1.4.1.3.5).
const (
	AuthAnonymous   = 1
	AuthKerberos    = 2
	AuthUsername    = 4
	AuthCertificate = 8
)

// CAURI is one enrollment endpoint of a CA.
type CAURI struct {
	ClientAuthentication int // AuthAnonymous, AuthKerberos, AuthUsername or AuthCertificate
	URI                  string
	Priority             int // lower is preferred
	RenewalOnly          bool
}

// OID groups (3.1.4.1.3.16).
const (
	GroupHashAlgorithm       = 1
	GroupEncryptionAlgorithm = 2
	GroupPublicKey           = 3
	GroupSigningAlgorithm    = 4
	GroupRDN                 = 5
	GroupExtension           = 6
	GroupEKU                 = 7
	GroupCertificatePolicy   = 8
	GroupEnrollment          = 9 // template OIDs
)

// OID is an object identifier the response refers to by ReferenceID.
type OID struct {
	Value       string
	Group       int
	ReferenceID int
	DefaultName string // "" is written as nil
}

// Marshal writes the GetPoliciesResponse element, declaring its own namespaces, with every
// element in schema order and absent nillable values as xsi:nil="true".
func (r Response) Marshal() []byte {
	w := &writer{}
	w.WriteString(`<GetPoliciesResponse xmlns="` + Namespace + `" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">`)

	w.open("response")
	w.text("policyID", r.PolicyID)
	w.textOrNil("policyFriendlyName", r.PolicyFriendlyName)
	if r.NextUpdateHours > 0 {
		w.int("nextUpdateHours", int64(r.NextUpdateHours))
	} else {
		w.nil("nextUpdateHours")
	}
	if r.PoliciesNotChanged {
		w.bool("policiesNotChanged", true)
	} else {
		w.nil("policiesNotChanged")
	}
	if r.PoliciesNotChanged || len(r.Policies) == 0 {
		w.nil("policies")
	} else {
		w.open("policies")
		for _, p := range r.Policies {
			p.marshal(w)
		}
		w.close("policies")
	}
	w.close("response")

	if len(r.CAs) == 0 {
		w.nil("cAs")
	} else {
		w.open("cAs")
		for _, ca := range r.CAs {
			ca.marshal(w)
		}
		w.close("cAs")
	}

	if len(r.OIDs) == 0 {
		w.nil("oIDs")
	} else {
		w.open("oIDs")
		for _, o := range r.OIDs {
			w.open("oID")
			w.text("value", o.Value)
			w.int("group", int64(o.Group))
			w.int("oIDReferenceID", int64(o.ReferenceID))
			w.textOrNil("defaultName", o.DefaultName)
			w.close("oID")
		}
		w.close("oIDs")
	}
	w.WriteString(`</GetPoliciesResponse>`)
	return w.Bytes()
}

func (p Policy) marshal(w *writer) {
	w.open("policy")
	w.int("policyOIDReference", int64(p.PolicyOIDReference))
	w.intList("cAs", "cAReference", p.CAReferences)

	w.open("attributes")
	w.text("commonName", p.CommonName)
	w.int("policySchema", int64(p.SchemaVersion))
	w.open("certificateValidity")
	w.int("validityPeriodSeconds", p.ValidityPeriodSeconds)
	w.int("renewalPeriodSeconds", p.RenewalPeriodSeconds)
	w.close("certificateValidity")
	w.open("permission")
	w.bool("enroll", p.Enroll)
	w.bool("autoEnroll", p.AutoEnroll)
	w.close("permission")

	w.open("privateKeyAttributes")
	w.int("minimalKeyLength", int64(p.MinimalKeyLength))
	if p.KeySpec != 0 {
		w.int("keySpec", int64(p.KeySpec))
	} else {
		w.nil("keySpec")
	}
	w.intOrNil("keyUsageProperty", p.KeyUsageProperty)
	w.textOrNil("permissions", p.Permissions)
	w.intOrNil("algorithmOIDReference", p.AlgorithmOIDReference)
	if len(p.CryptoProviders) == 0 {
		w.nil("cryptoProviders")
	} else {
		w.open("cryptoProviders")
		for _, c := range p.CryptoProviders {
			w.text("provider", c)
		}
		w.close("cryptoProviders")
	}
	w.close("privateKeyAttributes")

	w.open("revision")
	w.int("majorRevision", int64(p.MajorRevision))
	w.int("minorRevision", int64(p.MinorRevision))
	w.close("revision")

	if len(p.SupersededPolicies) == 0 {
		w.nil("supersededPolicies")
	} else {
		w.open("supersededPolicies")
		for _, cn := range p.SupersededPolicies {
			w.text("commonName", cn)
		}
		w.close("supersededPolicies")
	}
	w.int("privateKeyFlags", int64(p.PrivateKeyFlags))
	w.int("subjectNameFlags", int64(p.SubjectNameFlags))
	w.int("enrollmentFlags", int64(p.EnrollmentFlags))
	w.int("generalFlags", int64(p.GeneralFlags))
	w.intOrNil("hashAlgorithmOIDReference", p.HashAlgorithmOIDReference)

	if ra := p.RARequirements; ra == nil {
		w.nil("rARequirements")
	} else {
		w.open("rARequirements")
		w.int("rASignatures", int64(ra.Signatures))
		w.intList("rAEKUs", "oIDReference", ra.EKUReferences)
		w.intList("rAPolicies", "oIDReference", ra.PolicyReferences)
		w.close("rARequirements")
	}
	if ka := p.KeyArchivalAttributes; ka == nil {
		w.nil("keyArchivalAttributes")
	} else {
		w.open("keyArchivalAttributes")
		w.int("symmetricAlgorithmOIDReference", int64(ka.SymmetricAlgorithmOIDReference))
		w.int("symmetricAlgorithmKeyLength", int64(ka.SymmetricAlgorithmKeyLength))
		w.close("keyArchivalAttributes")
	}
	if len(p.Extensions) == 0 {
		w.nil("extensions")
	} else {
		w.open("extensions")
		for _, e := range p.Extensions {
			w.open("extension")
			w.int("oIDReference", int64(e.OIDReference))
			w.bool("critical", e.Critical)
			if e.Value == nil {
				w.nil("value")
			} else {
				w.text("value", base64.StdEncoding.EncodeToString(e.Value))
			}
			w.close("extension")
		}
		w.close("extensions")
	}
	w.close("attributes")
	w.close("policy")
}

func (ca CA) marshal(w *writer) {
	w.open("cA")
	w.open("uris")
	for _, u := range ca.URIs {
		w.open("cAURI")
		w.int("clientAuthentication", int64(u.ClientAuthentication))
		w.text("uri", u.URI)
		w.int("priority", int64(u.Priority))
		w.bool("renewalOnly", u.RenewalOnly)
		w.close("cAURI")
	}
	w.close("uris")
	w.text("certificate", base64.StdEncoding.EncodeToString(ca.Certificate))
	w.bool("enrollPermission", ca.EnrollPermission)
	w.int("cAReferenceID", int64(ca.ReferenceID))
	w.close("cA")
}

// writer writes elements of the default namespace.
type writer struct{ bytes.Buffer }

func (w *writer) open(name string)  { w.WriteString("<" + name + ">") }
func (w *writer) close(name string) { w.WriteString("</" + name + ">") }
func (w *writer) nil(name string)   { w.WriteString("<" + name + ` xsi:nil="true"/>`) }

func (w *writer) text(name, s string) {
	w.open(name)
	_ = xml.EscapeText(w, []byte(s)) // writing to a bytes.Buffer does not fail
	w.close(name)
}

func (w *writer) textOrNil(name, s string) {
	if s == "" {
		w.nil(name)
		return
	}
	w.text(name, s)
}

func (w *writer) int(name string, v int64) { w.text(name, strconv.FormatInt(v, 10)) }
func (w *writer) bool(name string, v bool) { w.text(name, strconv.FormatBool(v)) }

func (w *writer) intOrNil(name string, v *int) {
	if v == nil {
		w.nil(name)
		return
	}
	w.int(name, int64(*v))
}

// intList writes a collection of integer children, or nil when empty.
func (w *writer) intList(name, child string, vs []int) {
	if len(vs) == 0 {
		w.nil(name)
		return
	}
	w.open(name)
	for _, v := range vs {
		w.int(child, int64(v))
	}
	w.close(name)
}
