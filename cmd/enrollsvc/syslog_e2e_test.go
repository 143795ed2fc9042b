package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/enrollment-appliance/aeappliance/apiclient"
)

// rsyslog is a real rsyslogd (Debian's, unpacked by make tools) receiving RFC 5425 syslog over
// TLS and RFC 5426 over UDP on loopback, writing each message as it came into a file.
type rsyslog struct {
	t                *testing.T
	bin, modules     string
	dir              string
	tcpPort, udpPort string
	caPEM            string
	cmd              *exec.Cmd
}

func startRsyslog(t *testing.T) *rsyslog {
	t.Helper()
	bin, err := exec.LookPath("rsyslogd")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("rsyslogd is required on CI (make tools unpacks Debian's): %v", err)
		}
		t.Skipf("rsyslogd not found (make tools): %v", err)
	}
	real, err := filepath.EvalSymlinks(bin)
	if err != nil {
		t.Fatal(err)
	}
	// .../usr/sbin/rsyslogd -> .../usr/lib/x86_64-linux-gnu/rsyslog
	r := &rsyslog{t: t, bin: real, modules: filepath.Join(filepath.Dir(filepath.Dir(real)), "lib", "x86_64-linux-gnu", "rsyslog"),
		dir: t.TempDir(), tcpPort: freePort(t), udpPort: freePort(t)}
	r.caPEM = writeTLSFiles(t, r.dir)
	conf := fmt.Sprintf(`global(workDirectory=%[1]q
  DefaultNetstreamDriver="gtls"
  DefaultNetstreamDriverCAFile=%[2]q DefaultNetstreamDriverCertFile=%[3]q DefaultNetstreamDriverKeyFile=%[4]q)
module(load="imtcp" StreamDriver.Name="gtls" StreamDriver.Mode="1" StreamDriver.AuthMode="anon")
input(type="imtcp" address="127.0.0.1" port=%[5]q)
module(load="imudp")
input(type="imudp" address="127.0.0.1" port=%[6]q ruleset="udp")
template(name="raw" type="string" string="%%rawmsg%%\n")
ruleset(name="udp") { action(type="omfile" file=%[7]q template="raw") }
action(type="omfile" file=%[8]q template="raw")
`, r.dir, filepath.Join(r.dir, "ca.pem"), filepath.Join(r.dir, "server.pem"), filepath.Join(r.dir, "server.key"),
		r.tcpPort, r.udpPort, filepath.Join(r.dir, "udp.log"), filepath.Join(r.dir, "tls.log"))
	if err := os.WriteFile(filepath.Join(r.dir, "rsyslog.conf"), []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(r.bin, "-N1", "-f", filepath.Join(r.dir, "rsyslog.conf"), "-M", r.modules).CombinedOutput(); err != nil {
		t.Fatalf("rsyslogd -N1 (configuration check): %v\n%s", err, out)
	}
	r.start()
	t.Cleanup(r.stop)
	return r
}

func (r *rsyslog) start() {
	r.t.Helper()
	r.cmd = exec.Command(r.bin, "-n", "-f", filepath.Join(r.dir, "rsyslog.conf"), "-i", filepath.Join(r.dir, "pid"), "-M", r.modules)
	r.cmd.Stdout, r.cmd.Stderr = os.Stderr, os.Stderr
	if err := r.cmd.Start(); err != nil {
		r.t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		c, err := net.Dial("tcp", "127.0.0.1:"+r.tcpPort)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			r.t.Fatalf("rsyslogd does not listen on %s: %v", r.tcpPort, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (r *rsyslog) stop() {
	if r.cmd != nil && r.cmd.ProcessState == nil {
		r.cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { r.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			r.cmd.Process.Kill()
			<-done
		}
	}
}

// writeTLSFiles makes a CA and a certificate for 127.0.0.1 in dir and returns the CA's PEM.
func writeTLSFiles(t *testing.T, dir string) string {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "syslog test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour), IsCA: true,
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, caKey.Public(), caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour), IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, KeyUsage: x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, key.Public(), caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, _ := x509.MarshalECPrivateKey(key)
	caPEM := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}))
	for name, content := range map[string]string{"ca.pem": caPEM,
		"server.pem": string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})),
		"server.key": string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}))} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return caPEM
}

var auditLine = regexp.MustCompile(`^<(\d+)>1 \S+ \S+ enrollsvc - audit \[audit@32473 seq="(\d+)" id="(\d+)" category="\w+" instance="[^"]*" n="\d+" prev="[0-9a-f]*" hash="([0-9a-f]*)"\]`)

// received reads the audit events a log file holds: seq -> hash, and the seqs in the order they
// came, repeats dropped (the stream sends again what may have been lost when a connection broke).
func received(t *testing.T, path string) (map[int64]string, []int64, []string) {
	t.Helper()
	b, _ := os.ReadFile(path)
	hashes := map[int64]string{}
	var order []int64
	var logs []string
	for _, line := range strings.Split(string(b), "\n") {
		if strings.Contains(line, " enrollsvc - log - ") {
			logs = append(logs, line)
			continue
		}
		m := auditLine.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		seq, _ := strconv.ParseInt(m[2], 10, 64)
		if pri, _ := strconv.Atoi(m[1]); pri/8 != 13 {
			t.Errorf("audit event %d with facility %d, want 13 (log audit)", seq, pri/8)
		}
		if _, seen := hashes[seq]; !seen {
			order = append(order, seq)
		}
		hashes[seq] = m[4]
	}
	return hashes, order, logs
}

// TestRemoteSyslog: with a remote syslog server set, a real rsyslog receives every audit event
// after that moment over TLS, in order and with its chain hash; the log stream carries the
// service's log but no audit event; events recorded while the server is down arrive, in order,
// once it is back; and UDP works when an administrator chooses it.
func TestRemoteSyslog(t *testing.T) {
	rs := startRsyslog(t)
	dir := initDir(t)
	startServe(t, dir)
	caFile := filepath.Join(rs.dir, "ca.pem")

	if out, errOut, err := runBin(t, "aectl", "--data", dir, "syslog", "set", "--address", "127.0.0.1:"+rs.tcpPort,
		"--transport", "tls", "--ca-file", caFile); err != nil {
		t.Fatalf("aectl syslog set: %v\n%s%s", err, out, errOut)
	}
	var since []apiclient.Event
	aectlJSON(t, dir, &since, "events", "--newest", "--limit", "1")
	from := since[0].Seq // the setting's own event: the stream starts after what was there

	issueSome := func(n int, prefix string) {
		t.Helper()
		for i := range n {
			csr := filepath.Join(t.TempDir(), "req.csr")
			os.WriteFile(csr, []byte(newCSR(t, fmt.Sprintf("%s-%d.example.com", prefix, i))), 0o600)
			var res struct{ Serial string }
			aectlJSON(t, dir, &res, "issue", "--csr", csr, "--profile", "server")
		}
	}
	// expect waits until the file holds every event of the store after from, and checks their
	// order and hashes.
	expect := func(path string, from int64) []string {
		t.Helper()
		var evs []apiclient.Event
		aectlJSON(t, dir, &evs, "events", "--after", strconv.FormatInt(from, 10), "--limit", "1000")
		if len(evs) == 0 {
			t.Fatal("no events to expect")
		}
		deadline := time.Now().Add(30 * time.Second)
		for {
			hashes, order, logs := received(t, path)
			missing := 0
			for _, e := range evs {
				if _, ok := hashes[e.Seq]; !ok {
					missing++
				}
			}
			if missing == 0 {
				for i := 1; i < len(order); i++ {
					if order[i] <= order[i-1] {
						t.Fatalf("audit events arrived out of order: %v", order)
					}
				}
				for _, e := range evs {
					if hashes[e.Seq] != e.Hash {
						t.Errorf("event %d arrived with hash %q, the store has %q", e.Seq, hashes[e.Seq], e.Hash)
					}
				}
				return logs
			}
			if time.Now().After(deadline) {
				t.Fatalf("%d of %d audit events after seq %d never reached the syslog server (got %v)", missing, len(evs), from, order)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	issueSome(3, "tls")
	// An API error is logged (not an audit event): it goes to the log stream.
	runBin(t, "aectl", "--data", dir, "crl", "publish")
	tlsLog := filepath.Join(rs.dir, "tls.log")
	logs := expect(tlsLog, from)
	var st apiclient.SyslogStatus
	aectlJSON(t, dir, &st, "syslog")
	if st.Address != "127.0.0.1:"+rs.tcpPort || st.Transport != "tls" {
		t.Errorf("syslog status = %+v", st)
	}
	deadline := time.Now().Add(20 * time.Second)
	for len(logs) == 0 || !strings.Contains(strings.Join(logs, "\n"), "api request failed") {
		if time.Now().After(deadline) {
			t.Fatalf("the log stream never carried the API's error line; it carried %q", logs)
		}
		time.Sleep(100 * time.Millisecond)
		_, _, logs = received(t, tlsLog)
	}
	for _, l := range logs {
		if strings.Contains(l, `"audit"`) {
			t.Errorf("the log stream carries an audit event: %s", l)
		}
	}

	// The server goes away; events recorded meanwhile arrive once it is back.
	rs.stop()
	issueSome(2, "outage") // the stream fails to send them, and backs off
	rs.start()
	expect(tlsLog, from)

	// UDP, when chosen.
	if out, errOut, err := runBin(t, "aectl", "--data", dir, "syslog", "set", "--address", "127.0.0.1:"+rs.udpPort,
		"--transport", "udp"); err != nil {
		t.Fatalf("aectl syslog set udp: %v\n%s%s", err, out, errOut)
	}
	var last []apiclient.Event
	aectlJSON(t, dir, &last, "events", "--newest", "--limit", "1")
	issueSome(1, "udp")
	expect(filepath.Join(rs.dir, "udp.log"), last[0].Seq)

	// A bad setting is refused and changes nothing.
	if _, _, err := runBin(t, "aectl", "--data", dir, "syslog", "set", "--address", "nowhere", "--transport", "udp"); err == nil {
		t.Error("a syslog address without a port was accepted")
	}
	aectlJSON(t, dir, &st, "syslog")
	if st.Address != "127.0.0.1:"+rs.udpPort {
		t.Errorf("after a refused setting, syslog = %+v", st)
	}
}
