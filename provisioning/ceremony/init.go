// Package ceremony runs the provisioning ceremony on a service data directory: the HSM
// token, the CA key generated inside it, a self-signed root or a subordinate CA, the
// directory settings and the service's configuration (Ceremony, step by step), and Init,
// the one-shot development form of the same steps (enrollsvc init). It needs PKCS#11, so
// cgo; the appliance's init payload runs it in `enrollsvc provision` child processes and
// uses only the light types of package provisioning.
package ceremony

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/enrollment-appliance/aeappliance/config"
	"github.com/enrollment-appliance/aeappliance/enrollsvc/daemon"
	"github.com/enrollment-appliance/aeappliance/enrollsvc/revoke"
	"github.com/enrollment-appliance/aeappliance/hsm"
	"github.com/enrollment-appliance/aeappliance/hsm/softhsm"
	"github.com/enrollment-appliance/aeappliance/proto/certutil"
)

// InitOptions describe a new data directory (development mode: a SoftHSM token inside it).
type InitOptions struct {
	Dir          string
	CAName       string
	KeyType      string // one of hsm.KeyTypes(); default ecdsa-p256
	CAValidity   time.Duration
	APIListen    string // default config.DefaultAPIListen
	CRLURLs      []string
	OCSPURLs     []string
	CAIssuerURLs []string
	Module       string // PKCS#11 module; default: SoftHSM's
	Directory    *DirectoryOptions
	// EnrollListen and Hostnames configure the enrollment web services (with a directory):
	// defaults config.DefaultEnrollListen and localhost, 127.0.0.1.
	EnrollListen string
	Hostnames    []string
	// HTTPURL enables the plain-HTTP listener for CRLs, OCSP, AIA and SCEP (http://HOST[:PORT])
	// and, unless CRLURLs, OCSPURLs or CAIssuerURLs are given, puts its URLs into every
	// certificate. HTTPListen is its address (default config.DefaultHTTPListen).
	HTTPURL    string
	HTTPListen string
	// Keytab is the Kerberos service keytab of the enrollment web services (HTTP/<hostname>);
	// it is checked and copied into the data directory.
	Keytab string
	// Store, when set, makes the store a PostgreSQL database several instances may share
	// (enrollsvc join) instead of a SQLite file in the data directory.
	Store *StoreOptions
	// Instance names this instance among those sharing the store (default: the host name).
	Instance string
	Logger   *slog.Logger
}

// StoreOptions point the service at a PostgreSQL database (TLS required). The files are copied
// into the data directory, the password file with mode 0600.
type StoreOptions struct {
	URL            string // postgres://ROLE@HOST[:PORT]/DATABASE, no password in it
	CAFile         string // PEM: the CA of the server's certificate (required)
	PasswordFile   string // the role's password (or Password), or
	ClientCertFile string // a client certificate and its key
	ClientKeyFile  string
	Password       string // the role's password itself, instead of PasswordFile
}

// stage checks the options and copies the files into dir, returning the configuration's section.
func (s *StoreOptions) stage(dir string) (*config.Postgres, error) {
	p := &config.Postgres{URL: s.URL, CAFile: config.StoreCAFile}
	if s.PasswordFile != "" && s.Password != "" {
		return nil, errors.New("give the store's password in a file or itself, not both")
	}
	if s.PasswordFile != "" || s.Password != "" {
		p.PasswordFile = config.StorePassword
	}
	if s.ClientCertFile != "" || s.ClientKeyFile != "" {
		p.ClientCertFile, p.ClientKeyFile = config.StoreClientCert, config.StoreClientKey
	}
	if s.CAFile == "" {
		return nil, errors.New("--store-ca-file is required: the connection to the database is TLS, verified")
	}
	if err := p.Validate(); err != nil {
		return nil, fmt.Errorf("--store-url: %w", err)
	}
	if err := os.MkdirAll(filepath.Join(dir, config.StoreDir), 0o700); err != nil {
		return nil, err
	}
	if s.Password != "" {
		if err := writeSecret(filepath.Join(dir, config.StorePassword), "store's password", s.Password, "", ""); err != nil {
			return nil, err
		}
	}
	for _, f := range []struct {
		from, to, flag string
		mode           os.FileMode
	}{{s.CAFile, config.StoreCAFile, "--store-ca-file", 0o644}, {s.PasswordFile, config.StorePassword, "--store-password-file", 0o600},
		{s.ClientCertFile, config.StoreClientCert, "--store-client-cert", 0o644}, {s.ClientKeyFile, config.StoreClientKey, "--store-client-key", 0o600}} {
		if f.from == "" {
			continue
		}
		b, err := os.ReadFile(f.from)
		if err != nil {
			return nil, fmt.Errorf("reading %s: %w", f.flag, err)
		}
		if err := os.WriteFile(filepath.Join(dir, f.to), b, f.mode); err != nil {
			return nil, err
		}
	}
	return p, nil
}

// DirectoryOptions connect the appliance to Active Directory.
type DirectoryOptions struct {
	URL          string // ldaps://dc:636 or ldap://dc:389 (StartTLS)
	CAFile       string // PEM trusted for the DC's certificate (copied into the data directory)
	BindUser     string // UPN or DN of the service account
	PasswordFile string // its password (copied into the data directory, mode 0600)
	CACN         string // cn of the pKIEnrollmentService object listing the offered templates
	ServerName   string // the DC's name in its certificate when URL has an IP address
}

// Result says what Init made.
type Result struct {
	Dir       string
	KeyURI    string
	CASubject string
	CASerial  string
	APIListen string
}

func (o *InitOptions) validate() error {
	if o.Dir == "" {
		return errors.New("--data: a data directory is required")
	}
	if strings.TrimSpace(o.CAName) == "" {
		return errors.New("--ca-name: the CA needs a name")
	}
	if o.KeyType == "" {
		o.KeyType = string(hsm.ECDSAP256)
	}
	if _, err := hsm.ParseKeyType(o.KeyType); err != nil {
		return fmt.Errorf("--key: %w", err)
	}
	if o.CAValidity == 0 {
		o.CAValidity = 10 * 365 * 24 * time.Hour
	}
	if o.CAValidity < 24*time.Hour {
		return errors.New("--ca-validity: at least one day")
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if err := o.validateListeners(); err != nil {
		return err
	}
	if d := o.Directory; d != nil {
		switch {
		case d.URL == "":
			return errors.New("--ldap-url is required with the other --ldap flags")
		case d.BindUser == "":
			return errors.New("--ldap-bind-user is required with --ldap-url")
		case d.PasswordFile == "":
			return errors.New("--ldap-password-file is required with --ldap-url")
		case d.CACN == "":
			return errors.New("--ca-cn is required with --ldap-url (the cn of the pKIEnrollmentService object)")
		}
		if err := (&config.Directory{URL: d.URL, BindUser: d.BindUser, PasswordFile: "x", CACN: d.CACN}).Validate(); err != nil {
			return fmt.Errorf("--ldap-url: %w", err)
		}
		for _, f := range []string{d.PasswordFile, d.CAFile} {
			if f == "" {
				continue
			}
			if _, err := os.Stat(f); err != nil {
				return fmt.Errorf("directory settings: %w", err)
			}
		}
	}
	return nil
}

// validateListeners checks the listener settings and fills in their defaults and the
// URLs derived from HTTPURL.
func (o *InitOptions) validateListeners() error {
	if o.APIListen == "" {
		o.APIListen = config.DefaultAPIListen
	}
	if _, _, err := net.SplitHostPort(o.APIListen); err != nil {
		return fmt.Errorf("--api-listen %q: %w", o.APIListen, err)
	}
	if o.HTTPListen != "" && o.HTTPURL == "" {
		return errors.New("--http-listen needs --http-url (how clients reach it, e.g. http://pki.corp.example.test)")
	}
	if o.HTTPURL != "" {
		if o.HTTPListen == "" {
			o.HTTPListen = config.DefaultHTTPListen
		}
		o.HTTPURL = strings.TrimSuffix(o.HTTPURL, "/")
		h := config.HTTP{Listen: o.HTTPListen, BaseURL: o.HTTPURL}
		if err := (&config.Config{HTTP: &h}).ValidateHTTP(); err != nil {
			return fmt.Errorf("--http-url/--http-listen: %w", err)
		}
		name := revoke.FileName(o.CAName)
		if len(o.CRLURLs) == 0 {
			o.CRLURLs = []string{o.HTTPURL + "/crl/" + name + ".crl"}
		}
		if len(o.OCSPURLs) == 0 {
			o.OCSPURLs = []string{o.HTTPURL + "/ocsp"}
		}
		if len(o.CAIssuerURLs) == 0 {
			o.CAIssuerURLs = []string{o.HTTPURL + "/aia/" + name + ".crt"}
		}
	}
	if o.Directory == nil && (o.EnrollListen != "" || len(o.Hostnames) > 0 || o.Keytab != "") {
		return errors.New("--enroll-listen, --hostname and --keytab need the directory settings (--ldap-url ...)")
	}
	if o.EnrollListen == "" {
		o.EnrollListen = config.DefaultEnrollListen
	}
	if _, _, err := net.SplitHostPort(o.EnrollListen); err != nil {
		return fmt.Errorf("--enroll-listen %q: %w", o.EnrollListen, err)
	}
	if len(o.Hostnames) == 0 {
		o.Hostnames = []string{"localhost", "127.0.0.1"}
	}
	for _, h := range o.Hostnames {
		if h == "" || strings.ContainsAny(h, "/:@ ") && net.ParseIP(h) == nil {
			return fmt.Errorf("--hostname %q: want a DNS name or an IP address", h)
		}
	}
	return nil
}

// Init creates a data directory. It refuses a directory that exists and is not empty, and
// builds everything in a staging directory beside it that is renamed into place only when
// complete: a failed Init leaves nothing behind.
func Init(ctx context.Context, o InitOptions) (*Result, error) {
	if err := o.validate(); err != nil {
		return nil, err
	}
	if o.Module == "" {
		var err error
		if o.Module, err = softhsm.ModulePath(); err != nil {
			return nil, fmt.Errorf("finding SoftHSM (run `make deps`): %w", err)
		}
	}
	return buildAside(o.Dir, "init", true, func(stage string) (*Result, error) { return build(ctx, stage, o) })
}

// buildAside builds a new data directory at dir: in a staging directory beside it, moved into
// place only once fill succeeded (so a failure leaves nothing). dir must not exist or be empty.
// softHSM: the directory holds a SoftHSM token, whose configuration names it by absolute path.
func buildAside(dir, what string, softHSM bool, fill func(stage string) (*Result, error)) (*Result, error) {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	if entries, err := os.ReadDir(dir); err == nil && len(entries) > 0 {
		return nil, fmt.Errorf("%s already exists and is not empty; refusing to overwrite it (remove it first to start over)", dir)
	} else if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("checking %s: %w", dir, err)
	}
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return nil, err
	}
	stage, err := os.MkdirTemp(filepath.Dir(dir), "."+filepath.Base(dir)+"."+what+"-")
	if err != nil {
		return nil, fmt.Errorf("creating a staging directory: %w", err)
	}
	defer os.RemoveAll(stage) // a no-op once renamed
	res, err := fill(stage)
	if err != nil {
		return nil, err
	}
	if err := os.Remove(dir); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("replacing the empty %s: %w", dir, err)
	}
	if err := os.Rename(stage, dir); err != nil {
		return nil, fmt.Errorf("moving the new data directory into place: %w", err)
	}
	if softHSM {
		if err := softhsm.WriteConfig(filepath.Join(dir, config.SoftHSMConf), filepath.Join(dir, config.SoftHSMTokens)); err != nil {
			return nil, err
		}
	}
	res.Dir = dir
	return res, nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// build runs the ceremony in the staging directory: a SoftHSM token with random PINs (kept
// in the directory, development mode), the CA key, the self-signed root, the directory
// settings and the configuration.
func build(ctx context.Context, stage string, o InitOptions) (*Result, error) {
	c := &Ceremony{Dir: stage, Logger: o.Logger}
	if m, _ := softhsm.ModulePath(); o.Module != m {
		c.Module = o.Module
	}
	userPIN, soPIN := randomHex(16), randomHex(16)
	if _, err := c.Token(ctx, soPIN, userPIN); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(stage, config.HSMDir, "so-pin"), []byte(soPIN+"\n"), 0o600); err != nil {
		return nil, err
	}
	if _, err := c.Key(ctx, o.KeyType); err != nil {
		return nil, err
	}
	if _, err := c.SelfSigned(ctx, o.CAName, o.CAValidity); err != nil {
		return nil, err
	}
	fo := FinishOptions{APIListen: o.APIListen, HTTPURL: o.HTTPURL, HTTPListen: o.HTTPListen,
		CRLURLs: o.CRLURLs, OCSPURLs: o.OCSPURLs, CAIssuerURLs: o.CAIssuerURLs, Instance: o.Instance}
	if o.Store != nil {
		var err error
		if fo.Postgres, err = o.Store.stage(stage); err != nil {
			return nil, err
		}
	}
	if d := o.Directory; d != nil {
		fo.EnrollListen, fo.Hostnames = o.EnrollListen, o.Hostnames
		// The password and CA files are copied as they are; the service checks the
		// settings when Finish opens the directory.
		cd, err := stageDirectory(stage, d)
		if err != nil {
			return nil, err
		}
		st, err := c.State()
		if err != nil {
			return nil, err
		}
		st.Directory = cd
		if err := c.save(st); err != nil {
			return nil, err
		}
	}
	if o.Keytab != "" {
		kt, err := os.ReadFile(o.Keytab)
		if err != nil {
			return nil, fmt.Errorf("reading --keytab: %w", err)
		}
		fo.Keytab = kt
	}
	if _, err := c.Finish(ctx, fo); err != nil {
		return nil, err
	}
	st, err := c.State()
	if err != nil {
		return nil, err
	}
	return &Result{KeyURI: st.Key.URI, CASubject: st.CA.Subject, CASerial: caSerial(stage), APIListen: o.APIListen}, nil
}

func caSerial(dir string) string {
	cert, err := daemon.ReadCACert(filepath.Join(dir, config.CACertFile))
	if err != nil {
		return ""
	}
	return certutil.SerialString(cert.SerialNumber)
}

// stageDirectory copies the directory password (and CA) into the data directory.
func stageDirectory(stage string, d *DirectoryOptions) (*config.Directory, error) {
	if err := os.MkdirAll(filepath.Join(stage, config.LDAPDir), 0o700); err != nil {
		return nil, err
	}
	pw, err := os.ReadFile(d.PasswordFile)
	if err != nil {
		return nil, fmt.Errorf("reading --ldap-password-file: %w", err)
	}
	if len(strings.TrimSpace(string(pw))) == 0 {
		return nil, errors.New("--ldap-password-file is empty")
	}
	if err := os.WriteFile(filepath.Join(stage, config.LDAPPassword), pw, 0o600); err != nil {
		return nil, err
	}
	out := &config.Directory{URL: d.URL, BindUser: d.BindUser, PasswordFile: config.LDAPPassword, CACN: d.CACN,
		ServerName: d.ServerName}
	if d.CAFile != "" {
		ca, err := os.ReadFile(d.CAFile)
		if err != nil {
			return nil, fmt.Errorf("reading --ldap-ca-file: %w", err)
		}
		if err := os.WriteFile(filepath.Join(stage, config.LDAPCAFile), ca, 0o644); err != nil {
			return nil, err
		}
		out.CAFile = config.LDAPCAFile
	}
	return out, nil
}
