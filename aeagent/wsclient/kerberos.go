package wsclient

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jcmturner/gokrb5/v8/client"
	"github.com/jcmturner/gokrb5/v8/config"
	"github.com/jcmturner/gokrb5/v8/credentials"
	"github.com/jcmturner/gokrb5/v8/iana/nametype"
	"github.com/jcmturner/gokrb5/v8/keytab"
	"github.com/jcmturner/gokrb5/v8/spnego"
	"github.com/jcmturner/gokrb5/v8/types"
)

// KerberosAuth authenticates with Kerberos through SPNEGO (HTTP Negotiate, RFC 4559), for the
// _Kerberos endpoints: the machine context uses the host keytab (/etc/krb5.keytab), a user context
// the user's credential cache (what kinit made) or a keytab.
//
// New checks the settings and reads the files; the client logs in (AS exchange with the keytab's
// key, or the TGT of the credential cache) at its first request and reuses the login and its
// service tickets for every later request, until the TGT expires (a keytab login is renewed, a
// credential cache read again) or the server refuses a ticket (the next request logs in anew).
// Each request carries a fresh Kerberos authenticator in its Authorization header; the server's
// mutual-authentication token is not checked, as TLS has authenticated the server already.
type KerberosAuth struct {
	Keytab    string // keytab file; when set, the client logs in with the key of Principal
	Principal string // "WS1$@CORP.EXAMPLE.TEST" or "alice" (realm from krb5.conf's default_realm); with a keytab and no Principal: the first entry whose name ends in "$" (the machine account), else the first entry
	CCache    string // credential cache file when Keytab is empty; default $KRB5CCNAME (FILE: prefix stripped) or /tmp/krb5cc_<uid>
	Krb5Conf  string // default $KRB5_CONFIG or /etc/krb5.conf
	SPN       string // service principal; default "HTTP/<host of the URL>"
}

func (KerberosAuth) configure(*tls.Config) {}

// header adds nothing: the Kerberos ticket is in the HTTP Authorization header.
func (KerberosAuth) header(*bytes.Buffer, time.Time) error { return nil }

// String names the files and principals; a KerberosAuth holds no key, nor does its String.
func (a KerberosAuth) String() string {
	var parts []string
	for _, f := range []struct{ name, value string }{{"Keytab", a.Keytab}, {"Principal", a.Principal},
		{"CCache", a.CCache}, {"Krb5Conf", a.Krb5Conf}, {"SPN", a.SPN}} {
		if f.value != "" {
			parts = append(parts, f.name+": "+strconv.Quote(f.value))
		}
	}
	return "KerberosAuth{" + strings.Join(parts, ", ") + "}"
}

// GoString is String (%#v).
func (a KerberosAuth) GoString() string { return a.String() }

// negotiateAuth is an Auth that authenticates each HTTP request, with state kept per Client.
type negotiateAuth interface {
	// negotiator checks the settings, reads the files and returns the Client's state.
	negotiator() (*negotiator, error)
}

// negotiator checks the settings and reads the keytab or credential cache (without logging in).
func (a KerberosAuth) negotiator() (*negotiator, error) {
	n := &negotiator{spn: a.SPN}
	if strings.Contains(a.SPN, "@") {
		return nil, fmt.Errorf("wsclient: KerberosAuth SPN %q: give the service principal without a realm (HTTP/host)", a.SPN)
	}
	if a.SPN != "" && !strings.Contains(a.SPN, "/") {
		return nil, fmt.Errorf("wsclient: KerberosAuth SPN %q is not a service principal (HTTP/host)", a.SPN)
	}
	conf, err := loadKrb5Conf(a.Krb5Conf)
	if err != nil {
		return nil, err
	}
	n.conf = conf
	if a.Keytab != "" {
		if a.CCache != "" {
			return nil, errors.New("wsclient: KerberosAuth with both a keytab and a credential cache: give one")
		}
		if err := n.useKeytab(a.Keytab, a.Principal); err != nil {
			return nil, err
		}
		return n, nil
	}
	n.ccache = ccachePath(a.CCache)
	if n.ccache == "" {
		return nil, fmt.Errorf("wsclient: KerberosAuth: credential cache %q is not a file cache (FILE:), the only kind read here", os.Getenv("KRB5CCNAME"))
	}
	if a.Principal != "" {
		n.name, n.realm = n.principal(a.Principal)
	}
	if _, _, err := n.loadCCache(); err != nil {
		return nil, err
	}
	return n, nil
}

// loadKrb5Conf reads path, or $KRB5_CONFIG (its first file that exists), or /etc/krb5.conf.
func loadKrb5Conf(path string) (*config.Config, error) {
	if path == "" {
		path = "/etc/krb5.conf"
		if env := os.Getenv("KRB5_CONFIG"); env != "" {
			list := filepath.SplitList(env)
			path = list[0]
			for _, p := range list {
				if _, err := os.Stat(p); err == nil {
					path = p
					break
				}
			}
		}
	}
	if _, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("wsclient: Kerberos configuration %s: %v", path, fileError(err))
	}
	conf, err := config.Load(path)
	var unsupported config.UnsupportedDirective
	if err != nil && !errors.As(err, &unsupported) { // directives gokrb5 does not know are ignored
		return nil, fmt.Errorf("wsclient: Kerberos configuration %s: %v", path, err)
	}
	return conf, nil
}

// fileError is err without the path (*fs.PathError), for messages that name the file already.
func fileError(err error) error {
	if pe, ok := errors.AsType[*fs.PathError](err); ok {
		return pe.Err
	}
	return err
}

// ccachePath is the file of a credential cache: path, or $KRB5CCNAME (a FILE: cache, or a path), or
// /tmp/krb5cc_<uid>. It is "" when $KRB5CCNAME names another kind of cache (KEYRING:, KCM:, DIR:...).
func ccachePath(path string) string {
	if path != "" {
		return path
	}
	env := os.Getenv("KRB5CCNAME")
	if env == "" {
		return "/tmp/krb5cc_" + strconv.Itoa(os.Getuid())
	}
	if rest, ok := strings.CutPrefix(env, "FILE:"); ok {
		return rest
	}
	if i := strings.IndexByte(env, ':'); i > 0 && !strings.ContainsRune(env[:i], '/') {
		return "" // TYPE:residual of a kind that is not a file
	}
	return env
}

// negotiator is a Client's Kerberos state: the credentials read by New and the gokrb5 client
// logged in with them, shared by the Client's requests.
type negotiator struct {
	conf   *config.Config
	spn    string // fixed service principal, or "": HTTP/<host of each URL>
	keytab *keytab.Keytab
	ktPath string
	ccache string              // credential cache file, without a keytab
	name   types.PrincipalName // the client principal: whose key, or whose cache (empty: the cache's)
	realm  string

	mu     sync.Mutex
	cl     *client.Client // nil until the first request and after a refusal
	until  time.Time      // with a credential cache: when its TGT expires
	last   time.Time      // when the last token was made
	logins int            // logins and cache reads, for tests
}

// principal parses "name@REALM" or "name" (the default realm).
func (n *negotiator) principal(s string) (types.PrincipalName, string) {
	name, realm := s, n.conf.LibDefaults.DefaultRealm
	if i := strings.LastIndexByte(s, '@'); i >= 0 {
		name, realm = s[:i], s[i+1:]
	}
	return types.NewPrincipalName(nametype.KRB_NT_PRINCIPAL, name), realm
}

// useKeytab reads the keytab and picks the client principal from it.
func (n *negotiator) useKeytab(path, principal string) error {
	kt, err := keytab.Load(path)
	if err != nil {
		return fmt.Errorf("wsclient: keytab %s: %v", path, fileError(err))
	}
	if len(kt.Entries) == 0 {
		return fmt.Errorf("wsclient: keytab %s holds no key", path)
	}
	n.keytab, n.ktPath = kt, path
	var have []string // principal names only: a keytab's String shows its keys
	for _, e := range kt.Entries {
		if p := strings.Join(e.Principal.Components, "/") + "@" + e.Principal.Realm; !slices.Contains(have, p) {
			have = append(have, p)
		}
	}
	if principal == "" {
		e := kt.Entries[0]
		for _, c := range kt.Entries {
			if len(c.Principal.Components) == 1 && strings.HasSuffix(c.Principal.Components[0], "$") {
				e = c
				break
			}
		}
		n.name = types.NewPrincipalName(nametype.KRB_NT_PRINCIPAL, strings.Join(e.Principal.Components, "/"))
		n.realm = e.Principal.Realm
	} else if n.name, n.realm = n.principal(principal); n.realm == "" {
		return fmt.Errorf("wsclient: KerberosAuth principal %q has no realm and the Kerberos configuration no default_realm", principal)
	}
	who := n.who()
	if !slices.Contains(have, who) {
		return fmt.Errorf("wsclient: keytab %s holds no key of %s (it has %s)", path, who, strings.Join(have, ", "))
	}
	for _, e := range kt.Entries {
		if strings.Join(e.Principal.Components, "/")+"@"+e.Principal.Realm == who &&
			slices.Contains(n.conf.LibDefaults.DefaultTktEnctypeIDs, e.Key.KeyType) {
			return nil
		}
	}
	return fmt.Errorf("wsclient: keytab %s holds no key of %s of an encryption type the Kerberos configuration allows (default_tkt_enctypes)", path, who)
}

// who is the client principal as text.
func (n *negotiator) who() string { return n.name.PrincipalNameString() + "@" + n.realm }

// loadCCache reads the credential cache: a client with its TGT, and when that TGT expires.
func (n *negotiator) loadCCache() (*client.Client, time.Time, error) {
	cc, err := readCCache(n.ccache)
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("wsclient: Kerberos credential cache %s: %v", n.ccache, fileError(err))
	}
	if len(n.name.NameString) > 0 { // a Principal was asked for; without a realm, any
		got := cc.GetClientPrincipalName().PrincipalNameString() + "@" + cc.GetClientRealm()
		if got != n.who() && (n.realm != "" || !strings.HasPrefix(got, n.who())) {
			return nil, time.Time{}, fmt.Errorf("wsclient: Kerberos credential cache %s is %s's, not %s's", n.ccache, got, n.who())
		}
	}
	tgt, ok := cc.GetEntry(types.NewPrincipalName(nametype.KRB_NT_SRV_INST, "krbtgt/"+cc.GetClientRealm()))
	if !ok {
		return nil, time.Time{}, fmt.Errorf("wsclient: Kerberos credential cache %s holds no ticket-granting ticket of %s (run kinit)", n.ccache, cc.GetClientRealm())
	}
	cl, err := client.NewFromCCache(cc, n.conf, client.DisablePAFXFAST(true))
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("wsclient: Kerberos credential cache %s: %v", n.ccache, err)
	}
	return cl, tgt.EndTime, nil
}

// readCCache reads a credential cache file. gokrb5's parser panics on some malformed files
// (lengths past the end): that is an error here.
func readCCache(path string) (cc *credentials.CCache, err error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	defer func() {
		if recover() != nil {
			cc, err = nil, errors.New("not a credential cache: malformed")
		}
	}()
	cc = new(credentials.CCache)
	if err := cc.Unmarshal(b); err != nil {
		return nil, err
	}
	return cc, nil
}

// servicePrincipal is the SPN for a request to host: the configured one or HTTP/<host>.
func (n *negotiator) servicePrincipal(host string) (string, error) {
	if n.spn != "" {
		return n.spn, nil
	}
	host = strings.ToLower(strings.TrimSuffix(host, "."))
	if host == "" || net.ParseIP(host) != nil {
		return "", fmt.Errorf("wsclient: Kerberos needs the server's host name in the URL, not %q (or KerberosAuth.SPN)", host)
	}
	return "HTTP/" + host, nil
}

// authorize sets the request's Authorization header to a Negotiate token for the server of its URL.
func (n *negotiator) authorize(ctx context.Context, r *http.Request) error {
	spn, err := n.servicePrincipal(r.URL.Hostname())
	if err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("wsclient: %w", err)
	}
	// gokrb5 exchanges with the KDC without a context; the lock keeps to one login at a time.
	n.mu.Lock()
	defer n.mu.Unlock()
	if err := n.login(time.Now()); err != nil {
		return err
	}
	// An authenticator is told from another by its time in microseconds: a server's replay cache
	// refuses a second one of the same microsecond, so the next one is made 2 µs after the last.
	if d := time.Since(n.last); d < 2*time.Microsecond {
		time.Sleep(2*time.Microsecond - d)
	}
	err = spnego.SetSPNEGOHeader(n.cl, r, spn)
	n.last = time.Now() // after the authenticator's time
	if err != nil {
		return fmt.Errorf("wsclient: Kerberos ticket of %s for %s: %v", n.cl.Credentials.UserName(), spn, err)
	}
	return nil
}

// login logs in unless the current login is usable. A keytab login renews itself (gokrb5 renews
// or repeats the AS exchange as its TGT nears its end); a credential cache is read again when its
// TGT has expired, to pick up what kinit (or sssd, or k5start) has put there since. Each login
// reads its file anew. Call with n.mu held.
func (n *negotiator) login(now time.Time) error {
	if n.cl != nil && (n.keytab != nil || now.Before(n.until.Add(-time.Minute))) {
		return nil
	}
	n.drop()
	n.logins++
	if n.keytab == nil {
		cl, until, err := n.loadCCache()
		if err != nil {
			return err
		}
		if !now.Before(until.Add(-time.Minute)) {
			cl.Destroy()
			return fmt.Errorf("wsclient: the Kerberos tickets in %s expired at %s: run kinit again", n.ccache, until.Local().Format(time.DateTime))
		}
		n.cl, n.until = cl, until
		return nil
	}
	if kt, err := keytab.Load(n.ktPath); err == nil {
		n.keytab = kt // a key rotated since (adcli, sssd, a new export) replaces the one New read
	}
	cl := client.NewWithKeytab(n.name.PrincipalNameString(), n.realm, n.keytab, n.conf, client.DisablePAFXFAST(true))
	if err := cl.Login(); err != nil {
		cl.Destroy()
		return fmt.Errorf("wsclient: Kerberos login of %s with keytab %s: %v", n.who(), n.ktPath, err)
	}
	n.cl = cl
	return nil
}

// drop forgets the login (and stops gokrb5's renewal of it). Call with n.mu held.
func (n *negotiator) drop() {
	if n.cl != nil {
		n.cl.Destroy()
		n.cl = nil
	}
}

// refused is told of a 401 Negotiate reply: the server did not take the ticket (a new service key,
// a ticket it saw as a replay...), so the next request logs in and gets new tickets.
func (n *negotiator) refused() {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.drop()
}

// close ends the login when its Client is unreachable (runtime.AddCleanup).
func (n *negotiator) close() { n.refused() }
