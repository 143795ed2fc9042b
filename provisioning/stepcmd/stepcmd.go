// Package stepcmd is the child-process protocol between the appliance's console and
// `enrollsvc provision STEP`. The appliance (cmd/appinit, no cgo) runs each step that
// needs PKCS#11 as a child process: the step's name and flags on the command line,
// secrets on standard input (one a line, never on the command line: /proc shows
// arguments to everyone), and the step's answer back as one JSON value on standard
// output; a failing step exits non-zero with its reason on the last line of standard
// error. Both sides use this package: Call and Run on the appliance's side, Parse and
// Reply in enrollsvc, so the two cannot drift apart.
package stepcmd

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/enrollment-appliance/aeappliance/config"
	"github.com/enrollment-appliance/aeappliance/provisioning"
)

// Command is the word before the step: `enrollsvc provision STEP`.
const Command = "provision"

// The flags.
const (
	flagData         = "data"
	flagModule       = "pkcs11-module"
	flagJSON         = "json"
	flagLogLevel     = "log-level"
	flagKey          = "key"
	flagCAName       = "ca-name"
	flagCAValidity   = "ca-validity"
	flagIn           = "in"
	flagLDAPURL      = "ldap-url"
	flagLDAPBindUser = "ldap-bind-user"
	flagCACN         = "ca-cn"
	flagLDAPCAFile   = "ldap-ca-file"
	flagStoreURL     = "store-url"
	flagStoreCA      = "store-ca-file"
	flagStoreCert    = "store-client-cert"
	flagStoreKey     = "store-client-key"
	flagLDAPServer   = "ldap-server-name"
	flagAPIListen    = "api-listen"
	flagHTTPURL      = "http-url"
	flagHTTPListen   = "http-listen"
	flagEnrollListen = "enroll-listen"
	flagHostname     = "hostname"
	flagKeytab       = "keytab"
	flagTokenBundle  = "token-bundle"
	flagInstance     = "instance"
	flagFrom         = "from"
)

// maxStdin bounds what a step reads from standard input.
const maxStdin = 1 << 20

// Finish are the finish step's listeners and names.
type Finish struct {
	APIListen    string
	HTTPURL      string
	HTTPListen   string
	EnrollListen string
	Hostnames    []string
	Instance     string // this appliance's name among those sharing a store
}

// Call is one step to run as a child process.
type Call struct {
	Step  string   // a provisioning step name (provisioning.StepToken, CASelfSigned...)
	Args  []string // the step's own flags
	Stdin string   // its secrets, one a line, or the PEM bundle of import
}

// Status lists the steps.
func Status() Call { return Call{Step: provisioning.Status} }

// Token initialises the token (or checks the user PIN).
func Token(soPIN, userPIN string) (Call, error) {
	if strings.ContainsAny(soPIN+userPIN, "\n\r") {
		return Call{}, errors.New("a PIN holds a line break: nothing changed")
	}
	return Call{Step: provisioning.StepToken, Stdin: soPIN + "\n" + userPIN + "\n"}, nil
}

// Key generates the CA key.
func Key(keyType string) Call {
	return Call{Step: provisioning.StepKey, Args: []string{"--" + flagKey, keyType}}
}

// SelfSigned makes the self-signed root CA certificate (validity 0: the default).
func SelfSigned(name string, validity time.Duration) Call {
	args := []string{"--" + flagCAName, name}
	if validity > 0 {
		args = append(args, "--"+flagCAValidity, validity.String())
	}
	return Call{Step: provisioning.CASelfSigned, Args: args}
}

// CSR makes the subordinate CA's request; its answer is a CSRReply.
func CSR(name string) Call {
	return Call{Step: provisioning.CACSR, Args: []string{"--" + flagCAName, name}}
}

// Import imports the subordinate CA's certificate and chain (PEM).
func Import(bundle []byte) Call { return Call{Step: provisioning.CAImport, Stdin: string(bundle)} }

// Directory checks and saves the directory settings; caFile holds d.CAPEM ("" for none),
// the password goes on standard input.
func Directory(d provisioning.Directory, caFile string) (Call, error) {
	if strings.ContainsAny(d.Password, "\n\r") {
		return Call{}, errors.New("the password holds a line break: nothing changed")
	}
	args := []string{"--" + flagLDAPURL, d.URL, "--" + flagLDAPBindUser, d.BindUser, "--" + flagCACN, d.CACN}
	if d.ServerName != "" {
		args = append(args, "--"+flagLDAPServer, d.ServerName)
	}
	if caFile != "" {
		args = append(args, "--"+flagLDAPCAFile, caFile)
	}
	return Call{Step: provisioning.StepDirectory, Args: args, Stdin: d.Password + "\n"}, nil
}

// StoreFiles are the files a Store call names: the server's CA and the client certificate and key
// (empty: none), written by the caller.
type StoreFiles struct{ CA, ClientCert, ClientKey string }

// Store checks and saves the shared PostgreSQL store's settings; the password (possibly empty,
// with a client certificate) goes on standard input.
func Store(s provisioning.Store, f StoreFiles) (Call, error) {
	if strings.ContainsAny(s.Password, "\n\r") {
		return Call{}, errors.New("the password holds a line break: nothing changed")
	}
	args := []string{"--" + flagStoreURL, s.URL, "--" + flagStoreCA, f.CA}
	if f.ClientCert != "" {
		args = append(args, "--"+flagStoreCert, f.ClientCert, "--"+flagStoreKey, f.ClientKey)
	}
	return Call{Step: provisioning.StepStore, Args: args, Stdin: s.Password + "\n"}, nil
}

// FinishCall writes the service's configuration.
func FinishCall(f Finish) Call {
	return Call{Step: provisioning.StepFinish, Args: f.args()}
}

func (f Finish) args() []string {
	args := []string{"--" + flagAPIListen, f.APIListen, "--" + flagHTTPURL, f.HTTPURL, "--" + flagHTTPListen, f.HTTPListen}
	if f.EnrollListen != "" {
		args = append(args, "--"+flagEnrollListen, f.EnrollListen)
	}
	for _, h := range f.Hostnames {
		args = append(args, "--"+flagHostname, h)
	}
	if f.Instance != "" {
		args = append(args, "--"+flagInstance, f.Instance)
	}
	return args
}

// JoinCall joins the CA whose store j.Store names: the store's files and the token bundle in
// files f and bundle (written by the caller), this appliance's listeners in fin, and the secrets
// (the role's password, the bundle's passphrase, the user PIN, the directory password, each
// possibly empty) on standard input.
func JoinCall(j provisioning.Join, f StoreFiles, bundle string, fin Finish) (Call, error) {
	for _, s := range []string{j.Store.Password, j.BundlePassphrase, j.UserPIN, j.LDAPPassword} {
		if strings.ContainsAny(s, "\n\r") {
			return Call{}, errors.New("a password, passphrase or PIN holds a line break: nothing changed")
		}
	}
	args := []string{"--" + flagStoreURL, j.Store.URL, "--" + flagStoreCA, f.CA, "--" + flagTokenBundle, bundle}
	if f.ClientCert != "" {
		args = append(args, "--"+flagStoreCert, f.ClientCert, "--"+flagStoreKey, f.ClientKey)
	}
	return Call{Step: provisioning.StepJoin, Args: append(args, fin.args()...),
		Stdin: j.Store.Password + "\n" + j.BundlePassphrase + "\n" + j.UserPIN + "\n" + j.LDAPPassword + "\n"}, nil
}

// RestoreCall restores the data directory from the backup r.From names, with this appliance's
// listeners in fin (the backup's addresses are another machine's) and the passphrase on standard
// input.
func RestoreCall(r provisioning.Restore, fin Finish) (Call, error) {
	if strings.ContainsAny(r.Passphrase, "\n\r") {
		return Call{}, errors.New("the passphrase holds a line break: nothing changed")
	}
	if r.From == "" {
		return Call{}, errors.New("where the backup is (a URL or a file) is required")
	}
	return Call{Step: provisioning.StepRestore, Args: append([]string{"--" + flagFrom, r.From}, fin.args()...),
		Stdin: r.Passphrase + "\n"}, nil
}

// Argv is the child's arguments after the program name, for the service's data
// directory dataDir and the PKCS#11 module ("" for SoftHSM2).
func (c Call) Argv(dataDir, module string) []string {
	argv := append([]string{Command, c.Step, "--" + flagData, dataDir, "--" + flagJSON}, c.Args...)
	if module != "" {
		argv = append(argv, "--"+flagModule, module)
	}
	return argv
}

// CSRReply is the csr step's answer.
type CSRReply struct {
	Report provisioning.Report `json:"report"`
	CSR    string              `json:"csr"`
}

// Run runs call with the program exe and decodes its answer into out (a
// *provisioning.Report, *[]provisioning.Step or *CSRReply). The error of a failing step is
// its reason, the last line of its standard error.
func Run(ctx context.Context, exe, dataDir, module string, call Call, out any) error {
	cmd := exec.CommandContext(ctx, exe, call.Argv(dataDir, module)...)
	cmd.Stdin = strings.NewReader(call.Stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		why := strings.TrimPrefix(lastLine(stderr.String()), "enrollsvc: ")
		if why == "" {
			why = err.Error()
		}
		return errors.New(why)
	}
	if err := json.Unmarshal(stdout.Bytes(), out); err != nil {
		return fmt.Errorf("enrollsvc provision %s: unreadable answer: %w", call.Step, err)
	}
	return nil
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.TrimSpace(lines[len(lines)-1])
}

// ErrUsage wraps the errors of a command line Parse does not accept.
var ErrUsage = errors.New("usage")

// Request is a step as the child reads it: its command line and standard input.
type Request struct {
	Step     string
	Data     string // the service's data directory
	Module   string // PKCS#11 module ("": SoftHSM2)
	JSON     bool   // answer in JSON (Reply)
	LogLevel string

	KeyType    string                 // key
	CAName     string                 // selfsigned, csr
	Validity   time.Duration          // selfsigned
	SOPIN      string                 // token
	UserPIN    string                 // token
	Bundle     []byte                 // import: from --in or standard input
	Directory  provisioning.Directory // directory (CAPEM read from LDAPCAFile)
	LDAPCAFile string
	Store      provisioning.Store // store (PEMs read from StoreFiles)
	StoreFiles StoreFiles
	Join       provisioning.Join // join (Join.Store is Store, its PEMs from StoreFiles)
	BundleFile string            // join: the token bundle
	Restore    provisioning.Restore
	Finish     Finish
	Keytab     []byte // finish: from --keytab
}

// Parse reads a step's command line (the arguments after "provision") and its secrets
// from stdin. usage is printed on a flag error.
func Parse(args []string, stdin io.Reader, stderr io.Writer, usage string) (Request, error) {
	var r Request
	if len(args) == 0 {
		return r, fmt.Errorf("%w: no step", ErrUsage)
	}
	r.Step = args[0]
	fs := flag.NewFlagSet("enrollsvc "+Command+" "+r.Step, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(fs.Output(), usage) }
	fs.StringVar(&r.Data, flagData, "", "the service's data directory")
	fs.StringVar(&r.Module, flagModule, "", "PKCS#11 module (default SoftHSM2)")
	fs.StringVar(&r.LogLevel, flagLogLevel, "warn", "log level")
	fs.BoolVar(&r.JSON, flagJSON, false, "JSON output")
	var in, keytab string
	switch r.Step {
	case provisioning.Status, provisioning.StepToken:
	case provisioning.StepKey:
		fs.StringVar(&r.KeyType, flagKey, "ecdsa-p256", "CA key type")
	case provisioning.CASelfSigned, provisioning.CACSR:
		fs.StringVar(&r.CAName, flagCAName, "", "common name of the CA")
		fs.DurationVar(&r.Validity, flagCAValidity, 10*365*24*time.Hour, "validity of the self-signed CA certificate")
	case provisioning.CAImport:
		fs.StringVar(&in, flagIn, "", "PEM file with the certificate and its chain (default: standard input)")
	case provisioning.StepDirectory:
		fs.StringVar(&r.Directory.URL, flagLDAPURL, "", "ldaps://DC[:636] or ldap://DC[:389] (StartTLS)")
		fs.StringVar(&r.Directory.BindUser, flagLDAPBindUser, "", "UPN or DN of the service account")
		fs.StringVar(&r.Directory.CACN, flagCACN, "", "cn of the pKIEnrollmentService object")
		fs.StringVar(&r.LDAPCAFile, flagLDAPCAFile, "", "PEM file: the CA of the domain controllers' certificates")
		fs.StringVar(&r.Directory.ServerName, flagLDAPServer, "", "the DC's name in its certificate, when the URL has an IP address")
	case provisioning.StepStore, provisioning.StepJoin:
		fs.StringVar(&r.Store.URL, flagStoreURL, "", "postgres://ROLE@HOST[:PORT]/DATABASE (no password in it)")
		fs.StringVar(&r.StoreFiles.CA, flagStoreCA, "", "PEM file: the CA of the database server's certificate")
		fs.StringVar(&r.StoreFiles.ClientCert, flagStoreCert, "", "PEM client certificate, instead of or besides a password")
		fs.StringVar(&r.StoreFiles.ClientKey, flagStoreKey, "", "its PEM key")
		if r.Step == provisioning.StepStore {
			break
		}
		fs.StringVar(&r.BundleFile, flagTokenBundle, "", "the first appliance's SoftHSM token bundle (ca export-token)")
		r.finishFlags(fs, &keytab)
	case provisioning.StepRestore:
		fs.StringVar(&r.Restore.From, flagFrom, "", "the backup: an http:// or https:// URL, or a file")
		r.finishFlags(fs, &keytab)
	case provisioning.StepFinish:
		r.finishFlags(fs, &keytab)
	default:
		fmt.Fprint(stderr, usage)
		return r, fmt.Errorf("%w: unknown provisioning step %q", ErrUsage, r.Step)
	}
	if err := fs.Parse(args[1:]); err != nil {
		return r, err
	}
	if fs.NArg() > 0 {
		return r, fmt.Errorf("%w: unexpected arguments %q", ErrUsage, fs.Args())
	}
	if r.Data == "" {
		return r, fmt.Errorf("%w: --%s is required", ErrUsage, flagData)
	}
	return r, r.readInput(stdin, in, keytab)
}

// finishFlags are finish's flags, which join and restore take too.
func (r *Request) finishFlags(fs *flag.FlagSet, keytab *string) {
	fs.StringVar(&r.Finish.APIListen, flagAPIListen, config.DefaultAPIListen, "address of the management API")
	fs.StringVar(&r.Finish.HTTPURL, flagHTTPURL, "", "how clients reach the plain-HTTP listener (CRLs, OCSP, AIA, SCEP)")
	fs.StringVar(&r.Finish.HTTPListen, flagHTTPListen, "", "address of the plain-HTTP listener")
	fs.StringVar(&r.Finish.EnrollListen, flagEnrollListen, "", "address of the enrollment web services (with a directory)")
	fs.Func(flagHostname, "host name of the enrollment web services (repeatable)", func(s string) error {
		r.Finish.Hostnames = append(r.Finish.Hostnames, s)
		return nil
	})
	fs.StringVar(keytab, flagKeytab, "", "Kerberos service keytab (HTTP/<hostname>)")
	fs.StringVar(&r.Finish.Instance, flagInstance, "", "this appliance's name among those sharing a store (default: the host name)")
}

// readInput reads the step's secrets and files.
func (r *Request) readInput(stdin io.Reader, in, keytab string) error {
	lines := bufio.NewScanner(io.LimitReader(stdin, maxStdin))
	secret := func(what string) (string, error) {
		if !lines.Scan() {
			return "", fmt.Errorf("%s: expected on standard input", what)
		}
		return strings.TrimRight(lines.Text(), "\r"), nil
	}
	var err error
	switch r.Step {
	case provisioning.StepToken:
		if r.SOPIN, err = secret("the SO PIN"); err != nil {
			return err
		}
		r.UserPIN, err = secret("the user PIN")
		return err
	case provisioning.CAImport:
		if in != "" {
			r.Bundle, err = os.ReadFile(in)
		} else {
			r.Bundle, err = io.ReadAll(io.LimitReader(stdin, maxStdin))
		}
		if err != nil {
			return fmt.Errorf("reading the chain: %w", err)
		}
	case provisioning.StepDirectory:
		if r.Directory.Password, err = secret("the service account's password"); err != nil {
			return err
		}
		if r.LDAPCAFile != "" {
			if r.Directory.CAPEM, err = os.ReadFile(r.LDAPCAFile); err != nil {
				return fmt.Errorf("--%s: %w", flagLDAPCAFile, err)
			}
		}
	case provisioning.StepStore, provisioning.StepJoin:
		if r.Store.Password, err = secret("the database role's password (an empty line with a client certificate)"); err != nil {
			return err
		}
		if r.Step == provisioning.StepJoin {
			for _, s := range []struct {
				what string
				dst  *string
			}{{"the token bundle's passphrase", &r.Join.BundlePassphrase}, {"the token's user PIN", &r.Join.UserPIN},
				{"the directory password (an empty line without a directory)", &r.Join.LDAPPassword}} {
				if *s.dst, err = secret(s.what); err != nil {
					return err
				}
			}
			if r.BundleFile == "" {
				return fmt.Errorf("%w: --%s is required", ErrUsage, flagTokenBundle)
			}
			if r.Join.TokenBundle, err = os.ReadFile(r.BundleFile); err != nil {
				return fmt.Errorf("--%s: %w", flagTokenBundle, err)
			}
			if keytab != "" {
				if r.Keytab, err = os.ReadFile(keytab); err != nil {
					return fmt.Errorf("--%s: %w", flagKeytab, err)
				}
			}
		}
		for _, f := range []struct {
			path, flag string
			dst        *[]byte
		}{{r.StoreFiles.CA, flagStoreCA, &r.Store.CAPEM}, {r.StoreFiles.ClientCert, flagStoreCert, &r.Store.ClientCertPEM},
			{r.StoreFiles.ClientKey, flagStoreKey, &r.Store.ClientKeyPEM}} {
			if f.path == "" {
				continue
			}
			if *f.dst, err = os.ReadFile(f.path); err != nil {
				return fmt.Errorf("--%s: %w", f.flag, err)
			}
		}
		r.Join.Store = r.Store
	case provisioning.StepRestore:
		if r.Restore.Passphrase, err = secret("the backup's passphrase"); err != nil {
			return err
		}
		if r.Restore.From == "" {
			return fmt.Errorf("%w: --%s is required", ErrUsage, flagFrom)
		}
	case provisioning.StepFinish:
		if keytab != "" {
			if r.Keytab, err = os.ReadFile(keytab); err != nil {
				return fmt.Errorf("--%s: %w", flagKeytab, err)
			}
		}
	}
	return nil
}

// Reply writes a step's answer as Run reads it.
func Reply(w io.Writer, v any) error { return json.NewEncoder(w).Encode(v) }
