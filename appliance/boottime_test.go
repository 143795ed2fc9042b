package appliance

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The kernel's log gives the kernel and initramfs phases; status shows each phase's own duration
// in the order they ended, and when the last ended.
func TestBootTimeline(t *testing.T) {
	kmsg := filepath.Join(t.TempDir(), "kmsg")
	log := "6,1,0,-;Linux version 6.1.0\n" +
		"5,120,812345,-;Trying to unpack rootfs image as initramfs...\n" +
		" SUBSYSTEM=none\n" +
		"6,180,1412345,-;Freeing initrd memory: 28000K\n" +
		"6,400,1612345,-;Run /init as init process\n" +
		"garbage without a separator\n"
	if err := os.WriteFile(kmsg, []byte(log), 0o600); err != nil {
		t.Fatal(err)
	}
	var b bootTimeline
	if got := b.String(); got != "not recorded" {
		t.Errorf("empty timeline = %q", got)
	}
	if err := b.kernelMarks(kmsg); err != nil {
		t.Fatal(err)
	}
	b.markAt(bootInit, 2*time.Second)
	b.markAt(bootService, 9*time.Second) // out of order: shown in time order
	b.markAt(bootDisk, 5*time.Second)
	b.markAt(bootDisk, 6*time.Second) // a phase keeps its first end
	want := "kernel 0.8s, initramfs unpack 0.6s, kernel to /init 0.2s, init 0.4s, data disk 3.0s, service 4.0s; service done 9.0s after the kernel started"
	if got := b.String(); got != want {
		t.Errorf("timeline:\n got %s\nwant %s", got, want)
	}
	if _, _, ok := parseKmsg("6,1,-5,-;x"); ok {
		t.Error("a negative timestamp was read")
	}
	if err := b.kernelMarks(filepath.Join(t.TempDir(), "none")); err == nil || !strings.Contains(err.Error(), "no such file") {
		t.Errorf("a missing kernel log: %v", err)
	}
}

// Reading the real kernel log ends at the end of its buffer instead of waiting for more (a
// blocked read here would keep the appliance from booting).
func TestKernelMarksDoNotWait(t *testing.T) {
	if _, err := os.Stat("/dev/kmsg"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("no /dev/kmsg on CI: %v", err)
		}
		t.Skipf("no /dev/kmsg: %v", err)
	}
	done := make(chan error, 1)
	go func() {
		var b bootTimeline
		done <- b.kernelMarks("/dev/kmsg")
	}()
	select {
	case err := <-done:
		if err != nil && !os.IsPermission(err) {
			t.Errorf("reading /dev/kmsg: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("reading /dev/kmsg waited for more than 10 s: the boot would hang there")
	}
}
