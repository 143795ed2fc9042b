package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/enrollment-appliance/aeappliance/provisioning/ceremony"
)

// storeFlags are the flags that point an instance at the shared PostgreSQL store.
func storeFlags(fs *flag.FlagSet, so *ceremony.StoreOptions) {
	fs.StringVar(&so.URL, "store-url", "", "keep the store in PostgreSQL: postgres://ROLE@HOST[:PORT]/DATABASE (no password in it; TLS verified)")
	fs.StringVar(&so.CAFile, "store-ca-file", "", "PEM file with the CA of the PostgreSQL server's certificate (copied into DIR)")
	fs.StringVar(&so.PasswordFile, "store-password-file", "", "file holding the role's password (copied into DIR, mode 0600)")
	fs.StringVar(&so.ClientCertFile, "store-client-cert", "", "PEM client certificate, for a server that authenticates by certificate")
	fs.StringVar(&so.ClientKeyFile, "store-client-key", "", "its PEM key (copied into DIR, mode 0600)")
}

func cmdJoin(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("enrollsvc join", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o ceremony.JoinOptions
	var logLevel string
	fs.StringVar(&o.Dir, "data", "", "data directory to create for this instance (must not exist or be empty)")
	storeFlags(fs, &o.Store)
	fs.StringVar(&o.TokenFrom, "token-from", "", "TESTS ONLY: copy the SoftHSM token of another instance's DIR/hsm (a copy of the CA key)")
	var bundleFile, bundlePassFile string
	fs.StringVar(&bundleFile, "token-bundle", "", "a SoftHSM token bundle exported by another instance (enrollsvc token export); with --pin-file")
	fs.StringVar(&bundlePassFile, "bundle-passphrase-file", "", "file holding the token bundle's passphrase")
	fs.StringVar(&o.Module, "pkcs11-module", "", "PKCS#11 module of the HSM that holds the CA key (a network HSM)")
	fs.StringVar(&o.PINFile, "pin-file", "", "file holding the token's user PIN (copied into DIR, mode 0600)")
	fs.StringVar(&o.APIListen, "api-listen", "", "address of this instance's management API (default 127.0.0.1:9443)")
	fs.StringVar(&o.EnrollListen, "enroll-listen", "", "address of this instance's enrollment web services (default: the first instance's)")
	fs.StringVar(&o.HTTPListen, "http-listen", "", "address of this instance's plain-HTTP listener (default: the first instance's)")
	fs.StringVar(&o.LDAPPasswordFile, "ldap-password-file", "", "the directory service account's password, when the CA uses the directory")
	fs.StringVar(&o.Keytab, "keytab", "", "Kerberos service keytab for the enrollment web services")
	fs.StringVar(&o.Instance, "instance", "", "this instance's name (default: the host name)")
	fs.StringVar(&logLevel, "log-level", "warn", "log level: debug, info, warn, error")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `Usage: enrollsvc join --data DIR --store-url URL --store-ca-file F (--store-password-file F | --store-client-cert F --store-client-key F)
                     (--token-from OTHER/hsm | --token-bundle F --bundle-passphrase-file F --pin-file F |
                      --pkcs11-module M --pin-file F) [flags]

Makes a data directory for one more instance of a CA whose store is a shared PostgreSQL database
(made by enrollsvc init --store-url): it reads the CA certificate and the shared settings from
the store, finds the CA key in the HSM by its PKCS#11 URI and checks that it is the certificate's.
It never creates a CA key. Every instance then serves any request: serials, held requests, SCEP
challenges and transactions, revocations and CRL numbers are the store's.

Flags:
`)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: unexpected arguments %q", errUsage, fs.Args())
	}
	if bundleFile != "" {
		b, err := os.ReadFile(bundleFile)
		if err != nil {
			return fmt.Errorf("--token-bundle: %w", err)
		}
		o.TokenBundle = b
		if o.BundlePassphrase, err = readSecretFile(bundlePassFile, "--bundle-passphrase-file"); err != nil {
			return err
		}
	}
	log, err := newLogger(stderr, logLevel)
	if err != nil {
		return err
	}
	o.Logger = log
	res, err := ceremony.Join(context.Background(), o)
	if err != nil {
		return fmt.Errorf("join: %w", err)
	}
	fmt.Fprintf(stdout, "Joined %s\n  CA:      %s (serial %s)\n  CA key:  %s\n  API:     https://%s (start it with: enrollsvc serve --data %s)\n",
		res.Dir, res.CASubject, res.CASerial, res.KeyURI, res.APIListen, o.Dir)
	return nil
}

// isHelp reports whether arg asks for a command's help.
func isHelp(arg string) bool {
	return arg == "-h" || arg == "-help" || arg == "--help" || arg == "help"
}

// readSecretFile reads a one-line secret from the file flag names.
func readSecretFile(path, flag string) (string, error) {
	if path == "" {
		return "", fmt.Errorf("%w: %s is required", errUsage, flag)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("%s: %w", flag, err)
	}
	return strings.TrimRight(string(b), "\r\n"), nil
}

// cmdToken runs `enrollsvc token export`.
func cmdToken(args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	const tokenUsage = `Usage: enrollsvc token export --data DIR [--by NAME] < passphrase > bundle

Seals the SoftHSM token of the provisioned data directory DIR (holding the CA key, which SoftHSM
keeps encrypted under the user PIN) into an ASCII-armored bundle encrypted to the passphrase read
from the first line of standard input (age, scrypt), for another appliance to join the CA
(enrollsvc join --token-bundle, or provision join). The bundle is a copy of the CA key: keep it
like one. The export is recorded in the audit trail (event 1104) before the bundle is written.
The user PIN is not in it. Refused when the CA key is in a hardware HSM (it never leaves it) and
when the store is not PostgreSQL (no other instance could share it).

Flags:
`
	if len(args) > 0 && isHelp(args[0]) {
		fmt.Fprint(stdout, tokenUsage)
		return nil
	}
	if len(args) == 0 || args[0] != "export" {
		fmt.Fprint(stderr, tokenUsage)
		return fmt.Errorf("%w: enrollsvc token export", errUsage)
	}
	fs := flag.NewFlagSet("enrollsvc token export", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var dir, by, logLevel string
	fs.StringVar(&dir, "data", "", "the provisioned data directory")
	fs.StringVar(&by, "by", "enrollsvc token export", "who exports it, for the audit event")
	fs.StringVar(&logLevel, "log-level", "warn", "log level: debug, info, warn, error")
	fs.Usage = func() { fmt.Fprint(fs.Output(), tokenUsage); fs.PrintDefaults() }
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	if fs.NArg() > 0 || dir == "" {
		return fmt.Errorf("%w: --data DIR is required, and nothing else", errUsage)
	}
	line, err := bufio.NewReader(io.LimitReader(stdin, 4096)).ReadString('\n')
	if err != nil && line == "" {
		return errors.New("the bundle's passphrase: expected on standard input")
	}
	log, err := newLogger(stderr, logLevel)
	if err != nil {
		return err
	}
	b, err := ceremony.ExportToken(context.Background(), dir, strings.TrimRight(line, "\r\n"), by, log)
	if err != nil {
		return fmt.Errorf("token export: %w", err)
	}
	_, err = stdout.Write(b)
	return err
}

// cmdStore runs `enrollsvc store migrate`.
func cmdStore(args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 && isHelp(args[0]) {
		return cmdStore([]string{"migrate", "-h"}, stdout, stdout)
	}
	if len(args) == 0 || args[0] != "migrate" {
		fmt.Fprintln(stderr, "Usage: enrollsvc store migrate --from DIR --to URL --store-ca-file F (--store-password-file F | --store-client-cert F --store-client-key F)")
		return fmt.Errorf("%w: enrollsvc store migrate", errUsage)
	}
	fs := flag.NewFlagSet("enrollsvc store migrate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var dir, logLevel string
	var so ceremony.StoreOptions
	fs.StringVar(&dir, "from", "", "the data directory whose SQLite store moves")
	storeFlags(fs, &so)
	fs.StringVar(&so.URL, "to", "", "the empty PostgreSQL database: postgres://ROLE@HOST[:PORT]/DATABASE (same as --store-url)")
	fs.StringVar(&logLevel, "log-level", "warn", "log level: debug, info, warn, error")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `Usage: enrollsvc store migrate --from DIR --to URL --store-ca-file F (--store-password-file F | --store-client-cert F --store-client-key F)

Moves a single appliance's history from its SQLite store into an empty PostgreSQL database (TLS
verified): certificates, requests, events, CRL numbers and CRLs, SCEP profiles, challenges and
transactions, with their IDs. It checks that every table holds as many rows in both and only then
points DIR's configuration at PostgreSQL; more instances can then join (enrollsvc join). Stop the
service first: it refuses while the service answers. The SQLite file is left as it was, unused.

Flags:
`)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: unexpected arguments %q", errUsage, fs.Args())
	}
	if dir == "" || so.URL == "" {
		return fmt.Errorf("%w: --from and --to are required", errUsage)
	}
	log, err := newLogger(stderr, logLevel)
	if err != nil {
		return err
	}
	counts, err := ceremony.MigrateStore(context.Background(), dir, so, log)
	if err != nil {
		return fmt.Errorf("store migrate: %w", err)
	}
	fmt.Fprintf(stdout, "Moved the store of %s to %s and checked the counts:\n", dir, so.URL)
	for _, t := range []string{"certificates", "serials", "requests", "events", "scep_profiles", "scep_challenges", "scep_transactions", "crls", "cluster"} {
		fmt.Fprintf(stdout, "  %-18s %d\n", t, counts.Rows[t])
	}
	fmt.Fprintf(stdout, "  %-18s %d\nStart the service again; it now serves from PostgreSQL.\n", "last CRL number", counts.CRLNumber)
	return nil
}
