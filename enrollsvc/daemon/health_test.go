package daemon_test

import (
	"crypto/tls"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/enrollment-appliance/aeappliance/enrollsvc/daemon/daemontest"
	"github.com/enrollment-appliance/aeappliance/ldap/ldaptest"
)

// The unauthenticated health check answers from the monitor's last verdict, computed in the
// background: with the domain controller frozen (every LDAP search would hang until its timeout),
// fifty health checks (within the per-address limit) still answer at once with the verdict of the last check, and make no
// directory search, store query or HSM signature of their own.
func TestHealthIsServedFromMemory(t *testing.T) {
	dc := ldaptest.StartDC(t)
	s := dc.Seed(t)
	srv := daemontest.Start(t, dc, s, daemontest.Options{})
	hc := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: srv.Roots}}}
	health := func() (int, string) {
		t.Helper()
		resp, err := hc.Get(srv.API + "/api/v1/health")
		if err != nil {
			t.Fatalf("GET /api/v1/health: %v", err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := health(); code != http.StatusOK || !strings.Contains(body, `"healthy":true`) {
		t.Fatalf("health with everything up = %d %s", code, body)
	}
	before := srv.Runtime.Key.Signatures()
	dc.Freeze(t)
	defer dc.Thaw(t)
	for i := range 50 {
		if code, body := health(); code != http.StatusOK || !strings.Contains(body, `"healthy":true`) {
			t.Fatalf("health check %d with the DC frozen = %d %s; want the stored verdict at once", i, code, body)
		}
	}
	if n := srv.Runtime.Key.Signatures() - before; n != 0 {
		t.Errorf("50 health checks made %d signatures with the CA key", n)
	}
}
