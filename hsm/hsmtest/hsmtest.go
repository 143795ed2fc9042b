// Package hsmtest gives tests a fresh SoftHSM token each: a temporary token
// directory, its own softhsm2.conf and a token with a random label and random PINs.
//
// NewToken sets SOFTHSM2_CONF with t.Setenv, so tests that use it cannot run in
// parallel. SoftHSM reads SOFTHSM2_CONF only when the library is initialised, so
// every KeyStore of a test must be closed before the next test starts (use
// t.Cleanup).
package hsmtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/enrollment-appliance/aeappliance/hsm"
	"github.com/enrollment-appliance/aeappliance/hsm/softhsm"
)

// Token is a token NewTokenInfo made.
type Token struct {
	Config hsm.Config // ModulePath, TokenLabel and PIN set
	SOPIN  string
	Serial string
	Conf   string // the softhsm2.conf path
}

// NewToken makes a fresh SoftHSM token for the test and returns a Config ready for
// hsm.Open. Without SoftHSM (or without cgo) it skips the test, or fails it when
// the environment variable CI is "true".
func NewToken(t testing.TB) hsm.Config {
	t.Helper()
	return NewTokenInfo(t).Config
}

// NewTokenInfo is NewToken returning the SO PIN and serial too.
func NewTokenInfo(t testing.TB) Token {
	t.Helper()
	module, err := softhsm.ModulePath()
	if err != nil {
		missing(t, err.Error()+"; `make deps` installs it")
	}
	dir := t.TempDir()
	conf := filepath.Join(dir, "softhsm2.conf")
	if err := softhsm.WriteConfig(conf, filepath.Join(dir, "tokens")); err != nil {
		t.Fatal(err)
	}
	t.Setenv("SOFTHSM2_CONF", conf)
	label := "test-" + randomHex(t, 6)
	soPIN, pin := randomHex(t, 8), randomHex(t, 8)
	serial, err := hsm.InitToken(context.Background(), module, label, soPIN, pin)
	if errors.Is(err, hsm.ErrNoCgo) {
		missing(t, "SoftHSM tests need a cgo build (CGO_ENABLED=1)")
	}
	if err != nil {
		t.Fatalf("hsmtest: %v", err)
	}
	return Token{
		Config: hsm.Config{ModulePath: module, TokenLabel: label, PIN: pin},
		SOPIN:  soPIN, Serial: serial, Conf: conf,
	}
}

func missing(t testing.TB, msg string) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf("hsmtest: %s (CI=true, so this fails instead of skipping)", msg)
	}
	t.Skipf("hsmtest: %s", msg)
}

func randomHex(t testing.TB, n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}
