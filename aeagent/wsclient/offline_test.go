package wsclient

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/enrollment-appliance/aeappliance/proto/soap"
	"github.com/enrollment-appliance/aeappliance/proto/soap/soaptest"
	"github.com/enrollment-appliance/aeappliance/proto/wstep"
	"github.com/enrollment-appliance/aeappliance/proto/xcep"
)

func readReply(t *testing.T, name string) *response {
	t.Helper()
	r, err := parseResponse(soaptest.ReadCapture(t, filepath.Join("testdata", name)))
	if err != nil {
		t.Fatalf("parseResponse(%s): %v", name, err)
	}
	return r
}

func TestParseCapturedGetPoliciesResponse(t *testing.T) {
	r := readReply(t, "001_ADPolicyProvider_CEP_UsernamePassword_service_svc_CEP.response.xml")
	if r.Body.GetPolicies == nil {
		t.Fatal("no GetPoliciesResponse in the captured reply")
	}
	p, err := r.Body.GetPolicies.policies()
	if err != nil {
		t.Fatalf("policies() = %v", err)
	}
	if p.PolicyID != "{00000000-1111-2222-3333-444444444444}" || p.FriendlyName != "Mock Policy" || p.NextUpdateHours != 8 || p.NotChanged {
		t.Errorf("policies = %+v, want the capture's ID, name, 8 hours, changed", p)
	}
	if len(p.Templates) != 1 {
		t.Fatalf("templates = %+v, want LabMachine only", p.Templates)
	}
	got := p.Templates[0]
	want := Template{Name: "LabMachine", OID: "1.3.6.1.4.1.311.21.8.1111.2222.3333.4444.5555.66.7.8", SchemaVersion: 2,
		MajorRevision: 100, MinorRevision: 2, Validity: 365 * 24 * time.Hour, RenewalPeriod: 42 * 24 * time.Hour,
		Enroll: true, Autoenroll: true, MinimalKeySize: 2048, KeySpec: 1, SubjectNameFlags: 134217728,
		EnrollmentFlags: 32, GeneralFlags: 64, CARefs: []int{0}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("template = %+v\nwant %+v", got, want)
	}
	if len(p.CAs) != 1 {
		t.Fatalf("CAs = %+v, want one", p.CAs)
	}
	ca := p.CAs[0]
	if ca.Ref != 0 || !ca.EnrollPermission || ca.Certificate.Subject.CommonName != "Mock Issuing CA" {
		t.Errorf("CA = ref %d enroll %v %v, want 0, true, Mock Issuing CA", ca.Ref, ca.EnrollPermission, ca.Certificate.Subject)
	}
	const ces = "https://localhost:8443/MockCA_CES_UsernamePassword/service.svc/CES"
	if len(ca.URIs) != 1 || ca.URIs[0] != (CAURI{Auth: AuthUsername, URI: ces, Priority: 1}) {
		t.Errorf("CA URIs = %+v", ca.URIs)
	}
	if u, err := p.EnrollmentURL(got, AuthUsername); err != nil || u != ces {
		t.Errorf("EnrollmentURL(LabMachine, 4) = %q, %v, want %s", u, err, ces)
	}
	if u, err := p.EnrollmentURL(got, AuthCertificate); err == nil {
		t.Errorf("EnrollmentURL(LabMachine, 8) = %q, want an error: no such endpoint", u)
	}
}

func TestEnrollmentURLOrder(t *testing.T) {
	p := &Policies{CAs: []CA{{Ref: 0, URIs: []CAURI{
		{Auth: AuthCertificate, URI: "https://b/renew", Priority: 1, RenewalOnly: true},
		{Auth: AuthUsername, URI: "https://b/pw", Priority: 2},
		{Auth: AuthUsername, URI: "https://a/pw", Priority: 1},
	}}, {Ref: 1, URIs: []CAURI{{Auth: AuthUsername, URI: "https://other/pw", Priority: 0}}}}}
	tmpl := Template{Name: "T", CARefs: []int{0}}
	if u, err := p.EnrollmentURL(tmpl, AuthUsername); u != "https://a/pw" || err != nil {
		t.Errorf("EnrollmentURL(T, 4) = %q, %v, want https://a/pw (lowest priority of CA 0)", u, err)
	}
	if u, _ := p.EnrollmentURL(tmpl, AuthCertificate); u != "https://b/renew" {
		t.Errorf("EnrollmentURL(T, 8) = %q, want https://b/renew", u)
	}
	if us := p.EnrollmentURLs(tmpl, AuthUsername); len(us) != 2 || us[1].URI != "https://b/pw" {
		t.Errorf("EnrollmentURLs(T, 4) = %+v", us)
	}
}

func TestParseCapturedPending(t *testing.T) {
	res, err := readReply(t, "002_MockCA_CES_UsernamePassword_service_svc_CES.response.xml").result()
	if err != nil {
		t.Fatal(err)
	}
	if res.Status != StatusPending || res.RequestID != 1002 || res.Disposition != "Taken Under Submission" ||
		res.ReferenceURI != "https://localhost:8443/MockCA_CES_UsernamePassword/service.svc/CES" || res.Certificate != nil {
		t.Errorf("result = %+v, want pending 1002 with the reference URI", res)
	}
}

func TestParseCapturedIssued(t *testing.T) {
	res, err := readReply(t, "004_MockCA_CES_UsernamePassword_service_svc_CES.response.xml").result()
	if err != nil {
		t.Fatal(err)
	}
	if res.Status != StatusIssued || res.RequestID != 1002 || res.Disposition != "Issued" || res.Certificate == nil {
		t.Fatalf("result = %+v, want issued 1002", res)
	}
	if cn := res.Certificate.Subject.CommonName; cn != "host1.example.test" {
		t.Errorf("certificate subject = %s, want host1.example.test", cn)
	}
	if len(res.Chain) != 1 || res.Chain[0].Subject.CommonName != "Mock Issuing CA" {
		t.Fatalf("chain = %v, want the Mock Issuing CA", res.Chain)
	}
	if err := res.Certificate.CheckSignatureFrom(res.Chain[0]); err != nil {
		t.Errorf("leaf not signed by the chain's CA: %v", err)
	}
}

func TestFaultClassification(t *testing.T) {
	denied := soap.Fault(true, "the request was denied: Denied-Group may not enroll", wstep.FaultDetail(-2146877422, 17, false, nil), "urn:uuid:x")
	r, err := parseResponse(denied)
	if err != nil {
		t.Fatal(err)
	}
	if err := httpError("https://h/ces", 500, r, nil, denied); err != nil {
		t.Fatalf("HTTP 500 Sender fault with detail = %v, want a refusal (nil)", err)
	}
	res, err := r.result()
	if err != nil || res.Status != StatusDenied || res.RequestID != 17 || res.ErrorCode != -2146877422 || !strings.Contains(res.Reason, "Denied-Group") {
		t.Errorf("refusal = %+v, %v", res, err)
	}

	auth := soap.Fault(true, "authentication failed", nil, "")
	r, _ = parseResponse(auth)
	err = httpError("https://h/cep", 401, r, nil, auth)
	if !errors.Is(err, ErrAuthentication) || !strings.Contains(err.Error(), "authentication failed") {
		t.Errorf("401 = %v, want ErrAuthentication", err)
	}
	unavail := soap.Fault(false, "the directory is unavailable; try again later", wstep.FaultDetail(-2147023174, 0, false, nil), "")
	r, _ = parseResponse(unavail)
	if err := httpError("https://h/ces", 503, r, nil, unavail); !errors.Is(err, ErrUnavailable) {
		t.Errorf("503 = %v, want ErrUnavailable", err)
	}
	// A Receiver fault on 500 is the server's failure, not a refusal.
	internal := soap.Fault(false, "database on fire", wstep.FaultDetail(-2147467259, 0, false, nil), "")
	r, _ = parseResponse(internal)
	var e *Error
	if err := httpError("https://h/ces", 500, r, nil, internal); !errors.As(err, &e) || e.Reason != "database on fire" {
		t.Errorf("500 Receiver = %v, want an *Error", err)
	}
	if err := httpError("https://h/ces", 404, nil, errors.New("not XML"), []byte("404 page not found\n")); !errors.As(err, &e) || e.StatusCode != 404 {
		t.Errorf("404 text = %v, want an *Error with the status", err)
	}
}

func testClient(t *testing.T, auth Auth) *Client {
	t.Helper()
	c, err := New("https://localhost:8443/ADPolicyProvider_CEP_UsernamePassword/service.svc/CEP", auth, nil)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// The requests this package writes, read back by the server's parsers.
func TestRequestsReadByServer(t *testing.T) {
	const user, password = "alice@example.test", `P<&>"w' d `
	c := testClient(t, PasswordAuth{Username: user, Password: password})
	last := time.Date(2026, 11, 23, 8, 16, 41, 0, time.UTC)
	msg, id, err := c.envelope(xcep.GetPoliciesAction, c.policyURL, getPoliciesBody(&last))
	if err != nil {
		t.Fatal(err)
	}
	env, err := soap.Parse(bytes.NewReader(msg))
	if err != nil {
		t.Fatalf("soap.Parse(GetPolicies) = %v\n%s", err, msg)
	}
	if env.MessageID != id || !strings.HasPrefix(id, "urn:uuid:") || len(id) != 45 || env.To != c.policyURL {
		t.Errorf("envelope MessageID %q (sent %q), To %q", env.MessageID, id, env.To)
	}
	if ut := env.UsernameToken; ut == nil || ut.Username != user || ut.Password != password || ut.PasswordType != soap.PasswordText || ut.Nonce == "" || ut.Created == "" {
		t.Errorf("UsernameToken = %#v, want %s with the password as text", ut, user)
	}
	req, err := xcep.ParseRequest(env)
	if err != nil || req.LastUpdate == nil || !req.LastUpdate.Equal(last) {
		t.Errorf("xcep.ParseRequest = %+v, %v, want lastUpdate %v", req, err, last)
	}
	msg, _, _ = c.envelope(xcep.GetPoliciesAction, c.policyURL, getPoliciesBody(nil))
	env, _ = soap.Parse(bytes.NewReader(msg))
	if req, err := xcep.ParseRequest(env); err != nil || req.LastUpdate != nil {
		t.Errorf("xcep.ParseRequest without lastUpdate = %+v, %v", req, err)
	}

	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "x"}}, key)
	if err != nil {
		t.Fatal(err)
	}
	ces := "https://localhost:8443/CA_CES_UsernamePassword/service.svc/CES"
	msg, _, _ = c.envelope(wstep.IssueAction, ces, issueBody(csr, wstep.ValueTypePKCS10, map[string]string{"CertificateTemplate": "AEUser", "rmd": "host<1>"}))
	env, err = soap.Parse(bytes.NewReader(msg))
	if err != nil {
		t.Fatal(err)
	}
	rst, err := wstep.ParseRequest(env)
	if err != nil || rst.RequestType != wstep.Issue || !bytes.Equal(rst.Token, csr) || rst.ValueType != wstep.ValueTypePKCS10 ||
		rst.Context["CertificateTemplate"] != "AEUser" || rst.Context["rmd"] != "host<1>" || env.To != ces {
		t.Errorf("wstep.ParseRequest(Issue) = %+v, %v", rst, err)
	}
	msg, _, _ = c.envelope(wstep.IssueAction, ces, queryBody(1002))
	env, _ = soap.Parse(bytes.NewReader(msg))
	if rst, err := wstep.ParseRequest(env); err != nil || rst.RequestType != wstep.QueryTokenStatus || rst.RequestID != "1002" {
		t.Errorf("wstep.ParseRequest(QueryTokenStatus) = %+v, %v", rst, err)
	}

	// With a client certificate, no WS-Security header at all.
	cc := &Client{policyURL: c.policyURL, auth: CertificateAuth{}, now: time.Now}
	msg, _, _ = cc.envelope(xcep.GetPoliciesAction, c.policyURL, getPoliciesBody(nil))
	if env, err := soap.Parse(bytes.NewReader(msg)); err != nil || env.UsernameToken != nil || bytes.Contains(msg, []byte("Security")) {
		t.Errorf("certificate-auth envelope = %v, %v", env, err)
	}
}

// The element structure of our requests matches the captured client's, element for element.
func TestRequestShapeMatchesCapture(t *testing.T) {
	c := testClient(t, PasswordAuth{Username: "user@example.test", Password: "Secret123"})
	ces := "https://localhost:8443/MockCA_CES_UsernamePassword/service.svc/CES"
	for _, tc := range []struct {
		capture string
		action  string
		to      string
		body    []byte
	}{
		{"001_ADPolicyProvider_CEP_UsernamePassword_service_svc_CEP.xml", xcep.GetPoliciesAction, c.policyURL, getPoliciesBody(nil)},
		{"004_MockCA_CES_UsernamePassword_service_svc_CES.xml", wstep.IssueAction, ces, queryBody(1002)},
	} {
		msg, _, err := c.envelope(tc.action, tc.to, tc.body)
		if err != nil {
			t.Fatal(err)
		}
		got, err := soaptest.Shape(msg)
		if err != nil {
			t.Fatal(err)
		}
		want, err := soaptest.Shape(soaptest.ReadCapture(t, filepath.Join("testdata", tc.capture)))
		if err != nil {
			t.Fatal(err)
		}
		want = dropEmptyToken(want)
		if d := soaptest.Diff(got, want, false); d != "" {
			t.Errorf("%s: our request differs in shape from the captured one:\n%s", tc.capture, d)
		}
	}
}

// dropEmptyToken removes the empty BinarySecurityToken cepces puts in a QueryTokenStatus.
func dropEmptyToken(nodes []soaptest.Node) []soaptest.Node {
	var out []soaptest.Node
	for _, n := range nodes {
		if n.Name.Local == "BinarySecurityToken" && n.Text == "" {
			continue
		}
		out = append(out, n)
	}
	return out
}

func TestNewRefuses(t *testing.T) {
	for _, tc := range []struct {
		url  string
		auth Auth
	}{
		{"http://localhost/ADPolicyProvider_CEP_UsernamePassword/service.svc/CEP", PasswordAuth{Username: "u", Password: "p"}},
		{"https:///nohost", PasswordAuth{Username: "u"}},
		{"https://localhost/cep", nil},
		{"https://localhost/cep", PasswordAuth{}},
		{"https://localhost/cep", CertificateAuth{}},
	} {
		if _, err := New(tc.url, tc.auth, nil); err == nil {
			t.Errorf("New(%q, %v) = nil error", tc.url, tc.auth)
		}
	}
	if s := (PasswordAuth{Username: "u", Password: "hunter2"}).String(); strings.Contains(s, "hunter2") {
		t.Errorf("PasswordAuth.String() = %q shows the password", s)
	}
}
