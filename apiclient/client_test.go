package apiclient_test

import (
	"context"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/enrollment-appliance/aeappliance/apiclient"
	"github.com/enrollment-appliance/aeappliance/config"
)

// seen is one request as it arrived.
type seen struct {
	method, path, query, auth, body string
}

// recorder is a TLS server that records what the client sends and answers with answer. It
// checks the client's side of the wire; the server's side is tested by the e2e tests.
func recorder(t *testing.T, answer func(w http.ResponseWriter, r *http.Request)) (*httptest.Server, *[]seen) {
	t.Helper()
	var got []seen
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got = append(got, seen{r.Method, r.URL.Path, r.URL.RawQuery, r.Header.Get("Authorization"), string(b)})
		answer(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv, &got
}

func caPEM(srv *httptest.Server) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
}

// TestDialDataDirReadsWhatInitWrites: a data directory as package config writes it gives a client that
// finds the running service's address, sends the admin token and trusts the CA.
func TestDialDataDirReadsWhatInitWrites(t *testing.T) {
	srv, got := recorder(t, func(w http.ResponseWriter, r *http.Request) { w.Write([]byte(`{"healthy":true}`)) })
	dir := t.TempDir()
	cfg := &config.Config{Version: config.Version, CAName: "CA", Store: config.StoreFile, CACert: config.CACertFile,
		HSM: config.HSM{Module: "/m.so", TokenLabel: "t", PINFile: config.PINFile, KeyURI: "pkcs11:object=k;id=%01"},
		API: config.API{Listen: "0.0.0.0:1", CertFile: config.APICertFile, KeyFile: config.APIKeyFile,
			TokenFile: config.APITokenFile, TokenHash: strings.Repeat("ab", 32)}}
	if err := cfg.Write(dir); err != nil {
		t.Fatal(err)
	}
	os.MkdirAll(filepath.Join(dir, config.APIDir), 0o700)
	for name, content := range map[string]string{config.APITokenFile: "the-token\n", config.CACertFile: string(caPEM(srv)),
		config.APIAddrFile: srv.Listener.Addr().String() + "\n"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cl, err := apiclient.DialDataDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := cl.Health(context.Background()); err != nil {
		t.Fatal(err)
	}
	if len(*got) != 1 || (*got)[0].path != "/api/v1/health" || (*got)[0].auth != "Bearer the-token" {
		t.Errorf("DialDataDir's client sent %+v, want GET /api/v1/health with the token", *got)
	}

	if _, err := apiclient.DialDataDir(t.TempDir()); err == nil || !strings.Contains(err.Error(), "enrollsvc init") {
		t.Errorf("DialDataDir(empty directory) = %v, want an error naming enrollsvc init", err)
	}
}

// TestConsoleCalls: the calls the appliance's console makes go out as it sends them today.
func TestConsoleCalls(t *testing.T) {
	srv, got := recorder(t, func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.Method == http.MethodGet:
			w.Write([]byte(`[]`))
		case strings.HasSuffix(r.URL.Path, "/revoke"):
			w.Write([]byte(`{"serial":"01","subject":"CN=x"}`))
		default:
			w.Write([]byte(`{"status":"issued","serial":"01"}`))
		}
	})
	cl, err := apiclient.NewClient(srv.Listener.Addr().String(), "tok", caPEM(srv))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := cl.Requests(ctx, apiclient.RequestQuery{State: apiclient.RequestPending, Limit: 20}); err != nil {
		t.Fatal(err)
	}
	if _, err := cl.Approve(ctx, 7); err != nil {
		t.Fatal(err)
	}
	if _, err := cl.Deny(ctx, 8, "no such host"); err != nil {
		t.Fatal(err)
	}
	if _, err := cl.Revoke(ctx, "0a:1b", "superseded"); err != nil {
		t.Fatal(err)
	}
	if _, err := cl.Events(ctx, apiclient.EventQuery{Limit: 10, Newest: true}); err != nil {
		t.Fatal(err)
	}
	want := []seen{
		{"GET", "/api/v1/requests", "limit=20&state=pending", "Bearer tok", ""},
		{"POST", "/api/v1/requests/7/approve", "", "Bearer tok", "{}"},
		{"POST", "/api/v1/requests/8/deny", "", "Bearer tok", `{"reason":"no such host"}`},
		{"POST", "/api/v1/certificates/0a:1b/revoke", "", "Bearer tok", `{"reason":"superseded"}`},
		{"GET", "/api/v1/events", "limit=10&newest=true", "Bearer tok", ""},
	}
	if len(*got) != len(want) {
		t.Fatalf("sent %+v, want %+v", *got, want)
	}
	for i := range want {
		if (*got)[i] != want[i] {
			t.Errorf("call %d = %+v, want %+v", i, (*got)[i], want[i])
		}
	}
}

// TestHTTPError: a non-2xx answer is an *HTTPError with the API's message, request ID and reasons.
func TestHTTPError(t *testing.T) {
	srv, _ := recorder(t, func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusUnprocessableEntity)
		json.NewEncoder(w).Encode(apiclient.ErrorBody{Error: "refused", RequestID: 4, Reasons: []string{"a", "b"}})
	})
	cl, err := apiclient.NewClient(srv.Listener.Addr().String(), "tok", caPEM(srv))
	if err != nil {
		t.Fatal(err)
	}
	_, err = cl.Issue(context.Background(), apiclient.IssueRequest{CSR: "x", Profile: "server"})
	var he *apiclient.HTTPError
	if !errors.As(err, &he) || he.StatusCode != 422 || he.Body.RequestID != 4 || err.Error() != "422 Unprocessable Entity: refused (a; b)" {
		t.Errorf("Issue against a 422 = %v (%#v), want an *HTTPError with the body", err, he)
	}
}

func TestReasons(t *testing.T) {
	for _, tt := range []struct {
		in   string
		code int
		ok   bool
	}{{"keyCompromise", 1, true}, {"KEYCOMPROMISE", 1, true}, {"4", 4, true}, {"certificateHold", 0, false}, {"6", 0, false}, {"", 0, false}} {
		if code, ok := apiclient.ReasonCode(tt.in); code != tt.code || ok != tt.ok {
			t.Errorf("ReasonCode(%q) = %d, %v; want %d, %v", tt.in, code, ok, tt.code, tt.ok)
		}
	}
	for code, want := range map[int]string{1: "keyCompromise", 6: "certificateHold", 8: "removeFromCRL", 7: "reason 7"} {
		if got := apiclient.ReasonName(code); got != want {
			t.Errorf("ReasonName(%d) = %q, want %q", code, got, want)
		}
	}
}
