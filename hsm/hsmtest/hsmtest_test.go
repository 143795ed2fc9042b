package hsmtest

import (
	"fmt"
	"runtime"
	"strings"
	"testing"

	"github.com/enrollment-appliance/aeappliance/hsm/softhsm"
)

// fakeTB records Fatalf and Skipf instead of ending the real test.
type fakeTB struct {
	testing.TB
	fatal, skip string
}

func (f *fakeTB) Helper() {}
func (f *fakeTB) Fatalf(format string, args ...any) {
	f.fatal = fmt.Sprintf(format, args...)
	runtime.Goexit()
}
func (f *fakeTB) Skipf(format string, args ...any) {
	f.skip = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

func runFake(t *testing.T) *fakeTB {
	f := &fakeTB{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		NewToken(f)
	}()
	<-done
	return f
}

func TestMissingSoftHSM(t *testing.T) {
	saved := softhsm.ModulePaths
	softhsm.ModulePaths = []string{"/nonexistent/libsofthsm2.so"}
	defer func() { softhsm.ModulePaths = saved }()

	t.Setenv("CI", "true")
	if f := runFake(t); f.fatal == "" || !strings.Contains(f.fatal, "make deps") {
		t.Errorf("CI=true without SoftHSM: fatal = %q, skip = %q; want a failure mentioning make deps", f.fatal, f.skip)
	}
	t.Setenv("CI", "")
	if f := runFake(t); f.skip == "" || f.fatal != "" || !strings.Contains(f.skip, "make deps") {
		t.Errorf("no CI without SoftHSM: fatal = %q, skip = %q; want a skip mentioning make deps", f.fatal, f.skip)
	}
}

func TestNewToken(t *testing.T) {
	tok := NewTokenInfo(t)
	if tok.Config.ModulePath == "" || tok.Config.TokenLabel == "" || tok.Config.PIN == "" || tok.Serial == "" || tok.SOPIN == "" {
		t.Errorf("NewTokenInfo() = %+v, want every field set", tok)
	}
}
