package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"text/tabwriter"

	"github.com/enrollment-appliance/aeappliance/apiclient"
)

func init() {
	commands["kra"] = kraCommand
	commands["recover"] = recoverCommand
}

// kraCommand: `aectl kra [list]`, `aectl kra add CERT.pem`, `aectl kra remove THUMBPRINT`.
func kraCommand(fs *flag.FlagSet) runner {
	return func(ctx context.Context, e *env) error {
		switch {
		case len(e.args) == 0 || len(e.args) == 1 && e.args[0] == "list":
			ks, err := e.cl.KRAs(ctx)
			if err != nil {
				return err
			}
			return e.print(ks, func(w io.Writer) {
				if len(ks) == 0 {
					fmt.Fprintln(w, "No key recovery agent is registered (aectl kra add CERT.pem): templates that require archival are refused.")
					return
				}
				tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "THUMBPRINT (SHA-256)\tSUBJECT\tEXPIRES\tADDED BY")
				for _, k := range ks {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", k.Thumbprint, k.Subject, k.NotAfter, k.By)
				}
				tw.Flush()
			})
		case len(e.args) == 2 && e.args[0] == "add":
			b, err := os.ReadFile(e.args[1])
			if err != nil {
				return err
			}
			k, err := e.cl.AddKRA(ctx, string(b))
			if err != nil {
				return err
			}
			return e.print(k, func(w io.Writer) {
				fmt.Fprintf(w, "Registered key recovery agent %s (%s): keys archived from now on are encrypted to it.\n", k.Subject, k.Thumbprint)
			})
		case len(e.args) == 2 && e.args[0] == "remove":
			if err := e.cl.RemoveKRA(ctx, e.args[1]); err != nil {
				return err
			}
			return e.print(map[string]string{"removed": e.args[1]}, func(w io.Writer) {
				fmt.Fprintf(w, "Removed agent %s: keys archived from now on are not encrypted to it (earlier ones still are).\n", e.args[1])
			})
		}
		return fmt.Errorf("%w: aectl kra [list] | kra add CERT.pem | kra remove THUMBPRINT, got %q", errUsage, e.args)
	}
}

// recoverCommand: `aectl recover SERIAL --out FILE` writes the archived key of a certificate,
// encrypted to the key recovery agents (docs/mdm.md says how an agent turns it into a PKCS#12).
func recoverCommand(fs *flag.FlagSet) runner {
	var out string
	fs.StringVar(&out, "out", "", "file to write the encrypted key to (must not exist)")
	return func(ctx context.Context, e *env) error {
		if len(e.args) != 1 || out == "" {
			return fmt.Errorf("%w: aectl recover SERIAL --out FILE", errUsage)
		}
		k, err := e.cl.RecoverKey(ctx, e.args[0])
		if err != nil {
			return err
		}
		if err := writeNew(out, k.Envelope); err != nil {
			return err
		}
		return e.print(apiclient.RecoveredKey{Serial: k.Serial, Format: k.Format}, func(w io.Writer) {
			fmt.Fprintf(w, "Wrote %s: the key of %s, encrypted to the key recovery agents (CMS, DER). An agent opens it with:\n", out, k.Serial)
			fmt.Fprintf(w, "  openssl cms -decrypt -inform DER -in %s -inkey AGENT.key -out key.der\n", out)
			fmt.Fprintf(w, "  aectl cert %s --json | jq -r .pem > cert.pem\n", k.Serial)
			fmt.Fprintf(w, "  openssl pkcs12 -export -inkey <(openssl pkey -inform DER -in key.der) -in cert.pem -out recovered.p12\n")
		})
	}
}
