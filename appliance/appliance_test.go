package appliance

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// fakeEnrollsvc writes a stand-in for enrollsvc whose init fails, as when the token
// cannot be made.
func fakeEnrollsvc(t *testing.T) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "enrollsvc")
	script := "#!/bin/sh\ncase \"$1\" in\nversion) echo 'enrollsvc 1.2.3';;\n" +
		"init) echo '{\"level\":\"WARN\"}' >&2; echo 'enrollsvc: init: softhsm: token refused' >&2; exit 1;;\n*) exit 2;;\nesac\n"
	if err := os.WriteFile(p, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestDevConsole(t *testing.T) {
	data := filepath.Join(t.TempDir(), "data")
	input := "status\nversion\nprovision selfsigned Corp Root CA\nbogus\nmenu\n2\n0\npoweroff\nstatus\n"
	var out bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	err := Run(ctx, Options{Dev: true, DataDir: data, Enrollsvc: fakeEnrollsvc(t), ReleaseFile: filepath.Join(t.TempDir(), "none"),
		In: strings.NewReader(input), Out: &out})
	if err != nil {
		t.Fatalf("Run = %v", err)
	}
	got := out.String()
	for _, want := range []string{
		" State:          unprovisioned\n",
		"Data disk:      " + data + " (development mode)\n",
		"Service:        enrollsvc not started (unprovisioned)\n",
		"Service:        enrollsvc 1.2.3\n",
		"provision selfsigned: enrollsvc init failed, nothing changed: enrollsvc: init: softhsm: token refused\n",
		"unknown command \"bogus\"",
		"Menu:\n  1) Status\n  2) Version\n",
		"Powering off (development mode: leaving).\n",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("console output lacks %q; got:\n%s", want, got)
		}
	}
	if strings.Count(got, "State:          unprovisioned") != 2 { // banner and the one status before poweroff
		t.Errorf("want the banner and one status; the status after poweroff must not run; got:\n%s", got)
	}
	if _, err := os.Stat(filepath.Join(data, "var")); !os.IsNotExist(err) {
		t.Errorf("a failed provisioning left %s/var behind (%v)", data, err)
	}
	id, err := os.ReadFile(filepath.Join(data, "machine-id"))
	if err != nil || len(strings.TrimSpace(string(id))) != 32 || !strings.Contains(got, strings.TrimSpace(string(id))) {
		t.Errorf("machine-id = %q, %v; want 32 hex digits, shown in the banner", id, err)
	}
	if b, err := os.ReadFile(filepath.Join(data, "log", "appliance.log")); err != nil || !strings.Contains(string(b), "enrollsvc init") {
		t.Errorf("appliance.log = %q, %v; want the init attempt logged", b, err)
	}
}

// TestRefusesOutsideImage: without -dev the boot sequence loads modules and formats
// disks, so it must refuse to run on anything but the image's initramfs.
func TestRefusesOutsideImage(t *testing.T) {
	var out bytes.Buffer
	err := Run(context.Background(), Options{DataDir: t.TempDir(), In: strings.NewReader(""), Out: &out})
	if err == nil || !strings.Contains(err.Error(), "not the appliance image") {
		t.Fatalf("Run outside the image = %v, want a refusal", err)
	}
	if out.Len() != 0 {
		t.Errorf("printed before refusing: %q", out.String())
	}
}

func TestWrap(t *testing.T) {
	s := wrap("Data disk: /dev/vda holds data that is not an ext4 file system (a partition table or another file system).", 40)
	for _, l := range strings.Split(s, "\n") {
		if len(l) > 40 {
			t.Errorf("wrap: line %q is longer than 40", l)
		}
	}
	if strings.Join(strings.Fields(s), " ") != "Data disk: /dev/vda holds data that is not an ext4 file system (a partition table or another file system)." {
		t.Errorf("wrap changed the words: %q", s)
	}
}
