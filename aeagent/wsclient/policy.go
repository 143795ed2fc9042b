package wsclient

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/enrollment-appliance/aeappliance/proto/xcep"
)

// Client authentication modes of a CAURI (MS-XCEP 3.1.4.1.3.5).
const (
	AuthAnonymous   = xcep.AuthAnonymous   // 1
	AuthKerberos    = xcep.AuthKerberos    // 2
	AuthUsername    = xcep.AuthUsername    // 4
	AuthCertificate = xcep.AuthCertificate // 8
)

// Policies is a GetPoliciesResponse.
type Policies struct {
	PolicyID, FriendlyName string
	// NotChanged: nothing changed since the lastUpdate the client sent; Templates is then empty
	// and the client keeps the policy it has.
	NotChanged      bool
	NextUpdateHours int // 0 when the server gave none
	Templates       []Template
	CAs             []CA
}

// Template is one certificate enrollment policy (a certificate template) as the server offers it
// to the caller.
type Template struct {
	Name, OID                                   string // commonName and the template OID (msPKI-Cert-Template-OID)
	SchemaVersion, MajorRevision, MinorRevision int
	Validity, RenewalPeriod                     time.Duration
	Enroll, Autoenroll                          bool // the caller's permissions
	MinimalKeySize                              int
	KeySpec                                     int // 1 exchange, 2 signature; 0 when nil
	PrivateKeyFlags, SubjectNameFlags           uint32
	EnrollmentFlags, GeneralFlags               uint32
	RASignatures                                int      // signatures a request needs from enrollment agents
	Supersedes                                  []string // common names of the templates this one supersedes
	CARefs                                      []int    // CA.Ref of the CAs that issue it
}

// Archival reports whether the CA archives the template's keys (MS-XCEP privateKeyFlags
// 0x1, CT_FLAG_REQUIRE_PRIVATE_KEY_ARCHIVAL): a request must carry the key, encrypted to the CA
// exchange certificate (MS-WCCE 3.1.1.4.3.6).
func (t Template) Archival() bool { return t.PrivateKeyFlags&0x1 != 0 }

// CA is an issuer of the templates.
type CA struct {
	Ref              int
	Certificate      *x509.Certificate
	URIs             []CAURI
	EnrollPermission bool
}

// CAURI is one enrollment service endpoint of a CA.
type CAURI struct {
	Auth        int // AuthKerberos, AuthUsername, AuthCertificate, ...
	URI         string
	Priority    int // lower is preferred
	RenewalOnly bool
}

// GetPolicies asks the policy service for the caller's policies. With lastUpdate (when the
// client last fetched them) the server may answer NotChanged.
func (c *Client) GetPolicies(ctx context.Context, lastUpdate *time.Time) (*Policies, error) {
	r, err := c.call(ctx, c.policyURL, xcep.GetPoliciesAction, getPoliciesBody(lastUpdate))
	if err != nil {
		return nil, err
	}
	if r.Body.Fault != nil {
		return nil, &Error{URL: c.policyURL, StatusCode: 500, Code: r.Body.Fault.Code.Value, Reason: r.Body.Fault.reason()}
	}
	if r.Body.GetPolicies == nil {
		return nil, fmt.Errorf("wsclient: %s: the reply holds no GetPoliciesResponse", c.policyURL)
	}
	p, err := r.Body.GetPolicies.policies()
	if err != nil {
		return nil, fmt.Errorf("wsclient: %s: %w", c.policyURL, err)
	}
	return p, nil
}

// getPoliciesBody is the GetPolicies element, as cepces sends it (every filter nil).
func getPoliciesBody(lastUpdate *time.Time) []byte {
	var b bytes.Buffer
	b.WriteString(`<GetPolicies xmlns="` + xcep.Namespace + `" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><client>`)
	if lastUpdate != nil {
		b.WriteString(`<lastUpdate>` + lastUpdate.UTC().Format(time.RFC3339) + `</lastUpdate>`)
	} else {
		b.WriteString(`<lastUpdate xsi:nil="true"/>`)
	}
	b.WriteString(`<preferredLanguage xsi:nil="true"/></client><requestFilter><policyOIDs xsi:nil="true"/>`)
	b.WriteString(`<clientVersion xsi:nil="true"/><serverVersion xsi:nil="true"/></requestFilter></GetPolicies>`)
	return b.Bytes()
}

// EnrollmentURL is the CES URI for template t with authentication mode auth (AuthUsername,
// AuthCertificate, ...): of the URIs of the CAs that issue t, the one with the lowest priority
// number, an unrestricted one before a RenewalOnly one of the same priority.
func (p *Policies) EnrollmentURL(t Template, auth int) (string, error) {
	us := p.EnrollmentURLs(t, auth)
	if len(us) == 0 {
		return "", fmt.Errorf("wsclient: no enrollment service with authentication %d for template %s", auth, t.Name)
	}
	return us[0].URI, nil
}

// EnrollmentURLs are all CES URIs for template t with authentication mode auth, in order of
// preference (priority, then unrestricted before RenewalOnly), for trying them in turn.
func (p *Policies) EnrollmentURLs(t Template, auth int) []CAURI {
	var us []CAURI
	for _, ref := range t.CARefs {
		for _, ca := range p.CAs {
			if ca.Ref != ref {
				continue
			}
			for _, u := range ca.URIs {
				if u.Auth == auth && !slices.ContainsFunc(us, func(x CAURI) bool { return x.URI == u.URI }) {
					us = append(us, u)
				}
			}
		}
	}
	slices.SortStableFunc(us, func(a, b CAURI) int {
		if a.Priority != b.Priority {
			return a.Priority - b.Priority
		}
		switch {
		case a.RenewalOnly == b.RenewalOnly:
			return 0
		case a.RenewalOnly:
			return 1
		}
		return -1
	})
	return us
}

// Template returns the template named name (compared case-insensitively, as Windows does).
func (p *Policies) Template(name string) (Template, bool) {
	for _, t := range p.Templates {
		if strings.EqualFold(t.Name, name) {
			return t, true
		}
	}
	return Template{}, false
}

// CA returns the CA with reference ref.
func (p *Policies) CA(ref int) (CA, bool) {
	for _, ca := range p.CAs {
		if ca.Ref == ref {
			return ca, true
		}
	}
	return CA{}, false
}

// getPoliciesXML is GetPoliciesResponse, by local names.
type getPoliciesXML struct {
	Response struct {
		PolicyID           string   `xml:"policyID"`
		FriendlyName       nillable `xml:"policyFriendlyName"`
		NextUpdateHours    nillable `xml:"nextUpdateHours"`
		PoliciesNotChanged nillable `xml:"policiesNotChanged"`
		Policies           struct {
			Policy []policyXML `xml:"policy"`
		} `xml:"policies"`
	} `xml:"response"`
	CAs struct {
		CA []struct {
			URIs struct {
				CAURI []struct {
					ClientAuthentication string `xml:"clientAuthentication"`
					URI                  string `xml:"uri"`
					Priority             string `xml:"priority"`
					RenewalOnly          string `xml:"renewalOnly"`
				} `xml:"cAURI"`
			} `xml:"uris"`
			Certificate      string `xml:"certificate"`
			EnrollPermission string `xml:"enrollPermission"`
			CAReferenceID    string `xml:"cAReferenceID"`
		} `xml:"cA"`
	} `xml:"cAs"`
	OIDs struct {
		OID []struct {
			Value          string `xml:"value"`
			Group          string `xml:"group"`
			OIDReferenceID string `xml:"oIDReferenceID"`
		} `xml:"oID"`
	} `xml:"oIDs"`
}

type policyXML struct {
	PolicyOIDReference string   `xml:"policyOIDReference"`
	CAReferences       []string `xml:"cAs>cAReference"`
	Attributes         struct {
		CommonName    string   `xml:"commonName"`
		PolicySchema  string   `xml:"policySchema"`
		Validity      string   `xml:"certificateValidity>validityPeriodSeconds"`
		Renewal       string   `xml:"certificateValidity>renewalPeriodSeconds"`
		Enroll        string   `xml:"permission>enroll"`
		AutoEnroll    string   `xml:"permission>autoEnroll"`
		MinimalKeyLen string   `xml:"privateKeyAttributes>minimalKeyLength"`
		KeySpec       nillable `xml:"privateKeyAttributes>keySpec"`
		Major         string   `xml:"revision>majorRevision"`
		Minor         string   `xml:"revision>minorRevision"`
		Superseded    []string `xml:"supersededPolicies>commonName"`
		PrivateKey    string   `xml:"privateKeyFlags"`
		SubjectName   string   `xml:"subjectNameFlags"`
		Enrollment    string   `xml:"enrollmentFlags"`
		General       string   `xml:"generalFlags"`
		RASignatures  nillable `xml:"rARequirements>rASignatures"`
	} `xml:"attributes"`
}

// numbers reads the integers of one element after another, remembering the first error.
type numbers struct{ err error }

func (n *numbers) int(what, s string, bits int) int64 {
	s = strings.TrimSpace(s)
	if n.err != nil || s == "" {
		return 0
	}
	v, err := strconv.ParseInt(s, 10, bits)
	if err != nil {
		n.err = fmt.Errorf("%s: %q is not a number", what, s)
	}
	return v
}

func (n *numbers) uint32(what, s string) uint32 {
	s = strings.TrimSpace(s)
	if n.err != nil || s == "" {
		return 0
	}
	// Flags are xs:unsignedInt, but some servers write them as signed 32-bit numbers.
	if v, err := strconv.ParseInt(s, 10, 32); err == nil {
		return uint32(v)
	}
	v, err := strconv.ParseUint(s, 10, 32)
	if err != nil {
		n.err = fmt.Errorf("%s: %q is not a 32-bit number", what, s)
	}
	return uint32(v)
}

func (g *getPoliciesXML) policies() (*Policies, error) {
	var n numbers
	r := g.Response
	p := &Policies{PolicyID: strings.TrimSpace(r.PolicyID), FriendlyName: r.FriendlyName.text(),
		NextUpdateHours: int(n.int("nextUpdateHours", r.NextUpdateHours.text(), 32)),
		NotChanged:      isTrue(r.PoliciesNotChanged.text())}
	oids := map[int64]string{}
	for _, o := range g.OIDs.OID {
		oids[n.int("oIDReferenceID", o.OIDReferenceID, 32)] = strings.TrimSpace(o.Value)
	}
	for _, x := range g.CAs.CA {
		ca := CA{Ref: int(n.int("cAReferenceID", x.CAReferenceID, 32)), EnrollPermission: isTrue(x.EnrollPermission)}
		for _, u := range x.URIs.CAURI {
			ca.URIs = append(ca.URIs, CAURI{Auth: int(n.int("clientAuthentication", u.ClientAuthentication, 32)),
				URI: strings.TrimSpace(u.URI), Priority: int(n.int("priority", u.Priority, 32)), RenewalOnly: isTrue(u.RenewalOnly)})
		}
		der, err := base64.StdEncoding.DecodeString(strings.Join(strings.Fields(x.Certificate), ""))
		if err != nil {
			return nil, fmt.Errorf("CA %d: certificate is not base64: %v", ca.Ref, err)
		}
		if ca.Certificate, err = x509.ParseCertificate(der); err != nil {
			return nil, fmt.Errorf("CA %d: %v", ca.Ref, err)
		}
		p.CAs = append(p.CAs, ca)
	}
	for _, x := range r.Policies.Policy {
		a := x.Attributes
		t := Template{Name: strings.TrimSpace(a.CommonName),
			SchemaVersion:   int(n.int("policySchema", a.PolicySchema, 32)),
			Validity:        time.Duration(n.int("validityPeriodSeconds", a.Validity, 64)) * time.Second,
			RenewalPeriod:   time.Duration(n.int("renewalPeriodSeconds", a.Renewal, 64)) * time.Second,
			Enroll:          isTrue(a.Enroll),
			Autoenroll:      isTrue(a.AutoEnroll),
			MinimalKeySize:  int(n.int("minimalKeyLength", a.MinimalKeyLen, 32)),
			KeySpec:         int(n.int("keySpec", a.KeySpec.text(), 32)),
			MajorRevision:   int(n.int("majorRevision", a.Major, 32)),
			MinorRevision:   int(n.int("minorRevision", a.Minor, 32)),
			PrivateKeyFlags: n.uint32("privateKeyFlags", a.PrivateKey), SubjectNameFlags: n.uint32("subjectNameFlags", a.SubjectName),
			EnrollmentFlags: n.uint32("enrollmentFlags", a.Enrollment), GeneralFlags: n.uint32("generalFlags", a.General),
			RASignatures: int(n.int("rASignatures", a.RASignatures.text(), 32)),
		}
		if t.Name == "" {
			return nil, errors.New("a policy without a commonName")
		}
		ref := n.int("policyOIDReference", x.PolicyOIDReference, 32)
		oid, ok := oids[ref]
		if !ok && n.err == nil {
			return nil, fmt.Errorf("policy %s: policyOIDReference %d names no OID", t.Name, ref)
		}
		t.OID = oid
		for _, s := range a.Superseded {
			if s = strings.TrimSpace(s); s != "" {
				t.Supersedes = append(t.Supersedes, s)
			}
		}
		for _, s := range x.CAReferences {
			t.CARefs = append(t.CARefs, int(n.int("cAReference", s, 32)))
		}
		if n.err != nil {
			return nil, fmt.Errorf("policy %s: %w", t.Name, n.err)
		}
		p.Templates = append(p.Templates, t)
	}
	if n.err != nil {
		return nil, n.err
	}
	return p, nil
}
