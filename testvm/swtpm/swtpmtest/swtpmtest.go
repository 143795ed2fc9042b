// Package swtpmtest starts a software TPM 2.0 (package swtpm) for a test and connects to
// its command socket, for appliance/tpmseal's FromStream.
package swtpmtest

import (
	"net"
	"os"
	"os/exec"
	"testing"

	"github.com/enrollment-appliance/aeappliance/testvm/swtpm"
)

// Sim is a running swtpm with its state in State.
type Sim struct {
	t     testing.TB
	State string
	tpm   *swtpm.TPM
	conns []net.Conn
}

// Need fails on CI (CI=true) and skips elsewhere when swtpm is missing.
func Need(t testing.TB) {
	t.Helper()
	if _, err := exec.LookPath(swtpm.Program); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("swtpm not found (make deps installs it): %v", err)
		}
		t.Skipf("swtpm not found: %v", err)
	}
}

// Start starts swtpm on state (a new directory, a fresh TPM, when state is ""); the test's
// clean-up stops it.
func Start(t testing.TB, state string) *Sim {
	t.Helper()
	Need(t)
	if state == "" {
		state = t.TempDir()
	}
	tpm, err := swtpm.Start(state, swtpm.Options{Server: true})
	if err != nil {
		t.Fatal(err)
	}
	s := &Sim{t: t, State: state, tpm: tpm}
	t.Cleanup(s.Stop)
	return s
}

// Dial connects to the TPM's command socket; Stop closes the connection.
func (s *Sim) Dial() net.Conn {
	s.t.Helper()
	c, err := s.tpm.Dial()
	if err != nil {
		s.t.Fatalf("connecting to swtpm: %v", err)
	}
	s.conns = append(s.conns, c)
	return c
}

// Stop closes the connections and stops swtpm, which saves its state.
func (s *Sim) Stop() {
	for _, c := range s.conns {
		c.Close()
	}
	s.conns = nil
	s.tpm.Stop()
}

// Restart stops swtpm and starts it again on the same state, as a reboot does: the PCRs
// are reset, the seeds kept.
func (s *Sim) Restart() *Sim {
	s.t.Helper()
	s.Stop()
	return Start(s.t, s.State)
}
