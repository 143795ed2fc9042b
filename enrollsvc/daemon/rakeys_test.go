package daemon_test

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/enrollment-appliance/aeappliance/config"
	"github.com/enrollment-appliance/aeappliance/enrollsvc"
	"github.com/enrollment-appliance/aeappliance/enrollsvc/daemon"
	"github.com/enrollment-appliance/aeappliance/enrollsvc/events"
	"github.com/enrollment-appliance/aeappliance/enrollsvc/store"
	"github.com/enrollment-appliance/aeappliance/hsm"
	"github.com/enrollment-appliance/aeappliance/proto/certutil"
	"github.com/enrollment-appliance/aeappliance/proto/scep/sceptest"
)

// An appliance set up before the SCEP RA's keys were split (one RSA key "scep-ra" that signs and
// decrypts, its certificate in scep/ra.pem) comes up with two keys: "scep-ra-sign", which the
// token lets only sign, with a digitalSignature-only certificate, and "scep-ra-encrypt", which
// the token lets only decrypt, with a keyEncipherment-only certificate. GetCACert returns those
// two and the CA's; the combined key is destroyed, its certificate revoked (superseded) and its
// file removed.
func TestSCEPRAKeysSplitOnUpgrade(t *testing.T) {
	tool := sceptest.NeedTool(t, "pkcs11-tool")
	f := initDirFixture(t, "")
	cfg, err := config.Load(f.dir)
	if err != nil {
		t.Fatal(err)
	}
	pin, err := os.ReadFile(config.Path(f.dir, cfg.HSM.PINFile))
	if err != nil {
		t.Fatal(err)
	}
	// The combined key as the old appliance generated it: CKA_SIGN and CKA_DECRYPT.
	cmd := exec.Command(tool, "--module", cfg.HSM.Module, "--token-label", cfg.HSM.TokenLabel, "--login", "--pin", "env:RA_TEST_PIN",
		"--keypairgen", "--key-type", "rsa:2048", "--label", "scep-ra", "--id", "5ce9", "--usage-sign", "--usage-decrypt")
	cmd.Env = append(os.Environ(), "RA_TEST_PIN="+strings.TrimSpace(string(pin)), "SOFTHSM2_CONF="+config.Path(f.dir, cfg.HSM.SoftHSMConf))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("pkcs11-tool --keypairgen: %v\n%s", err, out)
	}
	f.rt = openRuntime(t, f.dir)
	rt := f.rt
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	u := rt.Key.URI()
	u.Object, u.ID = "scep-ra", nil
	combined, err := rt.KeyStore.FindKey(ctx, u)
	if err != nil {
		t.Fatal(err)
	}
	old, err := rt.Service.IssueProfile(ctx, enrollsvc.ProfileRequest{Profile: enrollsvc.ProfileServer,
		Subject: pkix.Name{CommonName: "Old SCEP RA"}, PublicKey: combined.Public(), Validity: 30 * 24 * time.Hour,
		Meta: enrollsvc.Meta{Requester: "enrollsvc", Account: "enrollsvc-scep-ra"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(config.Path(f.dir, "scep"), 0o755); err != nil {
		t.Fatal(err)
	}
	oldFile := config.Path(f.dir, "scep/ra.pem")
	if err := os.WriteFile(oldFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: old.Certificate.Raw}), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := rt.Service.AddSCEPProfile(ctx, enrollsvc.SCEPProfileSpec{Name: "devices", Template: "SuppliesSubject",
		Account: "dave", StaticChallenge: "a long enough static secret"}, "test"); err != nil {
		t.Fatal(err)
	}

	addrc := make(chan string, 1)
	done := make(chan error, 1)
	go func() {
		done <- daemon.Serve(ctx, f.dir, daemon.ServeOptions{APIListen: "127.0.0.1:0", EnrollListen: "127.0.0.1:0",
			OnEnrollListen: func(addr string) { addrc <- addr }}, rt)
	}()
	var addr string
	select {
	case addr = <-addrc:
	case err := <-done:
		t.Fatalf("daemon.Serve: %v", err)
	case <-time.After(2 * time.Minute):
		t.Fatal("the service did not start")
	}
	defer func() {
		cancel()
		if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("daemon.Serve: %v", err)
		}
	}()

	// The combined key and its certificate are gone.
	if _, err := rt.KeyStore.FindKey(ctx, u); !errors.Is(err, hsm.ErrKeyNotFound) {
		t.Errorf("the combined RA key is still in the token: %v", err)
	}
	h := sha256.Sum256([]byte("a CertRep"))
	if _, err := combined.Sign(nil, h[:], crypto.SHA256); err == nil {
		t.Error("the combined RA key still signs")
	}
	if evs, err := rt.Store.ListEvents(ctx, store.EventFilter{ID: int(events.HSMKeyDestroyed)}); err != nil || len(evs) != 1 ||
		evs[0].Fields["key"] != u.String() {
		t.Errorf("audit events for the destroyed combined RA key = %+v, %v; want one naming %s", evs, err, u)
	}
	if _, err := os.Stat(oldFile); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("scep/ra.pem is still there: %v", err)
	}
	if c, err := rt.Store.GetCertificate(ctx, certutil.SerialString(old.Certificate.SerialNumber)); err != nil ||
		c.Status != store.CertRevoked || c.RevocationReason != 4 {
		t.Errorf("the combined RA certificate: %+v, %v; want revoked, superseded (4)", c, err)
	}

	// GetCACert: exactly the two RA certificates of the files, each with one usage, and the CA's.
	caPool := x509.NewCertPool()
	caPool.AddCert(rt.CACert)
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: caPool, ServerName: "localhost"}}}
	resp, err := client.Get("https://" + addr + "/scep/devices?operation=GetCACert")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	certs := sceptest.CertsOnly(t, body)
	signCert := sceptest.ReadCert(t, filepath.Join(f.dir, "scep", "ra-sign.pem"))
	encCert := sceptest.ReadCert(t, filepath.Join(f.dir, "scep", "ra-encrypt.pem"))
	if len(certs) != 3 || !certs[0].Equal(signCert) || !certs[1].Equal(encCert) || !certs[2].Equal(rt.CACert) {
		t.Fatalf("GetCACert returned %d certificates, want scep/ra-sign.pem, scep/ra-encrypt.pem and the CA's", len(certs))
	}
	if signCert.KeyUsage != x509.KeyUsageDigitalSignature || encCert.KeyUsage != x509.KeyUsageKeyEncipherment {
		t.Errorf("keyUsage: signing %#x, encryption %#x; want digitalSignature only, keyEncipherment only", signCert.KeyUsage, encCert.KeyUsage)
	}

	// In the token, the signing key cannot decrypt and the decryption key cannot sign: PKCS#11
	// refuses (CKR_KEY_FUNCTION_NOT_PERMITTED), whatever the caller asks.
	find := func(label string, cert *x509.Certificate) *hsm.Key {
		t.Helper()
		ku := rt.Key.URI()
		ku.Object, ku.ID = label, nil
		k, err := rt.KeyStore.FindKey(ctx, ku)
		if err != nil {
			t.Fatal(err)
		}
		if !certutil.PublicKeysEqual(k.Public(), cert.PublicKey) {
			t.Fatalf("%s is not the key of its certificate", label)
		}
		return k
	}
	sign, enc := find("scep-ra-sign", signCert), find("scep-ra-encrypt", encCert)
	const refused = "CKR_KEY_FUNCTION_NOT_PERMITTED"
	ct, err := rsa.EncryptPKCS1v15(rand.Reader, sign.Public().(*rsa.PublicKey), []byte("a content-encryption key"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sign.Decrypt(nil, ct, nil); err == nil || !strings.Contains(err.Error(), refused) {
		t.Errorf("the RA signing key decrypted: error %v, want %s from the token", err, refused)
	}
	if _, err := enc.Sign(nil, h[:], crypto.SHA256); err == nil || !strings.Contains(err.Error(), refused) {
		t.Errorf("the RA decryption key signed: error %v, want %s from the token", err, refused)
	}
	ct, _ = rsa.EncryptPKCS1v15(rand.Reader, enc.Public().(*rsa.PublicKey), []byte("a content-encryption key"))
	if pt, err := enc.Decrypt(nil, ct, nil); err != nil || string(pt) != "a content-encryption key" {
		t.Errorf("the RA decryption key does not decrypt: %q, %v", pt, err)
	}
	if _, err := sign.Sign(nil, h[:], crypto.SHA256); err != nil {
		t.Errorf("the RA signing key does not sign: %v", err)
	}
}
