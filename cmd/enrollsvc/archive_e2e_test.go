package main

import (
	"encoding/json"
	"encoding/pem"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	goldap "github.com/go-ldap/ldap/v3"

	"github.com/enrollment-appliance/aeappliance/apiclient"
	"github.com/enrollment-appliance/aeappliance/ldap/ldaptest"
)

// TestKeyArchivalAndRecovery: a template that requires private key archival (AD's
// msPKI-Private-Key-Flag CT_FLAG_REQUIRE_PRIVATE_KEY_ARCHIVAL), through the real binaries against
// a Samba DC. Without a key recovery agent a key made here is refused; with one registered
// (aectl kra add: RSA, Key Recovery Agent EKU), aectl pkcs12 issue gets alice a certificate whose
// key was archived first; aectl recover gives an envelope the agent's key opens (openssl cms) with
// the very key, turned into a PKCS#12 by the documented commands. A request with the client's own
// key is still refused on such a template; no clear key is on disk.
func TestKeyArchivalAndRecovery(t *testing.T) {
	needSoftHSM(t)
	dc := ldaptest.StartDC(t)
	s := dc.Seed(t)
	admin := dc.Admin(t)
	mod := goldap.NewModifyRequest(s.Templates["AEUser"].DN, nil)
	mod.Replace("msPKI-Private-Key-Flag", []string{"1"}) // CT_FLAG_REQUIRE_PRIVATE_KEY_ARCHIVAL
	if err := admin.Modify(mod); err != nil {
		t.Fatal(err)
	}
	dir := initDir(t, directoryFlags(t, dc, s)...)
	startServe(t, dir)
	tmp := t.TempDir()
	file := func(name string) string { return filepath.Join(tmp, name) }
	openssl := func(args ...string) string { t.Helper(); return runOpenSSL(t, args...) }
	os.WriteFile(file("pw"), []byte("archived pfx password\n"), 0o600)
	issue := func(out string) (string, string, error) {
		return runBin(t, "aectl", "--data", dir, "--json", "pkcs12", "issue", "--template", "AEUser", "--account", "alice",
			"--password-file", file("pw"), "--out", out)
	}
	if _, errOut, err := issue(file("none.p12")); err == nil || !strings.Contains(errOut, "no key recovery agent") {
		t.Errorf("a key made for an archival template without an agent: %v %s", err, errOut)
	}
	if _, err := os.Stat(file("none.p12")); err == nil {
		t.Error("a refused request left its output file")
	}

	// Agents: one without the Key Recovery Agent EKU is refused.
	openssl("req", "-x509", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout", file("kra.key"), "-subj", "/CN=Recovery Agent",
		"-addext", "extendedKeyUsage=1.3.6.1.4.1.311.21.6", "-addext", "basicConstraints=critical,CA:FALSE", "-days", "30", "-out", file("kra.pem"))
	openssl("req", "-x509", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout", file("plain.key"), "-subj", "/CN=Not an agent",
		"-days", "30", "-out", file("plain.pem"))
	if _, errOut, err := runBin(t, "aectl", "--data", dir, "kra", "add", file("plain.pem")); err == nil || !strings.Contains(errOut, "Key Recovery Agent") {
		t.Errorf("aectl kra add without the EKU: %v %s", err, errOut)
	}
	var kra apiclient.KRA
	aectlJSON(t, dir, &kra, "kra", "add", file("kra.pem"))
	if len(kra.Thumbprint) != 64 || !strings.Contains(kra.Subject, "Recovery Agent") {
		t.Fatalf("aectl kra add = %+v", kra)
	}

	out, errOut, err := issue(file("alice.p12"))
	if err != nil {
		t.Fatalf("aectl pkcs12 issue on the archival template: %v\n%s%s", err, out, errOut)
	}
	var job apiclient.PKCSJob
	if err := json.Unmarshal([]byte(out), &job); err != nil || job.Serial == "" {
		t.Fatalf("aectl pkcs12 issue --json = %q: %v", out, err)
	}
	issuedKey, issuedCert := openPKCS12(t, openssl("pkcs12", "-in", file("alice.p12"), "-passin", "pass:archived pfx password", "-nodes"))

	// Recovery: the envelope opens with the agent's key only, and holds the very key.
	if _, errOut, err := runBin(t, "aectl", "--data", dir, "recover", job.Serial, "--out", file("blob.der")); err != nil {
		t.Fatalf("aectl recover: %v\n%s", err, errOut)
	}
	if out, err := exec.Command("openssl", "cms", "-decrypt", "-inform", "DER", "-in", file("blob.der"), "-inkey", file("plain.key")).CombinedOutput(); err == nil {
		t.Fatalf("another key opened the archived key:\n%s", out)
	}
	openssl("cms", "-decrypt", "-inform", "DER", "-in", file("blob.der"), "-inkey", file("kra.key"), "-out", file("key.der"))
	openssl("pkey", "-inform", "DER", "-in", file("key.der"), "-out", file("key.pem"))
	os.WriteFile(file("cert.pem"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: issuedCert.Raw}), 0o600)
	openssl("pkcs12", "-export", "-inkey", file("key.pem"), "-in", file("cert.pem"), "-passout", "pass:recovered", "-out", file("recovered.p12"))
	recKey, recCert := openPKCS12(t, openssl("pkcs12", "-in", file("recovered.p12"), "-passin", "pass:recovered", "-nodes"))
	if !recKey.Equal(issuedKey) || !recCert.Equal(issuedCert) {
		t.Fatal("the recovered key is not the key of the certificate")
	}
	if _, errOut, err := runBin(t, "aectl", "--data", dir, "recover", "1234abcd", "--out", file("nothing.der")); err == nil || !strings.Contains(errOut, "not found") {
		t.Errorf("recovering an unknown serial: %v %s", err, errOut)
	}

	// The client's own key on an archival template: refused, as no archived key comes with it.
	os.WriteFile(file("req.csr"), rsaCSRPEM(t), 0o600)
	out, _, err = runBin(t, "aectl", "--data", dir, "--json", "issue", "--template", "AEUser", "--account", "alice", "--csr", file("req.csr"))
	if err == nil || !strings.Contains(out, "requires private key archival") {
		t.Errorf("a client key on the archival template: %v %s", err, out)
	}

	counts := eventCounts(t, dir)
	for _, id := range []int{3080, 2130, 2131} {
		if counts[id] == 0 {
			t.Errorf("no event %d", id)
		}
	}
	noKeyOnDisk(t, dir, issuedKey)
}
