package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/enrollment-appliance/aeappliance/enrollsvc/daemon"
	"github.com/enrollment-appliance/aeappliance/provisioning/ceremony"
)

const restoreUsage = `Usage: enrollsvc restore --data NEWDIR --from FILE|URL (--passphrase-file F | --identity-file F)

Restores a backup (aectl backup, POST /api/v1/backup) into the new data directory NEWDIR, which
must not exist: the same CA certificate, every certificate, revocation, request (pending ones stay
pending) and audit event, the CRL numbers (the next CRL's is higher) and the configuration. With
SoftHSM the token holding the CA key comes back from the backup; with a hardware HSM the key stays
in the HSM, which this machine must reach (the backup names it by URI). The backup is decrypted and
every file checked against its manifest before anything is written at NEWDIR: a wrong passphrase,
or a backup changed or cut short, is refused and leaves nothing behind. The restore is recorded in
the audit trail (event 3053). Then run enrollsvc serve --data NEWDIR.

Flags:
`

func cmdRestore(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("enrollsvc restore", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var dir, from, passFile, idFile, logLevel string
	fs.StringVar(&dir, "data", "", "the new data directory (must not exist)")
	fs.StringVar(&from, "from", "", "the backup: a file, or an http:// or https:// URL")
	fs.StringVar(&passFile, "passphrase-file", "", "file holding the backup's passphrase")
	fs.StringVar(&idFile, "identity-file", "", "file holding the age identity (AGE-SECRET-KEY-1...) the backup was encrypted to")
	fs.StringVar(&logLevel, "log-level", "warn", "log level: debug, info, warn, error")
	fs.Usage = func() { fmt.Fprint(fs.Output(), restoreUsage); fs.PrintDefaults() }
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 || dir == "" || from == "" || (passFile == "") == (idFile == "") {
		return fmt.Errorf("%w: --data NEWDIR --from FILE and one of --passphrase-file or --identity-file", errUsage)
	}
	log, err := newLogger(stderr, logLevel)
	if err != nil {
		return err
	}
	var o daemon.RestoreOptions
	o.Log = log
	if passFile != "" {
		b, err := os.ReadFile(passFile)
		if err != nil {
			return err
		}
		o.Passphrase = strings.TrimRight(string(b), "\r\n")
	} else if o.IdentityFile, err = os.ReadFile(idFile); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Hour)
	defer cancel()
	f, err := ceremony.OpenBackup(ctx, from)
	if err != nil {
		return err
	}
	defer f.Close()
	m, err := daemon.Restore(ctx, f, dir, o)
	if err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	fmt.Fprintf(stdout, "Restored %s into %s\n  backup of %s (%s), made %s by version %s\n  %d certificates (%d revoked), %d pending requests, %d events, CRL number %d\n  CA key: %s",
		from, dir, m.Instance, m.CA.Subject, m.Created.Format(time.RFC3339), m.Version,
		m.Store.Certificates, m.Store.Revoked, m.Store.Pending, m.Store.Events, m.Store.CRLNumber, m.CA.KeyURI)
	if m.HSM.TokenIncluded {
		fmt.Fprintln(stdout, " (SoftHSM token restored from the backup)")
	} else {
		fmt.Fprintln(stdout, " (in the HSM, which this machine must reach)")
	}
	if m.Store.From == "postgres" {
		fmt.Fprintln(stdout, "  The backup is of an instance on a shared PostgreSQL store: it is restored as a single appliance on\n  SQLite (enrollsvc store migrate moves it into a PostgreSQL database again).")
	}
	fmt.Fprintf(stdout, "Next: enrollsvc serve --data %s\n", dir)
	return nil
}
