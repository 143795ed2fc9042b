package testvm

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/pkcs11"

	"github.com/enrollment-appliance/aeappliance/hsm/softhsm"
	"github.com/enrollment-appliance/aeappliance/provisioning/provapi"
	"github.com/enrollment-appliance/aeappliance/provisioning/provtest"
)

// startChronyd runs a real NTP server (chronyd serving its local clock, -x: it never
// sets this machine's clock) on a free UDP port of 127.0.0.1 and returns the port.
func startChronyd(t *testing.T) int {
	t.Helper()
	chronyd, err := exec.LookPath("chronyd")
	if err != nil {
		chronyd = "/usr/sbin/chronyd"
		if _, serr := os.Stat(chronyd); serr != nil {
			if os.Getenv("CI") == "true" {
				t.Fatalf("chronyd not found (make deps installs chrony): %v", err)
			}
			t.Skipf("chronyd not found: %v", err)
		}
	}
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := c.LocalAddr().(*net.UDPAddr).Port
	c.Close()
	dir := t.TempDir()
	conf := filepath.Join(dir, "chrony.conf")
	if err := os.WriteFile(conf, fmt.Appendf(nil, "port %d\nbindaddress 127.0.0.1\nallow 127.0.0.1\nlocal stratum 8\ncmdport 0\npidfile %s/chronyd.pid\ndriftfile %s/drift\n",
		port, dir, dir), 0o644); err != nil {
		t.Fatal(err)
	}
	args := []string{"-x", "-d", "-f", conf}
	if os.Geteuid() == 0 {
		args = append(args, "-u", "root")
	} else {
		args = append(args, "-U")
	}
	cmd := exec.Command(chronyd, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
		if t.Failed() {
			t.Logf("chronyd:\n%s", out.String())
		}
	})
	return port
}

var (
	toolsMu sync.Mutex
	tools   = map[string]string{} // built commands: ./cmd/NAME -> binary
)

// hostTool builds ./cmd/NAME for this host once per test binary and returns the binary.
func hostTool(t *testing.T, name string) string {
	t.Helper()
	toolsMu.Lock()
	defer toolsMu.Unlock()
	if bin, ok := tools[name]; ok {
		return bin
	}
	root, err := RepoRoot(".")
	if err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "testvm-"+name+"-")
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, name)
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/"+name)
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", name, err, out)
	}
	tools[name] = bin
	return bin
}

// aectl builds cmd/aectl once.
func aectl(t *testing.T) string { return hostTool(t, "aectl") }

// apiCredentials writes the API token and the CA certificate the console shows into dir.
func apiCredentials(t *testing.T, vm *VM, dir string) (tokenFile, caFile string) {
	t.Helper()
	out := command(t, vm, "api token", 30*time.Second)
	m := regexp.MustCompile(`(?m)^([A-Za-z0-9_-]{43})\r?$`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("api token: %q", out)
	}
	caOut := command(t, vm, "ca", 30*time.Second)
	chain := pemCerts(t, caOut)
	if len(chain) == 0 {
		t.Fatalf("ca: no certificate in %q", caOut)
	}
	tokenFile, caFile = filepath.Join(dir, "token"), filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(tokenFile, []byte(m[1]+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: chain[0].Raw}), 0o644); err != nil {
		t.Fatal(err)
	}
	return tokenFile, caFile
}

// powerOff powers the machine off at the console and waits for QEMU to exit.
func powerOff(t *testing.T, vm *VM) {
	t.Helper()
	if err := vm.SendLine("poweroff"); err != nil {
		t.Fatal(err)
	}
	must(t, vm, "Powering off.", time.Minute)
	if err := vm.Wait(time.Minute); err != nil {
		t.Fatalf("QEMU after poweroff: %v", err)
	}
}

// pemCerts are the certificates in console output.
func pemCerts(t *testing.T, out string) []*x509.Certificate {
	t.Helper()
	b := []byte(strings.ReplaceAll(out, "\r", ""))
	var certs []*x509.Certificate
	for {
		i := bytes.Index(b, []byte("-----BEGIN "))
		if i < 0 {
			return certs
		}
		var blk *pem.Block
		blk, b = pem.Decode(b[i:])
		if blk == nil {
			return certs
		}
		if blk.Type == "CERTIFICATE" {
			c, err := x509.ParseCertificate(blk.Bytes)
			if err != nil {
				t.Fatalf("a certificate on the console: %v", err)
			}
			certs = append(certs, c)
		}
	}
}

// issueThroughAectl takes the API token and the CA certificate from the console, has
// aectl (on this machine, over the forwarded API port) issue a server certificate, and
// verifies it up to root (the CA itself when root is nil).
func issueThroughAectl(t *testing.T, ctx context.Context, vm *VM, root *x509.Certificate) {
	t.Helper()
	dir := t.TempDir()
	tokenFile, caFile := apiCredentials(t, vm, dir)
	chain := pemCerts(t, command(t, vm, "ca", 30*time.Second))
	csrFile := filepath.Join(dir, "req.pem")
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "web.vm.example.test"},
		DNSNames: []string{"web.vm.example.test"}}, key)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(csrFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}), 0o644)
	args := []string{"--api", fmt.Sprintf("127.0.0.1:%d", vm.HostPort(apiPort)), "--token-file", tokenFile, "--ca-file", caFile,
		"--json", "issue", "--csr", csrFile, "--profile", "server"}
	cmd := exec.CommandContext(ctx, aectl(t), args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	b, err := cmd.Output()
	if err != nil {
		t.Fatalf("aectl issue over the forwarded API port: %v\n%s%s", err, b, stderr.String())
	}
	var res struct {
		Status, Serial, Certificate string
	}
	if err := json.Unmarshal(b, &res); err != nil || res.Status != "issued" {
		t.Fatalf("aectl issue: %v %s", err, b)
	}
	blk, _ := pem.Decode([]byte(res.Certificate))
	if blk == nil {
		t.Fatalf("aectl issue: no certificate in %s", b)
	}
	leaf, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	roots, inter := x509.NewCertPool(), x509.NewCertPool()
	if root == nil {
		roots.AddCert(chain[0])
	} else {
		roots.AddCert(root)
		for _, c := range chain {
			inter.AddCert(c)
		}
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, DNSName: "web.vm.example.test"}); err != nil {
		t.Errorf("the certificate the appliance issued (serial %s) does not verify: %v", res.Serial, err)
	}
	if !leaf.PublicKey.(*ecdsa.PublicKey).Equal(key.Public()) {
		t.Error("the issued certificate is not for the request's key")
	}
	// The same certificate, asked for through the console.
	if out := command(t, vm, "requests issued", 30*time.Second); !strings.Contains(out, "issued") {
		t.Errorf("requests issued: %q", out)
	}
}

// checkKeyNotExtractable copies the SoftHSM token off the powered-off data disk
// (debugfs, nothing mounted) and asks SoftHSM itself, through OpenSC's pkcs11-tool and
// the user PIN, about the CA key: sensitive and never extractable, and reading its value
// fails.
func checkKeyNotExtractable(t *testing.T, disk string) {
	t.Helper()
	module, err := softhsm.ModulePath()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if out, err := exec.Command("debugfs", "-R", "rdump /var/hsm "+dir, disk).CombinedOutput(); err != nil {
		t.Fatalf("debugfs rdump: %v\n%s", err, out)
	}
	conf := filepath.Join(dir, "softhsm2.conf")
	if err := softhsm.WriteConfig(conf, filepath.Join(dir, "hsm", "tokens")); err != nil {
		t.Fatal(err)
	}
	env := append(os.Environ(), "SOFTHSM2_CONF="+conf)
	run := func(args ...string) (string, error) {
		cmd := exec.Command("pkcs11-tool", append([]string{"--module", module, "--login", "--pin", userPIN}, args...)...)
		cmd.Env = env
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	out, err := run("--list-objects", "--type", "privkey")
	if err != nil {
		t.Fatalf("pkcs11-tool --list-objects: %v\n%s", err, out)
	}
	if !strings.Contains(out, "label:      ca-key") || !regexp.MustCompile(`Access:\s+sensitive, always sensitive, never extractable`).MatchString(out) {
		t.Errorf("the CA key's attributes in the token:\n%s", out)
	}
	// pkcs11-tool cannot even try to read a private key: ask the module directly for the
	// key's value, as anything that wanted to copy it would.
	t.Setenv("SOFTHSM2_CONF", conf)
	p := pkcs11.New(module)
	if p == nil {
		t.Fatalf("loading %s", module)
	}
	if err := p.Initialize(); err != nil {
		t.Fatal(err)
	}
	defer p.Destroy()
	defer p.Finalize()
	slots, err := p.GetSlotList(true)
	if err != nil || len(slots) == 0 {
		t.Fatalf("slots: %v %v", slots, err)
	}
	sh, err := p.OpenSession(slots[0], pkcs11.CKF_SERIAL_SESSION)
	if err != nil {
		t.Fatal(err)
	}
	defer p.CloseSession(sh)
	if err := p.Login(sh, pkcs11.CKU_USER, userPIN); err != nil {
		t.Fatal(err)
	}
	if err := p.FindObjectsInit(sh, []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_PRIVATE_KEY),
		pkcs11.NewAttribute(pkcs11.CKA_LABEL, "ca-key")}); err != nil {
		t.Fatal(err)
	}
	objs, _, err := p.FindObjects(sh, 4)
	p.FindObjectsFinal(sh)
	if err != nil || len(objs) != 1 {
		t.Fatalf("the CA key in the token: %d objects, %v", len(objs), err)
	}
	attrs, err := p.GetAttributeValue(sh, objs[0], []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_VALUE, nil)})
	var perr pkcs11.Error
	if !errors.As(err, &perr) || perr != pkcs11.CKR_ATTRIBUTE_SENSITIVE {
		t.Errorf("reading the CA key's value: want CKR_ATTRIBUTE_SENSITIVE, got %v (%d attributes)", err, len(attrs))
	}
}

// paste sends PEM to provision import, line by line, and an empty line.
func paste(t *testing.T, vm *VM, certs ...*x509.Certificate) string {
	t.Helper()
	if err := vm.SendLine("provision import"); err != nil {
		t.Fatal(err)
	}
	must(t, vm, "then an empty line:", 30*time.Second)
	var b []byte
	for _, c := range certs {
		b = append(b, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		if err := vm.SendLine(l); err != nil {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := vm.SendLine(""); err != nil {
		t.Fatal(err)
	}
	return must(t, vm, prompt, 2*time.Minute)
}

// TestApplianceSubordinate: the subordinate CA flow over the console. The request comes
// out on the console; a certificate for another key and a chain without its root are
// refused and change nothing; the chain signed by an external test root goes in; the
// appliance then issues (through aectl over the forwarded port) certificates that verify
// up to that root. The import and finish go over the provisioning API (HTTPS on the
// forwarded API port, the admin passphrase, the certificate pinned by the console).
func TestApplianceSubordinate(t *testing.T) {
	needVM(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	vm, _ := boot(t, ctx, nil)
	must(t, vm, prompt, 2*time.Minute)
	ceremonyToKey(t, vm)

	out := command(t, vm, "provision csr VM Issuing CA", 2*time.Minute)
	clean := strings.ReplaceAll(out, "\r", "")
	i := strings.Index(clean, "-----BEGIN CERTIFICATE REQUEST-----")
	if i < 0 {
		t.Fatalf("provision csr: no request in\n%s", out)
	}
	blk, _ := pem.Decode([]byte(clean[i:]))
	if blk == nil {
		t.Fatalf("provision csr: bad PEM in\n%s", out)
	}
	csr, err := x509.ParseCertificateRequest(blk.Bytes)
	if err != nil || csr.CheckSignature() != nil || csr.Subject.CommonName != "VM Issuing CA" {
		t.Fatalf("the request: %v, subject %s", err, csr.Subject)
	}
	root := provtest.NewRoot(t, "External Test Root")
	sub := root.Sign(t, csr.PublicKey, csr.Subject, true, time.Now().Add(5*365*24*time.Hour))

	otherKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	foreign := root.Sign(t, otherKey.Public(), csr.Subject, true, time.Now().Add(5*365*24*time.Hour))
	before := command(t, vm, "provision status", time.Minute)
	if out := paste(t, vm, foreign, root.Cert); !strings.Contains(out, "does not match the request: nothing changed") {
		t.Errorf("import of a certificate for another key: %q", out)
	}
	if out := paste(t, vm, sub); !strings.Contains(out, "no self-signed root certificate") {
		t.Errorf("import without the root: %q", out)
	}
	if after := command(t, vm, "provision status", time.Minute); after != before {
		t.Errorf("refused imports changed the ceremony:\nbefore:\n%s\nafter:\n%s", before, after)
	}
	// The rest over the provisioning API, through the forwarded port, its certificate
	// pinned by the fingerprint the console shows.
	pinned := provtest.PinnedByConsole(t, command(t, vm, "provision status", time.Minute))
	cl := provapi.NewClient(fmt.Sprintf("https://127.0.0.1:%d", vm.HostPort(apiPort)), passphrase, pinned)
	var herr *provapi.HTTPError
	if _, err := provapi.NewClient(fmt.Sprintf("https://127.0.0.1:%d", vm.HostPort(apiPort)), "not the passphrase", pinned).Status(ctx); !errors.As(err, &herr) || herr.StatusCode != 401 {
		t.Errorf("the provisioning API with a wrong passphrase: %v", err)
	}
	// Nothing listens as root, not even before provisioning: the API's port belongs to the
	// relay, an unprivileged user confined like the service.
	status := command(t, vm, "status", 30*time.Second)
	if !strings.Contains(status, "API relay:      uid 901, seccomp filter, no_new_privs, capabilities cap_net_bind_service") {
		t.Errorf("status before provisioning does not show the confined relay:\n%s", status)
	}
	if m := regexp.MustCompile(`Listening:\s+(.*)`).FindStringSubmatch(status); m == nil || strings.TrimSpace(m[1]) != "tcp 10.0.2.15:9443" {
		t.Errorf("listening sockets before provisioning: want only the relay's, not root's:\n%s", status)
	}
	if r, err := cl.Import(ctx, provtest.PEM(sub, root.Cert)); err != nil || !strings.Contains(r.String(), "verifies up to the root CN=External Test Root") {
		t.Fatalf("import over the provisioning API: %v %s", err, r)
	}
	if _, err := cl.Finish(ctx); err != nil {
		t.Fatalf("finish over the provisioning API: %v", err)
	}
	must(t, vm, "Provisioned over the API. Service running: API https://10.0.2.15:9443", 2*time.Minute)
	must(t, vm, prompt, 10*time.Second) // shown again after the notice
	issueThroughAectl(t, ctx, vm, root.Cert)
	if out := command(t, vm, "ca", 30*time.Second); len(pemCerts(t, out)) != 2 {
		t.Errorf("ca: want the subordinate CA and the root:\n%s", out)
	}
}

// fillDisk makes disk an ext4 file system with no free block left, not even for root
// (-m 0): one file takes all the space.
func fillDisk(t *testing.T, disk string) {
	t.Helper()
	dir := t.TempDir()
	content := filepath.Join(dir, "content")
	if err := os.Mkdir(content, 0o755); err != nil {
		t.Fatal(err)
	}
	// free is the free space in bytes.
	free := func() int64 {
		out, err := exec.Command("dumpe2fs", "-h", disk).CombinedOutput()
		if err != nil {
			t.Fatalf("dumpe2fs: %v\n%s", err, out)
		}
		m := regexp.MustCompile(`(?m)^Free blocks:\s+(\d+)`).FindSubmatch(out)
		bs := regexp.MustCompile(`(?m)^Block size:\s+(\d+)`).FindSubmatch(out)
		if m == nil || bs == nil {
			t.Fatalf("dumpe2fs: no free block count or block size:\n%s", out)
		}
		var n, size int64
		fmt.Sscan(string(m[1]), &n)
		fmt.Sscan(string(bs[1]), &size)
		return n * size
	}
	size := int64(0)
	for try := 0; try < 12; try++ {
		f, err := os.Create(filepath.Join(content, "filler"))
		if err != nil {
			t.Fatal(err)
		}
		chunk := bytes.Repeat([]byte{0xA5}, 1<<20) // not zeros: mke2fs -d keeps holes as holes
		for left := size; left > 0; left -= int64(len(chunk)) {
			if _, err := f.Write(chunk[:min(left, int64(len(chunk)))]); err != nil {
				t.Fatal(err)
			}
		}
		f.Close()
		if err := exec.Command("mkfs.ext4", "-q", "-F", "-m", "0", "-d", content, disk).Run(); err != nil {
			size -= 4096 // too big by an extent block: a little less
			continue
		}
		n := free()
		if n == 0 {
			return
		}
		size += n
	}
	t.Fatalf("could not fill %s", disk)
}

// TestApplianceFullDisk: a data disk without a free block. The appliance says so, the
// first step of the ceremony fails with a clear message and saves nothing, and the
// console stays usable.
func TestApplianceFullDisk(t *testing.T) {
	needVM(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	vm, disk := boot(t, ctx, func(disk string) { fillDisk(t, disk) })
	banner := must(t, vm, prompt, 2*time.Minute)
	if !strings.Contains(banner, "no space left on device") {
		t.Errorf("banner with a full data disk:\n%s", banner)
	}
	out := secretLines(t, vm, time.Minute, "provision passphrase", passphrase, passphrase)
	if !strings.Contains(out, "no space left on device") || strings.Contains(out, "Set the admin passphrase") {
		t.Errorf("provision passphrase on a full disk: %q", out)
	}
	if out := command(t, vm, "provision status", time.Minute); !strings.Contains(out, "[ ] passphrase not set") {
		t.Errorf("provision status after the failure: %q", out)
	}
	if out := command(t, vm, "help", 30*time.Second); !strings.Contains(out, "poweroff") {
		t.Errorf("help: %q", out)
	}
	powerOff(t, vm)
	if out, err := exec.Command("e2fsck", "-fn", disk).CombinedOutput(); err != nil {
		t.Errorf("e2fsck -fn: %v\n%s", err, out)
	}
}

// TestApplianceWithoutDisk: no data disk at all. The banner says what to do, state
// "no data disk", the ceremony refuses, the console stays usable.
func TestApplianceWithoutDisk(t *testing.T) {
	needVM(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	vm, _ := boot(t, ctx, nil, withoutDisk)
	banner := must(t, vm, prompt, 2*time.Minute)
	for _, want := range []string{"Data disk: none found", "attach one and reboot", "State:          no data disk"} {
		if !strings.Contains(strings.Join(strings.Fields(banner), " "), strings.Join(strings.Fields(want), " ")) {
			t.Errorf("banner lacks %q:\n%s", want, banner)
		}
	}
	if out := secretLines(t, vm, time.Minute, "provision passphrase"); !strings.Contains(out, "no usable data disk (see status); nothing changed") {
		t.Errorf("provision passphrase without a disk: %q", out)
	}
	if out := command(t, vm, "status", 30*time.Second); !strings.Contains(out, "Data disk:      unusable: none found") {
		t.Errorf("status: %q", out)
	}
	powerOff(t, vm)
}
