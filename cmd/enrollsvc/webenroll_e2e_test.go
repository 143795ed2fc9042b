package main

// The enrollment web services (MS-XCEP / MS-WSTEP, username/password) through the real binary,
// against a real Samba AD DC, replaying the captured messages of a real client (cepces 0.3.12,
// testdata/00N_*.xml) with only the credentials — and, where a flow needs it, the request's
// token or RequestID — swapped in.

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/base64"
	"encoding/xml"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/enrollment-appliance/aeappliance/apiclient"
	"github.com/enrollment-appliance/aeappliance/config"
	"github.com/enrollment-appliance/aeappliance/ldap/ldaptest"
	"github.com/enrollment-appliance/aeappliance/proto/cmc"
	"github.com/enrollment-appliance/aeappliance/proto/cmc/cmctest"
	"github.com/enrollment-appliance/aeappliance/proto/soap/soaptest"
)

type wsClient struct {
	t    *testing.T
	hc   *http.Client
	base string
	cep  string
	ces  string
}

func newWSClient(t *testing.T, dir, caName string) *wsClient {
	addr, err := os.ReadFile(filepath.Join(dir, config.EnrollAddr))
	if err != nil {
		t.Fatalf("the enrollment web services did not start: %v", err)
	}
	_, port, _ := strings.Cut(strings.TrimSpace(string(addr)), ":")
	caPEM, _ := os.ReadFile(filepath.Join(dir, "ca.pem"))
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	base := "https://localhost:" + port // "localhost" is a default --hostname: in the server certificate
	return &wsClient{t: t, hc: &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}},
		base: base, cep: base + "/ADPolicyProvider_CEP_UsernamePassword/service.svc/CEP",
		ces: base + "/" + url.PathEscape(caName) + "_CES_UsernamePassword/service.svc/CES"}
}

// capture is a captured request with the test's credentials in place of the capture's.
func capture(t *testing.T, name, user, password string) string {
	b := soaptest.StripCapture(soaptest.ReadCapture(t, filepath.Join("testdata", name)))
	s := strings.ReplaceAll(string(b), "user@example.test", user)
	return strings.ReplaceAll(s, ">Secret123<", ">"+xmlEscape(password)+"<")
}

func xmlEscape(s string) string {
	var b bytes.Buffer
	xml.EscapeText(&b, []byte(s))
	return b.String()
}

func (c *wsClient) post(url, body string) (int, []byte) {
	c.t.Helper()
	resp, err := c.hc.Post(url, "application/soap+xml; charset=utf-8", strings.NewReader(body))
	if err != nil {
		c.t.Fatalf("POST %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// policies is the part of a GetPoliciesResponse the test reads (element names, any namespace).
type policies struct {
	Policies []struct {
		CommonName string `xml:"attributes>commonName"`
		Enroll     bool   `xml:"attributes>permission>enroll"`
		AutoEnroll bool   `xml:"attributes>permission>autoEnroll"`
		Validity   int64  `xml:"attributes>certificateValidity>validityPeriodSeconds"`
	} `xml:"Body>GetPoliciesResponse>response>policies>policy"`
	NotChanged string   `xml:"Body>GetPoliciesResponse>response>policiesNotChanged"`
	URIs       []string `xml:"Body>GetPoliciesResponse>cAs>cA>uris>cAURI>uri"`
	CACert     string   `xml:"Body>GetPoliciesResponse>cAs>cA>certificate"`
}

type rstr struct {
	Disposition string `xml:"Body>RequestSecurityTokenResponseCollection>RequestSecurityTokenResponse>DispositionMessage"`
	Leaf        string `xml:"Body>RequestSecurityTokenResponseCollection>RequestSecurityTokenResponse>RequestedSecurityToken>BinarySecurityToken"`
	RequestID   string `xml:"Body>RequestSecurityTokenResponseCollection>RequestSecurityTokenResponse>RequestID"`
	Fault       string `xml:"Body>Fault>Reason>Text"`
}

// shapeDiff compares the SOAP Body of a reply, element by element (names, order, depth,
// xsi:nil), with a captured reply a real client accepted. Headers are left out: ours carry the
// WS-Security Timestamp AD CS sends on its username/password endpoints, the captured mock did not.
func shapeDiff(t *testing.T, got []byte, captured string) string {
	t.Helper()
	g, err := soaptest.Shape(got)
	if err != nil {
		t.Fatalf("reply is not XML: %v\n%s", err, got)
	}
	w, err := soaptest.Shape(soaptest.StripCapture(soaptest.ReadCapture(t, filepath.Join("testdata", captured))))
	if err != nil {
		t.Fatal(err)
	}
	return soaptest.Diff(fromBody(g), fromBody(w), false)
}

func fromBody(nodes []soaptest.Node) []soaptest.Node {
	for i, n := range nodes {
		if n.Depth == 1 && n.Name.Local == "Body" {
			return nodes[i:]
		}
	}
	return nil
}

// templateCSR is a PKCS#10 naming its template with the v2 template extension, as Windows sends.
func templateCSR(t *testing.T, oid string) string {
	der, _ := templateCSRKey(t, oid)
	return base64.StdEncoding.EncodeToString(der)
}

func templateCSRKey(t *testing.T, oid string) ([]byte, *rsa.PrivateKey) {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	var o asn1.ObjectIdentifier
	for _, p := range strings.Split(oid, ".") {
		n, _ := strconv.Atoi(p)
		o = append(o, n)
	}
	ext, _ := asn1.Marshal(struct {
		OID          asn1.ObjectIdentifier
		Major, Minor int
	}{o, 100, 0})
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "ignored"},
		ExtraExtensions: []pkix.Extension{{Id: asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 311, 21, 7}, Value: ext}}}, k)
	if err != nil {
		t.Fatal(err)
	}
	return der, k
}

var tokenRE = regexp.MustCompile(`(?s)(<ns2:BinarySecurityToken[^>]*>).*?(</ns2:BinarySecurityToken>)`)

func TestEnrollmentWebServices(t *testing.T) {
	needSoftHSM(t)
	dc := ldaptest.StartDC(t)
	s := dc.Seed(t)
	dir := initDir(t, directoryFlags(t, dc, s)...)
	srv := startServe(t, dir)
	if !strings.Contains(srv.stdout.String(), "Enrollment web services listening on https://") {
		t.Errorf("serve printed %q, want where the enrollment web services listen", srv.stdout)
	}
	c := newWSClient(t, dir, "E2E Root CA")
	alice, bob := s.Alice, s.Bob

	t.Run("GetPolicies: exactly what alice may read and enroll", func(t *testing.T) {
		code, body := c.post(c.cep, capture(t, "001_ADPolicyProvider_CEP_UsernamePassword_service_svc_CEP.xml", alice.UPN, alice.Password))
		if code != 200 {
			t.Fatalf("GetPolicies = %d\n%s", code, body)
		}
		var p policies
		if err := xml.Unmarshal(body, &p); err != nil {
			t.Fatal(err)
		}
		got := map[string]bool{}
		for _, pol := range p.Policies {
			got[pol.CommonName] = pol.AutoEnroll
			if !pol.Enroll || pol.Validity != 365*24*3600 {
				t.Errorf("policy %s: enroll=%v validity=%d, want enroll and one year", pol.CommonName, pol.Enroll, pol.Validity)
			}
		}
		want := map[string]bool{"AEUser": true, "AEUserV2": true, "PendUser": false, "SuppliesSubject": false}
		if len(got) != len(want) {
			t.Errorf("alice's policies = %v, want %v", got, want)
		}
		for name, auto := range want {
			if a, ok := got[name]; !ok || a != auto {
				t.Errorf("alice's policies: %s present=%v autoenroll=%v, want autoenroll=%v", name, ok, a, auto)
			}
		}
		if len(p.URIs) == 0 || p.URIs[0] != c.ces {
			t.Errorf("advertised CES URIs = %v, want %s first", p.URIs, c.ces)
		}
	})

	t.Run("GetPolicies with a current lastUpdate: policiesNotChanged", func(t *testing.T) {
		withLastUpdate := func(at time.Time) string {
			body := capture(t, "001_ADPolicyProvider_CEP_UsernamePassword_service_svc_CEP.xml", alice.UPN, alice.Password)
			return strings.Replace(body, `<ns4:lastUpdate xsi:nil="true" />`, `<ns4:lastUpdate>`+at.UTC().Format(time.RFC3339)+`</ns4:lastUpdate>`, 1)
		}
		code, resp := c.post(c.cep, withLastUpdate(time.Now().Add(time.Hour)))
		var p policies
		xml.Unmarshal(resp, &p)
		if code != 200 || p.NotChanged != "true" || len(p.Policies) != 0 {
			t.Errorf("GetPolicies after the last change = %d notChanged=%q %d policies, want policiesNotChanged\n%.300s", code, p.NotChanged, len(p.Policies), resp)
		}
		code, resp = c.post(c.cep, withLastUpdate(time.Date(2001, 1, 1, 0, 0, 0, 0, time.UTC))) // before any change
		p = policies{}
		xml.Unmarshal(resp, &p)
		if code != 200 || len(p.Policies) == 0 {
			t.Errorf("GetPolicies with an old lastUpdate = %d, %d policies, want the full list", code, len(p.Policies))
		}
	})

	t.Run("wrong password: fault, no password echoed", func(t *testing.T) {
		code, body := c.post(c.cep, capture(t, "001_ADPolicyProvider_CEP_UsernamePassword_service_svc_CEP.xml", alice.UPN, "Wrong-Passw0rd!"))
		if code != http.StatusUnauthorized || !bytes.Contains(body, []byte("Fault")) || bytes.Contains(body, []byte("Wrong-Passw0rd!")) {
			t.Errorf("wrong password = %d %s, want 401 with a fault that does not echo the password", code, body)
		}
	})

	t.Run("the captured Issue names no template: refused with the reason", func(t *testing.T) {
		code, body := c.post(c.ces, capture(t, "002_MockCA_CES_UsernamePassword_service_svc_CES.xml", alice.UPN, alice.Password))
		var r rstr
		xml.Unmarshal(body, &r)
		if code == 200 || !strings.Contains(r.Fault, "template") {
			t.Errorf("captured Issue = %d %q, want a fault about the missing template", code, r.Fault)
		}
	})

	issueBody := func(t *testing.T, user, password, template string) string {
		body := capture(t, "002_MockCA_CES_UsernamePassword_service_svc_CES.xml", user, password)
		return tokenRE.ReplaceAllString(body, "${1}"+templateCSR(t, s.Templates[template].OID)+"${2}")
	}

	withToken := func(t *testing.T, user, password string, token []byte) string {
		body := capture(t, "002_MockCA_CES_UsernamePassword_service_svc_CES.xml", user, password)
		return tokenRE.ReplaceAllString(body, "${1}"+base64.StdEncoding.EncodeToString(token)+"${2}")
	}
	var aliceLeaf *x509.Certificate
	var aliceKey *rsa.PrivateKey

	t.Run("Issue for AEUser: issued to alice, reply shaped like the captured one", func(t *testing.T) {
		csr, key := templateCSRKey(t, s.Templates["AEUser"].OID)
		before := scrape(t, dir)
		code, body := c.post(c.ces, withToken(t, alice.UPN, alice.Password, csr))
		var r rstr
		if err := xml.Unmarshal(body, &r); err != nil || code != 200 || r.Disposition != "Issued" || r.RequestID == "" {
			t.Fatalf("Issue AEUser = %d %+v\n%s", code, r, body)
		}
		// One issuance over MS-WSTEP moves exactly its counters.
		movedExactly(t, before, scrape(t, dir), map[string]float64{
			`aeappliance_requests_total{protocol="wstep",result="issued",template="AEUser"}`: 1,
			`aeappliance_certificates_issued_total{protocol="wstep",template="AEUser"}`:      1,
		})
		der, err := base64.StdEncoding.DecodeString(strings.Join(strings.Fields(r.Leaf), ""))
		if err != nil {
			t.Fatal(err)
		}
		leaf, err := x509.ParseCertificate(der)
		if err != nil || !strings.Contains(string(leaf.RawSubject), "alice") || len(leaf.EmailAddresses) != 1 || leaf.EmailAddresses[0] != alice.Mail {
			t.Errorf("issued leaf = %v %v (%v), want alice's", leaf.Subject, leaf.EmailAddresses, err)
		}
		if d := shapeDiff(t, body, "004_MockCA_CES_UsernamePassword_service_svc_CES.response.xml"); d != "" {
			t.Errorf("Issued reply differs in shape from the one the client accepted:\n%s", d)
		}
		aliceLeaf, aliceKey = leaf, key
	})

	t.Run("renewal signed with alice's old key: for alice, whoever sends it", func(t *testing.T) {
		if aliceLeaf == nil {
			t.Fatal("the Issue subtest left no certificate to renew")
		}
		csr, _ := templateCSRKey(t, s.Templates["AEUser"].OID)
		token, err := cmc.SignRenewal(csr, aliceLeaf, aliceKey)
		if err != nil {
			t.Fatal(err)
		}
		code, body := c.post(c.ces, withToken(t, bob.UPN, bob.Password, token))
		var r rstr
		xml.Unmarshal(body, &r)
		der, _ := base64.StdEncoding.DecodeString(strings.Join(strings.Fields(r.Leaf), ""))
		renewed, err := x509.ParseCertificate(der)
		if code != 200 || err != nil || !bytes.Equal(renewed.RawSubject, aliceLeaf.RawSubject) || renewed.SerialNumber.Cmp(aliceLeaf.SerialNumber) == 0 {
			t.Fatalf("renewal = %d %+v (%v), want a new certificate for alice", code, r, err)
		}
		// The same renewal with its signature broken: a fault, nothing issued.
		token[len(token)-5] ^= 0xff
		code, body = c.post(c.ces, withToken(t, bob.UPN, bob.Password, token))
		if code == 200 || !bytes.Contains(body, []byte("Fault")) {
			t.Errorf("renewal with a broken signature = %d %.300s, want a fault", code, body)
		}
	})

	t.Run("certificate endpoints: alice's certificate authenticates her; renewals only", func(t *testing.T) {
		if aliceLeaf == nil {
			t.Fatal("the Issue subtest left no certificate")
		}
		tr := c.hc.Transport.(*http.Transport).Clone()
		tr.TLSClientConfig.Certificates = []tls.Certificate{{Certificate: [][]byte{aliceLeaf.Raw}, PrivateKey: aliceKey}}
		cc := &wsClient{t: t, hc: &http.Client{Transport: tr}}
		cep := c.base + "/ADPolicyProvider_CEP_Certificate/service.svc/CEP"
		ces := c.base + "/" + url.PathEscape("E2E Root CA") + "_CES_Certificate/service.svc/CES"
		// The captured message's UsernameToken (of nobody) is ignored: the certificate decides.
		code, body := cc.post(cep, capture(t, "001_ADPolicyProvider_CEP_UsernamePassword_service_svc_CEP.xml", "nobody", "x"))
		var p policies
		xml.Unmarshal(body, &p)
		if code != 200 || len(p.Policies) != 4 {
			t.Errorf("GetPolicies with alice's certificate = %d, %d policies, want 200 and alice's 4\n%.300s", code, len(p.Policies), body)
		}
		csr, _ := templateCSRKey(t, s.Templates["AEUser"].OID)
		token, err := cmc.SignRenewal(csr, aliceLeaf, aliceKey)
		if err != nil {
			t.Fatal(err)
		}
		code, body = cc.post(ces, withToken(t, "nobody", "x", token))
		var r rstr
		xml.Unmarshal(body, &r)
		if code != 200 || r.Disposition != "Issued" {
			t.Errorf("renewal over the certificate endpoint = %d %+v", code, r)
		}
		code, body = cc.post(ces, issueBody(t, "nobody", "x", "AEUser"))
		if code == 200 || !bytes.Contains(body, []byte("renewals only")) {
			t.Errorf("a new request over the certificate endpoint = %d %.300s, want refused: renewals only", code, body)
		}
		if code, _ := c.post(cep, capture(t, "001_ADPolicyProvider_CEP_UsernamePassword_service_svc_CEP.xml", alice.UPN, alice.Password)); code != http.StatusUnauthorized {
			t.Errorf("certificate endpoint without a client certificate = %d, want 401", code)
		}
	})

	// ESC6: on AD CS with EDITF_ATTRIBUTESUBJECTALTNAME2, a "SAN" request attribute becomes
	// the certificate's subject alternative name. Here request attributes never become names:
	// alice asks, in the PKCS#10's name-value pairs, for the domain administrator's UPN and a
	// DC's DNS name, and gets her own names only.
	t.Run("ESC6: a SAN request attribute never becomes a name", func(t *testing.T) {
		key, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			t.Fatal(err)
		}
		evil := "upn=Administrator@" + strings.ToLower(dc.Realm) + "&dns=dc1." + strings.ToLower(dc.Realm)
		csr := cmctest.CSR(t, key, pkix.Name{CommonName: "Administrator"},
			cmctest.NameValue(t, "CertificateTemplate", "AEUser"), cmctest.NameValue(t, "SAN", evil))
		code, body := c.post(c.ces, withToken(t, alice.UPN, alice.Password, csr))
		var r rstr
		if err := xml.Unmarshal(body, &r); err != nil || code != 200 || r.Disposition != "Issued" {
			t.Fatalf("Issue AEUser with a SAN attribute = %d %+v\n%s", code, r, body)
		}
		der, err := base64.StdEncoding.DecodeString(strings.Join(strings.Fields(r.Leaf), ""))
		if err != nil {
			t.Fatal(err)
		}
		leaf, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		if len(leaf.DNSNames) != 0 || bytes.Contains(bytes.ToLower(leaf.Raw), []byte("administrator")) ||
			!strings.Contains(string(leaf.RawSubject), "alice") || len(leaf.EmailAddresses) != 1 || leaf.EmailAddresses[0] != alice.Mail {
			t.Errorf("the certificate for alice's request with a SAN attribute: subject %v, DNS %v, e-mail %v; want alice's names only",
				leaf.Subject, leaf.DNSNames, leaf.EmailAddresses)
		}
	})

	t.Run("Issue as bob: denied by his group, fault with the reason", func(t *testing.T) {
		before := scrape(t, dir)
		code, body := c.post(c.ces, issueBody(t, bob.UPN, bob.Password, "AEUser"))
		var r rstr
		xml.Unmarshal(body, &r)
		movedExactly(t, before, scrape(t, dir), map[string]float64{
			`aeappliance_requests_total{protocol="wstep",result="refused",template="AEUser"}`: 1,
		})
		if code != 500 || !strings.Contains(r.Fault, "Denied-Group") || !bytes.Contains(body, []byte("CertificateEnrollmentWSDetail")) {
			t.Errorf("bob's Issue = %d %q, want 500 naming Denied-Group with CertificateEnrollmentWSDetail", code, r.Fault)
		}
	})

	t.Run("PendUser: pending, polled, approved, retrieved", func(t *testing.T) {
		code, body := c.post(c.ces, issueBody(t, alice.UPN, alice.Password, "PendUser"))
		var r rstr
		xml.Unmarshal(body, &r)
		if code != 200 || r.RequestID == "" || r.Disposition == "Issued" {
			t.Fatalf("Issue PendUser = %d %+v\n%s", code, r, body)
		}
		if d := shapeDiff(t, body, "002_MockCA_CES_UsernamePassword_service_svc_CES.response.xml"); d != "" {
			t.Errorf("pending reply differs in shape from the one the client accepted:\n%s", d)
		}
		// The reference is this endpoint's URL, escaped (the CA name has spaces).
		if m := regexp.MustCompile(`URI="([^"]+)"`).FindSubmatch(body); m == nil || string(m[1]) != c.ces {
			t.Errorf("pending reference = %q, want %s", m, c.ces)
		}
		poll := func(user, password string) (int, rstr, []byte) {
			b := capture(t, "004_MockCA_CES_UsernamePassword_service_svc_CES.xml", user, password)
			b = strings.Replace(b, ">1002<", ">"+r.RequestID+"<", 1)
			code, body := c.post(c.ces, b)
			var p rstr
			xml.Unmarshal(body, &p)
			return code, p, body
		}
		if code, p, body := poll(alice.UPN, alice.Password); code != 200 || p.Disposition == "Issued" {
			t.Errorf("QueryTokenStatus while pending = %d %+v\n%s", code, p, body)
		}
		if code, p, _ := poll(bob.UPN, bob.Password); code == 200 {
			t.Errorf("bob polling alice's request = %d %+v, want a fault", code, p)
		}
		var ap struct{ Status string }
		aectlJSON(t, dir, &ap, "approve", r.RequestID)
		if ap.Status != "issued" {
			t.Fatalf("approve = %+v", ap)
		}
		code, p, body := poll(alice.UPN, alice.Password)
		if code != 200 || p.Disposition != "Issued" || p.Leaf == "" {
			t.Errorf("QueryTokenStatus after approval = %d %+v\n%s", code, p, body)
		}
		if d := shapeDiff(t, body, "004_MockCA_CES_UsernamePassword_service_svc_CES.response.xml"); d != "" {
			t.Errorf("retrieved reply differs in shape from the one the client accepted:\n%s", d)
		}

		// A denied request: QueryTokenStatus answers with a fault carrying the reason.
		code, body = c.post(c.ces, issueBody(t, alice.UPN, alice.Password, "PendUser"))
		xml.Unmarshal(body, &r)
		var dn struct{ Status string }
		aectlJSON(t, dir, &dn, "deny", r.RequestID, "--reason", "no certificates for this project")
		if code, p, body := poll(alice.UPN, alice.Password); code != 500 || !strings.Contains(p.Fault, "no certificates for this project") {
			t.Errorf("QueryTokenStatus after denial = %d %+v\n%.300s", code, p, body)
		}
	})

	t.Run("malformed bodies: faults, and nothing changes", func(t *testing.T) {
		cl, err := apiclient.DialDataDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		count := func() (int64, int) {
			st, err := cl.Status(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			reqs, err := cl.Requests(context.Background(), apiclient.RequestQuery{Limit: 1000})
			if err != nil {
				t.Fatal(err)
			}
			return st.Store.Certificates, len(reqs)
		}
		certsBefore, reqsBefore := count()
		badSig, _ := templateCSRKey(t, s.Templates["AEUser"].OID)
		badSig[len(badSig)-3] ^= 0xff // inside the signature
		for name, body := range map[string]string{
			"PKCS#10 signature does not verify": withToken(t, alice.UPN, alice.Password, badSig),
			"wrong SOAP action": strings.Replace(issueBody(t, alice.UPN, alice.Password, "AEUser"),
				"enrollment/RST/wstep", "enrollment/RST/other", 1),
			"deep nesting": strings.Repeat("<a>", 2000) + strings.Repeat("</a>", 2000),
			"not XML":      "hello",
			"DOCTYPE":      `<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]><x>&e;</x>`,
			"oversized":    strings.Repeat("<a>", 1<<20),
			"bad base64":   tokenRE.ReplaceAllString(issueBody(t, alice.UPN, alice.Password, "AEUser"), "${1}!!!not base64!!!${2}"),
		} {
			code, resp := c.post(c.ces, body)
			if code == 200 || !bytes.Contains(resp, []byte("Fault")) && code != http.StatusRequestEntityTooLarge {
				t.Errorf("%s: %d %.200s, want a fault", name, code, resp)
			}
		}
		if certs, reqs := count(); certs != certsBefore || reqs != reqsBefore {
			t.Errorf("bad requests changed the store: certificates %d→%d, requests %d→%d", certsBefore, certs, reqsBefore, reqs)
		}
	})
}
