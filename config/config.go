// Package config defines the enrollment service's data directory: where each file lives and
// the configuration file (config.json) that init writes and serve, aectl and the appliance read.
// Paths inside the file are relative to the data directory, so a directory can be moved or
// mounted elsewhere. Config is plain data, validated once by Load.
package config

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Version is the config file format this code writes and reads.
const Version = 1

// Files inside a data directory.
const (
	File          = "config.json"
	CACertFile    = "ca.pem"
	StoreFile     = "enrollsvc.db"
	HSMDir        = "hsm"
	SoftHSMConf   = "hsm/softhsm2.conf"
	SoftHSMTokens = "hsm/tokens"
	PINFile       = "hsm/pin"
	APIDir        = "api"
	APICertFile   = "api/tls.pem"
	APIKeyFile    = "api/tls-key.pem"
	APITokenFile  = "api/admin-token"
	APIAddrFile   = "api/address" // written by serve once it listens
	// ConfinementFile is written by serve once confined: its Landlock and seccomp state, one line.
	ConfinementFile = "confinement"
	// StartupFile is written by serve once its API serves: how long each step of its start took.
	StartupFile     = "startup"
	LDAPDir         = "ldap"
	LDAPPassword    = "ldap/password" // the directory service account's password (mode 0600)
	LDAPCAFile      = "ldap/ca.pem"   // the CA that issued the domain controllers' certificates
	EnrollDir       = "enroll"
	EnrollCert      = "enroll/tls.pem"     // the enrollment web services' server certificate and chain
	EnrollKey       = "enroll/tls-key.pem" // its key
	EnrollKeytab    = "enroll/http.keytab" // the Kerberos service keytab (HTTP/<hostname>), mode 0600
	EnrollAddr      = "enroll/address"     // written by serve once the enrollment web services listen
	StoreDir        = "store"
	StoreCAFile     = "store/ca.pem"     // the CA of the PostgreSQL server's certificate
	StorePassword   = "store/password"   // the PostgreSQL role's password (mode 0600)
	StoreClientCert = "store/client.pem" // or a client certificate
	StoreClientKey  = "store/client-key.pem"
)

// DefaultAPIListen is where the local API listens unless told otherwise.
const DefaultAPIListen = "127.0.0.1:9443"

// DefaultEnrollListen is where the enrollment web services (CEP/CES) listen in development mode;
// an appliance listens on :443.
const DefaultEnrollListen = "127.0.0.1:8443"

// DefaultHTTPListen is where the plain-HTTP listener (CRLs, OCSP, AIA, SCEP) listens in
// development mode; an appliance listens on :80.
const DefaultHTTPListen = "127.0.0.1:8080"

// Config is config.json.
type Config struct {
	Version int    `json:"version"`
	CAName  string `json:"ca_name"`
	HSM     HSM    `json:"hsm"`
	Store   string `json:"store,omitempty"` // SQLite file (one appliance), or
	// Postgres is a PostgreSQL database several instances share (enrollsvc init --store-url,
	// enrollsvc join); Store is then empty.
	Postgres *Postgres `json:"postgres,omitempty"`
	// Instance names this instance among those sharing the store (default: the host name).
	Instance string `json:"instance,omitempty"`
	CACert   string `json:"ca_cert"` // PEM
	// CAChain holds the certificates above a subordinate CA, up to its root (PEM); empty for
	// a self-signed root.
	CAChain string `json:"ca_chain,omitempty"`
	API     API    `json:"api"`
	// URLs written into every certificate.
	CRLURLs      []string `json:"crl_urls,omitempty"`
	OCSPURLs     []string `json:"ocsp_urls,omitempty"`
	CAIssuerURLs []string `json:"ca_issuer_urls,omitempty"`
	// Directory is the Active Directory the templates, permissions and accounts come from.
	// Without it the service issues only what an administrator approves through the API.
	Directory *Directory `json:"directory,omitempty"`
	// Enroll is the enrollment web services (MS-XCEP policy, MS-WSTEP enrollment) for Windows
	// clients and aeagent; they need the directory.
	Enroll *Enroll `json:"enroll,omitempty"`
	// HTTP is the plain-HTTP listener for CRLs, OCSP, the CA certificate (AIA) and SCEP; nil: none.
	HTTP *HTTP `json:"http,omitempty"`
	// Templates holds per-template settings the template object in AD has no place for.
	Templates map[string]TemplateSettings `json:"templates,omitempty"`
	// TrustedProxies are the reverse proxies (addresses or CIDR prefixes) whose
	// X-Forwarded-For is believed; without them the client is the socket's peer.
	TrustedProxies []string `json:"trusted_proxies,omitempty"`
	// Limits bound what one client may ask for (nil: the defaults).
	Limits *Limits `json:"limits,omitempty"`
}

// Postgres says how to reach the shared PostgreSQL store. TLS is required: the server's
// certificate is checked against CAFile (verify-full unless the URL says verify-ca).
type Postgres struct {
	URL            string `json:"url"` // postgres://role@host:port/database, no password
	CAFile         string `json:"ca_file"`
	PasswordFile   string `json:"password_file,omitempty"`
	ClientCertFile string `json:"client_cert_file,omitempty"`
	ClientKeyFile  string `json:"client_key_file,omitempty"`
}

// Validate checks the postgres section.
func (p *Postgres) Validate() error {
	u, err := url.Parse(p.URL)
	switch {
	case err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") || u.Host == "":
		return fmt.Errorf("postgres.url %q: want postgres://ROLE@HOST[:PORT]/DATABASE", p.URL)
	case u.User != nil && func() bool { _, set := u.User.Password(); return set }():
		return errors.New("postgres.url holds a password: it belongs in postgres.password_file")
	case p.CAFile == "":
		return errors.New("postgres.ca_file is empty: TLS to the database is required")
	case p.PasswordFile == "" && p.ClientCertFile == "":
		return errors.New("postgres: a password_file or a client_cert_file is required")
	case (p.ClientCertFile == "") != (p.ClientKeyFile == ""):
		return errors.New("postgres: client_cert_file and client_key_file go together")
	}
	return nil
}

// Directory says how to reach Active Directory.
type Directory struct {
	URL          string `json:"url"`               // ldaps://dc:636 or ldap://dc:389 (StartTLS)
	CAFile       string `json:"ca_file,omitempty"` // trust for the DC's certificate (default: system roots)
	BindUser     string `json:"bind_user"`         // UPN or DN of the service account
	PasswordFile string `json:"password_file"`
	CACN         string `json:"ca_cn"`               // cn of the pKIEnrollmentService object naming the offered templates
	CacheTTL     string `json:"cache_ttl,omitempty"` // Go duration; default 5m
	// Connections is how many connections to the DC the service keeps at most (1 to 64; default
	// 4): concurrent lookups are spread over them.
	Connections int `json:"connections,omitempty"`
	// ServerName is the DC's name to check in its certificate when the URL names it
	// otherwise (an IP address, a forwarded port); default: the URL's host.
	ServerName string `json:"server_name,omitempty"`
}

// Enroll configures the enrollment web services.
type Enroll struct {
	Listen    string   `json:"listen"`
	Hostnames []string `json:"hostnames"` // names in the server certificate and in every advertised URI
	CertFile  string   `json:"cert_file"`
	KeyFile   string   `json:"key_file"`
	// TrustedRealms are Kerberos realms besides the directory's own whose tickets may enroll
	// (a trusted forest's); the account is still the one the ticket's PAC names by SID.
	TrustedRealms []string `json:"trusted_realms,omitempty"`
}

// HTTP configures the plain-HTTP listener. Revocation information and SCEP need no TLS: CRLs,
// OCSP answers and SCEP messages are signed, and devices often have no trust anchor yet.
type HTTP struct {
	Listen string `json:"listen"`
	// BaseURL is how clients reach it (http://pki.corp.example.test); the CDP, OCSP and CA
	// issuer URLs written into certificates are under it.
	BaseURL string `json:"base_url"`
}

// ValidateHTTP checks the http section, if any.
func (c *Config) ValidateHTTP() error {
	h := c.HTTP
	if h == nil {
		return nil
	}
	if _, _, err := net.SplitHostPort(h.Listen); err != nil {
		return fmt.Errorf("http.listen %q: %w", h.Listen, err)
	}
	if u, err := url.Parse(h.BaseURL); err != nil || u.Scheme != "http" || u.Host == "" || (u.Path != "" && u.Path != "/") {
		return fmt.Errorf("http.base_url %q: want http://HOST[:PORT]", h.BaseURL)
	}
	return nil
}

// TemplateSettings adds to a directory template.
type TemplateSettings struct {
	// ExtraSubject lists directory attributes added to the subject (title, givenName, sn,
	// dnQualifier, ou, ...), in this order; multi-valued attributes give several RDNs.
	ExtraSubject []string `json:"extra_subject,omitempty"`
	// CustomExtensions are private extensions whose values come from directory attributes.
	CustomExtensions []CustomExtension `json:"custom_extensions,omitempty"`
}

// CustomExtension is one private extension filled from a directory attribute.
type CustomExtension struct {
	OID       string `json:"oid"`
	Attribute string `json:"attribute"`
	// Encoding of the attribute's value in the extension: utf8string, ia5string,
	// printablestring, octetstring-hex or der-base64. There is no default: it must be explicit.
	Encoding string `json:"encoding"`
	Critical bool   `json:"critical,omitempty"`
}

// HSM says how to reach the CA key.
type HSM struct {
	Module      string `json:"module"`                 // PKCS#11 module path (absolute)
	SoftHSMConf string `json:"softhsm_conf,omitempty"` // set for SoftHSM: exported as SOFTHSM2_CONF
	TokenLabel  string `json:"token_label"`
	TokenSerial string `json:"token_serial,omitempty"`
	PINFile     string `json:"pin_file,omitempty"` // or PINEnv
	PINEnv      string `json:"pin_env,omitempty"`
	KeyURI      string `json:"key_uri"` // RFC 7512
	KeyType     string `json:"key_type"`
	Sessions    int    `json:"sessions,omitempty"`
}

// API is the local management API.
type API struct {
	Listen    string `json:"listen"`
	CertFile  string `json:"cert_file"`
	KeyFile   string `json:"key_file"`
	TokenFile string `json:"token_file"`   // the admin bearer token (mode 0600), for aectl
	TokenHash string `json:"token_sha256"` // hex SHA-256 of the token; what serve checks against
}

// Load reads and validates DIR/config.json. Relative paths stay relative; use Path to resolve.
func Load(dir string) (*Config, error) {
	p := filepath.Join(dir, File)
	b, err := os.ReadFile(p)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("%s: no configuration; is %s a data directory made by `enrollsvc init`?", p, dir)
		}
		return nil, fmt.Errorf("reading configuration: %w", err)
	}
	var c Config
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		return nil, fmt.Errorf("%s: corrupt configuration: %w", p, err)
	}
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("%s: %w", p, err)
	}
	return &c, nil
}

// Validate checks every field and names the first bad one.
func (c *Config) Validate() error {
	switch {
	case c.Version != Version:
		return fmt.Errorf("version %d: this enrollsvc reads version %d", c.Version, Version)
	case c.CAName == "":
		return errors.New("ca_name is empty")
	case c.HSM.Module == "":
		return errors.New("hsm.module is empty")
	case c.HSM.TokenLabel == "" && c.HSM.TokenSerial == "":
		return errors.New("hsm.token_label and hsm.token_serial are both empty")
	case c.HSM.PINFile == "" && c.HSM.PINEnv == "":
		return errors.New("hsm.pin_file and hsm.pin_env are both empty")
	case !strings.HasPrefix(c.HSM.KeyURI, "pkcs11:"):
		return fmt.Errorf("hsm.key_uri %q is not a pkcs11: URI", c.HSM.KeyURI)
	case c.HSM.Sessions < 0:
		return errors.New("hsm.sessions is negative")
	case c.Store == "" && c.Postgres == nil:
		return errors.New("store is empty and there is no postgres section")
	case c.Store != "" && c.Postgres != nil:
		return errors.New("store and postgres are both set: one store serves the CA")
	case c.CACert == "":
		return errors.New("ca_cert is empty")
	case c.API.CertFile == "" || c.API.KeyFile == "":
		return errors.New("api.cert_file or api.key_file is empty")
	case len(c.API.TokenHash) != 64:
		return errors.New("api.token_sha256 is not a hex SHA-256")
	}
	if _, _, err := net.SplitHostPort(c.API.Listen); err != nil {
		return fmt.Errorf("api.listen %q: %w", c.API.Listen, err)
	}
	if d := c.Directory; d != nil {
		if err := d.Validate(); err != nil {
			return err
		}
	}
	if p := c.Postgres; p != nil {
		if err := p.Validate(); err != nil {
			return err
		}
	}
	if err := c.ValidateHTTP(); err != nil {
		return err
	}
	if err := c.validateLimits(); err != nil {
		return err
	}
	if e := c.Enroll; e != nil {
		if _, _, err := net.SplitHostPort(e.Listen); err != nil {
			return fmt.Errorf("enroll.listen %q: %w", e.Listen, err)
		}
		if len(e.Hostnames) == 0 || e.CertFile == "" || e.KeyFile == "" {
			return errors.New("enroll: hostnames, cert_file and key_file are required")
		}
		if c.Directory == nil {
			return errors.New("enroll: the enrollment web services need the directory settings")
		}
		for i, r := range e.TrustedRealms {
			if r == "" || strings.ContainsAny(r, "@/ \t") {
				return fmt.Errorf("enroll.trusted_realms[%d] %q: want a Kerberos realm name (CORP.EXAMPLE.COM)", i, r)
			}
		}
	}
	for name, t := range c.Templates {
		for i, e := range t.CustomExtensions {
			if e.OID == "" || e.Attribute == "" {
				return fmt.Errorf("templates.%s.custom_extensions[%d]: oid and attribute are required", name, i)
			}
			switch e.Encoding {
			case "utf8string", "ia5string", "printablestring", "octetstring-hex", "der-base64":
			default:
				return fmt.Errorf("templates.%s.custom_extensions[%d].encoding %q: want utf8string, ia5string, printablestring, octetstring-hex or der-base64", name, i, e.Encoding)
			}
		}
	}
	return nil
}

// Validate checks the directory settings and names the first bad one.
func (d *Directory) Validate() error {
	u, err := url.Parse(d.URL)
	switch {
	case err != nil || (u.Scheme != "ldap" && u.Scheme != "ldaps") || u.Host == "":
		return fmt.Errorf("directory.url %q: want ldaps://HOST[:PORT] or ldap://HOST[:PORT] (StartTLS)", d.URL)
	case d.BindUser == "":
		return errors.New("directory.bind_user is empty")
	case d.PasswordFile == "":
		return errors.New("directory.password_file is empty")
	case d.CACN == "":
		return errors.New("directory.ca_cn is empty (the cn of the pKIEnrollmentService object)")
	}
	if d.ServerName != "" && (strings.ContainsAny(d.ServerName, "/:@ ") || len(d.ServerName) > 253) {
		return fmt.Errorf("directory.server_name %q: want the DC's DNS name", d.ServerName)
	}
	if d.Connections < 0 || d.Connections > 64 {
		return fmt.Errorf("directory.connections %d: want 1 to 64 (0: the default, 4)", d.Connections)
	}
	if d.CacheTTL != "" {
		if _, err := time.ParseDuration(d.CacheTTL); err != nil {
			return fmt.Errorf("directory.cache_ttl %q: %w", d.CacheTTL, err)
		}
	}
	return nil
}

// Write stores c as DIR/config.json (mode 0600), atomically.
func (c *Config) Write(dir string) error {
	if err := c.Validate(); err != nil {
		return fmt.Errorf("refusing to write an invalid configuration: %w", err)
	}
	b, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return err
	}
	return WriteFileAtomic(filepath.Join(dir, File), append(b, '\n'), 0o600)
}

// Path resolves a path from the config against the data directory.
func Path(dir, p string) string {
	if p == "" || filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(dir, p)
}

// SyncDir syncs directory dir, so that a file created, renamed or removed in it stays so after a
// crash (fsync(2) of the directory).
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// WriteFileAtomic writes data to a temporary file beside name, syncs it and renames it over name.
func WriteFileAtomic(name string, data []byte, mode os.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(name), "."+filepath.Base(name)+".tmp*")
	if err != nil {
		return fmt.Errorf("writing %s: %w", name, err)
	}
	tmp := f.Name()
	defer os.Remove(tmp)
	if err := f.Chmod(mode); err != nil {
		f.Close()
		return fmt.Errorf("writing %s: %w", name, err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("writing %s: %w", name, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("writing %s: %w", name, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("writing %s: %w", name, err)
	}
	if err := os.Rename(tmp, name); err != nil {
		return fmt.Errorf("writing %s: %w", name, err)
	}
	if d, err := os.Open(filepath.Dir(name)); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}

// Shared is what the instances sharing a store share: the CA's settings, recorded in the store
// by the first instance and taken by each one that joins. Files, listeners and secrets stay each
// instance's own (the directory password is given to join; LDAPCA carries the directory's CA).
type Shared struct {
	CAName         string                      `json:"ca_name"`
	KeyType        string                      `json:"key_type"`
	CRLURLs        []string                    `json:"crl_urls,omitempty"`
	OCSPURLs       []string                    `json:"ocsp_urls,omitempty"`
	CAIssuerURLs   []string                    `json:"ca_issuer_urls,omitempty"`
	Directory      *Directory                  `json:"directory,omitempty"`
	LDAPCA         string                      `json:"ldap_ca,omitempty"` // PEM of Directory.CAFile
	Enroll         *Enroll                     `json:"enroll,omitempty"`
	HTTP           *HTTP                       `json:"http,omitempty"`
	Templates      map[string]TemplateSettings `json:"templates,omitempty"`
	TrustedProxies []string                    `json:"trusted_proxies,omitempty"`
	Limits         *Limits                     `json:"limits,omitempty"`
}

// Shared returns the settings of c that every instance sharing its store takes.
func (c *Config) Shared(dir string) (Shared, error) {
	s := Shared{CAName: c.CAName, KeyType: c.HSM.KeyType, CRLURLs: c.CRLURLs, OCSPURLs: c.OCSPURLs,
		CAIssuerURLs: c.CAIssuerURLs, Directory: c.Directory, Enroll: c.Enroll, HTTP: c.HTTP, Templates: c.Templates,
		TrustedProxies: c.TrustedProxies, Limits: c.Limits}
	if d := c.Directory; d != nil && d.CAFile != "" {
		b, err := os.ReadFile(Path(dir, d.CAFile))
		if err != nil {
			return Shared{}, fmt.Errorf("the directory's CA file: %w", err)
		}
		s.LDAPCA = string(b)
	}
	return s, nil
}
