package policy

import (
	"crypto/ecdsa"
	"crypto/x509"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/enrollment-appliance/aeappliance/enrollsvc/issue"
	"github.com/enrollment-appliance/aeappliance/ldap/secdesc"
)

// Outcome is what a decision says to do. The zero value refuses, so a Decision that was never
// filled in fails closed.
type Outcome int

// Outcomes.
const (
	Refuse Outcome = iota
	Issue
	Pend
)

func (o Outcome) String() string {
	switch o {
	case Issue:
		return "issue"
	case Pend:
		return "pend"
	}
	return "refuse"
}

// Input is everything a decision depends on. Time comes in here: policy reads no clock.
type Input struct {
	Template   Template
	Account    Account
	Request    *Request // nil = explain without a request
	CACert     *x509.Certificate
	Now        time.Time
	Autoenroll bool // the protocol says this is an autoenrollment request
	Custom     []CustomExtension
	// ExtraSubject names directory attributes added to the subject (title, givenName, sn,
	// dnQualifier, ou, ...), configured per template in the appliance. Each value becomes its
	// own RDN, in the order given; an attribute the account lacks is left out (with a reason).
	ExtraSubject []string
	// Names are display names of SIDs (string form → name), e.g. the trustees of the template's
	// ACEs, so that explanations say which group decided.
	Names map[string]string
	// DNSHolders maps each DNS name of the account's dNSHostName (lower case) to the DNs of every
	// directory object that holds it (as dNSHostName or a HOST/ service principal name), as the
	// caller found them. A name that another object holds, or that is missing from the map (not
	// checked), is never put in a certificate: AD does not keep dNSHostName unique, and a computer
	// whose dNSHostName was set to a domain controller's would otherwise get the controller's name
	// (Certifried, CVE-2022-26923).
	DNSHolders map[string][]string
	// UPNHolders maps the account's userPrincipalName (lower case) to the DNs of every object
	// that holds it, explicitly (userPrincipalName) or implicitly (sAMAccountName@domain). As
	// for DNSHolders, a UPN another object holds, or that was not checked, is never certified: a
	// DC maps such a name (weak certificate mapping, MS-PKCA 3.1.5.2.1) to whichever account it
	// finds first.
	UPNHolders map[string][]string
	// NamedByConnector says the account was named by a connector acting for others (an MDM's
	// PKCS request or SCEP verdict), not authenticated as the requester: a protected account
	// (ProtectedGroup) is then refused, as AD CS's enrollment agent restrictions keep
	// administrators out of reach of agents.
	NamedByConnector bool
	// KeyArchived says the request's private key is archived for the key recovery agents (the
	// caller made the key and archived it, or checked the one the client sent against the
	// request): a template that requires archival is then not refused for it.
	KeyArchived bool
	// Agent, for a request an enrollment agent made on behalf of Account (MS-WCCE enroll on
	// behalf of), is the agent's account as it authenticated: the template's DACL is checked for
	// it, while the certificate's names and SID come from Account. AgentSignatures are the agent
	// signatures on the request (msPKI-RA-Signature counts them), AgentRestrictions the enrollment
	// agent restrictions (see AgentRestriction).
	Agent             *Account
	AgentSignatures   []AgentSignature
	AgentRestrictions []AgentRestriction
	// Reenrollment says the request renews a valid certificate of this template for this account,
	// signed with its key (the caller checked): with PREVIOUS_APPROVAL_VALIDATE_REENROLLMENT
	// ("Valid existing certificate" for reenrollment) it needs neither agent signatures nor a
	// certificate manager's approval again.
	Reenrollment bool
}

// Decision is policy's answer, with every reason for it.
type Decision struct {
	Outcome  Outcome
	Reasons  []string // every reason and observation, in the order they were made
	Refusals []string // the reasons that refuse (a subset of Reasons); empty unless Outcome is Refuse
	Access   secdesc.Access
	// Autoenroll says the request is an autoenrollment request; MayAutoenroll whether this
	// account may autoenroll this template at all (permissions and template flags).
	Autoenroll    bool
	MayAutoenroll bool
	// Order is the exact certificate content when not refused (zero when refused).
	Order issue.Order
	// Subject and SANs are display forms of what the certificate gets (or would get, when
	// refused for another reason): Subject is RFC 4514 text; SANs are "DNS:x", "UPN:x", ...
	Subject  string
	SANs     []string
	Publish  bool
	Template string
	Names    map[string]string // Input.Names, for explanations
	// Code is the AD CS error (CERTSRV_E_...) of the first refusal that has a specific one, for
	// protocols that report it (MS-WSTEP faults); "" for the others (template denied).
	Code string
}

// Decide applies the template's rules to the account and request. It does no I/O and never
// panics; a zero Input refuses with reasons.
func Decide(in Input) (d Decision) {
	x := &decider{in: in, d: &d}
	d.Names = in.Names
	defer func() {
		if r := recover(); r != nil {
			x.refuse("internal error while deciding: %v", r)
			d.Outcome, d.Order, d.Publish = Refuse, issue.Order{}, false
		}
	}()
	x.run()
	return d
}

type decider struct {
	in       Input
	d        *Decision
	supplies bool // ENROLLEE_SUPPLIES_SUBJECT
}

func (x *decider) refuse(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	x.d.Reasons = append(x.d.Reasons, msg)
	x.d.Refusals = append(x.d.Refusals, msg)
}

// refuseAs refuses with the AD CS error of the refusal (Decision.Code).
func (x *decider) refuseAs(code, format string, args ...any) {
	if x.d.Code == "" {
		x.d.Code = code
	}
	x.refuse(format, args...)
}

// AD CS errors (MS-WCCE 2.2.2.9.x, winerror.h) a decision's refusal may carry.
const (
	CodeRestrictedOfficer     = "CERTSRV_E_RESTRICTEDOFFICER"       // 0x80094009
	CodeSignatureCount        = "CERTSRV_E_SIGNATURE_COUNT"         // 0x8009480A
	CodeSignatureRejected     = "CERTSRV_E_SIGNATURE_REJECTED"      // 0x8009480B
	CodeArchivedKeyRequired   = "CERTSRV_E_ARCHIVED_KEY_REQUIRED"   // 0x80094804
	CodeArchivedKeyUnexpected = "CERTSRV_E_ARCHIVED_KEY_UNEXPECTED" // 0x80094810
)

func (x *decider) note(format string, args ...any) {
	x.d.Reasons = append(x.d.Reasons, fmt.Sprintf(format, args...))
}

func (x *decider) run() {
	in, t := x.in, x.in.Template
	x.d.Template = t.Name
	x.supplies = t.NameFlags&NameEnrolleeSuppliesSubject != 0
	if t.Name == "" {
		x.refuse("no template given")
	}
	if in.Account.SID.Authority == 0 && len(in.Account.SID.Sub) == 0 {
		x.refuse("no account given (it has no objectSid)")
	}
	if in.CACert == nil {
		x.refuse("no CA certificate given")
	}
	if in.Now.IsZero() {
		x.refuse("no decision time given")
	}
	if in.NamedByConnector {
		if g := ProtectedGroup(in.Account); g != "" {
			x.refuse("%s is protected (%s): an account a connector names is never one", x.who(), g)
		}
	}
	x.access()
	x.templateRules()
	x.requestTemplate()
	x.names()
	x.extensions()
	x.validity()
	x.keys()
	x.outcome()
}

func (x *decider) who() string {
	a := x.in.Account
	name := a.SAMAccountName
	if name == "" {
		name = a.DN
	}
	return fmt.Sprintf("%s %q", a.Kind(), name)
}

// access decides Read, Enroll and Autoenroll from the template's DACL.
func (x *decider) access() {
	t, acc := x.in.Template, x.in.Account
	if t.SD == nil {
		v := secdesc.Verdict{ACE: -1, Reason: "the template has no security descriptor"}
		x.d.Access = secdesc.Access{Read: v, Enroll: v, Autoenroll: v}
		x.refuse("the template has no security descriptor: nobody may enroll")
		return
	}
	token, who := tokenOf(acc), x.who()
	if x.in.Agent != nil {
		// On behalf of another account: the agent is the one that enrolls (MS-WCCE).
		token, who = tokenOf(*x.in.Agent), agentWho(x.in.Agent)
	}
	a := t.SD.Check(token)
	x.d.Access = a
	if a.Read.Allowed {
		x.note("Read: %s", x.d.why(a.Read))
	} else {
		x.refuse("%s may not read the template: %s", who, x.d.why(a.Read))
	}
	if a.Enroll.Allowed {
		x.note("Enroll: %s", x.d.why(a.Enroll))
		if !a.Read.Allowed {
			x.refuse("Enroll is granted but Read is not, and enrolling needs both")
		}
	} else {
		x.refuse("%s may not enroll: %s", who, x.d.why(a.Enroll))
	}

	var why []string
	if !a.Autoenroll.Allowed {
		why = append(why, "no Autoenroll permission: "+x.d.why(a.Autoenroll))
	} else if !a.Read.Allowed || !a.Enroll.Allowed {
		why = append(why, "Autoenroll is granted but autoenrollment also needs Read and Enroll")
	}
	if t.NameFlags&(NameEnrolleeSuppliesSubject|NameEnrolleeSuppliesSubjectAltName) != 0 {
		why = append(why, "the enrollee supplies the subject, and such templates are never autoenrolled")
	}
	if t.EnrollmentFlags&EnrollUserInteractionRequired != 0 {
		why = append(why, "the template requires user interaction (USER_INTERACTION_REQUIRED)")
	}
	x.d.MayAutoenroll = len(why) == 0
	x.d.Autoenroll = x.in.Autoenroll || (x.in.Request != nil && x.in.Request.Autoenroll)
	switch {
	case x.d.Autoenroll:
		for _, w := range why {
			x.refuse("autoenrollment refused: %s", w)
		}
		if len(why) == 0 {
			x.note("Autoenroll: %s", x.d.why(a.Autoenroll))
		}
	case len(why) == 0:
		x.note("Autoenroll: %s", x.d.why(a.Autoenroll))
	default:
		x.note("Autoenroll: not possible: %s", strings.Join(why, "; "))
	}
}

// templateRules refuses templates this CA cannot honour and accounts of the wrong kind.
func (x *decider) templateRules() {
	t, acc := x.in.Template, x.in.Account
	if t.GeneralFlags&(GeneralIsCA|GeneralIsCrossCA) != 0 {
		x.refuse("the template is for CA certificates (IS_CA/IS_CROSS_CA); this CA issues end-entity certificates only")
	}
	if t.Name != "" && acc.DN != "" {
		if t.IsMachine() && !acc.Computer {
			x.refuse("the template is for computers (MACHINE_TYPE) and the account is a user")
		} else if !t.IsMachine() && acc.Computer {
			x.refuse("the template is for users and the account is a computer")
		}
	}
	x.agents()
	if t.PrivateKeyFlags&PrivateKeyRequireArchival != 0 && !x.in.KeyArchived {
		x.refuseAs(CodeArchivedKeyRequired, "the template requires private key archival: send the private key for archival with the request "+
			"(a CMC key archival request to the CA exchange certificate), or have the CA make the key (PKCS, aectl pkcs12 issue) "+
			"(CERTSRV_E_ARCHIVED_KEY_REQUIRED)")
	}
	if t.PrivateKeyFlags&PrivateKeyAttestRequired != 0 {
		x.refuse("the template requires TPM key attestation, which this CA cannot verify")
	}
	if t.Name != "" && t.Validity <= 0 {
		x.refuse("the template has no validity period")
	}
}

// requestTemplate checks that the request names the template it is decided against.
func (x *decider) requestTemplate() {
	r, t := x.in.Request, x.in.Template
	if r == nil {
		x.note("no request given: the key is not checked; subject, SANs and extensions are what a request would get")
		return
	}
	if r.TemplateName != "" && !strings.EqualFold(r.TemplateName, t.Name) {
		x.refuse("the request names template %q, not %q", r.TemplateName, t.Name)
	}
	if len(r.TemplateOID) > 0 {
		if len(t.OID) > 0 && !r.TemplateOID.Equal(t.OID) {
			x.refuse("the request names template OID %s, not %s (%s)", r.TemplateOID, t.OID, t.Name)
		} else if len(t.OID) == 0 {
			x.note("the request names template OID %s; the template has no OID to compare", r.TemplateOID)
		}
	}
}

// names builds the subject and subjectAltName.
func (x *decider) names() {
	t := x.in.Template
	var subj, tail []subjectAttr
	var sans []GeneralName
	if t.NameFlags&NameEnrolleeSuppliesSubjectAltName != 0 && !x.supplies {
		x.note("ENROLLEE_SUPPLIES_SUBJECT_ALT_NAME is set but, as in AD CS (MS-WCCE 3.2.2.6.2.1.4.5.9), the CA ignores it: subject alternative names come from the directory")
	}
	if x.supplies {
		subj, sans = x.requestNames()
	} else {
		subj, tail, sans = x.directoryNames()
		x.ignoredRequestNames()
	}
	for _, name := range x.in.ExtraSubject {
		vals := x.in.Account.Values(name)
		if len(vals) == 0 {
			x.note("extra subject attribute %s: the account has no value; left out", name)
			continue
		}
		for _, v := range vals {
			a, err := newSubjectAttr(name, v)
			if err != nil {
				x.refuse("extra subject attribute: %v", err)
				continue
			}
			subj = append(subj, a)
		}
	}
	subj = append(subj, tail...)
	if len(subj) == 0 && len(sans) == 0 && (!x.supplies || x.in.Request != nil) {
		x.refuse("the certificate would have neither a subject nor a subject alternative name (check msPKI-Certificate-Name-Flag)")
	}
	x.d.Order.Subject = pkixName(subj)
	x.d.Subject = formatSubject(subj)
	if len(sans) > 0 {
		x.d.Order.ExtraExtensions = append(x.d.Order.ExtraExtensions, sanExtension(sans, len(subj) == 0))
		for _, s := range sans {
			x.d.SANs = append(x.d.SANs, s.String())
		}
	}
}

// directoryNames builds subject and SANs from the account per msPKI-Certificate-Name-Flag
// (MS-WCCE 3.2.2.6.2.1.4.5.9). tail holds attributes that go after any extra attributes (E=).
func (x *decider) directoryNames() (subj, tail []subjectAttr, sans []GeneralName) {
	f, acc := x.in.Template.NameFlags, x.in.Account
	add := func(dst *[]subjectAttr, name, value string) {
		a, err := newSubjectAttr(name, value)
		if err != nil {
			x.refuse("subject: %v", err)
			return
		}
		*dst = append(*dst, a)
	}
	switch {
	case f&NameRequireDirectoryPath != 0:
		rdns, err := parseDN(acc.DN)
		if err != nil || len(rdns) == 0 {
			x.refuse("subject: the account's DN %q does not parse: %v", acc.DN, err)
			break
		}
		for i := len(rdns) - 1; i >= 0; i-- {
			if len(rdns[i]) != 1 {
				x.refuse("subject: the account's DN has a multi-valued RDN, which this CA cannot reproduce")
				continue
			}
			add(&subj, rdns[i][0].typ, rdns[i][0].value)
		}
	case f&(NameRequireCommonName|NameRequireDNSAsCN) != 0:
		// AD CS: CN=dNSHostName for computers, CN=cn for users.
		if acc.Computer {
			if hosts := splitDNS(acc.DNSHostName); len(hosts) == 0 {
				x.refuse("subject: the template puts the DNS name in the CN but the computer has no dNSHostName (CERTSRV_E_SUBJECT_DNS_REQUIRED)")
			} else if x.heldAlone("subject", "DNS name", hosts[0], x.in.DNSHolders) {
				add(&subj, "cn", hosts[0])
			}
		} else if acc.CN == "" {
			x.refuse("subject: the template puts the common name in the subject but the account has no cn")
		} else {
			add(&subj, "cn", acc.CN)
		}
	}
	if f&NameRequireEmail != 0 {
		if acc.Mail == "" {
			x.refuse("subject: the template puts the e-mail address in the subject but the account has no mail (CERTSRV_E_SUBJECT_EMAIL_REQUIRED)")
		} else {
			add(&tail, "e", acc.Mail)
		}
	}

	seen := map[string]bool{}
	addSAN := func(g GeneralName) {
		if k := strings.ToLower(g.String()); !seen[k] {
			seen[k] = true
			sans = append(sans, g)
		}
	}
	if f&NameAltRequireDirectoryGUID != 0 {
		if !acc.HasGUID {
			x.refuse("subjectAltName: the template requires the directory GUID but the account has no objectGUID")
		} else {
			addSAN(guidName(acc.GUIDWire(), acc.GUIDString()))
		}
	}
	if f&NameAltRequireDNS != 0 {
		hosts := splitDNS(acc.DNSHostName)
		if len(hosts) == 0 {
			x.refuse("subjectAltName: the template requires the DNS name but the account has no dNSHostName (CERTSRV_E_SUBJECT_DNS_REQUIRED)")
		}
		for _, h := range hosts {
			if !validDNSName(h, false) {
				x.refuse("subjectAltName: dNSHostName value %q is not a valid DNS name", h)
				continue
			}
			if x.heldAlone("subjectAltName", "DNS name", h, x.in.DNSHolders) {
				addSAN(dnsName(h))
			}
		}
	}
	if f&NameAltRequireDomainDNS != 0 {
		if acc.Domain == "" || !validDNSName(acc.Domain, false) {
			x.refuse("subjectAltName: the template requires the domain's DNS name but the account's DN has no DC= components")
		} else {
			addSAN(dnsName(acc.Domain))
		}
	}
	if f&NameAltRequireUPN != 0 {
		if acc.UPN == "" {
			x.refuse("subjectAltName: the template requires the UPN but the account has no userPrincipalName (CERTSRV_E_SUBJECT_UPN_REQUIRED)")
		} else if x.heldAlone("subjectAltName", "UPN", acc.UPN, x.in.UPNHolders) {
			addSAN(upnName(acc.UPN))
		}
	}
	if f&NameAltRequireSPN != 0 {
		if len(acc.SPNs) == 0 {
			x.refuse("subjectAltName: the template requires service principal names but the account has no servicePrincipalName")
		} else if acc.Domain == "" {
			x.refuse("subjectAltName: service principal names need the Kerberos realm, but the account's DN has no DC= components")
		}
		for _, spn := range acc.SPNs {
			addSAN(spnName(spn, strings.ToUpper(acc.Domain)))
		}
	}
	if f&NameAltRequireEmail != 0 {
		switch {
		case acc.Mail == "":
			x.refuse("subjectAltName: the template requires the e-mail address but the account has no mail (CERTSRV_E_SUBJECT_EMAIL_REQUIRED)")
		case !isIA5(acc.Mail):
			x.refuse("subjectAltName: mail %q is not ASCII", acc.Mail)
		default:
			addSAN(emailName(acc.Mail))
		}
	}
	return subj, tail, sans
}

// ignoredRequestNames says what the request asked for that a directory-built name ignores.
func (x *decider) ignoredRequestNames() {
	r := x.in.Request
	if r == nil {
		return
	}
	if len(r.Subject) > 0 {
		x.note("the request asked for subject %q; ignored: the subject comes from the directory", issue.FormatRDNs(r.Subject))
	}
	for _, g := range r.SANs {
		x.note("the request asked for %s; ignored: subject alternative names come from the directory", g)
	}
}

// requestNames takes subject and SANs from the request (ENROLLEE_SUPPLIES_SUBJECT), refusing
// names that claim another account's identity (ESC1).
func (x *decider) requestNames() (subj []subjectAttr, sans []GeneralName) {
	r, acc := x.in.Request, x.in.Account
	x.note("the template lets the enrollee supply subject and subject alternative names (ENROLLEE_SUPPLIES_SUBJECT)")
	if r == nil {
		return nil, nil
	}
	for _, rdn := range r.Subject {
		if len(rdn) != 1 {
			x.refuse("the request's subject has a multi-valued RDN, which this CA does not issue")
			continue
		}
		short := issue.ShortName(rdn[0].Type)
		s, isStr := rdn[0].Value.(string)
		if short == rdn[0].Type.String() || !isStr { // a type without a name is not one we issue
			x.refuse("the request's subject attribute %s is not one this CA issues", rdn[0].Type)
			continue
		}
		a, err := newSubjectAttr(short, s)
		if err != nil {
			x.refuse("the request's subject: %v", err)
			continue
		}
		subj = append(subj, a)
	}
	own := acc.SID.String()
	for _, g := range r.SANs {
		switch g.Kind {
		case "DNS":
			if !validDNSName(g.Value, true) {
				x.refuse("the request asks for DNS name %q, which is not a valid DNS name", g.Value)
				continue
			}
			sans = append(sans, dnsName(g.Value))
		case "email":
			sans = append(sans, emailName(g.Value))
		case "IP":
			sans = append(sans, ipName(net.ParseIP(g.Value)))
		case "URI":
			if strings.HasPrefix(strings.ToLower(g.Value), sidURIPrefix) && g.Value[len(sidURIPrefix):] != own {
				x.refuse("the request asks for %s, the SID of another account (ESC1): refused", g)
				continue
			}
			sans = append(sans, uriName(g.Value))
		case "UPN":
			if acc.UPN == "" || !strings.EqualFold(g.Value, acc.UPN) {
				x.refuse("the request asks for UPN %q, which is not the account's (%q) (ESC1): refused", g.Value, acc.UPN)
				continue
			}
			if x.heldAlone("subjectAltName", "UPN", acc.UPN, x.in.UPNHolders) {
				sans = append(sans, upnName(acc.UPN))
			}
		case "SID":
			if g.Value != own {
				x.refuse("the request asks for SID %s in the subject alternative name, not the account's %s (ESC1): refused", g.Value, own)
				continue
			}
			sans = append(sans, sidName(own))
		case "GUID":
			if !acc.HasGUID || !strings.EqualFold(g.Value, acc.GUIDString()) {
				x.refuse("the request asks for directory GUID %s, not the account's (ESC1): refused", g.Value)
				continue
			}
			sans = append(sans, guidName(acc.GUIDWire(), acc.GUIDString()))
		default:
			x.refuse("the request asks for %s, a kind of subject alternative name this CA does not issue", g)
		}
	}
	return subj, sans
}

// extensions adds the SID, template, EKU, policy and custom extensions and says what of the
// request's own extensions is ignored.
func (x *decider) extensions() {
	t, acc, r := x.in.Template, x.in.Account, x.in.Request
	own := acc.SID.String()
	if r != nil {
		if r.HasSIDExtension {
			if x.supplies && r.SID != own {
				x.refuse("the request carries a SID extension for %s, not the account's %s (ESC1): refused", r.SID, own)
			} else {
				x.note("the request asked for a SID extension (%s); ignored: the SID comes from the account's objectSid", r.SID)
			}
		}
		if r.BasicConstraintsCA {
			x.note("the request asked for basicConstraints CA=true; ignored: this CA issues end-entity certificates only")
		}
		if len(r.EKUs) > 0 {
			x.note("the request asked for EKUs %s; ignored: EKUs come from the template", oidList(r.EKUs))
		}
		for _, e := range r.Extensions {
			switch {
			case e.Id.Equal(oidExtSAN), e.Id.Equal(oidExtSID), e.Id.Equal(oidExtBasicConstr), e.Id.Equal(oidExtEKU),
				e.Id.Equal(oidExtTemplateV1), e.Id.Equal(oidExtTemplateV2):
			default:
				x.note("the request asked for extension %s; ignored: extensions come from the template", oidName(e.Id))
			}
		}
	}
	o := &x.d.Order
	if t.EnrollmentFlags&EnrollNoSecurityExtension != 0 {
		x.note("no SID extension: the template sets NO_SECURITY_EXTENSION")
	} else if len(acc.SID.Sub) > 0 {
		o.ExtraExtensions = append(o.ExtraExtensions, sidExtension(own))
	}
	if len(t.OID) > 0 {
		o.ExtraExtensions = append(o.ExtraExtensions, templateV2Extension(t.OID, t.Major, t.Minor))
	}
	if t.SchemaVersion <= 1 && t.Name != "" {
		o.ExtraExtensions = append(o.ExtraExtensions, templateV1Extension(t.Name))
	}
	if len(t.EKUs) > 0 {
		if containsOID(t.CriticalExtensions, oidExtEKU) {
			o.ExtraExtensions = append(o.ExtraExtensions, ekuExtension(t.EKUs, true))
		} else {
			for _, e := range t.EKUs {
				if k, ok := knownEKUs[e.String()]; ok {
					o.ExtKeyUsage = append(o.ExtKeyUsage, k)
				} else {
					o.UnknownEKUs = append(o.UnknownEKUs, e)
				}
			}
		}
		if t.SchemaVersion >= 2 {
			o.ExtraExtensions = append(o.ExtraExtensions, policiesExtension(oidExtAppPolicies, t.EKUs, false))
		}
	}
	if len(t.CertificatePolicies) > 0 {
		o.ExtraExtensions = append(o.ExtraExtensions,
			policiesExtension(oidExtCertPolicies, t.CertificatePolicies, containsOID(t.CriticalExtensions, oidExtCertPolicies)))
	}
	o.KeyUsage = t.KeyUsage
	if ku, dropped := consistentKeyUsage(o.KeyUsage, o.ExtKeyUsage); dropped != 0 {
		o.KeyUsage = ku
		x.note("key usage: %s left out: not consistent with the certificate's extended key usages (RFC 5280 4.2.1.12)",
			strings.Join(KeyUsageNames(dropped), ", "))
	}
	if t.EnrollmentFlags&EnrollAddOCSPNoCheck != 0 {
		o.ExtraExtensions = append(o.ExtraExtensions, ocspNoCheckExtension())
	}
	o.NoRevocationInfo = t.EnrollmentFlags&EnrollNoRevocationInfoInIssuedCerts != 0
	for i, c := range x.in.Custom {
		ext, err := customExtension(c, acc)
		if err != nil {
			x.refuse("%v", err)
			continue
		}
		for _, prev := range x.in.Custom[:i] {
			if prev.OID.Equal(c.OID) {
				x.refuse("custom extension %s is configured twice", c.OID)
			}
		}
		o.ExtraExtensions = append(o.ExtraExtensions, ext)
	}
}

// validity is the template's period, clipped to the CA certificate.
func (x *decider) validity() {
	t, ca, now := x.in.Template, x.in.CACert, x.in.Now
	v := t.Validity
	if ca != nil && !now.IsZero() {
		switch {
		case !now.Before(ca.NotAfter):
			x.refuse("the CA certificate expired at %s", ca.NotAfter.UTC().Format(time.RFC3339))
		case now.Before(ca.NotBefore):
			x.refuse("the CA certificate is not valid before %s", ca.NotBefore.UTC().Format(time.RFC3339))
		case v > 0 && now.Add(v).After(ca.NotAfter):
			v = ca.NotAfter.Sub(now).Truncate(time.Second)
			x.note("validity clipped from %s to %s: the CA certificate expires at %s", formatPeriod(t.Validity),
				formatPeriod(v), ca.NotAfter.UTC().Format(time.RFC3339))
		}
	}
	x.d.Order.Validity = v
}

// keys checks the request's public key.
func (x *decider) keys() {
	r := x.in.Request
	if r == nil {
		return
	}
	pub := r.PublicKey
	if pub == nil && r.CSR != nil {
		pub = r.CSR.PublicKey
	}
	var caKey any
	if x.in.CACert != nil {
		caKey = x.in.CACert.PublicKey
	}
	rules := issue.KeyRules{Algorithm: x.in.Template.KeyAlgorithm, MinBits: x.in.Template.MinimalKeySize}
	problems := issue.KeyProblems(pub, rules, caKey)
	for _, p := range problems {
		x.refuse("key: %s", p)
	}
	if len(problems) == 0 {
		x.note("key: %s", issue.DescribeKey(pub))
	}
	if _, ok := pub.(*ecdsa.PublicKey); ok {
		// RFC 8813: an id-ecPublicKey certificate must not assert key or data encipherment.
		if ku := x.d.Order.KeyUsage; ku&(x509.KeyUsageKeyEncipherment|x509.KeyUsageDataEncipherment) != 0 {
			x.d.Order.KeyUsage = ku &^ (x509.KeyUsageKeyEncipherment | x509.KeyUsageDataEncipherment)
			x.note("key usage: keyEncipherment/dataEncipherment left out for an ECDSA key (RFC 8813)")
		}
	}
	x.d.Order.PublicKey = pub
	x.d.Order.Key = rules
}

func (x *decider) outcome() {
	t := x.in.Template
	if len(x.d.Refusals) > 0 {
		x.d.Outcome, x.d.Order, x.d.Publish = Refuse, issue.Order{}, false
		return
	}
	if t.EnrollmentFlags&EnrollPublishToDS != 0 {
		x.d.Publish = true
		x.note("the certificate will be published to the account's userCertificate (PUBLISH_TO_DS)")
	}
	if t.EnrollmentFlags&EnrollPendAllRequests != 0 && x.previousApproval() {
		x.note("a renewal with a valid certificate of the template is not held again (PREVIOUS_APPROVAL_VALIDATE_REENROLLMENT)")
	} else if t.EnrollmentFlags&EnrollPendAllRequests != 0 {
		x.d.Outcome = Pend
		x.note("template requires approval by a certificate manager (PEND_ALL_REQUESTS)")
		return
	}
	x.d.Outcome = Issue
}

// previousApproval reports whether the template's issuance requirements were met when the
// certificate being renewed was issued, and need not be again (MS-WCCE 3.2.2.6.2.1.4.5.x,
// CT_FLAG_PREVIOUS_APPROVAL_VALIDATE_REENROLLMENT).
func (x *decider) previousApproval() bool {
	return x.in.Reenrollment && x.in.Agent == nil && x.in.Template.EnrollmentFlags&EnrollPreviousApprovalValidateReenroll != 0
}

// heldAlone reports whether the account alone holds name (a DNS name of its dNSHostName, or its
// UPN), as holders (Input.DNSHolders or Input.UPNHolders) says; otherwise it refuses, naming the
// other holders. A name another account also holds would let a certificate log on as either
// (Certifried, CVE-2022-26923, for DNS names; an explicit UPN equal to another account's implicit one).
func (x *decider) heldAlone(where, kind, name string, holders map[string][]string) bool {
	dns, checked := holders[strings.ToLower(name)]
	if !checked {
		x.refuse("%s: %s %s was not checked against the directory's other accounts, so it cannot be certified", where, kind, name)
		return false
	}
	var others []string
	for _, dn := range dns {
		if !strings.EqualFold(dn, x.in.Account.DN) {
			others = append(others, dn)
		}
	}
	if len(others) > 0 {
		x.refuse("%s: %s %s is also held by %s; a certificate carries a name only when one account holds it",
			where, kind, name, strings.Join(others, "; "))
		return false
	}
	return true
}

// DNSNames are the DNS names of the account's dNSHostName, as policy puts them in certificates.
func (a Account) DNSNames() []string { return splitDNS(a.DNSHostName) }

// splitDNS splits a dNSHostName value that holds several comma-separated names.
func splitDNS(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// validDNSName accepts LDH labels (and '_', which AD allows in host names); wildcard allows a
// leading "*." (only for names the enrollee supplies).
func validDNSName(s string, wildcard bool) bool {
	if wildcard {
		s = strings.TrimPrefix(s, "*.")
	}
	if s == "" || len(s) > 253 {
		return false
	}
	for _, label := range strings.Split(strings.TrimSuffix(s, "."), ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
				return false
			}
		}
	}
	return true
}

// formatPeriod shows a template period the way the template console does ("1 years" is
// "1 year", "6 weeks", "10 days"), falling back to Go's form.
func formatPeriod(d time.Duration) string {
	const day = 24 * time.Hour
	plural := func(n int64, unit string) string {
		if n == 1 {
			return "1 " + unit
		}
		return fmt.Sprintf("%d %ss", n, unit)
	}
	switch {
	case d <= 0 || d%day != 0:
		return d.String()
	case d%(365*day) == 0:
		return plural(int64(d/(365*day)), "year")
	case d%(7*day) == 0:
		return plural(int64(d/(7*day)), "week")
	}
	return plural(int64(d/day), "day")
}

// kuAllowedByEKU is RFC 5280 section 4.2.1.12's table of the key usage bits consistent with each
// extended key usage (zlint's e_key_usage_and_extended_key_usage_inconsistent checks it).
var kuAllowedByEKU = map[x509.ExtKeyUsage]x509.KeyUsage{
	x509.ExtKeyUsageServerAuth:      x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment | x509.KeyUsageKeyAgreement,
	x509.ExtKeyUsageClientAuth:      x509.KeyUsageDigitalSignature | x509.KeyUsageKeyAgreement,
	x509.ExtKeyUsageCodeSigning:     x509.KeyUsageDigitalSignature,
	x509.ExtKeyUsageEmailProtection: x509.KeyUsageDigitalSignature | x509.KeyUsageContentCommitment | x509.KeyUsageKeyEncipherment | x509.KeyUsageKeyAgreement,
	x509.ExtKeyUsageTimeStamping:    x509.KeyUsageDigitalSignature | x509.KeyUsageContentCommitment,
	x509.ExtKeyUsageOCSPSigning:     x509.KeyUsageDigitalSignature | x509.KeyUsageContentCommitment,
}

// consistentKeyUsage keeps the bits of ku that one of ekus allows, when every EKU is in the
// table (other purposes, e.g. smart-card logon, leave the template's key usage alone). Windows
// templates often pair keyEncipherment with client authentication alone ("Workstation
// Authentication"); RFC 5280 does not, so the bit is left out rather than the request refused.
func consistentKeyUsage(ku x509.KeyUsage, ekus []x509.ExtKeyUsage) (kept, dropped x509.KeyUsage) {
	if ku == 0 || len(ekus) == 0 {
		return ku, 0
	}
	var allowed x509.KeyUsage
	for _, e := range ekus {
		a, ok := kuAllowedByEKU[e]
		if !ok {
			return ku, 0
		}
		allowed |= a
	}
	return ku & allowed, ku &^ allowed
}

// KeyUsageNames lists the RFC 5280 names of the bits set in ku.
func KeyUsageNames(ku x509.KeyUsage) []string {
	names := []string{"digitalSignature", "nonRepudiation", "keyEncipherment", "dataEncipherment", "keyAgreement", "keyCertSign", "cRLSign", "encipherOnly", "decipherOnly"}
	var out []string
	for i, n := range names {
		if ku&(1<<i) != 0 {
			out = append(out, n)
		}
	}
	return out
}

// why is v's reason with the deciding ACE's trustee named, when Names knows it.
func (d Decision) why(v secdesc.Verdict) string {
	if !v.SID.IsZero() {
		if name := d.Names[v.SID.String()]; name != "" {
			return strings.ReplaceAll(v.Reason, v.SID.String(), name+" ("+v.SID.String()+")")
		}
	}
	return v.Reason
}

// ProtectedGroup names the administrative group the account belongs to, from its token:
// Administrators (S-1-5-32-544), or the Domain Admins (RID 512), Schema Admins (518) or
// Enterprise Admins (519) of a domain (MS-DTYP 2.4.2.4); or "adminCount=1" for an account the
// directory protects with AdminSDHolder (MS-ADTS 3.1.1.6.1.1.1: a member of any protected group,
// Account/Server/Backup Operators too, now or once); "" when none.
func ProtectedGroup(a Account) string {
	if g := protectedByToken(a); g != "" {
		return g
	}
	if v := a.Attrs["admincount"]; len(v) == 1 && strings.TrimSpace(string(v[0])) == "1" {
		return "adminCount=1"
	}
	return ""
}

func protectedByToken(a Account) string {
	for _, sid := range a.Token {
		if g := protectedGroupName(sid); g != "" {
			return g
		}
	}
	return ""
}

// protectedGroupName names sid when it is an administrative group: Administrators, or a domain's
// Domain Admins, Schema Admins or Enterprise Admins.
func protectedGroupName(sid secdesc.SID) string {
	switch {
	case sid.Equal(administrators):
		return "Administrators"
	case sid.Authority == 5 && len(sid.Sub) == 5 && sid.Sub[0] == 21:
		switch sid.Sub[4] {
		case 512:
			return "Domain Admins"
		case 518:
			return "Schema Admins"
		case 519:
			return "Enterprise Admins"
		}
	}
	return ""
}

// administrators is BUILTIN\Administrators.
var administrators = secdesc.SID{Revision: 1, Authority: 5, Sub: []uint32{32, 544}}
