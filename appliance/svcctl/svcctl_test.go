package svcctl

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/enrollment-appliance/aeappliance/appliance/supervise"
)

func TestDescribe(t *testing.T) {
	now := time.Now()
	for _, c := range []struct {
		st   supervise.State
		want string
	}{
		{supervise.State{Stopped: true}, "stopped"},
		{supervise.State{Running: true, PID: 312, Since: now.Add(-41 * time.Second), Restarts: 2}, "running (pid 312, up 41s, 2 restarts)"},
		{supervise.State{LastExit: "exited: exit status 1", NextTry: now.Add(-time.Second)}, "exited: exit status 1; next start in 0s"},
	} {
		if got := Describe(c.st); got != c.want {
			t.Errorf("Describe(%+v) = %q, want %q", c.st, got, c.want)
		}
	}
}

// TestHaltIsFinal: after Halt (powering off) Start starts nothing, and a service never
// started has nothing to stop.
func TestHaltIsFinal(t *testing.T) {
	var s Service
	if _, ok := s.State(); ok {
		t.Fatal("State of a service never started: ok")
	}
	if err := s.Halt(); err != nil {
		t.Fatalf("Halt() = %v", err)
	}
	dir := t.TempDir()
	err := s.Start(Config{Enrollsvc: "/bin/true", Dir: dir, VarDir: dir, LogFile: filepath.Join(dir, "log")}, "127.0.0.1")
	if !errors.Is(err, ErrHalted) {
		t.Errorf("Start after Halt = %v, want ErrHalted", err)
	}
	if _, ok := s.State(); ok {
		t.Error("Start after Halt started the service")
	}
}

func TestCAInfoWithoutCA(t *testing.T) {
	if _, _, err := CAInfo(t.TempDir()); err == nil || !strings.Contains(err.Error(), "ca.pem") {
		t.Errorf("CAInfo(empty dir) = %v, want an error naming ca.pem", err)
	}
}
