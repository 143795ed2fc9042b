package appliance

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/enrollment-appliance/aeappliance/apiclient"
	"github.com/enrollment-appliance/aeappliance/appliance/console"
	"github.com/enrollment-appliance/aeappliance/appliance/release"
	"github.com/enrollment-appliance/aeappliance/appliance/svcctl"
	"github.com/enrollment-appliance/aeappliance/enrollsvc/config"
	"github.com/enrollment-appliance/aeappliance/provisioning"
)

// IdleLogout is how long a console login lasts without a command.
const IdleLogout = 15 * time.Minute

// settingsDir holds the appliance's own settings (admin passphrase, network).
func (a *Appliance) settingsDir() string { return filepath.Join(a.o.DataDir, "appliance") }

// allow is the console's gate: the command table's access (open commands always;
// beforePassphrase ones until an admin passphrase is set; the others after a login).
// The console's own help and menu are open.
func (a *Appliance) allow(cmd console.Command) error {
	acc, ok := a.access[cmd.Name]
	if !ok && (cmd.Name == "help" || cmd.Name == "menu") {
		acc = open
	}
	if acc == open {
		return nil
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if _, ok := a.diskReadyLocked(); !ok {
		return nil // nothing to protect; the commands say there is no data disk
	}
	if !provisioning.HasPassphrase(a.settingsDir()) {
		if acc == beforePassphrase {
			return nil
		}
		return errors.New("set the admin passphrase first: provision passphrase")
	}
	if !a.loggedIn || time.Since(a.lastCmd) > IdleLogout {
		a.loggedIn = false
		return errors.New("log in first: login")
	}
	a.lastCmd = time.Now()
	return nil
}

func (a *Appliance) cmdLogin(ctx context.Context, _ []string, w io.Writer) error {
	if _, ok := a.diskReady(); !ok {
		return errors.New("no usable data disk (see status)")
	}
	if !provisioning.HasPassphrase(a.settingsDir()) {
		return errors.New("no admin passphrase is set yet: provision passphrase")
	}
	p, err := a.con.Ask("Passphrase: ", true)
	if err != nil {
		return err
	}
	if err := provisioning.CheckPassphrase(a.settingsDir(), p); err != nil {
		a.log.Warn("console login failed", "err", err)
		time.Sleep(2 * time.Second) // slows guessing on the serial line
		return err
	}
	a.mu.Lock()
	a.loggedIn, a.lastCmd = true, time.Now()
	a.mu.Unlock()
	a.log.Info("console login")
	fmt.Fprintf(w, "Logged in (for %s without a command).\n", IdleLogout)
	return nil
}

func (a *Appliance) cmdLogout(ctx context.Context, _ []string, w io.Writer) error {
	a.mu.Lock()
	a.loggedIn = false
	a.mu.Unlock()
	fmt.Fprintln(w, "Logged out.")
	return nil
}

// needDisk is the first check of every command that changes the data disk.
func (a *Appliance) needDisk() error {
	if _, ok := a.diskReady(); !ok {
		return errors.New("no usable data disk (see status); nothing changed")
	}
	return nil
}

func (a *Appliance) cmdPassphrase(ctx context.Context, _ []string, w io.Writer) error {
	if err := a.needDisk(); err != nil {
		return err
	}
	var current string
	if provisioning.HasPassphrase(a.settingsDir()) {
		var err error
		if current, err = a.con.Ask("Current passphrase: ", true); err != nil {
			return err
		}
	}
	fmt.Fprintf(w, "The admin passphrase guards this console (at least %d characters).\n", provisioning.MinPassphrase)
	next, err := a.askTwice("New passphrase")
	if err != nil {
		return err
	}
	r, err := provisioning.SetPassphrase(a.settingsDir(), current, next)
	if err != nil {
		return diskFull(err)
	}
	a.log.Info("admin passphrase", "changed", r.Changed)
	if r.Changed {
		a.mu.Lock()
		a.loggedIn, a.lastCmd = true, time.Now()
		a.mu.Unlock()
	}
	fmt.Fprintln(w, r.String())
	return nil
}

// askTwice asks for a secret and its repetition.
func (a *Appliance) askTwice(what string) (string, error) {
	s, err := a.con.Ask(what+": ", true)
	if err != nil {
		return "", err
	}
	again, err := a.con.Ask(what+" again: ", true)
	if err != nil {
		return "", err
	}
	if s != again {
		return "", errors.New("the two entries differ: nothing changed")
	}
	return s, nil
}

// hsmModule is the vendor PKCS#11 module the image bundles, or "" for SoftHSM on the
// data disk.
func (a *Appliance) hsmModule() string {
	if a.hsm.SoftHSM || a.hsm.Module == "" {
		return ""
	}
	return a.hsm.Module
}

// printStep prints a step's report, or returns its error.
func printStep(w io.Writer, r provisioning.Report, err error) error {
	if len(r.Lines) > 0 {
		fmt.Fprintln(w, r.String())
	}
	return err
}

// printTo is printStep for a step's two results: printTo(w)(step(...)).
func printTo(w io.Writer) func(provisioning.Report, error) error {
	return func(r provisioning.Report, err error) error { return printStep(w, r, err) }
}

// diskFull says so when err comes from a full data disk.
func diskFull(err error) error {
	if err != nil && strings.Contains(err.Error(), "no space left on device") {
		return fmt.Errorf("%w (the data disk is full: nothing was saved; see status)", err)
	}
	return err
}

func (a *Appliance) cmdProvisionStatus(ctx context.Context, _ []string, w io.Writer) error {
	if err := a.needDisk(); err != nil {
		return err
	}
	pass := "[ ] passphrase not set"
	if provisioning.HasPassphrase(a.settingsDir()) {
		pass = "[x] passphrase set"
	}
	n, err := provisioning.LoadNetwork(a.settingsDir())
	netLine := "[x] network    " + n.String()
	if err != nil {
		netLine = "[ ] network    " + err.Error()
	}
	fmt.Fprintf(w, "%s\n%s\n", pass, netLine)
	steps, err := a.steps().Progress(ctx)
	for _, s := range steps {
		mark := "[ ]"
		if s.Done {
			mark = "[x]"
		}
		fmt.Fprintf(w, "%s %-10s %s\n", mark, s.Name, s.Detail)
	}
	if url, fp := a.provisioningAPI(); url != "" {
		fmt.Fprintf(w, "The same steps over HTTPS: %s/api/v1/provisioning\n  (user admin, the passphrase; certificate SHA-256\n  %s)\n", url, fp)
	}
	return err
}

func (a *Appliance) cmdToken(ctx context.Context, _ []string, w io.Writer) error {
	if err := a.needDisk(); err != nil {
		return err
	}
	fmt.Fprintln(w, "The SO PIN administers the token (it is not kept on the appliance); the user")
	fmt.Fprintln(w, "PIN lets the service use the CA key (it is kept on the data disk, mode 0600).")
	fmt.Fprintln(w, "Once the token is initialised, this step only checks the user PIN.")
	so, err := a.askTwice("SO PIN")
	if err != nil {
		return err
	}
	user, err := a.askTwice("User PIN")
	if err != nil {
		return err
	}
	return printTo(w)(a.steps().Token(ctx, so, user))
}

func (a *Appliance) cmdKey(ctx context.Context, args []string, w io.Writer) error {
	kt := "ecdsa-p256"
	if len(args) > 0 {
		kt = args[0]
	}
	return printTo(w)(a.steps().Key(ctx, kt))
}

func (a *Appliance) cmdSelfSigned(ctx context.Context, args []string, w io.Writer) error {
	if err := printTo(w)(a.steps().SelfSigned(ctx, strings.Join(args, " "), 0)); err != nil {
		return err
	}
	fmt.Fprintln(w, "Next: provision directory (optional), then provision finish.")
	return nil
}

func (a *Appliance) cmdCSR(ctx context.Context, args []string, w io.Writer) error {
	csr, r, err := a.steps().CSR(ctx, strings.Join(args, " "))
	if err := printStep(w, r, err); err != nil {
		return err
	}
	fmt.Fprintf(w, "%s", csr)
	fmt.Fprintln(w, "Next: provision import, and paste the signed certificate with its chain.")
	return nil
}

func (a *Appliance) cmdImport(ctx context.Context, _ []string, w io.Writer) error {
	if err := a.needDisk(); err != nil {
		return err
	}
	lines, err := a.con.AskLines("Paste the CA certificate and its chain up to the root (PEM), then an empty line:", 2000)
	if err != nil {
		return err
	}
	return printTo(w)(a.steps().Import(ctx, []byte(strings.Join(lines, "\n")+"\n")))
}

func (a *Appliance) cmdDirectory(ctx context.Context, args []string, w io.Writer) error {
	if err := a.needDisk(); err != nil {
		return err
	}
	pw, err := a.con.Ask("Password of "+args[1]+": ", true)
	if err != nil {
		return err
	}
	lines, err := a.con.AskLines("Paste the CA certificate of the domain controllers (PEM) then an empty line,\nor just an empty line to trust the system's roots:", 2000)
	if err != nil {
		return err
	}
	d := provisioning.Directory{URL: args[0], BindUser: args[1], Password: pw, CACN: args[2]}
	if len(args) > 3 {
		d.ServerName = args[3]
	}
	if len(lines) > 0 {
		d.CAPEM = []byte(strings.Join(lines, "\n") + "\n")
	}
	return printTo(w)(a.steps().Directory(ctx, d))
}

// cmdFinish writes the service's configuration for the management address and starts it.
func (a *Appliance) cmdFinish(ctx context.Context, _ []string, w io.Writer) error {
	t := time.Now()
	r, err := a.steps().Finish(ctx)
	if err := printStep(w, r, err); err != nil {
		return err
	}
	subj, fp, err := svcctl.CAInfo(a.varDir())
	if err != nil {
		return fmt.Errorf("reading the new CA certificate: %w", err)
	}
	fmt.Fprintf(w, "Provisioned in %s.\n  CA:          %s\n  Fingerprint: SHA-256\n    %s\n",
		time.Since(t).Round(100*time.Millisecond), subj, fp)
	url, err := a.serveAfterFinish(ctx)
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "Service running: API %s, CRLs and OCSP %s\n", url, a.httpURL(ctx))
	fmt.Fprintln(w, "The API's admin token: api token. The CA certificate: ca.")
	return nil
}

// serveAfterFinish stops the provisioning API (the service takes its port), starts the
// service and waits until its API answers.
func (a *Appliance) serveAfterFinish(ctx context.Context) (string, error) {
	a.stopProvisioningAPI()
	if err := a.startService(ctx); err != nil {
		return "", fmt.Errorf("starting enrollsvc: %w", err)
	}
	url, err := svcctl.WaitHealthy(ctx, a.varDir(), 90*time.Second)
	if err != nil {
		return url, fmt.Errorf("enrollsvc started but its API %s does not answer: %w (see status)", url, err)
	}
	return url, nil
}

// client dials the running service's API with the admin token on the data disk.
func (a *Appliance) client() (*apiclient.Client, error) {
	if !a.provisioned() {
		return nil, errors.New("the appliance is not provisioned (see provision status)")
	}
	return apiclient.DialDataDir(a.varDir())
}

func (a *Appliance) cmdRequests(ctx context.Context, args []string, w io.Writer) error {
	cl, err := a.client()
	if err != nil {
		return err
	}
	state := ""
	if len(args) > 0 {
		state = args[0]
	}
	reqs, err := cl.Requests(ctx, apiclient.RequestQuery{State: apiclient.RequestState(state), Limit: 20})
	if err != nil {
		return err
	}
	if len(reqs) == 0 {
		fmt.Fprintln(w, "No requests.")
		return nil
	}
	fmt.Fprintf(w, "%-6s %-8s %-16s %-18s %s\n", "ID", "STATE", "SUBMITTED", "TEMPLATE", "ACCOUNT")
	for _, r := range reqs {
		fmt.Fprintf(w, "%-6d %-8s %-16s %-18s %s\n", r.ID, r.State, r.Submitted.UTC().Format("2006-01-02 15:04"),
			clip(r.Template, 18), clip(r.Account, 28))
	}
	return nil
}

func (a *Appliance) cmdApprove(ctx context.Context, args []string, w io.Writer) error {
	id, err := strconv.ParseInt(args[0], 10, 64)
	if err != nil {
		return fmt.Errorf("request ID %q: want a number", args[0])
	}
	cl, err := a.client()
	if err != nil {
		return err
	}
	res, err := cl.Approve(ctx, id)
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "Request %d: %s, serial %s\n", id, res.Status, res.Serial)
	return nil
}

func (a *Appliance) cmdDeny(ctx context.Context, args []string, w io.Writer) error {
	id, err := strconv.ParseInt(args[0], 10, 64)
	if err != nil {
		return fmt.Errorf("request ID %q: want a number", args[0])
	}
	cl, err := a.client()
	if err != nil {
		return err
	}
	res, err := cl.Deny(ctx, id, strings.Join(args[1:], " "))
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "Request %d: %s\n", id, res.Status)
	return nil
}

func (a *Appliance) cmdRevoke(ctx context.Context, args []string, w io.Writer) error {
	cl, err := a.client()
	if err != nil {
		return err
	}
	c, err := cl.Revoke(ctx, args[0], args[1])
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "Revoked %s (%s): %s\n", c.Serial, c.Subject, args[1])
	return nil
}

func (a *Appliance) cmdEvents(ctx context.Context, args []string, w io.Writer) error {
	n := 15
	if len(args) > 0 {
		v, err := strconv.Atoi(args[0])
		if err != nil || v < 1 || v > 500 {
			return fmt.Errorf("%q: want a number of events from 1 to 500", args[0])
		}
		n = v
	}
	cl, err := a.client()
	if err != nil {
		return err
	}
	all, err := cl.Events(ctx, apiclient.EventQuery{Limit: n, Newest: true})
	if err != nil {
		return err
	}
	for _, ev := range all {
		fmt.Fprintf(w, "%5d %s %4d %s\n", ev.Seq, ev.Time.UTC().Format("01-02 15:04:05"), ev.ID, clip(ev.Message, 52))
	}
	return nil
}

func (a *Appliance) cmdCA(ctx context.Context, _ []string, w io.Writer) error {
	if err := a.needDisk(); err != nil {
		return err
	}
	subj, fp, err := svcctl.CAInfo(a.varDir())
	if err != nil {
		return errors.New("there is no CA certificate yet (see provision status)")
	}
	b, err := os.ReadFile(filepath.Join(a.varDir(), config.CACertFile))
	if err != nil {
		return err
	}
	if chain, err := os.ReadFile(filepath.Join(a.varDir(), provisioning.CAChainFile)); err == nil {
		b = append(b, chain...)
	}
	fmt.Fprintf(w, "CA: %s\nSHA-256: %s\n%s", subj, fp, b)
	return nil
}

func (a *Appliance) cmdAPIToken(ctx context.Context, _ []string, w io.Writer) error {
	if !a.provisioned() {
		return errors.New("the appliance is not provisioned (see provision status)")
	}
	cfg, err := config.Load(a.varDir())
	if err != nil {
		return err
	}
	b, err := os.ReadFile(config.Path(a.varDir(), cfg.API.TokenFile))
	if err != nil {
		return err
	}
	a.log.Info("the API admin token was shown on the console")
	fmt.Fprintf(w, "API admin token (aectl --api ADDR --token-file FILE --ca-file CA.pem ...):\n%s\n", strings.TrimSpace(string(b)))
	return nil
}

// cmdNetwork shows the network, or changes one setting and applies it.
func (a *Appliance) cmdNetwork(what string) func(context.Context, []string, io.Writer) error {
	return func(ctx context.Context, args []string, w io.Writer) error {
		if what == "" {
			cur, cerr := a.net.Current()
			n, err := provisioning.LoadNetwork(a.settingsDir())
			if err != nil {
				return err
			}
			fmt.Fprintf(w, "%-12s%s\n", "Settings:", n)
			switch {
			case cur != nil:
				fmt.Fprintf(w, "%-12s%s\n", "Now:", cur)
			case cerr != nil:
				fmt.Fprintf(w, "%-12s%v\n", "Now:", cerr)
			}
			fmt.Fprintf(w, "%-12s%s\n", "Time:", a.net.TimeStatus())
			return nil
		}
		if err := a.needDisk(); err != nil {
			return err
		}
		n, r, err := provisioning.UpdateNetwork(a.settingsDir(), func(n *provisioning.Network) {
			switch what {
			case "dhcp":
				n.Mode = "dhcp"
			case "static":
				n.Mode, n.Address, n.Gateway = "static", args[0], ""
				if len(args) > 1 {
					n.Gateway = args[1]
				}
			case "dns":
				n.DNS = args
			case "ntp":
				n.NTP = args
			case "hostname":
				n.Hostname = args[0]
			}
		})
		if err != nil {
			return err
		}
		fmt.Fprintln(w, r.String())
		if !r.Changed {
			return nil
		}
		return a.applyNetwork(ctx, n, w)
	}
}

// applyNetwork applies saved settings now: the address (static, or a new DHCP lease), the
// resolver, the host name and the time servers; the service follows a new address.
func (a *Appliance) applyNetwork(ctx context.Context, n provisioning.Network, w io.Writer) error {
	if a.o.Dev {
		fmt.Fprintln(w, "(development mode: saved, not applied)")
		return nil
	}
	before, _ := a.net.Address(ctx, 0)
	cfg, err := a.net.Configure(ctx, n)
	if err != nil {
		return fmt.Errorf("saved, but applying failed: %w", err)
	}
	fmt.Fprintf(w, "Applied: %s\n", cfg)
	if before != nil && !before.Equal(cfg.Addr.IP) {
		if a.provisioned() {
			fmt.Fprintln(w, "The management address changed: restarting enrollsvc on it.")
			a.restartService(ctx)
		} else if _, running := a.provisioningAPI(); running != "" {
			a.stopProvisioningAPI()
			if err := a.startProvisioningAPI(ctx); err != nil {
				fmt.Fprintf(w, "Provisioning API: %v\n", err)
			}
		}
	}
	return nil
}

func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n-1] + "~"
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
