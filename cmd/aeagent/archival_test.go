package main

// Key archival over MS-WSTEP against a real Samba AD DC and the real enrollment service: the
// agent archives the key of a template that requires it (MS-WCCE 3.1.1.4.3.6), the appliance
// keeps it for the key recovery agent, and the agent's key is what the agent recovers.

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	goldap "github.com/go-ldap/ldap/v3"

	"github.com/enrollment-appliance/aeappliance/aeagent/agent"
	"github.com/enrollment-appliance/aeappliance/aeagent/wsclient"
	"github.com/enrollment-appliance/aeappliance/enrollsvc/daemon/daemontest"
	"github.com/enrollment-appliance/aeappliance/enrollsvc/store"
	"github.com/enrollment-appliance/aeappliance/ldap/ldaptest"
	"github.com/enrollment-appliance/aeappliance/proto/cmc"
)

// requireArchival sets CT_FLAG_REQUIRE_PRIVATE_KEY_ARCHIVAL on templates in the directory.
func requireArchival(t *testing.T, dc *ldaptest.DC, s *ldaptest.Sample, names ...string) {
	t.Helper()
	admin := dc.Admin(t)
	for _, n := range names {
		mod := goldap.NewModifyRequest(s.Templates[n].DN, nil)
		mod.Replace("msPKI-Private-Key-Flag", []string{"1"})
		if err := admin.Modify(mod); err != nil {
			t.Fatal(err)
		}
	}
}

// recoveryAgent makes a key recovery agent: an RSA key and a certificate with the KRA EKU.
func recoveryAgent(t *testing.T, dir string) (certPEM, keyFile string) {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(42), Subject: pkix.Name{CommonName: "Recovery Agent"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(30 * 24 * time.Hour), KeyUsage: x509.KeyUsageKeyEncipherment,
		UnknownExtKeyUsage: []asn1.ObjectIdentifier{{1, 3, 6, 1, 4, 1, 311, 21, 6}}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	p8, _ := x509.MarshalPKCS8PrivateKey(key)
	keyFile = filepath.Join(dir, "kra.key")
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: p8}), 0o600); err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})), keyFile
}

// recoverKey recovers the archived key of serial as an administrator does (aectl recover) and
// opens the envelope with the agent's key (openssl), returning the private key.
func recoverKey(t *testing.T, srv *daemontest.Server, serial, kraKey string) any {
	t.Helper()
	dir := t.TempDir()
	in := filepath.Join(dir, "blob.der")
	if out, err := exec.Command(aectlBinary, "--data", srv.Dir, "recover", serial, "--out", in).CombinedOutput(); err != nil {
		t.Fatalf("aectl recover %s: %v\n%s", serial, err, out)
	}
	out, err := exec.Command("openssl", "cms", "-decrypt", "-inform", "DER", "-in", in, "-inkey", kraKey, "-binary").Output()
	if err != nil {
		t.Fatalf("openssl cms -decrypt of the archived key: %v", err)
	}
	k, err := x509.ParsePKCS8PrivateKey(out)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestKeyArchivalEnrollment(t *testing.T) {
	dc := ldaptest.StartDC(t)
	s := dc.Seed(t)
	requireArchival(t, dc, s, "AEMachine", "AEUser")
	httpKeytab := dc.HTTPService(t, "svc-http", "HTTP/localhost")
	srv := daemontest.Start(t, dc, s, daemontest.Options{CAName: "Archival CA", Keytab: httpKeytab})
	tmp := t.TempDir()
	storeDir := filepath.Join(tmp, "store")
	cfgFile := filepath.Join(tmp, "aeagent.json")
	cfg := agent.Config{Server: srv.CEP("Kerberos"), Auth: agent.AuthKerberos, Context: agent.ContextMachine,
		Keytab: dc.Keytab(t, "WS1$"), Krb5Conf: dc.Krb5Conf(t), CAFile: srv.CAFile, Store: storeDir}
	raw, _ := json.Marshal(cfg)
	if err := os.WriteFile(cfgFile, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()

	// No recovery agent yet: the CA refuses to take a key it cannot keep, and nothing is installed.
	out, errs, code := aeagent(t, nil, "--config", cfgFile, "pulse")
	if code == 0 || !strings.Contains(out+errs, "no key recovery agent") {
		t.Fatalf("pulse without a recovery agent = exit %d\n%s\n%s", code, out, errs)
	}
	certPEM := filepath.Join(storeDir, "AEMachine", "cert.pem")
	if _, err := os.Stat(certPEM); err == nil {
		t.Fatal("a refused archival request installed a certificate")
	}

	kraPEM, kraKey := recoveryAgent(t, tmp)
	kraFile := filepath.Join(tmp, "kra.pem")
	os.WriteFile(kraFile, []byte(kraPEM), 0o600)
	if out, err := exec.Command(aectlBinary, "--data", srv.Dir, "kra", "add", kraFile).CombinedOutput(); err != nil {
		t.Fatalf("aectl kra add: %v\n%s", err, out)
	}
	out, errs, code = aeagent(t, nil, "--config", cfgFile, "pulse", "--json")
	if code != 0 {
		t.Fatalf("pulse with a recovery agent = exit %d\n%s\n%s", code, out, errs)
	}
	st, err := os.ReadFile(certPEM)
	if err != nil {
		t.Fatalf("no certificate installed: %v\n%s", err, out)
	}
	blk, _ := pem.Decode(st)
	cert, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	keyPEM, err := os.ReadFile(filepath.Join(storeDir, "AEMachine", "key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	kblk, _ := pem.Decode(keyPEM)
	agentKey, err := x509.ParsePKCS8PrivateKey(kblk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	recovered := recoverKey(t, srv, cert.SerialNumber.Text(16), kraKey)
	if rk, ok := recovered.(*rsa.PrivateKey); !ok || !rk.Equal(agentKey) || !rk.PublicKey.Equal(cert.PublicKey) {
		t.Fatal("the recovered key is not the agent's key of the certificate")
	}

	// Requests over the password endpoint, built by hand: alice on AEUser (archival) and AEUserV2
	// (no archival).
	client, err := wsclient.New(srv.CEP("UsernamePassword"), wsclient.PasswordAuth{Username: s.Alice.UPN, Password: s.Alice.Password}, srv.Roots)
	if err != nil {
		t.Fatal(err)
	}
	ces := srv.CES("UsernamePassword")
	caPEM, _ := os.ReadFile(srv.CAFile)
	cablk, _ := pem.Decode(caPEM)
	ca, _ := x509.ParseCertificate(cablk.Bytes)
	xcert, err := client.KeyExchangeCertificate(ctx, ces, ca)
	if err != nil {
		t.Fatal(err)
	}
	request := func(key, archived *rsa.PrivateKey) ([]byte, []byte) {
		t.Helper()
		csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "claimed name"}}, key)
		if err != nil {
			t.Fatal(err)
		}
		env, err := cmc.EncryptKey(archived, xcert)
		if err != nil {
			t.Fatal(err)
		}
		token, err := cmc.SignArchival(csr, key, env)
		if err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(env)
		return token, sum[:]
	}
	newKey := func() *rsa.PrivateKey {
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	issue := func(template string, token []byte) *wsclient.Result {
		t.Helper()
		res, err := client.Issue(ctx, ces, token, map[string]string{"CertificateTemplate": template})
		if err != nil {
			t.Fatalf("Issue %s: %v", template, err)
		}
		return res
	}
	k1, k2 := newKey(), newKey()

	token, _ := request(k1, k2)
	if res := issue("AEUser", token); res.Status != wsclient.StatusDenied || !strings.Contains(res.Reason, "not the key of the request") {
		t.Errorf("another key archived than the request's: %+v", res)
	}
	token, _ = request(k1, k1)
	if res := issue("AEUserV2", token); res.Status != wsclient.StatusDenied || !strings.Contains(res.Reason, "does not archive keys") ||
		uint32(res.ErrorCode) != 0x80094810 { // CERTSRV_E_ARCHIVED_KEY_UNEXPECTED
		t.Errorf("an archived key on a template that does not archive: %+v", res)
	}
	if archived(t, srv, &k1.PublicKey) {
		t.Error("a refused request's key was archived")
	}
	// An archival template without the key: refused.
	plainCSR, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "alice"}}, k1)
	if res := issue("AEUser", plainCSR); res.Status != wsclient.StatusDenied || !strings.Contains(res.Reason, "requires private key archival") ||
		uint32(res.ErrorCode) != 0x80094804 { // CERTSRV_E_ARCHIVED_KEY_REQUIRED
		t.Errorf("an archival template without the key: %+v", res)
	}
	token, hash := request(k1, k1)
	res := issue("AEUser", token)
	if res.Status != wsclient.StatusIssued || !bytes.Equal(res.EncryptedKeyHash, hash) {
		t.Fatalf("alice's archival request = %+v; want issued, the response naming the archived key", res)
	}
	if !slices.Contains(res.Certificate.EmailAddresses, s.Alice.Mail) {
		t.Errorf("alice's certificate names %v, not her directory address", res.Certificate.EmailAddresses)
	}
	if rk, ok := recoverKey(t, srv, res.Certificate.SerialNumber.Text(16), kraKey).(*rsa.PrivateKey); !ok || !rk.Equal(k1) {
		t.Error("alice's recovered key is not her key")
	}
	// The refused requests left no archive behind: k2 was never certified.
	if archived(t, srv, &k2.PublicKey) {
		t.Error("the key of a refused request was archived")
	}
}

// archived reports whether the store keeps an archived key for pub.
func archived(t *testing.T, srv *daemontest.Server, pub *rsa.PublicKey) bool {
	t.Helper()
	der, _ := x509.MarshalPKIXPublicKey(pub)
	sum := sha256.Sum256(der)
	_, err := srv.Runtime.Store.(store.ArchiveStore).GetArchivedKey(context.Background(), hex.EncodeToString(sum[:]))
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		t.Fatal(err)
	}
	return err == nil
}
