package agent

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/user"
	"path/filepath"
	"strings"
	"time"
)

// Authentication modes of Config.Auth.
const (
	AuthKerberos    = "kerberos"
	AuthPassword    = "password"
	AuthCertificate = "certificate"
)

// Contexts of Config.Context.
const (
	ContextMachine = "machine"
	ContextUser    = "user"
)

// Defaults.
const (
	DefaultInterval   = 8 * time.Hour // the Windows autoenrollment pulse
	DefaultJitter     = 30 * time.Minute
	DefaultHostKeytab = "/etc/krb5.keytab"
	DefaultMachineDir = "/var/lib/aeagent/machine"
)

// Hook is a command run after a certificate changed (installed, renewed, removed, archived).
type Hook struct {
	// Template limits the hook to one template; empty: every template.
	Template string `json:"template,omitempty"`
	// Command is the program and its arguments, run without a shell. It gets the environment
	// variables AEAGENT_EVENT (installed, removed, archived), AEAGENT_TEMPLATE, AEAGENT_SERIAL,
	// AEAGENT_CERT, AEAGENT_CHAIN and AEAGENT_KEY (paths; empty when removed).
	Command []string `json:"command"`
	// Timeout is a Go duration; default 5m.
	Timeout string `json:"timeout,omitempty"`
}

// Config is what aeagent reads from its configuration file (JSON) and flags. Paths are used as
// given; relative paths are relative to the working directory.
type Config struct {
	// Server is the certificate enrollment policy (CEP) URL, e.g.
	// https://ca.corp.example.test/ADPolicyProvider_CEP_Kerberos/service.svc/CEP.
	Server string `json:"server"`
	// Auth is kerberos (default), password or certificate. The CEP URL must be the one for it.
	Auth string `json:"auth,omitempty"`
	// Context is machine (default when run as root) or user.
	Context string `json:"context,omitempty"`

	User         string `json:"user,omitempty"`          // password: the UPN; kerberos: the principal (optional)
	PasswordFile string `json:"password_file,omitempty"` // password: file holding the password
	Keytab       string `json:"keytab,omitempty"`        // kerberos: default /etc/krb5.keytab in machine context
	CCache       string `json:"ccache,omitempty"`        // kerberos without keytab: credential cache (default $KRB5CCNAME)
	Krb5Conf     string `json:"krb5_conf,omitempty"`     // kerberos: default $KRB5_CONFIG or /etc/krb5.conf
	// CertTemplate (certificate auth) names the template whose certificate in the store
	// authenticates policy requests; default: the first valid one with client authentication.
	CertTemplate string `json:"cert_template,omitempty"`

	CAFile string `json:"ca_file,omitempty"` // PEM roots trusted for the server and for issued certificates; default: the system's
	Store  string `json:"store,omitempty"`   // certificate store directory
	// Subject is the CN put in requests (the CA builds the real subject from the directory);
	// default: the host name (machine) or the user name (user).
	Subject string `json:"subject,omitempty"`

	Interval string `json:"interval,omitempty"` // Go duration between pulses; default 8h
	Jitter   string `json:"jitter,omitempty"`   // random extra delay, up to this; default 30m
	Hooks    []Hook `json:"hooks,omitempty"`
}

// LoadConfig reads a configuration file. Unknown fields are an error, so that a misspelt setting
// is not silently ignored.
func LoadConfig(path string) (Config, error) {
	var c Config
	raw, err := os.ReadFile(path)
	if err != nil {
		return c, fmt.Errorf("reading configuration: %w", err)
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		return c, fmt.Errorf("configuration %s: %w", path, err)
	}
	return c, nil
}

// WithDefaults fills what was left empty.
func (c Config) WithDefaults() Config {
	if c.Auth == "" {
		c.Auth = AuthKerberos
	}
	if c.Context == "" {
		c.Context = ContextUser
		if os.Geteuid() == 0 {
			c.Context = ContextMachine
		}
	}
	if c.Auth == AuthKerberos && c.Keytab == "" && c.CCache == "" && c.Context == ContextMachine {
		c.Keytab = DefaultHostKeytab
	}
	if c.Store == "" {
		c.Store = defaultStore(c.Context)
	}
	if c.Interval == "" {
		c.Interval = DefaultInterval.String()
	}
	if c.Jitter == "" {
		c.Jitter = DefaultJitter.String()
	}
	return c
}

func defaultStore(context string) string {
	if context == ContextMachine {
		return DefaultMachineDir
	}
	if d := os.Getenv("XDG_DATA_HOME"); d != "" {
		return filepath.Join(d, "aeagent")
	}
	if home, err := os.UserHomeDir(); err == nil {
		return filepath.Join(home, ".local", "share", "aeagent")
	}
	return "aeagent"
}

// Validate checks the configuration (after WithDefaults) and names the bad setting.
func (c Config) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if c.Server == "" {
		bad("server: the policy server URL (CEP) is required")
	} else if u, err := url.Parse(c.Server); err != nil || u.Scheme != "https" || u.Host == "" {
		bad("server %q: want an https:// URL", c.Server)
	}
	switch c.Auth {
	case AuthKerberos:
		if c.Keytab == "" && c.CCache == "" && os.Getenv("KRB5CCNAME") == "" {
			if _, err := os.Stat(defaultCCache()); err != nil {
				bad("auth kerberos: no keytab given and no credential cache (run kinit, or give --keytab)")
			}
		}
	case AuthPassword:
		if c.User == "" {
			bad("auth password: user is required (a UPN such as alice@corp.example.test)")
		}
		if c.PasswordFile == "" {
			bad("auth password: password_file is required")
		}
	case AuthCertificate:
	default:
		bad("auth %q: want kerberos, password or certificate", c.Auth)
	}
	if c.Context != ContextMachine && c.Context != ContextUser {
		bad("context %q: want machine or user", c.Context)
	}
	if c.Store == "" {
		bad("store: a directory is required")
	}
	for _, f := range []struct{ name, v string }{{"interval", c.Interval}, {"jitter", c.Jitter}} {
		if d, err := time.ParseDuration(f.v); err != nil || d < 0 {
			bad("%s %q: want a Go duration such as 8h", f.name, f.v)
		}
	}
	if d, err := time.ParseDuration(c.Interval); err == nil && d < time.Minute {
		bad("interval %s: at least 1m", c.Interval)
	}
	for i, h := range c.Hooks {
		if len(h.Command) == 0 || h.Command[0] == "" {
			bad("hooks[%d]: command is empty", i)
		}
		if h.Timeout != "" {
			if d, err := time.ParseDuration(h.Timeout); err != nil || d <= 0 {
				bad("hooks[%d].timeout %q: want a positive Go duration", i, h.Timeout)
			}
		}
	}
	return errors.Join(errs...)
}

func defaultCCache() string {
	if v := os.Getenv("KRB5CCNAME"); v != "" {
		return strings.TrimPrefix(v, "FILE:")
	}
	return fmt.Sprintf("/tmp/krb5cc_%d", os.Getuid())
}

// subject is the CN of requests.
func (c Config) subject() string {
	if c.Subject != "" {
		return c.Subject
	}
	if c.Context == ContextMachine {
		if h, err := os.Hostname(); err == nil {
			return h
		}
		return "localhost"
	}
	if c.User != "" {
		return strings.SplitN(c.User, "@", 2)[0]
	}
	if u, err := user.Current(); err == nil {
		return u.Username
	}
	return "user"
}

func (c Config) durations() (interval, jitter time.Duration) {
	interval, _ = time.ParseDuration(c.Interval)
	jitter, _ = time.ParseDuration(c.Jitter)
	return interval, jitter
}
