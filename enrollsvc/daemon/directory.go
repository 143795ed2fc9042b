package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/enrollment-appliance/aeappliance/apiclient"
	"github.com/enrollment-appliance/aeappliance/config"
	"github.com/enrollment-appliance/aeappliance/enrollsvc"
	"github.com/enrollment-appliance/aeappliance/enrollsvc/policy"
	"github.com/enrollment-appliance/aeappliance/ldap"
	"github.com/enrollment-appliance/aeappliance/ldap/secdesc"
)

// redialEvery limits how often a down directory is dialled again.
const redialEvery = 5 * time.Second

// lazyDirectory connects to the directory on first use and again after a failed dial, so the
// service starts (and says why) while the DC is unreachable, and recovers when it is back.
type lazyDirectory struct {
	cfg     ldap.Config
	mu      sync.Mutex
	c       *ldap.Client
	lastErr error
	lastTry time.Time
}

func (l *lazyDirectory) client(ctx context.Context) (*ldap.Client, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.c != nil {
		return l.c, nil
	}
	if l.lastErr != nil && time.Since(l.lastTry) < redialEvery {
		return nil, l.lastErr
	}
	l.lastTry = time.Now()
	c, err := ldap.Dial(ctx, l.cfg)
	if err != nil {
		if !errors.Is(err, ldap.ErrUnavailable) {
			err = fmt.Errorf("%w: %w", ldap.ErrUnavailable, err)
		}
		l.lastErr = err
		return nil, err
	}
	l.c, l.lastErr = c, nil
	return c, nil
}

// connected is the client if one is connected, without dialling.
func (l *lazyDirectory) connected() *ldap.Client {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.c
}

func (l *lazyDirectory) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.c == nil {
		return nil
	}
	return l.c.Close()
}

func (l *lazyDirectory) Ping(ctx context.Context) error {
	c, err := l.client(ctx)
	if err != nil {
		return err
	}
	return c.Ping(ctx)
}

func (l *lazyDirectory) EnrollmentService(ctx context.Context, caCN string) (ldap.EnrollmentService, error) {
	c, err := l.client(ctx)
	if err != nil {
		return ldap.EnrollmentService{}, err
	}
	return c.EnrollmentService(ctx, caCN)
}

func (l *lazyDirectory) Templates(ctx context.Context, cns []string) ([]ldap.Entry, error) {
	c, err := l.client(ctx)
	if err != nil {
		return nil, err
	}
	return c.Templates(ctx, cns)
}

// Realm is the directory's Kerberos realm: its DNS name in capitals, as AD names it.
func (l *lazyDirectory) Realm(ctx context.Context) (string, error) {
	c, err := l.client(ctx)
	if err != nil {
		return "", err
	}
	return strings.ToUpper(c.RootDSE().DomainDNS), nil
}

func (l *lazyDirectory) Account(ctx context.Context, name string, extra ...string) (*ldap.Account, error) {
	c, err := l.client(ctx)
	if err != nil {
		return nil, err
	}
	return c.Account(ctx, name, extra...)
}

func (l *lazyDirectory) DNSNameHolders(ctx context.Context, names []string) (map[string][]string, error) {
	c, err := l.client(ctx)
	if err != nil {
		return nil, err
	}
	return c.DNSNameHolders(ctx, names)
}

func (l *lazyDirectory) UPNHolders(ctx context.Context, upns []string) (map[string][]string, error) {
	c, err := l.client(ctx)
	if err != nil {
		return nil, err
	}
	return c.UPNHolders(ctx, upns)
}

func (l *lazyDirectory) Principal(ctx context.Context, name string) (secdesc.SID, string, error) {
	c, err := l.client(ctx)
	if err != nil {
		return secdesc.SID{}, "", err
	}
	return c.Principal(ctx, name)
}

func (l *lazyDirectory) SIDNames(ctx context.Context, sids []secdesc.SID) (map[string]string, error) {
	c, err := l.client(ctx)
	if err != nil {
		return nil, err
	}
	return c.SIDNames(ctx, sids)
}

func (l *lazyDirectory) CachedSIDNames(sids []secdesc.SID) (map[string]string, bool) {
	c := l.connected()
	if c == nil {
		return nil, false
	}
	return c.CachedSIDNames(sids)
}

func (l *lazyDirectory) PublishCertificate(ctx context.Context, dn string, der []byte) error {
	c, err := l.client(ctx)
	if err != nil {
		return err
	}
	return c.PublishCertificate(ctx, dn, der)
}

func (l *lazyDirectory) UnpublishCertificate(ctx context.Context, dn string, der []byte) error {
	c, err := l.client(ctx)
	if err != nil {
		return err
	}
	return c.UnpublishCertificate(ctx, dn, der)
}

// LDAPConfig turns the data directory's directory settings into the client's configuration,
// reading the password file.
func LDAPConfig(dir string, d *config.Directory, log *slog.Logger) (ldap.Config, error) {
	pw, err := os.ReadFile(config.Path(dir, d.PasswordFile))
	if err != nil {
		return ldap.Config{}, fmt.Errorf("reading the directory password: %w", err)
	}
	cfg := ldap.Config{URL: d.URL, CAFile: config.Path(dir, d.CAFile), BindUser: d.BindUser,
		Password: strings.TrimRight(string(pw), "\r\n"), ServerName: d.ServerName, Connections: d.Connections, Logger: log}
	if d.CacheTTL != "" {
		if cfg.CacheTTL, err = time.ParseDuration(d.CacheTTL); err != nil {
			return ldap.Config{}, fmt.Errorf("directory.cache_ttl: %w", err)
		}
	}
	return cfg, nil
}

// templateSettings converts the configuration's per-template settings for policy.
func templateSettings(in map[string]config.TemplateSettings) (map[string]enrollsvc.TemplateSettings, error) {
	out := map[string]enrollsvc.TemplateSettings{}
	for name, t := range in {
		ts := enrollsvc.TemplateSettings{ExtraSubject: t.ExtraSubject}
		for _, c := range t.CustomExtensions {
			var oid []int
			for _, p := range strings.Split(c.OID, ".") {
				n, err := strconv.Atoi(p)
				if err != nil || n < 0 {
					return nil, fmt.Errorf("templates.%s: bad OID %q", name, c.OID)
				}
				oid = append(oid, n)
			}
			ts.Custom = append(ts.Custom, policy.CustomExtension{OID: oid, Attribute: c.Attribute, Encoding: c.Encoding, Critical: c.Critical})
		}
		out[name] = ts
	}
	return out, nil
}

// openDirectory wires the directory into the runtime's service, if one is configured.
func (rt *Runtime) openDirectory() error {
	d := rt.Config.Directory
	if d == nil {
		return nil
	}
	cfg, err := LDAPConfig(rt.Dir, d, rt.Log)
	if err != nil {
		return err
	}
	settings, err := templateSettings(rt.Config.Templates)
	if err != nil {
		return err
	}
	rt.directory = &lazyDirectory{cfg: cfg}
	rt.Service.WithDirectory(enrollsvc.DirectoryConfig{Dir: rt.directory, CACN: d.CACN, Settings: settings})
	return nil
}

// directoryStatus says whether the directory answers.
func (rt *Runtime) directoryStatus(ctx context.Context) apiclient.DirectoryStatus {
	d := rt.Config.Directory
	if d == nil || rt.directory == nil {
		return apiclient.DirectoryStatus{}
	}
	st := apiclient.DirectoryStatus{Configured: true, OK: true, URL: d.URL, CA: d.CACN}
	if err := rt.directory.Ping(ctx); err != nil {
		st.OK, st.Error = false, err.Error()
	} else if _, err := rt.directory.EnrollmentService(ctx, d.CACN); err != nil {
		st.OK, st.Error = false, "enrollment service "+d.CACN+": "+err.Error()
	}
	return st
}

// DirectoryStats are the directory client's cache and round-trip counters (false without a
// connected directory).
func (rt *Runtime) DirectoryStats() (ldap.CacheStats, bool) {
	if rt.directory == nil {
		return ldap.CacheStats{}, false
	}
	rt.directory.mu.Lock()
	c := rt.directory.c
	rt.directory.mu.Unlock()
	if c == nil {
		return ldap.CacheStats{}, false
	}
	return c.Stats(), true
}

// InvalidateDirectoryCache drops everything the directory client cached.
func (rt *Runtime) InvalidateDirectoryCache() {
	if rt.directory == nil {
		return
	}
	rt.directory.mu.Lock()
	defer rt.directory.mu.Unlock()
	if rt.directory.c != nil {
		rt.directory.c.Invalidate()
	}
}
