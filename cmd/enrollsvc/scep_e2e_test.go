package main

import (
	"bytes"
	"encoding/pem"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	goldap "github.com/go-ldap/ldap/v3"

	"github.com/enrollment-appliance/aeappliance/apiclient"
	"github.com/enrollment-appliance/aeappliance/config"
	scepedge "github.com/enrollment-appliance/aeappliance/enrollsvc/scep"
	"github.com/enrollment-appliance/aeappliance/ldap/ldaptest"
	"github.com/enrollment-appliance/aeappliance/proto/certutil"
	"github.com/enrollment-appliance/aeappliance/proto/scep"
	"github.com/enrollment-appliance/aeappliance/proto/scep/sceptest"
)

// SCEP through the real binaries, a real Samba AD DC and the real clients of ARCHITECTURE §11:
// Debian's scepclient and an isolated certmonger, over the plain-HTTP listener and the HTTPS
// enrollment listener; then revocation taking a published certificate out of the directory.
func TestSCEPWithDirectory(t *testing.T) {
	needSoftHSM(t)
	scepclientBin := sceptest.NeedTool(t, "scepclient")
	cm := sceptest.StartCertmonger(t)
	dc := ldaptest.StartDC(t)
	s := dc.Seed(t)
	port := freePort(t)
	base := "http://127.0.0.1:" + port
	dir := initDir(t, append(directoryFlags(t, dc, s), "--http-url", base, "--http-listen", "127.0.0.1:"+port)...)
	startServe(t, dir)
	tmp := t.TempDir()
	caFile := filepath.Join(dir, config.CACertFile)
	caCert := sceptest.ReadCert(t, caFile)
	raCert := sceptest.ReadCert(t, filepath.Join(dir, "scep", "ra-encrypt.pem")) // what requests are encrypted to
	enrollAddr, err := os.ReadFile(filepath.Join(dir, config.EnrollAddr))
	if err != nil {
		t.Fatalf("the enrollment listener did not start: %v", err)
	}
	_, enrollPort, _ := strings.Cut(strings.TrimSpace(string(enrollAddr)), ":")
	httpsBase := "https://localhost:" + enrollPort // localhost is a default --hostname

	const static = "static-Challenge-0123"
	staticFile := filepath.Join(tmp, "challenge")
	os.WriteFile(staticFile, []byte(static+"\n"), 0o600)
	addProfile := func(name string, args ...string) {
		t.Helper()
		var p apiclient.SCEPProfile
		aectlJSON(t, dir, &p, append([]string{"scep", "profile", "add", name, "--account", "dave"}, args...)...)
		if p.Name != name || p.Account != "dave" {
			t.Fatalf("aectl scep profile add %s = %+v", name, p)
		}
	}
	// scepclient 2.1.0 always encrypts with single DES: its profile must allow DES; the others
	// refuse DES and 3DES, as profiles do by default.
	addProfile("devices", "--template", "SuppliesSubject", "--static-challenge-file", staticFile, "--allow-des")
	addProfile("modern", "--template", "SuppliesSubject", "--static-challenge-file", staticFile)
	addProfile("otp", "--template", "SuppliesSubject", "--one-time")
	addProfile("pend", "--template", "PendUser", "--static-challenge-file", staticFile)
	var profiles []apiclient.SCEPProfile
	aectlJSON(t, dir, &profiles, "scep", "profiles")
	if len(profiles) != 4 {
		t.Errorf("aectl scep profiles = %+v, want 4", profiles)
	}
	for _, p := range profiles {
		if p.AllowDES != (p.Name == "devices") {
			t.Errorf("profile %s: allow_des %v", p.Name, p.AllowDES)
		}
	}
	if out, errOut, err := runBin(t, "aectl", "--data", dir, "scep", "profiles"); err != nil ||
		!regexp.MustCompile(`(?m)^devices .*accepts DES/3DES`).MatchString(out) || regexp.MustCompile(`(?m)^modern .*DES`).MatchString(out) {
		t.Errorf("aectl scep profiles does not warn of exactly the DES profiles: %v\n%s%s", err, out, errOut)
	}

	countCerts := func() int {
		var cs []apiclient.Certificate
		aectlJSON(t, dir, &cs, "certs")
		return len(cs)
	}
	// verified reads a certificate the CA issued for cn, which openssl must accept.
	verified := func(t *testing.T, path, cn string) string {
		t.Helper()
		if out, err := exec.Command("openssl", "verify", "-CAfile", caFile, path).CombinedOutput(); err != nil {
			t.Fatalf("openssl verify %s: %v\n%s", path, err, out)
		}
		c := sceptest.ReadCert(t, path)
		if c.Subject.CommonName != cn {
			t.Errorf("%s has subject %v, want CN=%s", path, c.Subject, cn)
		}
		return certutil.SerialString(c.SerialNumber)
	}
	// scepclient runs Debian's scepclient as device cn, in tmp/cn where it keeps its key, its CSR
	// (which it sends again on every run) and its certificate; with the certificate in place it
	// renews. The CA key is ECDSA: scepclient, which encrypts to every certificate of GetCACert,
	// asks for the RA's two certificates only (with -ca-fingerprint it would verify the reply with
	// the one certificate it encrypts to, which separate RA keys rule out).
	scepclient := func(env []string, url, challenge, cn string) (string, string, error) {
		device := filepath.Join(tmp, cn)
		if err := os.MkdirAll(device, 0o700); err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(device, "cert.pem")
		out, err := sceptest.Run(t, time.Minute, env, scepclientBin, "-server-url="+url, "-challenge="+challenge,
			"-private-key="+filepath.Join(device, "key.pem"), "-certificate="+path, "-cn="+cn,
			"-cacert-message="+scepedge.RAOnly)
		return path, out, err
	}
	challenge := func(subject string) string {
		var c apiclient.Challenge
		aectlJSON(t, dir, &c, "scep", "challenge", "--profile", "otp", "--subject", subject)
		if c.Challenge == "" {
			t.Fatalf("aectl scep challenge = %+v", c)
		}
		return c.Challenge
	}

	t.Run("DES refused by a default profile", func(t *testing.T) {
		before := countCerts()
		_, out, err := scepclient(nil, base+"/scep/modern", static, "scep-des-0")
		if err == nil || !strings.Contains(out, "badAlg") {
			t.Errorf("scepclient (single DES) to a profile without --allow-des: %v\n%s", err, out)
		}
		if n := countCerts(); n != before {
			t.Errorf("%d certificates issued for a DES request to a default profile", n-before)
		}
	})
	t.Run("static challenge with scepclient", func(t *testing.T) {
		scraped := scrape(t, dir)
		path, out, err := scepclient(nil, base+"/scep/devices", static, "scep-dev-1")
		if err != nil {
			t.Fatalf("scepclient: %v\n%s", err, out)
		}
		// One issuance over SCEP moves exactly its counters, and the RA key's decryption is timed.
		after := scrape(t, dir)
		movedExactly(t, scraped, after, map[string]float64{
			`aeappliance_requests_total{protocol="scep",result="issued",template="SuppliesSubject"}`: 1,
			`aeappliance_certificates_issued_total{protocol="scep",template="SuppliesSubject"}`:      1,
		})
		if d := `aeappliance_hsm_operation_duration_seconds_count{operation="decrypt"}`; after[d] <= scraped[d] {
			t.Errorf("%s did not move with a SCEP request (%v)", d, after[d])
		}
		first := verified(t, path, "scep-dev-1")
		var c apiclient.Certificate
		aectlJSON(t, dir, &c, "cert", first)
		if c.Account != "dave" || c.Template != "SuppliesSubject" {
			t.Errorf("the SCEP certificate is for %q / %q, want dave / SuppliesSubject", c.Account, c.Template)
		}
		// Again with the certificate in place: a RenewalReq signed with it, no challenge, but the
		// transaction ID (a hash of the key) and the CSR of the enrollment.
		if _, out, err := scepclient(nil, base+"/scep/devices", "", "scep-dev-1"); err != nil {
			t.Fatalf("scepclient renewal: %v\n%s", err, out)
		}
		if renewed := verified(t, path, "scep-dev-1"); renewed == first {
			t.Errorf("the renewal kept serial %s", first)
		}
		before := countCerts()
		if _, out, err := scepclient(nil, base+"/scep/devices", "wrong-Challenge-0123", "scep-dev-2"); err == nil ||
			!strings.Contains(out, "failInfo: badRequest") {
			t.Errorf("scepclient with a wrong challenge: %v\n%s", err, out)
		}
		if n := countCerts(); n != before {
			t.Errorf("%d certificates after a wrong challenge, want %d", n, before)
		}
	})

	t.Run("one-time challenges with certmonger", func(t *testing.T) {
		cm.AddCA(t, "E2E", base+"/scep/otp")
		ch := challenge("CN=cm-host-1")
		cm.Request(t, "E2E", "otp1", "cm-host-1", ch)
		verified(t, cm.CertFile("otp1"), "cm-host-1")
		before := countCerts()
		if status := cm.Submit(t, "E2E", "otp2", "cm-host-1", ch); !strings.Contains(status, "CA_REJECTED") {
			t.Errorf("certmonger reusing a one-time challenge:\n%s", status)
		}
		if status := cm.Submit(t, "E2E", "otp3", "cm-host-3", challenge("CN=other-host")); !strings.Contains(status, "CA_REJECTED") {
			t.Errorf("certmonger with a challenge bound to another subject:\n%s", status)
		}
		if n := countCerts(); n != before {
			t.Errorf("%d certificates after refused challenges, want %d", n, before)
		}
	})

	t.Run("pending, approved, polled", func(t *testing.T) {
		cm.AddCA(t, "E2EPend", base+"/scep/pend")
		if status := cm.Submit(t, "E2EPend", "pend", "dave-device", static); !strings.Contains(status, "CA_WORKING") {
			t.Fatalf("certmonger on a pending profile:\n%s", status)
		}
		var pending []apiclient.Request
		aectlJSON(t, dir, &pending, "requests", "--state", "pending")
		if len(pending) != 1 || pending[0].Account != "dave" || pending[0].Template != "PendUser" {
			t.Fatalf("pending requests = %+v, want dave's PendUser", pending)
		}
		// The GetCertInitial (CertPoll) certmonger prepared, sent with its helper. (certmonger's
		// `getcert resubmit` makes a new CSR under the same transaction ID, which is refused: a
		// transaction is bound to its CSR.)
		gic, key := cm.PendingPoll(t, "pend")
		gicMsg, err := scep.ParsePKIMessage(gic)
		if err != nil {
			t.Fatal(err)
		}
		poll := func() *scep.PKIMessage {
			t.Helper()
			rep, err := scep.ParsePKIMessage(cm.SubmitPoll(t, base+"/scep/pend", raCert, caCert, gic))
			if err != nil || rep.TransactionID != gicMsg.TransactionID {
				t.Fatalf("the CertRep to a CertPoll: %v", err)
			}
			return rep
		}
		if rep := poll(); rep.PKIStatus != scep.Pending {
			t.Errorf("CertPoll before approval: status %d, want PENDING", rep.PKIStatus)
		}
		var ap apiclient.IssueResponse
		aectlJSON(t, dir, &ap, "approve", strconv.FormatInt(pending[0].ID, 10))
		if ap.Status != "issued" {
			t.Fatalf("approve = %+v", ap)
		}
		rep := poll()
		if rep.PKIStatus != scep.Success {
			t.Fatalf("CertPoll after approval: status %d, want SUCCESS", rep.PKIStatus)
		}
		certsOnly, err := rep.Decrypt(gicMsg.Signer, key)
		if err != nil {
			t.Fatalf("opening the CertRep with certmonger's key: %v", err)
		}
		path := filepath.Join(tmp, "pend.pem")
		p7 := sceptest.WritePEM(t, tmp, "pend.p7", "PKCS7", certsOnly)
		if out, err := exec.Command("openssl", "pkcs7", "-in", p7, "-print_certs", "-out", path).CombinedOutput(); err != nil {
			t.Fatalf("openssl pkcs7: %v\n%s", err, out)
		}
		if serial := verified(t, path, "dave"); serial != ap.Serial {
			t.Errorf("the CertPoll returned serial %s, the approval issued %s", serial, ap.Serial)
		}
	})

	t.Run("over the HTTPS enrollment listener", func(t *testing.T) {
		// scepclient checks the server with Go's system roots, which SSL_CERT_FILE replaces: without
		// it, our CA is not trusted. (certmonger is not used here: its scep-submit 0.79.17 gives
		// libcurl the -R CA file for GetCACaps and GetCACert but not for PKIOperation, which then
		// fails "SSL peer certificate ... was not OK" unless the CA is in the system trust store.)
		if _, out, err := scepclient(nil, httpsBase+"/scep/devices", static, "scep-https-0"); err == nil || !strings.Contains(out, "certificate") {
			t.Errorf("scepclient trusted the enrollment listener without our CA: %v\n%s", err, out)
		}
		path, out, err := scepclient([]string{"SSL_CERT_FILE=" + caFile}, httpsBase+"/scep/devices", static, "scep-https-1")
		if err != nil {
			t.Fatalf("scepclient over HTTPS: %v\n%s", err, out)
		}
		verified(t, path, "scep-https-1")
	})

	t.Run("revocation removes the certificate from the directory", func(t *testing.T) {
		csr := filepath.Join(tmp, "alice.csr")
		os.WriteFile(csr, rsaCSRPEM(t), 0o600)
		var res apiclient.IssueResponse
		aectlJSON(t, dir, &res, "issue", "--template", "AEUser", "--account", "alice", "--csr", csr)
		if res.Status != "issued" {
			t.Fatalf("issue alice AEUser = %+v", res)
		}
		block, _ := pem.Decode([]byte(res.Certificate))
		if block == nil {
			t.Fatalf("issue printed no certificate: %+v", res)
		}
		der := block.Bytes
		admin := dc.Admin(t)
		published := func() bool {
			t.Helper()
			r, err := admin.Search(goldap.NewSearchRequest(s.Alice.DN, goldap.ScopeBaseObject, goldap.NeverDerefAliases, 0, 0, false,
				"(objectClass=*)", []string{"userCertificate"}, nil))
			if err != nil || len(r.Entries) != 1 {
				t.Fatalf("reading alice's userCertificate: %v", err)
			}
			for _, v := range r.Entries[0].GetRawAttributeValues("userCertificate") {
				if bytes.Equal(v, der) {
					return true
				}
			}
			return false
		}
		if !published() {
			t.Fatal("the AEUser certificate (PUBLISH_TO_DS) is not in alice's userCertificate")
		}
		aectlJSON(t, dir, &apiclient.Certificate{}, "revoke", res.Serial, "--reason", "superseded")
		if published() {
			t.Error("the revoked certificate is still in alice's userCertificate")
		}
		var evs []apiclient.Event
		aectlJSON(t, dir, &evs, "events", "--id", "2200")
		if len(evs) != 1 || evs[0].Fields["serial"] != res.Serial || evs[0].Fields["reason"] != "superseded" {
			t.Errorf("revocation events = %+v, want one for %s, superseded", evs, res.Serial)
		}
	})
}
