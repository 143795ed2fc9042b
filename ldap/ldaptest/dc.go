// Package ldaptest starts throwaway Samba Active Directory domain controllers for tests, and fills them with
// the sample domain of sample.go (users, nested groups, a computer, certificate templates with ACLs, and an
// enrollment service).
//
// The domain is provisioned once per machine into a cached template directory
// ($TMPDIR/aeappliance-samba-<hash of the recipe and the Samba version>); each StartDC copies it and starts
// `samba -F -M single` on its own loopback address 127.0.0.N (Samba's ports are fixed, so N tells DCs
// apart; an flock per N keeps separate `go test` processes apart). Only loopback addresses are ever used.
//
// Without Samba installed, StartDC skips the test, or fails it when CI=true.
package ldaptest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	goldap "github.com/go-ldap/ldap/v3"
)

// Fixed facts of every DC this package starts.
const (
	Realm         = "CORP.EXAMPLE.TEST"
	Domain        = "CORP"
	DomainDNS     = "corp.example.test"
	BaseDN        = "DC=corp,DC=example,DC=test"
	ConfigDN      = "CN=Configuration," + BaseDN
	HostName      = "dc1"
	DCDNSName     = HostName + "." + DomainDNS
	AdminPassword = "Adm1n-Passw0rd!"
	AdminUser     = "Administrator@" + DomainDNS
	AdminDN       = "CN=Administrator,CN=Users," + BaseDN

	startTimeout = 30 * time.Second
)

// recipe is hashed into the template directory's name: change it and every machine provisions again.
var recipe = []string{"samba-tool", "domain", "provision", "--realm=" + Realm, "--domain=" + Domain,
	"--server-role=dc", "--dns-backend=NONE", "--adminpass=" + AdminPassword, "--host-name=" + HostName,
	"--host-ip=127.0.0.1", "--option=interfaces=lo", "--option=bind interfaces only=yes"}

// spns are registered on the DC's account after provisioning. A full DC adds them at run time (its
// dnsupdate service runs samba_spnupdate), ours does not run that service; Kerberos binds to LDAP need them.
var spns = []string{"ldap/" + DCDNSName, "ldap/" + strings.ToUpper(HostName), "ldap/" + DCDNSName + "/" + DomainDNS}

// DC is one running (or stopped) Samba AD DC.
type DC struct {
	URL, LDAPSURL string // ldap://127.0.0.N (StartTLS) and ldaps://127.0.0.N
	CAFile        string // PEM of the CA that issued the DC's certificate (names: DCDNSName and IP)
	Realm, Domain string // CORP.EXAMPLE.TEST, CORP
	BaseDN        string
	ConfigDN      string
	AdminUser     string // Administrator@corp.example.test
	AdminPassword string
	IP            string // 127.0.0.N
	Dir           string // the DC's files

	ipLock *os.File
	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{}
	sample *Sample
}

// StartDC starts a fresh DC with an empty domain (see Seed) and stops it and removes its files when the test
// ends. It takes about a second, plus a few seconds for the first provisioning on a machine.
func StartDC(t testing.TB) *DC {
	t.Helper()
	needSamba(t)
	dc, err := Launch()
	if err != nil {
		t.Fatalf("ldaptest: %v", err)
	}
	t.Cleanup(dc.Close)
	return dc
}

// needSamba skips the test without Samba, or fails it when CI=true.
func needSamba(t testing.TB) {
	t.Helper()
	if err := haveSamba(); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("ldaptest: Samba is not installed (%v); CI=true needs it: run `make deps`", err)
		}
		t.Skipf("ldaptest: Samba is not installed (%v); `make deps` installs it", err)
	}
}

func haveSamba() error {
	_, err := exec.LookPath("samba")
	if err == nil {
		_, err = exec.LookPath("samba-tool")
	}
	return err
}

// Launch is StartDC for programs that are not tests (enrollbench): the caller stops the DC and
// removes its files with Close.
func Launch() (*DC, error) { return launchFrom("") }

// launchFrom starts a DC from a copy of the template directory tmpl ("" for the empty domain).
func launchFrom(tmpl string) (*DC, error) {
	if err := haveSamba(); err != nil {
		return nil, fmt.Errorf("samba is not installed (%v): run `make deps`", err)
	}
	if tmpl == "" {
		samba, _ := exec.LookPath("samba")
		var err error
		if tmpl, err = templateDir(samba, false); err != nil {
			return nil, fmt.Errorf("provisioning the template domain: %w", err)
		}
	}
	dir, err := os.MkdirTemp("", "aedc-") // short: Samba's unix sockets live under it
	if err != nil {
		return nil, err
	}
	dc := &DC{Realm: Realm, Domain: Domain, BaseDN: BaseDN, ConfigDN: ConfigDN, AdminUser: AdminUser,
		AdminPassword: AdminPassword, Dir: dir}
	fail := func(err error) (*DC, error) {
		dc.Close()
		return nil, err
	}
	if out, err := exec.Command("cp", "-a", tmpl+"/.", dir).CombinedOutput(); err != nil {
		return fail(fmt.Errorf("copying the template domain: %v: %s", err, out))
	}
	if dc.IP, dc.ipLock, err = reserveIP(); err != nil {
		return fail(err)
	}
	dc.URL, dc.LDAPSURL = "ldap://"+dc.IP, "ldaps://"+dc.IP
	if dc.CAFile, err = writeTLS(dir, dc.IP); err != nil {
		return fail(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "etc", "smb.conf"), []byte(smbConf(dir, dc.IP)), 0o644); err != nil {
		return fail(err)
	}
	if err := dc.start(); err != nil {
		return fail(err)
	}
	return dc, nil
}

// Close stops the DC and removes its files.
func (dc *DC) Close() {
	dc.stop()
	if dc.ipLock != nil {
		dc.ipLock.Close()
	}
	os.RemoveAll(dc.Dir)
}

// Start starts the DC's samba process (again, after Stop: same data, same address) and waits until LDAP
// answers.
func (dc *DC) Start(t testing.TB) {
	t.Helper()
	if err := dc.start(); err != nil {
		t.Fatalf("ldaptest: %v", err)
	}
}

func (dc *DC) start() error {
	dc.mu.Lock()
	defer dc.mu.Unlock()
	if dc.cmd != nil {
		return nil
	}
	out, err := os.OpenFile(filepath.Join(dc.Dir, "log", "samba.out"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer out.Close()
	cmd := exec.Command("samba", "-F", "-M", "single", "--debug-stdout", "-s", filepath.Join(dc.Dir, "etc", "smb.conf"))
	cmd.Stdout, cmd.Stderr = out, out
	// Kill samba if the test binary dies without running its cleanups.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting samba: %w", err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	dc.cmd, dc.exited = cmd, exited

	deadline := time.Now().Add(startTimeout)
	for {
		if err := probe(dc.IP); err == nil {
			return nil
		} else if time.Now().After(deadline) {
			dc.stopLocked()
			return fmt.Errorf("samba on %s did not answer LDAP within %v (%v); last log lines:\n%s", dc.IP,
				startTimeout, err, dc.logTail(30))
		}
		select {
		case <-exited:
			dc.cmd = nil
			return fmt.Errorf("samba on %s exited during start-up (%v); last log lines:\n%s", dc.IP,
				cmd.ProcessState, dc.logTail(30))
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Stop stops the samba process, keeping its data and address for Start.
func (dc *DC) Stop(t testing.TB) {
	t.Helper()
	dc.stop()
}

func (dc *DC) stop() {
	dc.mu.Lock()
	defer dc.mu.Unlock()
	dc.stopLocked()
}

func (dc *DC) stopLocked() {
	if dc.cmd == nil {
		return
	}
	pgid := dc.cmd.Process.Pid
	syscall.Kill(-pgid, syscall.SIGTERM)
	syscall.Kill(-pgid, syscall.SIGCONT) // in case Freeze stopped it
	select {
	case <-dc.exited:
	case <-time.After(5 * time.Second):
		syscall.Kill(-pgid, syscall.SIGKILL)
		<-dc.exited
	}
	dc.cmd = nil
}

// Freeze stops the samba process with SIGSTOP: the DC accepts TCP connections (the kernel does) but never
// answers, like a hung server. Thaw resumes it.
func (dc *DC) Freeze(t testing.TB) { dc.signal(t, syscall.SIGSTOP) }

// Thaw resumes a frozen DC.
func (dc *DC) Thaw(t testing.TB) { dc.signal(t, syscall.SIGCONT) }

func (dc *DC) signal(t testing.TB, sig syscall.Signal) {
	t.Helper()
	dc.mu.Lock()
	defer dc.mu.Unlock()
	if dc.cmd == nil {
		t.Fatalf("ldaptest: the DC on %s is not running", dc.IP)
	}
	if err := syscall.Kill(-dc.cmd.Process.Pid, sig); err != nil {
		t.Fatalf("ldaptest: signalling the DC: %v", err)
	}
}

// Pids are the process IDs of the DC's samba processes (its process group), for measuring their CPU
// time.
func (dc *DC) Pids() ([]int, error) {
	dc.mu.Lock()
	defer dc.mu.Unlock()
	if dc.cmd == nil {
		return nil, fmt.Errorf("the DC on %s is not running", dc.IP)
	}
	pgid := dc.cmd.Process.Pid
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if g, err := syscall.Getpgid(pid); err == nil && g == pgid {
			pids = append(pids, pid)
		}
	}
	return pids, nil
}

// probe does an anonymous RootDSE read, as a client would see the DC come up.
func probe(ip string) error {
	conn, err := goldap.DialURL("ldap://"+ip, goldap.DialWithDialer(&net.Dialer{Timeout: time.Second}))
	if err != nil {
		return err
	}
	defer conn.Close()
	conn.SetTimeout(2 * time.Second)
	_, err = conn.Search(goldap.NewSearchRequest("", goldap.ScopeBaseObject, goldap.NeverDerefAliases, 0, 0, false,
		"(objectClass=*)", []string{"defaultNamingContext"}, nil))
	return err
}

func (dc *DC) logTail(n int) string {
	var all []byte
	for _, f := range []string{"samba.out", "samba.log"} {
		b, _ := os.ReadFile(filepath.Join(dc.Dir, "log", f))
		all = append(all, b...)
	}
	lines := strings.Split(strings.TrimRight(string(all), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func smbConf(dir, ip string) string {
	return fmt.Sprintf(`# Written by ldaptest for one throwaway DC.
[global]
	netbios name = %[3]s
	realm = %[4]s
	workgroup = %[5]s
	server role = active directory domain controller
	server services = ldap, kdc
	interfaces = %[2]s/8
	bind interfaces only = yes
	private dir = %[1]s/private
	state directory = %[1]s/state
	cache directory = %[1]s/cache
	lock directory = %[1]s
	pid directory = %[1]s/run
	ncalrpc dir = %[1]s/run/ncalrpc
	binddns dir = %[1]s/bind-dns
	log file = %[1]s/log/samba.log
	logging = file
	log level = 1
	# Simple binds only over TLS; SASL (Kerberos) binds over TLS need no signing of their own, as on Windows
	# DCs (go-ldap's GSSAPI bind negotiates no SASL security layer). Samba's default "yes" would refuse them.
	ldap server require strong auth = allow_sasl_over_tls
	tls enabled = yes
	tls keyfile = %[1]s/tls/key.pem
	tls certfile = %[1]s/tls/cert.pem
	tls cafile = %[1]s/tls/ca.pem
`, dir, ip, strings.ToUpper(HostName), Realm, Domain)
}

// The template domains: the tests' (tdb, Samba's default store) and the populations' (lmdb, whose
// lookups stay fast with 100,000 objects where tdb's slow down as it grows).
var provisionOnce [2]struct {
	sync.Once
	dir string
	err error
}

// templateDir returns the provisioned template domain, provisioning it first if needed (mdb: with
// Samba's lmdb store). An flock serialises test processes; a marker file tells a complete template
// from one a killed process left half-written.
func templateDir(samba string, mdb bool) (string, error) {
	i, extra := 0, []string(nil)
	if mdb {
		i, extra = 1, []string{"--backend-store=mdb"}
	}
	provisionOnce[i].Do(func() {
		provisionOnce[i].dir, provisionOnce[i].err = provisionTemplate(samba, extra)
	})
	return provisionOnce[i].dir, provisionOnce[i].err
}

func provisionTemplate(samba string, extra []string) (string, error) {
	ver, err := exec.Command(samba, "-V").Output()
	if err != nil {
		return "", fmt.Errorf("samba -V: %w", err)
	}
	full := append(slices.Clone(recipe), extra...)
	h := sha256.Sum256([]byte(strings.Join(full, "\x00") + "\x00" + strings.Join(spns, "\x00") + "\x00" + string(ver)))
	dir := filepath.Join(os.TempDir(), "aeappliance-samba-"+hex.EncodeToString(h[:6]))
	marker := filepath.Join(dir, ".complete")
	lock, err := os.OpenFile(dir+".lock", os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return "", err
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return "", fmt.Errorf("flock %s: %w", lock.Name(), err)
	}
	if _, err := os.Stat(marker); err == nil {
		return dir, nil
	}
	os.RemoveAll(dir)
	args := append(slices.Clone(full[1:]), "--targetdir="+dir)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "samba-tool", args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		os.RemoveAll(dir)
		return "", fmt.Errorf("%s: %w\n%s", strings.Join(recipe, " "), err, out.String())
	}
	for _, spn := range spns {
		out, err := exec.CommandContext(ctx, "samba-tool", "spn", "add", spn, strings.ToUpper(HostName)+"$",
			"-H", filepath.Join(dir, "private", "sam.ldb")).CombinedOutput()
		if err != nil {
			os.RemoveAll(dir)
			return "", fmt.Errorf("samba-tool spn add %s: %w\n%s", spn, err, out)
		}
	}
	for _, d := range []string{"log", "run", "tls", "cache"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return "", err
		}
	}
	if err := os.WriteFile(marker, nil, 0o644); err != nil {
		return "", err
	}
	return dir, nil
}

// reserveIP picks 127.0.0.N (N ≥ 2) whose flock this process holds and whose LDAP port is free. The returned
// file holds the lock until closed.
func reserveIP() (string, *os.File, error) {
	for n := 2; n < 255; n++ {
		ip := fmt.Sprintf("127.0.0.%d", n)
		f, err := os.OpenFile(filepath.Join(os.TempDir(), fmt.Sprintf("aeappliance-samba-ip-%d.lock", n)),
			os.O_CREATE|os.O_RDWR, 0o600)
		if err != nil {
			return "", nil, err
		}
		if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
			f.Close()
			continue
		}
		if free(ip) {
			return ip, f, nil
		}
		f.Close()
	}
	return "", nil, errors.New("no free loopback address 127.0.0.2-254 for a DC")
}

func free(ip string) bool {
	for _, port := range []string{"389", "636", "88"} {
		l, err := net.Listen("tcp", net.JoinHostPort(ip, port))
		if err != nil {
			return false
		}
		l.Close()
	}
	return true
}
