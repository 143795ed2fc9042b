// Command runvm boots the appliance image interactively (`make run-vm`): QEMU with TCG,
// the serial console on this terminal, a persistent data disk created blank on first use
// with its machine's TPM 2.0 (swtpm, its state beside the disk), and the management API
// and the plain-HTTP listener forwarded to 127.0.0.1.
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"

	"github.com/enrollment-appliance/aeappliance/firmware"
	"github.com/enrollment-appliance/aeappliance/testvm"
	"github.com/enrollment-appliance/aeappliance/testvm/swtpm"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "runvm:", err)
		}
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("runvm", flag.ContinueOnError)
	image := fs.String("image", "build/appliance", "directory with vmlinuz and initramfs.cpio.zst (make image)")
	disk := fs.String("disk", "build/appliance/data.img", "data disk image, created blank on first use")
	size := fs.Int64("disk-size", 1<<30, "size of a new data disk in bytes")
	apiPort := fs.Int("api-port", 9443, "host port on 127.0.0.1 forwarded to the API (guest 9443)")
	httpPort := fs.Int("http-port", 8080, "host port on 127.0.0.1 forwarded to the HTTP listener (guest 80)")
	enrollPort := fs.Int("enroll-port", 8443, "host port on 127.0.0.1 forwarded to the enrollment web services (guest 443)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	m, err := firmware.ReadManifest(*image)
	if err != nil {
		return fmt.Errorf("%w (run make image first)", err)
	}
	if _, err := os.Stat(*disk); errors.Is(err, os.ErrNotExist) {
		if err := testvm.NewDisk(*disk, *size); err != nil {
			return err
		}
		fmt.Printf("Created a blank %d MiB data disk %s: the appliance formats it on first boot.\n", *size>>20, *disk)
	}
	o := testvm.Options{
		Image:    testvm.Image{Kernel: filepath.Join(*image, firmware.KernelFile), Initrd: filepath.Join(*image, firmware.InitramfsFile)},
		DataDisk: *disk, Forward: []int{9443, 80, 443}, Serial: "AE-DEV-0001", CPUs: 2,
	}
	// The machine's TPM 2.0: swtpm with its state beside the data disk, kept across runs.
	tpm, err := swtpm.Start(testvm.TPMStateDir(*disk), swtpm.Options{})
	if err != nil {
		return err
	}
	defer tpm.Stop()
	qargs := append(testvm.Args(o, map[int]int{9443: *apiPort, 80: *httpPort, 443: *enrollPort}),
		"-chardev", "stdio,id=con,mux=on,signal=off", "-serial", "chardev:con", "-mon", "chardev=con,mode=readline")
	qargs = append(qargs, testvm.TPMArgs(tpm.Ctrl)...)
	fmt.Printf("Booting %s %s under QEMU (TCG). The serial console is this terminal;\n"+
		"Ctrl-A X quits QEMU at once (prefer the poweroff command).\n"+
		"API: https://127.0.0.1:%d   HTTP: http://127.0.0.1:%d   enrollment: https://127.0.0.1:%d\ndata disk: %s   TPM state: %s\n\n",
		m.Release.Product, m.Release.Version, *apiPort, *httpPort, *enrollPort, *disk, testvm.TPMStateDir(*disk))
	cmd := exec.Command(testvm.QEMU, qargs...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("qemu: %w", err)
	}
	return nil
}
