// Package spnego authenticates HTTP requests with Kerberos through HTTP Negotiate (SPNEGO, RFC 4559 and RFC
// 4178), for the "Kerberos" CEP/CES endpoints that domain-joined Windows machines use.
//
// It accepts only tickets for the service principals it is configured with, even when the keytab holds keys
// of other principals, and answers a successful authentication with the Kerberos AP-REP (mutual
// authentication) that MIT GSSAPI clients such as curl require. The identity it returns carries the user's and
// groups' SIDs from the ticket's PAC, as issued by the domain controller.
//
// Built on gokrb5's service side (ticket decryption, PAC decoding, replay cache); gokrb5's own HTTP wrapper is
// not used because it accepts tickets for any key in the keytab and sends no AP-REP.
package spnego

import (
	"errors"
	"fmt"
	"log"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/jcmturner/gokrb5/v8/keytab"
	"github.com/jcmturner/gokrb5/v8/service"
	"github.com/jcmturner/gokrb5/v8/types"
)

// DefaultMaxClockSkew is the skew tolerated between a client's clock and ours, as in AD's default policy.
const DefaultMaxClockSkew = 5 * time.Minute

// maxHeader bounds the Authorization header we decode. Windows' largest token (MaxTokenSize 48,000 bytes,
// users in very many groups) is 64,000 characters of base64.
const maxHeader = 96 << 10

// Config is the service side of Negotiate.
type Config struct {
	Keytab       string        // path of the service keytab (HTTP/<host>@REALM entries)
	SPNs         []string      // allowed service principals, e.g. "HTTP/localhost", "HTTP/enroll.corp.example.test"
	Realm        string        // realm of the service principals; empty: any realm in the keytab
	MaxClockSkew time.Duration // default DefaultMaxClockSkew
	Logger       *slog.Logger  // default slog.Default()
}

// Identity is an authenticated Kerberos client.
type Identity struct {
	User  string   // client principal name without realm, e.g. "alice" or "WS1$"
	Realm string   // client realm, e.g. "CORP.EXAMPLE.TEST"
	SIDs  []string // user SID and then group SIDs from the PAC, if the ticket has one
}

// Principal is User@Realm.
func (id Identity) Principal() string { return id.User + "@" + id.Realm }

// Authenticator checks Negotiate headers against a service keytab. It is safe for concurrent use.
type Authenticator struct {
	path   string
	spns   []spn
	realm  string
	skew   time.Duration
	log    *slog.Logger
	gklog  *log.Logger // gokrb5 logs through a *log.Logger (PAC decoding); routed to log at Debug
	mu     sync.RWMutex
	keytab *keytab.Keytab // only the entries of the allowed SPNs
}

// spn is an allowed service principal: its components and, if given in Config.SPNs, its realm.
type spn struct {
	components []string
	realm      string
}

func (s spn) String() string {
	if s.realm == "" {
		return strings.Join(s.components, "/")
	}
	return strings.Join(s.components, "/") + "@" + s.realm
}

// New loads the keytab and keeps only the keys of the allowed SPNs, so that a ticket for any other principal
// whose key happens to be in the file cannot be accepted.
func New(cfg Config) (*Authenticator, error) {
	if cfg.Keytab == "" {
		return nil, errors.New("spnego: Config.Keytab is empty")
	}
	if len(cfg.SPNs) == 0 {
		return nil, errors.New("spnego: Config.SPNs is empty: name the service principals to accept, e.g. HTTP/enroll.corp.example.test")
	}
	if cfg.MaxClockSkew < 0 {
		return nil, fmt.Errorf("spnego: Config.MaxClockSkew %v is negative", cfg.MaxClockSkew)
	}
	a := &Authenticator{path: cfg.Keytab, realm: cfg.Realm, skew: cfg.MaxClockSkew, log: cfg.Logger}
	if a.skew == 0 {
		a.skew = DefaultMaxClockSkew
	}
	if a.log == nil {
		a.log = slog.Default()
	}
	a.log = a.log.With("component", "spnego")
	a.gklog = slog.NewLogLogger(a.log.Handler(), slog.LevelDebug)
	for _, s := range cfg.SPNs {
		name, realm, _ := strings.Cut(s, "@")
		parts := strings.Split(name, "/")
		if len(parts) < 2 || slices.Contains(parts, "") || strings.Contains(realm, "@") ||
			strings.ContainsAny(s, " \t\r\n") {
			return nil, fmt.Errorf("spnego: Config.SPNs: %q is not a service principal like HTTP/host.example.com", s)
		}
		if realm == "" {
			realm = cfg.Realm
		}
		a.spns = append(a.spns, spn{components: parts, realm: realm})
	}
	if err := a.Reload(); err != nil {
		return nil, err
	}
	return a, nil
}

// Reload reads the keytab again, e.g. after an administrator installed a new one. On error the keys in use
// are kept.
func (a *Authenticator) Reload() error {
	full, err := keytab.Load(a.path)
	if err != nil {
		return fmt.Errorf("spnego: loading keytab %s: %w", a.path, err)
	}
	kept := keytab.New()
	var others []string
	for _, e := range full.Entries {
		if _, ok := a.allowed(e.Principal.Components, e.Principal.Realm); ok {
			kept.Entries = append(kept.Entries, e)
		} else {
			others = append(others, e.Principal.String())
		}
	}
	if len(kept.Entries) == 0 {
		return fmt.Errorf("spnego: keytab %s holds no key of the allowed service principals %v (it has %s)",
			a.path, a.spns, describe(others))
	}
	if len(others) > 0 {
		a.log.Info("keytab also holds keys of principals that are not allowed; ignoring them",
			"keytab", a.path, "ignored", uniq(others))
	}
	a.mu.Lock()
	a.keytab = kept
	a.mu.Unlock()
	return nil
}

func describe(names []string) string {
	if len(names) == 0 {
		return "no entries"
	}
	return strings.Join(uniq(names), ", ")
}

func uniq(names []string) []string {
	var out []string
	seen := map[string]bool{}
	for _, n := range names {
		if !seen[n] {
			seen[n] = true
			out = append(out, n)
		}
	}
	return out
}

// allowed reports whether a principal is one of the allowed SPNs and returns the allowed SPN. AD compares
// principal names without regard to case, so do we.
func (a *Authenticator) allowed(components []string, realm string) (spn, bool) {
	for _, s := range a.spns {
		if len(s.components) != len(components) || (s.realm != "" && !strings.EqualFold(s.realm, realm)) {
			continue
		}
		match := true
		for i := range components {
			match = match && strings.EqualFold(s.components[i], components[i])
		}
		if match {
			return s, true
		}
	}
	return spn{}, false
}

func (a *Authenticator) currentKeytab() *keytab.Keytab {
	a.mu.RLock()
	defer a.mu.RUnlock()
	return a.keytab
}

// keytabSpelling returns the keytab's own spelling of a principal that matched case-insensitively: gokrb5
// looks keys up by exact name and realm.
func keytabSpelling(kt *keytab.Keytab, components []string, realm string) (name, ktRealm string, ok bool) {
	for _, e := range kt.Entries {
		p := e.Principal
		if len(p.Components) != len(components) || !strings.EqualFold(p.Realm, realm) {
			continue
		}
		match := true
		for i := range components {
			match = match && strings.EqualFold(p.Components[i], components[i])
		}
		if match {
			return strings.Join(p.Components, "/"), p.Realm, true
		}
	}
	return "", "", false
}

// Authenticate checks the request's "Authorization: Negotiate" header. On success it returns the client's
// identity and true, having set "WWW-Authenticate: Negotiate <token>" on w (with the AP-REP when the client
// asked for mutual authentication); the caller then writes its response. Otherwise it has already written a
// 401 response with "WWW-Authenticate: Negotiate" and returns false: without a header that is the normal first
// leg of the exchange; with an unusable one the reason is logged at Warn (never the token itself).
func (a *Authenticator) Authenticate(w http.ResponseWriter, r *http.Request) (Identity, bool) {
	token, present, err := negotiateToken(r.Header)
	if !present {
		a.challenge(w)
		return Identity{}, false
	}
	if err != nil {
		a.log.Warn("Negotiate authentication refused", "remote", r.RemoteAddr, "reason", err.Error())
		a.challenge(w)
		return Identity{}, false
	}
	id, reply, err := a.accept(token, r.RemoteAddr)
	if err != nil {
		var ae *acceptError
		attrs := []any{"remote", r.RemoteAddr, "reason", err.Error()}
		if errors.As(err, &ae) {
			if ae.service != "" {
				attrs = append(attrs, "service", ae.service)
			}
			if ae.client != "" {
				attrs = append(attrs, "client", ae.client)
			}
		}
		a.log.Warn("Negotiate authentication refused", attrs...)
		a.challenge(w)
		return Identity{}, false
	}
	if reply != "" {
		w.Header().Set("WWW-Authenticate", "Negotiate "+reply)
	}
	a.log.Debug("Negotiate authentication succeeded", "remote", r.RemoteAddr, "client", id.Principal())
	return id, true
}

func (a *Authenticator) challenge(w http.ResponseWriter) {
	w.Header().Set("WWW-Authenticate", "Negotiate")
	http.Error(w, "401 Unauthorized: Kerberos (Negotiate) authentication required", http.StatusUnauthorized)
}

// acceptError says why a token was refused, with what is known of the ticket for the log.
type acceptError struct {
	service, client string
	err             error
}

func (e *acceptError) Error() string { return e.err.Error() }
func (e *acceptError) Unwrap() error { return e.err }

// settings builds gokrb5's per-request service settings.
func (a *Authenticator) settings(kt *keytab.Keytab, keytabPrincipal, remote string) *service.Settings {
	opts := []func(*service.Settings){service.Logger(a.gklog), service.MaxClockSkew(a.skew),
		service.KeytabPrincipal(keytabPrincipal)}
	if h, err := types.GetHostAddress(remote); err == nil {
		opts = append(opts, service.ClientAddress(h))
	}
	return service.NewSettings(kt, opts...)
}
