package svcctl

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
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

// Own gives the data directory to the service's user, readable by it alone (the PKCS#11 PIN among
// it), without following a symbolic link out of it.
func TestOwn(t *testing.T) {
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("the suite runs as root on CI")
		}
		t.Skip("needs root")
	}
	dir, outside := t.TempDir(), filepath.Join(t.TempDir(), "outside")
	if err := os.MkdirAll(filepath.Join(dir, "hsm", "tokens"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{outside, filepath.Join(dir, "hsm", "pin"), filepath.Join(dir, "hsm", "tokens", "obj")} {
		if err := os.WriteFile(f, []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink(outside, filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}
	u := User{UID: 65534, GID: 65534}
	if err := Own(dir, u); err != nil {
		t.Fatal(err)
	}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		st := fi.Sys().(*syscall.Stat_t)
		want := fs.FileMode(0o600)
		switch {
		case d.IsDir():
			want = 0o700
		case d.Type()&fs.ModeSymlink != 0:
			want = fi.Mode().Perm()
		}
		if int(st.Uid) != u.UID || int(st.Gid) != u.GID || fi.Mode().Perm() != want {
			t.Errorf("%s: owner %d:%d mode %v, want %d:%d %v", p, st.Uid, st.Gid, fi.Mode().Perm(), u.UID, u.GID, want)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(outside)
	if err != nil {
		t.Fatal(err)
	}
	if st := fi.Sys().(*syscall.Stat_t); st.Uid != 0 || fi.Mode().Perm() != 0o644 {
		t.Errorf("the link's target outside the directory changed: owner %d mode %v", st.Uid, fi.Mode().Perm())
	}
}
