package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestBadHSMModule: a missing or non-ELF module stops mkfirmware with a clear message
// before anything is built.
func TestBadHSMModule(t *testing.T) {
	dir := t.TempDir()
	text := filepath.Join(dir, "notes.txt")
	os.WriteFile(text, []byte("not a library\n"), 0o644)
	for mod, want := range map[string]string{
		filepath.Join(dir, "libnone.so"): "libnone.so does not exist",
		text:                             "notes.txt is not an ELF shared library",
	} {
		out := filepath.Join(dir, "out")
		var stdout, stderr bytes.Buffer
		err := run([]string{"-root", "../..", "-out", out, "-version", "v1", "-source-date-epoch", "0", "-hsm-module", mod}, &stdout, &stderr)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("mkfirmware -hsm-module %s = %v, want an error with %q", mod, err, want)
		}
		if _, err := os.Stat(out); err == nil {
			t.Errorf("mkfirmware -hsm-module %s created %s", mod, out)
		}
	}
}

func TestUsageNamesTheFlags(t *testing.T) {
	var stdout, stderr bytes.Buffer
	run([]string{"-h"}, &stdout, &stderr)
	for _, want := range []string{"-hsm-module", "/usr/lib/softhsm/libsofthsm2.so", "-debug", "-check"} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("usage lacks %q:\n%s", want, stderr.String())
		}
	}
}
