package testvm

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/enrollment-appliance/aeappliance/apiclient"
	"github.com/enrollment-appliance/aeappliance/config"
)

func newCSRPEM(t *testing.T, cn string) string {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: cn}, DNSNames: []string{cn}}, key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))
}

// TestApplianceRestore: a CA's backup (made through the API of a running enrollsvc on this host,
// another machine with another SoftHSM path, while two clients keep issuing) is restored at the
// console of a fresh appliance, which then holds every certificate issued before the backup began: provision passphrase, then provision restore URL with the backup's passphrase. The
// appliance comes up as the same CA: its OCSP responder says revoked for the certificate
// revoked before the backup, the admin token of the backup works, a new certificate chains to
// the same CA certificate, the CRL number goes on upward, the audit trail verifies, and the
// console's status shows the backup state and the activity.
func TestApplianceRestore(t *testing.T) {
	needVM(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	work := t.TempDir()
	bin := hostTool(t, "enrollsvc") // with cgo, for SoftHSM

	// The CA to restore, on this host.
	host := filepath.Join(work, "var")
	hp, err := FreePort()
	if err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(bin, "init", "--data", host, "--ca-name", "Restore Test Root CA", "--http-url", "http://pki.restore.test",
		"--http-listen", fmt.Sprintf("127.0.0.1:%d", hp)).CombinedOutput(); err != nil {
		t.Fatalf("enrollsvc init: %v\n%s", err, out)
	}
	serve := exec.Command(bin, "serve", "--data", host, "--api-listen", "127.0.0.1:0")
	if err := serve.Start(); err != nil {
		t.Fatal(err)
	}
	defer serve.Process.Kill()
	var cl *apiclient.Client
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		c, err := apiclient.DialDataDir(host)
		if err == nil && c.Health(ctx) == nil {
			cl = c
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("enrollsvc serve on this host does not answer: %v", err)
		}
	}
	revoked, err := cl.Issue(ctx, apiclient.IssueRequest{CSR: newCSRPEM(t, "revoked.restore.test"), Profile: "server"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cl.Revoke(ctx, revoked.Serial, "keyCompromise"); err != nil {
		t.Fatal(err)
	}
	before, err := cl.PublishCRL(ctx)
	if err != nil {
		t.Fatal(err)
	}
	const backupPass = "restore test passphrase"
	backupFile := filepath.Join(work, "served", "ca.backup")
	os.MkdirAll(filepath.Dir(backupFile), 0o755)
	f, err := os.Create(backupFile)
	if err != nil {
		t.Fatal(err)
	}
	// Under load: two clients issue while the backup is written.
	var (
		mu        sync.Mutex
		preBackup []string // issued before the backup began
		started   bool
		stopLoad  = make(chan struct{})
		load      sync.WaitGroup
	)
	for range 2 {
		load.Go(func() {
			for {
				select {
				case <-stopLoad:
					return
				default:
				}
				res, err := cl.Issue(ctx, apiclient.IssueRequest{CSR: newCSRPEM(t, "load.restore.test"), Profile: "server"})
				if err != nil {
					t.Errorf("issuing during the backup: %v", err)
					return
				}
				mu.Lock()
				if !started {
					preBackup = append(preBackup, res.Serial)
				}
				mu.Unlock()
			}
		})
	}
	time.Sleep(500 * time.Millisecond)
	mu.Lock()
	started = true
	mu.Unlock()
	if _, err := cl.Backup(ctx, apiclient.BackupRequest{Passphrase: backupPass}, f); err != nil {
		t.Fatal(err)
	}
	f.Close()
	close(stopLoad)
	load.Wait()
	if len(preBackup) == 0 {
		t.Fatal("nothing was issued before the backup began")
	}
	serve.Process.Signal(os.Interrupt)
	serve.Wait()

	// The backup, served where the guest reaches this host (QEMU's 10.0.2.2).
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go http.Serve(ln, http.FileServer(http.Dir(filepath.Dir(backupFile))))
	defer ln.Close()
	url := fmt.Sprintf("http://10.0.2.2:%d/ca.backup", ln.Addr().(*net.TCPAddr).Port)

	vm, _ := boot(t, ctx, nil)
	must(t, vm, prompt, 2*time.Minute)
	status := command(t, vm, "status", 30*time.Second)
	for deadline := time.Now().Add(30 * time.Second); !strings.Contains(status, "Network:        eth0 10.0.2.15/24") && time.Now().Before(deadline); {
		time.Sleep(time.Second)
		status = command(t, vm, "status", 30*time.Second)
	}
	if out := secretLines(t, vm, time.Minute, "provision passphrase", passphrase, passphrase); !strings.Contains(out, "Set the admin passphrase.") {
		t.Fatalf("provision passphrase: %q", out)
	}
	start := time.Now()
	if out := secretLines(t, vm, 2*time.Minute, "provision restore "+url, "not the backup's passphrase"); !strings.Contains(out, "cannot decrypt") {
		t.Errorf("provision restore with a wrong passphrase: %q", out)
	}
	out := secretLines(t, vm, 4*time.Minute, "provision restore "+url, backupPass)
	m := regexp.MustCompile(`Fingerprint: SHA-256\n\s+([0-9A-F]{64})`).FindStringSubmatch(out)
	if m == nil || !strings.Contains(out, "Restored the backup") || !strings.Contains(out, "Service running: API https://10.0.2.15:9443") {
		t.Fatalf("provision restore: got\n%s", out)
	}
	t.Logf("provision restore at the console, to the service running: %s", time.Since(start).Round(100*time.Millisecond))
	checkService(t, ctx, vm, m[1], time.Minute)
	if strings.Contains(vm.Transcript(), backupPass) {
		t.Error("the console echoed the backup's passphrase")
	}

	// The same CA, through the forwarded ports, with the restored admin token.
	token, _ := os.ReadFile(filepath.Join(host, config.APITokenFile))
	caPEM, _ := os.ReadFile(filepath.Join(host, config.CACertFile))
	vcl, err := apiclient.NewClient(fmt.Sprintf("127.0.0.1:%d", vm.HostPort(apiPort)), strings.TrimSpace(string(token)), caPEM)
	if err != nil {
		t.Fatal(err)
	}
	caFile, revokedFile := filepath.Join(work, "ca.pem"), filepath.Join(work, "revoked.pem")
	os.WriteFile(caFile, caPEM, 0o644)
	os.WriteFile(revokedFile, []byte(revoked.Certificate), 0o644)
	ocsp, err := exec.CommandContext(ctx, "openssl", "ocsp", "-issuer", caFile, "-cert", revokedFile,
		"-url", fmt.Sprintf("http://127.0.0.1:%d/ocsp", vm.HostPort(httpPort)), "-CAfile", caFile).CombinedOutput()
	if err != nil || !strings.Contains(string(ocsp), "Response verify OK") || !strings.Contains(string(ocsp), ": revoked") {
		t.Errorf("OCSP from the restored appliance for the certificate revoked before the backup: %v\n%s", err, ocsp)
	}
	issued, err := vcl.Issue(ctx, apiclient.IssueRequest{CSR: newCSRPEM(t, "after.restore.test"), Profile: "server"})
	if err != nil {
		t.Fatalf("issuing on the restored appliance: %v", err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	blk, _ := pem.Decode([]byte(issued.Certificate))
	leaf, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool}); err != nil || issued.Serial == revoked.Serial {
		t.Errorf("the restored appliance's certificate does not chain to the same CA: %v", err)
	}
	certs, err := vcl.Certificates(ctx, apiclient.CertQuery{Limit: 100000})
	if err != nil {
		t.Fatal(err)
	}
	have := map[string]bool{}
	for _, c := range certs {
		have[c.Serial] = true
	}
	for _, s := range append(preBackup, revoked.Serial) {
		if !have[s] {
			t.Errorf("certificate %s, issued before the backup began, is not on the restored appliance", s)
		}
	}
	after, err := vcl.PublishCRL(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if after.Number <= before.DeltaNumber {
		t.Errorf("CRL number %d after the restore; %d (delta %d) before the backup: it must go on upward", after.Number, before.Number, before.DeltaNumber)
	}
	verify := exec.CommandContext(ctx, aectl(t), "--api", fmt.Sprintf("127.0.0.1:%d", vm.HostPort(apiPort)), "--token-file",
		filepath.Join(host, config.APITokenFile), "--ca-file", caFile, "events", "verify")
	if out, err := verify.CombinedOutput(); err != nil {
		t.Errorf("aectl events verify on the restored appliance: %v\n%s", err, out)
	}
	status = command(t, vm, "status", 30*time.Second)
	// This appliance has not been backed up itself (the backup's own record is written after its
	// snapshot), and it issued one certificate since it started.
	for _, want := range []string{"State:          provisioned (CA CN=Restore Test Root CA)", "Last backup:    never",
		"Since start:    1 issued, 0 refused, 0 failed", "HSM:            signatures p50 <= ",
		"issued since 00:00 UTC (every instance); 0 pending approval"} {
		if !strings.Contains(status, want) {
			t.Errorf("status after the restore lacks %q:\n%s", want, status)
		}
	}
}
