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

// A renewal follows the object its certificate was issued to, by the SID in the certificate's
// security extension: once dave is deleted and another account is created under his name, dave's
// certificate renews nothing, while the newcomer enrolls as himself.
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
	// While dave exists, his certificate renews (the control).
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
	// The newcomer is not locked out: he enrolls as himself.
	r, err = svc.Enroll(ctx, enrollsvc.EnrollRequest{Template: "PendUser", Account: "dave", Requester: "test", CSR: csr()})
	if err != nil || r.Status != enrollsvc.StatusPending {
		t.Errorf("Enroll for the new dave = %+v, %v; want pending", r, err)
	}
}
