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

	"github.com/enrollment-appliance/aeappliance/enrollsvc/api"
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
  events  [--after SEQ] [--id N] [--category Admin|Operational] [--limit N]
  issue   --csr FILE --profile server|client [--validity-days N] [--account A]
                              issue a certificate for a CSR as administrator

Global flags:
  --data DIR     data directory of the service (default ./var, or $ENROLLSVC_DATA)
  --json         machine-readable output
Run 'aectl COMMAND -h' for a command's flags.
`

type globals struct {
	data string
	json bool
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
	fs.Usage = func() { fmt.Fprint(fs.Output(), usage) }
	if err := fs.Parse(args); err != nil {
		return err
	}
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
	if err := cfs.Parse(cargs); err != nil {
		return err
	}
	cl, err := api.DialDataDir(g.data)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	return run(ctx, &env{cl: cl, g: g, out: stdout, args: cfs.Args()})
}

type env struct {
	cl   *api.Client
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
		var q api.CertQuery
		fs.StringVar(&q.Account, "account", "", "only certificates for this account")
		fs.StringVar(&q.Template, "template", "", "only certificates of this template")
		fs.StringVar(&q.Status, "status", "", "valid or revoked")
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
					if c.Expired && c.Status == "valid" {
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
		var q api.RequestQuery
		fs.StringVar(&q.State, "state", "", "pending, issued, denied or failed")
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
				fmt.Fprint(w, r.CSRPEM)
			})
		}
	},
	"events": func(fs *flag.FlagSet) runner {
		var q api.EventQuery
		fs.Int64Var(&q.After, "after", 0, "only events after this sequence number")
		fs.IntVar(&q.ID, "id", 0, "only this event ID")
		fs.StringVar(&q.Category, "category", "", "Admin or Operational")
		fs.IntVar(&q.Limit, "limit", 100, "at most this many")
		return func(ctx context.Context, e *env) error {
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
		var in api.IssueRequest
		var csrFile string
		fs.StringVar(&csrFile, "csr", "", "PEM PKCS#10 request file")
		fs.StringVar(&in.Profile, "profile", "server", "server or client")
		fs.IntVar(&in.ValidityDays, "validity-days", 365, "validity in days (capped at the CA certificate's end)")
		fs.StringVar(&in.Account, "account", "", "account the certificate is for (default: the CSR's common name)")
		return func(ctx context.Context, e *env) error {
			if csrFile == "" {
				return fmt.Errorf("%w: --csr FILE is required", errUsage)
			}
			b, err := os.ReadFile(csrFile)
			if err != nil {
				return err
			}
			in.CSR = string(b)
			res, err := e.cl.Issue(ctx, in)
			if err != nil {
				var he *api.HTTPError
				if e.g.json && errors.As(err, &he) {
					reasons := he.Body.Reasons
					if len(reasons) == 0 {
						reasons = []string{he.Body.Error}
					}
					_ = e.print(api.IssueResponse{Status: "denied", RequestID: he.Body.RequestID, Reasons: reasons}, nil)
				}
				return err
			}
			if e.g.json {
				return e.print(res, nil)
			}
			_, err = fmt.Fprint(e.out, res.Certificate)
			return err
		}
	},
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
