package ldaptest

import (
	"fmt"
	"time"

	"github.com/enrollment-appliance/aeappliance/ldap/secdesc"
)

// The sample domain that Seed creates. Policy tests and `aectl explain` are judged against it: read it as the
// specification of who may get what.
//
// Groups (→ means "is a member of"):
//
//	PKI-Users-Nested → PKI-Users
//	Denied-Group     → PKI-Users         (and denied Enroll on AEUser/AEUserV2: deny wins)
//	Nest-01 → PKI-Users;  Nest-k → Nest-(k-1) for k = 2..50   (deep50 → Nest-50: 51 levels down)
//
// Users (OU=Staff; password Passw0rd-<name>!; UPN and mail <name>@corp.example.test unless noted):
//
//	alice   → PKI-Users-Nested               may enroll and autoenroll AEUser through nesting
//	bob     → Denied-Group                   refused: deny Enroll on his group beats the PKI-Users grant
//	carol   no groups, no mail               Read only (Authenticated Users)
//	dave    → PKI-Users                      the only one with Enroll on NoReadTemplate, which no enrollee may
//	                                         Read (only svc-enroll, so that the appliance can see it)
//	erin    → PKI-Users                      many attributes: givenName, sn, title, department,
//	                                         ou (2 values), company, displayName (Samba has no dnQualifier)
//	deep50  → Nest-50                        for the policy benchmark
//	svc-enroll (OU=Service Accounts; no mail) → Cert Publishers: the appliance's bind account. Cert
//	                                         Publishers may write userCertificate on users and computers
//	                                         (AD's default security descriptors), as a CA's account is.
//
// Computer WS1 (OU=Workstations): sAMAccountName WS1$, dNSHostName ws1.corp.example.test, SPNs
// HOST/ws1.corp.example.test and HOST/WS1; primary group Domain Computers.
//
// Templates (sampleTemplates; all schema 2, validity 1 year, renewal 6 weeks, RSA ≥ 2048, template OIDs under
// templateOIDv2). Every DACL also gives Domain Admins full control, as AD does, lists deny ACEs first (canonical
// order) and is protected, so nothing is inherited from the container: the ACEs below are all that decide.
//
//	AEUser          rev 100.3  clientAuth, emailProtection; SAN UPN + e-mail, subject = directory path;
//	                           AUTO_ENROLLMENT | PUBLISH_TO_DS.
//	                           Deny Enroll Denied-Group; Read Authenticated Users; Enroll + Autoenroll PKI-Users
//	AEUserV2        rev 100.0  as AEUser, and msPKI-Supersede-Templates = AEUser
//	AEMachine       rev 100.2  clientAuth, serverAuth; SAN DNS, DNS name as CN; AUTO_ENROLLMENT; machine type.
//	                           Read Authenticated Users; Enroll + Autoenroll Domain Computers
//	PendUser        rev 100.1  clientAuth; SAN UPN, directory path; PEND_ALL_REQUESTS.
//	                           Read Authenticated Users; Enroll PKI-Users
//	SuppliesSubject rev 100.1  serverAuth; ENROLLEE_SUPPLIES_SUBJECT; exportable key.
//	                           Read Authenticated Users; Enroll PKI-Users (no Autoenroll)
//	NoReadTemplate  rev 100.1  clientAuth; SAN UPN, directory path.  Enroll dave; Read svc-enroll only
//	NotOffered      rev 100.1  clientAuth; SAN UPN, directory path.  Read + Enroll Authenticated Users;
//	                           exists in AD but the CA does not offer it
//
// The enrollment service "Appliance CA" (dNSHostName appliance.corp.example.test) offers every template
// except NotOffered.
const (
	StaffOU       = "OU=Staff," + BaseDN
	GroupsOU      = "OU=Groups," + BaseDN
	ComputersOU   = "OU=Workstations," + BaseDN
	ServiceOU     = "OU=Service Accounts," + BaseDN
	TemplatesDN   = "CN=Certificate Templates,CN=Public Key Services,CN=Services," + ConfigDN
	CACN          = "Appliance CA"
	CADNSName     = "appliance." + DomainDNS
	EnrollSvcDN   = "CN=" + CACN + ",CN=Enrollment Services,CN=Public Key Services,CN=Services," + ConfigDN
	NestDepth     = 50
	templateOIDv2 = "1.3.6.1.4.1.311.21.8.1111111.2222222.3333333.4444444.5555555.66"
)

// Template flag values used below (MS-CRTD 2.26 msPKI-Enrollment-Flag, 2.28 msPKI-Certificate-Name-Flag).
const (
	EnrollPendAll     = 0x2
	EnrollPublishToDS = 0x8
	EnrollAuto        = 0x20

	NameEnrolleeSuppliesSubject = 0x1
	NameAltRequireDNS           = 0x8000000
	NameAltRequireUPN           = 0x2000000
	NameAltRequireEmail         = 0x4000000
	NameRequireDNSAsCN          = 0x10000000
	NameRequireDirectoryPath    = 0x80000000

	PrivateKeyExportable = 0x10

	GeneralAutoEnrollment = 0x20
	GeneralMachineType    = 0x40
	GeneralAddTemplName   = 0x200
	GeneralIsModified     = 0x20000
)

// EKU OIDs.
const (
	EKUClientAuth      = "1.3.6.1.5.5.7.3.2"
	EKUServerAuth      = "1.3.6.1.5.5.7.3.1"
	EKUEmailProtection = "1.3.6.1.5.5.7.3.4"
)

type groupSpec struct {
	Name     string
	MemberOf []string
}

type userSpec struct {
	Name     string // sAMAccountName (computers without the $) and cn
	OU       string
	Computer bool
	NoMail   bool
	Attrs    map[string][]string
	MemberOf []string
}

// Who an ACE names: a sample account or group by name, or one of these well-known names.
const (
	AuthenticatedUsers = "Authenticated Users"
	DomainAdmins       = "Domain Admins"
	DomainComputers    = "Domain Computers"
	DomainUsers        = "Domain Users"
	CertPublishers     = "Cert Publishers"
)

// Kinds of ACEs a template ACL entry grants.
type aceKind int

const (
	allowRead aceKind = iota
	allowEnroll
	allowAutoenroll
	denyEnroll
)

type aceSpec struct {
	Kind aceKind
	Who  string
}

type templateSpec struct {
	CN                      string
	Schema, Major, Minor    int
	Validity, Renewal       time.Duration
	EKUs                    []string
	NameFlag, EnrollFlag    uint32
	PrivateKeyFlag, General uint32
	MinKeySize              int
	Supersedes              []string
	ACL                     []aceSpec
	NotOffered              bool
	OIDArc                  int // last arcs of msPKI-Cert-Template-OID: templateOIDv2.<OIDArc>.<OIDArc*7>
}

const (
	year  = 365 * 24 * time.Hour
	weeks = 7 * 24 * time.Hour
)

var sampleGroups = func() []groupSpec {
	g := []groupSpec{
		{Name: "PKI-Users"},
		{Name: "PKI-Users-Nested", MemberOf: []string{"PKI-Users"}},
		{Name: "Denied-Group", MemberOf: []string{"PKI-Users"}},
		{Name: NestName(1), MemberOf: []string{"PKI-Users"}},
	}
	for k := 2; k <= NestDepth; k++ {
		g = append(g, groupSpec{Name: NestName(k), MemberOf: []string{NestName(k - 1)}})
	}
	return g
}()

// NestName is the name of the k-th group of the nesting chain (Nest-01 … Nest-50).
func NestName(k int) string { return fmt.Sprintf("Nest-%02d", k) }

var sampleUsers = []userSpec{
	{Name: "alice", OU: StaffOU, MemberOf: []string{"PKI-Users-Nested"},
		Attrs: map[string][]string{"givenName": {"Alice"}, "sn": {"Archer"}, "displayName": {"Alice Archer"}}},
	{Name: "bob", OU: StaffOU, MemberOf: []string{"Denied-Group"},
		Attrs: map[string][]string{"givenName": {"Bob"}, "sn": {"Baker"}}},
	{Name: "carol", OU: StaffOU, NoMail: true},
	{Name: "dave", OU: StaffOU, MemberOf: []string{"PKI-Users"}},
	{Name: "erin", OU: StaffOU, MemberOf: []string{"PKI-Users"}, Attrs: map[string][]string{
		"givenName": {"Erin"}, "sn": {"Example"}, "displayName": {"Erin Example"}, "title": {"Network Engineer"},
		"department": {"Infrastructure"}, "ou": {"Datacenter", "PKI Team"},
		"company": {"Example Corp"}}},
	{Name: "deep50", OU: StaffOU, MemberOf: []string{NestName(NestDepth)}},
	{Name: "svc-enroll", OU: ServiceOU, NoMail: true, MemberOf: []string{CertPublishers}},
	{Name: "WS1", OU: ComputersOU, Computer: true, Attrs: map[string][]string{
		"dNSHostName":          {"ws1." + DomainDNS},
		"servicePrincipalName": {"HOST/ws1." + DomainDNS, "HOST/WS1"}}},
}

var userACL = []aceSpec{{allowRead, AuthenticatedUsers}, {allowEnroll, "PKI-Users"},
	{allowAutoenroll, "PKI-Users"}, {denyEnroll, "Denied-Group"}}

var sampleTemplates = []templateSpec{
	{CN: "AEUser", Schema: 2, Major: 100, Minor: 3, Validity: year, Renewal: 6 * weeks, OIDArc: 1,
		EKUs:     []string{EKUClientAuth, EKUEmailProtection},
		NameFlag: NameAltRequireUPN | NameAltRequireEmail | NameRequireDirectoryPath, MinKeySize: 2048,
		EnrollFlag: EnrollAuto | EnrollPublishToDS, General: GeneralAutoEnrollment | GeneralAddTemplName | GeneralIsModified,
		ACL: userACL},
	{CN: "AEUserV2", Schema: 2, Major: 100, Minor: 0, Validity: year, Renewal: 6 * weeks, OIDArc: 2,
		EKUs:     []string{EKUClientAuth, EKUEmailProtection},
		NameFlag: NameAltRequireUPN | NameAltRequireEmail | NameRequireDirectoryPath, MinKeySize: 2048,
		EnrollFlag: EnrollAuto | EnrollPublishToDS, General: GeneralAutoEnrollment | GeneralAddTemplName | GeneralIsModified,
		Supersedes: []string{"AEUser"}, ACL: userACL},
	{CN: "AEMachine", Schema: 2, Major: 100, Minor: 2, Validity: year, Renewal: 6 * weeks, OIDArc: 3,
		EKUs:     []string{EKUClientAuth, EKUServerAuth},
		NameFlag: NameAltRequireDNS | NameRequireDNSAsCN, MinKeySize: 2048, EnrollFlag: EnrollAuto,
		General: GeneralAutoEnrollment | GeneralMachineType | GeneralAddTemplName | GeneralIsModified,
		ACL:     []aceSpec{{allowRead, AuthenticatedUsers}, {allowEnroll, DomainComputers}, {allowAutoenroll, DomainComputers}}},
	{CN: "PendUser", Schema: 2, Major: 100, Minor: 1, Validity: year, Renewal: 6 * weeks, OIDArc: 4,
		EKUs:     []string{EKUClientAuth},
		NameFlag: NameAltRequireUPN | NameRequireDirectoryPath, MinKeySize: 2048, EnrollFlag: EnrollPendAll,
		General: GeneralAddTemplName | GeneralIsModified,
		ACL:     []aceSpec{{allowRead, AuthenticatedUsers}, {allowEnroll, "PKI-Users"}}},
	{CN: "SuppliesSubject", Schema: 2, Major: 100, Minor: 1, Validity: year, Renewal: 6 * weeks, OIDArc: 5,
		EKUs:     []string{EKUServerAuth},
		NameFlag: NameEnrolleeSuppliesSubject, MinKeySize: 2048, PrivateKeyFlag: PrivateKeyExportable,
		General: GeneralAddTemplName | GeneralIsModified,
		ACL:     []aceSpec{{allowRead, AuthenticatedUsers}, {allowEnroll, "PKI-Users"}}},
	{CN: "NoReadTemplate", Schema: 2, Major: 100, Minor: 1, Validity: year, Renewal: 6 * weeks, OIDArc: 6,
		EKUs:     []string{EKUClientAuth},
		NameFlag: NameAltRequireUPN | NameRequireDirectoryPath, MinKeySize: 2048,
		General: GeneralAddTemplName | GeneralIsModified,
		ACL:     []aceSpec{{allowEnroll, "dave"}, {allowRead, "svc-enroll"}}},
	{CN: "NotOffered", Schema: 2, Major: 100, Minor: 1, Validity: year, Renewal: 6 * weeks, OIDArc: 7,
		EKUs:     []string{EKUClientAuth},
		NameFlag: NameAltRequireUPN | NameRequireDirectoryPath, MinKeySize: 2048,
		General: GeneralAddTemplName | GeneralIsModified, NotOffered: true,
		ACL: []aceSpec{{allowRead, AuthenticatedUsers}, {allowEnroll, AuthenticatedUsers}}},
}

// Principal is a seeded account or group.
type Principal struct {
	Name     string // sAMAccountName (WS1$ for the computer)
	DN       string
	UPN      string // users only
	Mail     string
	Password string // accounts only
	SID      secdesc.SID
}

// Template is a seeded certificate template.
type Template struct {
	CN, DN, OID string
	ACL         []secdesc.ACE // the DACL as written (Domain Admins first)
}

// Sample is what Seed created, with the SIDs the directory assigned.
type Sample struct {
	DomainSID                                                  secdesc.SID
	Alice, Bob, Carol, Dave, Erin, Deep50, SvcEnroll, WS1      Principal
	PKIUsers, PKIUsersNested, DeniedGroup                      Principal
	Nest                                                       []Principal // Nest[0] = Nest-01 … Nest[49] = Nest-50
	DomainUsers, DomainComputers, DomainAdmins, CertPublishers secdesc.SID
	Templates                                                  map[string]Template // by cn
	Offered                                                    []string            // the enrollment service's certificateTemplates
	CACN, EnrollmentServiceDN, TemplatesDN                     string
	byName                                                     map[string]Principal
}

// Principal returns a seeded account or group by sAMAccountName ("alice", "WS1$", "PKI-Users", "Nest-07").
func (s *Sample) Principal(name string) (Principal, bool) {
	p, ok := s.byName[name]
	return p, ok
}
