// Command aectl is the administrator's command line for a running enrollsvc: status, the CA
// certificate, issued certificates, requests and audit events, over the local management API.
// `aectl --data DIR` finds the API address, the admin token and the CA certificate in the data
// directory. Every command takes --json.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/enrollment-appliance/aeappliance/apiclient"
)

func main() {
	if err := run(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "aectl:", err)
		}
		if errors.Is(err, flag.ErrHelp) || errors.Is(err, errUsage) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}

var errUsage = errors.New("usage")

const usage = `aectl - administer a running enrollsvc

Usage: aectl [--data DIR] [--json] COMMAND [flags]

Commands:
  status                      service, CA, HSM and store status
  ca cert                     the CA certificate (PEM)
  certs   [--account A] [--template T] [--status valid|revoked] [--limit N] [--offset N]
  cert    SERIAL              one certificate, with its PEM
  requests [--state pending|issued|denied|failed] [--account A] [--after ID] [--limit N]
  request ID                  one request
  events  [--after SEQ] [--id N] [--category Admin|Operational] [--limit N] [--newest]
  events verify [--anchor SEQ:HASH]...
                              check the audit trail's hash chains from the first event to the
                              last; names the first broken link (exit status 1). Each anchor (an
                              event's seq and hash as the remote syslog server received them,
                              or a head an earlier verify printed) must be there unchanged:
                              that catches a trail cut short or rewritten with new hashes
  ready                       whether the service is ready for work: HSM, store, CA, directory,
                              CRLs (exit status 1 when not)
  metrics                     the Prometheus metrics (GET /metrics)
  metrics token new|clear     require a new bearer token on GET /metrics (printed once), or
                              open it again; the admin token is always accepted
  backup --out FILE (--passphrase-file F | --recipient age1...)
                              an encrypted online backup: store, configuration, directory
                              settings, SCEP profiles, firmware state and, with SoftHSM, the
                              token holding the CA key (restore: enrollsvc restore)
  backup schedule [set --every 24h --recipient age1... [--keep 7] [--push-url https://.../]
                  [--push-token-file F] [--push-ca-file F] | off | run]
                              scheduled backups, encrypted to age recipients, kept on the
                              appliance and pushed with HTTPS PUT; run writes one now
  syslog [status]             the remote syslog server and how its streams fare
  syslog set --address HOST:PORT [--transport tls|tcp|udp] [--ca-file F] [--server-name N]
                              send the audit events (in order, caught up after an outage) and
                              the log there as RFC 5424; syslog off stops
  templates                   the directory templates this CA offers, decoded
  explain ACCOUNT [TEMPLATE]  what policy decides for an account (sAMAccountName, UPN, HOST$
                              or DN), template by template: permissions, subject, SANs, why
  issue   --template T --account A --csr FILE
                              run a CSR through the directory's policy: issued (PEM),
                              pending (request ID) or denied (every reason)
  issue   --csr FILE --profile server|client [--validity-days N] [--account A]
                              without --template: issue as administrator, no directory
  approve ID                  issue a pending request as it was decided
  deny    ID --reason TEXT    refuse a pending request
  revoke  SERIAL --reason R   revoke (final): keyCompromise, superseded, cessationOfOperation,
                              affiliationChanged, privilegeWithdrawn, cACompromise, unspecified
  crl publish                 sign and publish a new full and delta CRL now
  cluster status              the store and the instances serving the CA from it
  scep profiles               the SCEP profiles
  scep profile add NAME --template T [--account A] (--static-challenge-file F | --one-time |
                  --mdm NAME)  bind /scep/NAME to a directory template; --mdm: the MDM issues and
                              validates the challenges
  scep challenge --profile P [--subject S] [--account A] [--ttl 1h]
                              a one-time challenge password (printed once)
  mdm [list] | mdm add NAME | mdm remove NAME
                              the MDMs allowed to call the MDM connector (docs/mdm.md); add
                              prints the new MDM's bearer token once
  mdm webhooks NAME --validate-url https://... --notify-url https://... [--ca-file F] | --off
                              the MDM's URLs for SCEP profiles it validates; prints the key
                              the appliance signs its calls with (HMAC-SHA-256), once
  mdm cert NAME --csr FILE --out FILE
                              a client certificate for the MDM (TLS client authentication
                              instead of its token); revoked when the MDM is removed
  mdm import-cert             the certificate a user's existing key is encrypted to for import
  mdm import --account A --file F.p7m [--password-file F]
                              keep a user's S/MIME key (a PKCS#12 in a CMS envelope to the
                              import certificate), encrypted to the import key
  mdm imports [--account A]   the imported keys
  mdm deliver ID --recipient-cert F --out FILE [--device-id D]
                              re-encrypt an imported key for a device (CMS envelope, RSA-OAEP)
  kra [list] | kra add CERT.pem | kra remove THUMBPRINT
                              key recovery agents: keys of templates that require archival
                              are encrypted to their certificates (RSA, Key Recovery Agent EKU)
  recover SERIAL --out FILE   the archived key of a certificate, encrypted to the agents (CMS)
  agent-restrictions [list] | agent-restrictions remove N
  agent-restrictions add --agent A --target T [--target T...] [--template T...] [--deny]
                              enrollment agent restrictions: which agent (user, computer or
                              group) may enroll which templates for whom; a matching deny wins;
                              none set: unrestricted except for administrative accounts
  pkcs12 issue --template T --account A (--password-file F | --recipient-cert F) --out FILE
                              a key pair made by the appliance, issued by directory policy: a
                              PKCS#12 encrypted to the password, or a CMS envelope to the
                              recipient's RSA key holding it [--device-id ID]
  firmware [status]           the appliance's firmware: running, slots a and b, last update
  firmware upload FILE.aeu    install a signed update bundle in the free slot; it is tried at
                              the next boot and kept only if it comes up

Global flags:
  --data DIR     data directory of the service (default ./var, or $ENROLLSVC_DATA)
  --api HOST:PORT --token-file FILE --ca-file FILE
                 a service elsewhere (an appliance: its console's "api token" and "ca")
  --json         machine-readable output
Run 'aectl COMMAND -h' for a command's flags.
`

type globals struct {
	data string
	json bool
	// Remote mode: the API's address, the admin token and the CA to trust, instead of
	// what the data directory holds (an appliance's API from another machine).
	api, tokenFile, caFile string
	dataSet                bool // --data was given (not only $ENROLLSVC_DATA or the default)
}

func run(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("aectl", flag.ContinueOnError)
	fs.SetOutput(stderr)
	g := globals{}
	def := os.Getenv("ENROLLSVC_DATA")
	if def == "" {
		def = "var"
	}
	fs.StringVar(&g.data, "data", def, "data directory")
	fs.BoolVar(&g.json, "json", false, "JSON output")
	fs.StringVar(&g.api, "api", "", "HOST:PORT of the API (with --token-file and --ca-file; instead of --data)")
	fs.StringVar(&g.tokenFile, "token-file", "", "file holding the API's admin token")
	fs.StringVar(&g.caFile, "ca-file", "", "PEM file: the CA that issued the API's certificate")
	fs.Usage = func() { fmt.Fprint(fs.Output(), usage) }
	if err := fs.Parse(args); err != nil {
		return err
	}
	g.dataSet = given(fs)["data"]
	rest := fs.Args()
	if len(rest) == 0 {
		fmt.Fprint(stderr, usage)
		return errUsage
	}
	cmd, cargs := rest[0], rest[1:]
	if cmd == "help" {
		fmt.Fprint(stdout, usage)
		return nil
	}
	c, ok := commands[cmd]
	if !ok {
		fmt.Fprint(stderr, usage)
		return fmt.Errorf("%w: unknown command %q", errUsage, cmd)
	}
	cfs := flag.NewFlagSet("aectl "+cmd, flag.ContinueOnError)
	cfs.SetOutput(stderr)
	cfs.BoolVar(&g.json, "json", g.json, "JSON output")
	run := c(cfs)
	cfs.Usage = func() {
		fmt.Fprintf(cfs.Output(), "Usage: aectl [--data DIR] %s [flags]\n\nFlags:\n", cmd)
		cfs.PrintDefaults()
	}
	// Flags may come before or after the positional arguments (aectl deny 7 --reason "...").
	var positional []string
	for {
		if err := cfs.Parse(cargs); err != nil {
			return err
		}
		if cfs.NArg() == 0 {
			break
		}
		positional = append(positional, cfs.Arg(0))
		cargs = cfs.Args()[1:]
	}
	if noArgs[cmd] && len(positional) > 0 {
		return fmt.Errorf("%w: aectl %s takes no arguments, got %q", errUsage, cmd, positional)
	}
	cl, err := dial(g)
	if err != nil {
		return err
	}
	timeout := 2 * time.Minute
	if (cmd == "events" && len(positional) > 0) || cmd == "backup" { // verify reads the whole trail
		timeout = 6 * time.Hour
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return run(ctx, &env{cl: cl, g: g, out: stdout, args: positional})
}

// noArgs are the commands that take flags only.
var noArgs = map[string]bool{"status": true, "certs": true, "requests": true, "templates": true, "ready": true}

// given is the set of flags given on the command line.
func given(fs *flag.FlagSet) map[string]bool {
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	return set
}

// refuseFlags fails when one of names was given: it does not apply to what was asked (it would
// be ignored otherwise).
func refuseFlags(fs *flag.FlagSet, what string, names ...string) error {
	set := given(fs)
	for _, n := range names {
		if set[n] {
			return fmt.Errorf("%w: --%s does not apply to %s", errUsage, n, what)
		}
	}
	return nil
}

// dial connects to the API named by the remote flags, or else by the data directory.
func dial(g globals) (*apiclient.Client, error) {
	if g.api == "" && g.tokenFile == "" && g.caFile == "" {
		return apiclient.DialDataDir(g.data)
	}
	if g.api == "" || g.tokenFile == "" || g.caFile == "" {
		return nil, fmt.Errorf("%w: --api, --token-file and --ca-file go together", errUsage)
	}
	if g.dataSet {
		return nil, fmt.Errorf("%w: --data or --api/--token-file/--ca-file, not both", errUsage)
	}
	return apiclient.DialFiles(g.api, g.tokenFile, g.caFile)
}

type env struct {
	cl   *apiclient.Client
	g    globals
	out  io.Writer
	args []string
}

// print writes v as JSON with --json, else calls text.
func (e *env) print(v any, text func(w io.Writer)) error {
	if e.g.json {
		enc := json.NewEncoder(e.out)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	}
	tw := tabwriter.NewWriter(e.out, 0, 4, 2, ' ', 0)
	text(tw)
	return tw.Flush()
}

type runner func(ctx context.Context, e *env) error

var commands = map[string]func(fs *flag.FlagSet) runner{
	"status": func(fs *flag.FlagSet) runner {
		return func(ctx context.Context, e *env) error {
			st, err := e.cl.Status(ctx)
			if err != nil {
				return err
			}
			return e.print(st, func(w io.Writer) {
				fmt.Fprintf(w, "Service:\t%s %s, started %s, healthy: %v\n", st.Service, st.Version, st.Started.Format(time.RFC3339), st.Healthy)
				fmt.Fprintf(w, "API:\thttps://%s\n", st.API)
				fmt.Fprintf(w, "CA:\t%s (%s), serial %s\n", st.CA.Subject, st.CA.Name, st.CA.Serial)
				fmt.Fprintf(w, "CA valid:\t%s to %s\n", st.CA.NotBefore.Format(time.RFC3339), st.CA.NotAfter.Format(time.RFC3339))
				fmt.Fprintf(w, "CA key:\t%s (%s)\n", st.CA.KeyURI, st.CA.KeyType)
				fmt.Fprintf(w, "HSM:\t%s, token %q serial %s (%s %s)\n", okText(st.HSM.OK, st.HSM.Error), st.HSM.TokenLabel, st.HSM.TokenSerial, st.HSM.Manufacturer, st.HSM.Model)
				fmt.Fprintf(w, "Store:\t%s, %d certificates\n", okText(st.Store.OK, st.Store.Error), st.Store.Certificates)
				if st.Directory.Configured {
					fmt.Fprintf(w, "Directory:\t%s, %s (enrollment service %s)\n", okText(st.Directory.OK, st.Directory.Error), st.Directory.URL, st.Directory.CA)
				} else {
					fmt.Fprintf(w, "Directory:\tnot configured (administrator issuance only)\n")
				}
			})
		}
	},
	"ca": func(fs *flag.FlagSet) runner {
		return func(ctx context.Context, e *env) error {
			if len(e.args) != 1 || e.args[0] != "cert" {
				return fmt.Errorf("%w: aectl ca cert", errUsage)
			}
			pemBytes, err := e.cl.CACertPEM(ctx)
			if err != nil {
				return err
			}
			if e.g.json {
				return e.print(map[string]string{"certificate": string(pemBytes)}, nil)
			}
			_, err = e.out.Write(pemBytes)
			return err
		}
	},
	"certs": func(fs *flag.FlagSet) runner {
		var q apiclient.CertQuery
		fs.StringVar(&q.Account, "account", "", "only certificates for this account")
		fs.StringVar(&q.Template, "template", "", "only certificates of this template")
		fs.StringVar((*string)(&q.Status), "status", "", "valid or revoked")
		fs.IntVar(&q.Limit, "limit", 100, "at most this many")
		fs.IntVar(&q.Offset, "offset", 0, "skip this many")
		return func(ctx context.Context, e *env) error {
			list, err := e.cl.Certificates(ctx, q)
			if err != nil {
				return err
			}
			return e.print(list, func(w io.Writer) {
				fmt.Fprintln(w, "SERIAL\tSTATUS\tNOT AFTER\tTEMPLATE\tACCOUNT\tSUBJECT")
				for _, c := range list {
					st := string(c.Status)
					if c.Expired && c.Status == apiclient.CertValid {
						st = "expired"
					}
					fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\n", c.Serial, st, c.NotAfter.Format("2006-01-02"), c.Template, c.Account, c.Subject)
				}
			})
		}
	},
	"cert": func(fs *flag.FlagSet) runner {
		return func(ctx context.Context, e *env) error {
			if len(e.args) != 1 {
				return fmt.Errorf("%w: aectl cert SERIAL", errUsage)
			}
			c, err := e.cl.Certificate(ctx, e.args[0])
			if err != nil {
				return err
			}
			return e.print(c, func(w io.Writer) {
				fmt.Fprintf(w, "Serial:\t%s\nSubject:\t%s\nStatus:\t%s (expired: %v)\nValid:\t%s to %s\nTemplate:\t%s\nAccount:\t%s\nRequest:\t%d\n",
					c.Serial, c.Subject, c.Status, c.Expired, c.NotBefore.Format(time.RFC3339), c.NotAfter.Format(time.RFC3339), c.Template, c.Account, c.RequestID)
				fmt.Fprint(w, c.PEM)
			})
		}
	},
	"requests": func(fs *flag.FlagSet) runner {
		var q apiclient.RequestQuery
		fs.StringVar((*string)(&q.State), "state", "", "pending, issued, denied or failed")
		fs.StringVar(&q.Account, "account", "", "only requests for this account")
		fs.Int64Var(&q.After, "after", 0, "only requests with a larger ID")
		fs.IntVar(&q.Limit, "limit", 100, "at most this many")
		return func(ctx context.Context, e *env) error {
			list, err := e.cl.Requests(ctx, q)
			if err != nil {
				return err
			}
			return e.print(list, func(w io.Writer) {
				fmt.Fprintln(w, "ID\tSTATE\tSUBMITTED\tTEMPLATE\tACCOUNT\tSERIAL\tREASON")
				for _, r := range list {
					fmt.Fprintf(w, "%d\t%s\t%s\t%s\t%s\t%s\t%s\n", r.ID, r.State, r.Submitted.Format(time.RFC3339), r.Template, r.Account, r.Serial, r.Reason)
				}
			})
		}
	},
	"request": func(fs *flag.FlagSet) runner {
		return func(ctx context.Context, e *env) error {
			if len(e.args) != 1 {
				return fmt.Errorf("%w: aectl request ID", errUsage)
			}
			id, err := strconv.ParseInt(e.args[0], 10, 64)
			if err != nil {
				return fmt.Errorf("%w: request ID %q is not a number", errUsage, e.args[0])
			}
			r, err := e.cl.Request(ctx, id)
			if err != nil {
				return err
			}
			return e.print(r, func(w io.Writer) {
				fmt.Fprintf(w, "ID:\t%d\nState:\t%s\nSubmitted:\t%s\nUpdated:\t%s\nTemplate:\t%s\nRequester:\t%s\nAccount:\t%s\nSerial:\t%s\nReason:\t%s\n",
					r.ID, r.State, r.Submitted.Format(time.RFC3339), r.Updated.Format(time.RFC3339), r.Template, r.Requester, r.Account, r.Serial, r.Reason)
				if h := r.Held; h != nil {
					fmt.Fprintf(w, "On approval:\t%s\n", h.Subject)
					for _, san := range h.SANs {
						fmt.Fprintf(w, "\t%s\n", san)
					}
					fmt.Fprintf(w, "Publish to AD:\t%v\n", h.Publish)
				}
				fmt.Fprint(w, r.CSRPEM)
			})
		}
	},
	"ready": func(fs *flag.FlagSet) runner {
		return func(ctx context.Context, e *env) error {
			r, err := e.cl.Ready(ctx)
			if r.Checks == nil && err != nil {
				return err
			}
			if perr := e.print(r, func(w io.Writer) {
				fmt.Fprintf(w, "Ready:\t%v (checked %s)\n", r.Ready, r.Checked.Format(time.RFC3339))
				names := make([]string, 0, len(r.Checks))
				for n := range r.Checks {
					names = append(names, n)
				}
				sort.Strings(names)
				for _, n := range names {
					fmt.Fprintf(w, "  %s:\t%s\n", n, r.Checks[n])
				}
			}); perr != nil {
				return perr
			}
			if !r.Ready {
				return errors.New("the service is not ready")
			}
			return nil
		}
	},
	"metrics": func(fs *flag.FlagSet) runner {
		return func(ctx context.Context, e *env) error {
			switch strings.Join(e.args, " ") {
			case "":
				b, err := e.cl.Metrics(ctx)
				if err != nil {
					return err
				}
				_, err = e.out.Write(b)
				return err
			case "token new":
				token, err := e.cl.NewMetricsToken(ctx)
				if err != nil {
					return err
				}
				return e.print(apiclient.MetricsToken{Token: token}, func(w io.Writer) {
					fmt.Fprintln(w, token)
				})
			case "token clear":
				if err := e.cl.ClearMetricsToken(ctx); err != nil {
					return err
				}
				return e.print(map[string]bool{"metrics_open": true}, func(w io.Writer) {
					fmt.Fprintln(w, "GET /metrics needs no token now")
				})
			}
			return fmt.Errorf("%w: aectl metrics [token new|token clear], got %q", errUsage, e.args)
		}
	},
	"backup": func(fs *flag.FlagSet) runner {
		var out, passFile string
		var recipients listFlag
		fs.StringVar(&out, "out", "", "file to write the encrypted backup to (must not exist)")
		fs.StringVar(&passFile, "passphrase-file", "", "file holding the passphrase to encrypt to (12 characters or more)")
		fs.Var(&recipients, "recipient", "an age X25519 recipient (age1...) to encrypt to instead; repeatable")
		var sched apiclient.BackupSchedule
		var pushTokenFile, pushCAFile string
		fs.StringVar(&sched.Every, "every", "24h", "schedule set: how often")
		fs.IntVar(&sched.Keep, "keep", 7, "schedule set: how many to keep on the appliance (0: none)")
		fs.StringVar(&sched.PushURL, "push-url", "", "schedule set: https://host/path/ to PUT each backup to")
		fs.StringVar(&pushTokenFile, "push-token-file", "", "schedule set: file holding a bearer token for the push URL")
		fs.StringVar(&pushCAFile, "push-ca-file", "", "schedule set: PEM, the push server's CA (default: the system's)")
		return func(ctx context.Context, e *env) error {
			if len(e.args) > 0 && e.args[0] == "schedule" {
				sched.Recipients = recipients
				return backupSchedule(ctx, e, e.args[1:], sched, pushTokenFile, pushCAFile)
			}
			if len(e.args) > 0 {
				return fmt.Errorf("%w: aectl backup --out FILE ... | aectl backup schedule [set|off|run], got %q", errUsage, e.args)
			}
			if out == "" || (passFile == "") == (len(recipients) == 0) {
				return fmt.Errorf("%w: aectl backup --out FILE (--passphrase-file F | --recipient age1...)", errUsage)
			}
			in := apiclient.BackupRequest{Recipients: recipients}
			if passFile != "" {
				b, err := os.ReadFile(passFile)
				if err != nil {
					return err
				}
				in.Passphrase = strings.TrimRight(string(b), "\r\n")
			}
			n, err := writeBackup(ctx, e.cl, in, out)
			if err != nil {
				return err
			}
			return e.print(map[string]any{"file": out, "bytes": n}, func(w io.Writer) {
				fmt.Fprintf(w, "Backup:\t%s (%d bytes, encrypted)\n", out, n)
			})
		}
	},
	"syslog": func(fs *flag.FlagSet) runner {
		var in apiclient.SyslogSettings
		var caFile string
		fs.StringVar(&in.Address, "address", "", "host:port of the syslog server (set)")
		fs.StringVar(&in.Transport, "transport", "tls", "tls (RFC 5425), tcp or udp (set)")
		fs.StringVar(&caFile, "ca-file", "", "PEM: the CA of the server's certificate (set, tls; default: the system's)")
		fs.StringVar(&in.ServerName, "server-name", "", "the name the server's certificate carries (set; default: the address's host)")
		return func(ctx context.Context, e *env) error {
			var st apiclient.SyslogStatus
			var err error
			switch strings.Join(e.args, " ") {
			case "", "status":
				st, err = e.cl.Syslog(ctx)
			case "set":
				if in.Address == "" {
					return fmt.Errorf("%w: aectl syslog set --address HOST:PORT [--transport tls|tcp|udp] [--ca-file F]", errUsage)
				}
				if caFile != "" {
					b, rerr := os.ReadFile(caFile)
					if rerr != nil {
						return rerr
					}
					in.CAPEM = string(b)
				}
				st, err = e.cl.SetSyslog(ctx, in)
			case "off":
				st, err = e.cl.SyslogOff(ctx)
			default:
				return fmt.Errorf("%w: aectl syslog [status|set|off], got %q", errUsage, e.args)
			}
			if err != nil {
				return err
			}
			return e.print(st, func(w io.Writer) {
				if st.Address == "" {
					fmt.Fprintln(w, "Remote syslog:\toff")
					return
				}
				fmt.Fprintf(w, "Remote syslog:\t%s (%s)\nAudit stream:\t%s\nLog stream:\t%d sent, %d dropped\n",
					st.Address, st.Transport, st.Audit, st.LogSent, st.LogDropped)
			})
		}
	},
	"events": func(fs *flag.FlagSet) runner {
		var q apiclient.EventQuery
		fs.Int64Var(&q.After, "after", 0, "only events after this sequence number")
		fs.IntVar(&q.ID, "id", 0, "only this event ID")
		fs.StringVar(&q.Category, "category", "", "Admin or Operational")
		fs.IntVar(&q.Limit, "limit", 100, "at most this many")
		fs.BoolVar(&q.Newest, "newest", false, "the last --limit events instead of the first")
		var anchors listFlag
		fs.Var(&anchors, "anchor", "verify: SEQ:HASH of an event as a copy kept outside the appliance holds it (the remote\n"+
			"syslog's seq and hash, a head an earlier verify printed); repeatable")
		return func(ctx context.Context, e *env) error {
			switch {
			case len(e.args) == 1 && e.args[0] == "verify":
				if err := refuseFlags(fs, "events verify (it reads the whole trail)", "after", "id", "category", "limit", "newest"); err != nil {
					return err
				}
				return verifyEvents(ctx, e, anchors)
			case len(e.args) > 0:
				return fmt.Errorf("%w: aectl events takes no arguments (but verify), got %q", errUsage, e.args)
			case len(anchors) > 0:
				return fmt.Errorf("%w: --anchor goes with events verify", errUsage)
			}
			list, err := e.cl.Events(ctx, q)
			if err != nil {
				return err
			}
			return e.print(list, func(w io.Writer) {
				fmt.Fprintln(w, "SEQ\tTIME\tID\tCATEGORY\tLEVEL\tMESSAGE\tDETAILS")
				for _, ev := range list {
					fmt.Fprintf(w, "%d\t%s\t%d\t%s\t%s\t%s\t%s\n", ev.Seq, ev.Time.Format(time.RFC3339), ev.ID, ev.Category, ev.Level, ev.Message, fields(ev.Fields))
				}
			})
		}
	},
	"issue": func(fs *flag.FlagSet) runner {
		var in apiclient.IssueRequest
		var csrFile, template string
		fs.StringVar(&csrFile, "csr", "", "PEM PKCS#10 request file")
		fs.StringVar(&template, "template", "", "directory template; policy decides (without it: administrator issuance by --profile)")
		fs.StringVar(&in.Profile, "profile", "server", "without --template: server or client")
		fs.IntVar(&in.ValidityDays, "validity-days", 365, "without --template: validity in days (capped at the CA certificate's end)")
		fs.StringVar(&in.Account, "account", "", "account the certificate is for (with --template: sAMAccountName, UPN, HOST$ or DN)")
		return func(ctx context.Context, e *env) error {
			if csrFile == "" {
				return fmt.Errorf("%w: --csr FILE is required", errUsage)
			}
			if template != "" {
				if err := refuseFlags(fs, "issue --template (the template decides)", "profile", "validity-days"); err != nil {
					return err
				}
			}
			b, err := os.ReadFile(csrFile)
			if err != nil {
				return err
			}
			var res apiclient.IssueResponse
			if template != "" {
				if in.Account == "" {
					return fmt.Errorf("%w: --account is required with --template", errUsage)
				}
				res, err = e.cl.Enroll(ctx, apiclient.EnrollRequest{Template: template, Account: in.Account, CSR: string(b)})
			} else {
				in.CSR = string(b)
				res, err = e.cl.Issue(ctx, in)
			}
			if err != nil {
				var he *apiclient.HTTPError
				if e.g.json && errors.As(err, &he) {
					reasons := he.Body.Reasons
					if len(reasons) == 0 {
						reasons = []string{he.Body.Error}
					}
					_ = e.print(apiclient.IssueResponse{Status: apiclient.StatusDenied, RequestID: he.Body.RequestID, Reasons: reasons}, nil)
				}
				return err
			}
			return e.printResult(res)
		}
	},
	"templates": func(fs *flag.FlagSet) runner {
		return func(ctx context.Context, e *env) error {
			list, err := e.cl.Templates(ctx)
			if err != nil {
				return err
			}
			return e.print(list, func(w io.Writer) {
				for _, t := range list {
					if t.Error != "" {
						fmt.Fprintf(w, "%s\tUNUSABLE: %s\n\n", t.Name, t.Error)
						continue
					}
					fmt.Fprintf(w, "%s\t(%s) schema %d, revision %s, OID %s\n", t.Name, t.DisplayName, t.SchemaVersion, t.Revision, t.OID)
					fmt.Fprintf(w, "  validity\t%s, renewal period %s\n", t.Validity, t.RenewalPeriod)
					fmt.Fprintf(w, "  keys\tminimum %d bits %s; usage %s\n", t.MinimalKeySize, t.KeyAlgorithm, strings.Join(t.KeyUsage, ", "))
					fmt.Fprintf(w, "  EKUs\t%s\n", strings.Join(t.EKUs, ", "))
					fmt.Fprintf(w, "  name flags\t%s\n", strings.Join(t.NameFlags, ", "))
					fmt.Fprintf(w, "  enrollment flags\t%s\n", strings.Join(t.EnrollmentFlags, ", "))
					fmt.Fprintf(w, "  private key flags\t%s\n", strings.Join(t.PrivateKeyFlags, ", "))
					fmt.Fprintf(w, "  general flags\t%s\n", strings.Join(t.GeneralFlags, ", "))
					if len(t.Supersedes) > 0 {
						fmt.Fprintf(w, "  supersedes\t%s\n", strings.Join(t.Supersedes, ", "))
					}
					fmt.Fprintln(w)
				}
			})
		}
	},
	"explain": func(fs *flag.FlagSet) runner {
		return func(ctx context.Context, e *env) error {
			if len(e.args) < 1 || len(e.args) > 2 {
				return fmt.Errorf("%w: aectl explain ACCOUNT [TEMPLATE]", errUsage)
			}
			tmpl := ""
			if len(e.args) == 2 {
				tmpl = e.args[1]
			}
			ex, err := e.cl.Explain(ctx, e.args[0], tmpl)
			if err != nil {
				return err
			}
			return e.print(ex, func(w io.Writer) {
				for _, r := range ex.Reasons {
					fmt.Fprintf(w, "%s\n", r)
				}
				if a := ex.Account; a != nil {
					kind := "user"
					if a.Computer {
						kind = "computer"
					}
					fmt.Fprintf(w, "Account %s (%s) %s\n  %s\n  token: %d SIDs (objectSid, groups, Authenticated Users, Everyone)\n\n", a.SAMAccountName, kind, a.SID, a.DN, a.TokenSIDs)
				}
				for _, d := range ex.Templates {
					fmt.Fprintf(w, "%s\n\n", strings.TrimRight(d.Text, "\n"))
				}
				for _, m := range ex.Errors {
					fmt.Fprintf(w, "%s\n", m)
				}
			})
		}
	},
	"approve": func(fs *flag.FlagSet) runner {
		return func(ctx context.Context, e *env) error {
			id, err := oneID(e.args, "aectl approve ID")
			if err != nil {
				return err
			}
			res, err := e.cl.Approve(ctx, id)
			if err != nil {
				return err
			}
			return e.printResult(res)
		}
	},
	"deny": func(fs *flag.FlagSet) runner {
		var reason string
		fs.StringVar(&reason, "reason", "", "why (required; the requester sees it)")
		return func(ctx context.Context, e *env) error {
			id, err := oneID(e.args, "aectl deny ID --reason TEXT")
			if err != nil {
				return err
			}
			if reason == "" {
				return fmt.Errorf("%w: --reason is required", errUsage)
			}
			res, err := e.cl.Deny(ctx, id, reason)
			if err != nil {
				return err
			}
			if err := e.printResult(res); !errors.Is(err, errDenied) {
				return err
			}
			return nil // denying is what was asked for
		}
	},
}

// printResult prints what became of a request: the PEM when issued, the request ID when
// pending, every reason when denied (and then fails, so scripts notice).
func (e *env) printResult(res apiclient.IssueResponse) error {
	if e.g.json {
		if err := e.print(res, nil); err != nil {
			return err
		}
	} else {
		switch res.Status {
		case apiclient.StatusIssued:
			fmt.Fprint(e.out, res.Certificate)
		case apiclient.StatusPending:
			fmt.Fprintf(e.out, "pending: request %d waits for a certificate manager (aectl approve %d / aectl deny %d --reason ...)\n", res.RequestID, res.RequestID, res.RequestID)
			for _, r := range res.Reasons {
				fmt.Fprintf(e.out, "  %s\n", r)
			}
		default:
			fmt.Fprintf(e.out, "%s: request %d\n", res.Status, res.RequestID)
			for _, r := range res.Reasons {
				fmt.Fprintf(e.out, "  %s\n", r)
			}
		}
	}
	if res.Status == apiclient.StatusDenied {
		return errDenied
	}
	return nil
}

var errDenied = errors.New("request denied")

func oneID(args []string, usage string) (int64, error) {
	if len(args) != 1 {
		return 0, fmt.Errorf("%w: %s", errUsage, usage)
	}
	id, err := strconv.ParseInt(args[0], 10, 64)
	if err != nil || id <= 0 {
		return 0, fmt.Errorf("%w: request ID %q is not a positive number", errUsage, args[0])
	}
	return id, nil
}

func okText(ok bool, errText string) string {
	if ok {
		return "ok"
	}
	return "FAILING: " + errText
}

func fields(m map[string]any) string {
	var parts []string
	for k, v := range m {
		parts = append(parts, fmt.Sprintf("%s=%v", k, v))
	}
	sort.Strings(parts)
	return strings.Join(parts, " ")
}
