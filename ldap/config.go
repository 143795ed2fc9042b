package ldap

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"strings"
	"time"
)

// Defaults for zero Config fields.
const (
	DefaultTimeout  = 10 * time.Second
	DefaultCacheTTL = 5 * time.Minute
	// DefaultConnections is the default size of a Client's connection pool.
	DefaultConnections = 4
	maxConnections     = 64
	// PageSize is the Simple Paged Results page size of every search that can return many entries.
	PageSize = 500
)

// Config says how to reach and authenticate to a domain controller. It is plain data; Dial validates it.
type Config struct {
	// URL is ldap://host[:port] (StartTLS is always used, never plain LDAP) or ldaps://host[:port].
	URL string
	// CAFile is a PEM file with the CA certificates that may sign the DC's certificate. Empty: system roots.
	CAFile string
	// ServerName overrides the name checked in the DC's certificate (default: the URL's host).
	ServerName string
	// BindUser is the UPN or DN of the service account; it binds with a simple bind, over TLS only.
	BindUser string
	// Password of BindUser. It is never logged and never part of an error.
	Password string
	// Keytab selects a Kerberos (SASL GSSAPI) bind instead of a simple bind, as Principal ("name@REALM", or
	// "name" with Realm). KDC is host[:port] (default: the DC's host, port 88). The service principal is
	// ldap/<ServerName or URL host>, so a URL with an IP address needs ServerName. The bind runs inside TLS too.
	Keytab, Principal, Realm, KDC string
	// Timeout bounds each request, the dial and the bind (default DefaultTimeout).
	Timeout time.Duration
	// CacheTTL is how long templates, the enrollment service and accounts are served from memory:
	// 0 means DefaultCacheTTL, negative disables the cache.
	CacheTTL time.Duration
	// Connections is how many connections to the DC the Client keeps at most (default
	// DefaultConnections, at most 64): concurrent requests are spread over them, so that a DC that
	// serves each connection in turn (Samba's worker per connection; AD's per-connection request
	// queue) works on several at once and one slow answer holds up only its connection. They are
	// dialled as load asks for them.
	Connections int
	// Logger receives connection events (never credentials). Nil: slog.Default().
	Logger *slog.Logger
}

type endpoint struct {
	ldaps    bool
	hostPort string
	tls      *tls.Config
	krb      *kerberos // nil: simple bind
}

// validate fills defaults and checks the fields; errors name the bad field.
func (cfg *Config) validate() (endpoint, error) {
	var ep endpoint
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.CacheTTL == 0 {
		cfg.CacheTTL = DefaultCacheTTL
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Connections == 0 {
		cfg.Connections = DefaultConnections
	}
	if cfg.Connections < 0 || cfg.Connections > maxConnections {
		return ep, fmt.Errorf("ldap: Config.Connections %d: want 1 to %d", cfg.Connections, maxConnections)
	}
	u, err := url.Parse(cfg.URL)
	if err != nil || u.Host == "" {
		return ep, fmt.Errorf("ldap: Config.URL %q: want ldap://host[:port] or ldaps://host[:port]", cfg.URL)
	}
	switch strings.ToLower(u.Scheme) {
	case "ldap":
		ep.hostPort = hostPort(u, "389")
	case "ldaps":
		ep.ldaps = true
		ep.hostPort = hostPort(u, "636")
	default:
		return ep, fmt.Errorf("ldap: Config.URL %q: scheme must be ldap (with StartTLS) or ldaps", cfg.URL)
	}
	if u.User != nil {
		return ep, errors.New("ldap: Config.URL must not carry credentials; use BindUser and Password")
	}
	ep.tls = &tls.Config{MinVersion: tls.VersionTLS12, ServerName: cfg.ServerName}
	if ep.tls.ServerName == "" {
		ep.tls.ServerName = u.Hostname()
	}
	switch {
	case cfg.Keytab != "" && (cfg.BindUser != "" || cfg.Password != ""):
		return ep, errors.New("ldap: set either Config.BindUser and Password or Config.Keytab and Principal, not both")
	case cfg.Keytab != "":
		if ep.krb, err = newKerberos(cfg, ep.tls.ServerName); err != nil {
			return ep, err
		}
	case cfg.BindUser == "":
		return ep, errors.New("ldap: Config.BindUser is required (UPN or DN of the service account), or Config.Keytab")
	case cfg.Password == "":
		return ep, errors.New("ldap: Config.Password is required (an empty password would be an unauthenticated bind)")
	}
	if cfg.CAFile != "" {
		pem, err := os.ReadFile(cfg.CAFile)
		if err != nil {
			return ep, fmt.Errorf("ldap: Config.CAFile: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return ep, fmt.Errorf("ldap: Config.CAFile %s: no PEM certificate in it", cfg.CAFile)
		}
		ep.tls.RootCAs = pool
	}
	return ep, nil
}

func hostPort(u *url.URL, defPort string) string {
	if u.Port() != "" {
		return u.Host
	}
	return net.JoinHostPort(u.Hostname(), defPort)
}
