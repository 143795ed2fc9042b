package provapi_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/enrollment-appliance/aeappliance/hsm/softhsm"
	"github.com/enrollment-appliance/aeappliance/provisioning"
	"github.com/enrollment-appliance/aeappliance/provisioning/ceremony"
	"github.com/enrollment-appliance/aeappliance/provisioning/provapi"
	"github.com/enrollment-appliance/aeappliance/provisioning/provtest"
)

// The secrets of the tests: none may appear in the log.
const (
	passphrase  = "correct horse battery staple"
	wrongPass   = "incorrect horse battery"
	soPIN       = "so-pin-1234"
	userPIN     = "user-pin-1234"
	wrongPIN    = "wrong-pin-99"
	dirPassword = "Directory-Pa55word"
)

func needSoftHSM(t *testing.T) {
	t.Helper()
	if _, err := softhsm.ModulePath(); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("SoftHSM2 is missing (make deps installs it): %v", err)
		}
		t.Skip(err)
	}
}

// fakeClock is the limiter's clock.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// fixture is the API on a real ceremony in a temporary data directory, served over TLS.
type fixture struct {
	t        *testing.T
	dir      string // the service's data directory
	settings string // the appliance's settings directory
	log      *provtest.SyncBuffer
	clock    *fakeClock
	srv      *httptest.Server // the relay, as clients reach it
	socket   string           // the API's Unix socket behind it
	ceremony *ceremony.Ceremony

	finishWritten atomic.Bool   // the answer to the latest /finish request has been written
	finishCalls   chan struct{} // one value per OnFinish call
	release       chan struct{} // OnFinish returns once it is closed
	served        chan string   // the path of every request whose handler has returned
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	root := t.TempDir()
	f := &fixture{t: t, dir: filepath.Join(root, "var"), settings: filepath.Join(root, "settings"), log: &provtest.SyncBuffer{},
		clock: &fakeClock{t: time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)}, finishCalls: make(chan struct{}, 10),
		release: make(chan struct{}), served: make(chan string, 100)}
	logger := slog.New(slog.NewTextHandler(f.log, &slog.HandlerOptions{Level: slog.LevelDebug}))
	f.ceremony = &ceremony.Ceremony{Dir: f.dir, Logger: logger}
	h, err := provapi.NewHandler(provapi.Config{
		Settings: f.settings,
		Steps: &ceremony.Local{Ceremony: f.ceremony, Settings: f.settings,
			FinishOptions: ceremony.FinishOptions{APIListen: "127.0.0.1:0"}},
		Logger:   logger,
		OnFinish: f.onFinish,
		Now:      f.clock.Now,
	})
	if err != nil {
		t.Fatal(err)
	}
	// As on the appliance: the API on a Unix socket, the network side in the relay.
	f.socket = filepath.Join(root, "api.sock")
	l, err := net.Listen("unix", f.socket)
	if err != nil {
		t.Fatal(err)
	}
	api := provapi.NewUnixServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/finish") || strings.HasSuffix(r.URL.Path, "/join") { // the tests send one at a time
			f.finishWritten.Store(false)
			w = &watchWriter{ResponseWriter: w, wrote: &f.finishWritten}
		}
		h.ServeHTTP(w, r)
		f.served <- r.URL.Path
	}))
	go api.Serve(l)
	f.srv = httptest.NewUnstartedServer(provapi.NewRelay(tls.Certificate{}, f.socket, logger).Handler)
	f.srv.StartTLS()
	t.Cleanup(func() {
		select {
		case <-f.release:
		default:
			close(f.release)
		}
		f.srv.Close()
		api.Close()
	})
	return f
}

// onFinish checks that the answer was written first, then holds on until the test
// releases it: the client must have had its answer meanwhile.
func (f *fixture) onFinish() {
	if !f.finishWritten.Load() {
		f.t.Error("OnFinish was called before the finish answer was written")
	}
	f.finishCalls <- struct{}{}
	select {
	case <-f.release:
	case <-time.After(20 * time.Second):
		f.t.Error("the client had no finish answer while OnFinish ran")
	}
}

// watchWriter notes that a response body was written.
type watchWriter struct {
	http.ResponseWriter
	wrote *atomic.Bool
}

func (w *watchWriter) Write(b []byte) (int, error) {
	n, err := w.ResponseWriter.Write(b)
	w.wrote.Store(true)
	return n, err
}

func (w *watchWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (f *fixture) tlsConfig() *tls.Config {
	pool := x509.NewCertPool()
	pool.AddCert(f.srv.Certificate())
	return &tls.Config{RootCAs: pool}
}

func (f *fixture) client(pass string) *provapi.Client {
	return provapi.NewClient(f.srv.URL, pass, f.tlsConfig())
}

// raw sends a request as it is, with the admin's credentials unless auth is false.
func (f *fixture) raw(method, path, contentType string, body io.Reader, auth bool, header ...string) (int, http.Header, provapi.ErrorBody) {
	f.t.Helper()
	req, err := http.NewRequest(method, f.srv.URL+provapi.Prefix+path, body)
	if err != nil {
		f.t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if auth {
		req.SetBasicAuth(provapi.AdminUser, passphrase)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := f.srv.Client().Do(req)
	if err != nil {
		f.t.Fatal(err)
	}
	defer resp.Body.Close()
	var eb provapi.ErrorBody
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode/100 != 2 {
		if err := json.Unmarshal(b, &eb); err != nil || eb.Error == "" {
			f.t.Errorf("%s %s: %d with a body that is not {\"error\": ...}: %q", method, path, resp.StatusCode, b)
		}
	}
	return resp.StatusCode, resp.Header, eb
}

// snapshot hashes every file under the data and settings directories: a refused step
// must leave them identical. SoftHSM rewrites its token.object and generation file on
// every session, so for those only their presence counts.
func (f *fixture) snapshot() string {
	f.t.Helper()
	var lines []string
	for _, dir := range []string{f.dir, f.settings} {
		err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
			if errors.Is(err, fs.ErrNotExist) && p == dir {
				return nil
			}
			if err != nil || d.IsDir() {
				return err
			}
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			sum := sha256.Sum256(b)
			if base := filepath.Base(p); strings.Contains(p, "hsm/tokens/") && (base == "token.object" || base == "generation") {
				sum = [32]byte{}
			}
			lines = append(lines, p+" "+hex.EncodeToString(sum[:]))
			return nil
		})
		if err != nil {
			f.t.Fatal(err)
		}
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

// refused runs a call that must fail with status code and want in its message, and
// change nothing.
func (f *fixture) refused(code int, want string, call func() error) {
	f.t.Helper()
	before := f.snapshot()
	err := call()
	var he *provapi.HTTPError
	if !errors.As(err, &he) || he.StatusCode != code || !strings.Contains(he.Message, want) {
		f.t.Errorf("want %d with %q, got %v", code, want, err)
	}
	if after := f.snapshot(); after != before {
		f.t.Errorf("a refused call (%v) changed the data:\nbefore:\n%s\nafter:\n%s", err, before, after)
	}
}

// waitFinish waits for the one OnFinish call, after the finish answer.
func (f *fixture) waitFinish() {
	f.t.Helper()
	close(f.release)
	select {
	case <-f.finishCalls:
	case <-time.After(30 * time.Second):
		f.t.Fatal("OnFinish was not called after a successful finish")
	}
}

// noMoreFinish checks that OnFinish is not called again. It cannot be proven that a
// goroutine will never run; it is given a moment.
func (f *fixture) noMoreFinish() {
	f.t.Helper()
	select {
	case <-f.finishCalls:
		f.t.Error("OnFinish was called more than once")
	case <-time.After(200 * time.Millisecond):
	}
}

// checkLog checks that the log holds what happened and none of the secrets.
func (f *fixture) checkLog(want ...string) {
	f.t.Helper()
	log := f.log.String()
	for _, secret := range []string{passphrase, wrongPass, soPIN, userPIN, wrongPIN, dirPassword} {
		if strings.Contains(log, secret) {
			f.t.Errorf("the log holds the secret %q:\n%s", secret, log)
		}
	}
	for _, w := range want {
		if !strings.Contains(log, w) {
			f.t.Errorf("the log lacks %q:\n%s", w, log)
		}
	}
}

func doneSteps(steps []provisioning.Step) string {
	var done []string
	for _, s := range steps {
		if s.Done {
			done = append(done, s.Name)
		}
	}
	return strings.Join(done, ",")
}

func ptr[T any](v T) *T { return &v }

// TestSubordinateCeremony runs the whole ceremony of a subordinate CA over HTTPS, after
// the authentication's refusals: 403 before a passphrase is set, 401, 429 after 5
// failures.
func TestSubordinateCeremony(t *testing.T) {
	needSoftHSM(t)
	ctx := context.Background()
	f := newFixture(t)
	cl := f.client(passphrase)

	const noPassphrase = "set the admin passphrase at the console first (provision passphrase)"
	f.refused(http.StatusForbidden, noPassphrase, func() error { _, err := cl.Status(ctx); return err })
	f.refused(http.StatusForbidden, noPassphrase, func() error { _, err := cl.Token(ctx, soPIN, userPIN); return err })
	if _, err := provisioning.SetPassphrase(f.settings, "", passphrase); err != nil {
		t.Fatal(err)
	}

	// No credential: 401 with the challenge, not counted as a guess.
	for range provapi.MaxFailures + 1 {
		code, h, _ := f.raw(http.MethodGet, "/status", "", nil, false)
		if want := `Basic realm="aeappliance provisioning"`; code != http.StatusUnauthorized || h.Get("WWW-Authenticate") != want {
			t.Fatalf("no credential: %d, WWW-Authenticate %q; want 401, %q", code, h.Get("WWW-Authenticate"), want)
		}
	}
	if _, err := cl.Status(ctx); err != nil {
		t.Fatalf("requests without a credential were counted as failures: %v", err)
	}
	// Wrong passphrases: 401 five times, then 429 for the rest of the minute, even for
	// the right one.
	bad := f.client(wrongPass)
	for i := range provapi.MaxFailures {
		f.refused(http.StatusUnauthorized, "wrong passphrase", func() error { _, err := bad.Status(ctx); return err })
		if i == 0 {
			f.clock.Add(30 * time.Second) // the window counts from the first failure
		}
	}
	f.refused(http.StatusTooManyRequests, "too many failed authentications", func() error { _, err := bad.Status(ctx); return err })
	f.refused(http.StatusTooManyRequests, "too many failed authentications", func() error { _, err := cl.Token(ctx, soPIN, userPIN); return err })
	f.clock.Add(29 * time.Second)
	f.refused(http.StatusTooManyRequests, "too many failed authentications", func() error { _, err := cl.Status(ctx); return err })
	f.clock.Add(time.Second) // a minute after the first failure
	f.refused(http.StatusUnauthorized, "unknown user", func() error {
		code, _, eb := f.raw(http.MethodGet, "/status", "", nil, false, "Authorization", "Basic "+"cm9vdDp4") // root:x
		return &provapi.HTTPError{StatusCode: code, Message: eb.Error}
	})

	st, err := cl.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Steps) != 6 || doneSteps(st.Steps) != "" || st.Network.Mode != "dhcp" {
		t.Errorf("status at the start: %+v", st)
	}

	// Network: a static configuration, then one field, then an invalid change.
	want := provisioning.Network{Mode: "static", Address: "192.0.2.10/24", Gateway: "192.0.2.1",
		DNS: []string{"192.0.2.53"}, NTP: []string{"ntp.example.test"}, Hostname: "pki"}
	n, r, err := cl.Network(ctx, provapi.NetworkChange{Mode: &want.Mode, Address: &want.Address, Gateway: &want.Gateway,
		DNS: &want.DNS, NTP: &want.NTP, Hostname: &want.Hostname})
	if err != nil || !r.Changed || !reflect.DeepEqual(n, want) {
		t.Fatalf("network: %v %+v %+v", err, n, r)
	}
	want.Hostname, want.NTP = "pki2", nil
	if n, r, err = cl.Network(ctx, provapi.NetworkChange{Hostname: ptr("pki2"), NTP: &[]string{}}); err != nil || !r.Changed || !reflect.DeepEqual(n, want) {
		t.Errorf("network, hostname only: %v %+v, want %+v", err, n, want)
	}
	if saved, err := provisioning.LoadNetwork(f.settings); err != nil || !reflect.DeepEqual(saved, want) {
		t.Errorf("LoadNetwork = %+v, %v; want %+v", saved, err, want)
	}
	f.refused(http.StatusConflict, "is not another address", func() error {
		_, _, err := cl.Network(ctx, provapi.NetworkChange{Gateway: ptr("198.51.100.1")})
		return err
	})

	// Token, and a user PIN that does not open it.
	if r, err := cl.Token(ctx, soPIN, userPIN); err != nil || !r.Changed || r.Step != provisioning.StepToken {
		t.Fatalf("token: %v %+v", err, r)
	}
	f.refused(http.StatusConflict, "does not open it", func() error { _, err := cl.Token(ctx, soPIN, wrongPIN); return err })
	if r, err := cl.Token(ctx, "", userPIN); err != nil || r.Changed {
		t.Errorf("token again: %v %+v", err, r)
	}

	if r, err := cl.Key(ctx, ""); err != nil || !r.Changed || !strings.Contains(r.String(), "never extractable") {
		t.Fatalf("key: %v %+v", err, r)
	}
	csrPEM, r, err := cl.CSR(ctx, "Appliance Issuing CA")
	if err != nil || !r.Changed {
		t.Fatalf("csr: %v %+v", err, r)
	}
	if again, _, err := cl.CSR(ctx, "Appliance Issuing CA"); err != nil || !bytes.Equal(again, csrPEM) {
		t.Errorf("csr again: %v, same request %v", err, bytes.Equal(again, csrPEM))
	}

	// The directory step: only its input checks, without a domain controller here.
	f.refused(http.StatusConflict, "needs a URL", func() error {
		_, err := cl.Directory(ctx, provisioning.Directory{BindUser: "svc-pki@example.test", Password: dirPassword, CACN: "Corp Issuing CA"})
		return err
	})

	// Finish before the chain: refused, and OnFinish is not called.
	f.refused(http.StatusConflict, "no CA certificate yet", func() error { _, err := cl.Finish(ctx); return err })

	root, other := provtest.NewRoot(t, "External Test Root"), provtest.NewRoot(t, "Another Root")
	sub := root.SignCSR(t, csrPEM, true, time.Now().Add(365*24*time.Hour))
	f.refused(http.StatusConflict, "does not verify", func() error { _, err := cl.Import(ctx, provtest.PEM(sub, other.Cert)); return err })
	f.refused(http.StatusConflict, "no PEM certificate", func() error { _, err := cl.Import(ctx, nil); return err })
	r, err = cl.Import(ctx, provtest.PEM(root.Cert, sub))
	if err != nil || !r.Changed || !strings.Contains(r.String(), "verifies up to the root CN=External Test Root") {
		t.Fatalf("import: %v %+v", err, r)
	}

	select {
	case <-f.finishCalls:
		t.Fatal("OnFinish was called before a successful finish")
	default:
	}
	fctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	// OnFinish holds on until the test releases it: the answer must come meanwhile.
	r, err = cl.Finish(fctx)
	if err != nil || !r.Changed || !f.ceremony.Provisioned() {
		t.Fatalf("finish: %v %+v", err, r)
	}
	f.waitFinish()
	if r, err := cl.Finish(ctx); err != nil || r.Changed {
		t.Errorf("finish again: %v %+v", err, r)
	}
	f.noMoreFinish()

	st, err = cl.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got := doneSteps(st.Steps); got != "token,key,ca,finish" || !reflect.DeepEqual(st.Network, want) {
		t.Errorf("status at the end: done %s, want token,key,ca,finish; %+v", got, st)
	}
	f.checkLog("provisioning step", "step=token", "step=finish", "does not open it", "authentication failed",
		"too many failures", "needs a URL")
}

// TestSelfSignedCeremony: token, key, a self-signed root, finish.
func TestSelfSignedCeremony(t *testing.T) {
	needSoftHSM(t)
	ctx := context.Background()
	f := newFixture(t)
	if _, err := provisioning.SetPassphrase(f.settings, "", passphrase); err != nil {
		t.Fatal(err)
	}
	cl := f.client(passphrase)
	if r, err := cl.Token(ctx, soPIN, userPIN); err != nil || !r.Changed {
		t.Fatalf("token: %v %+v", err, r)
	}
	if r, err := cl.Key(ctx, "ecdsa-p384"); err != nil || !r.Changed {
		t.Fatalf("key: %v %+v", err, r)
	}
	f.refused(http.StatusBadRequest, "validity_days", func() error { _, err := cl.SelfSigned(ctx, "Corp Root CA", -1); return err })
	f.refused(http.StatusConflict, "needs a name", func() error { _, err := cl.SelfSigned(ctx, " ", 0); return err })
	f.refused(http.StatusConflict, "no CA certificate yet", func() error { _, err := cl.Finish(ctx); return err })
	r, err := cl.SelfSigned(ctx, "Corp Root CA", 3650)
	if err != nil || !r.Changed || !strings.Contains(r.String(), "self-signed root CA CN=Corp Root CA") {
		t.Fatalf("selfsigned: %v %+v", err, r)
	}
	if r, err := cl.SelfSigned(ctx, "Corp Root CA", 3650); err != nil || r.Changed {
		t.Errorf("selfsigned again: %v %+v", err, r)
	}
	r, err = cl.Finish(ctx)
	if err != nil || !r.Changed {
		t.Fatalf("finish: %v %+v", err, r)
	}
	f.waitFinish()
	f.noMoreFinish()
	st, err := cl.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got := doneSteps(st.Steps); got != "token,key,ca,finish" {
		t.Errorf("status: done %s, want token,key,ca,finish (%+v)", got, st.Steps)
	}
	f.checkLog("step=ca")
}

// TestBadInput: malformed, unknown or oversized input is refused before any step runs,
// and so are wrong media types, methods, paths and cross-site browser requests.
func TestBadInput(t *testing.T) {
	f := newFixture(t)
	if _, err := provisioning.SetPassphrase(f.settings, "", passphrase); err != nil {
		t.Fatal(err)
	}
	const token = `{"so_pin": "` + soPIN + `", "user_pin": "` + userPIN + `"}`
	big := token + strings.Repeat(" ", 100<<10) // valid JSON, had the limit not stopped it
	// hide hides a body's length: it is sent chunked, and only reading it finds it too large.
	hide := func(s string) io.Reader { return io.MultiReader(strings.NewReader(s)) }
	for _, tc := range []struct {
		method, path, contentType string
		body                      io.Reader
		code                      int
		want                      string
		header                    []string
	}{
		{"POST", "/token", "application/json", strings.NewReader(`{"so_pin": "` + soPIN + `", "user_pin": `), 400, "not the JSON object expected", nil},
		{"POST", "/token", "application/json", strings.NewReader(`{"so_pin": "` + soPIN + `", "user_pin": "` + userPIN + `", "label": "x"}`), 400, `unknown field "label"`, nil},
		{"POST", "/token", "application/json", strings.NewReader(token + ` {"user_pin": "x"}`), 400, "more after its JSON object", nil},
		{"POST", "/token", "application/json", strings.NewReader(`["` + soPIN + `"]`), 400, "not the JSON object expected", nil},
		{"POST", "/token", "application/json", strings.NewReader(""), 400, "empty", nil},
		{"POST", "/token", "application/json", strings.NewReader(big), 413, "larger than 64 KiB", nil},
		{"POST", "/token", "application/json", hide(big), 413, "larger than 64 KiB", nil},
		{"POST", "/token", "application/x-www-form-urlencoded", strings.NewReader(token), 415, "Content-Type", nil},
		{"POST", "/token", "application/json", strings.NewReader(token), 403, "cross-origin", []string{"Sec-Fetch-Site", "cross-site"}},
		{"POST", "/token", "text/plain", strings.NewReader(token), 403, "cross-origin", []string{"Origin", "https://evil.example"}},
		{"PUT", "/network", "application/json", strings.NewReader(`{"mode": 5}`), 400, "not the JSON object expected", nil},
		{"PUT", "/network", "application/json", strings.NewReader(`{"mode": "static", "adress": "192.0.2.10/24"}`), 400, `unknown field "adress"`, nil},
		{"POST", "/selfsigned", "application/json", strings.NewReader(`{"name": "Root", "validity_days": 99999999999}`), 400, "validity_days", nil},
		{"POST", "/import", "application/json", strings.NewReader("-----BEGIN CERTIFICATE-----"), 415, "application/x-pem-file", nil},
		{"POST", "/import", "application/x-pem-file", strings.NewReader(strings.Repeat("A", 100<<10)), 413, "larger than 64 KiB", nil},
		{"POST", "/import", "text/plain", hide(strings.Repeat("A", 100<<10)), 413, "larger than 64 KiB", nil},
		{"POST", "/directory", "application/json", strings.NewReader(`{"url": "ldaps://dc.example.test", "password": "` + dirPassword + `", "domain": "x"}`), 400, `unknown field "domain"`, nil},
		{"POST", "/finish", "application/json", strings.NewReader(`{"force": true}`), 400, `unknown field "force"`, nil},
		{"GET", "/token", "", nil, 405, "Method Not Allowed", nil},
		{"DELETE", "/status", "", nil, 405, "Method Not Allowed", nil},
		{"GET", "/nothing", "", nil, 404, "Not Found", nil},
	} {
		before := f.snapshot()
		code, _, eb := f.raw(tc.method, tc.path, tc.contentType, tc.body, true, tc.header...)
		if code != tc.code || !strings.Contains(eb.Error, tc.want) {
			t.Errorf("%s %s (%s): %d %q, want %d with %q", tc.method, tc.path, tc.contentType, code, eb.Error, tc.code, tc.want)
		}
		if after := f.snapshot(); after != before {
			t.Errorf("%s %s (%s) changed the data:\nbefore:\n%s\nafter:\n%s", tc.method, tc.path, tc.contentType, before, after)
		}
	}
	if _, err := os.Stat(f.dir); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("a refused request created the data directory: %v", err)
	}
	// The same request, well formed, does run the step: the cases above can fail.
	if code, _, eb := f.raw("POST", "/directory", "application/json",
		strings.NewReader(`{"bind_user": "svc", "password": "`+dirPassword+`", "ca_cn": "CA"}`), true); code != 409 || !strings.Contains(eb.Error, "needs a URL") {
		t.Errorf("directory without a URL: %d %q, want 409 with the ceremony's message", code, eb.Error)
	}
	f.checkLog("cross-origin")
}
