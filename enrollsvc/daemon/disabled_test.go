package daemon_test

import (
	"context"
	"crypto/x509/pkix"
	"strconv"
	"strings"
	"testing"

	goldap "github.com/go-ldap/ldap/v3"

	"github.com/enrollment-appliance/aeappliance/enrollsvc"
	"github.com/enrollment-appliance/aeappliance/enrollsvc/store"
)

// A disabled account gets nothing, on every path where it does not authenticate itself: the
// directory enroll call (the API's), a SCEP profile's account, the renewal of its certificate and
// the approval of its held request.
func TestDisabledAccountIsRefusedOnEveryPath(t *testing.T) {
	f := newDirFixture(t, "1ms") // the directory's answers are not cached across the change
	ctx := context.Background()
	svc := f.rt.Service
	csr := func() []byte { return rsaCSR(t, pkix.Name{CommonName: "dave.corp.example.test"}) }
	issued, err := svc.Enroll(ctx, enrollsvc.EnrollRequest{Template: "SuppliesSubject", Account: "dave", Requester: "test", CSR: csr()})
	if err != nil || issued.Status != enrollsvc.StatusIssued {
		t.Fatalf("Enroll before disabling = %+v, %v", issued, err)
	}
	held, err := svc.Enroll(ctx, enrollsvc.EnrollRequest{Template: "PendUser", Account: "dave", Requester: "test", CSR: csr()})
	if err != nil || held.Status != enrollsvc.StatusPending {
		t.Fatalf("Enroll PendUser before disabling = %+v, %v", held, err)
	}
	const challenge = "a long enough static secret"
	if _, err := svc.AddSCEPProfile(ctx, enrollsvc.SCEPProfileSpec{Name: "dave-devices", Template: "SuppliesSubject",
		Account: "dave", StaticChallenge: challenge}, "test"); err != nil {
		t.Fatal(err)
	}
	certs := func() int64 {
		n, err := f.rt.Store.CountCertificates(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	before := certs()

	conn := f.dc.Admin(t)
	res, err := conn.Search(goldap.NewSearchRequest(f.s.Dave.DN, goldap.ScopeBaseObject, goldap.NeverDerefAliases, 0, 0, false,
		"(objectClass=*)", []string{"userAccountControl"}, nil))
	if err != nil || len(res.Entries) != 1 {
		t.Fatalf("reading dave's userAccountControl: %v", err)
	}
	uac, _ := strconv.Atoi(res.Entries[0].GetAttributeValue("userAccountControl"))
	mod := goldap.NewModifyRequest(f.s.Dave.DN, nil)
	mod.Replace("userAccountControl", []string{strconv.Itoa(uac | 0x2)}) // ACCOUNTDISABLE
	if err := conn.Modify(mod); err != nil {
		t.Fatal(err)
	}

	denied := func(name string, r *enrollsvc.EnrollResult, err error) {
		t.Helper()
		if err != nil || r.Status != enrollsvc.StatusDenied || !strings.Contains(strings.Join(r.Reasons, "; "), "is disabled") {
			t.Errorf("%s for the disabled dave = %+v, %v; want denied saying the account is disabled", name, r, err)
		}
	}
	r, err := svc.Enroll(ctx, enrollsvc.EnrollRequest{Template: "SuppliesSubject", Account: "dave", Requester: "admin-api", CSR: csr()})
	denied("Enroll", r, err)
	r, err = svc.SCEPEnroll(ctx, enrollsvc.SCEPRequest{Profile: "dave-devices", TransactionID: "disabled-1", CSR: csr(), Challenge: challenge})
	denied("SCEPEnroll", r, err)
	r, err = svc.Renew(ctx, enrollsvc.RenewRequest{OldCert: issued.Certificate, CSR: csr(), Requester: "test"})
	denied("Renew", r, err)
	if _, err := svc.ApproveRequest(ctx, held.RequestID, "admin"); enrollsvc.KindOf(err) != enrollsvc.KindConflict || !strings.Contains(err.Error(), "is disabled") {
		t.Errorf("ApproveRequest for the disabled dave = %v, want a conflict saying the account is disabled", err)
	}
	if req, err := f.rt.Store.GetRequest(ctx, held.RequestID); err != nil || req.State != store.RequestPending {
		t.Errorf("the held request after the refused approval = %+v, %v; want still pending (for a manager to deny)", req, err)
	}
	if got := certs(); got != before {
		t.Errorf("%d certificates issued to the disabled account, want none", got-before)
	}
}
