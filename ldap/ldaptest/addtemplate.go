package ldaptest

import (
	"strconv"
	"testing"
	"time"

	goldap "github.com/go-ldap/ldap/v3"
)

// NewTemplate describes a version-2 certificate template a test adds (AddTemplate).
type NewTemplate struct {
	CN     string
	OIDArc int // distinct from the sample's (1-7) and other added templates
	EKUs   []string
	// NameFlag (msPKI-Certificate-Name-Flag), Machine (a computer template), Validity (default a year).
	NameFlag uint32
	Machine  bool
	Validity time.Duration
	// RASignatures (msPKI-RA-Signature) and RAApplicationPolicies (msPKI-RA-Application-Policies).
	RASignatures          int
	RAApplicationPolicies []string
	// Enroll are the principals granted Enroll; Authenticated Users may read the template.
	Enroll []Principal
}

// AddTemplate creates the template in the directory, as an administrator would with the
// Certificate Templates console, and adds it to the CA's offered templates (certificateTemplates
// of its pKIEnrollmentService object).
func (dc *DC) AddTemplate(t testing.TB, s *Sample, nt NewTemplate) Template {
	t.Helper()
	byName := map[string]Principal{}
	for k, v := range s.byName {
		byName[k] = v
	}
	ts := templateSpec{CN: nt.CN, Schema: 2, Major: 100, Minor: 1, Validity: nt.Validity, Renewal: 6 * weeks, OIDArc: nt.OIDArc,
		EKUs: nt.EKUs, NameFlag: nt.NameFlag, MinKeySize: 2048, General: GeneralAddTemplName | GeneralIsModified,
		ACL: []aceSpec{{allowRead, AuthenticatedUsers}}}
	if ts.Validity == 0 {
		ts.Validity = year
	}
	if nt.Machine {
		ts.General |= GeneralMachineType
	}
	for _, p := range nt.Enroll {
		byName[p.Name] = p
		ts.ACL = append(ts.ACL, aceSpec{allowEnroll, p.Name})
	}
	tmpl, attrs, err := templateEntry(ts, byName)
	if err != nil {
		t.Fatal(err)
	}
	attrs["msPKI-RA-Signature"] = []string{strconv.Itoa(nt.RASignatures)}
	if len(nt.RAApplicationPolicies) > 0 {
		attrs["msPKI-RA-Application-Policies"] = nt.RAApplicationPolicies
	}
	conn := dc.Admin(t)
	if err := add(conn, tmpl.DN, attrs); err != nil {
		t.Fatal(err)
	}
	mod := goldap.NewModifyRequest(EnrollSvcDN, nil)
	mod.Add("certificateTemplates", []string{nt.CN})
	if err := conn.Modify(mod); err != nil {
		t.Fatalf("offering %s: %v", nt.CN, err)
	}
	s.Templates[nt.CN] = tmpl
	s.Offered = append(s.Offered, nt.CN)
	return tmpl
}

// DisableAccount sets ACCOUNTDISABLE on an account, as an administrator disabling it would.
func (dc *DC) DisableAccount(t testing.TB, p Principal) {
	t.Helper()
	mod := goldap.NewModifyRequest(p.DN, nil)
	uac := "514" // NORMAL_ACCOUNT | ACCOUNTDISABLE
	if p.Name != "" && p.Name[len(p.Name)-1] == '$' {
		uac = "4098" // WORKSTATION_TRUST_ACCOUNT | ACCOUNTDISABLE
	}
	mod.Replace("userAccountControl", []string{uac})
	if err := dc.Admin(t).Modify(mod); err != nil {
		t.Fatalf("disabling %s: %v", p.Name, err)
	}
}
