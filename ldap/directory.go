package ldap

import (
	"context"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	goldap "github.com/go-ldap/ldap/v3"

	"github.com/enrollment-appliance/aeappliance/ldap/secdesc"
)

// Containers under the configuration naming context.
const (
	PublicKeyServicesRDN    = "CN=Public Key Services,CN=Services"
	TemplatesRDN            = "CN=Certificate Templates," + PublicKeyServicesRDN
	EnrollmentServicesRDN   = "CN=Enrollment Services," + PublicKeyServicesRDN
	uacAccountDisable       = 0x2
	ufLockout               = 0x10 // msDS-User-Account-Control-Computed (MS-ADTS 3.1.1.4.5.17)
	objectClassComputerName = "computer"
)

// AccountAttributes are fetched for every account, in addition to the caller's extra attributes.
var AccountAttributes = []string{"objectSid", "objectGUID", "objectClass", "sAMAccountName", "userPrincipalName",
	"mail", "dNSHostName", "servicePrincipalName", "displayName", "cn", "givenName", "sn", "title", "ou",
	"dnQualifier", "department", "company", "distinguishedName", "userAccountControl", "accountExpires", "adminCount"}

// attrUACComputed is constructed by the DC from lockoutTime and the domain's lockoutDuration (MS-ADTS
// 3.1.1.4.5.17); like tokenGroups it is read with a base-scope search.
const attrUACComputed = "msDS-User-Account-Control-Computed"

// TemplatesDN is the DN of the Certificate Templates container.
func (c *Client) TemplatesDN() string {
	return TemplatesRDN + "," + c.RootDSE().ConfigurationNamingContext
}

// EnrollmentService is a pKIEnrollmentService object: an enterprise CA and the template cn values it offers.
type EnrollmentService struct {
	DN, CN, DNSHostName  string
	CertificateTemplates []string
	CACertificates       [][]byte // cACertificate values (DER)
}

// EnrollmentService reads CN=<caCN>,CN=Enrollment Services,CN=Public Key Services,CN=Services,<configNC>.
// ErrNotFound if there is no such object. A cache miss reads the enrollment service and every
// certificate template (with its security descriptor) in one subtree search of Public Key Services
// and caches them all, so that the Templates call a decision makes next costs no round trip.
func (c *Client) EnrollmentService(ctx context.Context, caCN string) (EnrollmentService, error) {
	key := "es:" + strings.ToLower(caCN)
	if v, ok := c.cache.get(key); ok {
		c.hits.Add(1)
		return v.(EnrollmentService), nil
	}
	c.misses.Add(1)
	config := c.RootDSE().ConfigurationNamingContext
	dn := "CN=" + escapeRDNValue(caCN) + "," + EnrollmentServicesRDN + "," + config
	entries, err := c.search(ctx, "read enrollment service and templates", searchSpec{
		base: PublicKeyServicesRDN + "," + config, scope: goldap.ScopeWholeSubtree,
		filter: "(|(&(objectClass=pKIEnrollmentService)(cn=" + goldap.EscapeFilter(caCN) + "))(objectClass=pKICertificateTemplate))",
		attrs:  []string{"*", "nTSecurityDescriptor"}, controls: []goldap.Control{sdFlagsControl}, paged: true})
	if err != nil && !notFound(err) {
		return EnrollmentService{}, err
	}
	var es *EnrollmentService
	templates := map[string]*Entry{}
	tmplSuffix := "," + strings.ToLower(TemplatesRDN+","+config)
	for i := range entries {
		e := &entries[i]
		switch {
		case strings.EqualFold(e.DN, dn):
			es = &EnrollmentService{DN: e.DN, CN: e.Get("cn"), DNSHostName: e.Get("dNSHostName"),
				CertificateTemplates: e.GetAll("certificateTemplates"), CACertificates: e.Raw("cACertificate")}
		case strings.HasSuffix(strings.ToLower(e.DN), tmplSuffix) && isTemplate(*e):
			templates[strings.ToLower(e.Get("cn"))] = e
		}
	}
	for k, e := range templates {
		c.cache.put("tmpl:"+k, e.DN, e)
	}
	if es == nil {
		return EnrollmentService{}, fmt.Errorf("ldap: enrollment service %q (%s): %w", caCN, dn, ErrNotFound)
	}
	for _, name := range es.CertificateTemplates {
		if k := strings.ToLower(name); templates[k] == nil {
			c.cache.put("tmpl:"+k, "", (*Entry)(nil)) // offered but absent (or unreadable): remembered too
		}
	}
	c.cache.put(key, es.DN, *es)
	return *es, nil
}

// isTemplate reports whether e is a pKICertificateTemplate object.
func isTemplate(e Entry) bool {
	for _, oc := range e.GetAll("objectClass") {
		if strings.EqualFold(oc, "pKICertificateTemplate") {
			return true
		}
	}
	return false
}

// Templates returns the pKICertificateTemplate objects with the given cn values, with all their attributes and
// nTSecurityDescriptor (owner, group, DACL). Templates that do not exist, or that the bind account may not
// read, are left out; the order follows cns.
// A call is a cache hit only if every template (or its absence) is cached; otherwise the missing ones are
// fetched in one paged search.
func (c *Client) Templates(ctx context.Context, cns []string) ([]Entry, error) {
	found := map[string]*Entry{}
	var missing []string
	for _, cn := range cns {
		k := strings.ToLower(cn)
		if _, done := found[k]; done || slices.Contains(missing, k) {
			continue
		}
		if v, ok := c.cache.get("tmpl:" + k); ok {
			found[k] = v.(*Entry)
		} else {
			missing = append(missing, k)
		}
	}
	if len(missing) == 0 {
		c.hits.Add(1)
	} else {
		c.misses.Add(1)
		var f strings.Builder
		f.WriteString("(&(objectClass=pKICertificateTemplate)(|")
		for _, cn := range missing {
			f.WriteString("(cn=" + goldap.EscapeFilter(cn) + ")")
		}
		f.WriteString("))")
		entries, err := c.search(ctx, "read templates", searchSpec{base: c.TemplatesDN(),
			scope: goldap.ScopeSingleLevel, filter: f.String(), attrs: []string{"*", "nTSecurityDescriptor"},
			controls: []goldap.Control{sdFlagsControl}, paged: true})
		if err != nil {
			return nil, err
		}
		for i := range entries {
			e := &entries[i]
			k := strings.ToLower(e.Get("cn"))
			if slices.Contains(missing, k) {
				found[k] = e
			}
		}
		for _, k := range missing {
			e := found[k] // nil: remember that it does not exist
			dn := ""
			if e != nil {
				dn = e.DN
			}
			c.cache.put("tmpl:"+k, dn, e)
		}
	}
	var out []Entry
	seen := map[string]bool{}
	for _, cn := range cns {
		k := strings.ToLower(cn)
		if e := found[k]; e != nil && !seen[k] {
			seen[k] = true
			out = append(out, *e)
		}
	}
	return out, nil
}

// Account is a user or computer with what policy needs: its SID, GUID and transitive groups.
type Account struct {
	Entry
	SID  secdesc.SID
	GUID []byte // objectGUID as stored (mixed-endian)
	// Groups: tokenGroups (transitive memberships, including the primary group) plus Authenticated Users and
	// Everyone, de-duplicated. It does not contain SID.
	Groups   []secdesc.SID
	Computer bool
}

// SIDs returns the account's SID followed by its groups: what an access check evaluates ACEs against.
func (a *Account) SIDs() []secdesc.SID { return append([]secdesc.SID{a.SID}, a.Groups...) }

// Disabled reports the ACCOUNTDISABLE bit of userAccountControl.
func (a *Account) Disabled() bool {
	var uac int64
	fmt.Sscan(a.Get("userAccountControl"), &uac)
	return uac&uacAccountDisable != 0
}

// LockedOut reports UF_LOCKOUT in msDS-User-Account-Control-Computed: the DC counts the account as
// locked out by bad passwords now (lockoutTime within the domain's lockoutDuration, MS-ADTS 3.1.1.4.5.17).
func (a *Account) LockedOut() bool {
	var uac int64
	fmt.Sscan(a.Get(attrUACComputed), &uac)
	return uac&ufLockout != 0
}

// ExpiresAt is when the account expires (accountExpires, MS-ADA1 2.21: 100-ns intervals since 1601-01-01
// UTC; 0 and 0x7FFFFFFFFFFFFFFF mean never, reported as ok false).
func (a *Account) ExpiresAt() (t time.Time, ok bool) {
	var v int64
	if _, err := fmt.Sscan(a.Get("accountExpires"), &v); err != nil || v <= 0 || v == math.MaxInt64 {
		return time.Time{}, false
	}
	return fileTime(v), true
}

// fileTime converts a Windows FILETIME (100-ns intervals since 1601-01-01 UTC) to a time.
func fileTime(v int64) time.Time {
	const epochDelta = 116444736000000000 // 1601-01-01 to 1970-01-01 in 100 ns
	return time.Unix(0, 0).UTC().Add(time.Duration(v-epochDelta) * 100)
}

// Account finds a user or computer by sAMAccountName ("alice", "WS1$"), userPrincipalName
// ("alice@corp.example.test"; sAMAccountName@<domain DNS> also works for accounts without an explicit UPN),
// objectSid (SIDAccount) or DN, and reads AccountAttributes plus extraAttrs and its groups. ErrNotFound if nothing matches,
// ErrAmbiguous if several accounts do.
func (c *Client) Account(ctx context.Context, name string, extraAttrs ...string) (*Account, error) {
	name = strings.TrimSpace(name)
	if name == "" {
		return nil, fmt.Errorf("ldap: empty account name: %w", ErrNotFound)
	}
	key := "acct:" + strings.ToLower(name)
	if len(extraAttrs) > 0 {
		extra := slices.Clone(extraAttrs)
		for i := range extra {
			extra[i] = strings.ToLower(extra[i])
		}
		slices.Sort(extra)
		key += "\x00" + strings.Join(extra, ",")
	}
	if v, ok := c.cache.get(key); ok {
		c.hits.Add(1)
		return v.(*Account), nil
	}
	c.misses.Add(1)
	attrs := append(slices.Clone(AccountAttributes), extraAttrs...)
	var e Entry
	lookup, err := c.downLevel(ctx, name)
	if err != nil {
		return nil, err
	}
	base, byBase := lookup, isDN(lookup)
	if sid, ok := sidOf(name); ok {
		// AD and Samba take "<SID=S-1-5-...>" as a base DN naming the object with that objectSid
		// (MS-ADTS 3.1.1.3.1.2.4), as they take a DN.
		base, byBase = "<SID="+sid.String()+">", true
	}
	if byBase {
		// One round trip: a base search can return the constructed tokenGroups with everything else.
		entries, err := c.search(ctx, "read account", searchSpec{base: base, scope: goldap.ScopeBaseObject,
			filter: "(objectClass=user)", attrs: append(attrs, "tokenGroups", attrUACComputed)})
		if notFound(err) || (err == nil && len(entries) == 0) {
			return nil, fmt.Errorf("ldap: account %q: %w", name, ErrNotFound)
		}
		if err != nil {
			return nil, err
		}
		e = entries[0]
	} else {
		entries, err := c.search(ctx, "find account", searchSpec{base: c.RootDSE().DefaultNamingContext,
			scope: goldap.ScopeWholeSubtree, filter: c.accountFilter(lookup), attrs: attrs})
		if err != nil {
			return nil, err
		}
		if e, err = pickAccount(lookup, entries); err != nil {
			return nil, err
		}
		// tokenGroups is constructed and only returned by a base-scope search.
		tg, err := c.search(ctx, "read account groups", searchSpec{base: e.DN, scope: goldap.ScopeBaseObject,
			filter: "(objectClass=*)", attrs: []string{"tokenGroups", attrUACComputed}})
		if err != nil {
			return nil, err
		}
		if len(tg) == 1 {
			e.Attrs["tokengroups"] = tg[0].Raw("tokenGroups")
			e.Attrs[strings.ToLower(attrUACComputed)] = tg[0].Raw(attrUACComputed)
		}
	}
	a, err := newAccount(e)
	if err != nil {
		return nil, err
	}
	c.cache.put(key, e.DN, a)
	return a, nil
}

// Principal finds a user, computer or group by sAMAccountName, DOMAIN\name, UPN, DN or SID
// text ("S-1-5-21-..."), and returns its objectSid and sAMAccountName. ErrNotFound or
// ErrAmbiguous as Account.
func (c *Client) Principal(ctx context.Context, name string) (secdesc.SID, string, error) {
	name = strings.TrimSpace(name)
	if name == "" {
		return secdesc.SID{}, "", fmt.Errorf("ldap: empty name: %w", ErrNotFound)
	}
	lookup, err := c.downLevel(ctx, name)
	if err != nil {
		return secdesc.SID{}, "", err
	}
	spec := searchSpec{base: c.RootDSE().DefaultNamingContext, scope: goldap.ScopeWholeSubtree,
		attrs: []string{"objectSid", "sAMAccountName"}}
	esc := goldap.EscapeFilter(lookup)
	switch sid, err := secdesc.ParseSID(lookup); {
	case err == nil:
		spec.filter = "(&(|(objectClass=user)(objectClass=group))(objectSid=" + escapeBinary(sid.Bytes()) + "))"
	case isDN(lookup):
		spec.base, spec.scope, spec.filter = lookup, goldap.ScopeBaseObject, "(|(objectClass=user)(objectClass=group))"
	default:
		spec.filter = "(&(|(objectClass=user)(objectClass=group))(|(sAMAccountName=" + esc + ")(userPrincipalName=" + esc + ")))"
	}
	entries, err := c.search(ctx, "find principal", spec)
	if notFound(err) {
		return secdesc.SID{}, "", fmt.Errorf("ldap: %q: %w", name, ErrNotFound)
	}
	if err != nil {
		return secdesc.SID{}, "", err
	}
	switch len(entries) {
	case 0:
		return secdesc.SID{}, "", fmt.Errorf("ldap: %q: %w", name, ErrNotFound)
	case 1:
	default:
		return secdesc.SID{}, "", fmt.Errorf("ldap: %q names %d objects: %w", name, len(entries), ErrAmbiguous)
	}
	raw := entries[0].Raw("objectSid")
	if len(raw) != 1 {
		return secdesc.SID{}, "", fmt.Errorf("ldap: %s has no objectSid: %w", entries[0].DN, ErrNotFound)
	}
	sid, err := secdesc.DecodeSID(raw[0])
	if err != nil {
		return secdesc.SID{}, "", fmt.Errorf("ldap: %s: objectSid: %w", entries[0].DN, err)
	}
	return sid, entries[0].Get("sAMAccountName"), nil
}

// downLevel turns a down-level logon name, DOMAIN\name (as requesters are named in
// enroll-on-behalf requests), into the name to look up; the domain must be this directory's, by
// NetBIOS or DNS name (else ErrNotFound). Other names are returned as they are.
func (c *Client) downLevel(ctx context.Context, name string) (string, error) {
	domain, user, ok := strings.Cut(name, `\`)
	if !ok || isDN(name) {
		return name, nil
	}
	nb, err := c.NetBIOSName(ctx)
	if err != nil {
		return "", err
	}
	if user == "" || strings.Contains(user, `\`) || !strings.EqualFold(domain, nb) && !strings.EqualFold(domain, c.RootDSE().DomainDNS) {
		return "", fmt.Errorf("ldap: %q: the domain is not %s (%s): %w", name, nb, c.RootDSE().DomainDNS, ErrNotFound)
	}
	return user, nil
}

// NetBIOSName is the domain's NetBIOS name (nETBIOSName of its crossRef in the Partitions
// container, MS-ADTS 6.1.1.2.1.1.6), read once per cache lifetime.
func (c *Client) NetBIOSName(ctx context.Context) (string, error) {
	if v, ok := c.cache.get("netbios"); ok {
		c.hits.Add(1)
		return v.(string), nil
	}
	c.misses.Add(1)
	root := c.RootDSE()
	entries, err := c.search(ctx, "read the domain's NetBIOS name", searchSpec{base: "CN=Partitions," + root.ConfigurationNamingContext,
		scope: goldap.ScopeSingleLevel, filter: "(&(objectClass=crossRef)(nCName=" + goldap.EscapeFilter(root.DefaultNamingContext) + "))",
		attrs: []string{"nETBIOSName"}})
	if err != nil {
		return "", err
	}
	if len(entries) != 1 || entries[0].Get("nETBIOSName") == "" {
		return "", fmt.Errorf("ldap: the domain %s has no crossRef with a NetBIOS name: %w", root.DomainDNS, ErrNotFound)
	}
	nb := entries[0].Get("nETBIOSName")
	c.cache.put("netbios", "", nb)
	return nb, nil
}

// SIDAccount names, for Account, the user or computer whose objectSid is sid: "<SID=S-1-5-...>", the form
// AD itself accepts for an object's SID in a DN (MS-ADTS 3.1.1.3.1.2.4). No sAMAccountName or UPN can take it
// ('<' and '>' are not allowed in either), so a name a client sends can never be mistaken for a SID.
func SIDAccount(sid secdesc.SID) string { return "<SID=" + sid.String() + ">" }

// sidOf is the SID in a name made by SIDAccount.
func sidOf(name string) (secdesc.SID, bool) {
	v, ok := strings.CutPrefix(name, "<SID=")
	if !ok {
		return secdesc.SID{}, false
	}
	v, ok = strings.CutSuffix(v, ">")
	if !ok {
		return secdesc.SID{}, false
	}
	sid, err := secdesc.ParseSID(v)
	return sid, err == nil
}

func (c *Client) accountFilter(name string) string {
	if sid, ok := sidOf(name); ok {
		return "(&(objectClass=user)(objectSid=" + escapeBinary(sid.Bytes()) + "))"
	}
	esc := goldap.EscapeFilter(name)
	if user, domain, ok := strings.Cut(name, "@"); ok {
		if strings.EqualFold(domain, c.RootDSE().DomainDNS) && user != "" {
			return "(&(objectClass=user)(|(userPrincipalName=" + esc + ")(sAMAccountName=" +
				goldap.EscapeFilter(user) + ")))"
		}
		return "(&(objectClass=user)(userPrincipalName=" + esc + "))"
	}
	return "(&(objectClass=user)(sAMAccountName=" + esc + "))"
}

// pickAccount chooses among search results: exactly one, or for a UPN the one whose explicit UPN matches.
func pickAccount(name string, entries []Entry) (Entry, error) {
	if len(entries) > 1 && strings.Contains(name, "@") {
		var exact []Entry
		for _, e := range entries {
			if strings.EqualFold(e.Get("userPrincipalName"), name) {
				exact = append(exact, e)
			}
		}
		if len(exact) == 1 {
			return exact[0], nil
		}
	}
	switch len(entries) {
	case 0:
		return Entry{}, fmt.Errorf("ldap: account %q: %w", name, ErrNotFound)
	case 1:
		return entries[0], nil
	}
	dns := make([]string, len(entries))
	for i, e := range entries {
		dns[i] = e.DN
	}
	return Entry{}, fmt.Errorf("ldap: account %q matches %s: %w", name, strings.Join(dns, "; "), ErrAmbiguous)
}

func newAccount(e Entry) (*Account, error) {
	a := &Account{Entry: e}
	if g := e.Raw("objectGUID"); len(g) > 0 {
		a.GUID = g[0]
	}
	sid, err := secdesc.DecodeSID([]byte(e.Get("objectSid")))
	if err != nil {
		return nil, fmt.Errorf("ldap: account %s: objectSid: %w", e.DN, err)
	}
	a.SID = sid
	seen := map[string]bool{}
	add := func(s secdesc.SID) {
		if k := s.String(); !seen[k] {
			seen[k] = true
			a.Groups = append(a.Groups, s)
		}
	}
	for _, raw := range e.Raw("tokenGroups") {
		s, err := secdesc.DecodeSID(raw)
		if err != nil {
			return nil, fmt.Errorf("ldap: account %s: tokenGroups: %w", e.DN, err)
		}
		add(s)
	}
	add(secdesc.AuthenticatedUsers)
	add(secdesc.Everyone)
	for _, oc := range e.GetAll("objectClass") {
		if strings.EqualFold(oc, objectClassComputerName) {
			a.Computer = true
		}
	}
	return a, nil
}

// isDN tells a DN from a sAMAccountName or UPN: it parses, and every attribute type is a plain name or OID
// (go-ldap's parser alone accepts "*)(objectClass=*").
func isDN(name string) bool {
	if !strings.Contains(name, "=") {
		return false
	}
	dn, err := goldap.ParseDN(name)
	if err != nil || len(dn.RDNs) == 0 {
		return false
	}
	for _, rdn := range dn.RDNs {
		for _, a := range rdn.Attributes {
			if a.Type == "" || strings.TrimLeft(strings.ToLower(a.Type), "abcdefghijklmnopqrstuvwxyz0123456789-.") != "" {
				return false
			}
		}
	}
	return true
}

// notFound: the object does not exist, or the name cannot be one (a DN the server cannot parse).
func notFound(err error) bool {
	return goldap.IsErrorAnyOf(err, goldap.LDAPResultNoSuchObject, goldap.LDAPResultInvalidDNSyntax)
}

// escapeRDNValue escapes a value for use in a DN. Beyond RFC 4514's minimum (go-ldap's EscapeDN) it escapes
// "=", which Samba's DN parser refuses unescaped.
func escapeRDNValue(v string) string { return strings.ReplaceAll(goldap.EscapeDN(v), "=", `\=`) }

// PublishCertificate adds der to the userCertificate attribute of the object dn. Publishing a certificate
// that is already there is not an error.
func (c *Client) PublishCertificate(ctx context.Context, dn string, der []byte) error {
	return c.modifyCert(ctx, "publish certificate", dn, der, true)
}

// UnpublishCertificate removes der from the userCertificate attribute of dn. Removing a certificate that is
// not there is not an error.
func (c *Client) UnpublishCertificate(ctx context.Context, dn string, der []byte) error {
	return c.modifyCert(ctx, "unpublish certificate", dn, der, false)
}

func (c *Client) modifyCert(ctx context.Context, op, dn string, der []byte, add bool) error {
	if len(der) == 0 {
		return fmt.Errorf("ldap: %s: empty certificate", op)
	}
	req := goldap.NewModifyRequest(dn, nil)
	if add {
		req.Add("userCertificate", []string{string(der)})
	} else {
		req.Delete("userCertificate", []string{string(der)})
	}
	// Idempotent either way, so the request may be retried after a reconnect.
	err := c.do(ctx, op+" on "+dn, true, func(conn *goldap.Conn) error { return conn.Modify(req) })
	c.cache.dropDN(dn)
	switch {
	case err == nil:
		return nil
	case add && goldap.IsErrorWithCode(err, goldap.LDAPResultAttributeOrValueExists):
		return nil
	case !add && goldap.IsErrorWithCode(err, goldap.LDAPResultNoSuchAttribute):
		return nil
	case notFound(err):
		return fmt.Errorf("%w: %w", err, ErrNotFound)
	}
	return err
}

// DNSNameHolders returns, for each DNS name, the DNs of every directory object that holds it as its
// dNSHostName or in a servicePrincipalName of the form HOST/name (names compared case-insensitively,
// map keys lower-cased; a name nobody holds maps to an empty slice). The CA uses it to refuse a
// certificate whose DNS name another account also holds: AD does not keep dNSHostName unique, and a
// computer account whose dNSHostName was set to a domain controller's got that controller's identity in
// a certificate (Certifried, CVE-2022-26923).
func (c *Client) DNSNameHolders(ctx context.Context, names []string) (map[string][]string, error) {
	return c.holders(ctx, "dnsholders:", names, []string{"dNSHostName", "servicePrincipalName"},
		func(n string) string {
			esc := goldap.EscapeFilter(n)
			return "(dNSHostName=" + esc + ")(servicePrincipalName=HOST/" + esc + ")"
		},
		func(e Entry) []string {
			held := e.GetAll("dNSHostName")
			for _, spn := range e.GetAll("servicePrincipalName") {
				if svc, host, ok := strings.Cut(spn, "/"); ok && strings.EqualFold(svc, "HOST") {
					host, _, _ = strings.Cut(host, ":")
					held = append(held, host)
				}
			}
			return held
		})
}

// UPNHolders returns, for each user principal name, the DNs of every account that holds it:
// explicitly (userPrincipalName) or implicitly (sAMAccountName@domain, for the directory's own
// domain, MS-ADTS 5.1.1.1.1). AD does not always keep the two apart (an explicit UPN may equal
// another account's implicit one), and a DC maps such a name in a certificate to whichever it
// finds first; the CA certifies a UPN only when one account holds it.
func (c *Client) UPNHolders(ctx context.Context, upns []string) (map[string][]string, error) {
	domain := strings.ToLower(c.RootDSE().DomainDNS)
	return c.holders(ctx, "upnholders:", upns, []string{"userPrincipalName", "sAMAccountName"},
		func(n string) string {
			f := "(userPrincipalName=" + goldap.EscapeFilter(n) + ")"
			if user, dom, ok := strings.Cut(n, "@"); ok && user != "" && dom == domain {
				f += "(&(objectClass=user)(sAMAccountName=" + goldap.EscapeFilter(user) + "))"
			}
			return f
		},
		func(e Entry) []string {
			held := e.GetAll("userPrincipalName")
			if sam := e.Get("sAMAccountName"); sam != "" && domain != "" {
				held = append(held, sam+"@"+domain)
			}
			return held
		})
}

// holders finds, in one subtree search of the domain, which objects hold each name: filter gives
// the filter terms matching a (lower-cased) name, held the names an entry holds. Answers are cached
// per name like accounts.
func (c *Client) holders(ctx context.Context, prefix string, names, attrs []string, filter func(string) string,
	held func(Entry) []string) (map[string][]string, error) {
	out := make(map[string][]string, len(names))
	var ask []string
	for _, n := range names {
		n = strings.ToLower(strings.TrimSpace(n))
		if n == "" {
			continue
		}
		if _, dup := out[n]; dup {
			continue
		}
		if v, ok := c.cache.get(prefix + n); ok {
			c.hits.Add(1)
			out[n] = slices.Clone(v.([]string))
			continue
		}
		out[n] = []string{}
		ask = append(ask, n)
	}
	if len(ask) == 0 {
		return out, nil
	}
	c.misses.Add(1)
	var f strings.Builder
	f.WriteString("(|")
	for _, n := range ask {
		f.WriteString(filter(n))
	}
	f.WriteString(")")
	entries, err := c.search(ctx, "find holders of "+strings.Join(ask, ", "), searchSpec{base: c.RootDSE().DefaultNamingContext,
		scope: goldap.ScopeWholeSubtree, filter: f.String(), attrs: attrs})
	if err != nil {
		return nil, err
	}
	for _, e := range entries {
		names := held(e)
		for _, n := range ask {
			if slices.ContainsFunc(names, func(h string) bool { return strings.EqualFold(h, n) }) && !slices.Contains(out[n], e.DN) {
				out[n] = append(out[n], e.DN)
			}
		}
	}
	for _, n := range ask {
		c.cache.put(prefix+n, "", out[n])
	}
	return out, nil
}
