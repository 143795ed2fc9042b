package main

import (
	"encoding/pem"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/enrollment-appliance/aeappliance/config"
)

// TestRefusesFlagsThatCannotTakeEffect: a flag or argument aectl would ignore is refused as a
// usage error, and the API is not called.
func TestRefusesFlagsThatCannotTakeEffect(t *testing.T) {
	var calls atomic.Int32
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	defer srv.Close()
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		os.MkdirAll(filepath.Dir(p), 0o700)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	cfg := &config.Config{Version: config.Version, CAName: "CA", Store: config.StoreFile, CACert: config.CACertFile,
		HSM: config.HSM{Module: "/m.so", TokenLabel: "t", PINFile: config.PINFile, KeyURI: "pkcs11:object=k;id=%01"},
		API: config.API{Listen: srv.Listener.Addr().String(), CertFile: config.APICertFile, KeyFile: config.APIKeyFile,
			TokenFile: config.APITokenFile, TokenHash: strings.Repeat("ab", 32)}}
	if err := cfg.Write(dir); err != nil {
		t.Fatal(err)
	}
	token := write("api/admin-token", "tok\n")
	ca := write("ca.pem", string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})))
	csr := write("req.csr", "not read by the API in this test")
	remote := []string{"--api", srv.Listener.Addr().String(), "--token-file", token, "--ca-file", ca}

	for _, tt := range []struct {
		args []string
		want string
	}{
		{append(append([]string{"--data", dir}, remote...), "status"), "--data or --api"},
		{[]string{"--data", dir, "status", "extra"}, "takes no arguments"},
		{[]string{"--data", dir, "certs", "valid"}, "takes no arguments"},
		{[]string{"--data", dir, "requests", "pending"}, "takes no arguments"},
		{[]string{"--data", dir, "events", "10"}, "takes no arguments"},
		{[]string{"--data", dir, "templates", "User"}, "takes no arguments"},
		{[]string{"--data", dir, "issue", "--csr", csr, "--template", "User", "--account", "a", "--profile", "client"}, "--profile does not apply"},
		{[]string{"--data", dir, "issue", "--csr", csr, "--template", "User", "--account", "a", "--validity-days", "30"}, "--validity-days does not apply"},
		{[]string{"--data", dir, "scep", "profiles", "--template", "User"}, "--template does not apply"},
		{[]string{"--data", dir, "scep", "profile", "add", "p", "--template", "User", "--one-time", "--ttl", "2h"}, "--ttl does not apply"},
		{[]string{"--data", dir, "scep", "challenge", "--profile", "p", "--one-time"}, "--one-time does not apply"},
		{[]string{"--data", dir, "scep", "challenge", "--profile", "p", "--template", "User"}, "--template does not apply"},
	} {
		err := run(tt.args, io.Discard, io.Discard)
		if !errors.Is(err, errUsage) || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("aectl %q = %v, want a usage error saying %q", tt.args, err, tt.want)
		}
	}
	if n := calls.Load(); n != 0 {
		t.Errorf("the refused commands made %d API calls, want none", n)
	}
	// The same commands without the flag that cannot take effect do reach the API.
	for _, args := range [][]string{append(remote, "status"), {"--data", dir, "certs"}, {"--data", dir, "scep", "challenge", "--profile", "p", "--ttl", "2h"}} {
		before := calls.Load()
		if err := run(args, io.Discard, io.Discard); errors.Is(err, errUsage) || calls.Load() != before+1 {
			t.Errorf("aectl %q = %v after %d calls, want one API call and no usage error", args, err, calls.Load()-before)
		}
	}
}
