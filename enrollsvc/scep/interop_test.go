package scep

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The real clients of ARCHITECTURE §11 against the handler on loopback: Debian's scepclient (micromdm scep
// 2.1.0) and certmonger 0.79.17.

func runTool(t *testing.T, timeout time.Duration, env []string, name string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func TestScepclient(t *testing.T) {
	bin := needTool(t, "scepclient")
	t.Parallel()
	p := pkiFor(t)
	b := newBackend(p)
	cfg := testConfig(p, b)
	cfg.AllowDES = true // scepclient 2.1.0 always encrypts with single DES
	srv := server(t, cfg, "scepclient")
	dir := t.TempDir()
	key, cert := filepath.Join(dir, "key.pem"), filepath.Join(dir, "cert.pem")
	scepclient := func(url, challenge, key, cert string, extra ...string) (string, error) {
		return runTool(t, time.Minute, nil, bin, append([]string{"-server-url=" + url, "-challenge=" + challenge,
			"-private-key=" + key, "-certificate=" + cert, "-cn=scep-device-1"}, extra...)...)
	}

	out, err := scepclient(srv.URL+"/scep/devices", testChallenge, key, cert)
	if err != nil {
		t.Fatalf("scepclient: %v\n%s", err, out)
	}
	first := readPEMCert(t, cert)
	if err := p.verifies(first); err != nil || first.Subject.CommonName != "scep-device-1" {
		t.Fatalf("scepclient obtained %v: %v", first.Subject, err)
	}

	// Run again with the certificate in place: scepclient sends a RenewalReq signed with it (same key, no
	// challenge).
	out, err = scepclient(srv.URL+"/scep/devices", "", key, cert)
	if err != nil {
		t.Fatalf("scepclient renewal: %v\n%s", err, out)
	}
	renewed := readPEMCert(t, cert)
	if err := p.verifies(renewed); err != nil || renewed.SerialNumber.Cmp(first.SerialNumber) == 0 {
		t.Fatalf("renewal gave serial %v (first %v): %v", renewed.SerialNumber, first.SerialNumber, err)
	}
	if enrolls, _ := b.calls(); enrolls != 2 {
		t.Errorf("backend saw %d enrollments, want 2", enrolls)
	}

	t.Run("wrong challenge", func(t *testing.T) {
		dir := t.TempDir()
		out, err := scepclient(srv.URL+"/scep/devices/pkiclient.exe", "wrong", filepath.Join(dir, "key.pem"), filepath.Join(dir, "cert.pem"))
		if err == nil || !strings.Contains(out, "failInfo: badRequest") {
			t.Errorf("scepclient with a wrong challenge: %v\n%s", err, out)
		}
	})
	t.Run("DES refused by default", func(t *testing.T) {
		cfg := testConfig(p, b)
		srv := server(t, cfg, "")
		dir := t.TempDir()
		out, err := scepclient(srv.URL+"/scep/devices", testChallenge, filepath.Join(dir, "key.pem"), filepath.Join(dir, "cert.pem"))
		if err == nil || !strings.Contains(out, "failInfo: badAlg") {
			t.Errorf("scepclient (DES) without AllowDES: %v\n%s", err, out)
		}
	})
	t.Run("P-256 CA", func(t *testing.T) {
		// scepclient encrypts to every certificate GetCACert returns unless told the RA's fingerprint, and
		// panics on an ECDSA key.
		p := newPKI(t, true)
		cfg := testConfig(p, newBackend(p))
		cfg.AllowDES = true
		srv := server(t, cfg, "")
		dir := t.TempDir()
		fp := sha256.Sum256(p.raCert.Raw)
		cert := filepath.Join(dir, "cert.pem")
		out, err := scepclient(srv.URL+"/scep/devices", testChallenge, filepath.Join(dir, "key.pem"), cert, "-ca-fingerprint="+hex.EncodeToString(fp[:]))
		if err != nil {
			t.Fatalf("scepclient: %v\n%s", err, out)
		}
		if err := p.verifies(readPEMCert(t, cert)); err != nil {
			t.Error(err)
		}
	})
}

// certmongerSession is certmonger-session on a private D-Bus session bus, isolated in a temp dir as
// ARCHITECTURE §11 says.
type certmongerSession struct {
	dir string
	env []string
}

func startCertmonger(t *testing.T) *certmongerSession {
	t.Helper()
	needTool(t, "dbus-run-session")
	needTool(t, "getcert")
	daemon := "/usr/lib/certmonger/certmonger-session"
	if _, err := os.Stat(daemon); err != nil {
		needTool(t, daemon)
	}
	dir := t.TempDir()
	s := &certmongerSession{dir: dir, env: []string{"HOME=" + dir, "CERTMONGER_SYSTEM_LOCK_FILE=" + filepath.Join(dir, "lock")}}
	for _, v := range []string{"XDG_CONFIG_HOME", "CERTMONGER_CONFIG_DIR", "CERTMONGER_REQUESTS_DIR", "CERTMONGER_CAS_DIR",
		"CERTMONGER_LOCAL_CA_DIR", "CERTMONGER_TMPDIR"} {
		d := filepath.Join(dir, strings.ToLower(v))
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
		s.env = append(s.env, v+"="+d)
	}
	// A session bus with no <servicedir>: getcert must not auto-start a second daemon in root's home.
	busConf := `<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig><type>session</type><listen>unix:dir=` + dir + `</listen><auth>EXTERNAL</auth>
<policy context="default"><allow send_destination="*" eavesdrop="true"/><allow eavesdrop="true"/><allow own="*"/></policy>
</busconfig>`
	if err := os.WriteFile(filepath.Join(dir, "bus.conf"), []byte(busConf), 0o600); err != nil {
		t.Fatal(err)
	}
	addrFile := filepath.Join(dir, "bus.address")
	cmd := exec.Command("dbus-run-session", "--config-file="+filepath.Join(dir, "bus.conf"), "--", "sh", "-c",
		`printf %s "$DBUS_SESSION_BUS_ADDRESS" > "$1" && exec "$2" -s -n -d 15`, "sh", addrFile, daemon)
	cmd.Env = append(os.Environ(), s.env...)
	log, err := os.Create(filepath.Join(dir, "certmonger.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		pgid := cmd.Process.Pid
		_ = syscall.Kill(-pgid, syscall.SIGTERM) // the process group we started: bus and daemon
		_ = cmd.Wait()
		// certmonger-session writes its state while it shuts down: wait for it before the temp dir goes.
		for i := 0; i < 200 && syscall.Kill(-pgid, 0) == nil; i++ {
			time.Sleep(50 * time.Millisecond)
		}
		log.Close()
		if t.Failed() {
			b, _ := os.ReadFile(log.Name())
			t.Logf("certmonger log (tail):\n%s", tail(string(b), 60))
		}
	})
	deadline := time.Now().Add(20 * time.Second)
	for {
		addr, _ := os.ReadFile(addrFile)
		if len(addr) > 0 {
			s.env = append(s.env, "DBUS_SESSION_BUS_ADDRESS="+string(addr))
			if _, err := s.getcert(t, "list-cas"); err == nil {
				return s
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("certmonger-session did not come up on the private bus")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// getcert runs a getcert command against the session daemon.
func (s *certmongerSession) getcert(t *testing.T, command string, args ...string) (string, error) {
	t.Helper()
	return runTool(t, 90*time.Second, s.env, "getcert", append([]string{command, "-s"}, args...)...)
}

func tail(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func TestCertmonger(t *testing.T) {
	cm := startCertmonger(t)
	t.Parallel()
	p := pkiFor(t)
	b := newBackend(p)
	srv := server(t, testConfig(p, b), "certmonger")
	for name, profile := range map[string]string{"TestSCEP": "devices", "TestSCEPPending": "pending"} {
		if out, err := cm.getcert(t, "add-scep-ca", "-c", name, "-u", srv.URL+"/scep/"+profile); err != nil {
			t.Fatalf("add-scep-ca: %v\n%s", err, out)
		}
	}
	certFile := filepath.Join(cm.dir, "cert.pem")
	first := cm.request(t, "TestSCEP", "good", "certmonger-host", testChallenge)
	if err := p.verifies(first); err != nil || first.Subject.CommonName != "certmonger-host" {
		t.Fatalf("certmonger obtained %v: %v", first.Subject, err)
	}

	t.Run("wrong challenge", func(t *testing.T) {
		out, _ := cm.getcert(t, "request", "-c", "TestSCEP", "-I", "bad", "-f", filepath.Join(cm.dir, "bad.pem"),
			"-k", filepath.Join(cm.dir, "bad.key"), "-L", "wrong", "-N", "CN=certmonger-bad", "-w", "--wait-timeout", "60")
		list, _ := cm.getcert(t, "list", "-i", "bad")
		// certmonger's words for failInfo badRequest.
		if !strings.Contains(list, "CA_REJECTED") || !strings.Contains(list, "is not permitted or is not supported by server") {
			t.Errorf("certmonger with a wrong challenge:\n%s\n%s", out, list)
		}
	})

	t.Run("resubmit and rekey", func(t *testing.T) {
		// Both send a PKCSReq signed with the certificate certmonger holds; rekey's CSR has a new key.
		prev := first
		for _, command := range []string{"resubmit", "rekey"} {
			if out, err := cm.getcert(t, command, "-i", "good", "-w", "--wait-timeout", "60"); err != nil {
				t.Fatalf("getcert %s: %v\n%s", command, err, out)
			}
			renewed := readPEMCert(t, certFile)
			sameKey := bytes.Equal(renewed.RawSubjectPublicKeyInfo, prev.RawSubjectPublicKeyInfo)
			if err := p.verifies(renewed); err != nil || renewed.SerialNumber.Cmp(prev.SerialNumber) == 0 || sameKey != (command == "resubmit") {
				list, _ := cm.getcert(t, "list", "-i", "good")
				t.Fatalf("%s gave serial %v (before %v), same key %t: %v\n%s", command, renewed.SerialNumber, prev.SerialNumber, sameKey, err, list)
			}
			if signer := b.lastSignerCert(); !signer.Equal(prev) {
				t.Errorf("%s was signed by %v, want the certificate held", command, signer.Subject)
			}
			prev = renewed
		}
	})

	t.Run("pending then CertPoll", func(t *testing.T) {
		out, _ := cm.getcert(t, "request", "-c", "TestSCEPPending", "-I", "pend", "-f", filepath.Join(cm.dir, "pending.pem"),
			"-k", filepath.Join(cm.dir, "pending.key"), "-L", testChallenge, "-N", "CN=certmonger-pending", "-w", "--wait-timeout", "60")
		if list, _ := cm.getcert(t, "list", "-i", "pend"); !strings.Contains(list, "CA_WORKING") {
			t.Fatalf("certmonger on a pending profile:\n%s\n%s", out, list)
		}
		// certmonger itself polls days later (it waits 604800 s) by sending its PKCSReq again; its helper
		// sends the GetCertInitial (CertPoll) message certmonger prepared.
		gic := cm.requestField(t, "pend", "scep_gic")
		key := readPEMKey(t, filepath.Join(cm.dir, "pending.key"))
		gicMsg, err := ParsePKIMessage(gic)
		if err != nil || gicMsg.MessageType != CertPoll {
			t.Fatalf("certmonger's scep_gic: %v", err)
		}
		q := requester{key: key, cert: gicMsg.Signer}
		rep, _ := q.certRep(t, p, gicMsg, cm.scepSubmitPoll(t, p, srv.URL+"/scep/pending", gic))
		if rep.PKIStatus != Pending {
			t.Fatalf("CertPoll before approval: status %d", rep.PKIStatus)
		}
		b.approve(gicMsg.TransactionID)
		rep, certs := q.certRep(t, p, gicMsg, cm.scepSubmitPoll(t, p, srv.URL+"/scep/pending", gic))
		if rep.PKIStatus != Success || len(certs) == 0 || p.verifies(certs[0]) != nil || !key.PublicKey.Equal(certs[0].PublicKey) {
			t.Fatalf("CertPoll after approval: status %d, %d certificates", rep.PKIStatus, len(certs))
		}
		// And certmonger's own way: the same PKCSReq again.
		if out, err := cm.getcert(t, "resubmit", "-i", "pend", "-w", "--wait-timeout", "60"); err != nil {
			t.Fatalf("getcert resubmit: %v\n%s", err, out)
		}
		if err := p.verifies(readPEMCert(t, filepath.Join(cm.dir, "pending.pem"))); err != nil {
			t.Error(err)
		}
	})
}

// request asks certmonger for a certificate for cn from ca, waits, and returns it.
func (s *certmongerSession) request(t *testing.T, ca, id, cn, challenge string) *x509.Certificate {
	t.Helper()
	certFile := filepath.Join(s.dir, "cert.pem")
	out, err := s.getcert(t, "request", "-c", ca, "-I", id, "-f", certFile, "-k", filepath.Join(s.dir, "key.pem"),
		"-L", challenge, "-N", "CN="+cn, "-w", "--wait-timeout", "60")
	if _, statErr := os.Stat(certFile); err != nil || statErr != nil {
		list, _ := s.getcert(t, "list", "-i", id)
		t.Fatalf("getcert request: %v\n%s\n%s", err, out, list)
	}
	return readPEMCert(t, certFile)
}

// requestField reads a PEM PKCS#7 that certmonger keeps in its file for request id (its own format:
// name=value, continuation lines start with a space).
func (s *certmongerSession) requestField(t *testing.T, id, name string) []byte {
	t.Helper()
	dir := filepath.Join(s.dir, "certmonger_requests_dir")
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		c, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(c), "\nid="+id+"\n") && !strings.HasPrefix(string(c), "id="+id+"\n") {
			continue
		}
		_, value, ok := strings.Cut(string(c), "\n"+name+"=")
		if !ok {
			break
		}
		block, _ := pem.Decode([]byte(strings.ReplaceAll(value, "\n ", "\n")))
		if block != nil {
			return block.Bytes
		}
	}
	t.Fatalf("certmonger keeps no %s for request %s", name, id)
	return nil
}

// scepSubmitPoll sends a GetCertInitial message with certmonger's SCEP helper and returns the CertRep it
// prints.
func (s *certmongerSession) scepSubmitPoll(t *testing.T, p *testPKI, url string, gic []byte) []byte {
	t.Helper()
	gicFile := pemFile(t, s.dir, "gic.pem", "PKCS7", gic)
	out, _ := runTool(t, time.Minute, nil, "/usr/lib/certmonger/scep-submit", "-u", url,
		"-r", pemFile(t, s.dir, "ra.pem", "CERTIFICATE", p.raCert.Raw), "-R", pemFile(t, s.dir, "ca.pem", "CERTIFICATE", p.caCert.Raw),
		"-g", gicFile)
	block, _ := pem.Decode([]byte(out))
	if block == nil {
		t.Fatalf("scep-submit -g printed no PKCS#7:\n%s", out)
	}
	return block.Bytes
}
