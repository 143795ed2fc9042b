package initproc

import (
	"bufio"
	"bytes"
	"errors"
	"flag"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestEnvironment(t *testing.T) {
	got := Environment([]string{"HOME=/", "TERM=vt100", "LD_PRELOAD=/tmp/x.so", "GODEBUG=x509sha1=1", "aeslot=a", "PATH=/tmp"})
	if want := []string{"HOME=/", "PATH=" + Path, "TERM=vt100"}; !reflect.DeepEqual(got, want) {
		t.Errorf("Environment = %q, want %q", got, want)
	}
	if got := Environment(nil); !reflect.DeepEqual(got, []string{"HOME=/", "PATH=" + Path, "TERM=linux"}) {
		t.Errorf("Environment(nil) = %q", got)
	}
	if got := Environment([]string{"TERM=../../x"}); got[2] != "TERM=linux" {
		t.Errorf("a TERM naming a path was kept: %q", got)
	}
}

// TestProcessOne runs Run as process 1 of a new PID namespace, as the kernel runs /init: its
// payload (this test binary again) checks that it got the clean environment and a session of
// its own, leaves an orphan behind (a grandchild whose parent has exited, so the kernel makes
// process 1 its parent) and ends only once that orphan, having exited, was reaped (a zombie
// nobody waits for keeps answering kill(pid, 0)). Another orphan that never ends must get
// SIGTERM when the payload has ended; then Run restarts the machine, which for a PID
// namespace's init means the kernel kills it with SIGHUP (reboot(2)).
func TestProcessOne(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("a PID namespace needs root")
	}
	dir := t.TempDir()
	var stderr bytes.Buffer
	cmd := exec.Command(os.Args[0], "-test.run=^TestProcessOneHelper$")
	cmd.Env = append(os.Environ(), "AE_INITPROC_TEST=init", "AE_INITPROC_DIR="+dir, "FROM_KERNEL_CMDLINE=1")
	cmd.Stdout, cmd.Stderr = &stderr, &stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWPID, Pdeathsig: syscall.SIGKILL}
	done := make(chan error, 1)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { done <- cmd.Wait() }()
	var err error
	select {
	case err = <-done:
	case <-time.After(time.Minute):
		cmd.Process.Kill()
		<-done
		t.Fatalf("process 1 did not end within a minute:\n%s", stderr.String())
	}
	out := stderr.String()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || !ee.Sys().(syscall.WaitStatus).Signaled() || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGHUP {
		t.Errorf("process 1 ended with %v, want killed by SIGHUP (its reboot(2) in a PID namespace)\n%s", err, out)
	}
	if !strings.Contains(out, "ended: exit status 0") {
		t.Errorf("the payload's checks failed (see its exit status):\n%s", out)
	}
	if _, err := os.Stat(filepath.Join(dir, "stubborn-terminated")); err != nil {
		t.Errorf("the orphan left running got no SIGTERM before the restart: %v\n%s", err, out)
	}
}

// TestProcessOneHelper is TestProcessOne's process 1, payload and orphans; it does nothing
// when run on its own.
func TestProcessOneHelper(t *testing.T) {
	args := flag.Args()
	switch {
	case os.Getenv("AE_INITPROC_TEST") == "init" && os.Getpid() == 1:
		err := Run(Config{Payload: os.Args[0], Args: []string{"-test.run=^TestProcessOneHelper$", "--", "payload",
			os.Getenv("AE_INITPROC_DIR")}, Grace: 5 * time.Second, Log: os.Stderr})
		t.Fatalf("Run returned: %v", err)
	case len(args) == 2 && args[0] == "payload":
		os.Exit(payload(args[1]))
	case len(args) == 1 && args[0] == "middle":
		// Start the orphan-to-be and exit at once: its parent is then gone.
		c := exec.Command(os.Args[0], "-test.run=^TestProcessOneHelper$", "--", "child")
		if err := c.Start(); err != nil {
			os.Exit(2)
		}
		os.Stdout.WriteString(strconv.Itoa(c.Process.Pid) + "\n")
		os.Exit(0)
	case len(args) == 1 && args[0] == "child":
		time.Sleep(200 * time.Millisecond)
		os.Exit(0)
	case len(args) == 2 && args[0] == "stubborn":
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, syscall.SIGTERM)
		os.Stdout.WriteString("ready\n")
		<-sig
		os.WriteFile(filepath.Join(args[1], "stubborn-terminated"), nil, 0o644)
		os.Exit(0)
	}
}

// payload checks what process 1 must give it and the reaping of an orphan; its exit status
// says which check failed.
func payload(dir string) int {
	if os.Getenv("FROM_KERNEL_CMDLINE") != "" || os.Getenv("AE_INITPROC_TEST") != "" || os.Getenv("PATH") != Path {
		os.Stderr.WriteString("payload: the environment was not replaced: " + strings.Join(os.Environ(), " ") + "\n")
		return 4
	}
	if sid, _ := unix.Getsid(0); sid != os.Getpid() {
		os.Stderr.WriteString("payload: not in a session of its own\n")
		return 5
	}
	out, err := exec.Command(os.Args[0], "-test.run=^TestProcessOneHelper$", "--", "middle").Output()
	if err != nil {
		return 2
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(out)))
	if err != nil || pid <= 1 {
		return 2
	}
	deadline := time.Now().Add(10 * time.Second)
	for unix.Kill(pid, 0) == nil {
		if time.Now().After(deadline) {
			os.Stderr.WriteString("payload: the orphan " + strconv.Itoa(pid) + " was never reaped\n")
			return 3
		}
		time.Sleep(20 * time.Millisecond)
	}
	// Left running: process 1 must stop it once the payload has ended. It says when it
	// catches SIGTERM, so that the signal cannot come before.
	st := exec.Command(os.Args[0], "-test.run=^TestProcessOneHelper$", "--", "stubborn", dir)
	r, err := st.StdoutPipe()
	if err != nil || st.Start() != nil {
		return 2
	}
	if line, err := bufio.NewReader(r).ReadString('\n'); err != nil || line != "ready\n" {
		return 2
	}
	return 0
}
