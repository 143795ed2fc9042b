package firmware

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path"
	"sort"
	"strings"

	"github.com/u-root/u-root/pkg/cpio"

	"github.com/enrollment-appliance/aeappliance/appliance/release"
)

// DebugToolsModule is the Go module (a directory of the repository) that pins the u-root
// commands of debug images and gobusybox's makebb. It is a module of its own because
// gosh needs mvdan.cc/sh, which the product does not; its u-root version is the main
// module's.
const DebugToolsModule = "firmware/debugtools"

// DebugTools are the u-root commands a debug image adds beside the shell: enough to look
// at processes, kernel messages, mounts, disk usage, memory and the network.
var DebugTools = []string{"cat", "df", "dmesg", "free", "ip", "ls", "mount", "ps"}

// debugBusybox is the debug image's one binary holding gosh and DebugTools (gobusybox's
// makebb: one Go runtime instead of nine, 1.6 MB compressed instead of 3.4 MB for
// separate binaries); /bin/gosh, /bin/sh and /bin/TOOL are symlinks to it.
const debugBusybox = "bbin/bb"

// uRootCmds is the package directory of u-root's core commands.
const uRootCmds = "github.com/u-root/u-root/cmds/core/"

// shellNames are the file names of shells: a release image has none of them anywhere.
var shellNames = map[string]bool{
	"sh": true, "defaultsh": true, "gosh": true, "elvish": true, "rush": true,
	"bash": true, "dash": true, "ash": true, "zsh": true, "busybox": true, "bb": true,
}

// goCommand is a Go command built into the image.
type goCommand struct {
	Pkg string // package: ./cmd/... of the repository, or a u-root command
	Out string // path in the image, e.g. bin/enrollsvc
	CGO bool   // built with cgo (only enrollsvc: PKCS#11 modules are C libraries)
}

// imageCommands are the Go commands of every image, release or debug.
func imageCommands() []goCommand {
	return []goCommand{
		{Pkg: "./cmd/enrollsvc", Out: "bin/enrollsvc", CGO: true},
		{Pkg: "./cmd/appinit", Out: "bin/appinit"},
	}
}

// debugPackages are the packages of the debug image's busybox: gosh and DebugTools.
func debugPackages() []string {
	pkgs := []string{uRootCmds + path.Base(release.ShellPath)}
	for _, t := range DebugTools {
		pkgs = append(pkgs, uRootCmds+t)
	}
	return pkgs
}

// makebbArgs are the arguments of `go` that build the debug busybox into out, run in
// DebugToolsModule. gosh is built with the goshsmall tag: its full line editor sends
// terminal colour queries, which garble the serial console. makebb always builds
// reproducibly (-trimpath, stripped, no build ID) and from scratch (-a).
func makebbArgs(out string) []string {
	return append([]string{"tool", "makebb", "-go-build-tags", "goshsmall", "-o", out}, debugPackages()...)
}

// imageSymlinks are the symlinks a build adds (image path -> target). A debug image has
// release.ShellPath and /bin/TOOL pointing at its busybox, which runs the command its
// last symlink names, and /bin/sh -> gosh. Process 1 (appinit, appliance/initproc) starts
// release.ShellPath on the console when its payload exits, so a debug image drops to a
// shell there and a release image (without one) does not.
func imageSymlinks(debug bool) map[string]string {
	links := map[string]string{}
	if !debug {
		return links
	}
	bb := "../" + debugBusybox
	links[strings.TrimPrefix(release.ShellPath, "/")] = bb
	for _, t := range DebugTools {
		links["bin/"+t] = bb
	}
	links["bin/sh"] = path.Base(release.ShellPath)
	return links
}

// checkShells checks the file names of a built archive: a release image must hold no
// shell at all (nor a busybox), a debug image must hold release.ShellPath, /bin/sh and
// its busybox.
func checkShells(names []string, debug bool) error {
	have := map[string]bool{}
	var shells []string
	for _, n := range names {
		n = strings.TrimPrefix(path.Clean("/"+n), "/")
		have[n] = true
		if shellNames[path.Base(n)] {
			shells = append(shells, "/"+n)
		}
	}
	sort.Strings(shells)
	if !debug && len(shells) > 0 {
		return fmt.Errorf("the release image holds a shell: %s", strings.Join(shells, ", "))
	}
	if debug {
		for _, want := range []string{strings.TrimPrefix(release.ShellPath, "/"), "bin/sh", debugBusybox} {
			if !have[want] {
				return fmt.Errorf("the debug image lacks /%s", want)
			}
		}
	}
	return nil
}

// archiveNames lists the names in a newc cpio archive (as u-root writes it).
func archiveNames(file string) ([]string, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	rr := cpio.Newc.Reader(f)
	var names []string
	for {
		r, err := rr.ReadRecord()
		if err == io.EOF {
			return names, nil
		}
		if err != nil {
			return nil, fmt.Errorf("reading %s: %w", file, err)
		}
		if r.Name == cpio.Trailer {
			return names, nil
		}
		names = append(names, r.Name)
	}
}

// checkSmallShell fails when the busybox at file was built with gosh's line editor
// (bubbline): the goshsmall tag did not apply.
func checkSmallShell(file string) error {
	b, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	if bytes.Contains(b, []byte("github.com/knz/bubbline")) {
		return fmt.Errorf("%s holds gosh's line editor (bubbline): built without the goshsmall tag", file)
	}
	return nil
}
