package wsclient

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"

	goldap "github.com/go-ldap/ldap/v3"

	"github.com/enrollment-appliance/aeappliance/enrollsvc/daemon/daemontest"
	"github.com/enrollment-appliance/aeappliance/ldap/ldaptest"
)

// A user in 500 domain-local groups (each a SID in the PAC's extra SIDs) has a Negotiate token far
// larger than an ordinary user's; the Kerberos endpoints take it, and the PAC's groups count.
func TestKerberosUserInManyGroups(t *testing.T) {
	needKinit(t)
	dc := ldaptest.StartDC(t)
	s := dc.Seed(t)
	conn := dc.Admin(t)
	for i := range 500 {
		name := fmt.Sprintf("Many-%03d", i)
		req := goldap.NewAddRequest("CN="+name+","+ldaptest.GroupsOU, nil)
		req.Attribute("objectClass", []string{"group"})
		req.Attribute("sAMAccountName", []string{name})
		req.Attribute("groupType", []string{"-2147483644"}) // domain local, security
		req.Attribute("member", []string{s.Dave.DN})
		if err := conn.Add(req); err != nil {
			t.Fatalf("adding group %s: %v", name, err)
		}
	}
	service := dc.HTTPService(t, "svc-http", "HTTP/localhost")
	_, base, roots := startServer(t, dc, s, daemontest.Options{Keytab: service})
	conf := dc.Krb5Conf(t)
	ccache := filepath.Join(t.TempDir(), "ccache")
	kinitAs(t, conf, ccache, s.Dave)
	c, err := New(base+"/ADPolicyProvider_CEP_Kerberos/service.svc/CEP", KerberosAuth{CCache: ccache, Principal: s.Dave.Name, Krb5Conf: conf}, roots)
	if err != nil {
		t.Fatal(err)
	}
	p, err := c.GetPolicies(context.Background(), nil)
	if err != nil {
		t.Fatalf("GetPolicies as dave in 500 groups: %v", err)
	}
	if _, ok := p.Template("PendUser"); !ok {
		t.Errorf("dave's templates = %+v, want PendUser (dave is in PKI-Users)", p.Templates)
	}
}
