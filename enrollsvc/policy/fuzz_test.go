package policy

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"testing"

	"github.com/enrollment-appliance/aeappliance/ldap/secdesc"
)

// FuzzParseRequest feeds client bytes to ParseRequest and every request it accepts to Decide,
// on a directory-built and an enrollee-supplied template. Neither may panic.
func FuzzParseRequest(f *testing.F) {
	testKeys(f)
	f.Add(csrDER(f, rsaKey, nil))
	f.Add(csrDER(f, ecKey, &x509.CertificateRequest{
		Subject:         pkix.Name{CommonName: "Administrator"},
		ExtraExtensions: []pkix.Extension{sanExt(upnName("administrator@corp.example.test"), dnsName("x.example"), sidName("S-1-5-21-1-2-3-500")), sidExtension("S-1-5-21-1-2-3-500")},
	}))
	f.Add(handCSR(f, pkix.Name{}, []pkix.Extension{templateV2Extension(asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 311, 21, 8, 1}, 100, 2)},
		nameValuePair(f, "CertificateTemplate", "User"), clientInfo(f, 6)))
	f.Add([]byte{0x30, 0x03, 0x02, 0x01, 0x00})
	directory := mustTemplate(f, userTemplateAttrs(f))
	m := userTemplateAttrs(f)
	set(m, "mspki-certificate-name-flag", signedFlag(uint32(NameEnrolleeSuppliesSubject)))
	supplies := mustTemplate(f, m)
	acc := alice(f)
	f.Fuzz(func(t *testing.T, der []byte) {
		r, err := ParseRequest(der)
		if err != nil {
			return
		}
		for _, tmpl := range []Template{directory, supplies} {
			d := Decide(Input{Template: tmpl, Account: acc, Request: &r, CACert: caCert, Now: testNow, UPNHolders: upnHeld(acc)})
			if d.Outcome != Refuse && len(d.Refusals) > 0 {
				t.Fatalf("Decide = %v with refusals %q", d.Outcome, d.Refusals)
			}
			_ = d.Explain()
		}
	})
}

// FuzzParseTemplate varies the attributes most likely to be odd (security descriptor, periods,
// flags, OIDs, key usage, schema-4 properties, the account's DN) and decides with what parses.
func FuzzParseTemplate(f *testing.F) {
	testKeys(f)
	base := userTemplateAttrs(f)
	f.Add(base["ntsecuritydescriptor"][0], base["pkiexpirationperiod"][0], "-2147483648", "1.3.6.1.4.1.311.21.8.1", []byte{0xa0, 0x00}, "2",
		"msPKI-Asymmetric-Algorithm`PZPWSTR`ECDSA_P256`", aliceDN)
	f.Add([]byte{1, 0, 4, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 20, 0, 0, 0, 2, 0, 8, 0, 0, 0, 0, 0}, []byte{0, 0, 0, 0, 0, 0, 0, 0x80}, "x", "2.999", []byte{0xff, 0xff}, "4", "a`b", `CN=a\,b+OU=c,DC=x`)
	acc := alice(f)
	f.Fuzz(func(t *testing.T, sd, period []byte, flag, oid string, ku []byte, schema, ra, dn string) {
		m := userTemplateAttrs(t)
		m["ntsecuritydescriptor"] = [][]byte{sd}
		m["pkiexpirationperiod"] = [][]byte{period}
		set(m, "mspki-certificate-name-flag", flag)
		set(m, "mspki-enrollment-flag", flag)
		set(m, "mspki-cert-template-oid", oid)
		set(m, "mspki-certificate-application-policy", oid)
		m["pkikeyusage"] = [][]byte{ku}
		set(m, "mspki-template-schema-version", schema)
		set(m, "mspki-ra-application-policies", ra)
		tmpl, err := ParseTemplate(m)
		if err != nil {
			if tmpl.SD != nil || tmpl.Name != "" {
				t.Fatalf("ParseTemplate returned an error and a template")
			}
			return
		}
		_ = tmpl.NameFlags.String() + tmpl.EnrollmentFlags.String()
		a := acc
		if parsed, err := ParseAccount(dn, aliceAttrs(), []secdesc.SID{sidPKIUsers}); err == nil {
			a = parsed
		}
		d := Decide(Input{Template: tmpl, Account: a, Request: &Request{PublicKey: rsaKey.Public()}, CACert: caCert, Now: testNow,
			DNSHolders: selfHeld(a), UPNHolders: upnHeld(a), ExtraSubject: []string{"ou"}})
		_ = d.Explain()
	})
}

// BenchmarkDecide is one decision for an account in 60 groups (the one holding Enroll last),
// with an RSA-2048 request: access check, names, extensions and every key check.
func BenchmarkDecide(b *testing.B) {
	testKeys(b)
	groups := make([]secdesc.SID, 60)
	for i := range groups {
		groups[i] = rid(5000 + i)
	}
	aces := []secdesc.ACE{secdesc.AllowAll(rid(512)), secdesc.AllowRead(secdesc.AuthenticatedUsers)}
	for i := range 8 {
		aces = append(aces, secdesc.AllowEnroll(rid(9000+i)), secdesc.DenyEnroll(rid(9100+i)))
	}
	aces = append(aces, secdesc.AllowEnroll(groups[59]), secdesc.AllowAutoenroll(groups[58]))
	tmpl := mustTemplate(b, userTemplateAttrs(b, aces...))
	acc := alice(b, groups...)
	req := mustRequest(b, csrDER(b, rsaKey, nil))
	in := Input{Template: tmpl, Account: acc, Request: req, CACert: caCert, Now: testNow, Autoenroll: true,
		ExtraSubject: []string{"title", "ou"}, UPNHolders: upnHeld(acc)}
	if d := Decide(in); d.Outcome != Issue {
		b.Fatalf("Decide = %v:\n%s", d.Outcome, d.Explain())
	}
	b.Run("rsa2048", func(b *testing.B) {
		for b.Loop() {
			Decide(in)
		}
	})
	b.Run("no-request", func(b *testing.B) {
		in := in
		in.Request = nil
		for b.Loop() {
			Decide(in)
		}
	})
}
