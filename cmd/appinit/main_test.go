package main

import (
	"bytes"
	"errors"
	"flag"
	"path/filepath"
	"strings"
	"testing"
)

func TestHelp(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if err := run([]string{"-h"}, strings.NewReader(""), &stdout, &stderr); !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("run(-h) = %v, want flag.ErrHelp", err)
	}
	for _, want := range []string{"appinit - the appliance's init payload", "-dev", "-devices", "-iface", "It never exits"} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("-h output lacks %q:\n%s", want, stderr.String())
		}
	}
	for i, l := range strings.Split(stderr.String(), "\n") {
		if l = strings.ReplaceAll(l, "\t", "        "); len(l) > 79 {
			t.Errorf("-h line %d is longer than 80 columns: %q", i, l)
		}
	}
}

func TestArgs(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if err := run([]string{"-dev", "extra"}, strings.NewReader(""), &stdout, &stderr); err == nil || !strings.Contains(err.Error(), "unexpected arguments") {
		t.Errorf("run(-dev extra) = %v, want unexpected arguments", err)
	}
	if !isDev([]string{"-data", "x", "--dev"}) || isDev([]string{"-data", "dev"}) {
		t.Error("isDev misreads the arguments")
	}
}

func TestDevMode(t *testing.T) {
	var stdout, stderr bytes.Buffer
	data := filepath.Join(t.TempDir(), "data")
	if err := run([]string{"-dev", "-data", data, "-release", filepath.Join(data, "none")}, strings.NewReader("status\npoweroff\n"), &stdout, &stderr); err != nil {
		t.Fatalf("run(-dev) = %v; stderr %s", err, stderr.String())
	}
	for _, want := range []string{"State:          unprovisioned", "appliance> ", "Powering off (development mode: leaving)."} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, stdout.String())
		}
	}
}
