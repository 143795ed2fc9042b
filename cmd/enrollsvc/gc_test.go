package main

import (
	"math"
	"runtime/debug"
	"testing"
)

// serve's collector: GOGC 400 under half the machine's memory, unless GOGC or GOMEMLIMIT say
// otherwise, which it then leaves as they are.
func TestTuneGC(t *testing.T) {
	percent := debug.SetGCPercent(100)
	limit := debug.SetMemoryLimit(-1)
	t.Cleanup(func() { debug.SetGCPercent(percent); debug.SetMemoryLimit(limit) })

	t.Setenv("GOGC", "")
	t.Setenv("GOMEMLIMIT", "")
	set, got := tuneGC()
	if !set || got <= 0 || got == math.MaxInt64 {
		t.Errorf("tuneGC() = %v, %d; want set, with a memory limit", set, got)
	}
	if p := debug.SetGCPercent(100); p != serveGCPercent {
		t.Errorf("GC percent after tuneGC = %d, want %d", p, serveGCPercent)
	}

	debug.SetMemoryLimit(math.MaxInt64)
	t.Setenv("GOGC", "50")
	if set, got := tuneGC(); set || got != math.MaxInt64 {
		t.Errorf("with GOGC set, tuneGC() = %v, %d; want nothing set and the limit as it was", set, got)
	}
	if p := debug.SetGCPercent(100); p != 100 {
		t.Errorf("with GOGC set, the GC percent became %d", p)
	}
}
