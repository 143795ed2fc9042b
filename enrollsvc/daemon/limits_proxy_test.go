package daemon_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"io"
	"net/http"
	"strings"
	"testing"

	"golang.org/x/crypto/ocsp"

	"github.com/enrollment-appliance/aeappliance/aeagent/wsclient"
	"github.com/enrollment-appliance/aeappliance/config"
	"github.com/enrollment-appliance/aeappliance/enrollsvc"
	"github.com/enrollment-appliance/aeappliance/enrollsvc/daemon/daemontest"
	"github.com/enrollment-appliance/aeappliance/enrollsvc/events"
	"github.com/enrollment-appliance/aeappliance/enrollsvc/store"
	"github.com/enrollment-appliance/aeappliance/ldap/ldaptest"
)

// get sends a request with X-Forwarded-For xff (none when empty) and returns the status,
// Retry-After and body.
func get(t *testing.T, hc *http.Client, method, url, xff string) (int, string, []byte) {
	t.Helper()
	req, _ := http.NewRequest(method, url, nil)
	if xff != "" {
		req.Header.Set("X-Forwarded-For", xff)
	}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header.Get("Retry-After"), b
}

// limitedEvents are the rate-limit events of service, by remote address.
func limitedEvents(t *testing.T, srv *daemontest.Server, service string) map[string]int {
	t.Helper()
	evs, err := srv.Runtime.Store.ListEvents(context.Background(), store.EventFilter{ID: int(events.RateLimited), Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int{}
	for _, e := range evs {
		if e.Fields["service"] == service {
			r, _ := e.Fields["remote"].(string)
			if h, _, ok := strings.Cut(r, ":"); ok && strings.Count(r, ":") == 1 {
				r = h
			}
			out[r]++
		}
	}
	return out
}

// SCEP, OCSP and the enrollment web services are limited per client address and account,
// with 429 and Retry-After, audited once per key. The client address is the socket's peer
// unless config.json trusts the proxy it comes from; then X-Forwarded-For's rightmost
// untrusted hop, which the audit events record too.
func TestLimitsPerSourceAndTrustedProxies(t *testing.T) {
	needSoftHSM(t)
	dc := ldaptest.StartDC(t)
	s := dc.Seed(t)
	ctx := context.Background()
	small := func(proxies []string) func(c *config.Config) {
		return func(c *config.Config) {
			c.TrustedProxies = proxies
			tiny := &config.RateLimit{PerMinute: 1, Burst: 2}
			c.Limits = &config.Limits{SCEPPerSource: tiny, OCSPPerSource: tiny, EnrollPerSource: &config.RateLimit{PerMinute: 1, Burst: 3},
				EnrollPerAccount: tiny}
		}
	}

	t.Run("behind a trusted proxy", func(t *testing.T) {
		srv := daemontest.Start(t, dc, s, daemontest.Options{CAName: "Proxy Test CA", HTTP: true, Configure: small([]string{"127.0.0.0/8"})})
		if _, err := srv.Runtime.Service.AddSCEPProfile(ctx, enrollsvc.SCEPProfileSpec{Name: "devices", Template: "SuppliesSubject",
			Account: "dave", StaticChallenge: "a long enough static secret"}, "test"); err != nil {
			t.Fatal(err)
		}
		hc := &http.Client{}
		caps := srv.HTTPBase + "/scep/devices/pkiclient.exe?operation=GetCACaps"
		for range 2 {
			if code, _, _ := get(t, hc, http.MethodGet, caps, "192.0.2.1"); code != http.StatusOK {
				t.Fatalf("GetCACaps from 192.0.2.1: %d", code)
			}
		}
		for _, xff := range []string{"192.0.2.1", "6.6.6.6, 192.0.2.1", "192.0.2.1, 127.0.0.9"} {
			if code, ra, _ := get(t, hc, http.MethodGet, caps, xff); code != http.StatusTooManyRequests || ra != "60" {
				t.Errorf("GetCACaps beyond the burst (X-Forwarded-For %s): %d, Retry-After %q; want 429, 60", xff, code, ra)
			}
		}
		if code, _, _ := get(t, hc, http.MethodGet, caps, "192.0.2.2"); code != http.StatusOK {
			t.Errorf("GetCACaps from another client behind the proxy: %d, want 200", code)
		}
		if ev := limitedEvents(t, srv, "scep"); ev["192.0.2.1"] != 1 || len(ev) != 1 {
			t.Errorf("SCEP rate-limit events by client: %v, want one for 192.0.2.1", ev)
		}

		for range 2 {
			get(t, hc, http.MethodPost, srv.HTTPBase+"/ocsp", "198.51.100.1")
		}
		code, ra, body := get(t, hc, http.MethodPost, srv.HTTPBase+"/ocsp", "198.51.100.1")
		if code != http.StatusTooManyRequests || ra == "" || !bytes.Equal(body, ocsp.TryLaterErrorResponse) {
			t.Errorf("OCSP beyond the burst: %d, Retry-After %q, body %x; want 429 with the tryLater response", code, ra, body)
		}

		// The web services: per source (before authentication), then per account.
		tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: srv.Roots}}
		hcs := &http.Client{Transport: tr}
		for i := range 4 {
			code, ra, body := get(t, hcs, http.MethodPost, srv.CEP("UsernamePassword"), "203.0.113.9")
			if i == 3 && (code != http.StatusTooManyRequests || ra == "" || !strings.Contains(string(body), "too many requests from 203.0.113.9")) {
				t.Errorf("web services beyond the per-source burst: %d, Retry-After %q, %s; want a 429 fault", code, ra, body)
			}
		}
		alice, err := wsclient.New(srv.CEP("UsernamePassword"), wsclient.PasswordAuth{Username: s.Alice.UPN, Password: s.Alice.Password}, srv.Roots)
		if err != nil {
			t.Fatal(err)
		}
		for i := range 3 {
			_, err := alice.GetPolicies(ctx, nil)
			if i < 2 && err != nil {
				t.Fatalf("alice's GetPolicies %d: %v", i+1, err)
			}
			if i == 2 && (err == nil || !strings.Contains(err.Error(), "HTTP 429") || !strings.Contains(err.Error(), "too many requests for this account")) {
				t.Errorf("alice beyond the per-account burst: %v, want a 429 fault", err)
			}
		}
	})

	t.Run("no trusted proxy", func(t *testing.T) {
		srv := daemontest.Start(t, dc, s, daemontest.Options{CAName: "Direct Test CA", HTTP: true, Configure: small(nil)})
		hc := &http.Client{}
		for i, xff := range []string{"192.0.2.1", "192.0.2.2", "192.0.2.3", "192.0.2.4"} {
			code, _, _ := get(t, hc, http.MethodPost, srv.HTTPBase+"/ocsp", xff)
			if i >= 2 && code != http.StatusTooManyRequests {
				t.Errorf("OCSP %d claiming to be %s: %d, want 429 (X-Forwarded-For from an untrusted peer is ignored)", i+1, xff, code)
			}
		}
		if ev := limitedEvents(t, srv, "ocsp"); ev["127.0.0.1"] != 1 || len(ev) != 1 {
			t.Errorf("OCSP rate-limit events by client: %v, want one for the peer 127.0.0.1", ev)
		}
	})
}
