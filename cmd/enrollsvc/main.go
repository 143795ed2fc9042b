// Command enrollsvc is the certificate enrollment service: `enrollsvc init` creates a data
// directory (HSM token, CA key generated inside it, CA certificate, store, admin credential) and
// `enrollsvc serve` runs the service on it with the local management API.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"strings"
	"syscall"
	"time"

	"github.com/enrollment-appliance/aeappliance/config"
	"github.com/enrollment-appliance/aeappliance/enrollsvc/daemon"
	"github.com/enrollment-appliance/aeappliance/enrollsvc/remotelog"
	"github.com/enrollment-appliance/aeappliance/enrollsvc/sandbox"
	"github.com/enrollment-appliance/aeappliance/enrollsvc/webenroll"
	"github.com/enrollment-appliance/aeappliance/firmware/fwapi"
	"github.com/enrollment-appliance/aeappliance/hsm"
	"github.com/enrollment-appliance/aeappliance/provisioning/ceremony"
)

// mainStarted is when main began: the program loaded and its packages initialised.
var mainStarted time.Time

func main() {
	mainStarted = time.Now()
	if err := run(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "enrollsvc:", err)
		}
		os.Exit(exitCode(err))
	}
}

func exitCode(err error) int {
	if errors.Is(err, flag.ErrHelp) || errors.Is(err, errUsage) {
		return 2
	}
	return 1
}

var errUsage = errors.New("usage")

// version is set by the build (-ldflags -X main.version=...) and handed to the service.
var version = "dev"

const usage = `enrollsvc - HSM-backed certificate enrollment service

Usage:
  enrollsvc init  --data DIR --ca-name NAME [--key TYPE] [flags]   create a data directory
  enrollsvc serve --data DIR [--api-listen ADDR]                    run the service
  enrollsvc provision STEP --data DIR [flags]                       the provisioning ceremony,
                                                                    step by step (the appliance's)
  enrollsvc join  --data DIR --store-url URL [flags]                one more instance of the CA
                                                                    whose store is PostgreSQL
  enrollsvc store migrate --from DIR --to URL [flags]               move a SQLite store's history
                                                                    into PostgreSQL
  enrollsvc token export --data DIR < passphrase > bundle           the SoftHSM token, encrypted,
                                                                    for another instance to join
  enrollsvc restore --data NEWDIR --from FILE --passphrase-file F  a backup (aectl backup) into a
                                                                    new data directory
  enrollsvc relay --listen ADDR --socket PATH [flags]               the provisioning API's
                                                                    unprivileged network front
  enrollsvc version                                                 print the version

Run 'enrollsvc COMMAND -h' for the flags of a command. Manage a running service with aectl.
`

func run(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return errUsage
	}
	switch args[0] {
	case "init":
		return cmdInit(args[1:], stdout, stderr)
	case "serve":
		return cmdServe(args[1:], stdout, stderr)
	case "provision":
		return cmdProvision(args[1:], os.Stdin, stdout, stderr)
	case "relay":
		return cmdRelay(args[1:], stdout, stderr)
	case "join":
		return cmdJoin(args[1:], stdout, stderr)
	case "store":
		return cmdStore(args[1:], stdout, stderr)
	case "token":
		return cmdToken(args[1:], os.Stdin, stdout, stderr)
	case "restore":
		return cmdRestore(args[1:], stdout, stderr)
	case "version":
		fmt.Fprintln(stdout, "enrollsvc", version)
		return nil
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	fmt.Fprint(stderr, usage)
	return fmt.Errorf("%w: unknown command %q", errUsage, args[0])
}

type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(s string) error { *l = append(*l, s); return nil }

func newLogger(w io.Writer, level string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", level)
	}
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: l})), nil
}

func cmdInit(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("enrollsvc init", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o ceremony.InitOptions
	var logLevel string
	fs.StringVar(&o.Dir, "data", "", "data directory to create (must not exist or be empty)")
	fs.StringVar(&o.CAName, "ca-name", "", "common name of the CA certificate")
	fs.StringVar(&o.KeyType, "key", "ecdsa-p256", "CA key type: "+keyTypes())
	fs.DurationVar(&o.CAValidity, "ca-validity", 10*365*24*time.Hour, "validity of the self-signed CA certificate")
	fs.StringVar(&o.APIListen, "api-listen", config.DefaultAPIListen, "address of the local management API")
	fs.StringVar(&o.Module, "pkcs11-module", "", "PKCS#11 module (default: SoftHSM2, with a token made inside the data directory)")
	fs.Var((*listFlag)(&o.CRLURLs), "crl-url", "CRL distribution point URL put in every certificate (repeatable)")
	fs.Var((*listFlag)(&o.OCSPURLs), "ocsp-url", "OCSP responder URL put in every certificate (repeatable)")
	fs.Var((*listFlag)(&o.CAIssuerURLs), "ca-issuer-url", "URL of the CA certificate put in every certificate (repeatable)")
	fs.StringVar(&o.HTTPURL, "http-url", "", "enable the plain-HTTP listener for CRLs, OCSP, the CA certificate and SCEP: how clients reach it (http://HOST[:PORT]); its URLs go into every certificate unless --crl-url, --ocsp-url or --ca-issuer-url say otherwise")
	fs.StringVar(&o.HTTPListen, "http-listen", "", "address of the plain-HTTP listener (default "+config.DefaultHTTPListen+"; port 80 on an appliance)")
	var d ceremony.DirectoryOptions
	fs.StringVar(&d.URL, "ldap-url", "", "Active Directory: ldaps://DC[:636] or ldap://DC[:389] (StartTLS is then required)")
	fs.StringVar(&d.CAFile, "ldap-ca-file", "", "PEM file with the CA that issued the domain controllers' certificates")
	fs.StringVar(&d.BindUser, "ldap-bind-user", "", "UPN or DN of the directory service account")
	fs.StringVar(&d.PasswordFile, "ldap-password-file", "", "file holding that account's password (copied into DIR, mode 0600)")
	fs.StringVar(&d.CACN, "ca-cn", "", "cn of the pKIEnrollmentService object whose certificateTemplates this appliance offers")
	fs.StringVar(&d.ServerName, "ldap-server-name", "", "the DC's name in its certificate, when --ldap-url has an IP address")
	fs.StringVar(&o.EnrollListen, "enroll-listen", "", "address of the enrollment web services, CEP/CES over HTTPS (default "+config.DefaultEnrollListen+"; needs the directory)")
	fs.StringVar(&o.Keytab, "keytab", "", "Kerberos service keytab with HTTP/<hostname> keys for the Kerberos endpoints (checked, copied into DIR)")
	fs.Var((*listFlag)(&o.Hostnames), "hostname", "host name of the enrollment web services: in their certificate and every advertised URI (repeatable; default localhost and 127.0.0.1)")
	fs.StringVar(&logLevel, "log-level", "warn", "log level: debug, info, warn, error")
	var so ceremony.StoreOptions
	storeFlags(fs, &so)
	fs.StringVar(&o.Instance, "instance", "", "this instance's name among those sharing the store (default: the host name)")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `Usage: enrollsvc init --data DIR --ca-name NAME [flags]

Creates a data directory: a SoftHSM token under DIR/hsm (config DIR/hsm/softhsm2.conf, user PIN
in DIR/hsm/pin, mode 0600), a CA key generated inside the token (sensitive, never extractable), a
self-signed CA certificate DIR/ca.pem, the store, DIR/config.json and the admin API token
DIR/api/admin-token. Refuses a directory that exists and is not empty.

With --ldap-url (and --ldap-bind-user, --ldap-password-file, --ca-cn) templates, permissions and
accounts come from Active Directory; init checks it can bind and find the enrollment service.

With --store-url (and --store-ca-file, --store-password-file or --store-client-cert/-key) the
store is a PostgreSQL database (TLS verified) that more instances of the CA can share: make them
with enrollsvc join. init refuses a database that already serves another CA.

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
	log, err := newLogger(stderr, logLevel)
	if err != nil {
		return err
	}
	o.Logger = log
	if d != (ceremony.DirectoryOptions{}) {
		o.Directory = &d
	}
	if so != (ceremony.StoreOptions{}) {
		o.Store = &so
	}
	res, err := ceremony.Init(context.Background(), o)
	if err != nil {
		return fmt.Errorf("init: %w", err)
	}
	fmt.Fprintf(stdout, "Initialised %s\n  CA:      %s (serial %s)\n  CA key:  %s\n  API:     https://%s (start it with: enrollsvc serve --data %s)\n",
		res.Dir, res.CASubject, res.CASerial, res.KeyURI, res.APIListen, o.Dir)
	return nil
}

func keyTypes() string {
	var s []string
	for _, k := range hsm.KeyTypes() {
		s = append(s, string(k))
	}
	return strings.Join(s, ", ")
}

func cmdServe(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("enrollsvc serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var dir, listen, logLevel string
	fs.StringVar(&dir, "data", "", "data directory made by `enrollsvc init`")
	fs.StringVar(&listen, "api-listen", "", "address of the local management API (default: from the configuration; port 0 picks a free one)")
	var enrollListen, httpListen string
	fs.StringVar(&enrollListen, "enroll-listen", "", "address of the enrollment web services, which the directory configures (default: from the configuration; port 0 picks a free one); refused without them")
	fs.StringVar(&httpListen, "http-listen", "", "address of the plain-HTTP listener for CRLs, OCSP, AIA and SCEP (default: from the configuration)")
	var firmwareDir, updateKeys string
	fs.StringVar(&firmwareDir, "firmware-dir", "", "on the appliance: its firmware slots, for PUT /api/v1/firmware (with --update-keys)")
	fs.StringVar(&updateKeys, "update-keys", "", "on the appliance: PEM public keys update bundles must be signed by")
	fs.StringVar(&logLevel, "log-level", "info", "log level: debug, info, warn, error")
	var confine, landlock bool
	fs.BoolVar(&confine, "seccomp", false, "confine the service before it opens anything: no_new_privs and a seccomp allow-list whose violation kills it (the appliance always sets it)")
	fs.BoolVar(&landlock, "landlock", false, "let the service change the file system only beneath --data (and --firmware-dir), with Landlock; refused by a kernel without it (the appliance always sets it)")
	var cpuProfile string
	fs.StringVar(&cpuProfile, "cpuprofile", "", "write a CPU profile (go tool pprof) of the whole run to FILE when the service stops; for measuring, never on an appliance: not with --seccomp (the profiler's timers are not on its allow-list), and beneath --data with --landlock")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `Usage: enrollsvc serve --data DIR [--api-listen ADDR] [--enroll-listen ADDR] [--http-listen ADDR] [--seccomp] [--landlock]

Runs the enrollment service in the foreground: opens the HSM token and the CA key, the store,
serves the local management API over TLS and, with a directory, the enrollment web services
(MS-XCEP policy and MS-WSTEP enrollment, as AD CS's CEP/CES) and SCEP, and, when configured
(init --http-url), a plain-HTTP listener for CRLs, OCSP, the CA certificate and SCEP. Logs are JSON on standard error. SIGINT or SIGTERM
stops it cleanly.

Flags:
`)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if dir == "" {
		return fmt.Errorf("%w: --data is required", errUsage)
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: unexpected arguments %q", errUsage, fs.Args())
	}
	if (firmwareDir == "") != (updateKeys == "") {
		return fmt.Errorf("%w: --firmware-dir and --update-keys go together", errUsage)
	}
	if cpuProfile != "" && confine {
		return fmt.Errorf("%w: --cpuprofile cannot go with --seccomp: the profiler's timers (timer_create, setitimer) are not on the allow-list", errUsage)
	}
	log, err := newLogger(stderr, logLevel)
	if err != nil {
		return err
	}
	// The log also goes to a remote syslog server once an administrator names one.
	tee := remotelog.NewTee(log.Handler(), slog.LevelInfo)
	log = slog.New(tee)
	if set, limit := tuneGC(); set {
		log.Debug("garbage collector", "gogc", serveGCPercent, "memory_limit", limit)
	}
	// Refuse what cannot take effect before opening anything, so that nothing changes.
	cfg, err := config.Load(dir)
	if err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	so := daemon.ServeOptions{APIListen: listen, Version: version, EnrollListen: enrollListen, HTTPListen: httpListen,
		LogTee: tee}
	if err := so.Check(cfg); err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	if firmwareDir != "" {
		if so.Firmware, err = fwapi.New(firmwareDir, updateKeys, "/proc/cmdline"); err != nil {
			return fmt.Errorf("serve: %w", err)
		}
	}
	var confinement []string
	if landlock {
		// Temporary files (SQLite's) go beneath the data directory too.
		writable := []string{dir}
		if firmwareDir != "" {
			writable = append(writable, firmwareDir)
		}
		tmp := filepath.Join(dir, "tmp")
		if err := os.MkdirAll(tmp, 0o700); err != nil {
			return fmt.Errorf("serve: %w", err)
		}
		if err := os.Setenv("TMPDIR", tmp); err != nil {
			return fmt.Errorf("serve: %w", err)
		}
		abi, err := sandbox.RestrictWrites(writable)
		if err != nil {
			return fmt.Errorf("serve: %w", err)
		}
		log.Info("confined: Landlock, writes only beneath the data directory", "abi", abi, "writable", writable)
		confinement = append(confinement, fmt.Sprintf("Landlock ABI %d: writes only beneath %s", abi, strings.Join(writable, ", ")))
	}
	if confine {
		if err := sandbox.Apply(); err != nil {
			return fmt.Errorf("serve: %w", err)
		}
		log.Info("confined: no_new_privs and the seccomp allow-list", "system_calls", len(sandbox.Allowed))
		confinement = append(confinement, fmt.Sprintf("seccomp allow-list of %d system calls", len(sandbox.Allowed)))
	}
	// What the service says of its own confinement, for the appliance's status (the kernel
	// shows seccomp in /proc/PID/status, but not Landlock).
	if err := config.WriteFileAtomic(config.Path(dir, config.ConfinementFile), []byte(strings.Join(confinement, "; ")+"\n"), 0o600); err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	if cpuProfile != "" {
		f, err := os.Create(cpuProfile)
		if err != nil {
			return fmt.Errorf("serve: --cpuprofile: %w", err)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			f.Close()
			return fmt.Errorf("serve: --cpuprofile: %w", err)
		}
		defer func() { pprof.StopCPUProfile(); f.Close() }()
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if ps := daemon.ProcessStart(); !ps.IsZero() {
		so.ProcessStart = ps
		so.Began = fmt.Sprintf("program load and init %.2fs, ", mainStarted.Sub(ps).Seconds())
	}
	so.Began += fmt.Sprintf("configuration and confinement %.2fs", time.Since(mainStarted).Seconds())
	rt, err := daemon.Open(ctx, dir, log)
	if err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	defer rt.Close()
	aectl := aectlPath()
	so.OnHTTPListen = func(addr string) {
		fmt.Fprintf(stdout, "Revocation and SCEP listening on http://%s (/crl/, /ocsp, /aia/, /scep/PROFILE)\n", addr)
	}
	so.OnEnrollListen = func(addr string) {
		fmt.Fprintf(stdout, "Enrollment web services listening on https://%s\n  policy (CEP): https://HOST:PORT%s (username/password)\n",
			addr, webenroll.CEPPasswordPath)
	}
	so.OnListen = func(addr string) {
		fmt.Fprintf(stdout, "enrollsvc %s: CA %q, key %s\nLocal API listening on https://%s\nTry:  %s --data %s status\n      %s --data %s certs\nCtrl-C stops the service.\n",
			version, rt.CACert.Subject.String(), rt.Key.URI(), addr, aectl, dir, aectl, dir)
	}
	if err := daemon.Serve(ctx, dir, so, rt); err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	fmt.Fprintln(stdout, "enrollsvc stopped")
	return nil
}

// aectlPath is how to call aectl from here: the one beside this binary (bin/aectl after
// `make build`) if there is one, else from PATH.
func aectlPath() string {
	p := filepath.Join(filepath.Dir(os.Args[0]), "aectl")
	if fi, err := os.Stat(p); err == nil && !fi.IsDir() && strings.ContainsRune(os.Args[0], filepath.Separator) {
		return p
	}
	return "aectl"
}
