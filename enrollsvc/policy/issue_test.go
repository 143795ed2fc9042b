package policy

import (
	"context"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"strings"
	"testing"
	"time"

	"github.com/enrollment-appliance/aeappliance/enrollsvc/issue"
)

// TestDecisionIssues runs decisions through issue.Prepare (which lints with zlint) and the CA
// signature, and checks that the certificate holds exactly what the decision (and so explain)
// said: subject, SANs, SID and template extensions.
func TestDecisionIssues(t *testing.T) {
	testKeys(t)
	iss, err := issue.New(issue.Config{CACert: caCert, Signer: caKey, Now: func() time.Time { return testNow },
		CRLURLs: []string{"http://pki.corp.example.test/ca.crl"}})
	if err != nil {
		t.Fatalf("issue.New: %v", err)
	}
	forged := csrDER(t, rsaKey, &x509.CertificateRequest{
		Subject:         pkix.Name{CommonName: "Administrator"},
		ExtraExtensions: []pkix.Extension{sanExt(upnName("administrator@corp.example.test")), sidExtension(domainSID + "-500")},
	})
	computer := computerTemplateAttrs(t)
	set(computer, "mspki-certificate-name-flag", signedFlag(uint32(NameRequireDNSAsCN|NameAltRequireDNS|NameAltRequireDomainDNS|NameAltRequireSPN|NameAltRequireDirectoryGUID)))
	supplies := userTemplateAttrs(t)
	set(supplies, "mspki-certificate-name-flag", signedFlag(uint32(NameEnrolleeSuppliesSubject)))
	supplied := csrDER(t, rsaKey, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "app.corp.example.test", Organization: []string{"Corp"}},
		DNSNames: []string{"app.corp.example.test"}})
	schema1 := userTemplateAttrs(t)
	delete(schema1, "mspki-template-schema-version")
	set(schema1, "mspki-enrollment-flag", signedFlag(uint32(EnrollNoSecurityExtension|EnrollAddOCSPNoCheck)))

	cases := []struct {
		name    string
		tmpl    attrs
		account Account
		csr     []byte
		extra   []string
	}{
		{"user with a forged request", userTemplateAttrs(t), alice(t), forged, []string{"title", "ou"}},
		{"computer", computer, pc1(t), csrDER(t, rsaKey, nil), nil},
		{"enrollee supplies subject", supplies, alice(t), supplied, nil},
		{"schema 1, no SID extension", schema1, alice(t), csrDER(t, rsaKey, nil), nil},
	}
	for _, tc := range cases {
		in := Input{Template: mustTemplate(t, tc.tmpl), Account: tc.account, Request: mustRequest(t, tc.csr), CACert: caCert, Now: testNow, ExtraSubject: tc.extra,
			DNSHolders: selfHeld(tc.account), UPNHolders: upnHeld(tc.account)}
		d := Decide(in)
		if d.Outcome != Issue {
			t.Errorf("Decide(%s) = %v, want %v:\n%s", tc.name, d.Outcome, Issue, d.Explain())
			continue
		}
		p, err := iss.Prepare(d.Order)
		if err != nil {
			t.Errorf("issue.Prepare(Decide(%s).Order) = %v", tc.name, err)
			continue
		}
		cert, err := iss.Sign(context.Background(), p)
		if err != nil {
			t.Errorf("issue.Sign(%s) = %v", tc.name, err)
			continue
		}
		var rdns pkix.RDNSequence
		if _, err := asn1.Unmarshal(cert.RawSubject, &rdns); err != nil || issue.FormatRDNs(rdns) != d.Subject {
			t.Errorf("%s: certificate subject = %q, decision said %q", tc.name, issue.FormatRDNs(rdns), d.Subject)
		}
		var sans []string
		for _, want := range d.Order.ExtraExtensions {
			got := findExt(cert.Extensions, want.Id)
			if got == nil || hexs(got.Value) != hexs(want.Value) || got.Critical != want.Critical {
				t.Errorf("%s: certificate extension %s = %+v, decision said %+v", tc.name, want.Id, got, want)
			}
			if want.Id.Equal(oidExtSAN) {
				names, _ := parseGeneralNames(got.Value)
				for _, n := range names {
					sans = append(sans, n.String())
				}
			}
		}
		if strings.Join(sans, ",") != strings.Join(d.SANs, ",") {
			t.Errorf("%s: certificate SANs = %q, decision said %q", tc.name, sans, d.SANs)
		}
		if cert.IsCA || strings.Contains(cert.Subject.String(), "Administrator") {
			t.Errorf("%s: certificate is a CA or names Administrator: %s", tc.name, cert.Subject)
		}
		if !cert.NotAfter.Equal(testNow.Add(365 * 24 * time.Hour)) {
			t.Errorf("%s: certificate notAfter = %v, want one year after %v", tc.name, cert.NotAfter, testNow)
		}
	}
}
