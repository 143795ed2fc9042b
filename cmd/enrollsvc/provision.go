package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/enrollment-appliance/aeappliance/provisioning"
	"github.com/enrollment-appliance/aeappliance/provisioning/ceremony"
	"github.com/enrollment-appliance/aeappliance/provisioning/stepcmd"
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
  store --store-url U --store-ca-file F [--store-client-cert F --store-client-key F]
                                  a PostgreSQL store several appliances share, checked by a
                                  connection (TLS verified); stdin: the role's password
  finish [--api-listen A] [--http-url U --http-listen A] [--enroll-listen A --hostname H...]
                                  write the service configuration: the service can start
  join --store-url U --store-ca-file F --token-bundle F [finish's flags]
                                  instead of token to finish: join the CA whose store is U with
                                  the CA key from the first appliance's token bundle (ca
                                  export-token); stdin: the role's password, the bundle's
                                  passphrase, the token's user PIN, the directory password
  restore --from FILE|URL [finish's flags]
                                  instead of token to finish: the data directory from a backup
                                  (aectl backup), listening where finish would; stdin: the
                                  backup's passphrase

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
	req, err := stepcmd.Parse(args, stdin, stderr, provisionUsage)
	if errors.Is(err, stepcmd.ErrUsage) {
		return fmt.Errorf("%w%s", errUsage, strings.TrimPrefix(err.Error(), stepcmd.ErrUsage.Error()))
	}
	if err != nil {
		return err
	}
	c := ceremony.Ceremony{Dir: req.Data, Module: req.Module}
	log, err := newLogger(stderr, req.LogLevel)
	if err != nil {
		return err
	}
	c.Logger = log
	timeout := 5 * time.Minute
	if req.Step == provisioning.StepRestore { // a large store takes longer to fetch and check
		timeout = 6 * time.Hour
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	jsonOut := req.JSON

	var r provisioning.Report
	switch req.Step {
	case provisioning.Status:
		steps, err := c.Progress()
		if err != nil {
			return err
		}
		if jsonOut {
			return stepcmd.Reply(stdout, steps)
		}
		for _, s := range steps {
			mark := "[ ]"
			if s.Done {
				mark = "[x]"
			}
			fmt.Fprintf(stdout, "%s %-10s %s\n", mark, s.Name, s.Detail)
		}
		return nil
	case provisioning.StepToken:
		if r, err = c.Token(ctx, req.SOPIN, req.UserPIN); err != nil {
			return err
		}
	case provisioning.StepKey:
		if r, err = c.Key(ctx, req.KeyType); err != nil {
			return err
		}
	case provisioning.CASelfSigned:
		if r, err = c.SelfSigned(ctx, req.CAName, req.Validity); err != nil {
			return err
		}
	case provisioning.CACSR:
		csr, rep, err := c.CSR(ctx, req.CAName)
		if err != nil {
			return err
		}
		if jsonOut {
			return stepcmd.Reply(stdout, stepcmd.CSRReply{Report: rep, CSR: string(csr)})
		}
		fmt.Fprintln(stdout, rep.String())
		_, err = stdout.Write(csr)
		return err
	case provisioning.CAImport:
		if r, err = c.Import(ctx, req.Bundle); err != nil {
			return err
		}
	case provisioning.StepDirectory:
		if r, err = c.Directory(ctx, req.Directory); err != nil {
			return err
		}
	case provisioning.StepStore:
		if r, err = c.Store(ctx, req.Store); err != nil {
			return err
		}
	case provisioning.StepRestore:
		fo := ceremony.FinishOptions{APIListen: req.Finish.APIListen, HTTPListen: req.Finish.HTTPListen,
			EnrollListen: req.Finish.EnrollListen, Hostnames: req.Finish.Hostnames, Instance: req.Finish.Instance}
		if r, err = c.Restore(ctx, req.Restore, fo); err != nil {
			return err
		}
	case provisioning.StepFinish, provisioning.StepJoin:
		fo := ceremony.FinishOptions{APIListen: req.Finish.APIListen, HTTPURL: req.Finish.HTTPURL, HTTPListen: req.Finish.HTTPListen,
			EnrollListen: req.Finish.EnrollListen, Hostnames: req.Finish.Hostnames, Keytab: req.Keytab, Instance: req.Finish.Instance}
		if req.Step == provisioning.StepJoin {
			r, err = c.Join(ctx, req.Join, fo)
		} else {
			r, err = c.Finish(ctx, fo)
		}
		if err != nil {
			return err
		}
	}
	if jsonOut {
		return stepcmd.Reply(stdout, r)
	}
	fmt.Fprintln(stdout, r.String())
	return nil
}
