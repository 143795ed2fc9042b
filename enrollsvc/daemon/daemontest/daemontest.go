// Package daemontest runs the real enrollment service in-process for the tests of its clients
// (aeagent's packages): a data directory made by provisioning.Init against a Samba AD DC from
// ldaptest, with the CA key in a SoftHSM token, served by daemon.Serve on loopback ports until
// the test ends. Nothing is mocked.
package daemontest

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/enrollment-appliance/aeappliance/config"
	"github.com/enrollment-appliance/aeappliance/enrollsvc/daemon"
	"github.com/enrollment-appliance/aeappliance/hsm/softhsm"
	"github.com/enrollment-appliance/aeappliance/ldap/ldaptest"
	"github.com/enrollment-appliance/aeappliance/provisioning/ceremony"
)

// Options adjust the service.
type Options struct {
	CAName string // default "Test CA"
	// Keytab is the HTTP/localhost service keytab for the Kerberos endpoints (ldaptest
	// HTTPService); empty: none.
	Keytab string
	// CacheTTL is the directory cache's lifetime (a Go duration); empty: the service default.
	// Tests that change templates in the directory set it short.
	CacheTTL string
	// CRLURLs and OCSPURLs go into every issued certificate (CDP and AIA).
	CRLURLs, OCSPURLs []string
	// HTTP serves the plain-HTTP listener (CRLs, OCSP, SCEP) on a free loopback port.
	HTTP   bool
	Logger *slog.Logger // default: discard
	// Configure changes config.json after provisioning (limits, trusted proxies); nil: none.
	Configure func(*config.Config)
}

// Server is a running enrollment service.
type Server struct {
	Runtime *daemon.Runtime
	Dir     string         // the data directory
	Base    string         // https://localhost:PORT, the enrollment web services
	Roots   *x509.CertPool // the CA certificate, which also issued the TLS certificate
	CAFile  string         // the CA certificate, PEM
	CAName  string
	API     string // https://127.0.0.1:PORT, the local management API (Bearer APIToken)
	// APIToken is the admin token of the API.
	APIToken string
	HTTPBase string // http://127.0.0.1:PORT with Options.HTTP, else empty
}

// CEP is the policy service URL for an authentication mode: "UsernamePassword", "Kerberos" or
// "Certificate".
func (s *Server) CEP(mode string) string {
	return s.Base + "/ADPolicyProvider_CEP_" + mode + "/service.svc/CEP"
}

// CES is the enrollment service URL for an authentication mode.
func (s *Server) CES(mode string) string {
	return s.Base + "/" + url.PathEscape(s.CAName) + "_CES_" + mode + "/service.svc/CES"
}

// Start provisions a data directory against dc (seeded as s) and serves it until the test ends.
// It needs SoftHSM2: without it the test fails on CI and is skipped elsewhere.
func Start(t testing.TB, dc *ldaptest.DC, s *ldaptest.Sample, o Options) *Server {
	t.Helper()
	if _, err := softhsm.ModulePath(); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("SoftHSM2 is required on CI: %v", err)
		}
		t.Skipf("SoftHSM2 not installed (make deps installs it): %v", err)
	}
	if o.CAName == "" {
		o.CAName = "Test CA"
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	t.Setenv("SOFTHSM2_CONF", "") // Init and Open set it; restored afterwards
	ctx, cancel := context.WithCancel(context.Background())
	tmp := t.TempDir()
	pw := filepath.Join(tmp, "svc-password")
	if err := os.WriteFile(pw, []byte(s.SvcEnroll.Password), 0o600); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(tmp, "var")
	var httpBase, httpListen string
	var httpListener net.Listener
	if o.HTTP {
		// Bound now and handed to Serve: the address goes into the CA's URLs at provisioning,
		// and a port let go in between can be taken by any other test's listener.
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { l.Close() }) // Serve closes it too; this is for a failure before Serve
		httpListener = l
		httpListen = l.Addr().String()
		httpBase = "http://" + httpListen
	}
	if _, err := ceremony.Init(ctx, ceremony.InitOptions{Dir: dir, CAName: o.CAName, Logger: o.Logger, Keytab: o.Keytab,
		CRLURLs: o.CRLURLs, OCSPURLs: o.OCSPURLs, HTTPURL: httpBase, HTTPListen: httpListen,
		Directory: &ceremony.DirectoryOptions{URL: dc.URL, CAFile: dc.CAFile, BindUser: s.SvcEnroll.UPN,
			PasswordFile: pw, CACN: ldaptest.CACN}}); err != nil {
		cancel()
		t.Fatalf("provisioning.Init: %v", err)
	}
	if o.CacheTTL != "" {
		setCacheTTL(t, filepath.Join(dir, "config.json"), o.CacheTTL)
	}
	if o.Configure != nil {
		c, err := config.Load(dir)
		if err != nil {
			cancel()
			t.Fatal(err)
		}
		o.Configure(c)
		if err := c.Write(dir); err != nil {
			cancel()
			t.Fatal(err)
		}
	}
	rt, err := daemon.Open(ctx, dir, o.Logger)
	if err != nil {
		cancel()
		t.Fatalf("daemon.Open: %v", err)
	}
	addrc := make(chan string, 1)
	httpUp := make(chan struct{})
	// done is closed when Serve has returned, its error in serveErr: both the waits below and
	// the cleanup read it (a channel value could be received only once, and a cleanup waiting
	// for a value already taken would hang the test binary until its timeout).
	done := make(chan struct{})
	var serveErr error
	go func() {
		defer close(done)
		// The plain-HTTP listener starts after the enrollment web services: Start returns once
		// both listen, so that a test's first request to either finds it.
		serveErr = daemon.Serve(ctx, dir, daemon.ServeOptions{APIListen: "127.0.0.1:0", EnrollListen: "127.0.0.1:0",
			HTTPListener: httpListener, OnEnrollListen: func(addr string) { addrc <- addr },
			OnHTTPListen: func(string) { close(httpUp) }}, rt)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
		if serveErr != nil && !errors.Is(serveErr, context.Canceled) {
			t.Errorf("daemon.Serve: %v", serveErr)
		}
		rt.Close()
	})
	var addr string
	select {
	case addr = <-addrc:
	case <-done:
		t.Fatalf("daemon.Serve ended before listening: %v", serveErr)
	case <-time.After(2 * time.Minute):
		t.Fatal("the enrollment web services did not start")
	}
	if o.HTTP {
		select {
		case <-httpUp:
		case <-done:
			t.Fatalf("daemon.Serve ended before the plain-HTTP listener started: %v", serveErr)
		case <-time.After(2 * time.Minute):
			t.Fatal("the plain-HTTP listener did not start")
		}
	}
	_, port, _ := net.SplitHostPort(addr)
	caFile := filepath.Join(dir, "ca.pem")
	caPEM, err := os.ReadFile(caFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		t.Fatal("ca.pem holds no certificate")
	}
	apiAddr, err := os.ReadFile(config.Path(dir, config.APIAddrFile)) // written before the enrollment listener starts
	if err != nil {
		t.Fatalf("the API's address: %v", err)
	}
	token, err := os.ReadFile(config.Path(dir, rt.Config.API.TokenFile))
	if err != nil {
		t.Fatal(err)
	}
	// "localhost" is in the server certificate.
	return &Server{Runtime: rt, Dir: dir, Base: "https://localhost:" + port, Roots: pool, CAFile: caFile, CAName: o.CAName,
		API: "https://" + strings.TrimSpace(string(apiAddr)), APIToken: strings.TrimSpace(string(token)), HTTPBase: httpBase}
}

// setCacheTTL sets directory.cache_ttl in config.json, keeping every other setting as it is.
func setCacheTTL(t testing.TB, path, ttl string) {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var cfg map[string]any
	if err := json.Unmarshal(raw, &cfg); err != nil {
		t.Fatalf("config.json: %v", err)
	}
	d, ok := cfg["directory"].(map[string]any)
	if !ok {
		t.Fatal("config.json has no directory section")
	}
	d["cache_ttl"] = ttl
	out, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, out, 0o600); err != nil {
		t.Fatal(err)
	}
}
