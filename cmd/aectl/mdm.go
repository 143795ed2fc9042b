package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/enrollment-appliance/aeappliance/apiclient"
)

func init() {
	commands["mdm"] = mdmCommand
	commands["pkcs12"] = pkcs12Command
}

// mdmCommand: `aectl mdm add NAME` registers an MDM (its token is printed once), `aectl mdm
// list`, `aectl mdm remove NAME`.
func mdmCommand(fs *flag.FlagSet) runner {
	var h apiclient.MDMWebhooks
	var caFile string
	var off bool
	fs.StringVar(&h.ValidateURL, "validate-url", "", "webhooks: https URL the appliance asks to validate each SCEP challenge")
	fs.StringVar(&h.NotifyURL, "notify-url", "", "webhooks: https URL the appliance tells each outcome")
	fs.StringVar(&caFile, "ca-file", "", "webhooks: PEM, the CA of the MDM server's certificate (default: the system's)")
	fs.BoolVar(&off, "off", false, "webhooks: remove the MDM's URLs")
	var account, file, passFile, recipFile, out, deviceID string
	fs.StringVar(&account, "account", "", "import, imports: the user the key is for")
	fs.StringVar(&file, "file", "", "import: DER CMS EnvelopedData to the import certificate, holding the PKCS#12")
	fs.StringVar(&passFile, "password-file", "", "import: file holding the PKCS#12's password (default: none)")
	fs.StringVar(&recipFile, "recipient-cert", "", "deliver: PEM certificate or public key of the device")
	fs.StringVar(&out, "out", "", "deliver: file to write (must not exist)")
	fs.StringVar(&deviceID, "device-id", "", "deliver: the device (recorded)")
	var csrFile string
	fs.StringVar(&csrFile, "csr", "", "cert: PEM certificate request of the MDM's key")
	return func(ctx context.Context, e *env) error {
		if len(e.args) != 2 || e.args[0] != "webhooks" {
			if err := refuseFlags(fs, "aectl mdm "+strings.Join(e.args, " "), "validate-url", "notify-url", "ca-file", "off"); err != nil {
				return err
			}
		}
		switch {
		case len(e.args) == 2 && e.args[0] == "cert":
			if csrFile == "" || out == "" {
				return fmt.Errorf("%w: aectl mdm cert NAME --csr FILE --out FILE", errUsage)
			}
			b, err := os.ReadFile(csrFile)
			if err != nil {
				return err
			}
			certPEM, err := e.cl.IssueMDMCertificate(ctx, e.args[1], string(b))
			if err != nil {
				return err
			}
			if err := writeNew(out, []byte(certPEM)); err != nil {
				return err
			}
			return e.print(map[string]string{"file": out, "certificate": certPEM}, func(w io.Writer) {
				fmt.Fprintf(w, "Wrote %s: MDM %s's client certificate; with its key it opens what its token opens.\n", out, e.args[1])
			})
		case len(e.args) == 1 && e.args[0] == "import-cert":
			p, err := e.cl.MDMImportCertificate(ctx)
			if err != nil {
				return err
			}
			return e.print(map[string]string{"certificate": p}, func(w io.Writer) { fmt.Fprint(w, p) })
		case len(e.args) == 1 && e.args[0] == "import":
			if account == "" || file == "" {
				return fmt.Errorf("%w: aectl mdm import --account A --file F.p7m [--password-file F]", errUsage)
			}
			env, err := os.ReadFile(file)
			if err != nil {
				return err
			}
			in := apiclient.MDMImportRequest{Account: account, Envelope: env}
			if passFile != "" {
				b, err := os.ReadFile(passFile)
				if err != nil {
					return err
				}
				in.Password = strings.TrimRight(string(b), "\r\n")
			}
			im, err := e.cl.ImportKey(ctx, in)
			if err != nil {
				return err
			}
			return e.print(im, func(w io.Writer) {
				fmt.Fprintf(w, "Imported %s for %s (%s), certificate %s; kept encrypted to the import key as %s.\n",
					im.Subject, im.Account, im.Email, im.Thumbprint, im.ID)
			})
		case len(e.args) == 1 && e.args[0] == "imports":
			ims, err := e.cl.Imports(ctx, account)
			if err != nil {
				return err
			}
			return e.print(ims, func(w io.Writer) {
				tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "ID\tACCOUNT\tE-MAIL\tSUBJECT\tEXPIRES\tBY")
				for _, im := range ims {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", im.ID, im.Account, im.Email, im.Subject, im.NotAfter.Format(time.DateOnly), im.MDM)
				}
				tw.Flush()
			})
		case len(e.args) == 2 && e.args[0] == "deliver":
			if recipFile == "" || out == "" {
				return fmt.Errorf("%w: aectl mdm deliver ID --recipient-cert F --out FILE [--device-id D]", errUsage)
			}
			b, err := os.ReadFile(recipFile)
			if err != nil {
				return err
			}
			d, err := e.cl.DeliverImport(ctx, e.args[1], apiclient.MDMDeliverRequest{DeviceID: deviceID, RecipientPEM: string(b)})
			if err != nil {
				return err
			}
			if err := writeNew(out, d.Result); err != nil {
				return err
			}
			return e.print(map[string]string{"file": out, "format": d.Format}, func(w io.Writer) {
				fmt.Fprintf(w, "Wrote %s: CMS EnvelopedData (DER) to the device key, holding the PKCS#12 (empty password).\n", out)
			})
		case len(e.args) == 2 && e.args[0] == "webhooks":
			if off == (h.ValidateURL != "" || h.NotifyURL != "") || (!off && (h.ValidateURL == "" || h.NotifyURL == "")) {
				return fmt.Errorf("%w: aectl mdm webhooks NAME --validate-url https://... --notify-url https://... [--ca-file F] | --off", errUsage)
			}
			if caFile != "" {
				b, err := os.ReadFile(caFile)
				if err != nil {
					return err
				}
				h.CAPEM = string(b)
			}
			set, err := e.cl.SetMDMWebhooks(ctx, e.args[1], h)
			if err != nil {
				return err
			}
			return e.print(set, func(w io.Writer) {
				if off {
					fmt.Fprintf(w, "MDM %s has no URLs now: profiles it validates refuse requests.\n", set.Name)
					return
				}
				fmt.Fprintf(w, "MDM %s: validation %s, notification %s.\n", set.Name, set.ValidateURL, set.NotifyURL)
				fmt.Fprintf(w, "Every call carries %s: t=UNIX,v1=HMAC-SHA-256 under this key (hex, shown this once):\n%s\n",
					apiclient.MDMSignatureHeader, set.Secret)
			})
		case len(e.args) == 0 || len(e.args) == 1 && e.args[0] == "list":
			cs, err := e.cl.MDMClients(ctx)
			if err != nil {
				return err
			}
			return e.print(cs, func(w io.Writer) {
				if len(cs) == 0 {
					fmt.Fprintln(w, "No MDM is registered (aectl mdm add NAME).")
					return
				}
				tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "NAME\tREGISTERED\tBY\tWEBHOOKS")
				for _, c := range cs {
					hooks := "none"
					switch {
					case c.NotAnsweringSince != nil:
						hooks = "NOT ANSWERING since " + c.NotAnsweringSince.Format(time.RFC3339) + ": " + c.LastError
					case c.ValidateURL != "":
						hooks = "answering"
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", c.Name, c.Created.Format(time.RFC3339), c.By, hooks)
				}
				tw.Flush()
			})
		case len(e.args) == 2 && e.args[0] == "add":
			a, err := e.cl.AddMDMClient(ctx, e.args[1])
			if err != nil {
				return err
			}
			return e.print(a, func(w io.Writer) {
				fmt.Fprintf(w, "Registered MDM %s. Its bearer token (shown this once; only its hash is kept):\n%s\n", a.Name, a.Token)
				fmt.Fprintf(w, "It opens %s* (PKCS requests, revocation) and nothing else; see docs/mdm.md.\n", apiclient.MDMPathPrefix)
			})
		case len(e.args) == 2 && e.args[0] == "remove":
			if err := e.cl.RemoveMDMClient(ctx, e.args[1]); err != nil {
				return err
			}
			return e.print(map[string]string{"removed": e.args[1]}, func(w io.Writer) {
				fmt.Fprintf(w, "Removed MDM %s: its token no longer opens anything.\n", e.args[1])
			})
		}
		return fmt.Errorf("%w: aectl mdm [list] | add NAME | remove NAME | cert NAME ... | webhooks NAME ... | import-cert | import ... | imports | deliver ID ..., got %q", errUsage, e.args)
	}
}

// pkcs12Command: `aectl pkcs12 issue --template T --account A (--password-file F |
// --recipient-cert F) --out FILE`: a key pair made by the appliance, certified by directory
// policy, written as a PKCS#12 encrypted to the password, or enveloped to the recipient's key.
func pkcs12Command(fs *flag.FlagSet) runner {
	var in apiclient.PKCSRequest
	var passFile, recipFile, out string
	fs.StringVar(&in.Template, "template", "", "directory template")
	fs.StringVar(&in.Account, "account", "", "account the certificate is for (sAMAccountName, UPN or DN)")
	fs.StringVar(&in.DeviceID, "device-id", "", "device the key is for (recorded)")
	fs.StringVar(&passFile, "password-file", "", "file holding the PKCS#12 password (12 characters or more)")
	fs.StringVar(&recipFile, "recipient-cert", "", "PEM certificate or public key: envelope the PKCS#12 to this RSA key (CMS, RSAES-OAEP)")
	fs.StringVar(&out, "out", "", "file to write (must not exist): the PKCS#12, or the DER EnvelopedData")
	return func(ctx context.Context, e *env) error {
		if len(e.args) != 1 || e.args[0] != "issue" || in.Template == "" || in.Account == "" || out == "" || (passFile == "") == (recipFile == "") {
			return fmt.Errorf("%w: aectl pkcs12 issue --template T --account A (--password-file F | --recipient-cert F) --out FILE", errUsage)
		}
		if passFile != "" {
			b, err := os.ReadFile(passFile)
			if err != nil {
				return err
			}
			in.Delivery, in.Password = "password", strings.TrimRight(string(b), "\r\n")
		} else {
			b, err := os.ReadFile(recipFile)
			if err != nil {
				return err
			}
			in.Delivery, in.RecipientPEM = "device-key", string(b)
		}
		if _, err := os.Lstat(out); err == nil { // before anything is issued
			return fmt.Errorf("%s exists", out)
		}
		j, err := e.cl.SubmitPKCS(ctx, in)
		if err != nil {
			return err
		}
		if j, err = e.cl.WaitPKCS(ctx, j.ID, 200*time.Millisecond); err != nil {
			return err
		}
		if j.State != "issued" {
			return fmt.Errorf("PKCS request %s %s: %s", j.ID, j.State, j.Reason)
		}
		if err := writeNew(out, j.Result); err != nil {
			return err
		}
		j.Result = nil
		return e.print(j, func(w io.Writer) {
			fmt.Fprintf(w, "Issued serial %s (request %d) for %s on %s.\n", j.Serial, j.RequestID, j.Account, j.Template)
			if j.Format == "pkcs12" {
				fmt.Fprintf(w, "Wrote %s: PKCS#12, key and certificate encrypted to the password (AES-256, PBKDF2-SHA-256).\n", out)
			} else {
				fmt.Fprintf(w, "Wrote %s: CMS EnvelopedData (DER) to the recipient key, holding a PKCS#12 with an empty password.\n", out)
			}
		})
	}
}

// writeNew writes b to a new file (mode 0600); it refuses to replace one, and leaves nothing
// behind when writing fails.
func writeNew(path string, b []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		os.Remove(path)
		return err
	}
	if err := f.Close(); err != nil {
		os.Remove(path)
		return err
	}
	return nil
}
