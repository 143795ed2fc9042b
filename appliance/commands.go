package appliance

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/enrollment-appliance/aeappliance/appliance/console"
	"github.com/enrollment-appliance/aeappliance/appliance/datadisk"
	"github.com/enrollment-appliance/aeappliance/appliance/harden"
	"github.com/enrollment-appliance/aeappliance/appliance/svcctl"
	"github.com/enrollment-appliance/aeappliance/provisioning"
)

// access says who may run a console command.
type access int

const (
	// needLogin: once the admin passphrase is set, only a logged-in admin (the zero value).
	needLogin access = iota
	// open: anyone at the console, always.
	open
	// beforePassphrase: anyone until the admin passphrase is set, then needLogin.
	beforePassphrase
)

// command is one line of the console's command table: console.Command (name, usage,
// help, menu entry, handler) and who may run it.
type command struct {
	console.Command
	Access access
}

// commandTable is the console's command set. The words follow aectl's.
func (a *Appliance) commandTable() []command {
	cmds := []command{
		{Command: console.Command{Name: "status", Help: "state, data disk, network, time, service", Menu: "Status", Run: a.cmdStatus}, Access: open},
		{Command: console.Command{Name: "version", Help: "image, kernel and service versions", Menu: "Version", Run: a.cmdVersion}, Access: open},
		{Command: console.Command{Name: "login", Help: "log in with the admin passphrase", Menu: "Log in", Run: a.cmdLogin}, Access: open},
		{Command: console.Command{Name: "logout", Help: "log out of the console", Run: a.cmdLogout}, Access: open},
		{Command: console.Command{Name: provisionCmd + provisioning.Status, Help: "the provisioning steps: done and next", Menu: "Provisioning: what is done",
			Run: a.cmdProvisionStatus}, Access: open},
		{Command: console.Command{Name: provisionCmd + provisioning.StepPassphrase, Help: "1. set or change the admin passphrase", Menu: "Provisioning 1: admin passphrase",
			Run: a.cmdPassphrase}, Access: beforePassphrase},
		{Command: console.Command{Name: provisionCmd + provisioning.StepToken, Help: "3. initialise the HSM token (SO, user PIN)", Menu: "Provisioning 3: HSM token",
			Run: a.cmdToken}},
		{Command: console.Command{Name: provisionCmd + provisioning.StepKey, Args: "[TYPE]", MaxArgs: 1, Help: "4. CA key in the token (ecdsa-p256...)",
			Menu: "Provisioning 4: CA key", Run: a.cmdKey}},
		{Command: console.Command{Name: provisionCmd + provisioning.CASelfSigned, Args: "CA-NAME", MinArgs: 1, MaxArgs: -1, Help: "5a. a self-signed root CA",
			Menu: "Provisioning 5a: self-signed root CA", Ask: []string{"Name of the CA (e.g. Corp Root CA)"}, Run: a.cmdSelfSigned}},
		{Command: console.Command{Name: provisionCmd + provisioning.CACSR, Args: "CA-NAME", MinArgs: 1, MaxArgs: -1, Help: "5b. subordinate CA: print its request",
			Menu: "Provisioning 5b: subordinate CA request", Ask: []string{"Name of the CA (e.g. Corp Issuing CA)"}, Run: a.cmdCSR}},
		{Command: console.Command{Name: provisionCmd + provisioning.CAImport, Help: "5b. paste the signed CA chain (PEM)", Menu: "Provisioning 5b: import the CA chain",
			Run: a.cmdImport}},
		{Command: console.Command{Name: provisionCmd + provisioning.StepDirectory, Args: "URL BIND-USER CA-CN [DC-NAME]", MinArgs: 3, MaxArgs: 4,
			Help: "6. Active Directory (optional)", Menu: "Provisioning 6: Active Directory",
			Ask: []string{"LDAP URL (ldaps://dc.example.test)", "Service account (UPN or DN)", "Enrollment service cn"},
			Run: a.cmdDirectory}},
		{Command: console.Command{Name: provisionCmd + provisioning.StepFinish, Help: "7. write the configuration, start", Menu: "Provisioning 7: finish and start",
			Run: a.cmdFinish}},
		{Command: console.Command{Name: "network", Help: "2. network settings and state", Menu: "Network", Run: a.cmdNetwork("")}},
		{Command: console.Command{Name: "network dhcp", Help: "address by DHCP", Run: a.cmdNetwork("dhcp")}},
		{Command: console.Command{Name: "network static", Args: "ADDR/PREFIX [GATEWAY]", MinArgs: 1, MaxArgs: 2, Help: "a static address",
			Run: a.cmdNetwork("static")}},
		{Command: console.Command{Name: "network dns", Args: "IP...", MaxArgs: 3, Help: "name servers (none: DHCP's)", Run: a.cmdNetwork("dns")}},
		{Command: console.Command{Name: "network ntp", Args: "SERVER...", MaxArgs: 4, Help: "time servers (none: DHCP's)", Run: a.cmdNetwork("ntp")}},
		{Command: console.Command{Name: "network hostname", Args: "NAME", MinArgs: 1, MaxArgs: 1, Help: "the appliance's DNS name",
			Run: a.cmdNetwork("hostname")}},
		{Command: console.Command{Name: "requests", Args: "[STATE]", MaxArgs: 1, Help: "certificate requests (pending, issued...)",
			Menu: "Pending requests", Run: a.cmdRequests}},
		{Command: console.Command{Name: "approve", Args: "ID", MinArgs: 1, MaxArgs: 1, Help: "issue a pending request", Run: a.cmdApprove}},
		{Command: console.Command{Name: "deny", Args: "ID REASON...", MinArgs: 2, MaxArgs: -1, Help: "refuse a pending request", Run: a.cmdDeny}},
		{Command: console.Command{Name: "revoke", Args: "SERIAL REASON", MinArgs: 2, MaxArgs: 2, Help: "revoke a certificate (final)",
			Confirm: "Revoke the certificate? This cannot be undone.", Run: a.cmdRevoke}},
		{Command: console.Command{Name: "events", Args: "[N]", MaxArgs: 1, Help: "the latest audit events", Menu: "Events", Run: a.cmdEvents}},
		{Command: console.Command{Name: "ca", Help: "the CA certificate and its chain (PEM)", Menu: "CA certificate", Run: a.cmdCA}},
		{Command: console.Command{Name: "api token", Help: "the management API's admin token", Run: a.cmdAPIToken}},
		{Command: console.Command{Name: "update", Help: "firmware: running version, slots, last update", Menu: "Firmware updates",
			Run: a.cmdUpdateStatus}},
		{Command: console.Command{Name: "update rollback", Help: "boot the factory image from now on", Confirm: "Stop booting the installed update?",
			Run: a.cmdUpdateRollback}},
	}
	if a.rel.Debug {
		cmds = append(cmds, command{Command: console.Command{Name: "shell", Help: "a shell (debug image only)", Run: a.cmdShell}})
	}
	return append(cmds,
		command{Command: console.Command{Name: "reboot", Help: "stop the service, unmount, reboot", Menu: "Reboot",
			Confirm: "Reboot the appliance?", Run: a.power(unix.LINUX_REBOOT_CMD_RESTART, "Rebooting")}, Access: beforePassphrase},
		command{Command: console.Command{Name: "poweroff", Help: "stop the service, unmount, power off", Menu: "Power off",
			Confirm: "Power off the appliance?", Run: a.power(unix.LINUX_REBOOT_CMD_POWER_OFF, "Powering off")}, Access: beforePassphrase})
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
	if si.API != "" {
		h := "healthy"
		if si.Health != nil {
			h = "not answering: " + si.Health.Error()
		}
		row("API", si.API+" "+h)
	}
	if !a.o.Dev {
		row("Listening", listening())
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
		out = append(out, s.String())
	}
	if len(out) == 0 {
		return "nothing"
	}
	return strings.Join(out, ", ")
}

// provisionCmd is the first word of the console's provisioning commands: `provision`
// and a step's name (provisioning.StepToken...).
const provisionCmd = "provision "
