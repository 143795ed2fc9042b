// Command appinit is the appliance image's init (/init). Run by the kernel as process 1, it
// starts itself again as the payload (appliance/initproc: process 1 only reaps orphans and
// restarts the machine should the payload end); the payload, on the serial console, mounts
// the kernel's file systems, loads the kernel modules, prepares the data disk, configures
// the network, supervises enrollsvc and runs the admin console. It never exits on the image.
//
// With -dev it runs the same console on a workstation's terminal, on an ordinary data
// directory, without touching modules, disks or the network.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/enrollment-appliance/aeappliance/appliance"
	"github.com/enrollment-appliance/aeappliance/appliance/datadisk"
	"github.com/enrollment-appliance/aeappliance/appliance/initproc"
	"github.com/enrollment-appliance/aeappliance/appliance/release"
)

const usage = `appinit - the appliance's init payload and serial console

Usage:
  appinit [flags]          on the appliance image (/init: as process 1, it
                           starts itself again, without arguments, as payload)
  appinit -dev [flags]     the console on this terminal, for development

On the image, appinit loads the kernel modules listed in -modules,
configures the network (DHCP on -iface), finds the data disk (-devices),
formats it as ext4 only when it is blank (its first MiB all zeros), checks
and mounts it on -data, shows the banner and runs the admin console. Once
provisioned it keeps "enrollsvc serve --data DATA/var" running, restarting
it with a backoff. It never exits: poweroff and reboot stop the service,
unmount the data disk and power down.

The console takes typed commands (type "help") or a numbered menu ("menu").

Flags:
`

func main() {
	if os.Getpid() == 1 {
		// The kernel's /init. The words of the kernel's command line it did not recognise are
		// our arguments: they are not the payload's.
		err := initproc.Run(initproc.Config{Payload: os.Args[0], Shell: release.ShellPath})
		fmt.Fprintln(os.Stderr, "appinit:", err)
		os.Exit(1)
	}
	err := run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "appinit:", err)
		if !isDev(os.Args[1:]) && os.Getppid() == 1 {
			// The payload on the image: process 1 restarts the machine when it
			// ends. Keep the console, and let the operator read why.
			for {
				time.Sleep(time.Hour)
			}
		}
		os.Exit(1)
	}
}

func isDev(args []string) bool {
	for _, a := range args {
		if a == "-dev" || a == "--dev" || strings.HasPrefix(a, "-dev=") || strings.HasPrefix(a, "--dev=") {
			return true
		}
	}
	return false
}

func run(args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("appinit", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o appliance.Options
	var devices string
	fs.BoolVar(&o.Dev, "dev", false, "development mode: the console here, -data a plain directory")
	fs.StringVar(&o.DataDir, "data", "/data", "data disk mount point (with -dev: a directory)")
	fs.StringVar(&devices, "devices", strings.Join(datadisk.DefaultDevices, ","), "data disks to try")
	fs.StringVar(&o.ModuleList, "modules", "/etc/appliance/modules", "kernel modules to load, in order")
	fs.StringVar(&o.ReleaseFile, "release", "/etc/appliance/release.json", "the image's release file")
	fs.StringVar(&o.Enrollsvc, "enrollsvc", "/bin/enrollsvc", "the enrollment service binary")
	fs.StringVar(&o.Interface, "iface", "eth0", "management network interface (DHCP)")
	fs.IntVar(&o.APIPort, "api-port", 9443, "port of the management API on the management address")
	fs.IntVar(&o.HTTPPort, "http-port", 80, "port of the plain-HTTP listener (CRLs, OCSP, SCEP)")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), usage)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		fs.Usage()
		return fmt.Errorf("unexpected arguments: %s", strings.Join(fs.Args(), " "))
	}
	o.Devices = strings.Split(devices, ",")
	o.In, o.Out = stdin, stdout
	return appliance.Run(context.Background(), o)
}
