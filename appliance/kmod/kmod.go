// Package kmod loads the kernel modules an appliance image needs. The image builder
// (firmware) resolves their dependencies from the kernel package and writes the load
// order to a list file, and the modules' device aliases and dependencies to an alias
// file next to it; this package reads both, matches the devices in sysfs as udev's
// coldplug would, and loads the modules those devices need with finit_module(2), so the
// image needs neither modprobe, modules.dep nor udev.
package kmod

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"golang.org/x/sys/unix"
)

// ListPath is where the image keeps the ordered module list.
const ListPath = "/etc/appliance/modules"

// Result says what LoadList or LoadPresent did.
type Result struct {
	Loaded    []string          // module names, in load order (including ones already loaded)
	Failed    map[string]string // module name -> reason it could not be loaded
	NotNeeded []string          // listed modules no present device needed, in list order
	Rounds    int               // LoadPresent: how often it looked at the devices
	// Fallback says why LoadPresent loaded every listed module instead of choosing
	// ("" when it chose, or for LoadList).
	Fallback string
}

// Summary is a one-line description for the console.
func (r Result) Summary() string {
	s := fmt.Sprintf("%d loaded", len(r.Loaded))
	if len(r.NotNeeded) > 0 {
		s += fmt.Sprintf(", %d not needed", len(r.NotNeeded))
	}
	if len(r.Failed) > 0 {
		var f []string
		for n, why := range r.Failed {
			f = append(f, n+": "+why)
		}
		sort.Strings(f)
		s += fmt.Sprintf(", %d unavailable (%s)", len(r.Failed), strings.Join(f, "; "))
	}
	if r.Fallback != "" {
		s += "; loaded every listed module: " + r.Fallback
	}
	return s
}

// ReadList returns the module paths listed in the file at path (one a line; blank lines
// and lines starting with # are ignored).
func ReadList(path string) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("kmod: %w", err)
	}
	defer f.Close()
	var mods []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		l := strings.TrimSpace(sc.Text())
		if l != "" && !strings.HasPrefix(l, "#") {
			mods = append(mods, l)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("kmod: reading %s: %w", path, err)
	}
	return mods, nil
}

// Name is the kernel's name for a module file ("virtio-rng.ko" -> "virtio_rng").
func Name(path string) string {
	return strings.ReplaceAll(strings.TrimSuffix(filepath.Base(path), ".ko"), "-", "_")
}

// Loader loads one module file; Load is the real one.
type Loader func(path string) error

// LoadList loads the modules listed at path in order with load. A module that fails
// (for example crc32c_intel on a CPU without SSE4.2) is recorded and the rest still load.
func LoadList(path string, load Loader) (Result, error) {
	mods, err := ReadList(path)
	if err != nil {
		return Result{}, err
	}
	res := Result{Failed: map[string]string{}}
	for _, m := range mods {
		res.record(m, load)
	}
	return res, nil
}

// record loads the module file at path with load and notes the outcome.
func (r *Result) record(path string, load Loader) {
	if err := load(path); err != nil {
		r.Failed[Name(path)] = reason(err)
		return
	}
	r.Loaded = append(r.Loaded, Name(path))
}

// Params are the parameters some modules are loaded with. A watchdog driver gets nowayout:
// the i6300esb then sets the hardware's lock bit when it starts, so that neither the
// kernel's reboot notifier at a kexec nor the next kernel's probe can stop the watchdog
// the factory image armed for a trial boot (Intel 6300ESB datasheet, WDT lock register).
var Params = map[string]string{"i6300esb": "nowayout=1"}

// Load loads the module file at path, with its Params; a module that is already loaded
// is not an error.
func Load(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("kmod: %w", err)
	}
	defer f.Close()
	if err := unix.FinitModule(int(f.Fd()), Params[Name(path)], 0); err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("kmod: loading %s: %w", Name(path), err)
	}
	return nil
}

// reason is the short cause of a load error ("no such device").
func reason(err error) string {
	var errno unix.Errno
	if errors.As(err, &errno) {
		return errno.Error()
	}
	return err.Error()
}
