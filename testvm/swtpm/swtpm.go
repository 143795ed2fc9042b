// Package swtpm runs Debian's software TPM 2.0 (swtpm, on libtpms) for the QEMU harness,
// `make run` and the tests of the TPM code: a TPM whose state (its seeds, NV memory and
// PCRs' saved state) lives in a directory, so that a machine's TPM outlives its process
// as a real one outlives a reboot, and a new directory is another machine's TPM.
package swtpm

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// Program is swtpm's command (Debian package swtpm).
const Program = "swtpm"

// Options say how to run swtpm.
type Options struct {
	// Server also serves raw TPM 2.0 commands (TPM 2.0 Library Part 1 §18.2) on the
	// socket Dial connects to, with the TPM powered on and started (TPM2_Startup) by swtpm
	// itself. Without it the TPM waits for QEMU to initialise it over the control socket
	// and swtpm exits when QEMU disconnects.
	Server bool
	// Fresh empties the state directory first: a TPM with new seeds (another machine's,
	// or a cleared one).
	Fresh bool
}

// TPM is a running swtpm.
type TPM struct {
	State  string // the state directory
	Ctrl   string // the control socket (QEMU's -chardev socket)
	server string // the command socket with Options.Server
	tmp    string
	cmd    *exec.Cmd
	done   chan struct{}
}

// Start starts swtpm with its state in state (created if missing) and waits until it
// listens.
func Start(state string, o Options) (*TPM, error) {
	if _, err := exec.LookPath(Program); err != nil {
		return nil, fmt.Errorf("swtpm: %w (install swtpm)", err)
	}
	if o.Fresh {
		if err := os.RemoveAll(state); err != nil {
			return nil, fmt.Errorf("swtpm: %w", err)
		}
	}
	if err := os.MkdirAll(state, 0o700); err != nil {
		return nil, fmt.Errorf("swtpm: %w", err)
	}
	// Sockets in a directory of their own under the temporary directory: a socket's path
	// must fit in 108 bytes.
	tmp, err := os.MkdirTemp("", "swtpm")
	if err != nil {
		return nil, fmt.Errorf("swtpm: %w", err)
	}
	t := &TPM{State: state, Ctrl: filepath.Join(tmp, "ctrl.sock"), tmp: tmp, done: make(chan struct{})}
	args := []string{"socket", "--tpm2", "--tpmstate", "dir=" + state, "--ctrl", "type=unixio,path=" + t.Ctrl}
	wait := t.Ctrl
	if o.Server {
		t.server = filepath.Join(tmp, "cmd.sock")
		wait = t.server
		args = append(args, "--server", "type=unixio,path="+t.server, "--flags", "startup-clear,not-need-init")
	} else {
		args = append(args, "--terminate")
	}
	t.cmd = exec.Command(Program, args...)
	var stderr bytes.Buffer
	t.cmd.Stderr = &stderr
	if err := t.cmd.Start(); err != nil {
		os.RemoveAll(tmp)
		return nil, fmt.Errorf("swtpm: %w", err)
	}
	go func() { t.cmd.Wait(); close(t.done) }()
	for deadline := time.Now().Add(10 * time.Second); ; {
		if listening(wait) {
			return t, nil
		}
		select {
		case <-t.done:
			os.RemoveAll(tmp)
			return nil, fmt.Errorf("swtpm exited: %s", strings.TrimSpace(stderr.String()))
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Stop()
			return nil, fmt.Errorf("swtpm: the socket did not appear: %s", strings.TrimSpace(stderr.String()))
		}
	}
}

// listening reports whether a Unix socket bound to path accepts connections: its file appears
// at bind(2), before listen(2), and a connection in between is refused. /proc/net/unix has
// the __SO_ACCEPTCON flag (00010000) once the socket listens. A test connection would not do:
// with --terminate swtpm ends when its control connection closes.
func listening(path string) bool {
	b, err := os.ReadFile("/proc/net/unix")
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		// Num RefCount Protocol Flags Type St Inode Path
		if len(f) == 8 && f[7] == path && f[3] == "00010000" {
			return true
		}
	}
	return false
}

// Dial connects to the command socket (Options.Server).
func (t *TPM) Dial() (net.Conn, error) {
	if t.server == "" {
		return nil, fmt.Errorf("swtpm: started without a command socket")
	}
	return net.Dial("unix", t.server)
}

// Stop stops swtpm (it saves its state on SIGTERM), waits for it and removes its sockets.
func (t *TPM) Stop() {
	select {
	case <-t.done:
	default:
		t.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-t.done:
		case <-time.After(5 * time.Second):
			t.cmd.Process.Kill()
			<-t.done
		}
	}
	os.RemoveAll(t.tmp)
}
