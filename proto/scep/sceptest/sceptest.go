// Package sceptest is the test kit for SCEP (RFC 8894) servers and clients: it runs the real SCEP clients of
// docs/architecture.md section 11 (certmonger 0.79.17 as certmonger-session on a private D-Bus session bus,
// isolated in a temp dir: StartCertmonger), makes a software test PKI (a CA and the RA's signing and encryption certificates) and
// pkiMessages as our own Requester builds them with proto/scep, and holds the small helpers the codec's, the
// edge's and the end-to-end tests share to find and run tools and to read and write PEM files.
//
// It is a normal package used only by tests. A missing tool skips the test, or fails it when CI=true
// (make deps installs them all).
package sceptest

import (
	"context"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/enrollment-appliance/aeappliance/proto/scep"
)

// NeedTool finds a program the test needs: a missing one skips, or fails when CI=true.
func NeedTool(t testing.TB, name string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s is required when CI=true (make deps installs it): %v", name, err)
		}
		t.Skipf("%s not installed: %v", name, err)
	}
	return path
}

// Run runs a program with env added to the test's environment, killed after timeout, and returns its
// combined output.
func Run(t testing.TB, timeout time.Duration, env []string, name string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// WritePEM writes der as one PEM block of type typ into dir/name and returns the path.
func WritePEM(t testing.TB, dir, name, typ string, der []byte) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// ReadPEM reads the first PEM block of a file.
func ReadPEM(t testing.TB, path string) *pem.Block {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(b)
	if block == nil {
		t.Fatalf("%s holds no PEM", path)
	}
	return block
}

// ReadCert reads the first certificate of a PEM file.
func ReadCert(t testing.TB, path string) *x509.Certificate {
	t.Helper()
	c, err := x509.ParseCertificate(ReadPEM(t, path).Bytes)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return c
}

// ReadRSAKey reads an RSA key in PKCS#1 or PKCS#8, as certmonger and scepclient write them.
func ReadRSAKey(t testing.TB, path string) *rsa.PrivateKey {
	t.Helper()
	der := ReadPEM(t, path).Bytes
	if k, err := x509.ParsePKCS1PrivateKey(der); err == nil {
		return k
	}
	k, err := x509.ParsePKCS8PrivateKey(der)
	rk, ok := k.(*rsa.PrivateKey)
	if err != nil || !ok {
		t.Fatalf("%s: %T %v, want an RSA key", path, k, err)
	}
	return rk
}

// Certmonger is certmonger-session on a private D-Bus session bus, isolated in Dir as ARCHITECTURE §11
// says. Request id keeps its certificate in Dir/id.pem and its key in Dir/id.key.
type Certmonger struct {
	Dir string
	env []string
}

// StartCertmonger starts certmonger-session on its own bus; both stop when the test ends.
func StartCertmonger(t testing.TB) *Certmonger {
	t.Helper()
	NeedTool(t, "dbus-run-session")
	NeedTool(t, "getcert")
	daemon := "/usr/lib/certmonger/certmonger-session"
	if _, err := os.Stat(daemon); err != nil {
		NeedTool(t, daemon)
	}
	dir := t.TempDir()
	s := &Certmonger{Dir: dir, env: []string{"HOME=" + dir, "CERTMONGER_SYSTEM_LOCK_FILE=" + filepath.Join(dir, "lock")}}
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
			if _, err := s.Getcert(t, "list-cas"); err == nil {
				return s
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("certmonger-session did not come up on the private bus")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Getcert runs a getcert command against the session daemon.
func (s *Certmonger) Getcert(t testing.TB, command string, args ...string) (string, error) {
	t.Helper()
	return Run(t, 90*time.Second, s.env, "getcert", append([]string{command, "-s"}, args...)...)
}

// AddCA adds a SCEP CA named name at url (getcert add-scep-ca) with extra options, e.g. -R for https.
func (s *Certmonger) AddCA(t testing.TB, name, url string, extra ...string) {
	t.Helper()
	if out, err := s.Getcert(t, "add-scep-ca", append([]string{"-c", name, "-u", url}, extra...)...); err != nil {
		t.Fatalf("getcert add-scep-ca %s: %v\n%s", name, err, out)
	}
}

// CertFile is where request id keeps its certificate.
func (s *Certmonger) CertFile(id string) string { return filepath.Join(s.Dir, id+".pem") }

// KeyFile is where request id keeps its key.
func (s *Certmonger) KeyFile(id string) string { return filepath.Join(s.Dir, id+".key") }

// Submit asks certmonger, as request id, for a certificate for CN=cn from ca with the challenge, waits
// for up to a minute, and returns what `getcert list -i id` then says (CA_REJECTED, CA_WORKING for a
// pending request, MONITORING once issued, ...).
func (s *Certmonger) Submit(t testing.TB, ca, id, cn, challenge string) string {
	t.Helper()
	out, _ := s.Getcert(t, "request", "-c", ca, "-I", id, "-f", s.CertFile(id), "-k", s.KeyFile(id),
		"-L", challenge, "-N", "CN="+cn, "-w", "--wait-timeout", "60")
	list, _ := s.Getcert(t, "list", "-i", id)
	return out + list
}

// Request is Submit that must end with a certificate, which it returns.
func (s *Certmonger) Request(t testing.TB, ca, id, cn, challenge string) *x509.Certificate {
	t.Helper()
	status := s.Submit(t, ca, id, cn, challenge)
	if _, err := os.Stat(s.CertFile(id)); err != nil {
		t.Fatalf("getcert request %s: %v\n%s", id, err, status)
	}
	return ReadCert(t, s.CertFile(id))
}

// PendingPoll returns the GetCertInitial (CertPoll) message certmonger prepared for its pending request
// id, and the private key of the request it polls for. certmonger keeps them in its request file (its own
// format: name=value, continuation lines start with a space) as scep_gic, or as scep_gic_next when it
// made the request with a freshly generated "next" key (it does that now and then for a first request,
// keeping that key beside id.key under a marker suffix): the key returned is the one whose public key
// the message's signer certificate holds, so either case gives a matching pair.
func (s *Certmonger) PendingPoll(t testing.TB, id string) (gic []byte, key *rsa.PrivateKey) {
	t.Helper()
	// certmonger writes its request file after `getcert request -w` has returned (it saves state
	// as it goes): look again for a while before giving up.
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if gic = s.requestField(t, id, "scep_gic"); gic == nil {
			gic = s.requestField(t, id, "scep_gic_next")
		}
		if gic != nil {
			break
		}
		if time.Now().After(deadline) {
			list, _ := s.Getcert(t, "list", "-i", id)
			var files []string
			entries, _ := os.ReadDir(filepath.Join(s.Dir, "certmonger_requests_dir"))
			for _, e := range entries {
				b, _ := os.ReadFile(filepath.Join(s.Dir, "certmonger_requests_dir", e.Name()))
				files = append(files, e.Name()+":\n"+string(b))
			}
			t.Fatalf("certmonger keeps no scep_gic for request %s:\n%s\n%s", id, list, strings.Join(files, "\n"))
		}
	}
	msg, err := scep.ParsePKIMessage(gic)
	if err != nil || msg.MessageType != scep.CertPoll || msg.Signer == nil {
		t.Fatalf("certmonger's GetCertInitial for %s: %v", id, err)
	}
	candidates, _ := filepath.Glob(s.KeyFile(id) + ".*")
	for _, path := range append([]string{s.KeyFile(id)}, candidates...) {
		if k := ReadRSAKey(t, path); k.PublicKey.Equal(msg.Signer.PublicKey) {
			return gic, k
		}
	}
	t.Fatalf("none of certmonger's key files %s* holds the key of its GetCertInitial for %s", s.KeyFile(id), id)
	return nil, nil
}

// requestField reads the PEM value of field name in certmonger's file for request id, or nil.
func (s *Certmonger) requestField(t testing.TB, id, name string) []byte {
	dir := filepath.Join(s.Dir, "certmonger_requests_dir")
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		c, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			continue // replaced while we read the directory
		}
		if !strings.Contains(string(c), "\nid="+id+"\n") && !strings.HasPrefix(string(c), "id="+id+"\n") {
			continue
		}
		_, value, ok := strings.Cut(string(c), "\n"+name+"=")
		if !ok {
			return nil
		}
		if block, _ := pem.Decode([]byte(strings.ReplaceAll(value, "\n ", "\n"))); block != nil {
			return block.Bytes
		}
	}
	return nil
}

// SubmitPoll sends a GetCertInitial (CertPoll) message to url with certmonger's SCEP helper, encrypting to
// the RA certificate ra and trusting ca, and returns the DER CertRep it prints.
func (s *Certmonger) SubmitPoll(t testing.TB, url string, ra, ca *x509.Certificate, gic []byte) []byte {
	t.Helper()
	gicFile := WritePEM(t, s.Dir, "gic.pem", "PKCS7", gic)
	out, _ := Run(t, time.Minute, nil, "/usr/lib/certmonger/scep-submit", "-u", url,
		"-r", WritePEM(t, s.Dir, "ra.pem", "CERTIFICATE", ra.Raw), "-R", WritePEM(t, s.Dir, "ca.pem", "CERTIFICATE", ca.Raw),
		"-g", gicFile)
	block, _ := pem.Decode([]byte(out))
	if block == nil {
		t.Fatalf("scep-submit -g printed no PKCS#7:\n%s", out)
	}
	return block.Bytes
}

func tail(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
