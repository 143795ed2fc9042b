package daemon_test

import (
	"bytes"
	"context"
	"crypto/x509/pkix"
	"errors"
	"net/http"
	"strings"
	"testing"

	goldap "github.com/go-ldap/ldap/v3"

	"github.com/enrollment-appliance/aeappliance/aeagent/wsclient"
	"github.com/enrollment-appliance/aeappliance/enrollsvc/daemon/daemontest"
	"github.com/enrollment-appliance/aeappliance/ldap/ldaptest"
)

// An account whose explicit UPN equals another account's implicit UPN cannot get the other
// account's certificate over the password endpoint. mallory's userPrincipalName is
// victim@corp.example.test, which is also victim's implicit UPN (victim has no explicit one).
// Whatever name mallory binds with, what is enrolled is the object the DC authenticated, never
// victim; and a UPN two accounts hold is never put in a certificate, so mallory's own certificate
// cannot carry victim's name either.
func TestUPNCollisionOverThePasswordEndpoint(t *testing.T) {
	needSoftHSM(t)
	dc := ldaptest.StartDC(t)
	s := dc.Seed(t)
	victim := dc.AddUser(t, ldaptest.StaffOU, "victim", s.PKIUsers.DN)
	mod := goldap.NewModifyRequest(victim.DN, nil)
	mod.Delete("userPrincipalName", nil)
	if err := dc.Admin(t).Modify(mod); err != nil {
		t.Fatal(err)
	}
	mallory := dc.AddUser(t, ldaptest.StaffOU, "mallory", s.PKIUsers.DN)
	implicit := "victim@" + ldaptest.DomainDNS
	dc.SetUPNUnchecked(t, mallory.DN, implicit)
	srv := daemontest.Start(t, dc, s, daemontest.Options{CAName: "UPN Collision CA"})
	ctx := context.Background()

	issue := func(t *testing.T, user, password, template, cn string) (*wsclient.Result, error) {
		t.Helper()
		c, err := wsclient.New(srv.CEP("UsernamePassword"), wsclient.PasswordAuth{Username: user, Password: password}, srv.Roots)
		if err != nil {
			t.Fatal(err)
		}
		defer c.CloseIdleConnections()
		return c.Issue(ctx, srv.CES("UsernamePassword"), rsaCSR(t, pkix.Name{CommonName: cn}), map[string]string{"CertificateTemplate": template})
	}
	unauthorized := func(err error) bool {
		var we *wsclient.Error
		return errors.As(err, &we) && we.StatusCode == http.StatusUnauthorized
	}
	// sidOf is the account SID the certificate's SID extension (szOID_NTDS_CA_SECURITY_EXT) names.
	sidIs := func(r *wsclient.Result, want string) bool {
		return r.Certificate != nil && bytes.Contains(ext(r.Certificate, oidSIDExt), []byte(want))
	}

	for _, tc := range []struct {
		name, user, password string
		sid                  string // the only SID a certificate may carry ("" none may be issued)
	}{
		{"mallory binding with the shared UPN", implicit, mallory.Password, mallory.SID.String()},
		{"mallory binding as CORP\\victim", ldaptest.Domain + `\victim`, mallory.Password, ""},
		{"victim binding with his implicit UPN", implicit, victim.Password, victim.SID.String()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := issue(t, tc.user, tc.password, "SuppliesSubject", "laptop.corp.example.test")
			switch {
			case unauthorized(err):
				// The DC did not accept the password for the object it resolved the name to.
				t.Logf("Issue as %s: refused by the DC's bind", tc.user)
			case err != nil:
				t.Fatalf("Issue as %s: %v", tc.user, err)
			case r.Status != wsclient.StatusIssued:
				t.Logf("Issue as %s: %s (%s)", tc.user, r.Status, r.Reason)
			case tc.sid != "" && sidIs(r, tc.sid):
				t.Logf("Issue as %s: issued for %s", tc.user, tc.sid)
			default:
				t.Errorf("Issue as %s with %s's password issued a certificate whose SID extension is not %q: %x",
					tc.user, tc.name, tc.sid, ext(r.Certificate, oidSIDExt))
			}
		})
	}

	// mallory, bound by his own name, is enrolled as himself, but a template that puts the UPN in
	// the certificate refuses him: victim holds the same name implicitly.
	r, err := issue(t, ldaptest.Domain+`\mallory`, mallory.Password, "SuppliesSubject", "laptop.corp.example.test")
	if err != nil || r.Status != wsclient.StatusIssued || !sidIs(r, mallory.SID.String()) {
		t.Fatalf("SuppliesSubject for CORP\\mallory = %+v, %v; want issued with mallory's SID", r, err)
	}
	r, err = issue(t, ldaptest.Domain+`\mallory`, mallory.Password, "PendUser", "ignored")
	if err != nil || r.Status != wsclient.StatusDenied || !strings.Contains(r.Reason, "UPN "+implicit+" is also held by "+victim.DN) {
		t.Errorf("PendUser (UPN in the SAN) for CORP\\mallory = %+v, %v; want denied naming victim", r, err)
	}
}
