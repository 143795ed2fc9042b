package appliance

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"strings"
	"time"

	"github.com/enrollment-appliance/aeappliance/appliance/svcctl"
	"github.com/enrollment-appliance/aeappliance/provisioning"
)

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

// cmdStore checks and saves the shared PostgreSQL store: the role's password and the server's
// CA are asked for (a client certificate is given over the provisioning API).
func (a *Appliance) cmdStore(ctx context.Context, args []string, w io.Writer) error {
	if err := a.needDisk(); err != nil {
		return err
	}
	pw, err := a.con.Ask("Password of the database role: ", true)
	if err != nil {
		return err
	}
	lines, err := a.con.AskLines("Paste the CA certificate of the database server (PEM), then an empty line:", 2000)
	if err != nil {
		return err
	}
	s := provisioning.Store{URL: args[0], Password: pw}
	if len(lines) > 0 {
		s.CAPEM = []byte(strings.Join(lines, "\n") + "\n")
	}
	return printTo(w)(a.steps().Store(ctx, s))
}

// cmdJoin joins the CA whose store is the PostgreSQL database args[0] names, instead of steps
// token to finish: the role's password, the server's CA, the first appliance's token bundle (ca
// export-token at its console) and its passphrase, the token's user PIN and, for a CA with a
// directory, the service account's password are asked for. It ends like finish: the service
// starts.
func (a *Appliance) cmdJoin(ctx context.Context, args []string, w io.Writer) error {
	if err := a.needDisk(); err != nil {
		return err
	}
	t := time.Now()
	j := provisioning.Join{Store: provisioning.Store{URL: args[0]}}
	var err error
	if j.Store.Password, err = a.con.Ask("Password of the database role: ", true); err != nil {
		return err
	}
	lines, err := a.con.AskLines("Paste the CA certificate of the database server (PEM), then an empty line:", 2000)
	if err != nil {
		return err
	}
	j.Store.CAPEM = []byte(strings.Join(lines, "\n") + "\n")
	if lines, err = a.con.AskLines("Paste the token bundle (ca export-token at the first appliance's console), then an empty line:", 4000); err != nil {
		return err
	}
	j.TokenBundle = []byte(strings.Join(lines, "\n") + "\n")
	if j.BundlePassphrase, err = a.con.Ask("Passphrase of the token bundle: ", true); err != nil {
		return err
	}
	if j.UserPIN, err = a.con.Ask("User PIN of the token: ", true); err != nil {
		return err
	}
	if j.LDAPPassword, err = a.con.Ask("Password of the directory service account (an empty line if the CA uses no directory): ", true); err != nil {
		return err
	}
	fmt.Fprintln(w, "Checking the store, the bundle and the CA key...")
	r, err := a.steps().Join(ctx, j)
	return a.started(ctx, w, t, r, err)
}

// cmdRestore brings the appliance's CA back from a backup (aectl backup) at the URL args[0],
// instead of steps token to finish; the backup's passphrase is asked for. It ends like finish:
// the service starts.
func (a *Appliance) cmdRestore(ctx context.Context, args []string, w io.Writer) error {
	if err := a.needDisk(); err != nil {
		return err
	}
	t := time.Now()
	pass, err := a.con.Ask("Passphrase of the backup: ", true)
	if err != nil {
		return err
	}
	fmt.Fprintln(w, "Fetching the backup, checking it and restoring...")
	r, err := a.steps().Restore(ctx, provisioning.Restore{From: args[0], Passphrase: pass})
	return a.started(ctx, w, t, r, err)
}

// cmdFinish writes the service's configuration for the management address and starts it.
func (a *Appliance) cmdFinish(ctx context.Context, _ []string, w io.Writer) error {
	t := time.Now()
	r, err := a.steps().Finish(ctx)
	return a.started(ctx, w, t, r, err)
}

// started prints the report of a step that ends provisioned (finish, join), begun at t, and
// starts the service.
func (a *Appliance) started(ctx context.Context, w io.Writer, t time.Time, r provisioning.Report, err error) error {
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

// cmdExportToken prints the SoftHSM token (with the CA key, which SoftHSM keeps encrypted under
// the user PIN) encrypted to a passphrase the admin chooses, for another appliance to join the CA
// (provision join). The export is recorded in the audit trail.
func (a *Appliance) cmdExportToken(ctx context.Context, _ []string, w io.Writer) error {
	if !a.provisioned() {
		return errors.New("the appliance is not provisioned (see provision status)")
	}
	fmt.Fprintln(w, "The bundle is a copy of the CA key, encrypted to the passphrase you choose; the user PIN")
	fmt.Fprintln(w, "is not in it. Carry it only to the appliance that joins, then destroy it.")
	pass, err := a.askTwice("Passphrase for the bundle (at least 12 characters)")
	if err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, a.o.Enrollsvc, "token", "export", "--data", a.varDir(), "--by", "console")
	cmd.Stdin = strings.NewReader(pass + "\n")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		why := strings.TrimPrefix(strings.TrimSpace(stderr.String()), "enrollsvc: ")
		if why == "" {
			why = err.Error()
		}
		return errors.New(why)
	}
	a.log.Warn("the SoftHSM token was exported on the console (event 1104)")
	fmt.Fprintln(w, "Token bundle (paste it at the joining appliance's provision join):")
	_, err = w.Write(stdout.Bytes())
	return err
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
