package main

// Enrollment agents against a real Samba AD DC and the real enrollment service: a smart-card
// station (an enrollment agent whose key is in a PKCS#11 token) gets alice a certificate with
// `aeagent enroll-on-behalf`, and every way of getting it wrong is refused with its reason.

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"io"
	"math/big"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/enrollment-appliance/aeappliance/apiclient"
	"github.com/enrollment-appliance/aeappliance/enrollsvc/daemon/daemontest"
	"github.com/enrollment-appliance/aeappliance/enrollsvc/policy"
	"github.com/enrollment-appliance/aeappliance/hsm/softhsm"
	"github.com/enrollment-appliance/aeappliance/ldap/ldaptest"
	"github.com/enrollment-appliance/aeappliance/proto/cmc"
	"github.com/enrollment-appliance/aeappliance/proto/cmc/cmctest"
	"github.com/enrollment-appliance/aeappliance/proto/soap/soaptest"
)

const oidCRA = "1.3.6.1.4.1.311.20.2.1" // Certificate Request Agent

func TestEnrollOnBehalf(t *testing.T) {
	module, err := softhsm.ModulePath()
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal(err)
		}
		t.Skip(err)
	}
	dc := ldaptest.StartDC(t)
	s := dc.Seed(t)
	station := dc.AddUser(t, ldaptest.StaffOU, "station")
	leaver := dc.AddUser(t, ldaptest.StaffOU, "leaver")
	dc.AddTemplate(t, s, ldaptest.NewTemplate{CN: "EnrollmentAgent", OIDArc: 21, EKUs: []string{oidCRA},
		NameFlag: ldaptest.NameAltRequireUPN, Enroll: []ldaptest.Principal{station}})
	dc.AddTemplate(t, s, ldaptest.NewTemplate{CN: "ShortAgent", OIDArc: 22, EKUs: []string{oidCRA}, Validity: 3 * time.Second,
		NameFlag: ldaptest.NameAltRequireUPN, Enroll: []ldaptest.Principal{station}})
	dc.AddTemplate(t, s, ldaptest.NewTemplate{CN: "StationUser", OIDArc: 23, EKUs: []string{ldaptest.EKUClientAuth},
		NameFlag: ldaptest.NameAltRequireUPN, Enroll: []ldaptest.Principal{station}})
	smartcard := []string{ldaptest.EKUClientAuth, "1.3.6.1.4.1.311.20.2.2"}
	dc.AddTemplate(t, s, ldaptest.NewTemplate{CN: "SmartcardLogon", OIDArc: 24, EKUs: smartcard, Validity: 8 * time.Hour,
		NameFlag: ldaptest.NameAltRequireUPN, RASignatures: 1, RAApplicationPolicies: []string{oidCRA}, Enroll: []ldaptest.Principal{station}})
	dc.AddTemplate(t, s, ldaptest.NewTemplate{CN: "SignOnAgent", OIDArc: 26, EKUs: []string{oidCRA, ldaptest.EKUClientAuth},
		NameFlag: ldaptest.NameAltRequireUPN, Enroll: []ldaptest.Principal{station}})
	dc.AddTemplate(t, s, ldaptest.NewTemplate{CN: "DualControlLogon", OIDArc: 25, EKUs: smartcard,
		NameFlag: ldaptest.NameAltRequireUPN, RASignatures: 2, RAApplicationPolicies: []string{oidCRA}, Enroll: []ldaptest.Principal{station}})
	srv := daemontest.Start(t, dc, s, daemontest.Options{CAName: "Agents CA"})
	dc.DisableAccount(t, leaver)

	tmp := t.TempDir()
	file := func(name string) string { return filepath.Join(tmp, name) }
	write := func(name string, b []byte) string {
		t.Helper()
		if err := os.WriteFile(file(name), b, 0o600); err != nil {
			t.Fatal(err)
		}
		return file(name)
	}
	aectl := func(args ...string) (string, error) {
		out, err := exec.Command(aectlBinary, append([]string{"--data", srv.Dir}, args...)...).CombinedOutput()
		return string(out), err
	}
	newKey := func() *rsa.PrivateKey {
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	csrPEM := func(key crypto.Signer, subject pkix.Name, attrs ...cmctest.Attr) []byte {
		return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: cmctest.CSR(t, key, subject, attrs...)})
	}
	// issue has the station's own certificate issued on template by directory policy.
	issued := 0
	issue := func(template string, key crypto.Signer) (string, *x509.Certificate) {
		t.Helper()
		issued++
		name := template + "-" + strconv.Itoa(issued)
		f := write(name+".csr", csrPEM(key, pkix.Name{CommonName: "station"}))
		out, err := aectl("--json", "issue", "--template", template, "--account", "station", "--csr", f)
		var res apiclient.IssueResponse
		if err != nil || json.Unmarshal([]byte(out), &res) != nil || res.Status != "issued" {
			t.Fatalf("aectl issue %s for the station: %v\n%s", template, err, out)
		}
		blk, _ := pem.Decode([]byte(res.Certificate))
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		return write(name+".pem", []byte(res.Certificate)), c
	}
	keyFile := func(name string, k *rsa.PrivateKey) string {
		der, _ := x509.MarshalPKCS8PrivateKey(k)
		return write(name, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
	}

	// The station's agent key lives in a PKCS#11 token (SoftHSM here), put there with the
	// token's own tool; this process never opens it.
	agentKey := newKey()
	conf, pinFile := file("softhsm2.conf"), write("pin", []byte("5678\n"))
	if err := softhsm.WriteConfig(conf, file("tokens")); err != nil {
		t.Fatal(err)
	}
	hsmEnv := []string{"SOFTHSM2_CONF=" + conf}
	for _, args := range [][]string{{"--init-token", "--free", "--label", "station", "--so-pin", "1234", "--pin", "5678"},
		{"--import", keyFile("agent-import.key", agentKey), "--token", "station", "--label", "agent", "--id", "01", "--pin", "5678"}} {
		cmd := exec.Command("softhsm2-util", args...)
		cmd.Env = append(os.Environ(), hsmEnv...)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("softhsm2-util %s: %v\n%s", args[0], err, out)
		}
	}
	os.Remove(file("agent-import.key"))
	agentURI := "pkcs11:token=station;object=agent;type=private?module-path=" + module + "&pin-source=" + pinFile
	agentPEM, agentCert := issue("EnrollmentAgent", agentKey)
	if !slices.ContainsFunc(agentCert.UnknownExtKeyUsage, func(o asn1.ObjectIdentifier) bool { return o.String() == oidCRA }) {
		t.Fatalf("the agent certificate lacks the Certificate Request Agent EKU: %v", agentCert.UnknownExtKeyUsage)
	}

	pw := write("station-pw", []byte(station.Password))
	common := []string{"--server", srv.CEP("UsernamePassword"), "--auth", "password", "--user", station.UPN, "--password-file", pw,
		"--ca-file", srv.CAFile}
	n := 0
	onBehalf := func(template, target, cert, key string, csr []byte) (string, string, int) {
		t.Helper()
		n++
		out := file("out-" + string(rune('a'+n)) + ".pem")
		args := append([]string{"enroll-on-behalf", "--template", template, "--target", target, "--agent-cert", cert, "--agent-key", key,
			"--csr", write("req.csr", csr), "--out", out}, common...)
		stdout, stderr, code := aeagent(t, hsmEnv, args...)
		return out, stdout + stderr, code
	}
	target := newKey()
	// The inner request claims another name; the certificate must be alice's whatever it says.
	claims := csrPEM(target, pkix.Name{CommonName: "Administrator"})

	out, msg, code := onBehalf("SmartcardLogon", ldaptest.Domain+`\alice`, agentPEM, agentURI, claims)
	if code != 0 {
		t.Fatalf("enroll-on-behalf for alice = exit %d\n%s", code, msg)
	}
	b, _ := os.ReadFile(out)
	blk, _ := pem.Decode(b)
	cert, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	sid, hasSID, err := policy.CertificateSID(cert)
	if err != nil || !hasSID || sid != s.Alice.SID.String() {
		t.Errorf("the certificate's SID = %q (%v, %v), want alice's %s", sid, hasSID, err, s.Alice.SID)
	}
	text, _ := exec.Command("openssl", "x509", "-in", out, "-noout", "-text").CombinedOutput()
	if !strings.Contains(string(text), s.Alice.UPN) || strings.Contains(string(text), "Administrator") || strings.Contains(string(text), "station") {
		t.Errorf("the certificate does not name alice alone:\n%s", text)
	}
	if !cert.PublicKey.(*rsa.PublicKey).Equal(&target.PublicKey) {
		t.Error("the certificate is not for the target's key")
	}
	if d := cert.NotAfter.Sub(cert.NotBefore); d > 9*time.Hour {
		t.Errorf("the logon certificate lives %s, want the template's 8 hours", d)
	}

	// Refusals, each with its reason.
	plainKey := newKey()
	plainPEM, _ := issue("StationUser", plainKey)
	revokedKey := newKey()
	revokedPEM, revoked := issue("EnrollmentAgent", revokedKey)
	if out, err := aectl("revoke", revoked.SerialNumber.Text(16), "--reason", "keyCompromise"); err != nil {
		t.Fatalf("aectl revoke: %v\n%s", err, out)
	}
	shortKey := newKey()
	shortPEM, short := issue("ShortAgent", shortKey)
	foreignKey := newKey()
	foreignPEM := write("foreign.pem", foreignAgent(t, foreignKey))
	twice := csrPEM(target, pkix.Name{CommonName: "x"}, cmctest.NameValues(t, "RequesterName", ldaptest.Domain+`\bob`))
	time.Sleep(time.Until(short.NotAfter) + time.Second)

	var refusedFor []string // the reasons of the refusals, each of which must be in the audit trail
	for _, tc := range []struct {
		name, template, target, cert, key string
		csr                               []byte
		want                              string
	}{
		{"a certificate without the agent policy", "SmartcardLogon", `CORP\alice`, plainPEM, keyFile("plain.key", plainKey), claims,
			"lacks application policy " + oidCRA},
		{"a revoked agent certificate", "SmartcardLogon", `CORP\alice`, revokedPEM, keyFile("revoked.key", revokedKey), claims, "revoked"},
		{"an expired agent certificate", "SmartcardLogon", `CORP\alice`, shortPEM, keyFile("short.key", shortKey), claims, "not valid now"},
		{"another CA's certificate", "SmartcardLogon", `CORP\alice`, foreignPEM, keyFile("foreign.key", foreignKey), claims, "not issued by this CA"},
		{"fewer signatures than the template needs", "DualControlLogon", `CORP\alice`, agentPEM, agentURI, claims, "needs 2 enrollment agent signature"},
		{"a Domain Admin", "SmartcardLogon", `CORP\Administrator`, agentPEM, agentURI, claims, "is protected (Domain Admins)"},
		{"a disabled target", "SmartcardLogon", `CORP\leaver`, agentPEM, agentURI, claims, "is disabled"},
		{"the target named twice differently", "SmartcardLogon", `CORP\alice`, agentPEM, agentURI, twice, "given twice with different values"},
		{"a target of another domain", "SmartcardLogon", `OTHER\alice`, agentPEM, agentURI, claims, "the domain is not"},
	} {
		out, msg, code := onBehalf(tc.template, tc.target, tc.cert, tc.key, tc.csr)
		if code == 0 || !strings.Contains(msg, tc.want) {
			t.Errorf("%s: exit %d, want a refusal saying %q:\n%s", tc.name, code, tc.want, msg)
		}
		if _, err := os.Stat(out); err == nil {
			t.Errorf("%s: a refused request wrote %s", tc.name, out)
		}
		// The fault's ErrorCode is AD CS's for these two (CERTSRV_E_SIGNATURE_COUNT, _RESTRICTEDOFFICER).
		if hr := map[string]string{"DualControlLogon": "(0x8009480A)", `CORP\Administrator`: "(0x80094009)"}; hr[tc.template]+hr[tc.target] != "" &&
			!strings.Contains(msg, hr[tc.template]+hr[tc.target]) {
			t.Errorf("%s: the refusal does not carry %s:\n%s", tc.name, hr[tc.template]+hr[tc.target], msg)
		}
		if !strings.Contains(msg, "not a request the service can read") {
			// aeagent itself refuses to send a request naming the target twice (nothing
			// reaches the appliance, which would refuse it alike: proto/cmc's tests).
			refusedFor = append(refusedFor, tc.want)
		}
	}

	// What aeagent will not send, sent anyway (the captured Windows request with the station's
	// credentials and token): the appliance refuses it and records why.
	capture, err := os.ReadFile("../enrollsvc/testdata/002_MockCA_CES_UsernamePassword_service_svc_CES.xml")
	if err != nil {
		t.Fatal(err)
	}
	twiceToken, err := cmc.SignOnBehalf(cmctest.CSR(t, target, pkix.Name{CommonName: "x"}, cmctest.NameValues(t, "RequesterName", ldaptest.Domain+`\bob`)),
		ldaptest.Domain+`\alice`, nil, agentCert, agentKey)
	if err != nil {
		t.Fatal(err)
	}
	body := strings.ReplaceAll(string(soaptest.StripCapture(capture)), "user@example.test", station.UPN)
	body = strings.ReplaceAll(body, ">Secret123<", ">"+station.Password+"<")
	body = regexp.MustCompile(`(?s)(<ns2:BinarySecurityToken[^>]*>).*?(</ns2:BinarySecurityToken>)`).ReplaceAllString(body,
		"${1}"+base64.StdEncoding.EncodeToString(twiceToken)+"${2}")
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: srv.Roots}}}
	resp, err := hc.Post(srv.CES("UsernamePassword"), "application/soap+xml; charset=utf-8", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	fault, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(fault), "given twice with different values") {
		t.Errorf("a request naming its target twice, sent as Windows would: %d\n%s", resp.StatusCode, fault)
	}
	refusedFor = append(refusedFor, "given twice with different values")

	// The sign-on server API (Citrix FAS style): the agent certificate (Certificate Request Agent
	// and Client Authentication) over TLS, a key the server made; an ordinary certificate of the
	// same account, or the admin token, gets nothing.
	fasKey := newKey()
	fasPEM, _ := issue("SignOnAgent", fasKey)
	logon := func(certFile string, key *rsa.PrivateKey, token string) (int, apiclient.IssueResponse, string) {
		t.Helper()
		certPEM, _ := os.ReadFile(certFile)
		keyDER, _ := x509.MarshalPKCS8PrivateKey(key)
		kp, err := tls.X509KeyPair(certPEM, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}))
		if err != nil {
			t.Fatal(err)
		}
		hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: srv.Roots, Certificates: []tls.Certificate{kp}}}}
		body, _ := json.Marshal(apiclient.AgentLogonRequest{Template: "SmartcardLogon", Target: ldaptest.Domain + `\alice`,
			CSR: string(csrPEM(newKey(), pkix.Name{CommonName: "fas"}))})
		req, _ := http.NewRequest("POST", srv.API+apiclient.AgentLogonPath, bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		raw, _ := io.ReadAll(resp.Body)
		var out apiclient.IssueResponse
		json.Unmarshal(raw, &out)
		return resp.StatusCode, out, string(raw)
	}
	code, fas, raw := logon(fasPEM, fasKey, "")
	if code != http.StatusOK || fas.Status != "issued" {
		t.Fatalf("the sign-on server's logon certificate for alice: %d %s", code, raw)
	}
	blk, _ = pem.Decode([]byte(fas.Certificate))
	fasCert, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if sid, _, _ := policy.CertificateSID(fasCert); sid != s.Alice.SID.String() || fasCert.NotAfter.Sub(fasCert.NotBefore) > 9*time.Hour {
		t.Errorf("the logon certificate: SID %s, lifetime %s; want alice's, 8 hours", sid, fasCert.NotAfter.Sub(fasCert.NotBefore))
	}
	if code, _, raw := logon(plainPEM, plainKey, ""); code != http.StatusUnprocessableEntity || !strings.Contains(raw, "lacks application policy "+oidCRA) {
		t.Errorf("the same call with an ordinary certificate: %d %s", code, raw)
	}
	if code, _, raw := logon(plainPEM, plainKey, srv.APIToken); code != http.StatusUnauthorized {
		t.Errorf("the same call with the admin token: %d %s", code, raw)
	}

	// Restrictions: the station may enroll SmartcardLogon for PKI-Users only.
	if out, err := aectl("agent-restrictions", "add", "--agent", "station", "--template", "SmartcardLogon", "--target", "PKI-Users"); err != nil {
		t.Fatalf("aectl agent-restrictions add: %v\n%s", err, out)
	}
	if _, msg, code := onBehalf("SmartcardLogon", `CORP\carol`, agentPEM, agentURI, csrPEM(newKey(), pkix.Name{})); code == 0 ||
		!strings.Contains(msg, "no enrollment agent restriction lets agent station") {
		t.Errorf("carol (outside PKI-Users) once restricted: exit %d\n%s", code, msg)
	}
	if _, msg, code := onBehalf("SmartcardLogon", `CORP\alice`, agentPEM, agentURI, csrPEM(newKey(), pkix.Name{})); code != 0 {
		t.Errorf("alice (in PKI-Users through nesting) once restricted: exit %d\n%s", code, msg)
	}
	if out, err := aectl("agent-restrictions", "add", "--agent", "station", "--target", `CORP\alice`, "--deny"); err != nil {
		t.Fatalf("aectl agent-restrictions add --deny: %v\n%s", err, out)
	}
	if _, msg, code := onBehalf("SmartcardLogon", `CORP\alice`, agentPEM, agentURI, csrPEM(newKey(), pkix.Name{})); code == 0 ||
		!strings.Contains(msg, "restriction 2 denies") {
		t.Errorf("alice with a deny for her: exit %d\n%s", code, msg)
	}
	var rs []apiclient.AgentRestriction
	if out, err := aectl("--json", "agent-restrictions"); err != nil || json.Unmarshal([]byte(out), &rs) != nil || len(rs) != 2 ||
		rs[0].Agent.SID != station.SID.String() || rs[1].Targets[0].SID != s.Alice.SID.String() || !rs[1].Deny {
		t.Errorf("aectl agent-restrictions = %v\n%s", err, out)
	}

	// The audit trail names agent and target.
	cl, err := apiclient.DialDataDir(srv.Dir)
	if err != nil {
		t.Fatal(err)
	}
	evs, err := cl.Events(t.Context(), apiclient.EventQuery{Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	var onBehalfEvents int
	var refusals []string
	for _, e := range evs {
		switch {
		case e.ID == 2010 && e.Fields["agent"] == "station" && e.Fields["target"] == "alice":
			onBehalfEvents++
		case e.ID == 2005:
			b, _ := json.Marshal(e.Fields)
			refusals = append(refusals, string(b))
		}
	}
	if onBehalfEvents != 3 {
		t.Errorf("events: %d certificates issued to station on behalf of alice, want 3", onBehalfEvents)
	}
	for _, want := range refusedFor {
		if !slices.ContainsFunc(refusals, func(r string) bool { return strings.Contains(r, want) && strings.Contains(r, "station") }) {
			t.Errorf("no refusal event (2005) naming the station says %q", want)
		}
	}
}

// foreignAgent is an agent certificate (Certificate Request Agent EKU) for key from another CA,
// PEM.
func foreignAgent(t *testing.T, key *rsa.PrivateKey) []byte {
	t.Helper()
	caKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "Agents CA"}, IsCA: true, BasicConstraintsValid: true,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), KeyUsage: x509.KeyUsageCertSign}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "station"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), KeyUsage: x509.KeyUsageDigitalSignature,
		UnknownExtKeyUsage: []asn1.ObjectIdentifier{{1, 3, 6, 1, 4, 1, 311, 20, 2, 1}}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caTmpl, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}
