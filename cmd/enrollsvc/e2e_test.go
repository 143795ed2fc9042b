package main

// End-to-end tests: the real enrollsvc and aectl binaries, a real SoftHSM token, TLS over
// loopback, and the kill -9 the issue asks about.

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/enrollment-appliance/aeappliance/apiclient"
	"github.com/enrollment-appliance/aeappliance/config"
	"github.com/enrollment-appliance/aeappliance/enrollsvc/api"
	"github.com/enrollment-appliance/aeappliance/enrollsvc/store/pgtest"
	"github.com/enrollment-appliance/aeappliance/hsm/softhsm"
)

var binDir string

func TestMain(m *testing.M) {
	code, err := buildAndRun(m)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Exit(code)
}

func buildAndRun(m *testing.M) (int, error) {
	d, err := os.MkdirTemp("", "enrollsvc-e2e-bin-")
	if err != nil {
		return 0, err
	}
	defer os.RemoveAll(d)
	cmd := exec.Command("go", "build", "-o", d+"/", "github.com/enrollment-appliance/aeappliance/cmd/enrollsvc", "github.com/enrollment-appliance/aeappliance/cmd/aectl")
	if out, err := cmd.CombinedOutput(); err != nil {
		return 0, fmt.Errorf("building binaries: %v\n%s", err, out)
	}
	binDir = d
	return pgtest.Main(m), nil // stops the PostgreSQL server, if a test started one
}

func needSoftHSM(t *testing.T) {
	t.Helper()
	if _, err := softhsm.ModulePath(); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("SoftHSM2 is required on CI: %v", err)
		}
		t.Skipf("SoftHSM2 not installed (make deps): %v", err)
	}
}

// runBin runs a binary to completion and returns stdout, stderr and the error.
func runBin(t *testing.T, name string, args ...string) (string, string, error) {
	t.Helper()
	cmd := exec.Command(filepath.Join(binDir, name), args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	return stdout.String(), stderr.String(), err
}

func initDir(t *testing.T, extra ...string) string {
	t.Helper()
	needSoftHSM(t)
	dir := filepath.Join(t.TempDir(), "var")
	args := append([]string{"init", "--data", dir, "--ca-name", "E2E Root CA"}, extra...)
	if out, errOut, err := runBin(t, "enrollsvc", args...); err != nil {
		t.Fatalf("enrollsvc init: %v\n%s%s", err, out, errOut)
	}
	return dir
}

type server struct {
	cmd    *exec.Cmd
	mu     sync.Mutex // guards stdout, which the process's output goroutine writes
	stdout *bytes.Buffer
	stderr *bytes.Buffer
	done   chan error
}

// output is what the service printed on standard output so far.
func (s *server) output() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stdout.String()
}

// lockedWriter writes to w holding mu.
type lockedWriter struct {
	mu *sync.Mutex
	w  *bytes.Buffer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// startServe runs `enrollsvc serve` on a free port and waits until the API answers.
func startServe(t *testing.T, dir string) *server {
	t.Helper()
	os.Remove(filepath.Join(dir, config.APIAddrFile))
	s := &server{stdout: &bytes.Buffer{}, stderr: &bytes.Buffer{}, done: make(chan error, 1)}
	// Every end-to-end test runs the service confined, as the appliance does: a system call its
	// work needs and the allow-list lacks kills it, and the test fails.
	args := []string{"serve", "--data", dir, "--api-listen", "127.0.0.1:0", "--seccomp", "--landlock"}
	if cfg, err := config.Load(dir); err == nil && cfg.Enroll != nil {
		args = append(args, "--enroll-listen", "127.0.0.1:0")
	}
	httpConfigured := false
	if cfg, err := config.Load(dir); err == nil && cfg.HTTP != nil {
		httpConfigured = true
	}
	s.cmd = exec.Command(filepath.Join(binDir, "enrollsvc"), args...)
	s.cmd.Stdout, s.cmd.Stderr = &lockedWriter{mu: &s.mu, w: s.stdout}, s.stderr
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { s.done <- s.cmd.Wait() }()
	t.Cleanup(func() {
		if s.cmd.ProcessState == nil {
			s.cmd.Process.Kill()
			<-s.done
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case err := <-s.done:
			t.Fatalf("enrollsvc serve exited: %v\n%s\n%s", err, s.output(), s.stderr)
		default:
		}
		if cl, err := apiclient.DialDataDir(dir); err == nil {
			// The plain-HTTP listener, when configured, starts after the API: wait for it too.
			if err := cl.Health(context.Background()); err == nil && (!httpConfigured || strings.Contains(s.output(), "Revocation and SCEP listening")) {
				return s
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("enrollsvc serve did not answer within 30s\n%s", s.stderr)
	return nil
}

func newCSR(t *testing.T, cn string) string {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: cn}, DNSNames: []string{cn}}, k)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))
}

func aectlJSON(t *testing.T, dir string, v any, args ...string) {
	t.Helper()
	out, errOut, err := runBin(t, "aectl", append([]string{"--data", dir, "--json"}, args...)...)
	if err != nil {
		t.Fatalf("aectl %v: %v\n%s%s", args, err, out, errOut)
	}
	if err := json.Unmarshal([]byte(out), v); err != nil {
		t.Fatalf("aectl %v --json printed %q: %v", args, out, err)
	}
}

func TestServeAndAectl(t *testing.T) {
	dir := initDir(t, "--key", "rsa-2048")
	s := startServe(t, dir)
	if !strings.Contains(s.output(), "Local API listening on https://127.0.0.1:") || !strings.Contains(s.output(), "aectl --data") {
		t.Errorf("serve printed %q, want where the API listens and how to use aectl", s.output())
	}

	// Once the API serves, the service has written how long each step of its start took (the
	// appliance's status shows it): from its process's creation, every step named, in order.
	startup, err := os.ReadFile(filepath.Join(dir, config.StartupFile))
	if err != nil {
		t.Fatalf("the start's timeline: %v", err)
	}
	if !regexp.MustCompile(`^[0-9]+\.[0-9]{2}s: program load and init [0-9.]+s, configuration and confinement [0-9.]+s, HSM [0-9.]+s, ` +
		`store [0-9.]+s, API certificate and settings [0-9.]+s, first CRLs and SCEP [0-9.]+s, health check [0-9.]+s, ` +
		`API and start event [0-9.]+s, other listeners [0-9.]+s, background tasks [0-9.]+s\n$`).Match(startup) {
		t.Errorf("the start's timeline: %q", startup)
	}

	var st apiclient.Status
	aectlJSON(t, dir, &st, "status")
	if !st.Healthy || !st.HSM.OK || !st.Store.OK || st.CA.KeyType != "rsa-2048" || !strings.HasPrefix(st.CA.KeyURI, "pkcs11:") {
		t.Errorf("status = %+v, want healthy with an rsa-2048 key in the HSM", st)
	}
	if out, _, err := runBin(t, "aectl", "--data", dir, "status"); err != nil || !strings.Contains(out, "HSM:") {
		t.Errorf("aectl status = %q, %v", out, err)
	}
	caPEM, _, err := runBin(t, "aectl", "--data", dir, "ca", "cert")
	if err != nil {
		t.Fatal(err)
	}
	if disk, _ := os.ReadFile(filepath.Join(dir, config.CACertFile)); caPEM != string(disk) {
		t.Errorf("aectl ca cert printed something other than the CA certificate")
	}

	csrFile := filepath.Join(t.TempDir(), "req.csr")
	os.WriteFile(csrFile, []byte(newCSR(t, "web.example.test")), 0o600)
	var res apiclient.IssueResponse
	aectlJSON(t, dir, &res, "issue", "--csr", csrFile, "--profile", "server")
	if res.Status != "issued" || res.Serial == "" || res.RequestID == 0 {
		t.Fatalf("issue = %+v, want issued with serial and request id", res)
	}
	leaf := filepath.Join(t.TempDir(), "leaf.pem")
	os.WriteFile(leaf, []byte(res.Certificate), 0o600)
	if out, err := exec.Command("openssl", "verify", "-CAfile", filepath.Join(dir, config.CACertFile), leaf).CombinedOutput(); err != nil {
		t.Errorf("openssl verify: %v %s", err, out)
	}

	var certs []apiclient.Certificate
	aectlJSON(t, dir, &certs, "certs")
	found := false
	for _, c := range certs {
		found = found || c.Serial == res.Serial
	}
	if !found || len(certs) != 2 { // the API's own certificate and this one
		t.Errorf("certs = %+v, want the API certificate and %s", certs, res.Serial)
	}
	var one apiclient.Certificate
	aectlJSON(t, dir, &one, "cert", res.Serial)
	if strings.TrimSpace(one.PEM) != strings.TrimSpace(res.Certificate) {
		t.Errorf("cert %s PEM differs from what issue returned", res.Serial)
	}
	var reqs []apiclient.Request
	aectlJSON(t, dir, &reqs, "requests", "--state", "issued")
	if len(reqs) != 2 {
		t.Errorf("issued requests = %+v, want 2", reqs)
	}
	var evs []apiclient.Event
	aectlJSON(t, dir, &evs, "events", "--id", "2101")
	if len(evs) != 2 || evs[1].Fields["serial"] != res.Serial || evs[1].Category != "Operational" {
		t.Errorf("events 2101 = %+v, want two, the last for %s", evs, res.Serial)
	}

	// A refused request prints every reason and the request ID, and exits non-zero.
	bad := filepath.Join(t.TempDir(), "bad.csr")
	os.WriteFile(bad, []byte("-----BEGIN CERTIFICATE REQUEST-----\nMIIB\n-----END CERTIFICATE REQUEST-----\n"), 0o600)
	out, _, err := runBin(t, "aectl", "--data", dir, "--json", "issue", "--csr", bad)
	var denied apiclient.IssueResponse
	if err == nil || json.Unmarshal([]byte(out), &denied) != nil || denied.Status != "denied" || len(denied.Reasons) == 0 {
		t.Errorf("issue of a malformed CSR = %q, %v; want status denied with reasons and an error exit", out, err)
	}

	// Ctrl-C stops it cleanly.
	s.cmd.Process.Signal(os.Interrupt)
	select {
	case err := <-s.done:
		if err != nil {
			t.Errorf("serve exited with %v after SIGINT, want 0\n%s", err, s.stderr)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("serve did not stop within 20s of SIGINT")
	}
	if !strings.Contains(s.output(), "enrollsvc stopped") {
		t.Errorf("serve output %q lacks the stop message", s.output())
	}
	if _, err := os.Stat(filepath.Join(dir, config.APIAddrFile)); !errors.Is(err, os.ErrNotExist) {
		t.Error("the API address file was left behind")
	}
}

func TestAPIRefusesBadCredentialsAndInput(t *testing.T) {
	dir := initDir(t)
	startServe(t, dir)
	ctx := context.Background()
	good, err := apiclient.DialDataDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	addrB, _ := os.ReadFile(filepath.Join(dir, config.APIAddrFile))
	caPEM, _ := os.ReadFile(filepath.Join(dir, config.CACertFile))
	addr := strings.TrimSpace(string(addrB))
	countCerts := func() int64 {
		st, err := good.Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return st.Store.Certificates
	}
	before := countCerts()
	for _, tok := range []string{"", "not-the-token"} {
		cl, err := apiclient.NewClient(addr, tok, caPEM)
		if err != nil {
			t.Fatal(err)
		}
		_, err = cl.Issue(ctx, apiclient.IssueRequest{CSR: newCSR(t, "x.example.test"), Profile: "server"})
		var he *apiclient.HTTPError
		if !errors.As(err, &he) || he.StatusCode != http.StatusUnauthorized || !strings.Contains(he.Body.Error, "authentication required") {
			t.Errorf("issue with token %q = %v, want 401 with a clear message", tok, err)
		}
		if _, err := cl.Status(ctx); !errors.As(err, &he) || he.StatusCode != http.StatusUnauthorized {
			t.Errorf("status with token %q = %v, want 401", tok, err)
		}
		if _, err := cl.Events(ctx, apiclient.EventQuery{}); !errors.As(err, &he) || he.StatusCode != http.StatusUnauthorized {
			t.Errorf("events with token %q = %v, want 401", tok, err)
		}
	}
	if n := countCerts(); n != before {
		t.Errorf("certificates %d after refused calls, want %d", n, before)
	}
	// A client cannot choose the address its failures are recorded under.
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+addr+"/api/v1/status", nil)
	req.Header.Set("Authorization", "Bearer not-the-token")
	req.Header.Set("X-Forwarded-For", "203.0.113.66")
	req.Header.Set("X-Real-IP", "203.0.113.66")
	resp, err := (&http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	evs, err := good.Events(ctx, apiclient.EventQuery{ID: 3001})
	if err != nil || len(evs) != 7 {
		t.Errorf("API auth failure events = %d (%v), want 7", len(evs), err)
	}
	for _, e := range evs {
		if strings.Contains(fmt.Sprint(e.Fields), "not-the-token") {
			t.Errorf("an audit event records the presented token: %+v", e)
		}
		if e.Fields["remote"] != "127.0.0.1" {
			t.Errorf("an audit event records the remote address %v, want the peer's 127.0.0.1", e.Fields["remote"])
		}
	}

	// Bad input: each a clear 4xx, none changes anything.
	for _, tc := range []struct {
		name string
		in   apiclient.IssueRequest
		code int
	}{
		{"malformed CSR", apiclient.IssueRequest{CSR: "-----BEGIN CERTIFICATE REQUEST-----\nMIIBAAAA\n-----END CERTIFICATE REQUEST-----\n", Profile: "server"}, 400},
		{"not PEM", apiclient.IssueRequest{CSR: "hello", Profile: "server"}, 400},
		{"unknown profile", apiclient.IssueRequest{CSR: newCSR(t, "y.example.test"), Profile: "codesigning"}, 400},
		{"validity out of range", apiclient.IssueRequest{CSR: newCSR(t, "y.example.test"), Profile: "server", ValidityDays: 100000}, 400},
		{"oversized body", apiclient.IssueRequest{CSR: strings.Repeat("A", api.MaxBody+1), Profile: "server"}, 413},
	} {
		_, err := good.Issue(ctx, tc.in)
		var he *apiclient.HTTPError
		if !errors.As(err, &he) || he.StatusCode != tc.code || he.Body.Error == "" {
			t.Errorf("%s: issue = %v, want %d with a message", tc.name, err, tc.code)
		}
	}
	if _, err := good.Certificate(ctx, "zz-not-hex"); err == nil {
		t.Error("certificate zz-not-hex: want 400")
	}
	var he *apiclient.HTTPError
	if _, err := good.Certificate(ctx, "1234abcd"); !errors.As(err, &he) || he.StatusCode != 404 {
		t.Errorf("unknown serial = %v, want 404", err)
	}
	if _, err := good.Requests(ctx, apiclient.RequestQuery{State: "approved-ish"}); !errors.As(err, &he) || he.StatusCode != 400 {
		t.Errorf("requests with a bad state = %v, want 400", err)
	}
	if n := countCerts(); n != before {
		t.Errorf("certificates %d after bad input, want %d", n, before)
	}
}

// Killing the service with SIGKILL in the middle of a burst loses no certificate a caller
// received, and the service starts again on the same data directory.
func TestSIGKILLMidBurstLosesNothing(t *testing.T) {
	dir := initDir(t)
	s := startServe(t, dir)
	cl, err := apiclient.DialDataDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	received := map[string]string{} // serial → PEM
	killAt := 500
	killed := make(chan struct{})
	var once sync.Once
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			csr := newCSR(t, fmt.Sprintf("burst%d.example.test", w))
			for {
				res, err := cl.Issue(context.Background(), apiclient.IssueRequest{CSR: csr, Profile: "server"})
				if err != nil {
					return // the service is gone
				}
				mu.Lock()
				received[res.Serial] = res.Certificate
				n := len(received)
				mu.Unlock()
				if n >= killAt {
					once.Do(func() {
						s.cmd.Process.Signal(syscall.SIGKILL)
						close(killed)
					})
				}
			}
		}()
	}
	select {
	case <-killed:
	case <-time.After(2 * time.Minute):
		t.Fatal("the burst did not reach the kill point in 2 minutes")
	}
	wg.Wait()
	<-s.done
	if len(received) < killAt {
		t.Fatalf("received %d certificates, want at least %d", len(received), killAt)
	}

	startServe(t, dir)
	cl2, err := apiclient.DialDataDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for serial, p := range received {
		c, err := cl2.Certificate(context.Background(), serial)
		if err != nil {
			t.Errorf("certificate %s that a caller received is gone after SIGKILL: %v", serial, err)
			continue
		}
		if strings.TrimSpace(c.PEM) != strings.TrimSpace(p) {
			t.Errorf("certificate %s differs after restart", serial)
		}
	}
	// No request is left half-done as issued without its certificate.
	reqs, err := cl2.Requests(context.Background(), apiclient.RequestQuery{State: "issued", Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range reqs {
		if _, err := cl2.Certificate(context.Background(), r.Serial); err != nil {
			t.Errorf("request %d is issued but its certificate %s is missing: %v", r.ID, r.Serial, err)
		}
	}
	t.Logf("%d certificates received before SIGKILL, all present after restart", len(received))
}

func TestCommandsHaveHelp(t *testing.T) {
	for _, args := range [][]string{{"enrollsvc", "-h"}, {"enrollsvc", "init", "-h"}, {"enrollsvc", "serve", "-h"}, {"enrollsvc", "relay", "-h"}, {"enrollsvc", "token", "-h"}, {"enrollsvc", "restore", "-h"}, {"enrollsvc", "store", "-h"}, {"enrollsvc", "join", "-h"},
		{"aectl", "-h"}, {"aectl", "certs", "-h"}, {"aectl", "backup", "-h"}, {"aectl", "syslog", "-h"}} {
		out, errOut, _ := runBin(t, args[0], args[1:]...)
		if !strings.Contains(out+errOut, "Usage") {
			t.Errorf("%v printed %q, want usage text", args, out+errOut)
		}
	}
	_, errOut, err := runBin(t, "enrollsvc", "init", "--data", filepath.Join(t.TempDir(), "x"), "--ca-name", "X", "--key", "dsa-512")
	if err == nil || !strings.Contains(errOut, "dsa-512") || !strings.Contains(errOut, "ecdsa-p256") {
		t.Errorf("init --key dsa-512: %v %q, want an error naming the bad and the valid key types", err, errOut)
	}
}
