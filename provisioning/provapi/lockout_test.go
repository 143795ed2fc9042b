package provapi_test

import (
	"context"
	"net"
	"net/http"
	"strings"
	"testing"

	"github.com/enrollment-appliance/aeappliance/provisioning"
	"github.com/enrollment-appliance/aeappliance/provisioning/provapi"
)

// statusFrom asks for the status over a connection from the local address src (another
// loopback address is another client) and returns the HTTP status code.
func (f *fixture) statusFrom(src, pass string) (int, string) {
	f.t.Helper()
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: f.tlsConfig(), DialContext: d.DialContext}}
	req, _ := http.NewRequest(http.MethodGet, f.srv.URL+provapi.Prefix+"/"+provisioning.Status, nil)
	req.SetBasicAuth(provapi.AdminUser, pass)
	// Every client claims the same relayed address: the relay must replace it with the real one.
	req.Header.Set(provapi.PeerHeader, "203.0.113.7:4444")
	resp, err := hc.Do(req)
	if err != nil {
		f.t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode, resp.Header.Get("Retry-After")
}

// Wrong passphrases lock out the address they come from, not the admin at another; the
// lockout is logged once per window.
func TestLockoutPerSource(t *testing.T) {
	needSoftHSM(t)
	f := newFixture(t)
	if _, err := provisioning.SetPassphrase(f.settings, "", passphrase); err != nil {
		t.Fatal(err)
	}
	for i := range provapi.MaxFailures {
		if code, _ := f.statusFrom("127.0.0.1", wrongPass); code != http.StatusUnauthorized {
			t.Fatalf("wrong passphrase %d from A: %d, want 401", i+1, code)
		}
	}
	for range 3 {
		if code, ra := f.statusFrom("127.0.0.1", passphrase); code != http.StatusTooManyRequests || ra != "60" {
			t.Fatalf("A after %d failures: %d, Retry-After %q; want 429, 60", provapi.MaxFailures, code, ra)
		}
	}
	if code, _ := f.statusFrom("127.0.0.2", passphrase); code != http.StatusOK {
		t.Errorf("the right passphrase from B while A is locked out: %d, want 200", code)
	}
	if n := strings.Count(f.log.String(), "authentication locked out for a client address"); n != 1 {
		t.Errorf("the lockout was logged %d times, want once", n)
	}
}

// Only the relay reaches the API's Unix socket: a request there without the relay's peer header
// is refused, and changes nothing.
func TestUnixSocketWantsTheRelay(t *testing.T) {
	f := newFixture(t)
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", f.socket)
	}}}
	for _, peer := range []string{"", "not an address", "203.0.113.7"} {
		req, _ := http.NewRequest(http.MethodGet, "http://provapi"+provapi.Prefix+"/"+provisioning.Status, nil)
		if peer != "" {
			req.Header.Set(provapi.PeerHeader, peer)
		}
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("a request on the Unix socket with peer header %q: %d, want 400", peer, resp.StatusCode)
		}
	}
}
