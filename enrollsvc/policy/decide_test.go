package policy

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/enrollment-appliance/aeappliance/ldap/secdesc"
)

// decideCase runs Decide on a user template and alice unless it changes them.
type decideCase struct {
	name       string
	tmpl       func(attrs)              // changes to the user template's attributes
	tmplAttrs  func(testing.TB) attrs   // a different template altogether
	account    func(testing.TB) Account // default: alice in her usual groups
	input      func(*Input)             // last changes to the input
	want       Outcome
	wantReason string                         // a substring of some reason
	check      func(t *testing.T, d Decision) // further checks
}

func (tc decideCase) run(t *testing.T) {
	testKeys(t)
	var m attrs
	if tc.tmplAttrs != nil {
		m = tc.tmplAttrs(t)
	} else {
		m = userTemplateAttrs(t)
	}
	if tc.tmpl != nil {
		tc.tmpl(m)
	}
	acc := alice(t)
	if tc.account != nil {
		acc = tc.account(t)
	}
	in := Input{Template: mustTemplate(t, m), Account: acc, CACert: caCert, Now: testNow, DNSHolders: selfHeld(acc),
		UPNHolders: upnHeld(acc)}
	if tc.input != nil {
		tc.input(&in)
	}
	d := Decide(in)
	if d.Outcome != tc.want {
		t.Errorf("Decide(%s) = %v, want %v; reasons:\n%s", tc.name, d.Outcome, tc.want, d.Explain())
	}
	if tc.wantReason != "" && !hasReason(d, tc.wantReason) {
		t.Errorf("Decide(%s) reasons = %q, want one containing %q", tc.name, d.Reasons, tc.wantReason)
	}
	if d.Outcome == Refuse && (len(d.Refusals) == 0 || d.Order.PublicKey != nil || len(d.Order.ExtraExtensions) != 0) {
		t.Errorf("Decide(%s) refused with refusals %q and a non-empty order", tc.name, d.Refusals)
	}
	if d.Outcome != Refuse && len(d.Refusals) != 0 {
		t.Errorf("Decide(%s) = %v with refusals %q", tc.name, d.Outcome, d.Refusals)
	}
	if tc.check != nil {
		tc.check(t, d)
	}
}

func hasReason(d Decision, sub string) bool {
	for _, r := range d.Reasons {
		if strings.Contains(r, sub) {
			return true
		}
	}
	return false
}

func withACEs(aces ...secdesc.ACE) func(attrs) {
	return func(m attrs) { m["ntsecuritydescriptor"] = [][]byte{sdBytes(nil, aces...)} }
}

func withFlag(attr string, v uint32) func(attrs) {
	return func(m attrs) { set(m, attr, signedFlag(v)) }
}

func aliceIn(groups ...secdesc.SID) func(testing.TB) Account {
	return func(t testing.TB) Account { return alice(t, groups...) }
}

func TestDecidePermissions(t *testing.T) {
	cases := []decideCase{
		{name: "nested group holds Enroll", want: Issue, wantReason: "Enroll: allowed by ACE 2",
			check: func(t *testing.T, d Decision) {
				if !d.Access.Enroll.Allowed || !d.Access.Enroll.SID.Equal(sidPKIUsers) || d.Access.Enroll.ACE != 2 {
					t.Errorf("Decide(nested).Access.Enroll = %+v, want allowed by ACE 2 for %s", d.Access.Enroll, sidPKIUsers)
				}
			}},
		{name: "deny on one group wins", tmpl: withACEs(append(defaultACEs(), secdesc.DenyEnroll(sidBlocked))...),
			account: aliceIn(sidDomainUsers, sidNested, sidPKIUsers, sidBlocked), want: Refuse, wantReason: "may not enroll: denied by ACE 5",
			check: func(t *testing.T, d Decision) {
				if d.Access.Enroll.Allowed || !d.Access.Enroll.SID.Equal(sidBlocked) {
					t.Errorf("Decide(deny).Access.Enroll = %+v, want denied for %s", d.Access.Enroll, sidBlocked)
				}
			}},
		{name: "a connector never names a Domain Admin", account: aliceIn(sidDomainUsers, sidNested, sidPKIUsers, rid(512)),
			input: func(in *Input) { in.NamedByConnector = true }, want: Refuse, wantReason: "is protected (Domain Admins)"},
		{name: "a connector never names an Administrator", account: aliceIn(sidDomainUsers, sidNested, sidPKIUsers,
			secdesc.MustParseSID("S-1-5-32-544")), input: func(in *Input) { in.NamedByConnector = true }, want: Refuse, wantReason: "is protected (Administrators)"},
		{name: "a Domain Admin authenticating for itself is not refused for it", account: aliceIn(sidDomainUsers, sidNested, sidPKIUsers, rid(512)),
			want: Issue},
		{name: "a connector never names an account with adminCount=1", account: func(t testing.TB) Account {
			a := alice(t, sidDomainUsers, sidNested, sidPKIUsers)
			a.Attrs["admincount"] = [][]byte{[]byte("1")}
			return a
		}, input: func(in *Input) { in.NamedByConnector = true }, want: Refuse, wantReason: "is protected (adminCount=1)"},
		{name: "a connector names an ordinary account", input: func(in *Input) { in.NamedByConnector = true }, want: Issue},
		{name: "deny for Everyone wins", tmpl: withACEs(append(defaultACEs(), secdesc.DenyEnroll(secdesc.Everyone))...), want: Refuse, wantReason: "denied"},
		{name: "Enroll without Read", tmpl: withACEs(secdesc.AllowEnroll(sidPKIUsers)), want: Refuse, wantReason: "may not read the template"},
		{name: "Read without Enroll", account: aliceIn(sidDomainUsers), want: Refuse, wantReason: "may not enroll: no ACE grants Enroll"},
		{name: "no SD", tmpl: func(m attrs) {}, input: func(in *Input) { in.Template.SD = nil }, want: Refuse, wantReason: "no security descriptor"},
		{name: "Autoenroll reported apart from Enroll", account: aliceIn(sidDomainUsers, sidPKIUsers), want: Issue, wantReason: "Autoenroll: not possible: no Autoenroll permission",
			check: func(t *testing.T, d Decision) {
				if !d.Access.Enroll.Allowed || d.Access.Autoenroll.Allowed || d.MayAutoenroll {
					t.Errorf("Decide(enroll only).Access = %+v, want Enroll allowed, Autoenroll not", d.Access)
				}
			}},
		{name: "autoenrollment without Autoenroll", account: aliceIn(sidDomainUsers, sidPKIUsers), input: func(in *Input) { in.Autoenroll = true },
			want: Refuse, wantReason: "autoenrollment refused: no Autoenroll permission"},
		{name: "autoenrollment allowed", input: func(in *Input) { in.Autoenroll = true }, want: Issue, wantReason: "Autoenroll: allowed by ACE 4",
			check: func(t *testing.T, d Decision) {
				if !d.MayAutoenroll || !d.Autoenroll {
					t.Errorf("Decide(autoenroll) = may %v, is %v, want both", d.MayAutoenroll, d.Autoenroll)
				}
			}},
		{name: "autoenroll with Autoenroll but no Enroll", account: aliceIn(sidDomainUsers, sidAutoGroup), input: func(in *Input) { in.Autoenroll = true },
			want: Refuse, wantReason: "autoenrollment also needs Read and Enroll"},
		{name: "enrollee-supplied subject is never autoenrolled", tmpl: withFlag("mspki-certificate-name-flag", uint32(NameEnrolleeSuppliesSubject)),
			input: func(in *Input) { in.Autoenroll = true }, want: Refuse, wantReason: "never autoenrolled"},
		{name: "enrollee-supplied SAN is never autoenrolled", tmpl: withFlag("mspki-certificate-name-flag", uint32(NameEnrolleeSuppliesSubjectAltName|NameAltRequireUPN)),
			input: func(in *Input) { in.Autoenroll = true }, want: Refuse, wantReason: "never autoenrolled"},
		{name: "user interaction is never autoenrolled", tmpl: withFlag("mspki-enrollment-flag", uint32(EnrollUserInteractionRequired)),
			input: func(in *Input) { in.Autoenroll = true }, want: Refuse, wantReason: "USER_INTERACTION_REQUIRED"},
		{name: "user interaction, enrolled by hand", tmpl: withFlag("mspki-enrollment-flag", uint32(EnrollUserInteractionRequired)), want: Issue},
	}
	for _, tc := range cases {
		t.Run(tc.name, tc.run)
	}
}

func TestDecideTemplateRules(t *testing.T) {
	shortCA := func(in *Input) { in.CACert = makeCA(caKey, testNow.Add(-time.Hour), testNow.Add(100*24*time.Hour)) }
	cases := []decideCase{
		{name: "pending", tmpl: withFlag("mspki-enrollment-flag", uint32(EnrollPendAllRequests)), want: Pend,
			wantReason: "template requires approval by a certificate manager"},
		{name: "publish", want: Issue, wantReason: "PUBLISH_TO_DS", check: func(t *testing.T, d Decision) {
			if !d.Publish {
				t.Errorf("Decide(publish).Publish = false, want true")
			}
		}},
		{name: "no publish", tmpl: withFlag("mspki-enrollment-flag", 0), want: Issue, check: func(t *testing.T, d Decision) {
			if d.Publish {
				t.Errorf("Decide(no publish).Publish = true, want false")
			}
		}},
		{name: "enrollment agent signatures", tmpl: func(m attrs) { set(m, "mspki-ra-signature", "1") }, want: Refuse, wantReason: "needs 1 enrollment agent signature"},
		{name: "computer template for a user", tmplAttrs: computerTemplateAttrs, want: Refuse, wantReason: "is for computers"},
		{name: "user template for a computer", account: pc1, want: Refuse, wantReason: "is for users"},
		{name: "CA template", tmpl: withFlag("flags", uint32(GeneralIsCA)), want: Refuse, wantReason: "end-entity certificates only"},
		{name: "key archival", tmpl: withFlag("mspki-private-key-flag", uint32(PrivateKeyRequireArchival)), want: Refuse, wantReason: "archival"},
		{name: "attestation", tmpl: withFlag("mspki-private-key-flag", uint32(PrivateKeyAttestRequired)), want: Refuse, wantReason: "attestation"},
		{name: "validity", want: Issue, check: func(t *testing.T, d Decision) {
			if d.Order.Validity != 365*24*time.Hour {
				t.Errorf("Decide(validity).Order.Validity = %v, want 1 year", d.Order.Validity)
			}
		}},
		{name: "validity clipped to the CA", input: shortCA, want: Issue, wantReason: "validity clipped from 1 year to 100 days",
			check: func(t *testing.T, d Decision) {
				if d.Order.Validity != 100*24*time.Hour {
					t.Errorf("Decide(clipped).Order.Validity = %v, want 100 days", d.Order.Validity)
				}
			}},
		{name: "CA expired", input: func(in *Input) { in.Now = testNow.Add(10 * 365 * 24 * time.Hour) }, want: Refuse, wantReason: "CA certificate expired"},
		{name: "request names another template", input: func(in *Input) { in.Request = &Request{TemplateName: "Administrator", PublicKey: rsaKey.Public()} },
			want: Refuse, wantReason: `names template "Administrator"`},
		{name: "request names the template by OID", input: func(in *Input) {
			in.Request = &Request{TemplateOID: in.Template.OID, TemplateName: "userauth", PublicKey: rsaKey.Public()}
		}, want: Issue},
		{name: "request names another template OID", input: func(in *Input) {
			in.Request = &Request{TemplateOID: asn1.ObjectIdentifier{1, 2, 3}, PublicKey: rsaKey.Public()}
		}, want: Refuse, wantReason: "names template OID 1.2.3"},
		{name: "zero input", input: func(in *Input) { *in = Input{} }, want: Refuse, wantReason: "no template given", check: func(t *testing.T, d Decision) {
			if len(d.Refusals) < 4 {
				t.Errorf("Decide(zero) refusals = %q, want at least 4", d.Refusals)
			}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, tc.run)
	}
}

func TestDecideNames(t *testing.T) {
	cases := []decideCase{
		{name: "directory path and e-mail", want: Issue, check: func(t *testing.T, d Decision) {
			wantSubject := "E=alice@example.test,CN=Alice Adams,OU=Staff,DC=corp,DC=example,DC=test"
			if d.Subject != wantSubject || strings.Join(d.SANs, ",") != "UPN:alice@corp.example.test,email:alice@example.test" {
				t.Errorf("Decide(user) = %q %q, want %q [UPN email]", d.Subject, d.SANs, wantSubject)
			}
			san := findExt(d.Order.ExtraExtensions, oidExtSAN)
			want := sanExtension([]GeneralName{upnName("alice@corp.example.test"), emailName("alice@example.test")}, false)
			if san == nil || hexs(san.Value) != hexs(want.Value) || san.Critical {
				t.Errorf("Decide(user) SAN extension = %+v, want %x non-critical", san, want.Value)
			}
			// The exact UPN otherName: [0] { OID 1.3.6.1.4.1.311.20.2.3, [0] { UTF8String } }.
			if got := hexs(upnName("a@b").DER); got != "a013060a2b060104018237140203a0050c03614062" {
				t.Errorf("upnName(a@b) = %s", got)
			}
		}},
		{name: "common name for a user", tmpl: withFlag("mspki-certificate-name-flag", uint32(NameRequireCommonName|NameAltRequireUPN)), want: Issue,
			check: func(t *testing.T, d Decision) {
				if d.Subject != "CN=Alice Adams" {
					t.Errorf("Decide(CN) subject = %q, want CN=Alice Adams", d.Subject)
				}
			}},
		{name: "computer: DNS as CN, DNS SANs, domain, SPN, GUID", tmplAttrs: computerTemplateAttrs, account: pc1,
			tmpl: withFlag("mspki-certificate-name-flag", uint32(NameRequireDNSAsCN|NameAltRequireDNS|NameAltRequireDomainDNS|NameAltRequireSPN|NameAltRequireDirectoryGUID)),
			want: Issue, check: func(t *testing.T, d Decision) {
				want := "GUID:6f0c3b2a-1d4e-4f5a-8b9c-0d1e2f3a4b5c,DNS:pc1.corp.example.test,DNS:corp.example.test,SPN:HOST/pc1.corp.example.test,SPN:HOST/PC1"
				if d.Subject != "CN=pc1.corp.example.test" || strings.Join(d.SANs, ",") != want {
					t.Errorf("Decide(computer) = %q %q, want CN=pc1.corp.example.test %s", d.Subject, d.SANs, want)
				}
				// GUID otherName: [0] { OID 1.3.6.1.4.1.311.25.1, [0] { OCTET STRING of the wire bytes } }.
				g := guidName(aliceGUID.Wire(), "")
				if got := hexs(g.DER); got != "a01f06092b0601040182371901a0120410"+hexs(aliceGUID.Wire()) {
					t.Errorf("guidName = %s", got)
				}
			}},
		{name: "several DNS names in dNSHostName", tmplAttrs: computerTemplateAttrs,
			account: func(t testing.TB) Account {
				a := pc1(t)
				a.DNSHostName = "pc1.corp.example.test, pc1-alias.corp.example.test"
				return a
			}, want: Issue, check: func(t *testing.T, d Decision) {
				if strings.Join(d.SANs, ",") != "DNS:pc1.corp.example.test,DNS:pc1-alias.corp.example.test" {
					t.Errorf("Decide(two DNS names) SANs = %q", d.SANs)
				}
			}},
		{name: "Certifried: dNSHostName also held by a domain controller", tmplAttrs: computerTemplateAttrs, account: pc1,
			input: func(in *Input) {
				in.DNSHolders["pc1.corp.example.test"] = append(in.DNSHolders["pc1.corp.example.test"],
					"CN=DC1,OU=Domain Controllers,DC=corp,DC=example,DC=test")
			}, want: Refuse, wantReason: "DNS name pc1.corp.example.test is also held by CN=DC1,OU=Domain Controllers",
			check: func(t *testing.T, d Decision) {
				n := 0
				for _, r := range d.Refusals {
					if strings.Contains(r, "also held by") {
						n++
					}
				}
				if n != 2 { // the CN and the DNS SAN
					t.Errorf("Decide(Certifried) refusals = %q, want the subject CN and the SAN refused", d.Refusals)
				}
			}},
		{name: "UPN also another account's implicit UPN", input: func(in *Input) {
			in.UPNHolders["alice@corp.example.test"] = append(in.UPNHolders["alice@corp.example.test"], "CN=alice,OU=Contractors,DC=corp,DC=example,DC=test")
		}, want: Refuse, wantReason: "UPN alice@corp.example.test is also held by CN=alice,OU=Contractors"},
		{name: "UPN not checked against the directory", input: func(in *Input) { in.UPNHolders = nil }, want: Refuse,
			wantReason: "UPN alice@corp.example.test was not checked against the directory"},
		{name: "dNSHostName not checked against the directory", tmplAttrs: computerTemplateAttrs, account: pc1,
			input: func(in *Input) { in.DNSHolders = nil }, want: Refuse, wantReason: "was not checked against the directory"},
		{name: "computer without dNSHostName", tmplAttrs: computerTemplateAttrs,
			account: func(t testing.TB) Account { a := pc1(t); a.DNSHostName = ""; return a }, want: Refuse, wantReason: "no dNSHostName"},
		{name: "user without mail", account: func(t testing.TB) Account { a := alice(t); a.Mail = ""; return a }, want: Refuse, wantReason: "no mail"},
		{name: "user without UPN", account: func(t testing.TB) Account { a := alice(t); a.UPN = ""; return a }, want: Refuse, wantReason: "no userPrincipalName"},
		{name: "no subject, no SAN", tmpl: withFlag("mspki-certificate-name-flag", 0), want: Refuse, wantReason: "neither a subject nor"},
		{name: "SAN only: critical SAN", tmpl: withFlag("mspki-certificate-name-flag", uint32(NameAltRequireUPN)), want: Issue,
			check: func(t *testing.T, d Decision) {
				if san := findExt(d.Order.ExtraExtensions, oidExtSAN); san == nil || !san.Critical || d.Subject != "" {
					t.Errorf("Decide(SAN only) SAN = %+v, subject %q; want a critical SAN and an empty subject", san, d.Subject)
				}
			}},
		{name: "extra subject attributes", tmpl: withFlag("mspki-certificate-name-flag", uint32(NameRequireCommonName|NameRequireEmail)),
			input: func(in *Input) { in.ExtraSubject = []string{"title", "givenName", "sn", "ou", "dnQualifier"} }, want: Issue,
			wantReason: "dnQualifier: the account has no value", check: func(t *testing.T, d Decision) {
				want := "E=alice@example.test,OU=Platform,OU=Engineering,SN=Adams,givenName=Alice,title=Engineer,CN=Alice Adams"
				if d.Subject != want {
					t.Errorf("Decide(extra subject) = %q, want %q", d.Subject, want)
				}
			}},
		{name: "unknown extra subject attribute", input: func(in *Input) { in.ExtraSubject = []string{"employeeID"} }, want: Refuse, wantReason: "not one this CA writes"},
		{name: "alt-name flag alone is ignored by the CA", tmpl: withFlag("mspki-certificate-name-flag", uint32(NameEnrolleeSuppliesSubjectAltName|NameRequireCommonName)),
			input: func(in *Input) {
				in.Request = &Request{SANs: []GeneralName{dnsName("evil.example")}, PublicKey: rsaKey.Public()}
			},
			want: Issue, wantReason: "the CA ignores it", check: func(t *testing.T, d Decision) {
				if len(d.SANs) != 0 {
					t.Errorf("Decide(alt-name flag) SANs = %q, want none", d.SANs)
				}
			}},
	}
	for _, tc := range cases {
		t.Run(tc.name, tc.run)
	}
}

func TestDecideExtensions(t *testing.T) {
	custom := func(c ...CustomExtension) func(*Input) { return func(in *Input) { in.Custom = c } }
	oidEmp := asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 99999, 1}
	cases := []decideCase{
		// ESC2 (docs/security.md): an Any Purpose template is issued as the template says, as AD CS
		// does, and the certificate still names only the enrollee (its SID extension).
		{name: "Any Purpose template (ESC2)", tmpl: func(m attrs) {
			set(m, "pkiextendedkeyusage", "2.5.29.37.0")
			set(m, "mspki-certificate-application-policy", "2.5.29.37.0")
		}, want: Issue, check: func(t *testing.T, d Decision) {
			if !slices.Contains(d.Order.ExtKeyUsage, x509.ExtKeyUsageAny) {
				t.Errorf("Decide(Any Purpose template) EKUs = %v, want Any Purpose", d.Order.ExtKeyUsage)
			}
			sid := findExt(d.Order.ExtraExtensions, oidExtSID)
			if sid == nil || hexs(sid.Value) != hexs(sidExtension(sidAlice.String()).Value) {
				t.Errorf("Decide(Any Purpose template) SID extension = %v, want alice's", sid)
			}
		}},
		{name: "SID, template and application policy extensions", want: Issue, check: func(t *testing.T, d Decision) {
			sid := findExt(d.Order.ExtraExtensions, oidExtSID)
			// SEQUENCE { [0] { OID 1.3.6.1.4.1.311.25.2.1, [0] { OCTET STRING "S-1-5-21-1000-2000-3000-1104" } } }
			wantSID := "302ea02c060a2b060104018237190201a01e041c" + hexs([]byte(domainSID+"-1104"))
			if sid == nil || hexs(sid.Value) != wantSID {
				t.Errorf("Decide SID extension = %+v, want %s", sid, wantSID)
			}
			tmpl := findExt(d.Order.ExtraExtensions, oidExtTemplateV2)
			var ti struct {
				OID          asn1.ObjectIdentifier
				Major, Minor int
			}
			if tmpl == nil {
				t.Fatalf("Decide: no template extension")
			}
			if _, err := asn1.Unmarshal(tmpl.Value, &ti); err != nil || ti.Major != 100 || ti.Minor != 3 || len(ti.OID) != 17 {
				t.Errorf("Decide template extension = %+v, %v; want the template OID, 100, 3", ti, err)
			}
			if findExt(d.Order.ExtraExtensions, oidExtTemplateV1) != nil {
				t.Errorf("Decide(schema 2) has a v1 template name extension")
			}
			ap := findExt(d.Order.ExtraExtensions, oidExtAppPolicies)
			wantAP := policiesExtension(oidExtAppPolicies, []asn1.ObjectIdentifier{{1, 3, 6, 1, 5, 5, 7, 3, 2}, {1, 3, 6, 1, 5, 5, 7, 3, 4}, {1, 3, 6, 1, 4, 1, 311, 10, 3, 4}}, false)
			if ap == nil || hexs(ap.Value) != hexs(wantAP.Value) {
				t.Errorf("Decide application policies = %+v, want %x", ap, wantAP.Value)
			}
			if len(d.Order.ExtKeyUsage) != 2 || len(d.Order.UnknownEKUs) != 1 || d.Order.KeyUsage != x509.KeyUsageDigitalSignature|x509.KeyUsageKeyEncipherment {
				t.Errorf("Decide EKUs = %v + %v, KU %v; want client auth, e-mail, EFS; digitalSignature|keyEncipherment", d.Order.ExtKeyUsage, d.Order.UnknownEKUs, d.Order.KeyUsage)
			}
		}},
		{name: "schema 1: template name extension", tmpl: func(m attrs) { delete(m, "mspki-template-schema-version") }, want: Issue,
			check: func(t *testing.T, d Decision) {
				v1 := findExt(d.Order.ExtraExtensions, oidExtTemplateV1)
				// BMPString "UserAuth"
				if v1 == nil || hexs(v1.Value) != "1e1000550073006500720041007500740068" {
					t.Errorf("Decide(schema 1) v1 extension = %+v", v1)
				}
				if findExt(d.Order.ExtraExtensions, oidExtAppPolicies) != nil {
					t.Errorf("Decide(schema 1) has application policies")
				}
			}},
		{name: "NO_SECURITY_EXTENSION", tmpl: withFlag("mspki-enrollment-flag", uint32(EnrollNoSecurityExtension)), want: Issue, wantReason: "NO_SECURITY_EXTENSION",
			check: func(t *testing.T, d Decision) {
				if findExt(d.Order.ExtraExtensions, oidExtSID) != nil {
					t.Errorf("Decide(NO_SECURITY_EXTENSION) has a SID extension")
				}
			}},
		{name: "critical EKU and certificate policies", tmpl: func(m attrs) {
			set(m, "pkicriticalextensions", "2.5.29.15", "2.5.29.37")
			set(m, "mspki-certificate-policy", "1.3.6.1.4.1.99999.5.1")
		}, want: Issue, check: func(t *testing.T, d Decision) {
			eku := findExt(d.Order.ExtraExtensions, oidExtEKU)
			if eku == nil || !eku.Critical || len(d.Order.ExtKeyUsage) != 0 {
				t.Errorf("Decide(critical EKU) = %+v, Order EKUs %v; want a critical EKU extension only", eku, d.Order.ExtKeyUsage)
			}
			if cp := findExt(d.Order.ExtraExtensions, oidExtCertPolicies); cp == nil || hexs(cp.Value) != "300e300c060a2b06010401868d1f0501" {
				t.Errorf("Decide certificate policies = %+v", cp)
			}
		}},
		{name: "OCSP no check and no revocation info", tmpl: withFlag("mspki-enrollment-flag", uint32(EnrollAddOCSPNoCheck|EnrollNoRevocationInfoInIssuedCerts)), want: Issue,
			check: func(t *testing.T, d Decision) {
				if findExt(d.Order.ExtraExtensions, oidExtOCSPNoCheck) == nil || !d.Order.NoRevocationInfo {
					t.Errorf("Decide(OCSP no check) lacks the extension or NoRevocationInfo")
				}
			}},
		{name: "custom utf8string", input: custom(CustomExtension{OID: oidEmp, Attribute: "employeeID", Encoding: EncodingUTF8}), want: Issue,
			check: func(t *testing.T, d Decision) {
				if e := findExt(d.Order.ExtraExtensions, oidEmp); e == nil || hexs(e.Value) != "0c06452d31323334" || e.Critical {
					t.Errorf("Decide(custom) = %+v, want UTF8String E-1234", e)
				}
			}},
		{name: "custom octetstring-hex", account: func(t testing.TB) Account { a := alice(t); set(a.Attrs, "extensionattribute1", "CAFE"); return a },
			input: custom(CustomExtension{OID: oidEmp, Attribute: "extensionAttribute1", Encoding: EncodingOctetHex, Critical: true}), want: Issue,
			check: func(t *testing.T, d Decision) {
				if e := findExt(d.Order.ExtraExtensions, oidEmp); e == nil || hexs(e.Value) != "0402cafe" || !e.Critical {
					t.Errorf("Decide(custom hex) = %+v, want critical OCTET STRING cafe", e)
				}
			}},
		{name: "custom der-base64", account: func(t testing.TB) Account { a := alice(t); set(a.Attrs, "extensionattribute2", "AgEF"); return a },
			input: custom(CustomExtension{OID: oidEmp, Attribute: "extensionAttribute2", Encoding: EncodingDERBase64}), want: Issue,
			check: func(t *testing.T, d Decision) {
				if e := findExt(d.Order.ExtraExtensions, oidEmp); e == nil || hexs(e.Value) != "020105" {
					t.Errorf("Decide(custom DER) = %+v, want INTEGER 5", e)
				}
			}},
		{name: "custom attribute missing", input: custom(CustomExtension{OID: oidEmp, Attribute: "employeeNumber", Encoding: EncodingUTF8}),
			want: Refuse, wantReason: "no employeeNumber attribute"},
		{name: "custom encoding unknown", input: custom(CustomExtension{OID: oidEmp, Attribute: "employeeID", Encoding: "base64"}),
			want: Refuse, wantReason: `unknown encoding "base64"`},
		{name: "custom printable refuses bad text", account: func(t testing.TB) Account { a := alice(t); set(a.Attrs, "employeeid", "E_1234"); return a },
			input: custom(CustomExtension{OID: oidEmp, Attribute: "employeeID", Encoding: EncodingPrintable}), want: Refuse, wantReason: "cannot be a PrintableString"},
		{name: "custom may not replace the SID extension", input: custom(CustomExtension{OID: oidExtSID, Attribute: "employeeID", Encoding: EncodingUTF8}),
			want: Refuse, wantReason: "would replace"},
	}
	for _, tc := range cases {
		t.Run(tc.name, tc.run)
	}
}

func TestDecideRequestCannotSmuggle(t *testing.T) {
	testKeys(t)
	forged := []GeneralName{upnName("administrator@corp.example.test"), dnsName("dc1.corp.example.test"), sidName(domainSID + "-500")}
	bc := pkix.Extension{Id: oidExtBasicConstr, Critical: true, Value: mustMarshal(t, struct{ CA bool }{true})}
	der := csrDER(t, rsaKey, &x509.CertificateRequest{
		Subject: pkix.Name{CommonName: "Administrator"},
		ExtraExtensions: []pkix.Extension{sanExt(forged...), sidExtension(domainSID + "-500"), bc,
			ekuExtension([]asn1.ObjectIdentifier{{1, 3, 6, 1, 4, 1, 311, 20, 2, 1}, {2, 5, 29, 37, 0}}, false)},
	})
	req := mustRequest(t, der)
	tmpl := mustTemplate(t, userTemplateAttrs(t))
	d := Decide(Input{Template: tmpl, Account: alice(t), Request: req, CACert: caCert, Now: testNow, UPNHolders: upnHeld(alice(t))})
	if d.Outcome != Issue {
		t.Fatalf("Decide(forged request) = %v, want %v:\n%s", d.Outcome, Issue, d.Explain())
	}
	if strings.Contains(d.Subject, "Administrator") || !hasReason(d, `asked for subject "CN=Administrator"; ignored`) {
		t.Errorf("Decide(forged request) subject = %q, want alice's, and the request's subject reported as ignored", d.Subject)
	}
	san := findExt(d.Order.ExtraExtensions, oidExtSAN)
	wantSAN := sanExtension([]GeneralName{upnName("alice@corp.example.test"), emailName("alice@example.test")}, false)
	if san == nil || hexs(san.Value) != hexs(wantSAN.Value) {
		t.Errorf("Decide(forged request) SAN = %x, want %x", san.Value, wantSAN.Value)
	}
	sid := findExt(d.Order.ExtraExtensions, oidExtSID)
	if sid == nil || hexs(sid.Value) != hexs(sidExtension(sidAlice.String()).Value) {
		t.Errorf("Decide(forged request) SID extension = %x, want alice's", sid.Value)
	}
	for _, e := range d.Order.ExtraExtensions {
		for _, bad := range []string{"administrator", "dc1.corp", "-500"} {
			if strings.Contains(strings.ToLower(string(e.Value)), bad) {
				t.Errorf("Decide(forged request) extension %s contains %q", e.Id, bad)
			}
		}
		if e.Id.Equal(oidExtBasicConstr) {
			t.Errorf("Decide(forged request) copied basicConstraints")
		}
	}
	for _, u := range d.Order.ExtKeyUsage {
		if u == x509.ExtKeyUsageAny {
			t.Errorf("Decide(forged request) copied anyExtendedKeyUsage")
		}
	}
	for _, want := range []string{"asked for UPN:administrator@corp.example.test; ignored", "asked for DNS:dc1.corp.example.test; ignored",
		"asked for a SID extension (" + domainSID + "-500); ignored", "CA=true; ignored", "asked for EKUs"} {
		if !hasReason(d, want) {
			t.Errorf("Decide(forged request) reasons = %q, want one containing %q", d.Reasons, want)
		}
	}
}

func TestDecideEnrolleeSuppliesSubject(t *testing.T) {
	testKeys(t)
	supplies := withFlag("mspki-certificate-name-flag", uint32(NameEnrolleeSuppliesSubject))
	req := func(sans ...GeneralName) func(*Input) {
		return func(in *Input) {
			in.Request = &Request{PublicKey: rsaKey.Public(), SANs: sans}
		}
	}
	cases := []decideCase{
		{name: "own UPN and a DNS name", tmpl: supplies, input: req(upnName("ALICE@corp.example.test"), dnsName("app.corp.example.test")), want: Issue,
			check: func(t *testing.T, d Decision) {
				if strings.Join(d.SANs, ",") != "UPN:alice@corp.example.test,DNS:app.corp.example.test" {
					t.Errorf("Decide(supplied) SANs = %q", d.SANs)
				}
			}},
		{name: "another user's UPN (ESC1)", tmpl: supplies, input: req(upnName("administrator@corp.example.test")), want: Refuse, wantReason: "ESC1"},
		{name: "another SID in the SAN", tmpl: supplies, input: req(sidName(domainSID + "-500")), want: Refuse, wantReason: "ESC1"},
		{name: "another SID as URL", tmpl: supplies, input: req(uriName(sidURIPrefix + domainSID + "-500")), want: Refuse, wantReason: "ESC1"},
		{name: "forged SID extension", tmpl: supplies, input: func(in *Input) {
			in.Request = &Request{PublicKey: rsaKey.Public(), SANs: []GeneralName{dnsName("app.example")}, HasSIDExtension: true, SID: domainSID + "-500"}
		}, want: Refuse, wantReason: "SID extension for " + domainSID + "-500"},
		{name: "CA=true still ignored", tmpl: supplies, input: func(in *Input) {
			in.Request = &Request{PublicKey: rsaKey.Public(), SANs: []GeneralName{dnsName("app.example")}, BasicConstraintsCA: true}
		}, want: Issue, wantReason: "CA=true; ignored"},
		{name: "unsupported SAN kind", tmpl: supplies, input: req(GeneralName{Kind: "dirName", Value: "CN=x"}), want: Refuse, wantReason: "does not issue"},
		{name: "bad DNS name", tmpl: supplies, input: req(dnsName("bad name")), want: Refuse, wantReason: "not a valid DNS name"},
		{name: "nothing supplied", tmpl: supplies, input: req(), want: Refuse, wantReason: "neither a subject nor"},
	}
	for _, tc := range cases {
		t.Run(tc.name, tc.run)
	}
}

func TestDecideNeverPanics(t *testing.T) {
	testKeys(t)
	tmpl := mustTemplate(t, userTemplateAttrs(t))
	inputs := []Input{
		{},
		{Template: tmpl},
		{Account: Account{SID: sidAlice}},
		{Template: tmpl, Account: Account{SID: sidAlice}, Request: &Request{}, CACert: &x509.Certificate{}, Now: testNow},
		{Template: tmpl, Account: alice(t), Request: &Request{PublicKey: struct{}{}}, CACert: caCert, Now: testNow},
		{Template: Template{Name: "x", NameFlags: 0xffffffff, EnrollmentFlags: 0xffffffff, SchemaVersion: 2}, Account: Account{DN: "CN=x,DC=y", SID: sidAlice}, Request: &Request{SANs: []GeneralName{{}}}, Now: testNow},
	}
	for i, in := range inputs {
		d := Decide(in)
		if d.Outcome != Refuse || len(d.Reasons) == 0 {
			t.Errorf("Decide(input %d) = %v with %d reasons, want a refusal with reasons", i, d.Outcome, len(d.Reasons))
		}
		_ = d.Explain()
	}
}

func TestExplain(t *testing.T) {
	testKeys(t)
	d := Decide(Input{Template: mustTemplate(t, userTemplateAttrs(t)), Account: alice(t), CACert: caCert, Now: testNow, UPNHolders: upnHeld(alice(t))})
	got := d.Explain()
	for _, want := range []string{
		"Template UserAuth: would be ISSUED",
		"Enroll:      yes: allowed by ACE 2",
		"Subject:     E=alice@example.test,CN=Alice Adams,OU=Staff,DC=corp,DC=example,DC=test",
		"SANs:        UPN:alice@corp.example.test, email:alice@example.test",
		"Validity:    1 year",
		"SID security extension (1.3.6.1.4.1.311.25.2)",
		"no request given",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("Explain() =\n%s\nwant it to contain %q", got, want)
		}
	}
	d = Decide(Input{Template: mustTemplate(t, userTemplateAttrs(t)), Account: alice(t, sidDomainUsers), CACert: caCert, Now: testNow, UPNHolders: upnHeld(alice(t))})
	if got := d.Explain(); !strings.Contains(got, "REFUSED") || !strings.Contains(got, "Refused because:") {
		t.Errorf("Explain(refused) =\n%s\nwant REFUSED with the refusals", got)
	}
}
