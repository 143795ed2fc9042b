package appliance

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/enrollment-appliance/aeappliance/appliance/tpmseal"
	"github.com/enrollment-appliance/aeappliance/hsm/softhsm"
	"github.com/enrollment-appliance/aeappliance/internal/freeport"
	"github.com/enrollment-appliance/aeappliance/provisioning/provapi"
	"github.com/enrollment-appliance/aeappliance/provisioning/provtest"
	"github.com/enrollment-appliance/aeappliance/testvm/swtpm/swtpmtest"
)

// buildEnrollsvc builds the real enrollsvc (with cgo, for PKCS#11) once per test binary.
func buildEnrollsvc(t *testing.T) string {
	t.Helper()
	if _, err := softhsm.ModulePath(); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("SoftHSM2 is missing (make deps installs it): %v", err)
		}
		t.Skip(err)
	}
	enrollsvcOnce.Do(func() {
		dir, err := os.MkdirTemp("", "appliance-test-")
		if err != nil {
			enrollsvcErr = err
			return
		}
		enrollsvcBin = filepath.Join(dir, "enrollsvc")
		cmd := exec.Command("go", "build", "-o", enrollsvcBin, "github.com/enrollment-appliance/aeappliance/cmd/enrollsvc")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=1")
		if out, err := cmd.CombinedOutput(); err != nil {
			enrollsvcErr = fmt.Errorf("go build enrollsvc: %v\n%s", err, out)
		}
	})
	if enrollsvcErr != nil {
		t.Fatal(enrollsvcErr)
	}
	return enrollsvcBin
}

var (
	enrollsvcOnce sync.Once
	enrollsvcBin  string
	enrollsvcErr  error
)

// freePort is a port for the service started as a command (freeport says why not port 0).
func freePort(t *testing.T) int {
	t.Helper()
	p, err := freeport.Port()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestDevConsoleCeremony drives the whole ceremony through the console (development
// mode, the real enrollsvc and SoftHSM): the gates before a passphrase and before a
// login, wrong passphrase and wrong PIN refused, token, key, self-signed root, finish
// with the service answering, then the administration commands against it.
func TestDevConsoleCeremony(t *testing.T) {
	bin := buildEnrollsvc(t)
	data := filepath.Join(t.TempDir(), "data")
	lines := []string{
		"status",
		"provision token", // before a passphrase
		"provision passphrase", "short", "short",
		"provision passphrase", "correct horse battery", "correct horse battery different",
		"provision passphrase", "correct horse battery", "correct horse battery",
		"logout",
		"provision key", // logged out
		"reboot",        // logged out: refused before its confirmation is asked
		"login", "wrong passphrase here",
		"login", "correct horse battery",
		"provision selfsigned Too Early CA",
		"provision token", "so-pin-1234", "so-pin-1234", "user-pin-1234", "user-pin-1234",
		"provision token", "xx", "xx", "wrong-pin-99", "wrong-pin-99",
		"provision key",
		"provision key rsa-3072",
		"provision selfsigned Dev Console Root CA",
		"provision status",
		"network static 10.0.0.5",
		"network hostname pki.example.test",
		"network",
		"provision finish",
		"provision finish",
		"requests",
		"events 5",
		"ca",
		"api token",
		"approve 999",
		"frobnicate",
		"poweroff",
	}
	var out bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	noTPM := filepath.Join(t.TempDir(), "tpmrm0")
	err := Run(ctx, Options{Dev: true, DataDir: data, Enrollsvc: bin, ReleaseFile: filepath.Join(t.TempDir(), "none"),
		APIPort: freePort(t), HTTPPort: freePort(t), EnrollPort: freePort(t), TPMDevice: noTPM,
		In: strings.NewReader(strings.Join(lines, "\n") + "\n"), Out: &out})
	if err != nil {
		t.Fatalf("Run = %v", err)
	}
	got := out.String()
	for _, want := range []string{
		" State:          unprovisioned\n",
		"\nTPM:            none (no " + noTPM + ")\n",
		"provision token: set the admin passphrase first: provision passphrase\n",
		"provision passphrase: the passphrase is too short: at least 12 characters: nothing changed\n",
		"provision passphrase: the two entries differ: nothing changed\n",
		"Set the admin passphrase.",
		"provision key: log in first: login\n",
		"reboot: log in first: login\n",
		"login: wrong passphrase\n",
		"Logged in",
		"provision selfsigned: there is no CA key yet (step key first)\n",
		"with the SO and user PINs.",
		"this user PIN does not open it: nothing changed\n",
		"Generated a ecdsa-p256 CA key in the token",
		"sensitive, never extractable.",
		"a CA key is never replaced",
		"Made the self-signed root CA CN=Dev Console Root CA",
		"[x] token ", "[x] key ", "[x] ca         selfsigned CN=Dev Console Root CA", "[ ] finish",
		"network static: address \"10.0.0.5\": want an IPv4 address with its prefix length",
		"Saved the network settings: dhcp, hostname pki.example.test.",
		"Settings:   dhcp, hostname pki.example.test",
		"Wrote the service configuration: CA CN=Dev Console Root CA",
		"CRLs, OCSP and the CA certificate are published at http://pki.example.test:",
		"Service running: API https://127.0.0.1:",
		"provision finish: already provisioned (CA CN=Dev Console Root CA); nothing changed\n",
		"1      issued   ", // the API's own TLS certificate, the CA's first
		"api-tls            enrollsvc-api",
		"CA key generated in HSM",
		"CA: CN=Dev Console Root CA\nSHA-256: ",
		"-----BEGIN CERTIFICATE-----",
		"API admin token",
		"approve: 503 Service Unavailable: no directory is configured",
		`unknown command "frobnicate"`,
		"Powering off (development mode: leaving).\n",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("console output lacks %q", want)
		}
	}
	for _, secret := range []string{"so-pin-1234", "user-pin-1234", "correct horse battery"} {
		if strings.Contains(got, secret) {
			t.Errorf("the console echoed the secret %q", secret)
		}
		for _, f := range []string{"log/appliance.log", "log/enrollsvc.log"} {
			if b, _ := os.ReadFile(filepath.Join(data, f)); bytes.Contains(b, []byte(secret)) {
				t.Errorf("%s holds the secret %q", f, secret)
			}
		}
	}
	if t.Failed() {
		t.Logf("console:\n%s", got)
	}
	id, err := os.ReadFile(filepath.Join(data, "machine-id"))
	if err != nil || len(strings.TrimSpace(string(id))) != 32 || !strings.Contains(got, strings.TrimSpace(string(id))) {
		t.Errorf("machine-id = %q, %v; want 32 hex digits, shown in the banner", id, err)
	}
}

// TestRefusesOutsideImage: without -dev the boot sequence loads modules and formats
// disks, so it must refuse to run on anything but the image's initramfs.
func TestRefusesOutsideImage(t *testing.T) {
	var out bytes.Buffer
	err := Run(context.Background(), Options{DataDir: t.TempDir(), In: strings.NewReader(""), Out: &out})
	if err == nil || !strings.Contains(err.Error(), "not the appliance image") {
		t.Fatalf("Run outside the image = %v, want a refusal", err)
	}
	if out.Len() != 0 {
		t.Errorf("printed before refusing: %q", out.String())
	}
}

func TestWrap(t *testing.T) {
	s := wrap("Data disk: /dev/vda holds data that is not an ext4 file system (a partition table or another file system).", 40)
	for _, l := range strings.Split(s, "\n") {
		if len(l) > 40 {
			t.Errorf("wrap: line %q is longer than 40", l)
		}
	}
	if strings.Join(strings.Fields(s), " ") != "Data disk: /dev/vda holds data that is not an ext4 file system (a partition table or another file system)." {
		t.Errorf("wrap changed the words: %q", s)
	}
}

// waitFor waits until the console output holds text.
func waitFor(t *testing.T, out *provtest.SyncBuffer, text string, timeout time.Duration) string {
	t.Helper()
	for deadline := time.Now().Add(timeout); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if s := out.String(); strings.Contains(s, text) {
			return s
		}
	}
	t.Fatalf("the console never showed %q:\n%s", text, out.String())
	return ""
}

// TestDevProvisioningAPI: the same ceremony over the appliance's provisioning API (HTTPS,
// admin passphrase, the certificate pinned by the fingerprint the console shows): refused
// until the console has set the passphrase; then token, key, root and finish over HTTP;
// the service then takes over the API port and answers with the new CA.
func TestDevProvisioningAPI(t *testing.T) {
	bin := buildEnrollsvc(t)
	data := filepath.Join(t.TempDir(), "data")
	port := freePort(t)
	in, feed := io.Pipe()
	out := &provtest.SyncBuffer{}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, Options{Dev: true, DataDir: data, Enrollsvc: bin, ReleaseFile: filepath.Join(t.TempDir(), "none"),
			APIPort: port, HTTPPort: freePort(t), EnrollPort: freePort(t), In: in, Out: out})
	}()
	send := func(lines ...string) {
		for _, l := range lines {
			if _, err := io.WriteString(feed, l+"\n"); err != nil {
				t.Fatal(err)
			}
		}
	}
	base := fmt.Sprintf("https://127.0.0.1:%d", port)
	waitFor(t, out, "appliance> ", 30*time.Second)

	// Before a passphrase: 403, whatever the credentials.
	anyTLS := &tls.Config{InsecureSkipVerify: true}
	var herr *provapi.HTTPError
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		_, err := provapi.NewClient(base, "guess", anyTLS).Status(ctx)
		if errors.As(err, &herr) && herr.StatusCode == 403 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the provisioning API before a passphrase: %v, want 403", err)
		}
	}
	const pass = "api passphrase 12345"
	send("provision passphrase", pass, pass, "provision status")
	pinned := provtest.PinnedByConsole(t, waitFor(t, out, "certificate SHA-256", 30*time.Second))
	if _, err := provapi.NewClient(base, "wrong passphrase 1", pinned).Status(ctx); !errors.As(err, &herr) || herr.StatusCode != 401 {
		t.Errorf("a wrong passphrase: %v, want 401", err)
	}
	cl := provapi.NewClient(base, pass, pinned)
	if _, err := cl.Token(ctx, "api-so-pin-1", "api-user-pin-1"); err != nil {
		t.Fatal(err)
	}
	if _, err := cl.Token(ctx, "api-so-pin-1", "api-wrong-pin"); !errors.As(err, &herr) || herr.StatusCode != 409 || !strings.Contains(err.Error(), "does not open it") {
		t.Errorf("a wrong user PIN over the API: %v", err)
	}
	if r, err := cl.Key(ctx, "ecdsa-p384"); err != nil || !strings.Contains(r.String(), "never extractable") {
		t.Fatalf("key: %v %+v", err, r)
	}
	if _, err := cl.SelfSigned(ctx, "API Root CA", 0); err != nil {
		t.Fatal(err)
	}
	if r, err := cl.Finish(ctx); err != nil || !r.Changed {
		b, _ := os.ReadFile(filepath.Join(data, "log", "appliance.log"))
		t.Fatalf("finish: %v %+v\n%s\n%s", err, r, b, out.String())
	}
	waitFor(t, out, "Provisioned over the API. Service running", time.Minute)
	ca, err := os.ReadFile(filepath.Join(data, "var", "ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca)
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	resp, err := hc.Get(base + "/api/v1/health")
	if err != nil {
		t.Fatalf("the service on the API port after finish: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("health: %d", resp.StatusCode)
	}
	send("status", "poweroff")
	if err := <-done; err != nil {
		t.Fatalf("Run = %v", err)
	}
	if got := out.String(); !strings.Contains(got, "State:          provisioned (CA CN=API Root CA)") {
		t.Errorf("status after provisioning over the API:\n%s", got)
	}
	for _, secret := range []string{pass, "api-so-pin-1", "api-user-pin-1"} {
		b, _ := os.ReadFile(filepath.Join(data, "log", "appliance.log"))
		if bytes.Contains(b, []byte(secret)) || strings.Contains(out.String(), secret) {
			t.Errorf("a secret (%q) reached the log or the console", secret)
		}
	}
}

// TestTPMLine: status names a TPM 2.0 that answers (swtpm), says "none" without one and
// "unusable" for a device that is not one.
func TestTPMLine(t *testing.T) {
	sim := swtpmtest.Start(t, "")
	got := tpmLine(func() (*tpmseal.TPM, error) { return tpmseal.FromStream(sim.Dial()), nil }, "swtpm")
	if !strings.HasPrefix(got, "TPM 2.0 present (manufacturer IBM") {
		t.Errorf("tpmLine(swtpm) = %q", got)
	}
	missing := filepath.Join(t.TempDir(), "tpmrm0")
	if got := tpmLine(func() (*tpmseal.TPM, error) { return tpmseal.Open(missing) }, missing); got != "none (no "+missing+")" {
		t.Errorf("tpmLine(no device) = %q", got)
	}
	file := filepath.Join(t.TempDir(), "tpmrm0")
	os.WriteFile(file, nil, 0o600)
	if got := tpmLine(func() (*tpmseal.TPM, error) { return tpmseal.Open(file) }, file); !strings.HasPrefix(got, "unusable: ") {
		t.Errorf("tpmLine(a regular file) = %q", got)
	}
}
