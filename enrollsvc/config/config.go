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
	"os"
	"path/filepath"
	"strings"
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
)

// DefaultAPIListen is where the local API listens unless told otherwise.
const DefaultAPIListen = "127.0.0.1:8443"

// Config is config.json.
type Config struct {
	Version int    `json:"version"`
	CAName  string `json:"ca_name"`
	HSM     HSM    `json:"hsm"`
	Store   string `json:"store"`   // SQLite file
	CACert  string `json:"ca_cert"` // PEM
	API     API    `json:"api"`
	// URLs written into every certificate.
	CRLURLs      []string `json:"crl_urls,omitempty"`
	OCSPURLs     []string `json:"ocsp_urls,omitempty"`
	CAIssuerURLs []string `json:"ca_issuer_urls,omitempty"`
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
	case c.Store == "":
		return errors.New("store is empty")
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
