package main

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/enrollment-appliance/aeappliance/apiclient"
	"github.com/enrollment-appliance/aeappliance/ldap/ldaptest"
)

// The directory-driven commands through the real binaries against a real Samba AD DC.
func TestAectlWithDirectory(t *testing.T) {
	needSoftHSM(t)
	dc := ldaptest.StartDC(t)
	s := dc.Seed(t)

	// A wrong password is caught by init, which then leaves nothing behind.
	bad := filepath.Join(t.TempDir(), "bad")
	os.WriteFile(bad, []byte("not-the-password"), 0o600)
	badDir := filepath.Join(t.TempDir(), "var")
	_, errOut, err := runBin(t, "enrollsvc", "init", "--data", badDir, "--ca-name", "X", "--ldap-url", dc.URL,
		"--ldap-ca-file", dc.CAFile, "--ldap-bind-user", s.SvcEnroll.UPN, "--ldap-password-file", bad, "--ca-cn", ldaptest.CACN)
	if err == nil || !strings.Contains(errOut, "directory") || strings.Contains(errOut, "not-the-password") {
		t.Errorf("init with a wrong directory password: %v %q, want a clear error without the password", err, errOut)
	}
	if _, err := os.Stat(badDir); err == nil {
		t.Error("a failed init left its data directory")
	}

	dir := initDir(t, directoryFlags(t, dc, s)...)
	if fi, err := os.Stat(filepath.Join(dir, "ldap", "password")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("the directory password in the data directory: %v %v, want mode 0600", fi, err)
	}
	startServe(t, dir)

	var st apiclient.Status
	aectlJSON(t, dir, &st, "status")
	if !st.Directory.Configured || !st.Directory.OK || st.Directory.CA != ldaptest.CACN {
		t.Errorf("status directory = %+v, want configured and reachable", st.Directory)
	}

	var tmpls []apiclient.Template
	aectlJSON(t, dir, &tmpls, "templates")
	byName := map[string]apiclient.Template{}
	for _, tm := range tmpls {
		byName[tm.Name] = tm
	}
	ae := byName["AEUser"]
	if len(tmpls) != len(s.Offered) || ae.Revision != "100.3" || ae.Validity != "1 year" || ae.RenewalPeriod != "6 weeks" ||
		ae.MinimalKeySize != 2048 || !contains(ae.EnrollmentFlags, "PUBLISH_TO_DS") || !contains(ae.NameFlags, "SUBJECT_ALT_REQUIRE_UPN") {
		t.Errorf("templates = %d, AEUser = %+v; want %d offered and AEUser decoded", len(tmpls), ae, len(s.Offered))
	}
	if byName["AEUserV2"].Supersedes == nil || byName["AEUserV2"].Supersedes[0] != "AEUser" {
		t.Errorf("AEUserV2 supersedes %v, want AEUser", byName["AEUserV2"].Supersedes)
	}

	var ex apiclient.Explanation
	aectlJSON(t, dir, &ex, "explain", "alice@corp.example.test", "AEUser")
	if ex.Account == nil || ex.Account.SAMAccountName != "alice" || len(ex.Templates) != 1 {
		t.Fatalf("explain alice AEUser = %+v", ex)
	}
	d := ex.Templates[0]
	if d.Outcome != "issue" || !d.Read.Allowed || !d.Enroll.Allowed || !d.Autoenroll.Allowed || d.Subject == "" || len(d.SANs) == 0 || d.Text == "" ||
		d.Enroll.Trustee != "PKI-Users" || d.Read.Trustee != "Authenticated Users" {
		t.Errorf("explain alice AEUser = %+v", d)
	}
	out, _, err := runBin(t, "aectl", "--data", dir, "explain", "bob")
	if err != nil || !strings.Contains(out, "AEUser") || !strings.Contains(out, "denied by ACE") || !strings.Contains(out, "Denied-Group") {
		t.Errorf("aectl explain bob = %v\n%s\nwant every offered template with bob's deny", err, out)
	}
	t.Logf("aectl explain bob:\n%s", out)

	csr := filepath.Join(t.TempDir(), "req.csr")
	os.WriteFile(csr, rsaCSRPEM(t), 0o600)
	var res apiclient.IssueResponse
	aectlJSON(t, dir, &res, "issue", "--template", "AEUser", "--account", "alice", "--csr", csr)
	if res.Status != "issued" || res.Serial == "" || !strings.Contains(res.Certificate, "BEGIN CERTIFICATE") {
		t.Fatalf("issue alice AEUser = %+v", res)
	}
	blk, _ := pem.Decode([]byte(res.Certificate))
	cert, _ := x509.ParseCertificate(blk.Bytes)
	if cert == nil || len(cert.EmailAddresses) != 1 || cert.EmailAddresses[0] != s.Alice.Mail {
		t.Errorf("alice's certificate e-mail SAN = %v, want %s (explain said %v)", cert.EmailAddresses, s.Alice.Mail, d.SANs)
	}

	// Denied: status denied, every reason, non-zero exit.
	out, _, err = runBin(t, "aectl", "--data", dir, "--json", "issue", "--template", "AEUser", "--account", "bob", "--csr", csr)
	var denied apiclient.IssueResponse
	if err == nil || json.Unmarshal([]byte(out), &denied) != nil || denied.Status != "denied" || len(denied.Reasons) == 0 || denied.RequestID == 0 {
		t.Errorf("issue bob AEUser = %v %q, want denied with reasons and a request id", err, out)
	}

	// Pending, listed, approved; another pending, denied with a reason.
	var p1, p2 apiclient.IssueResponse
	aectlJSON(t, dir, &p1, "issue", "--template", "PendUser", "--account", "alice", "--csr", csr)
	aectlJSON(t, dir, &p2, "issue", "--template", "PendUser", "--account", "erin", "--csr", csr)
	if p1.Status != "pending" || p2.Status != "pending" {
		t.Fatalf("PendUser = %+v / %+v, want pending", p1, p2)
	}
	var pending []apiclient.Request
	aectlJSON(t, dir, &pending, "requests", "--state", "pending")
	if len(pending) != 2 {
		t.Errorf("pending requests = %+v, want 2", pending)
	}
	var one apiclient.Request
	aectlJSON(t, dir, &one, "request", strconv.FormatInt(p1.RequestID, 10))
	if one.Held == nil || !strings.Contains(one.Held.Subject, "CN=alice") {
		t.Errorf("request %d held = %+v, want the subject alice will get", p1.RequestID, one.Held)
	}
	var ap apiclient.IssueResponse
	aectlJSON(t, dir, &ap, "approve", strconv.FormatInt(p1.RequestID, 10))
	if ap.Status != "issued" || ap.Serial == "" {
		t.Errorf("approve = %+v, want issued", ap)
	}
	if _, errOut, err := runBin(t, "aectl", "--data", dir, "deny", strconv.FormatInt(p2.RequestID, 10)); err == nil || !strings.Contains(errOut, "--reason") {
		t.Errorf("deny without --reason: %v %q, want a usage error", err, errOut)
	}
	var dn apiclient.IssueResponse
	aectlJSON(t, dir, &dn, "deny", strconv.FormatInt(p2.RequestID, 10), "--reason", "not approved for this user")
	if dn.Status != "denied" {
		t.Errorf("deny = %+v", dn)
	}
	aectlJSON(t, dir, &pending, "requests", "--state", "pending")
	if len(pending) != 0 {
		t.Errorf("pending after approve and deny = %+v, want none", pending)
	}

	// Certifried (CVE-2022-26923): a computer account whose dNSHostName was set to the domain
	// controller's (AD does not keep dNSHostName unique) gets no certificate naming the controller,
	// and the explanation names the other holder; the rightful computer is unaffected.
	dcDN, dcHost := dc.DomainController(t)
	dc.AddComputer(t, "EVIL", map[string][]string{"dNSHostName": {dcHost}})
	out, _, err = runBin(t, "aectl", "--data", dir, "--json", "issue", "--template", "AEMachine", "--account", "EVIL$", "--csr", csr)
	var evil apiclient.IssueResponse
	if err == nil || json.Unmarshal([]byte(out), &evil) != nil || evil.Status != "denied" || evil.Serial != "" ||
		!strings.Contains(strings.Join(evil.Reasons, "\n"), "also held by "+dcDN) {
		t.Errorf("issue AEMachine for a computer claiming the DC's dNSHostName %s = %v %q, want denied naming %s", dcHost, err, out, dcDN)
	}
	var ws apiclient.IssueResponse
	aectlJSON(t, dir, &ws, "issue", "--template", "AEMachine", "--account", s.WS1.Name, "--csr", csr)
	if ws.Status != "issued" {
		t.Errorf("issue AEMachine for WS1$ = %+v, want issued (it alone holds its dNSHostName)", ws)
	}
}

// directoryFlags are the init flags that point enrollsvc at dc, binding as the seeded service
// account (its password in a file of the test's).
func directoryFlags(t *testing.T, dc *ldaptest.DC, s *ldaptest.Sample) []string {
	t.Helper()
	pw := filepath.Join(t.TempDir(), "pw")
	if err := os.WriteFile(pw, []byte(s.SvcEnroll.Password), 0o600); err != nil {
		t.Fatal(err)
	}
	return []string{"--ldap-url", dc.URL, "--ldap-ca-file", dc.CAFile, "--ldap-bind-user", s.SvcEnroll.UPN,
		"--ldap-password-file", pw, "--ca-cn", ldaptest.CACN}
}

func rsaCSRPEM(t *testing.T) []byte {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "ignored"}}, k)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}
