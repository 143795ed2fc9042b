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
	"io"
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
	"github.com/enrollment-appliance/aeappliance/apiclient/apitest"
	"github.com/enrollment-appliance/aeappliance/enrollsvc/store/pgtest"
	"github.com/enrollment-appliance/aeappliance/proto/certutil"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

// TestApplianceCluster: two appliance VMs, provisioned at their consoles, serve one CA from a
// PostgreSQL on the host. A is provisioned with the store step and exports its SoftHSM token at
// the console (ca export-token); B joins at its console with the bundle (a wrong passphrase is
// refused and changes nothing). Issuances spread over both get distinct serials, stored once; a
// revocation on A is revoked in B's OCSP answer and in the CRL B serves; cluster status on B lists
// both; A powered off in the middle of a burst loses no certificate a client received, B keeps
// serving, and A, booted again, rejoins.
func TestApplianceCluster(t *testing.T) {
	needVM(t)
	ctx, cancel := context.WithTimeout(context.Background(), 12*time.Minute)
	defer cancel()
	db := pgtest.Shared(t).NewDatabase(t)
	dbCA, err := os.ReadFile(db.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	vmA, diskA := boot(t, ctx, nil)
	vmB, _ := boot(t, ctx, nil) // boots while A is provisioned
	must(t, vmA, prompt, 2*time.Minute)

	// A: its own CA, then the store step, then finish.
	ceremonyToKey(t, vmA)
	command(t, vmA, "network hostname ae-a", time.Minute)
	if out := command(t, vmA, "provision selfsigned VM Cluster CA", 2*time.Minute); !strings.Contains(out, "Made the self-signed root CA CN=VM Cluster CA") {
		t.Fatalf("provision selfsigned: %q", out)
	}
	vmA.SendLine("provision store " + db.VMURL())
	must(t, vmA, "Password of the database role", 30*time.Second)
	vmA.SendLine(db.Password)
	must(t, vmA, "then an empty line:", 30*time.Second)
	pasteLines(vmA, string(dbCA))
	if out := must(t, vmA, prompt, 2*time.Minute); !strings.Contains(out, "Checked and saved the store settings: PostgreSQL at postgres://") {
		t.Fatalf("provision store: %s", out)
	}
	fingerprint := finish(t, vmA)
	checkService(t, ctx, vmA, fingerprint, time.Minute)
	t.Logf("A provisioned with the store on the host's PostgreSQL: %s", time.Since(start).Round(100*time.Millisecond))

	// A exports its token at the console, confirmed and recorded.
	const bundlePass = "cluster bundle passphrase 1"
	out := secretLines(t, vmA, 2*time.Minute, "ca export-token", "y", bundlePass, bundlePass)
	bundle := armored(out)
	if bundle == "" {
		t.Fatalf("ca export-token printed no bundle:\n%s", out)
	}
	t.Logf("the token bundle: %d lines", strings.Count(bundle, "\n"))

	// B joins at its console: a wrong passphrase first.
	must(t, vmB, prompt, 2*time.Minute)
	if out := secretLines(t, vmB, time.Minute, "provision passphrase", passphrase, passphrase); !strings.Contains(out, "Set the admin passphrase.") {
		t.Fatalf("B: provision passphrase: %q", out)
	}
	command(t, vmB, "network hostname ae-b", time.Minute)
	join := func(pass string) string {
		vmB.SendLine("provision join " + db.VMURL())
		must(t, vmB, "Password of the database role", 30*time.Second)
		vmB.SendLine(db.Password)
		must(t, vmB, "then an empty line:", 30*time.Second)
		pasteLines(vmB, string(dbCA))
		must(t, vmB, "Paste the token bundle", 30*time.Second)
		pasteLines(vmB, bundle)
		must(t, vmB, "Passphrase of the token bundle", time.Minute)
		vmB.SendLine(pass)
		must(t, vmB, "User PIN of the token", 30*time.Second)
		vmB.SendLine(userPIN)
		must(t, vmB, "an empty line if the CA uses no directory", 30*time.Second)
		vmB.SendLine("")
		return must(t, vmB, prompt, 4*time.Minute)
	}
	if out := join("not the bundle passphrase"); !strings.Contains(out, "the passphrase does not open this token bundle: nothing changed") {
		t.Fatalf("B: provision join with a wrong passphrase: %s", out)
	}
	if out := command(t, vmB, "provision status", 30*time.Second); strings.Contains(out, "[x] token") || strings.Contains(out, "[x] finish") {
		t.Errorf("the refused join left a step done:\n%s", out)
	}
	out = join(bundlePass)
	if !strings.Contains(out, "Joined the CA CN=VM Cluster CA") || !strings.Contains(out, "Service running: API https://10.0.2.15:9443") ||
		!strings.Contains(out, fingerprint) {
		t.Fatalf("B: provision join:\n%s", out)
	}
	checkService(t, ctx, vmB, fingerprint, time.Minute)
	if strings.Contains(vmB.Transcript(), bundlePass) || strings.Contains(vmB.Transcript(), db.Password) ||
		strings.Contains(vmA.Transcript(), bundlePass) {
		t.Error("a console echoed the bundle's passphrase or the database password")
	}
	t.Logf("A and B serving one CA: %s", time.Since(start).Round(100*time.Millisecond))

	clA, clB := vmClient(t, vmA), vmClient(t, vmB)
	csr := func(i int) string {
		k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		cn := fmt.Sprintf("node%d.vm.example.test", i)
		der, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: cn}, DNSNames: []string{cn}}, k)
		return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))
	}
	csrs := make([]string, 8)
	for i := range csrs {
		csrs[i] = csr(i)
	}

	// 200 issuances spread over both from 8 goroutines: 200 distinct serials, each stored once.
	const total = 200
	t0 := time.Now()
	serials := apitest.IssueSpread(t, ctx, []*apiclient.Client{clA, clB}, csrs, "server", total)
	if len(serials) != total {
		t.Fatalf("%d distinct serials, want %d", len(serials), total)
	}
	t.Logf("%d issuances over the two VMs in %s", total, time.Since(t0).Round(time.Millisecond))
	stA, errA := clA.Status(ctx)
	stB, errB := clB.Status(ctx)
	if errA != nil || errB != nil || stA.Store.Certificates != stB.Store.Certificates || stA.Store.Certificates < total {
		t.Errorf("the store as A and B count it: %d (%v), %d (%v); want the same, at least %d", stA.Store.Certificates, errA,
			stB.Store.Certificates, errB, total)
	}

	// A revocation on A: revoked in B's OCSP answer, and in the CRL B serves.
	var victim string
	for s := range serials {
		victim = s
		break
	}
	dir := t.TempDir()
	caFile, certFile := filepath.Join(dir, "ca.pem"), filepath.Join(dir, "victim.pem")
	os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caCert(t, ctx, clA).Raw}), 0o644)
	os.WriteFile(certFile, []byte(serials[victim]), 0o600)
	baseB := fmt.Sprintf("http://127.0.0.1:%d", vmB.HostPort(httpPort))
	ocspB := func() string {
		out, err := exec.CommandContext(ctx, "openssl", "ocsp", "-issuer", caFile, "-cert", certFile, "-url", baseB+"/ocsp",
			"-CAfile", caFile, "-timeout", "10").CombinedOutput()
		if err != nil {
			t.Fatalf("openssl ocsp against B: %v\n%s", err, out)
		}
		return string(out)
	}
	if out := ocspB(); !strings.Contains(out, certFile+": good") {
		t.Fatalf("B's OCSP before the revocation:\n%s", out)
	}
	if _, err := clA.Revoke(ctx, victim, "keyCompromise"); err != nil {
		t.Fatal(err)
	}
	revokedAt := time.Now()
	for {
		out := ocspB()
		if strings.Contains(out, certFile+": revoked") {
			t.Logf("B's OCSP says revoked %s after A revoked (TCG)", time.Since(revokedAt).Round(time.Millisecond))
			break
		}
		if time.Since(revokedAt) > 10*time.Second {
			t.Fatalf("B's OCSP still does not say revoked 10 s after A revoked:\n%s", out)
		}
		time.Sleep(100 * time.Millisecond)
	}
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(250 * time.Millisecond) {
		crl, err := x509.ParseRevocationList(get(t, baseB+"/crl/VM-Cluster-CA.crl"))
		if err != nil {
			t.Fatal(err)
		}
		listed := false
		for _, e := range crl.RevokedCertificateEntries {
			listed = listed || certutil.SerialString(e.SerialNumber) == victim
		}
		if listed {
			t.Logf("B serves CRL %d, which lists the revocation", crl.Number)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("30 s after A revoked %s, the CRL B serves (%d) does not list it", victim, crl.Number)
		}
	}
	cs, err := clB.Cluster(ctx)
	if err != nil || !cs.StoreOK || len(cs.Instances) != 2 || cs.Instance != "ae-b" || !strings.HasPrefix(cs.DatabaseVersion, "15") {
		t.Fatalf("B's cluster status = %+v, %v; want ae-a and ae-b on PostgreSQL 15", cs, err)
	}
	for _, in := range cs.Instances {
		if !in.Live || (in.Name != "ae-a" && in.Name != "ae-b") {
			t.Errorf("instance %+v: want ae-a or ae-b, live", in)
		}
	}
	if out := command(t, vmB, "cluster", 30*time.Second); !regexp.MustCompile(`ae-a\s+\S+\s+live`).MatchString(out) ||
		!regexp.MustCompile(`ae-b\s+\S+\s+live`).MatchString(out) || !strings.Contains(out, "PostgreSQL 15") {
		t.Errorf("cluster at B's console:\n%s", out)
	}

	// A dies in the middle of a burst over both: every certificate a client received is in the
	// store, and B keeps serving.
	var mu sync.Mutex
	var wg sync.WaitGroup
	received := map[string]bool{}
	killed := make(chan struct{})
	var once sync.Once
	var issued int
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cl, after := clA, 0
			if w%2 == 1 {
				cl = clB
			}
			for {
				select {
				case <-killed:
					if cl == clA || after == 10 {
						return
					}
					after++
				default:
				}
				res, err := cl.Issue(ctx, apiclient.IssueRequest{CSR: csrs[w], Profile: "server"})
				if err != nil {
					if cl == clB {
						t.Errorf("B failed while A died: %v", err)
						return
					}
					continue // A is going down
				}
				mu.Lock()
				received[res.Serial] = true
				issued++
				if issued == 40 {
					once.Do(func() { vmA.Kill(); close(killed) })
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	for s := range received {
		if _, err := clB.Certificate(ctx, s); err != nil {
			t.Errorf("certificate %s, received by a client, is not in the store: %v", s, err)
		}
	}
	t.Logf("A powered off after %d issuances in a burst; B issued on; all %d received certificates are in the store", 40, len(received))

	// A boots again from its disk and rejoins.
	vmA2 := startVM(t, ctx, Options{DataDisk: diskA})
	must(t, vmA2, prompt, 2*time.Minute)
	checkService(t, ctx, vmA2, fingerprint, 2*time.Minute)
	logBoot(t, vmA2, time.Since(vmA2.Started()))
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(time.Second) {
		cs, err := clB.Cluster(ctx)
		live := 0
		for _, in := range cs.Instances {
			if in.Live {
				live++
			}
		}
		if err == nil && live == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("A booted again, but B's cluster status = %+v, %v; want both live", cs, err)
		}
	}
	if out := secretLines(t, vmA2, time.Minute, "login", passphrase); !strings.Contains(out, "Logged in") {
		t.Fatalf("A: login after the reboot: %q", out)
	}
	if _, err := vmClient(t, vmA2).Issue(ctx, apiclient.IssueRequest{CSR: csrs[0], Profile: "server"}); err != nil {
		t.Errorf("A after it rejoined: %v", err)
	}
}

// logBoot logs the boot's breakdown as status shows it (each phase, from the kernel's clock),
// with what came before the kernel's clock: the host's time from QEMU's start (or the reboot) to
// the API's first answer, minus the guest's time to its service's.
func logBoot(t *testing.T, vm *VM, toServing time.Duration) {
	t.Helper()
	re := regexp.MustCompile(`Boot:\s+(.*?service done ([0-9.]+)s after the kernel started)`)
	var m []string
	var out string
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(time.Second) {
		// The appliance marks the service once it has seen its API answer, a moment after the host.
		out = command(t, vm, "status", 30*time.Second)
		if m = re.FindStringSubmatch(out); m != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("status has no boot timeline ending with the service:\n%s", out)
			return
		}
	}
	guest, _ := time.ParseDuration(m[2] + "s")
	t.Logf("boot to serving %s (TCG): firmware, boot loader and kernel decompression %s (host), then %s",
		toServing.Round(100*time.Millisecond), (toServing - guest).Round(100*time.Millisecond), m[1])
	if s := regexp.MustCompile(`Service start:\s+(.*)`).FindStringSubmatch(out); s != nil {
		t.Logf("the service's start (from its process's creation to its API serving): %s", s[1])
	}
}

// pasteLines types text line by line, then an empty line, slowly enough for a serial line
// without flow control.
func pasteLines(vm *VM, text string) {
	for _, l := range strings.Split(strings.TrimSpace(text), "\n") {
		vm.SendLine(strings.TrimRight(l, "\r"))
		time.Sleep(20 * time.Millisecond)
	}
	vm.SendLine("")
}

// armored is the age-armored block in console output, or "".
func armored(out string) string {
	out = strings.ReplaceAll(out, "\r", "")
	i := strings.Index(out, "-----BEGIN AGE ENCRYPTED FILE-----")
	end := "-----END AGE ENCRYPTED FILE-----"
	j := strings.Index(out, end)
	if i < 0 || j < i {
		return ""
	}
	return out[i:j+len(end)] + "\n"
}

// vmClient is an API client of vm over its forwarded port, with the token and CA the console
// shows.
func vmClient(t *testing.T, vm *VM) *apiclient.Client {
	t.Helper()
	tokenFile, caFile := apiCredentials(t, vm, t.TempDir())
	token, _ := os.ReadFile(tokenFile)
	caPEM, _ := os.ReadFile(caFile)
	cl, err := apiclient.NewClient(fmt.Sprintf("127.0.0.1:%d", vm.HostPort(apiPort)), strings.TrimSpace(string(token)), caPEM)
	if err != nil {
		t.Fatal(err)
	}
	return cl
}

func caCert(t *testing.T, ctx context.Context, cl *apiclient.Client) *x509.Certificate {
	t.Helper()
	b, err := cl.CACertPEM(ctx)
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		t.Fatalf("the CA certificate: %q", b)
	}
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func get(t *testing.T, url string) []byte {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: HTTP %d %v", url, resp.StatusCode, err)
	}
	return b
}
