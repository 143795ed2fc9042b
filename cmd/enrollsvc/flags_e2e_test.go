package main

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// snapshot lists every file under dir with its size and modification time.
func snapshot(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		out[p] = fmt.Sprint(fi.ModTime(), fi.Mode(), fi.Size())
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestE2EFlagsThatCannotTakeEffect: the real binary refuses, with a usage error naming the
// flag, what it would otherwise ignore, and changes nothing in the data directory.
func TestE2EFlagsThatCannotTakeEffect(t *testing.T) {
	dir := initDir(t) // no --http-url, no directory
	keys := filepath.Join(t.TempDir(), "keys.pem")
	before := snapshot(t, dir)
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"serve", "--data", dir, "--api-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"}, "--http-listen: the plain-HTTP listener is not configured"},
		{[]string{"serve", "--data", dir, "--api-listen", "127.0.0.1:0", "--enroll-listen", "127.0.0.1:0"}, "--enroll-listen: the enrollment web services are not configured"},
		{[]string{"serve", "--data", dir, "--api-listen", "127.0.0.1:0", "extra"}, "unexpected arguments"},
		{[]string{"serve", "--data", dir, "--api-listen", "127.0.0.1:0", "--update-keys", keys}, "--firmware-dir and --update-keys go together"},
		{[]string{"serve", "--data", dir, "--api-listen", "127.0.0.1:0", "--firmware-dir", t.TempDir()}, "--firmware-dir and --update-keys go together"},
	} {
		out, errOut, err := runBin(t, "enrollsvc", tt.args...)
		if code := exitCodeOf(err); code != 2 || !strings.Contains(errOut, tt.want) {
			t.Errorf("enrollsvc %q: exit %d, stderr %q; want exit 2 saying %q\n%s", tt.args, code, errOut, tt.want, out)
		}
	}
	after := snapshot(t, dir)
	for p, v := range before {
		if after[p] != v {
			t.Errorf("%s changed: %q, was %q", p, after[p], v)
		}
	}
	for p := range after {
		if _, ok := before[p]; !ok {
			t.Errorf("%s appeared", p)
		}
	}

	// init refuses the listener flags that need what it was not given, and makes no directory.
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"--http-listen", "127.0.0.1:8080"}, "--http-listen needs --http-url"},
		{[]string{"--enroll-listen", "127.0.0.1:8443"}, "need the directory settings"},
		{[]string{"--hostname", "ca.example.test"}, "need the directory settings"},
		{[]string{"--keytab", keys}, "need the directory settings"},
	} {
		d := filepath.Join(t.TempDir(), "var")
		_, errOut, err := runBin(t, "enrollsvc", append([]string{"init", "--data", d, "--ca-name", "X"}, tt.args...)...)
		if err == nil || !strings.Contains(errOut, tt.want) {
			t.Errorf("enrollsvc init %q: %v, stderr %q; want an error saying %q", tt.args, err, errOut, tt.want)
		}
		if _, err := os.Stat(d); err == nil {
			t.Errorf("enrollsvc init %q made %s", tt.args, d)
		}
	}
}

// exitCodeOf is the exit status in err from exec (0 for nil, -1 if it did not exit).
func exitCodeOf(err error) int {
	if err == nil {
		return 0
	}
	if ee, ok := err.(interface{ ExitCode() int }); ok {
		return ee.ExitCode()
	}
	return -1
}
