// Command aeagent is the Linux autoenrollment client: it gets and renews the certificates that
// the directory's templates say a host (machine context) or a user should have, from the
// appliance's enrollment web services (MS-XCEP policy, MS-WSTEP enrollment), following the
// Windows client's algorithm (MS-CAESO). See `aeagent -h`.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/enrollment-appliance/aeappliance/aeagent/agent"
)

func main() {
	if err := run(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "aeagent:", err)
		}
		if errors.Is(err, flag.ErrHelp) || errors.Is(err, errUsage) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}

var errUsage = errors.New("usage")

const usage = `aeagent - certificate autoenrollment for Linux hosts and users

Usage: aeagent [flags] COMMAND [flags]

Commands:
  pulse               run one autoenrollment pass now (like certutil -pulse)
  run                 stay resident: a pass at start, every --interval (plus jitter),
                      sooner when the policy's nextUpdateHours says so, and on SIGUSR1
  status [--json]     managed certificates, their templates, expiry and renewal dates
  plan [--at TIME] [--json]
                      what a pass would do now or at TIME (RFC 3339 or 2006-01-02), and why
  enroll-on-behalf --template T --target DOMAIN\user --agent-cert FILE --agent-key FILE|pkcs11:URI
                   --csr FILE --out FILE
                      as an enrollment agent (a smart-card station), request a certificate for
                      another account: CSR is the target's request (its key stays where it is),
                      signed with the agent certificate's key (a PEM file, or a key in a PKCS#11
                      token: pkcs11:token=...;object=...?module-path=...&pin-source=FILE, else the
                      PIN in $AEAGENT_PKCS11_PIN); the certificate is written to --out (PEM)

Flags (each overrides the configuration file):
  --config FILE        JSON configuration file (see README: "aeagent")
  --server URL         the policy server (CEP) URL, https://.../service.svc/CEP
  --auth MODE          kerberos (default), password or certificate
  --user NAME          password: the UPN; kerberos: the principal (default: from the keytab)
  --password-file F    password: file with the password
  --keytab F           kerberos: keytab (machine context default /etc/krb5.keytab)
  --ccache F           kerberos without keytab: credential cache (default $KRB5CCNAME)
  --krb5-conf F        kerberos: krb5.conf (default $KRB5_CONFIG or /etc/krb5.conf)
  --ca-file F          PEM roots trusted for the server and issued certificates
  --store DIR          certificate store (machine default /var/lib/aeagent/machine)
  --machine            machine context (default when run as root)
  --user-context       user context
  --interval D         time between passes for run (default 8h)
  --jitter D           random extra delay for run (default 30m)
  --log-level L        debug, info (default), warn or error; logs go to stderr as JSON
  --json               machine-readable output (status, plan, pulse)

Exit status: 0 when the pass (or command) succeeded, 1 when something failed (the message
says what; certificates already installed are left as they were), 2 for usage errors.
`

type options struct {
	config, logLevel string
	json             bool
	cfg              agent.Config
	machine, userCtx bool
	at               string
	// enroll-on-behalf
	template, target, agentCert, agentKey, csr, out string
}

func run(args []string, stdout, stderr io.Writer) error {
	var o options
	fs := newFlagSet("aeagent", stderr, &o)
	if err := parseAnywhere(fs, args); err != nil {
		return err
	}
	rest := fs.Args()
	if len(rest) == 0 {
		fmt.Fprint(stderr, usage)
		return errUsage
	}
	cmd := rest[0]
	if cmd == "help" {
		fmt.Fprint(stdout, usage)
		return nil
	}
	if len(rest) > 1 {
		return fmt.Errorf("%w: unexpected argument %q", errUsage, rest[1])
	}
	if cmd != "plan" && o.at != "" {
		return fmt.Errorf("%w: --at is for plan", errUsage)
	}
	obo := o.template != "" || o.target != "" || o.agentCert != "" || o.agentKey != "" || o.csr != "" || o.out != ""
	if obo && cmd != "enroll-on-behalf" {
		return fmt.Errorf("%w: --template, --target, --agent-cert, --agent-key, --csr and --out are for enroll-on-behalf", errUsage)
	}
	switch cmd {
	case "pulse", "run", "status", "plan", "enroll-on-behalf":
	default:
		fmt.Fprint(stderr, usage)
		return fmt.Errorf("%w: unknown command %q", errUsage, cmd)
	}
	cfg, err := o.configuration(fs)
	if err != nil {
		return err
	}
	log, err := logger(stderr, o.logLevel)
	if err != nil {
		return err
	}
	a, err := agent.New(cfg, agent.Options{Logger: log})
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	switch cmd {
	case "enroll-on-behalf":
		return o.enrollOnBehalf(ctx, a, stdout)
	case "pulse":
		rep, err := a.Pulse(ctx)
		if perr := printOut(stdout, o.json, rep, func(w io.Writer) { printReport(w, rep) }); perr != nil && err == nil {
			err = perr
		}
		return err
	case "run":
		wake := make(chan struct{}, 1)
		usr1 := make(chan os.Signal, 1)
		signal.Notify(usr1, syscall.SIGUSR1)
		go func() {
			for range usr1 {
				select {
				case wake <- struct{}{}:
				default:
				}
			}
		}()
		err := a.Run(ctx, wake)
		if errors.Is(err, context.Canceled) {
			return nil
		}
		return err
	case "status":
		st, err := a.Status(ctx)
		if err != nil {
			return err
		}
		return printOut(stdout, o.json, st, func(w io.Writer) { printStatus(w, st) })
	default: // plan
		at, err := parseTime(o.at)
		if err != nil {
			return err
		}
		p, err := a.Plan(ctx, at)
		if err != nil {
			return err
		}
		return printOut(stdout, o.json, p, func(w io.Writer) {
			if len(p.Actions) == 0 && len(p.Reasons) == 0 {
				fmt.Fprintln(w, "nothing to do: the policy offers no template for autoenrollment")
				return
			}
			fmt.Fprint(w, p.String())
		})
	}
}

func newFlagSet(name string, stderr io.Writer, o *options) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(fs.Output(), usage) }
	c := &o.cfg
	fs.StringVar(&o.config, "config", "", "configuration file")
	fs.StringVar(&c.Server, "server", "", "policy server (CEP) URL")
	fs.StringVar(&c.Auth, "auth", "", "kerberos, password or certificate")
	fs.StringVar(&c.User, "user", "", "user name / principal")
	fs.StringVar(&c.PasswordFile, "password-file", "", "password file")
	fs.StringVar(&c.Keytab, "keytab", "", "Kerberos keytab")
	fs.StringVar(&c.CCache, "ccache", "", "Kerberos credential cache")
	fs.StringVar(&c.Krb5Conf, "krb5-conf", "", "krb5.conf")
	fs.StringVar(&c.CAFile, "ca-file", "", "trusted roots (PEM)")
	fs.StringVar(&c.Store, "store", "", "certificate store directory")
	fs.StringVar(&c.Interval, "interval", "", "time between passes")
	fs.StringVar(&c.Jitter, "jitter", "", "random extra delay")
	fs.BoolVar(&o.machine, "machine", false, "machine context")
	fs.BoolVar(&o.userCtx, "user-context", false, "user context")
	fs.StringVar(&o.logLevel, "log-level", "info", "log level")
	fs.BoolVar(&o.json, "json", false, "JSON output")
	fs.StringVar(&o.at, "at", "", "plan: the time to plan for")
	fs.StringVar(&o.template, "template", "", "enroll-on-behalf: the template")
	fs.StringVar(&o.target, "target", "", `enroll-on-behalf: the account (DOMAIN\user)`)
	fs.StringVar(&o.agentCert, "agent-cert", "", "enroll-on-behalf: the agent's certificate (PEM)")
	fs.StringVar(&o.agentKey, "agent-key", "", "enroll-on-behalf: the agent's key (PEM file or pkcs11: URI)")
	fs.StringVar(&o.csr, "csr", "", "enroll-on-behalf: the target's request (PEM or DER)")
	fs.StringVar(&o.out, "out", "", "enroll-on-behalf: where to write the certificate (PEM)")
	return fs
}

// parseAnywhere lets flags come before or after the command (aeagent plan --at 2027-01-01).
func parseAnywhere(fs *flag.FlagSet, args []string) error {
	var positional []string
	for {
		if err := fs.Parse(args); err != nil {
			return err
		}
		if fs.NArg() == 0 {
			break
		}
		positional = append(positional, fs.Arg(0))
		args = fs.Args()[1:]
	}
	return fs.Parse(append([]string{"--"}, positional...))
}

// configuration is the file's settings with every flag given on the command line on top.
func (o *options) configuration(fs *flag.FlagSet) (agent.Config, error) {
	var cfg agent.Config
	if o.config != "" {
		var err error
		if cfg, err = agent.LoadConfig(o.config); err != nil {
			return cfg, err
		}
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	over := func(name string, dst *string, v string) {
		if set[name] {
			*dst = v
		}
	}
	c := o.cfg
	over("server", &cfg.Server, c.Server)
	over("auth", &cfg.Auth, c.Auth)
	over("user", &cfg.User, c.User)
	over("password-file", &cfg.PasswordFile, c.PasswordFile)
	over("keytab", &cfg.Keytab, c.Keytab)
	over("ccache", &cfg.CCache, c.CCache)
	over("krb5-conf", &cfg.Krb5Conf, c.Krb5Conf)
	over("ca-file", &cfg.CAFile, c.CAFile)
	over("store", &cfg.Store, c.Store)
	over("interval", &cfg.Interval, c.Interval)
	over("jitter", &cfg.Jitter, c.Jitter)
	switch {
	case o.machine && o.userCtx:
		return cfg, fmt.Errorf("%w: --machine and --user-context exclude each other", errUsage)
	case o.machine:
		cfg.Context = agent.ContextMachine
	case o.userCtx:
		cfg.Context = agent.ContextUser
	}
	return cfg, nil
}

func logger(w io.Writer, level string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("%w: --log-level %q: want debug, info, warn or error", errUsage, level)
	}
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: l})), nil
}

func parseTime(s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	for _, layout := range []string{time.RFC3339, "2006-01-02T15:04", time.DateOnly} {
		if t, err := time.Parse(layout, s); err == nil {
			return t, nil
		}
	}
	return time.Time{}, fmt.Errorf("%w: --at %q: want RFC 3339 (2027-01-02T15:04:05Z) or a date (2027-01-02)", errUsage, s)
}

func printOut(w io.Writer, asJSON bool, v any, text func(io.Writer)) error {
	if asJSON {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	text(tw)
	return tw.Flush()
}

func printReport(w io.Writer, rep *agent.Report) {
	if rep == nil {
		return
	}
	acted := false
	for _, o := range rep.Outcomes {
		if o.Action.Kind.String() == "keep" && o.Error == "" {
			continue
		}
		acted = true
		res := o.Result
		if o.Error != "" {
			res = "FAILED: " + o.Error
		}
		fmt.Fprintf(w, "%s\t%s\n", o.Action, res)
	}
	if !acted {
		fmt.Fprintln(w, "nothing to do: every requirement is met")
	}
}

func printStatus(w io.Writer, st *agent.Status) {
	fmt.Fprintf(w, "Store:\t%s\n", st.Store)
	fmt.Fprintf(w, "Server:\t%s\n", st.Server)
	if st.LastPass != nil {
		res := "ok"
		if !st.LastPass.OK {
			res = "failed: " + st.LastPass.Error
		}
		fmt.Fprintf(w, "Last pass:\t%s, %s\n", st.LastPass.Finished.UTC().Format(time.RFC3339), res)
	} else {
		fmt.Fprintln(w, "Last pass:\tnever")
	}
	fmt.Fprintln(w)
	if len(st.Certificates) == 0 {
		fmt.Fprintln(w, "No certificates.")
	} else {
		fmt.Fprintln(w, "TEMPLATE\tSERIAL\tEXPIRES\tRENEWS\tSTATE\tSUBJECT")
		for _, c := range st.Certificates {
			renews := "unknown (no cached policy)"
			if !c.RenewAt.IsZero() {
				renews = date(c.RenewAt)
			}
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\n", c.Template, c.Serial, date(c.NotAfter), renews, c.State, c.Subject)
		}
	}
	if len(st.Pending) > 0 {
		fmt.Fprintln(w)
		fmt.Fprintln(w, "PENDING\tREQUEST\tSUBMITTED\tDROPPED AFTER")
		for _, p := range st.Pending {
			fmt.Fprintf(w, "%s\t%d\t%s\t%s\n", p.Template, p.RequestID, date(p.Submitted), date(p.DropAt))
		}
	}
}

func date(t time.Time) string {
	return strings.Replace(t.UTC().Format("2006-01-02 15:04 UTC"), " 00:00 UTC", "", 1)
}
