package daemon_test

import (
	"context"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/enrollment-appliance/aeappliance/enrollsvc"
	"github.com/enrollment-appliance/aeappliance/enrollsvc/store"
	"github.com/enrollment-appliance/aeappliance/proto/certutil"
)

// The core's SCEP rules against the real directory and store: who a certificate is for comes
// from the profile or the challenge, challenges work once and only for their subject, a
// transaction ID is bound to its request.
func TestSCEPRules(t *testing.T) {
	f := newDirFixture(t, "")
	ctx := context.Background()
	svc := f.rt.Service
	certs := func() int {
		t.Helper()
		list, err := f.rt.Store.ListCertificates(ctx, store.CertFilter{Limit: 1000})
		if err != nil {
			t.Fatal(err)
		}
		return len(list)
	}

	for _, bad := range []enrollsvc.SCEPProfileSpec{
		{Name: "x", Template: "SuppliesSubject", Account: "dave", StaticChallenge: "short"},
		{Name: "x", Template: "SuppliesSubject", StaticChallenge: "long enough secret"}, // static needs an account
		{Name: "x", Template: "NoSuchTemplate", Account: "dave", StaticChallenge: "long enough secret"},
		{Name: "x", Template: "SuppliesSubject", Account: "nobody-here", StaticChallenge: "long enough secret"},
		{Name: "bad name!", Template: "SuppliesSubject", OneTime: true},
		{Name: "x", Template: "SuppliesSubject", OneTime: true, StaticChallenge: "long enough secret"},
	} {
		if _, err := svc.AddSCEPProfile(ctx, bad, "test"); enrollsvc.KindOf(err) != enrollsvc.KindBadRequest {
			t.Errorf("AddSCEPProfile(%+v) = %v, want a bad request", bad, err)
		}
	}
	if _, err := svc.AddSCEPProfile(ctx, enrollsvc.SCEPProfileSpec{Name: "static", Template: "SuppliesSubject", Account: "dave",
		StaticChallenge: "long enough secret"}, "test"); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.AddSCEPProfile(ctx, enrollsvc.SCEPProfileSpec{Name: "devices", Template: "SuppliesSubject", OneTime: true}, "test"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := svc.NewSCEPChallenge(ctx, enrollsvc.SCEPChallengeSpec{Profile: "devices"}, "test"); err == nil {
		t.Error("a challenge for a profile without an account, naming none, was made")
	}
	if _, _, err := svc.NewSCEPChallenge(ctx, enrollsvc.SCEPChallengeSpec{Profile: "static", Account: "dave"}, "test"); err == nil {
		t.Error("a one-time challenge was made for a static profile")
	}

	csrA := rsaCSR(t, pkix.Name{CommonName: "router1.corp.example.test"})
	base := certs()
	res, err := svc.SCEPEnroll(ctx, enrollsvc.SCEPRequest{Profile: "static", TransactionID: "tx-1", CSR: csrA, Challenge: "wrong secret"})
	if err != nil || res.Status != enrollsvc.StatusDenied || !strings.Contains(strings.Join(res.Reasons, ";"), "challenge") {
		t.Errorf("wrong static challenge = %+v, %v, want denied", res, err)
	} else if r, err := f.rt.Store.GetRequest(ctx, res.RequestID); err != nil || len(r.CSR) != 0 {
		t.Errorf("the refused anonymous request was recorded with %d bytes of CSR (%v), want none", len(r.CSR), err)
	}
	res, err = svc.SCEPEnroll(ctx, enrollsvc.SCEPRequest{Profile: "static", TransactionID: "tx-2", CSR: csrA, Challenge: "long enough secret"})
	if err != nil || res.Status != enrollsvc.StatusIssued || res.Certificate.Subject.CommonName != "router1.corp.example.test" {
		t.Fatalf("right static challenge = %+v, %v, want issued for the CSR's subject", res, err)
	}
	first := res.Certificate
	// A retry of the same transaction with the same request: the same certificate, nothing new.
	res, err = svc.SCEPEnroll(ctx, enrollsvc.SCEPRequest{Profile: "static", TransactionID: "tx-2", CSR: csrA, Challenge: "long enough secret"})
	if err != nil || res.Status != enrollsvc.StatusIssued || !res.Certificate.Equal(first) {
		t.Errorf("retry of tx-2 = %+v, %v, want the same certificate", res, err)
	}
	// The same transaction ID with another request: refused.
	res, err = svc.SCEPEnroll(ctx, enrollsvc.SCEPRequest{Profile: "static", TransactionID: "tx-2",
		CSR: rsaCSR(t, pkix.Name{CommonName: "evil"}), Challenge: "long enough secret"})
	if err != nil || res.Status != enrollsvc.StatusDenied || !strings.Contains(strings.Join(res.Reasons, ";"), "used before") {
		t.Errorf("tx-2 with another request = %+v, %v, want denied", res, err)
	}
	if n := certs(); n != base+1 {
		t.Errorf("%d certificates issued, want 1", n-base)
	}

	ch, exp, err := svc.NewSCEPChallenge(ctx, enrollsvc.SCEPChallengeSpec{Profile: "devices", Account: "dave",
		Subject: "phone1.corp.example.test", TTL: time.Hour}, "test")
	if err != nil || len(ch) < 20 || time.Until(exp) > time.Hour+time.Minute {
		t.Fatalf("NewSCEPChallenge = %q, %v, %v", ch, exp, err)
	}
	other, _, _ := svc.NewSCEPChallenge(ctx, enrollsvc.SCEPChallengeSpec{Profile: "devices", Account: "dave", Subject: "phone2.corp.example.test"}, "test")
	res, err = svc.SCEPEnroll(ctx, enrollsvc.SCEPRequest{Profile: "devices", TransactionID: "tx-3",
		CSR: rsaCSR(t, pkix.Name{CommonName: "phone1.corp.example.test"}), Challenge: other})
	if err != nil || res.Status != enrollsvc.StatusDenied || !strings.Contains(strings.Join(res.Reasons, ";"), "bound to") {
		t.Errorf("a challenge bound to another subject = %+v, %v, want denied", res, err)
	}
	// Bound to phone1: a request that names phone1 and smuggles a second name (the template takes
	// names from the request) is refused, and spends the challenge.
	smuggler, _, _ := svc.NewSCEPChallenge(ctx, enrollsvc.SCEPChallengeSpec{Profile: "devices", Account: "dave", Subject: "phone1.corp.example.test"}, "test")
	for i, extra := range []pkix.Extension{sanExt(t, "phone1.corp.example.test", "dc1.corp.example.test")} {
		res, err = svc.SCEPEnroll(ctx, enrollsvc.SCEPRequest{Profile: "devices", TransactionID: "tx-smuggle-" + strconv.Itoa(i),
			CSR: rsaCSR(t, pkix.Name{CommonName: "phone1.corp.example.test"}, extra), Challenge: smuggler})
		if err != nil || res.Status != enrollsvc.StatusDenied || !strings.Contains(strings.Join(res.Reasons, ";"), "every name in the request") {
			t.Errorf("a challenge bound to phone1 with a second SAN = %+v, %v, want denied", res, err)
		}
	}
	twoCNs := rsaCSR(t, pkix.Name{ExtraNames: []pkix.AttributeTypeAndValue{{Type: []int{2, 5, 4, 3}, Value: "phone1.corp.example.test"},
		{Type: []int{2, 5, 4, 3}, Value: "dc1.corp.example.test"}}})
	third, _, _ := svc.NewSCEPChallenge(ctx, enrollsvc.SCEPChallengeSpec{Profile: "devices", Account: "dave", Subject: "phone1.corp.example.test"}, "test")
	res, err = svc.SCEPEnroll(ctx, enrollsvc.SCEPRequest{Profile: "devices", TransactionID: "tx-two-cns", CSR: twoCNs, Challenge: third})
	if err != nil || res.Status != enrollsvc.StatusDenied {
		t.Errorf("a challenge bound to phone1 with a second common name = %+v, %v, want denied", res, err)
	}
	res, err = svc.SCEPEnroll(ctx, enrollsvc.SCEPRequest{Profile: "devices", TransactionID: "tx-4",
		CSR: rsaCSR(t, pkix.Name{CommonName: "phone1.corp.example.test"}), Challenge: ch})
	if err != nil || res.Status != enrollsvc.StatusIssued {
		t.Fatalf("one-time challenge = %+v, %v, want issued", res, err)
	}
	res, err = svc.SCEPEnroll(ctx, enrollsvc.SCEPRequest{Profile: "devices", TransactionID: "tx-5",
		CSR: rsaCSR(t, pkix.Name{CommonName: "phone1.corp.example.test"}), Challenge: ch})
	if err != nil || res.Status != enrollsvc.StatusDenied || !strings.Contains(strings.Join(res.Reasons, ";"), "used before") {
		t.Errorf("a reused one-time challenge = %+v, %v, want denied", res, err)
	}
	if n := certs(); n != base+2 {
		t.Errorf("%d certificates issued, want 2", n-base)
	}
	if _, err := svc.SCEPEnroll(ctx, enrollsvc.SCEPRequest{Profile: "nope", TransactionID: "tx-6", CSR: csrA}); enrollsvc.KindOf(err) != enrollsvc.KindNotFound {
		t.Errorf("unknown profile = %v, want not found", err)
	}
	if _, ok, err := svc.LookupSCEPProfile(ctx, "devices"); !ok || err != nil {
		t.Errorf("LookupSCEPProfile(devices) = %v, %v", ok, err)
	}

	// Renewal: signed with the certificate being renewed, no challenge needed.
	res, err = svc.SCEPEnroll(ctx, enrollsvc.SCEPRequest{Profile: "static", TransactionID: "tx-7",
		CSR: rsaCSR(t, pkix.Name{CommonName: "router1.corp.example.test"}), Renewing: first})
	if err != nil || res.Status != enrollsvc.StatusIssued || res.Certificate.Equal(first) {
		t.Errorf("renewal = %+v, %v, want a new certificate", res, err)
	}
	// Clients that derive the transaction ID from the key (scepclient, certmonger) renew under
	// the ID, and scepclient with the very CSR, of the enrollment: a renewal, not its retry.
	res, err = svc.SCEPEnroll(ctx, enrollsvc.SCEPRequest{Profile: "static", TransactionID: "tx-2", CSR: csrA, Renewing: first})
	if err != nil || res.Status != enrollsvc.StatusIssued || res.Certificate.Equal(first) {
		t.Errorf("renewal under the enrollment's tx-2 = %+v, %v, want a new certificate", res, err)
	}
	if _, err := svc.Revoke(ctx, fmtSerial(first), 4, "test"); err != nil {
		t.Fatal(err)
	}
	res, err = svc.SCEPEnroll(ctx, enrollsvc.SCEPRequest{Profile: "static", TransactionID: "tx-8",
		CSR: rsaCSR(t, pkix.Name{CommonName: "router1.corp.example.test"}), Renewing: first})
	if err != nil || res.Status != enrollsvc.StatusDenied {
		t.Errorf("renewal of a revoked certificate = %+v, %v, want denied", res, err)
	}
}

func fmtSerial(c *x509.Certificate) string { return certutil.SerialString(c.SerialNumber) }

// sanExt is a subjectAltName extension of DNS names.
func sanExt(t *testing.T, names ...string) pkix.Extension {
	t.Helper()
	var raw []asn1.RawValue
	for _, n := range names {
		raw = append(raw, asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 2, Bytes: []byte(n)})
	}
	return pkix.Extension{Id: oidSAN, Value: mustMarshal(t, raw)}
}
