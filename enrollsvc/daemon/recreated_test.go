package daemon_test

import (
	"context"
	"crypto/x509/pkix"
	"strings"
	"testing"

	goldap "github.com/go-ldap/ldap/v3"

	"github.com/enrollment-appliance/aeappliance/enrollsvc"
	"github.com/enrollment-appliance/aeappliance/ldap/ldaptest"
)

// A renewal, a client certificate's authentication and an approval follow the object the
// certificate or request was for, by SID: once dave is deleted and another account is created
// under his name (and DN), dave's certificate renews nothing and authenticates as nobody, and
// dave's held request cannot be approved into a certificate, and the SCEP profile and one-time
// challenge made for dave enroll nobody, while the newcomer enrolls as himself.
func TestRecreatedAccountCannotRenewItsPredecessorsCertificate(t *testing.T) {
	f := newDirFixture(t, "1ms")
	ctx := context.Background()
	svc := f.rt.Service
	csr := func() []byte { return rsaCSR(t, pkix.Name{CommonName: "ignored"}) }
	old, err := svc.Enroll(ctx, enrollsvc.EnrollRequest{Template: "PendUser", Account: "dave", Requester: "test", CSR: csr()})
	if err != nil || old.Status != enrollsvc.StatusPending {
		t.Fatalf("Enroll PendUser for dave = %+v, %v", old, err)
	}
	issued, err := svc.ApproveRequest(ctx, old.RequestID, "admin")
	if err != nil {
		t.Fatalf("approving dave's request: %v", err)
	}
	held, err := svc.Enroll(ctx, enrollsvc.EnrollRequest{Template: "PendUser", Account: "dave", Requester: "test", CSR: csr()})
	if err != nil || held.Status != enrollsvc.StatusPending {
		t.Fatalf("second Enroll PendUser for dave = %+v, %v", held, err)
	}
	// A SCEP profile for dave (static challenge), and a one-time challenge naming dave.
	const static = "a long enough static secret"
	scepCSR := func() []byte { return rsaCSR(t, pkix.Name{CommonName: "dave-phone.corp.example.test"}) }
	for _, spec := range []enrollsvc.SCEPProfileSpec{
		{Name: "dave-devices", Template: "SuppliesSubject", Account: "dave", StaticChallenge: static},
		{Name: "otp", Template: "SuppliesSubject", OneTime: true},
	} {
		if _, err := svc.AddSCEPProfile(ctx, spec, "test"); err != nil {
			t.Fatal(err)
		}
	}
	otp, _, err := svc.NewSCEPChallenge(ctx, enrollsvc.SCEPChallengeSpec{Profile: "otp", Account: "dave"}, "test")
	if err != nil {
		t.Fatal(err)
	}
	if r, err := svc.SCEPEnroll(ctx, enrollsvc.SCEPRequest{Profile: "dave-devices", TransactionID: "control", CSR: scepCSR(), Challenge: static}); err != nil || r.Status != enrollsvc.StatusIssued {
		t.Fatalf("SCEP enrollment with dave's profile while dave exists = %+v, %v", r, err)
	}
	// While dave exists, his certificate renews and authenticates (the control).
	account, _, err := svc.CertificateAccount(ctx, issued.Certificate)
	if err != nil {
		t.Fatalf("CertificateAccount while dave exists: %v", err)
	}
	if _, err := svc.Policies(ctx, account); err != nil {
		t.Fatalf("Policies for dave's certificate while dave exists: %v", err)
	}
	if r, err := svc.Renew(ctx, enrollsvc.RenewRequest{OldCert: issued.Certificate, CSR: csr(), Requester: "test"}); err != nil || r.Status == enrollsvc.StatusDenied {
		t.Fatalf("Renew while dave exists = %+v, %v; want it not denied", r, err)
	}

	conn := f.dc.Admin(t)
	if err := conn.Del(goldap.NewDelRequest(f.s.Dave.DN, nil)); err != nil {
		t.Fatal(err)
	}
	newcomer := f.dc.AddUser(t, ldaptest.StaffOU, "dave", f.s.PKIUsers.DN)
	if newcomer.SID.Equal(f.s.Dave.SID) {
		t.Fatal("the re-created account has the old SID")
	}
	r, err := svc.Renew(ctx, enrollsvc.RenewRequest{OldCert: issued.Certificate, CSR: csr(), Requester: "test"})
	if err != nil || r.Status != enrollsvc.StatusDenied || !strings.Contains(strings.Join(r.Reasons, "; "), f.s.Dave.SID.String()) {
		t.Errorf("Renew of the deleted dave's certificate after re-creating dave = %+v, %v; want denied naming the old SID %s", r, err, f.s.Dave.SID)
	}
	if account, _, err := svc.CertificateAccount(ctx, issued.Certificate); err == nil {
		if ps, err := svc.Policies(ctx, account); err == nil {
			t.Errorf("the deleted dave's certificate authenticates as %q and gets policies %+v; want no account", account, ps)
		}
	}
	if newcomer.DN != f.s.Dave.DN {
		t.Fatalf("the re-created dave is at %s, not the old DN %s", newcomer.DN, f.s.Dave.DN)
	}
	if res, err := svc.ApproveRequest(ctx, held.RequestID, "admin"); err == nil {
		t.Errorf("approving the deleted dave's held request after re-creating dave issued %v; want refused", res.Certificate.Subject)
	}
	for name, req := range map[string]enrollsvc.SCEPRequest{
		"the profile made for the old dave": {Profile: "dave-devices", TransactionID: "after-1", CSR: scepCSR(), Challenge: static},
		"a challenge made for the old dave": {Profile: "otp", TransactionID: "after-2", CSR: scepCSR(), Challenge: otp},
	} {
		if r, err := svc.SCEPEnroll(ctx, req); err != nil || r.Status != enrollsvc.StatusDenied ||
			!strings.Contains(strings.Join(r.Reasons, "; "), f.s.Dave.SID.String()) {
			t.Errorf("SCEP enrollment with %s after re-creating dave = %+v, %v; want denied naming the old SID %s", name, r, err, f.s.Dave.SID)
		}
	}
	// The newcomer is not locked out: he enrolls as himself.
	r, err = svc.Enroll(ctx, enrollsvc.EnrollRequest{Template: "PendUser", Account: "dave", Requester: "test", CSR: csr()})
	if err != nil || r.Status != enrollsvc.StatusPending {
		t.Errorf("Enroll for the new dave = %+v, %v; want pending", r, err)
	}
}
