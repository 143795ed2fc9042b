package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/enrollment-appliance/aeappliance/enrollsvc/config"
	"github.com/enrollment-appliance/aeappliance/provisioning"
	"github.com/enrollment-appliance/aeappliance/provisioning/ceremony"
)

const provisionUsage = `Usage: enrollsvc provision STEP --data DIR [flags]

The provisioning ceremony, one step at a time (the appliance's console and API run the
same steps). Each step may be run again: it reports what it found and changes nothing
when its work is done; a step that fails changes nothing. Secrets are read from standard
input, one a line, never from the command line.

Steps:
  status                          what is done and what is next (--json)
  token                           initialise the HSM token; stdin: SO PIN, user PIN
                                  (once initialised: checks the user PIN only)
  key [--key TYPE]                generate the CA key in the token (sensitive, never extractable)
  selfsigned --ca-name NAME       a self-signed root CA certificate
  csr --ca-name NAME              a subordinate CA: the PKCS#10 request (PEM on stdout)
  import [--in FILE]              the subordinate CA's certificate and the chain up to the root
                                  (PEM, stdin by default); checked against the key and verified
  directory --ldap-url U --ldap-bind-user B --ca-cn CN [--ldap-ca-file F] [--ldap-server-name DC]
                                  Active Directory settings, checked by a bind; stdin: password
  finish [--api-listen A] [--http-url U --http-listen A] [--enroll-listen A --hostname H...]
                                  write the service configuration: the service can start

Flags common to every step:
  --data DIR            the service's data directory
  --pkcs11-module PATH  a vendor PKCS#11 module (default: SoftHSM2 with its token in DIR)
`

func cmdProvision(args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(stdout, provisionUsage)
		if len(args) == 0 {
			return errUsage
		}
		return nil
	}
	step := args[0]
	fs := flag.NewFlagSet("enrollsvc provision "+step, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(fs.Output(), provisionUsage) }
	var c ceremony.Ceremony
	var jsonOut bool
	var keyType, caName, in, logLevel string
	var validity time.Duration
	var d provisioning.Directory
	var caFile, keytab string
	var fo ceremony.FinishOptions
	fs.StringVar(&c.Dir, "data", "", "the service's data directory")
	fs.StringVar(&c.Module, "pkcs11-module", "", "PKCS#11 module (default SoftHSM2)")
	fs.StringVar(&logLevel, "log-level", "warn", "log level")
	fs.BoolVar(&jsonOut, "json", false, "JSON output")
	switch step {
	case "status", "token":
	case "key":
		fs.StringVar(&keyType, "key", "ecdsa-p256", "CA key type: "+keyTypes())
	case "selfsigned", "csr":
		fs.StringVar(&caName, "ca-name", "", "common name of the CA")
		fs.DurationVar(&validity, "ca-validity", 10*365*24*time.Hour, "validity of the self-signed CA certificate")
	case "import":
		fs.StringVar(&in, "in", "", "PEM file with the certificate and its chain (default: standard input)")
	case "directory":
		fs.StringVar(&d.URL, "ldap-url", "", "ldaps://DC[:636] or ldap://DC[:389] (StartTLS)")
		fs.StringVar(&d.BindUser, "ldap-bind-user", "", "UPN or DN of the service account")
		fs.StringVar(&d.CACN, "ca-cn", "", "cn of the pKIEnrollmentService object")
		fs.StringVar(&caFile, "ldap-ca-file", "", "PEM file: the CA of the domain controllers' certificates")
		fs.StringVar(&d.ServerName, "ldap-server-name", "", "the DC's name in its certificate, when the URL has an IP address")
	case "finish":
		fs.StringVar(&fo.APIListen, "api-listen", config.DefaultAPIListen, "address of the management API")
		fs.StringVar(&fo.HTTPURL, "http-url", "", "how clients reach the plain-HTTP listener (CRLs, OCSP, AIA, SCEP)")
		fs.StringVar(&fo.HTTPListen, "http-listen", "", "address of the plain-HTTP listener")
		fs.StringVar(&fo.EnrollListen, "enroll-listen", "", "address of the enrollment web services (with a directory)")
		fs.Var((*listFlag)(&fo.Hostnames), "hostname", "host name of the enrollment web services (repeatable)")
		fs.StringVar(&keytab, "keytab", "", "Kerberos service keytab (HTTP/<hostname>)")
	default:
		fmt.Fprint(stderr, provisionUsage)
		return fmt.Errorf("%w: unknown provisioning step %q", errUsage, step)
	}
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: unexpected arguments %q", errUsage, fs.Args())
	}
	if c.Dir == "" {
		return fmt.Errorf("%w: --data is required", errUsage)
	}
	log, err := newLogger(stderr, logLevel)
	if err != nil {
		return err
	}
	c.Logger = log
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	lines := bufio.NewScanner(io.LimitReader(stdin, 1<<20))
	secret := func(what string) (string, error) {
		if !lines.Scan() {
			return "", fmt.Errorf("%s: expected on standard input", what)
		}
		return strings.TrimRight(lines.Text(), "\r"), nil
	}

	var r provisioning.Report
	switch step {
	case "status":
		steps, err := c.Progress()
		if err != nil {
			return err
		}
		if jsonOut {
			return json.NewEncoder(stdout).Encode(steps)
		}
		for _, s := range steps {
			mark := "[ ]"
			if s.Done {
				mark = "[x]"
			}
			fmt.Fprintf(stdout, "%s %-10s %s\n", mark, s.Name, s.Detail)
		}
		return nil
	case "token":
		so, err := secret("the SO PIN")
		if err != nil {
			return err
		}
		user, err := secret("the user PIN")
		if err != nil {
			return err
		}
		r, err = c.InitToken(ctx, so, user)
		if err != nil {
			return err
		}
	case "key":
		if r, err = c.GenerateKey(ctx, keyType); err != nil {
			return err
		}
	case "selfsigned":
		if r, err = c.SelfSign(ctx, caName, validity); err != nil {
			return err
		}
	case "csr":
		csr, rep, err := c.RequestCSR(ctx, caName)
		if err != nil {
			return err
		}
		if jsonOut {
			return json.NewEncoder(stdout).Encode(map[string]any{"report": rep, "csr": string(csr)})
		}
		fmt.Fprintln(stdout, rep.String())
		_, err = stdout.Write(csr)
		return err
	case "import":
		var b []byte
		if in != "" {
			b, err = os.ReadFile(in)
		} else {
			b, err = io.ReadAll(io.LimitReader(stdin, 1<<20))
		}
		if err != nil {
			return fmt.Errorf("reading the chain: %w", err)
		}
		if r, err = c.ImportChain(ctx, b); err != nil {
			return err
		}
	case "directory":
		if d.Password, err = secret("the service account's password"); err != nil {
			return err
		}
		if caFile != "" {
			if d.CAPEM, err = os.ReadFile(caFile); err != nil {
				return fmt.Errorf("--ldap-ca-file: %w", err)
			}
		}
		if r, err = c.SetDirectory(ctx, d); err != nil {
			return err
		}
	case "finish":
		if keytab != "" {
			if fo.Keytab, err = os.ReadFile(keytab); err != nil {
				return fmt.Errorf("--keytab: %w", err)
			}
		}
		if r, err = c.Finish(ctx, fo); err != nil {
			return err
		}
	}
	if jsonOut {
		return json.NewEncoder(stdout).Encode(r)
	}
	fmt.Fprintln(stdout, r.String())
	return nil
}
