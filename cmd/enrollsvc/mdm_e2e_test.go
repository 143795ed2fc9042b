package main

import (
	"bytes"
	"context"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"io/fs"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/enrollment-appliance/aeappliance/apiclient"
	"github.com/enrollment-appliance/aeappliance/config"
	"github.com/enrollment-appliance/aeappliance/ldap/ldaptest"
	"github.com/enrollment-appliance/aeappliance/proto/certutil"
	"github.com/enrollment-appliance/aeappliance/proto/scep/sceptest"
)

// TestMDMConnectorPKCS: the MDM connector through the real binaries against a Samba AD DC.
// An administrator registers an MDM (aectl mdm add); with its own token the MDM gets alice a key
// pair made by the appliance, issued by directory policy: as a PKCS#12 for a password (opened by
// openssl pkcs12, its key matching its certificate, alice's UPN in it) and enveloped to a
// device's key (opened by openssl cms -decrypt with that key only); aectl pkcs12 issue does the
// same for the administrator. Policy refusals and bad input end without a certificate; the MDM's
// token opens nothing but the connector, and not another MDM's jobs or certificates; an MDM
// revokes its own certificate, which OCSP then says is revoked. No clear key is on disk.
func TestMDMConnectorPKCS(t *testing.T) {
	needSoftHSM(t)
	dc, s, dir, base := serveWithDirectory(t)
	tmp := t.TempDir()
	caFile := filepath.Join(dir, "ca.pem")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	write := func(name string, b []byte) string {
		p := filepath.Join(tmp, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	openssl := func(args ...string) string { t.Helper(); return runOpenSSL(t, args...) }

	// Registration: the token is printed once; the name is taken once.
	var added apiclient.MDMClientAdded
	aectlJSON(t, dir, &added, "mdm", "add", "intune-test")
	if len(added.Token) != 64 || added.Name != "intune-test" {
		t.Fatalf("aectl mdm add = %+v, want a 64-hex-digit token", added)
	}
	if _, errOut, err := runBin(t, "aectl", "--data", dir, "mdm", "add", "intune-test"); err == nil || !strings.Contains(errOut, "registered") {
		t.Errorf("adding the same MDM twice: %v %s, want a conflict", err, errOut)
	}
	var other apiclient.MDMClientAdded
	aectlJSON(t, dir, &other, "mdm", "add", "other-mdm")
	out, _, err := runBin(t, "aectl", "--data", dir, "mdm", "list")
	if err != nil || !strings.Contains(out, "intune-test") || !strings.Contains(out, "other-mdm") || strings.Contains(out, added.Token) {
		t.Errorf("aectl mdm list = %v\n%s\nwant both MDMs and no token", err, out)
	}
	admin := apiclientFor(t, dir)
	mdmCl, otherCl := mdmClient(t, dir, added.Token), mdmClient(t, dir, other.Token)

	// PKCS for a password, by the MDM.
	const password = "device pfx password 1"
	job, err := mdmCl.SubmitPKCS(ctx, apiclient.PKCSRequest{Template: "AEUser", Account: "alice", DeviceID: "iphone-0001",
		Delivery: "password", Password: password})
	if err != nil || job.State != "queued" || job.ID == "" {
		t.Fatalf("SubmitPKCS = %+v, %v; want a queued job", job, err)
	}
	if _, err := otherCl.PKCSJob(ctx, job.ID); statusOf(err) != http.StatusNotFound {
		t.Errorf("another MDM polling the job: %v, want 404", err)
	}
	job, err = mdmCl.WaitPKCS(ctx, job.ID, 100*time.Millisecond)
	if err != nil || job.State != "issued" || job.Format != "pkcs12" || len(job.Result) == 0 || job.Serial == "" {
		t.Fatalf("the PKCS job = %+v, %v; want issued with a PKCS#12", job, err)
	}
	pfx := write("alice.p12", job.Result)
	if out, err := exec.Command("openssl", "pkcs12", "-in", pfx, "-passin", "pass:not the password", "-nodes").CombinedOutput(); err == nil {
		t.Fatalf("openssl opened the PKCS#12 with a wrong password:\n%s", out)
	}
	info := openssl("pkcs12", "-in", pfx, "-passin", "pass:"+password, "-info", "-noout")
	if !strings.Contains(info, "PBES2") || !strings.Contains(info, "AES-256-CBC") || !strings.Contains(info, "sha256") {
		t.Errorf("the PKCS#12 is not PBES2/AES-256/SHA-256:\n%s", info)
	}
	aliceKey, aliceCert := openPKCS12(t, openssl("pkcs12", "-in", pfx, "-passin", "pass:"+password, "-nodes"))
	if !aliceKey.PublicKey.Equal(aliceCert.PublicKey) {
		t.Fatal("the PKCS#12's key does not match its certificate")
	}
	if got := hex.EncodeToString(aliceCert.SerialNumber.Bytes()); !strings.EqualFold(strings.TrimLeft(got, "0"), job.Serial) {
		t.Errorf("the PKCS#12 holds serial %s, the job says %s", got, job.Serial)
	}
	if len(aliceCert.EmailAddresses) != 1 || aliceCert.EmailAddresses[0] != s.Alice.Mail || aliceKey.N.BitLen() != 2048 {
		t.Errorf("alice's certificate: e-mail %v, key %d bits; want %s from the directory and 2048 bits (AEUser's minimum)",
			aliceCert.EmailAddresses, aliceKey.N.BitLen(), s.Alice.Mail)
	}
	if m, err := admin.Metrics(ctx); err != nil || !strings.Contains(string(m), `aeappliance_certificates_issued_total{protocol="mdm",template="AEUser"} 1`) {
		t.Errorf("the metrics do not count the PKCS issuance under protocol mdm (%v)", err)
	}
	if job2, err := mdmCl.PKCSJob(ctx, job.ID); err != nil || !bytes.Equal(job2.Result, job.Result) {
		t.Errorf("polling again: %v; want the same result until it expires", err)
	}

	// Enveloped to a device's key: by the MDM with the bare public key, by the administrator
	// (aectl pkcs12 issue) with the device's certificate.
	devKey := write("device.key", []byte(openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048")))
	devPub := openssl("pkey", "-in", devKey, "-pubout")
	devCert := write("device.pem", []byte(openssl("req", "-x509", "-new", "-key", devKey, "-subj", "/CN=device 0002", "-days", "1")))
	otherKey := write("other.key", []byte(openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048")))
	envJob, err := mdmCl.SubmitPKCS(ctx, apiclient.PKCSRequest{Template: "AEUser", Account: "alice", DeviceID: "android-0002",
		Delivery: "device-key", RecipientPEM: devPub})
	if err == nil {
		envJob, err = mdmCl.WaitPKCS(ctx, envJob.ID, 100*time.Millisecond)
	}
	if err != nil || envJob.State != "issued" || envJob.Format != "cms-enveloped-pkcs12" {
		t.Fatalf("the enveloped PKCS job = %+v, %v", envJob, err)
	}
	adminEnv := filepath.Join(tmp, "admin-env.der")
	out, errOut, err := runBin(t, "aectl", "--data", dir, "pkcs12", "issue", "--template", "AEUser", "--account", "alice",
		"--recipient-cert", devCert, "--out", adminEnv)
	if err != nil || !strings.Contains(out, "CMS EnvelopedData") {
		t.Fatalf("aectl pkcs12 issue --recipient-cert: %v\n%s%s", err, out, errOut)
	}
	var envKeys []*rsa.PrivateKey
	for _, env := range []string{write("mdm-env.der", envJob.Result), adminEnv} {
		inner := filepath.Join(tmp, filepath.Base(env)+".p12")
		if out, err := exec.Command("openssl", "cms", "-decrypt", "-inform", "DER", "-in", env, "-inkey", otherKey, "-out", inner).CombinedOutput(); err == nil {
			t.Fatalf("another key opened the envelope %s:\n%s", env, out)
		}
		openssl("cms", "-decrypt", "-inform", "DER", "-in", env, "-inkey", devKey, "-out", inner)
		k, c := openPKCS12(t, openssl("pkcs12", "-in", inner, "-passin", "pass:", "-nodes"))
		if !k.PublicKey.Equal(c.PublicKey) {
			t.Fatalf("the PKCS#12 in %s: its key does not match its certificate", env)
		}
		envKeys = append(envKeys, k)
	}
	pwFile := write("pfx-password", []byte(password+"\n"))
	adminPFX := filepath.Join(tmp, "admin.p12")
	if _, errOut, err := runBin(t, "aectl", "--data", dir, "pkcs12", "issue", "--template", "AEUser", "--account", "alice",
		"--password-file", pwFile, "--out", adminPFX); err != nil {
		t.Fatalf("aectl pkcs12 issue --password-file: %v\n%s", err, errOut)
	}
	adminKey, _ := openPKCS12(t, openssl("pkcs12", "-in", adminPFX, "-passin", "pass:"+password, "-nodes"))

	// Refused and bad: each ends without a certificate.
	for _, tc := range []struct {
		in   apiclient.PKCSRequest
		want string
	}{
		{apiclient.PKCSRequest{Template: "AEUser", Account: "bob", Delivery: "password", Password: password}, "denied by ACE"},
		{apiclient.PKCSRequest{Template: "PendUser", Account: "alice", Delivery: "password", Password: password}, "delivered at once"},
		{apiclient.PKCSRequest{Template: "NoSuchTemplate", Account: "alice", Delivery: "password", Password: password}, "NoSuchTemplate"},
	} {
		j, err := mdmCl.SubmitPKCS(ctx, tc.in)
		if err == nil {
			j, err = mdmCl.WaitPKCS(ctx, j.ID, 100*time.Millisecond)
		}
		if err != nil || j.State != "refused" || !strings.Contains(j.Reason, tc.want) || j.Result != nil || j.Serial != "" {
			t.Errorf("PKCS %s/%s = %+v, %v; want refused saying %q, no certificate", tc.in.Template, tc.in.Account, j, err, tc.want)
		}
	}
	// A member of Domain Admins who may enroll on the template is never an account an MDM names.
	dc.AddUser(t, ldaptest.StaffOU, "padmin", s.PKIUsers.DN, "CN=Domain Admins,CN=Users,"+dc.BaseDN)
	if j, err := mdmCl.SubmitPKCS(ctx, apiclient.PKCSRequest{Template: "AEUser", Account: "padmin", Delivery: "password", Password: password}); err != nil {
		t.Fatal(err)
	} else if j, err = mdmCl.WaitPKCS(ctx, j.ID, 100*time.Millisecond); err != nil || j.State != "refused" || !strings.Contains(j.Reason, "is protected (Domain Admins)") {
		t.Errorf("PKCS for a Domain Admin = %+v, %v; want refused as protected", j, err)
	}
	for _, in := range []apiclient.PKCSRequest{
		{Template: "AEUser", Account: "alice", Delivery: "password", Password: "short"},
		{Template: "AEUser", Account: "alice", Delivery: "device-key", RecipientPEM: "not PEM"},
		{Template: "AEUser", Account: "alice", Delivery: "clear"},
		{Template: "AEUser", Account: "alice", Delivery: "device-key", RecipientPEM: devPub, Password: password},
	} {
		if _, err := mdmCl.SubmitPKCS(ctx, in); statusOf(err) != http.StatusBadRequest {
			t.Errorf("PKCS with delivery %q: %v, want 400", in.Delivery, err)
		}
	}

	// The MDM's token opens nothing else.
	if _, err := mdmCl.Status(ctx); statusOf(err) != http.StatusForbidden {
		t.Errorf("an MDM asking for the status: %v, want 403", err)
	}
	if _, err := mdmCl.Certificates(ctx, apiclient.CertQuery{}); statusOf(err) != http.StatusForbidden {
		t.Errorf("an MDM listing certificates: %v, want 403", err)
	}
	if _, err := mdmCl.Revoke(ctx, job.Serial, "keyCompromise"); statusOf(err) != http.StatusForbidden {
		t.Errorf("an MDM calling the admin revocation: %v, want 403", err)
	}
	if _, err := mdmCl.AddMDMClient(ctx, "sneaky"); statusOf(err) != http.StatusForbidden {
		t.Errorf("an MDM registering an MDM: %v, want 403", err)
	}
	// Nor through a path that only looks like the connector's.
	caPool := x509.NewCertPool()
	caPEM, _ := os.ReadFile(caFile)
	caPool.AppendCertsFromPEM(caPEM)
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: caPool}}}
	addr, _ := os.ReadFile(config.Path(dir, config.APIAddrFile))
	for _, p := range []string{"/api/v1/mdm/../status", "/api/v1/mdm/%2e%2e/status", "/api/v1/mdm//../certificates", "/api/v1/mdm/clients/../../status"} {
		req, _ := http.NewRequest("GET", "https://"+strings.TrimSpace(string(addr))+p, nil)
		req.Header.Set("Authorization", "Bearer "+added.Token)
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			t.Errorf("an MDM's GET %s answered 200", p)
		}
	}

	// Revocation by the MDM: only its own certificates.
	if _, err := otherCl.MDMRevoke(ctx, apiclient.MDMRevokeRequest{Serial: job.Serial, Reason: "cessationOfOperation"}); statusOf(err) != http.StatusNotFound {
		t.Errorf("another MDM revoking intune-test's certificate: %v, want 404", err)
	}
	var adminSerial string
	if certs, err := admin.Certificates(ctx, apiclient.CertQuery{Account: "alice"}); err == nil {
		for _, c := range certs {
			if c.Serial != job.Serial && c.Serial != envJob.Serial {
				adminSerial = c.Serial
			}
		}
	}
	if _, err := mdmCl.MDMRevoke(ctx, apiclient.MDMRevokeRequest{Serial: adminSerial, Reason: "cessationOfOperation"}); statusOf(err) != http.StatusNotFound {
		t.Errorf("the MDM revoking the administrator's certificate %s: %v, want 404", adminSerial, err)
	}
	rc, err := mdmCl.MDMRevoke(ctx, apiclient.MDMRevokeRequest{Serial: job.Serial, Reason: "cessationOfOperation"})
	if err != nil || rc.Status != "revoked" {
		t.Fatalf("the MDM revoking its certificate: %+v, %v", rc, err)
	}
	envPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: mustCert(t, admin, envJob.Serial).Raw})
	sum := sha256.Sum256(mustCert(t, admin, envJob.Serial).Raw)
	if _, err := mdmCl.MDMRevoke(ctx, apiclient.MDMRevokeRequest{Thumbprint: hex.EncodeToString(sum[:]), Reason: "superseded"}); err != nil {
		t.Errorf("the MDM revoking by thumbprint: %v", err)
	}
	alicePEM := write("alice.pem", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: aliceCert.Raw}))
	envFile := write("env.pem", envPEM)
	for _, f := range []string{alicePEM, envFile} {
		out := openssl("ocsp", "-issuer", caFile, "-cert", f, "-url", base+"/ocsp", "-CAfile", caFile)
		if !strings.Contains(out, "Response verify OK") || !strings.Contains(out, f+": revoked") {
			t.Errorf("OCSP for the certificate the MDM revoked:\n%s", out)
		}
	}

	// Audited with the MDM's name.
	evs, err := admin.Events(ctx, apiclient.EventQuery{Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	seen := map[int]bool{}
	for _, e := range evs {
		if m, _ := e.Fields["mdm"].(string); m == "intune-test" {
			seen[e.ID] = true
		}
	}
	for _, id := range []int{4000, 4002, 4100, 4101, 4102, 4104, 4300} {
		if !seen[id] {
			t.Errorf("no event %d naming intune-test", id)
		}
	}

	// Removed: the token opens nothing.
	if _, _, err := runBin(t, "aectl", "--data", dir, "mdm", "remove", "intune-test"); err != nil {
		t.Fatal(err)
	}
	if _, err := mdmCl.PKCSJob(ctx, job.ID); statusOf(err) != http.StatusUnauthorized {
		t.Errorf("a removed MDM's token: %v, want 401", err)
	}

	// No clear key anywhere in the data directory (the store, its log, everything).
	noKeyOnDisk(t, dir, append([]*rsa.PrivateKey{aliceKey, adminKey}, envKeys...)...)
}

// mdmClient is an API client of the service in dir with an MDM's token.
func mdmClient(t *testing.T, dir, token string) *apiclient.Client {
	t.Helper()
	caPEM, err := os.ReadFile(filepath.Join(dir, config.CACertFile))
	if err != nil {
		t.Fatal(err)
	}
	addr, err := os.ReadFile(config.Path(dir, config.APIAddrFile))
	if err != nil {
		t.Fatal(err)
	}
	cl, err := apiclient.NewClient(strings.TrimSpace(string(addr)), token, caPEM)
	if err != nil {
		t.Fatal(err)
	}
	return cl
}

// serveWithDirectory serves a data directory made against a seeded Samba DC, with the plain-HTTP
// listener (OCSP, CRLs, SCEP) at base.
func serveWithDirectory(t *testing.T) (dc *ldaptest.DC, s *ldaptest.Sample, dir, base string) {
	t.Helper()
	dc = ldaptest.StartDC(t)
	s = dc.Seed(t)
	port := freePort(t)
	base = "http://127.0.0.1:" + port
	dir = initDir(t, append(directoryFlags(t, dc, s), "--http-url", base, "--http-listen", "127.0.0.1:"+port)...)
	startServe(t, dir)
	return dc, s, dir, base
}

// noKeyOnDisk fails t when any file under dir holds one of keys in clear (keyTrace).
func noKeyOnDisk(t *testing.T, dir string, keys ...*rsa.PrivateKey) {
	t.Helper()
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		for i, k := range keys {
			if where := keyTrace(b, k); where != "" {
				t.Errorf("%s holds key %d's %s", p, i, where)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// eventCounts counts the service's audit events by ID.
func eventCounts(t *testing.T, dir string) map[int]int {
	t.Helper()
	evs, err := apiclientFor(t, dir).Events(t.Context(), apiclient.EventQuery{Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	counts := map[int]int{}
	for _, e := range evs {
		counts[e.ID]++
	}
	return counts
}

// runOpenSSL runs openssl and returns what it printed; a failure fails t.
func runOpenSSL(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command("openssl", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("openssl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// openPKCS12 reads the key and the leaf certificate openssl pkcs12 -nodes printed.
func openPKCS12(t *testing.T, text string) (*rsa.PrivateKey, *x509.Certificate) {
	t.Helper()
	var key *rsa.PrivateKey
	var leaf *x509.Certificate
	rest := []byte(text)
	for {
		var blk *pem.Block
		blk, rest = pem.Decode(rest)
		if blk == nil {
			break
		}
		switch blk.Type {
		case "PRIVATE KEY":
			k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
			if err != nil {
				t.Fatal(err)
			}
			key, _ = k.(*rsa.PrivateKey)
		case "CERTIFICATE":
			c, err := x509.ParseCertificate(blk.Bytes)
			if err != nil {
				t.Fatal(err)
			}
			if !c.IsCA {
				leaf = c
			}
		}
	}
	if key == nil || leaf == nil {
		t.Fatalf("openssl pkcs12 printed no RSA key or no leaf certificate:\n%s", text)
	}
	return key, leaf
}

// keyTrace says where b holds k in a form a key is stored in: its primes or private exponent
// as raw bytes (any DER encoding), or a stretch of the base64 of its PKCS#1 or PKCS#8 DER (PEM).
func keyTrace(b []byte, k *rsa.PrivateKey) string {
	if bytes.Contains(b, k.Primes[0].Bytes()) || bytes.Contains(b, k.Primes[1].Bytes()) {
		return "prime"
	}
	if bytes.Contains(b, k.D.Bytes()) {
		return "private exponent"
	}
	p8, _ := x509.MarshalPKCS8PrivateKey(k)
	for _, der := range [][]byte{x509.MarshalPKCS1PrivateKey(k), p8} {
		enc := base64.StdEncoding.EncodeToString(der)
		line := len(enc) / 128 * 64 // a whole 64-character PEM line from the middle
		if bytes.Contains(b, []byte(enc[line:line+64])) {
			return "PEM"
		}
	}
	return ""
}

func statusOf(err error) int {
	var he *apiclient.HTTPError
	if errors.As(err, &he) {
		return he.StatusCode
	}
	return 0
}

func mustCert(t *testing.T, cl *apiclient.Client, serial string) *x509.Certificate {
	t.Helper()
	c, err := cl.Certificate(context.Background(), serial)
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode([]byte(c.PEM))
	if blk == nil {
		t.Fatalf("certificate %s has no PEM", serial)
	}
	cert, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

// TestMDMImportedPKCS: a user's existing S/MIME key, encrypted by openssl to the appliance's
// import certificate, is kept encrypted to the HSM's import key and re-encrypted for two of the
// user's devices, each opening it with its own key only (openssl cms -decrypt) and finding the
// very key imported. An upload encrypted to another key, with a wrong password, or for another
// user's address is refused; another MDM cannot have it delivered; no clear key is on disk.
func TestMDMImportedPKCS(t *testing.T) {
	needSoftHSM(t)
	_, s, dir, _ := serveWithDirectory(t)
	tmp := t.TempDir()
	ctx := t.Context()
	openssl := func(args ...string) string { t.Helper(); return runOpenSSL(t, args...) }
	file := func(name string) string { return filepath.Join(tmp, name) }
	var m1, m2 apiclient.MDMClientAdded
	aectlJSON(t, dir, &m1, "mdm", "add", "mdm-one")
	aectlJSON(t, dir, &m2, "mdm", "add", "mdm-two")
	one, two := mdmClient(t, dir, m1.Token), mdmClient(t, dir, m2.Token)

	importPEM, err := one.MDMImportCertificate(ctx)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(file("import.pem"), []byte(importPEM), 0o600)
	if out := openssl("x509", "-in", file("import.pem"), "-noout", "-text"); !strings.Contains(out, "Key Encipherment") || strings.Contains(out, "Digital Signature") {
		t.Errorf("the import certificate is not for key encipherment only:\n%s", out)
	}
	// Alice's existing S/MIME key and certificate (from another CA), and Bob's.
	smime := func(user, mail string) (keyFile, p7m string) {
		keyFile = file(user + ".key")
		os.WriteFile(keyFile, []byte(openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048")), 0o600)
		openssl("req", "-x509", "-new", "-key", keyFile, "-subj", "/CN="+user, "-addext", "subjectAltName=email:"+mail,
			"-addext", "basicConstraints=critical,CA:FALSE", "-addext", "keyUsage=digitalSignature,keyEncipherment",
			"-days", "30", "-out", file(user+".pem"))
		openssl("pkcs12", "-export", "-inkey", keyFile, "-in", file(user+".pem"), "-passout", "pass:user pfx pw", "-out", file(user+".p12"))
		p7m = file(user + ".p7m")
		openssl("cms", "-encrypt", "-binary", "-aes256", "-in", file(user+".p12"), "-outform", "DER", "-out", p7m, file("import.pem"))
		return keyFile, p7m
	}
	aliceKeyFile, aliceP7M := smime("alice", s.Alice.Mail)
	_, bobP7M := smime("bob", s.Bob.Mail)
	readEnv := func(p string) []byte {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	// Encrypted to another key: a certificate of our own.
	openssl("req", "-x509", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout", file("stranger.key"), "-subj", "/CN=stranger",
		"-days", "1", "-out", file("stranger.pem"))
	openssl("cms", "-encrypt", "-binary", "-aes256", "-in", file("alice.p12"), "-outform", "DER", "-out", file("stranger.p7m"), file("stranger.pem"))

	for _, tc := range []struct {
		in   apiclient.MDMImportRequest
		want string
	}{
		{apiclient.MDMImportRequest{Account: "alice", Envelope: readEnv(file("stranger.p7m")), Password: "user pfx pw"}, "not encrypted to this appliance's import certificate"},
		{apiclient.MDMImportRequest{Account: "alice", Envelope: readEnv(aliceP7M), Password: "wrong"}, "does not open"},
		{apiclient.MDMImportRequest{Account: "alice", Envelope: readEnv(bobP7M), Password: "user pfx pw"}, "not alice's address"},
		{apiclient.MDMImportRequest{Account: "alice", Envelope: []byte("not DER"), Password: "user pfx pw"}, "not a CMS EnvelopedData"},
	} {
		if _, err := one.ImportKey(ctx, tc.in); statusOf(err) != http.StatusBadRequest || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("import: %v, want 400 saying %q", err, tc.want)
		}
	}
	im, err := one.ImportKey(ctx, apiclient.MDMImportRequest{Account: "alice", Envelope: readEnv(aliceP7M), Password: "user pfx pw"})
	if err != nil || im.Account != "alice" || im.Email != s.Alice.Mail {
		t.Fatalf("import alice's key: %+v, %v", im, err)
	}
	if _, err := one.ImportKey(ctx, apiclient.MDMImportRequest{Account: "alice", Envelope: readEnv(aliceP7M), Password: "user pfx pw"}); statusOf(err) != http.StatusConflict {
		t.Errorf("importing the same certificate again: %v, want 409", err)
	}
	if list, err := two.Imports(ctx, "alice"); err != nil || len(list) != 0 {
		t.Errorf("another MDM lists %v, %v; want none", list, err)
	}

	aliceKey := readRSAKey(t, aliceKeyFile)
	// Two devices: one named by its public key, one by its certificate.
	devKey1 := file("dev1.key")
	os.WriteFile(devKey1, []byte(openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048")), 0o600)
	openssl("req", "-x509", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout", file("dev2.key"), "-subj", "/CN=dev2", "-days", "1", "-out", file("dev2.pem"))
	recipients := map[string]string{devKey1: openssl("pkey", "-in", devKey1, "-pubout"), file("dev2.key"): string(readEnv(file("dev2.pem")))}
	if _, err := two.DeliverImport(ctx, im.ID, apiclient.MDMDeliverRequest{RecipientPEM: recipients[devKey1]}); statusOf(err) != http.StatusNotFound {
		t.Errorf("another MDM delivering mdm-one's import: %v, want 404", err)
	}
	for devKey, recipient := range recipients {
		d, err := one.DeliverImport(ctx, im.ID, apiclient.MDMDeliverRequest{DeviceID: filepath.Base(devKey), RecipientPEM: recipient})
		if err != nil {
			t.Fatalf("deliver to %s: %v", devKey, err)
		}
		env := file(filepath.Base(devKey) + ".der")
		os.WriteFile(env, d.Result, 0o600)
		if out, err := exec.Command("openssl", "cms", "-decrypt", "-inform", "DER", "-in", env, "-inkey", file("stranger.key")).CombinedOutput(); err == nil {
			t.Fatalf("a stranger's key opened the delivery:\n%s", out)
		}
		inner := env + ".p12"
		openssl("cms", "-decrypt", "-inform", "DER", "-in", env, "-inkey", devKey, "-out", inner)
		k, c := openPKCS12(t, openssl("pkcs12", "-in", inner, "-passin", "pass:", "-nodes"))
		if !k.Equal(aliceKey) || len(c.EmailAddresses) != 1 || c.EmailAddresses[0] != s.Alice.Mail {
			t.Errorf("the device %s got another key or certificate (%v)", devKey, c.EmailAddresses)
		}
	}
	// The administrator's aectl does the same.
	if out, errOut, err := runBin(t, "aectl", "--data", dir, "mdm", "deliver", im.ID, "--recipient-cert", file("dev2.pem"), "--out", file("admin.der")); err != nil {
		t.Errorf("aectl mdm deliver: %v\n%s%s", err, out, errOut)
	}

	if counts := eventCounts(t, dir); counts[4200] != 1 || counts[4201] != 3 {
		t.Errorf("events 4200 x%d, 4201 x%d; want 1 import and 3 deliveries", counts[4200], counts[4201])
	}
	noKeyOnDisk(t, dir, aliceKey)
}

func readRSAKey(t *testing.T, path string) *rsa.PrivateKey {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		t.Fatalf("%s: no PEM", path)
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	rk, ok := k.(*rsa.PrivateKey)
	if !ok {
		t.Fatalf("%s: not RSA", path)
	}
	return rk
}

// TestMDMClientCertificate: an MDM authenticated by a client certificate this CA issued to it
// (aectl mdm cert) reaches the connector and nothing else; removing the MDM revokes the
// certificate, which then opens nothing; a certificate of this CA not issued to an MDM opens
// nothing either.
func TestMDMClientCertificate(t *testing.T) {
	needSoftHSM(t)
	_, _, dir, _ := serveWithDirectory(t)
	tmp := t.TempDir()
	file := func(name string) string { return filepath.Join(tmp, name) }
	var added apiclient.MDMClientAdded
	aectlJSON(t, dir, &added, "mdm", "add", "cert-mdm")
	runOpenSSL(t, "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", file("mdm.key"),
		"-subj", "/CN=whatever the MDM asks", "-out", file("mdm.csr"))
	if out, errOut, err := runBin(t, "aectl", "--data", dir, "mdm", "cert", "cert-mdm", "--csr", file("mdm.csr"), "--out", file("mdm.pem")); err != nil {
		t.Fatalf("aectl mdm cert: %v\n%s%s", err, out, errOut)
	}
	if text := runOpenSSL(t, "x509", "-in", file("mdm.pem"), "-noout", "-subject", "-ext", "extendedKeyUsage"); !strings.Contains(text, "CN = MDM cert-mdm") ||
		!strings.Contains(text, "TLS Web Client Authentication") {
		t.Errorf("the MDM's certificate:\n%s", text)
	}
	// Another certificate of this CA (a server profile), not issued to an MDM.
	runOpenSSL(t, "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", file("other.key"),
		"-subj", "/CN=other.example.test", "-addext", "subjectAltName=DNS:other.example.test", "-out", file("other.csr"))
	var other apiclient.IssueResponse
	aectlJSON(t, dir, &other, "issue", "--csr", file("other.csr"), "--profile", "client")
	os.WriteFile(file("other.pem"), []byte(other.Certificate), 0o600)

	caPEM, _ := os.ReadFile(filepath.Join(dir, config.CACertFile))
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(caPEM)
	addr, _ := os.ReadFile(config.Path(dir, config.APIAddrFile))
	call := func(certFile, keyFile, method, path, body string) int {
		t.Helper()
		kp, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			t.Fatal(err)
		}
		hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, Certificates: []tls.Certificate{kp}}}}
		req, _ := http.NewRequest(method, "https://"+strings.TrimSpace(string(addr))+path, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	pkcs := `{"template": "AEUser", "account": "alice", "delivery": "password", "password": "client cert mdm pw"}`
	if code := call(file("mdm.pem"), file("mdm.key"), "POST", apiclient.MDMPKCSPath, pkcs); code != http.StatusAccepted {
		t.Errorf("the MDM's certificate on POST %s: %d, want 202", apiclient.MDMPKCSPath, code)
	}
	for _, p := range []string{"/api/v1/status", "/api/v1/certificates", apiclient.MDMClientsPath} {
		if code := call(file("mdm.pem"), file("mdm.key"), "GET", p, ""); code != http.StatusForbidden {
			t.Errorf("the MDM's certificate on GET %s: %d, want 403", p, code)
		}
	}
	if code := call(file("other.pem"), file("other.key"), "POST", apiclient.MDMPKCSPath, pkcs); code != http.StatusUnauthorized {
		t.Errorf("a certificate of this CA not issued to an MDM: %d, want 401", code)
	}
	if _, _, err := runBin(t, "aectl", "--data", dir, "mdm", "remove", "cert-mdm"); err != nil {
		t.Fatal(err)
	}
	mdmCert := sceptest.ReadCert(t, file("mdm.pem"))
	var c apiclient.Certificate
	aectlJSON(t, dir, &c, "cert", certutil.SerialString(mdmCert.SerialNumber))
	if c.Status != "revoked" {
		t.Errorf("the removed MDM's certificate is %s, want revoked", c.Status)
	}
	if code := call(file("mdm.pem"), file("mdm.key"), "POST", apiclient.MDMPKCSPath, pkcs); code != http.StatusUnauthorized {
		t.Errorf("a removed MDM's certificate: %d, want 401", code)
	}
	if eventCounts(t, dir)[4004] != 1 {
		t.Error("no event 4004 for the certificate issued to the MDM")
	}
}
