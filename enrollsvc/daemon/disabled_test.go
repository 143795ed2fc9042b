package daemon_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	goldap "github.com/go-ldap/ldap/v3"

	"github.com/enrollment-appliance/aeappliance/enrollsvc"
	"github.com/enrollment-appliance/aeappliance/enrollsvc/store"
	"github.com/enrollment-appliance/aeappliance/ldap/ldaptest"
)

// An account that is disabled, locked out or expired gets nothing, on every path where it does not
// authenticate itself: the directory enroll call (the API's), a SCEP profile's account, the renewal
// of its certificate and the approval of its held request. Each state is set in the Samba DC the
// way an administrator (or an attacker guessing passwords) would set it.
func TestUnusableAccountIsRefusedOnEveryPath(t *testing.T) {
	for _, tc := range []struct {
		state string                            // what the reasons say
		set   func(t *testing.T, f *dirFixture) // puts dave in that state
	}{
		{"is disabled", disable},
		{"is locked out", lockOut},
		{"expired at", expire},
	} {
		t.Run(strings.Fields(tc.state)[1], func(t *testing.T) { refusedOnEveryPath(t, tc.state, tc.set) })
	}
}

func refusedOnEveryPath(t *testing.T, state string, set func(*testing.T, *dirFixture)) {
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

	set(t, f)

	denied := func(name string, r *enrollsvc.EnrollResult, err error) {
		t.Helper()
		if err != nil || r.Status != enrollsvc.StatusDenied || !strings.Contains(strings.Join(r.Reasons, "; "), state) {
			t.Errorf("%s for dave = %+v, %v; want denied saying the account %s", name, r, err, state)
		}
	}
	r, err := svc.Enroll(ctx, enrollsvc.EnrollRequest{Template: "SuppliesSubject", Account: "dave", Requester: "admin-api", CSR: csr()})
	denied("Enroll", r, err)
	r, err = svc.SCEPEnroll(ctx, enrollsvc.SCEPRequest{Profile: "dave-devices", TransactionID: "disabled-1", CSR: csr(), Challenge: challenge})
	denied("SCEPEnroll", r, err)
	r, err = svc.Renew(ctx, enrollsvc.RenewRequest{OldCert: issued.Certificate, CSR: csr(), Requester: "test"})
	denied("Renew", r, err)
	if _, err := svc.ApproveRequest(ctx, held.RequestID, "admin"); enrollsvc.KindOf(err) != enrollsvc.KindConflict || !strings.Contains(err.Error(), state) {
		t.Errorf("ApproveRequest for dave = %v, want a conflict saying the account %s", err, state)
	}
	if req, err := f.rt.Store.GetRequest(ctx, held.RequestID); err != nil || req.State != store.RequestPending {
		t.Errorf("the held request after the refused approval = %+v, %v; want still pending (for a manager to deny)", req, err)
	}
	if got := certs(); got != before {
		t.Errorf("%d certificates issued to dave, whose account %s, want none", got-before, state)
	}
}

// disable sets ACCOUNTDISABLE in dave's userAccountControl.
func disable(t *testing.T, f *dirFixture) {
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
}

// lockOut sets the domain's lockoutThreshold to 3 and makes three simple binds as dave with a
// wrong password, as a guessing attacker would: the DC locks dave out (lockoutTime), and its
// constructed msDS-User-Account-Control-Computed says UF_LOCKOUT for lockoutDuration (30 minutes).
func lockOut(t *testing.T, f *dirFixture) {
	conn := f.dc.Admin(t)
	mod := goldap.NewModifyRequest(ldaptest.BaseDN, nil)
	mod.Replace("lockoutThreshold", []string{"3"})
	if err := conn.Modify(mod); err != nil {
		t.Fatalf("setting the domain's lockoutThreshold: %v", err)
	}
	pem, err := os.ReadFile(f.dc.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(pem)
	for range 3 {
		c, err := goldap.DialURL(f.dc.LDAPSURL, goldap.DialWithTLSConfig(&tls.Config{RootCAs: roots, ServerName: ldaptest.DCDNSName}))
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Bind(f.s.Dave.UPN, "not dave's password"); err == nil {
			t.Fatal("a bind with a wrong password succeeded")
		}
		c.Close()
	}
	res, err := conn.Search(goldap.NewSearchRequest(f.s.Dave.DN, goldap.ScopeBaseObject, goldap.NeverDerefAliases, 0, 0, false,
		"(objectClass=*)", []string{"lockoutTime"}, nil))
	if err != nil || len(res.Entries) != 1 || res.Entries[0].GetAttributeValue("lockoutTime") == "" ||
		res.Entries[0].GetAttributeValue("lockoutTime") == "0" {
		t.Fatalf("dave is not locked out after three bad passwords: %v %v", err, res)
	}
}

// expire sets dave's accountExpires to an hour ago (a FILETIME: 100 ns since 1601-01-01 UTC).
func expire(t *testing.T, f *dirFixture) {
	const epochDelta = 116444736000000000
	ft := time.Now().Add(-time.Hour).UnixNano()/100 + epochDelta
	mod := goldap.NewModifyRequest(f.s.Dave.DN, nil)
	mod.Replace("accountExpires", []string{strconv.FormatInt(ft, 10)})
	if err := f.dc.Admin(t).Modify(mod); err != nil {
		t.Fatal(err)
	}
}
