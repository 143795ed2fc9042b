package sandbox_test

import (
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"

	"github.com/enrollment-appliance/aeappliance/enrollsvc/sandbox"
)

// The child modes: the test binary runs itself with SANDBOX_CHILD set, applies the filter and then
// does what the mode says; the parent judges how it ended.
func TestMain(m *testing.M) {
	mode := os.Getenv("SANDBOX_CHILD")
	if mode == "" {
		os.Exit(m.Run())
	}
	if mode == "landlock" {
		landlockChild() // before the seccomp filter, which has no execve
	}
	if err := sandbox.Apply(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(3)
	}
	switch mode {
	case "status":
		b, err := os.ReadFile("/proc/self/status")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(4)
		}
		os.Stdout.Write(b)
	case "work":
		if err := work(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(4)
		}
	case "exec":
		err := exec.Command("/bin/true").Run()
		fmt.Fprintln(os.Stderr, "exec returned:", err)
	case "ptrace":
		_, _, e := syscall.RawSyscall(syscall.SYS_PTRACE, syscall.PTRACE_TRACEME, 0, 0)
		fmt.Fprintln(os.Stderr, "ptrace returned:", e)
	case "mount":
		err := syscall.Mount("none", os.TempDir(), "tmpfs", 0, "")
		fmt.Fprintln(os.Stderr, "mount returned:", err)
	case "setuid":
		_, _, e := syscall.RawSyscall(syscall.SYS_SETUID, 0, 0, 0)
		fmt.Fprintln(os.Stderr, "setuid returned:", e)
	}
	os.Exit(0)
}

// work does under the filter what the service does: files with fsync and rename, goroutines on
// several threads, garbage collection, a TLS server and client over loopback.
func work() error {
	dir, err := os.MkdirTemp("", "sandbox-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	f, err := os.Create(filepath.Join(dir, "a"))
	if err != nil {
		return err
	}
	if _, err := f.Write(bytes.Repeat([]byte("x"), 1<<20)); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	f.Close()
	if err := os.Rename(filepath.Join(dir, "a"), filepath.Join(dir, "b")); err != nil {
		return err
	}
	done := make(chan []byte, 8)
	for range 8 {
		go func() { done <- bytes.Repeat([]byte("y"), 1<<20) }()
	}
	for range 8 {
		<-done
	}
	runtime.GC()
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "ok") }))
	defer srv.Close()
	cl := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	res, err := cl.Get(srv.URL)
	if err != nil {
		return err
	}
	res.Body.Close()
	if res.StatusCode != 200 {
		return errors.New(res.Status)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	return ln.Close()
}

func child(t *testing.T, mode string) (stdout, stderr string, err error) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "SANDBOX_CHILD="+mode)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err = cmd.Run()
	return out.String(), errb.String(), err
}

// The service's own work runs to its end under the filter.
func TestAllowedWorkRuns(t *testing.T) {
	if _, stderr, err := child(t, "work"); err != nil {
		t.Fatalf("the service's kind of work under the filter: %v\n%s", err, stderr)
	}
}

// The kernel reports the filter and no_new_privs for the process (what the console's status shows).
func TestStatusShowsFilter(t *testing.T) {
	out, stderr, err := child(t, "status")
	if err != nil {
		t.Fatalf("%v\n%s", err, stderr)
	}
	for _, want := range []string{"NoNewPrivs:\t1", "Seccomp:\t2"} {
		if !strings.Contains(out, want) {
			t.Errorf("/proc/self/status under the filter lacks %q:\n%s", want, out)
		}
	}
}

// A call outside the list kills the whole process with SIGSYS before it returns: starting a
// program, tracing, mounting, changing user.
func TestForbiddenCallKillsTheProcess(t *testing.T) {
	for _, mode := range []string{"exec", "ptrace", "mount", "setuid"} {
		t.Run(mode, func(t *testing.T) {
			_, stderr, err := child(t, mode)
			var ee *exec.ExitError
			if !errors.As(err, &ee) {
				t.Fatalf("%s under the filter: err %v, want killed by SIGSYS\n%s", mode, err, stderr)
			}
			ws := ee.Sys().(syscall.WaitStatus)
			if !ws.Signaled() || ws.Signal() != syscall.SIGSYS {
				t.Fatalf("%s under the filter ended %v, want killed by SIGSYS\n%s", mode, ee, stderr)
			}
			if strings.Contains(stderr, "returned") {
				t.Errorf("%s returned to the program: %s", mode, stderr)
			}
		})
	}
}

// landlockChild restricts writes to $LANDLOCK_ALLOWED, then tries to change the file system
// inside and outside it and prints what each attempt gave; one attempt comes from a thread that
// existed before the restriction (a goroutine locked to it), as the Go runtime's threads do.
func landlockChild() {
	allowed, other := os.Getenv("LANDLOCK_ALLOWED"), os.Getenv("LANDLOCK_OTHER")
	start, done := make(chan struct{}), make(chan error)
	go func() {
		runtime.LockOSThread() // never unlocked: this thread ends with the goroutine
		<-start
		done <- os.WriteFile(filepath.Join(other, "from-old-thread"), []byte("x"), 0o600)
	}()
	abi, err := sandbox.RestrictWrites([]string{allowed})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(3)
	}
	res := func(name string, err error) {
		var errno syscall.Errno
		switch {
		case err == nil:
			fmt.Printf("%s: ok\n", name)
		case errors.As(err, &errno):
			fmt.Printf("%s: %s\n", name, errno.Error())
		default:
			fmt.Printf("%s: %v\n", name, err)
		}
	}
	fmt.Printf("abi %d\n", abi)
	close(start)
	res("create outside from an older thread", <-done)
	res("create inside", os.WriteFile(filepath.Join(allowed, "new"), []byte("x"), 0o600))
	res("rename inside", os.Rename(filepath.Join(allowed, "new"), filepath.Join(allowed, "renamed")))
	res("mkdir inside", os.Mkdir(filepath.Join(allowed, "d"), 0o700))
	res("create outside", os.WriteFile(filepath.Join(other, "new"), []byte("x"), 0o600))
	f, err := os.OpenFile(filepath.Join(other, "existing"), os.O_WRONLY, 0)
	if err == nil {
		f.Close()
	}
	res("write outside", err)
	res("remove outside", os.Remove(filepath.Join(other, "existing")))
	res("mkdir outside", os.Mkdir(filepath.Join(other, "d"), 0o700))
	res("symlink outside", os.Symlink("/etc/passwd", filepath.Join(other, "link")))
	res("move out", os.Rename(filepath.Join(allowed, "renamed"), filepath.Join(other, "moved")))
	_, err = os.ReadFile(filepath.Join(other, "existing"))
	res("read outside", err)
	os.Exit(0)
}

// TestRestrictWrites: after RestrictWrites the process (every thread of it, those it had before
// as well) changes the file system only beneath the directory it was given, whatever
// the file permissions allow (the test runs as root); it still reads elsewhere.
func TestRestrictWrites(t *testing.T) {
	if _, err := sandbox.LandlockABI(); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%v: the appliance's kernel has Landlock, and so must the CI machine's", err)
		}
		t.Skip(err)
	}
	allowed, other := t.TempDir(), t.TempDir()
	if err := os.WriteFile(filepath.Join(other, "existing"), []byte("keep"), 0o666); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "SANDBOX_CHILD=landlock", "LANDLOCK_ALLOWED="+allowed, "LANDLOCK_OTHER="+other)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	got := string(out)
	for _, want := range []string{"create outside from an older thread: permission denied", "create inside: ok", "rename inside: ok", "mkdir inside: ok",
		"create outside: permission denied", "write outside: permission denied", "remove outside: permission denied",
		"mkdir outside: permission denied", "symlink outside: permission denied", "read outside: ok"} {
		if !strings.Contains(got, want+"\n") {
			t.Errorf("child output lacks %q:\n%s", want, got)
		}
	}
	if !strings.Contains(got, "move out: permission denied") && !strings.Contains(got, "move out: invalid cross-device link") {
		t.Errorf("moving a file out of the allowed directory was not refused:\n%s", got)
	}
	if b, err := os.ReadFile(filepath.Join(other, "existing")); err != nil || string(b) != "keep" {
		t.Errorf("the file outside: %q, %v; want it unchanged", b, err)
	}
	if _, err := os.Stat(filepath.Join(other, "moved")); err == nil {
		t.Error("a file was moved out of the allowed directory")
	}
}
