package appliance

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/enrollment-appliance/aeappliance/appliance/datadisk"
	"github.com/enrollment-appliance/aeappliance/appliance/harden"
	"github.com/enrollment-appliance/aeappliance/appliance/release"
	"github.com/enrollment-appliance/aeappliance/appliance/svcctl"
	"github.com/enrollment-appliance/aeappliance/appliance/tpmseal"
	"github.com/enrollment-appliance/aeappliance/config"
)

// banner is shown once the data disk is ready (or known to be missing).
func (a *Appliance) banner(w io.Writer) {
	line := strings.Repeat("-", 78)
	fmt.Fprintf(w, "%s\n %s\n", line, a.rel.Product)
	fmt.Fprintf(w, " %-16s%s\n", "Version:", a.versionLine())
	fmt.Fprintf(w, " %-16s%s\n", "Serial number:", orNone(a.serial))
	fmt.Fprintf(w, " %-16s%s\n", "Machine ID:", orNone(a.machineID()))
	fmt.Fprintf(w, " %-16s%s\n", "State:", a.stateLine())
	fmt.Fprintf(w, "%s\nType \"help\" for the commands, or \"menu\" for a numbered menu.\n", line)
}

func (a *Appliance) versionLine() string {
	s := a.rel.Version
	if a.running != "" {
		s += " (slot " + a.running + ")"
	}
	if a.rel.Kernel != "" {
		s += " (kernel " + a.rel.Kernel + ")"
	}
	return s
}

func (a *Appliance) stateLine() string {
	st := a.state()
	if st == "provisioned" {
		if subj, _, err := svcctl.CAInfo(a.varDir()); err == nil {
			st += " (CA " + subj + ")"
		}
	}
	return st
}

func (a *Appliance) machineID() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.machine
}

func (a *Appliance) cmdStatus(ctx context.Context, _ []string, w io.Writer) error {
	row := func(k, v string) { fmt.Fprintf(w, "%-16s%s\n", k+":", v) }
	row("State", a.stateLine())
	row("Version", a.versionLine())
	row("Serial number", orNone(a.serial))
	row("Uptime", a.uptime().String())
	if !a.o.Dev {
		row("Boot", a.boot.String())
	}
	// The service's own start, step by step (it writes it once its API serves).
	if b, err := os.ReadFile(config.Path(a.varDir(), config.StartupFile)); err == nil {
		row("Service start", strings.TrimSpace(string(b)))
	}
	disk, ok := a.diskReady()
	switch {
	case ok && a.o.Dev:
		row("Data disk", disk.Dev)
	case ok:
		u, err := datadisk.UsageOf(a.o.DataDir)
		if err != nil {
			row("Data disk", disk.Dev+": "+err.Error())
		} else {
			row("Data disk", fmt.Sprintf("%s on %s, %s", disk.Dev, a.o.DataDir, u))
		}
	default:
		row("Data disk", "unusable: "+firstSentence(disk.Problem))
	}
	row("Encryption", a.encryptionLine(ctx))
	row("Firmware", fmt.Sprintf("security version %d (no update below it installs or boots unforced)", a.rel.SecurityVersion))
	row("TPM", tpmLine(func() (*tpmseal.TPM, error) { return tpmseal.Open(a.o.TPMDevice) }, a.o.TPMDevice))
	netCfg, netErr := a.net.Current()
	switch {
	case netCfg != nil:
		row("Network", netCfg.String())
	case netErr != nil:
		row("Network", "not configured: "+netErr.Error())
	default:
		row("Network", "configuring "+a.o.Interface+" (DHCP)")
	}
	row("Time", time.Now().UTC().Format("2006-01-02 15:04:05 UTC")+", "+a.net.TimeStatus())
	si := a.serviceInfo(ctx)
	row("Service", "enrollsvc "+si.State)
	if c, err := a.svc.Confinement(); err == nil {
		row("Confinement", c.String())
		if b, err := os.ReadFile(config.Path(a.varDir(), config.ConfinementFile)); err == nil {
			row("Sandbox", strings.TrimSpace(string(b)))
		}
	}
	if c, err := a.relayConfinement(); err == nil {
		row("API relay", c.String())
	}
	if si.API != "" {
		h := "healthy"
		if si.Health != nil {
			h = "not answering: " + si.Health.Error()
		}
		row("API", si.API+" "+h)
		if si.Health == nil {
			if err := a.opsRows(ctx, row); err != nil {
				row("Activity", "unavailable: "+err.Error())
			}
		}
	}
	if !a.o.Dev {
		row("Listening", listening())
		row("Modules", a.mods.Summary())
	}
	return nil
}

// tpmLine says whether the appliance has a TPM 2.0, and which, or why it cannot use it.
func tpmLine(open func() (*tpmseal.TPM, error), dev string) string {
	t, err := open()
	if errors.Is(err, fs.ErrNotExist) {
		return "none (no " + dev + ")"
	}
	if err != nil {
		return "unusable: " + err.Error()
	}
	defer t.Close()
	info, err := t.Info()
	if err != nil {
		return "unusable: " + err.Error()
	}
	return info.String()
}

func (a *Appliance) cmdVersion(ctx context.Context, _ []string, w io.Writer) error {
	fmt.Fprintf(w, "%s\n", a.rel.Product)
	fmt.Fprintf(w, "%-16s%s\n", "Image:", a.rel.Version)
	if a.rel.SourceDateEpoch > 0 {
		fmt.Fprintf(w, "%-16s%s\n", "Sources of:", a.rel.BuildDate().Format(time.RFC3339))
	}
	if a.rel.Kernel != "" {
		fmt.Fprintf(w, "%-16s%s\n", "Kernel:", a.rel.Kernel)
	}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(cctx, a.o.Enrollsvc, "version").Output()
	if err != nil {
		return fmt.Errorf("enrollsvc version: %w", err)
	}
	fmt.Fprintf(w, "%-16s%s\n", "Service:", strings.TrimSpace(string(out)))
	return nil
}

// power stops the service, unmounts the data disk cleanly and powers off or reboots.
func (a *Appliance) power(how int, what string) func(context.Context, []string, io.Writer) error {
	return func(ctx context.Context, _ []string, w io.Writer) error {
		fmt.Fprintln(w, "Stopping enrollsvc...")
		a.shutdownService()
		a.log.Info(what)
		a.closeLogs()
		if a.o.Dev {
			fmt.Fprintf(w, "%s (development mode: leaving).\n", what)
			a.stop()
			return nil
		}
		if disk, ok := a.diskReady(); ok {
			fmt.Fprintf(w, "Unmounting the data disk %s...\n", disk.Dev)
			if err := datadisk.Unmount(a.o.DataDir, 5*time.Second); err != nil {
				fmt.Fprintf(w, "%v\n", err)
			} else if disk.Mapped != "" {
				// Closing the volume drops its key from the kernel's memory.
				if err := datadisk.LUKSClose(ctx, datadisk.MapperName); err != nil {
					fmt.Fprintf(w, "%v\n", err)
				}
			}
			a.mu.Lock()
			a.disk.Mounted = false
			a.mu.Unlock()
		}
		unix.Sync()
		fmt.Fprintf(w, "%s.\n", what)
		// Every message out of the serial port before the machine goes down.
		if err := a.con.Drain(); err != nil {
			a.log.Error("draining the console", "err", err)
		}
		if err := unix.Reboot(how); err != nil {
			return fmt.Errorf("%s: %w", strings.ToLower(what), err)
		}
		select {} // the kernel takes it from here
	}
}

// readSerial is the machine's serial number from the firmware (DMI), or "".
func readSerial() string {
	b, err := os.ReadFile("/sys/class/dmi/id/product_serial")
	if err != nil {
		return ""
	}
	s := strings.TrimSpace(string(b))
	switch strings.ToLower(s) {
	case "", "0", "none", "not specified", "to be filled by o.e.m.", "default string":
		return ""
	}
	return s
}

// machineID reads the machine ID at path, making a random one the first time.
func machineID(path string) (string, error) {
	if b, err := os.ReadFile(path); err == nil && len(strings.TrimSpace(string(b))) == 32 {
		return strings.TrimSpace(string(b)), nil
	}
	var r [16]byte
	if _, err := rand.Read(r[:]); err != nil {
		return "", err
	}
	id := hex.EncodeToString(r[:])
	if err := os.WriteFile(path, []byte(id+"\n"), 0o644); err != nil {
		return "", fmt.Errorf("writing the machine ID: %w", err)
	}
	return id, nil
}

// uptime is the system's uptime (/proc/uptime), or in Dev mode the time since start.
func (a *Appliance) uptime() time.Duration {
	if b, err := os.ReadFile("/proc/uptime"); err == nil && !a.o.Dev {
		if f := strings.Fields(string(b)); len(f) > 0 {
			if s, err := strconv.ParseFloat(f[0], 64); err == nil {
				return time.Duration(s) * time.Second
			}
		}
	}
	return time.Since(a.start).Round(time.Second)
}

func orNone(s string) string {
	if s == "" {
		return "(none)"
	}
	return s
}

func firstSentence(s string) string {
	if i := strings.Index(s, ". "); i >= 0 {
		return s[:i+1]
	}
	return s
}

// listening lists the sockets that accept connections or datagrams from the network
// (loopback ones are left out): the hardening says only the service's.
func listening() string {
	socks, err := harden.Listening("/proc/net")
	if err != nil {
		return err.Error()
	}
	var out []string
	seen := map[string]bool{}
	for _, s := range socks {
		if s.Addr.Addr().IsLoopback() || seen[s.String()] {
			continue
		}
		seen[s.String()] = true
		if s.UID == 0 {
			out = append(out, s.String()+" (root)") // nothing should: the service runs as its own user
		} else {
			out = append(out, s.String())
		}
	}
	if len(out) == 0 {
		return "nothing"
	}
	return strings.Join(out, ", ")
}

// cmdShell runs the debug image's shell on the console until it exits.
func (a *Appliance) cmdShell(ctx context.Context, _ []string, w io.Writer) error {
	in, ok1 := a.o.In.(*os.File)
	out, ok2 := a.o.Out.(*os.File)
	if !ok1 || !ok2 {
		return errors.New("the shell needs the console device")
	}
	a.log.Warn("debug shell started on the console")
	fmt.Fprintln(w, "Debug shell: type exit to come back to the console.")
	cmd := exec.CommandContext(ctx, release.ShellPath)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = in, out, out
	cmd.Dir = a.o.DataDir
	return cmd.Run()
}

// opsRows writes the service's last backup and activity (apiclient.Status.OpsRows).
func (a *Appliance) opsRows(ctx context.Context, row func(k, v string)) error {
	cl, err := a.client()
	if err != nil {
		return err
	}
	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	st, err := cl.Status(sctx)
	if err != nil {
		return err
	}
	for _, r := range st.OpsRows() {
		row(r[0], r[1])
	}
	return nil
}
