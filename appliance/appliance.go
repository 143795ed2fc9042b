// Package appliance is the on-device wiring of the appliance image: the boot sequence
// of the init payload (cmd/appinit, which process 1 starts: appliance/initproc), and the admin
// console.
//
// Boot: check the basic mounts, load the kernel modules the image lists, configure the
// network in the background (loopback, DHCP on the management interface), find, check
// and mount the data disk at /data (formatting it only when it is blank), show the
// banner, start enrollsvc under supervision when the appliance is provisioned, and run
// the console for ever. Everything the appliance keeps lives on the data disk; the
// enrollment service's data directory is /data/var, its log /data/log.
//
// The jobs are split: the data disk's boot decisions are datadisk.Prepare, the
// management network is mgmtnet.Manager, the supervised service svcctl.Service, the
// provisioning steps the steps type (steps.go, which runs the service's steps as
// `enrollsvc provision` children through provisioning/stepcmd), and the console's
// commands one table (commands.go: name, usage, help, who may run it, handler) with
// their handlers grouped by subject in cmd_*.go; login.go is the console's login gate.
//
// The payload owns the serial console like a getty and never exits (u-root issue #3645:
// a session leader that exits hangs up the console). Children never get the console:
// their input is /dev/null, their output goes to log files.
package appliance

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/enrollment-appliance/aeappliance/appliance/console"
	"github.com/enrollment-appliance/aeappliance/appliance/datadisk"
	"github.com/enrollment-appliance/aeappliance/appliance/harden"
	"github.com/enrollment-appliance/aeappliance/appliance/kmod"
	"github.com/enrollment-appliance/aeappliance/appliance/mgmtnet"
	"github.com/enrollment-appliance/aeappliance/appliance/netcfg"
	"github.com/enrollment-appliance/aeappliance/appliance/release"
	"github.com/enrollment-appliance/aeappliance/appliance/svcctl"
	"github.com/enrollment-appliance/aeappliance/appliance/tpmseal"
	"github.com/enrollment-appliance/aeappliance/firmware/slots"
	"github.com/enrollment-appliance/aeappliance/provisioning"
)

// Options configure Run. The zero values of the paths and ports are the image's.
type Options struct {
	// Dev runs the console on a workstation: no mounts, modules, data disk or network
	// changes; DataDir is an ordinary directory, 127.0.0.1 the management address, and
	// poweroff or the end of the input ends Run.
	Dev         bool
	DataDir     string   // mount point of the data disk (default /data)
	Devices     []string // data disk candidates (default datadisk.DefaultDevices)
	ModuleList  string   // default kmod.ListPath
	ReleaseFile string   // default release.Path
	Enrollsvc   string   // the service binary (default /bin/enrollsvc)
	Interface   string   // management interface (default eth0)
	APIPort     int      // local management API (default 9443)
	HTTPPort    int      // CRLs, OCSP, AIA and SCEP over plain HTTP (default 80)
	EnrollPort  int      // enrollment web services over HTTPS, with a directory (default 443)
	HSMFile     string   // which PKCS#11 module the image bundles (default release.HSMPath)
	TPMDevice   string   // the TPM 2.0 (default tpmseal.DevicePath)
	In          io.Reader
	Out         io.Writer
	// ReopenConsole opens the console device again after reading it failed (default
	// /dev/console); not used in Dev mode.
	ReopenConsole func() (io.Reader, io.Writer, error)
}

func (o *Options) defaults() {
	if o.DataDir == "" {
		o.DataDir = "/data"
	}
	if o.Devices == nil {
		o.Devices = datadisk.DefaultDevices
	}
	if o.ModuleList == "" {
		o.ModuleList = kmod.ListPath
	}
	if o.ReleaseFile == "" {
		o.ReleaseFile = release.Path
	}
	if o.Enrollsvc == "" {
		o.Enrollsvc = "/bin/enrollsvc"
	}
	if o.Interface == "" {
		o.Interface = "eth0"
	}
	if o.TPMDevice == "" {
		o.TPMDevice = tpmseal.DevicePath
	}
	if o.APIPort == 0 {
		o.APIPort = 9443
	}
	if o.HTTPPort == 0 {
		o.HTTPPort = 80
	}
	if o.EnrollPort == 0 {
		o.EnrollPort = 443
	}
	if o.HSMFile == "" {
		o.HSMFile = release.HSMPath
	}
	if o.In == nil {
		o.In = os.Stdin
	}
	if o.Out == nil {
		o.Out = os.Stdout
	}
	if o.ReopenConsole == nil {
		o.ReopenConsole = func() (io.Reader, io.Writer, error) {
			f, err := os.OpenFile("/dev/console", os.O_RDWR, 0)
			if err != nil {
				return nil, nil, err
			}
			setupTTY(f)
			return f, f, nil
		}
	}
}

// Prompt is the console prompt.
const Prompt = "appliance> "

// Appliance is the running appliance.
type Appliance struct {
	o        Options
	rel      release.Release
	log      *slog.Logger
	logs     *logSink
	con      *console.Console
	net      *mgmtnet.Manager  // the management network
	access   map[string]access // of each console command, from commandTable
	start    time.Time
	boot     bootTimeline // on the image: when each boot phase ended
	serial   string
	mods     kmod.Result
	stop     context.CancelFunc // ends Run (Dev mode)
	ctx      context.Context    // Run's, for what a console command starts in the background
	diskDone chan struct{}      // closed once the data disk is ready or known to be unusable
	hsm      release.HSM        // the PKCS#11 module of the image

	mu      sync.Mutex
	disk    datadisk.State
	machine string
	svc     svcctl.Service // enrollsvc, once provisioned
	down    bool           // powering off or rebooting: start nothing more

	loggedIn bool      // the console's admin is logged in
	lastCmd  time.Time // of the logged-in admin, for IdleLogout

	prov    *provServer // the provisioning API while unprovisioned
	running string      // the firmware slot this boot runs from ("": the factory image)
	confirm bool        // this boot is a slot's trial: confirm it once up
}

// Run boots the appliance and runs the console. On the image it does not return; in Dev
// mode it returns when the console input ends or the operator powers off.
func Run(ctx context.Context, o Options) error {
	o.defaults()
	a := &Appliance{o: o, start: time.Now(), logs: newLogSink(), diskDone: make(chan struct{})}
	a.log = slog.New(slog.NewTextHandler(a.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	a.net = mgmtnet.New(o.Interface, o.Dev, a.log, func(msg string) { a.con.Printf("%s", msg) })
	log.SetOutput(a.logs) // u-root's libraries log with the standard logger
	log.SetFlags(log.LstdFlags)
	if !o.Dev {
		if err := checkImage(o.ReleaseFile); err != nil {
			return err
		}
		// The console writes to the device itself, whatever standard output is (u-root's
		// init, which started the payload before appliance/initproc, gave it a pipe that
		// could not be drained before powering down).
		if _, out, err := o.ReopenConsole(); err == nil {
			o.Out, a.o.Out = out, out
		} else {
			fmt.Fprintf(o.Out, "opening the console: %v\n", err)
		}
	}
	rel, err := release.Read(o.ReleaseFile)
	if err != nil {
		if !o.Dev {
			return err
		}
		rel = release.Release{Product: release.Product, Version: "dev"}
	}
	a.rel = rel
	if h, err := release.ReadHSM(o.HSMFile); err == nil {
		a.hsm = h
	} else {
		a.hsm = release.HSM{SoftHSM: true}
	}
	ctx, a.stop = context.WithCancel(ctx)
	a.ctx = ctx
	defer a.stop()
	table := a.commandTable()
	cmds := make([]console.Command, len(table))
	a.access = make(map[string]access, len(table))
	for i, c := range table {
		cmds[i], a.access[c.Name] = c.Command, c.Access
	}
	a.con = console.New(o.In, o.Out, Prompt, cmds)
	a.con.Log = a.log
	a.con.Allow = a.allow
	if f, ok := o.In.(*os.File); ok {
		a.con.Echo = func(on bool) { setEcho(f, on) }
	}
	a.con.Printf("%s %s starting", rel.Product, rel.Version)

	if o.Dev {
		a.net.SetConfigured(netcfg.Config{Interface: "lo", Method: "development mode", Addr: &net.IPNet{IP: net.IPv4(127, 0, 0, 1), Mask: net.CIDRMask(8, 32)}})
	} else {
		// /proc, /sys and /dev first: the kernel's log (/dev/kmsg) gives the boot's first phases.
		for _, err := range ensureMounts() {
			a.con.Printf("boot: %v", err)
		}
		if err := a.boot.kernelMarks("/dev/kmsg"); err != nil {
			a.log.Warn("reading the kernel log for the boot timeline", "err", err)
		}
		a.boot.mark(bootInit)
		a.bootSystem()
		a.boot.mark(bootModules)
		go func() {
			if _, err := a.net.Address(ctx, 10*time.Minute); err == nil {
				a.boot.mark(bootNetwork)
			}
		}()
		go a.net.Run(ctx, a.diskDone, a.initialNetwork,
			func() (provisioning.Network, error) { return provisioning.LoadNetwork(a.settingsDir()) }, a.addressMoved)
	}
	if !o.Dev {
		if b, err := os.ReadFile("/proc/cmdline"); err == nil {
			a.running = slots.RunningSlot(string(b))
		}
		a.feedWatchdog(ctx)
	}
	a.prepareData(ctx)
	a.chooseFirmware() // may boot another firmware and not return
	a.capTPM()
	if !o.Dev {
		a.boot.mark(bootDisk)
	}
	close(a.diskDone)
	if !o.Dev {
		a.serial = readSerial()
	}
	a.banner(a.con.Out())
	// Run returns (in development mode) only once these are done: they write into the data
	// directory, which the caller may remove as soon as Run returns.
	var wg sync.WaitGroup
	defer wg.Wait()
	defer a.stop() // runs first: ends what waits on ctx
	wg.Go(func() { a.provisioningAPILoop(ctx) })
	wg.Go(func() { a.confirmFirmware(ctx) })
	if a.provisioned() {
		wg.Go(func() {
			if err := a.startService(ctx); err != nil {
				a.con.Printf("enrollsvc: %v", err)
				return
			}
			if _, err := svcctl.WaitHealthy(ctx, a.varDir(), 5*time.Minute); err == nil && !a.o.Dev {
				a.boot.mark(bootService)
			}
		})
	}
	return a.consoleLoop(ctx)
}

// consoleLoop runs the console; on the image it reopens the console device whenever
// reading fails, so that it never ends.
func (a *Appliance) consoleLoop(ctx context.Context) error {
	for {
		err := a.con.Run(ctx)
		if a.o.Dev || ctx.Err() != nil {
			a.shutdownService()
			a.closeLogs()
			if ctx.Err() != nil || errors.Is(err, io.EOF) {
				return nil // powered off, or the end of the input in Dev mode
			}
			return err
		}
		a.log.Error("console read failed; reopening the console", "err", err)
		time.Sleep(time.Second)
		in, out, rerr := a.o.ReopenConsole()
		if rerr != nil {
			a.log.Error("reopening the console", "err", rerr)
			continue
		}
		a.con.SetInput(in)
		a.con.SetOutput(out)
	}
}

// bootSystem does the image-only steps before the data disk: console line settings,
// directories and kernel modules.
func (a *Appliance) bootSystem() {
	if f, ok := a.o.In.(*os.File); ok {
		setupTTY(f)
	}
	// /run as on any Linux system (0755: the provisioning API relay's user enters its directory
	// there), then cryptsetup's lock directory (cryptsetup(8), --disable-locks is not used).
	if err := os.Mkdir("/run", 0o755); err != nil && !errors.Is(err, os.ErrExist) {
		a.con.Printf("boot: %v", err)
	}
	if err := os.MkdirAll("/run/cryptsetup", 0o700); err != nil {
		a.con.Printf("boot: %v", err)
	}
	// The drivers of the devices present, and the modules marked to load always.
	t := time.Now()
	res, err := kmod.LoadPresent(a.o.ModuleList, kmod.AliasPathFor(a.o.ModuleList), "/sys", kmod.Load)
	if err != nil {
		a.con.Printf("Kernel modules: %v", err)
		return
	}
	a.mods = res
	a.log.Info("kernel modules", "result", res.Summary(), "rounds", res.Rounds, "elapsed", time.Since(t))
	// Only errors and worse from the kernel on the console: the console is the admin's.
	if err := os.WriteFile("/proc/sys/kernel/printk", []byte("3 4 1 3"), 0o644); err != nil {
		a.log.Error("kernel console log level", "err", err)
	}
	var early []harden.Setting // kexec stays possible until the firmware is chosen
	for _, st := range harden.Sysctls {
		if st.Key != kexecSysctl {
			early = append(early, st)
		}
	}
	n, errs := harden.Apply("/proc/sys", early)
	for _, err := range errs {
		a.log.Error("sysctl hardening", "err", err)
	}
	a.log.Info("sysctl hardening", "applied", n, "failed", len(errs))
}

// initialNetwork is the saved network settings, or DHCP without a data disk or when
// they cannot be read.
func (a *Appliance) initialNetwork() provisioning.Network {
	n := provisioning.Network{Mode: "dhcp"}
	if _, ok := a.diskReady(); ok {
		saved, err := provisioning.LoadNetwork(a.settingsDir())
		if err != nil {
			a.con.Printf("Network settings: %v; using DHCP", err)
		} else {
			n = saved
		}
	}
	return n
}

// addressMoved restarts the service on the new management address.
func (a *Appliance) addressMoved(ctx context.Context) {
	if a.provisioned() {
		a.restartService(ctx)
	}
}

// prepareData finds, checks, formats if blank, and mounts the data disk (the image,
// datadisk.Prepare), or uses DataDir as it is (Dev mode). Problems are shown on the
// console and kept for status; the console works without a data disk.
func (a *Appliance) prepareData(ctx context.Context) {
	t := time.Now()
	var st datadisk.State
	if a.o.Dev {
		st = datadisk.State{Dev: a.o.DataDir + " (development mode)", Kind: datadisk.Ext, Mounted: true}
		if err := os.MkdirAll(a.o.DataDir, 0o755); err != nil {
			st = datadisk.State{Problem: err.Error()}
		}
	} else {
		st = datadisk.Prepare(ctx, a.o.Devices, a.o.DataDir, a.diskSealer(), func(msg string) { a.con.Printf("%s", msg) }, a.log)
	}
	a.log.Info("data disk", "dev", st.Dev, "kind", st.Kind.String(), "mounted", st.Mounted, "problem", st.Problem, "elapsed", time.Since(t))
	a.mu.Lock()
	a.disk = st
	a.mu.Unlock()
	if st.Problem != "" {
		a.con.Printf("%s", wrap("Data disk: "+st.Problem, 78))
		return
	}
	if err := a.afterMount(); err != nil {
		a.con.Printf("Data disk: %v", err)
	}
}

// afterMount sets up the data disk's directories, the log file and the machine ID.
func (a *Appliance) afterMount() error {
	logDir := filepath.Join(a.o.DataDir, "log")
	if err := os.MkdirAll(logDir, 0o750); err != nil {
		return fmt.Errorf("creating %s: %w", logDir, err)
	}
	f, err := os.OpenFile(filepath.Join(logDir, "appliance.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o640)
	if err != nil {
		return fmt.Errorf("opening the log: %w", err)
	}
	a.logs.SetFile(f)
	id, err := machineID(filepath.Join(a.o.DataDir, "machine-id"))
	if err != nil {
		return err
	}
	a.mu.Lock()
	a.machine = id
	a.mu.Unlock()
	return nil
}

func (a *Appliance) diskReady() (datadisk.State, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.diskReadyLocked()
}

func (a *Appliance) diskReadyLocked() (datadisk.State, bool) {
	return a.disk, a.disk.Mounted && a.disk.Problem == ""
}

// varDir is enrollsvc's data directory.
func (a *Appliance) varDir() string { return filepath.Join(a.o.DataDir, "var") }

// provisioned reports whether enrollsvc has a configuration on the data disk.
func (a *Appliance) provisioned() bool {
	if _, ok := a.diskReady(); !ok {
		return false
	}
	_, err := os.Stat(filepath.Join(a.varDir(), "config.json"))
	return err == nil
}

// state is "unprovisioned", "provisioned" or "no data disk".
func (a *Appliance) state() string {
	if disk, ok := a.diskReady(); !ok {
		if disk.Locked {
			return "data disk locked"
		}
		if disk.NeedsPassphrase {
			return "data disk not encrypted yet"
		}
		return "no data disk"
	}
	if a.provisioned() {
		return "provisioned"
	}
	return "unprovisioned"
}

func (a *Appliance) closeLogs() {
	a.svc.CloseLog()
	a.logs.SetFile(nil)
}

// checkImage refuses to run the image boot sequence anywhere but in the image: it would
// load modules and format disks.
func checkImage(releaseFile string) error {
	var st unix.Statfs_t
	if err := unix.Statfs("/", &st); err != nil {
		return fmt.Errorf("appinit: statfs /: %w", err)
	}
	if st.Type != unix.RAMFS_MAGIC && st.Type != unix.TMPFS_MAGIC {
		return errors.New("appinit: the root file system is not an initramfs: this is not the appliance " +
			"image (use -dev to try the console here)")
	}
	if _, err := os.Stat(releaseFile); err != nil {
		return fmt.Errorf("appinit: not the appliance image: %w", err)
	}
	return nil
}

// ensureMounts mounts /proc, /sys and /dev unless mounted (process 1 mounts nothing).
func ensureMounts() []error {
	var errs []error
	for _, m := range []struct{ src, dir, fs string }{
		{"proc", "/proc", "proc"}, {"sysfs", "/sys", "sysfs"}, {"devtmpfs", "/dev", "devtmpfs"},
	} {
		if datadisk.IsMounted(m.dir) {
			continue
		}
		if err := os.MkdirAll(m.dir, 0o755); err != nil {
			errs = append(errs, err)
			continue
		}
		if err := unix.Mount(m.src, m.dir, m.fs, unix.MS_NOSUID|unix.MS_NOEXEC, ""); err != nil && !errors.Is(err, unix.EBUSY) {
			errs = append(errs, fmt.Errorf("mount %s: %w", m.dir, err))
		}
	}
	return errs
}

// setupTTY puts the console line in canonical mode with echo, CR to NL on input and NL
// to CR NL on output, no keyboard signals (^C must not reach the payload or the service)
// and no end-of-file character (^D must not end the console).
func setupTTY(f *os.File) {
	fd := int(f.Fd())
	t, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	if err != nil {
		return // not a terminal
	}
	t.Iflag |= unix.ICRNL
	t.Iflag &^= unix.INLCR | unix.IGNCR
	t.Oflag |= unix.OPOST | unix.ONLCR
	t.Lflag |= unix.ICANON | unix.ECHO | unix.ECHOE | unix.ECHOK | unix.IEXTEN
	t.Lflag &^= unix.ISIG
	t.Cc[unix.VEOF] = 0
	_ = unix.IoctlSetTermios(fd, unix.TCSETS, t)
}

// setEcho turns the terminal's echo on or off (around secrets).
func setEcho(f *os.File, on bool) {
	fd := int(f.Fd())
	t, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	if err != nil {
		return
	}
	if on {
		t.Lflag |= unix.ECHO
	} else {
		t.Lflag &^= unix.ECHO
	}
	_ = unix.IoctlSetTermios(fd, unix.TCSETS, t)
}

// wrap breaks s into lines of at most width columns at spaces.
func wrap(s string, width int) string {
	var b strings.Builder
	col := 0
	for _, w := range strings.Fields(s) {
		if col > 0 && col+1+len(w) > width {
			b.WriteString("\n  ")
			col = 2
		} else if col > 0 {
			b.WriteByte(' ')
			col++
		}
		b.WriteString(w)
		col += len(w)
	}
	return b.String()
}
