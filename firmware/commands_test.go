package firmware

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"

	"github.com/u-root/u-root/pkg/cpio"

	"github.com/enrollment-appliance/aeappliance/appliance/release"
)

// imageNames are the staged names (commands, busybox and symlinks) of an image.
func imageNames(debug bool) []string {
	var names []string
	for _, c := range imageCommands() {
		names = append(names, c.Out)
	}
	if debug {
		names = append(names, debugBusybox)
	}
	for p := range imageSymlinks(debug) {
		names = append(names, p)
	}
	return names
}

// TestReleaseHasNoShell: the release image's commands hold no shell, not even one process 1
// would start when appinit's payload exits.
func TestReleaseHasNoShell(t *testing.T) {
	names := imageNames(false)
	for _, n := range names {
		for _, sh := range []string{"bin/sh", "bin/gosh", "bin/elvish", "bin/bash", "bin/busybox", "bin/defaultsh", "bbin/bb"} {
			if n == sh {
				t.Errorf("the release image has %s", n)
			}
		}
	}
	if err := checkShells(names, false); err != nil {
		t.Error(err)
	}
	if want := []string{"bin/enrollsvc", "bin/appinit"}; !reflect.DeepEqual(names, want) {
		t.Errorf("release commands = %v, want %v", names, want)
	}
}

func TestDebugHasShellAndTools(t *testing.T) {
	if err := checkShells(imageNames(true), true); err != nil {
		t.Error(err)
	}
	links := imageSymlinks(true)
	for _, p := range append([]string{strings.TrimPrefix(release.ShellPath, "/")}, prefixed("bin/", DebugTools)...) {
		if links[p] != "../bbin/bb" {
			t.Errorf("debug %s -> %q, want ../bbin/bb", p, links[p])
		}
	}
	if got := links["bin/sh"]; got != "gosh" {
		t.Errorf("debug /bin/sh -> %q, want gosh", got)
	}
	args := strings.Join(makebbArgs("OUT"), " ")
	want := "tool makebb -go-build-tags goshsmall -o OUT github.com/u-root/u-root/cmds/core/gosh github.com/u-root/u-root/cmds/core/cat"
	if !strings.HasPrefix(args, want) || !strings.HasSuffix(args, "cmds/core/ps") {
		t.Errorf("makebb arguments %q, want them to start %q and end with ps", args, want)
	}
}

func prefixed(p string, s []string) []string {
	var out []string
	for _, x := range s {
		out = append(out, p+x)
	}
	return out
}

func TestCheckShells(t *testing.T) {
	base := []string{"init", "bin/appinit", "bin/enrollsvc", "etc/appliance/release.json"}
	for _, c := range []struct {
		names []string
		debug bool
		want  string // in the error; "" for none
	}{
		{base, false, ""},
		{append(base, "bin/sh"), false, "holds a shell: /bin/sh"},
		{append(base, "./sbin/busybox"), false, "/sbin/busybox"},
		{append(base, "bbin/elvish", "usr/bin/bash"), false, "/bbin/elvish, /usr/bin/bash"},
		{append(base, "bbin/bb"), false, "/bbin/bb"},
		{base, true, "lacks /bin/gosh"},
		{append(base, "bin/gosh"), true, "lacks /bin/sh"},
		{append(base, "bin/gosh", "bin/sh"), true, "lacks /bbin/bb"},
		{append(base, "bin/gosh", "bin/sh", "bbin/bb"), true, ""},
	} {
		err := checkShells(c.names, c.debug)
		if c.want == "" && err != nil || c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)) {
			t.Errorf("checkShells(%v, debug %v) = %v, want %q", c.names, c.debug, err, c.want)
		}
	}
}

func TestArchiveNames(t *testing.T) {
	p := filepath.Join(t.TempDir(), "a.cpio")
	var buf bytes.Buffer
	w := cpio.Newc.Writer(&buf)
	recs := []cpio.Record{cpio.Directory("bin", 0o755), cpio.StaticFile("bin/gosh", "elf", 0o755), cpio.Symlink("bin/sh", "gosh")}
	if err := cpio.WriteRecords(w, recs); err != nil {
		t.Fatal(err)
	}
	if err := cpio.WriteTrailer(w); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(p, buf.Bytes(), 0o644)
	got, err := archiveNames(p)
	if want := []string{"bin", "bin/gosh", "bin/sh"}; err != nil || !reflect.DeepEqual(got, want) {
		t.Errorf("archiveNames = %v, %v; want %v", got, err, want)
	}
	os.WriteFile(p, []byte("garbage that is not a cpio archive at all, long enough for a header............................................................"), 0o644)
	if _, err := archiveNames(p); err == nil {
		t.Error("archiveNames(garbage) = nil error")
	}
}

// TestDebugToolsModule: the debug tools' module pins the u-root version the product uses.
func TestDebugToolsModule(t *testing.T) {
	version := func(gomod string) string {
		b, err := os.ReadFile(gomod)
		if err != nil {
			t.Fatal(err)
		}
		m := regexp.MustCompile(`(?m)^\s*(?:require\s+)?github\.com/u-root/u-root (v\S+)`).FindSubmatch(b)
		if m == nil {
			t.Fatalf("%s does not require github.com/u-root/u-root", gomod)
		}
		return string(m[1])
	}
	main, debug := version("../go.mod"), version(filepath.Join("..", DebugToolsModule, "go.mod"))
	if main != debug {
		t.Errorf("u-root is %s in go.mod but %s in %s/go.mod: keep them equal", main, debug, DebugToolsModule)
	}
}

// TestDebugBusybox builds the debug busybox as a debug image build does (about 20 s):
// static, gosh without its line editor (checkSmallShell, which the build runs too), and
// each command reachable through a symlink, /bin/sh through /bin/gosh.
func TestDebugBusybox(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the debug busybox")
	}
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	bb := filepath.Join(dir, debugBusybox)
	if err := (Options{Root: root}).buildBusybox(t.Context(), bb); err != nil {
		t.Fatal(err)
	}
	if interp, dynamic, err := elfInterp(bb); err != nil || dynamic {
		t.Errorf("the busybox is dynamically linked (%q, %v)", interp, err)
	}
	for p, target := range imageSymlinks(true) {
		os.MkdirAll(filepath.Join(dir, filepath.Dir(p)), 0o755)
		if err := os.Symlink(target, filepath.Join(dir, p)); err != nil {
			t.Fatal(err)
		}
	}
	sh := filepath.Join(dir, "bin", "sh")
	if got, err := exec.Command(sh, "-c", "echo $((6*7))").Output(); err != nil || strings.TrimSpace(string(got)) != "42" {
		t.Errorf("/bin/sh -c 'echo $((6*7))' = %q, %v", got, err)
	}
	if got, err := exec.Command(filepath.Join(dir, "bin", "ls"), filepath.Join(dir, "bbin")).Output(); err != nil || strings.TrimSpace(string(got)) != "bb" {
		t.Errorf("/bin/ls bbin = %q, %v", got, err)
	}

	// The check itself: a file holding the line editor's package path fails it.
	big := filepath.Join(dir, "big")
	os.WriteFile(big, []byte("...github.com/knz/bubbline/editline..."), 0o755)
	if err := checkSmallShell(big); err == nil {
		t.Error("checkSmallShell(with bubbline) = nil")
	}
}
