package testvm

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestArgs(t *testing.T) {
	o := Options{Image: Image{Kernel: "/k", Initrd: "/i"}, DataDisk: "/d.img", Forward: []int{9443, 80}, Serial: "S1", NoReboot: true}
	got := strings.Join(Args(o, map[int]int{9443: 40001, 80: 40002}), " ")
	for _, want := range []string{
		"-accel tcg", "-m 1024", "-kernel /k -initrd /i", "-append console=ttyS0 quiet panic=-1",
		"-netdev user,id=n0,hostfwd=tcp:127.0.0.1:40001-:9443,hostfwd=tcp:127.0.0.1:40002-:80",
		"-drive file=/d.img,if=virtio,format=raw", "-smbios type=1,serial=S1", "-no-reboot",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("Args lacks %q: %s", want, got)
		}
	}
	if strings.Contains(got, "kvm") {
		t.Errorf("Args asks for KVM: %s", got)
	}
}

func TestNewDiskAndRoot(t *testing.T) {
	p := filepath.Join(t.TempDir(), "d.img")
	if err := NewDisk(p, 64<<20); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(p); err != nil || fi.Size() != 64<<20 {
		t.Errorf("NewDisk: %v, %v", fi, err)
	}
	if err := NewDisk(p, 1); err == nil {
		t.Error("NewDisk over an existing file = nil error")
	}
	root, err := RepoRoot(".")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Errorf("RepoRoot = %s: %v", root, err)
	}
	if p, err := FreePort(); err != nil || p <= 0 {
		t.Errorf("FreePort = %d, %v", p, err)
	}
}
