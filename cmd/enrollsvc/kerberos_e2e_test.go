package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/xml"
	"errors"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/enrollment-appliance/aeappliance/apiclient"
	"github.com/enrollment-appliance/aeappliance/ldap/ldaptest"
)

// The Kerberos endpoints through the real binary: MIT kinit and curl --negotiate, a real client
// with a real ticket from the Samba KDC, against the service keytab installed by init --keytab.
func TestEnrollmentWebServicesKerberos(t *testing.T) {
	needSoftHSM(t)
	for _, tool := range []string{"kinit", "curl"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is needed (krb5-user, curl): %v", tool, err)
		}
	}
	dc := ldaptest.StartDC(t)
	s := dc.Seed(t)
	keytab := dc.HTTPService(t, "svc-http", "HTTP/localhost")
	other := dc.HTTPService(t, "svc-other", "HTTP/other.corp.example.test")
	krb5conf := dc.Krb5Conf(t)
	dir := initDir(t, append(directoryFlags(t, dc, s), "--keytab", keytab)...)
	startServe(t, dir)
	c := newWSClient(t, dir, "E2E Root CA")
	cep := c.base + "/ADPolicyProvider_CEP_Kerberos/service.svc/CEP"
	ces := c.base + "/E2E%20Root%20CA_CES_Kerberos/service.svc/CES"

	// alice gets a ticket with MIT kinit into a private cache.
	tmp := t.TempDir()
	env := append(os.Environ(), "KRB5_CONFIG="+krb5conf, "KRB5CCNAME=FILE:"+filepath.Join(tmp, "ccache"))
	kinit := exec.Command("kinit", s.Alice.Name+"@"+ldaptest.Realm)
	kinit.Env, kinit.Stdin = env, strings.NewReader(s.Alice.Password+"\n")
	if out, err := kinit.CombinedOutput(); err != nil {
		t.Fatalf("kinit alice: %v\n%s", err, out)
	}
	curl := func(url, body string) (string, []byte) {
		t.Helper()
		f := filepath.Join(tmp, "body.xml")
		os.WriteFile(f, []byte(body), 0o600)
		cmd := exec.Command("curl", "--silent", "--show-error", "--noproxy", "*", "--max-time", "30", "--negotiate", "-u", ":",
			"--cacert", filepath.Join(dir, "ca.pem"), "-H", "Content-Type: application/soap+xml; charset=utf-8",
			"--data-binary", "@"+f, "--write-out", "\n%{http_code}", url)
		cmd.Env = env
		out, err := cmd.Output()
		if err != nil {
			var ee *exec.ExitError
			errors.As(err, &ee)
			t.Fatalf("curl --negotiate %s: %v %s", url, err, ee.Stderr)
		}
		i := bytes.LastIndexByte(out, '\n')
		return string(out[i+1:]), out[:i]
	}

	// The body's UsernameToken (of nobody) is ignored: the Kerberos ticket decides who asks.
	code, body := curl(cep, capture(t, "001_ADPolicyProvider_CEP_UsernamePassword_service_svc_CEP.xml", "nobody", "x"))
	var p policies
	xml.Unmarshal(body, &p)
	if code != "200" || len(p.Policies) != 4 {
		t.Fatalf("GetPolicies over Kerberos = %s, %d policies; want alice's 4\n%.400s", code, len(p.Policies), body)
	}
	if len(p.URIs) == 0 || p.URIs[0] != ces {
		t.Errorf("advertised URIs = %v, want the Kerberos CES %s first", p.URIs, ces)
	}

	req := capture(t, "002_MockCA_CES_UsernamePassword_service_svc_CES.xml", "nobody", "x")
	req = tokenRE.ReplaceAllString(req, "${1}"+templateCSR(t, s.Templates["AEUser"].OID)+"${2}")
	code, body = curl(ces, req)
	var r rstr
	xml.Unmarshal(body, &r)
	der, _ := base64.StdEncoding.DecodeString(strings.Join(strings.Fields(r.Leaf), ""))
	if code != "200" || r.Disposition != "Issued" || !bytes.Contains(der, []byte(s.Alice.Mail)) {
		t.Errorf("Issue over Kerberos = %s %+v, want alice's certificate\n%.400s", code, r, body)
	}

	// Without a ticket: a Negotiate challenge.
	resp, err := c.hc.Post(cep, "application/soap+xml", strings.NewReader(capture(t, "001_ADPolicyProvider_CEP_UsernamePassword_service_svc_CEP.xml", "nobody", "x")))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized || !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Negotiate") {
		t.Errorf("Kerberos endpoint without a ticket = %d %q, want 401 Negotiate", resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
	}

	// A keytab without a key for HTTP/localhost is refused by the API and changes nothing.
	cl, err := apiclient.DialDataDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	kt, _ := os.ReadFile(other)
	before, _ := os.ReadFile(filepath.Join(dir, "enroll", "http.keytab"))
	if err := cl.InstallKeytab(context.Background(), kt); err == nil {
		t.Error("installing a keytab without HTTP/localhost succeeded")
	}
	if after, _ := os.ReadFile(filepath.Join(dir, "enroll", "http.keytab")); !bytes.Equal(before, after) {
		t.Error("a refused keytab replaced the installed one")
	}
	good, _ := os.ReadFile(keytab)
	if err := cl.InstallKeytab(context.Background(), good); err != nil {
		t.Errorf("installing the good keytab again: %v", err)
	}
}
