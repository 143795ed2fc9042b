package appliance

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/enrollment-appliance/aeappliance/appliance/console"
	"github.com/enrollment-appliance/aeappliance/appliance/datadisk"
)

// commands is the console's command set. The words follow aectl's.
func (a *Appliance) commands() []console.Command {
	return []console.Command{
		{Name: "status", Help: "state, data disk, network, service", Menu: "Status", Run: a.cmdStatus},
		{Name: "version", Help: "image, kernel and service versions", Menu: "Version", Run: a.cmdVersion},
		{Name: "provision selfsigned", Args: "CA-NAME", MinArgs: 1, MaxArgs: -1,
			Help: "make a self-signed root CA and start", Menu: "Provision with a self-signed root CA",
			Ask: []string{"Name of the CA (e.g. Corp Root CA)"}, Run: a.cmdProvisionSelfSigned},
		{Name: "reboot", Help: "stop the service, unmount, reboot", Menu: "Reboot",
			Confirm: "Reboot the appliance?", Run: a.power(unix.LINUX_REBOOT_CMD_RESTART, "Rebooting")},
		{Name: "poweroff", Help: "stop the service, unmount, power off", Menu: "Power off",
			Confirm: "Power off the appliance?", Run: a.power(unix.LINUX_REBOOT_CMD_POWER_OFF, "Powering off")},
	}
}

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
	if a.rel.Kernel != "" {
		s += " (kernel " + a.rel.Kernel + ")"
	}
	return s
}

func (a *Appliance) stateLine() string {
	st := a.state()
	if st == "provisioned" {
		if subj, _, err := caInfo(a.varDir()); err == nil {
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
	a.mu.Lock()
	netCfg, netErr := a.netCfg, a.netErr
	a.mu.Unlock()
	switch {
	case netCfg != nil:
		row("Network", netCfg.String())
	case netErr != nil:
		row("Network", "not configured: "+netErr.Error())
	default:
		row("Network", "configuring "+a.o.Interface+" (DHCP)")
	}
	si := a.serviceInfo(ctx)
	row("Service", "enrollsvc "+si.State)
	if si.API != "" {
		h := "healthy"
		if si.Health != nil {
			h = "not answering: " + si.Health.Error()
		}
		row("API", si.API+" "+h)
	}
	if !a.o.Dev {
		row("Modules", a.mods.Summary())
	}
	return nil
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

// cmdProvisionSelfSigned creates the service's data directory with a self-signed root
// CA (the key generated in the SoftHSM token on the data disk) and starts the service.
// It changes nothing when it fails: enrollsvc init builds the directory aside and
// renames it into place.
func (a *Appliance) cmdProvisionSelfSigned(ctx context.Context, args []string, w io.Writer) error {
	name := strings.Join(args, " ")
	if _, ok := a.diskReady(); !ok {
		return errors.New("no usable data disk (see status); nothing changed")
	}
	if a.provisioned() {
		subj, _, _ := caInfo(a.varDir())
		return fmt.Errorf("already provisioned (CA %s); nothing changed", subj)
	}
	ip, err := a.address(ctx, 30*time.Second)
	if err != nil {
		return fmt.Errorf("%w; nothing changed, try again once the network is up", err)
	}
	host := ip.String()
	httpURL := "http://" + host
	if a.o.HTTPPort != 80 {
		httpURL += ":" + strconv.Itoa(a.o.HTTPPort)
	}
	initArgs := []string{"init", "--data", a.varDir(), "--ca-name", name,
		"--api-listen", net.JoinHostPort(host, strconv.Itoa(a.o.APIPort)),
		"--http-url", httpURL, "--http-listen", net.JoinHostPort(host, strconv.Itoa(a.o.HTTPPort))}
	fmt.Fprintf(w, "Creating the HSM token on the data disk, the CA key inside it and a\nself-signed root CA %q...\n", name)
	t := time.Now()
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, a.o.Enrollsvc, initArgs...)
	cmd.Stdout, cmd.Stderr = &out, &out
	err = cmd.Run()
	a.log.Info("enrollsvc init", "args", initArgs, "output", out.String(), "err", err, "elapsed", time.Since(t))
	if err != nil {
		why := lastLine(out.String())
		if why == "" {
			why = err.Error()
		}
		return fmt.Errorf("enrollsvc init failed, nothing changed: %s", why)
	}
	subj, fp, err := caInfo(a.varDir())
	if err != nil {
		return fmt.Errorf("reading the new CA certificate: %w", err)
	}
	fmt.Fprintf(w, "Provisioned in %s.\n  CA:          %s\n  Fingerprint: SHA-256\n    %s\n",
		time.Since(t).Round(100*time.Millisecond), subj, fp)
	if err := a.startService(ctx); err != nil {
		return fmt.Errorf("starting enrollsvc: %w", err)
	}
	url, err := a.waitHealthy(ctx, 90*time.Second)
	if err != nil {
		return fmt.Errorf("enrollsvc started but its API %s does not answer: %w (see status)", url, err)
	}
	fmt.Fprintf(w, "Service running: API %s, CRLs and OCSP %s\n", url, httpURL)
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
			}
			a.mu.Lock()
			a.disk.Mounted = false
			a.mu.Unlock()
		}
		unix.Sync()
		fmt.Fprintf(w, "%s.\n", what)
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
