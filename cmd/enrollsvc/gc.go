package main

import (
	"os"
	"runtime/debug"

	"golang.org/x/sys/unix"
)

// serveGCPercent is the collector's target for serve: the heap may grow to five times what is
// live before a collection (Go's default, 100, is twice). The service's live heap is small (tens
// of MB; about 100 MB while a million-entry CRL is built) and an appliance has its machine to
// itself, while allocation-heavy request paths (CMS, SOAP, lint) made the collector a fifth of the
// service's CPU at the default. `enrollbench scep-peer` at 8 clients measured 5.4-6.2 ms of the
// service's CPU per SCEP certificate with 400 (five runs) against 6.2-6.3 ms with 100 (two runs):
// a gain of up to a tenth, inside the noise of single runs on a shared 2-core machine.
const serveGCPercent = 400

// tuneGC sets the collector for serve unless GOGC or GOMEMLIMIT are set (then the runtime has
// read them and nothing changes): serveGCPercent, under a soft memory limit of half the machine's
// memory, near which the collector works harder again (runtime/debug.SetMemoryLimit), so that the
// larger target never runs the machine out of memory. It reports whether it set them, and the
// memory limit in force.
func tuneGC() (set bool, limit int64) {
	if os.Getenv("GOGC") != "" || os.Getenv("GOMEMLIMIT") != "" {
		return false, debug.SetMemoryLimit(-1) // a negative limit only reads it
	}
	var si unix.Sysinfo_t
	if err := unix.Sysinfo(&si); err == nil && si.Totalram > 0 {
		debug.SetMemoryLimit(int64(si.Totalram) * int64(si.Unit) / 2)
	}
	debug.SetGCPercent(serveGCPercent)
	return true, debug.SetMemoryLimit(-1)
}
