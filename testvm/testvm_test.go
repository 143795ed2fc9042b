package testvm

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/enrollment-appliance/aeappliance/testvm/swtpm"
	"github.com/enrollment-appliance/aeappliance/testvm/swtpm/swtpmtest"
)

func TestArgs(t *testing.T) {
	o := Options{Image: Image{Kernel: "/k", Initrd: "/i"}, DataDisk: "/d.img", Forward: []int{9443, 80}, Serial: "S1", NoReboot: true}
	got := strings.Join(Args(o, map[int]int{9443: 40001, 80: 40002}), " ")
	for _, want := range []string{
		"-accel tcg", "-m 1024", "-kernel /k -initrd /i", "-append console=ttyS0 quiet panic=-1",
		"-netdev user,id=n0,hostfwd=tcp:127.0.0.1:40001-:9443,hostfwd=tcp:127.0.0.1:40002-:80",
		"-drive file=/d.img,if=virtio,format=raw", "-smbios type=1,serial=S1", "-no-reboot",
		"-device i6300esb -action watchdog=reset",
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

// TestTPM: the machine of a data disk gets a TPM whose state lives beside the disk and
// stays across boots; a fresh TPM starts from nothing; QEMU is given a TIS TPM on swtpm.
func TestTPM(t *testing.T) {
	swtpmtest.Need(t)
	disk := filepath.Join(t.TempDir(), "data.img")
	o := Options{DataDisk: disk}
	if got, want := o.tpmState(), disk+".tpm"; got != want {
		t.Errorf("TPM state of %s = %q, want %q", disk, got, want)
	}
	if (Options{DataDisk: disk, NoTPM: true}).tpmState() != "" || (Options{}).tpmState() != "" {
		t.Error("NoTPM, or no disk, still gives the machine a TPM")
	}
	if got := (Options{DataDisk: disk, TPMState: "/elsewhere"}).tpmState(); got != "/elsewhere" {
		t.Errorf("TPMState not used: %q", got)
	}
	args := strings.Join(TPMArgs("/s/ctrl.sock"), " ")
	if want := "-chardev socket,id=chrtpm,path=/s/ctrl.sock -tpmdev emulator,id=tpm0,chardev=chrtpm -device tpm-tis,tpmdev=tpm0"; args != want {
		t.Errorf("TPMArgs = %q, want %q", args, want)
	}

	state := o.tpmState()
	start := func(fresh bool) {
		t.Helper()
		tpm, err := swtpm.Start(state, swtpm.Options{Fresh: fresh})
		if err != nil {
			t.Fatal(err)
		}
		if fi, err := os.Stat(tpm.Ctrl); err != nil || fi.Mode()&os.ModeSocket == 0 {
			t.Fatalf("swtpm's control socket %s: %v, %v", tpm.Ctrl, fi, err)
		}
		tpm.Stop()
		if _, err := os.Stat(tpm.Ctrl); !os.IsNotExist(err) {
			t.Errorf("the control socket outlived swtpm: %v", err)
		}
	}
	start(false)
	mark := filepath.Join(state, "kept")
	if err := os.WriteFile(mark, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	start(false)
	if _, err := os.Stat(mark); err != nil {
		t.Errorf("a second boot of the same disk lost the TPM state: %v", err)
	}
	start(true)
	if _, err := os.Stat(mark); !os.IsNotExist(err) {
		t.Errorf("a fresh TPM kept the old state: %v", err)
	}
}
