package kmod

import (
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"golang.org/x/sys/unix"
)

func TestLoadList(t *testing.T) {
	list := filepath.Join(t.TempDir(), "modules")
	content := "# order matters\n/lib/modules/6.1/kernel/drivers/virtio/virtio.ko\n\n" +
		"/lib/modules/6.1/kernel/arch/x86/crypto/crc32c-intel.ko\n/lib/modules/6.1/kernel/fs/ext4/ext4.ko\n"
	if err := os.WriteFile(list, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	var order []string
	res, err := LoadList(list, func(p string) error {
		order = append(order, Name(p))
		if Name(p) == "crc32c_intel" {
			return fmt.Errorf("kmod: loading crc32c_intel: %w", unix.ENODEV)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("LoadList = %v", err)
	}
	if want := []string{"virtio", "crc32c_intel", "ext4"}; !reflect.DeepEqual(order, want) {
		t.Errorf("load order = %v, want %v", order, want)
	}
	if want := []string{"virtio", "ext4"}; !reflect.DeepEqual(res.Loaded, want) {
		t.Errorf("Loaded = %v, want %v", res.Loaded, want)
	}
	if got := res.Failed["crc32c_intel"]; got != "no such device" {
		t.Errorf("Failed[crc32c_intel] = %q, want %q", got, "no such device")
	}
	if got, want := res.Summary(), "2 loaded, 1 unavailable (crc32c_intel: no such device)"; got != want {
		t.Errorf("Summary() = %q, want %q", got, want)
	}
}

func TestLoadListMissing(t *testing.T) {
	if _, err := LoadList(filepath.Join(t.TempDir(), "nope"), Load); err == nil {
		t.Error("LoadList(missing file) = nil error, want one")
	}
}
