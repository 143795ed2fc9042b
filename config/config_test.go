package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func validConfig() *Config {
	return &Config{Version: Version, CAName: "CA", Store: StoreFile, CACert: CACertFile,
		HSM: HSM{Module: "/m.so", TokenLabel: "t", PINFile: PINFile, KeyURI: "pkcs11:object=k;id=%01"},
		API: API{Listen: DefaultAPIListen, CertFile: APICertFile, KeyFile: APIKeyFile, TokenFile: APITokenFile,
			TokenHash: strings.Repeat("ab", 32)}}
}

func TestWriteLoadRoundTrip(t *testing.T) {
	dir := t.TempDir()
	c := validConfig()
	if err := c.Write(dir); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(dir, File))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("config file mode = %v, %v; want 0600", fi.Mode(), err)
	}
	got, err := Load(dir)
	if err != nil || got.HSM.KeyURI != c.HSM.KeyURI || got.API.TokenHash != c.API.TokenHash {
		t.Errorf("Load = %+v, %v; want what was written", got, err)
	}
}

func TestValidateNamesTheBadField(t *testing.T) {
	for _, tc := range []struct {
		field  string
		mangle func(c *Config)
	}{
		{"version", func(c *Config) { c.Version = 99 }},
		{"ca_name", func(c *Config) { c.CAName = "" }},
		{"hsm.module", func(c *Config) { c.HSM.Module = "" }},
		{"hsm.token_label", func(c *Config) { c.HSM.TokenLabel = "" }},
		{"hsm.pin_file", func(c *Config) { c.HSM.PINFile = "" }},
		{"hsm.key_uri", func(c *Config) { c.HSM.KeyURI = "label=x" }},
		{"api.token_sha256", func(c *Config) { c.API.TokenHash = "abc" }},
		{"api.listen", func(c *Config) { c.API.Listen = "localhost" }},
		{"directory.url", func(c *Config) {
			c.Directory = &Directory{URL: "http://dc", BindUser: "u", PasswordFile: "p", CACN: "CA"}
		}},
		{"directory.ca_cn", func(c *Config) { c.Directory = &Directory{URL: "ldaps://dc", BindUser: "u", PasswordFile: "p"} }},
		{"directory.cache_ttl", func(c *Config) {
			c.Directory = &Directory{URL: "ldap://dc", BindUser: "u", PasswordFile: "p", CACN: "CA", CacheTTL: "soon"}
		}},
		{"directory.connections", func(c *Config) {
			c.Directory = &Directory{URL: "ldap://dc", BindUser: "u", PasswordFile: "p", CACN: "CA", Connections: 65}
		}},
		{"directory.server_name", func(c *Config) {
			c.Directory = &Directory{URL: "ldap://10.0.0.1", BindUser: "u", PasswordFile: "p", CACN: "CA", ServerName: "dc1/x"}
		}},
		{"encoding", func(c *Config) {
			c.Templates = map[string]TemplateSettings{"T": {CustomExtensions: []CustomExtension{{OID: "1.2.3", Attribute: "a", Encoding: "guess"}}}}
		}},
		{"trusted_proxies[1]", func(c *Config) { c.TrustedProxies = []string{"10.0.0.0/8", "proxy.example"} }},
		{"limits.ocsp_per_source", func(c *Config) { c.Limits = &Limits{OCSPPerSource: &RateLimit{PerMinute: 0, Burst: 5}} }},
		{"limits.password.lockout_margin", func(c *Config) { c.Limits = &Limits{Password: &PasswordLimits{LockoutMargin: -1}} }},
		{"limits.password.policy_refresh", func(c *Config) { c.Limits = &Limits{Password: &PasswordLimits{PolicyRefresh: "hourly"}} }},
	} {
		c := validConfig()
		tc.mangle(c)
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), tc.field) {
			t.Errorf("Validate with bad %s = %v, want an error naming it", tc.field, err)
		}
	}
}

func TestLoadRejectsUnknownAndCorrupt(t *testing.T) {
	dir := t.TempDir()
	if _, err := Load(dir); err == nil || !strings.Contains(err.Error(), "enrollsvc init") {
		t.Errorf("Load(empty dir) = %v, want a hint to run enrollsvc init", err)
	}
	os.WriteFile(filepath.Join(dir, File), []byte(`{"version":1,"surprise":true}`), 0o600)
	if _, err := Load(dir); err == nil || !strings.Contains(err.Error(), "corrupt") {
		t.Errorf("Load(unknown field) = %v, want a corrupt-configuration error", err)
	}
}

// Missing limits take the defaults; what config.json sets is kept.
func TestLimitsOrDefault(t *testing.T) {
	c := validConfig()
	l := c.LimitsOrDefault()
	if *l.EnrollPerSource != DefaultEnrollPerSource || *l.Password != DefaultPasswordLimits {
		t.Errorf("LimitsOrDefault() without limits = %+v, want the defaults", l)
	}
	c.Limits = &Limits{SCEPPerSource: &RateLimit{PerMinute: 5, Burst: 1}, Password: &PasswordLimits{LockoutMargin: 3}}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	l = c.LimitsOrDefault()
	if *l.SCEPPerSource != (RateLimit{PerMinute: 5, Burst: 1}) || l.Password.LockoutMargin != 3 ||
		l.Password.NoLockoutCap != DefaultPasswordLimits.NoLockoutCap || *l.OCSPPerSource != DefaultOCSPPerSource {
		t.Errorf("LimitsOrDefault() = %+v, %+v; want the configured SCEP limit and margin, the rest defaults", l, *l.Password)
	}
}
