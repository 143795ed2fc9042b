// Package webenroll serves the Windows enrollment web services over HTTPS: the certificate
// enrollment policy service (MS-XCEP, "CEP") and the certificate enrollment service (MS-WSTEP,
// "CES"), at the paths AD CS uses so that clients which build the URL themselves find them. It
// authenticates the caller, turns the SOAP message into a core call (Policies, Enroll, Poll) and
// the answer back into SOAP; the message formats are in soap, xcep, wstep and cmc.
//
// The account a request is for is always the authenticated caller, never what the message says.
// This slice serves the username/password endpoints (WS-Security UsernameToken, checked by an
// LDAP bind as that user, refused over plain HTTP), the Kerberos endpoints (HTTP Negotiate with the
// appliance's service keytab) and the client-certificate endpoints (a TLS
// client certificate this CA issued and has not revoked; their CES takes renewals only). A renewal
// (signed with the key of a certificate this CA issued) is for that certificate's account.
package webenroll

import (
	"context"
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/enrollment-appliance/aeappliance/enrollsvc"
	"github.com/enrollment-appliance/aeappliance/enrollsvc/events"
	"github.com/enrollment-appliance/aeappliance/enrollsvc/spnego"
	"github.com/enrollment-appliance/aeappliance/ldap"
	"github.com/enrollment-appliance/aeappliance/ldap/secdesc"
	"github.com/enrollment-appliance/aeappliance/proto/soap"
	"github.com/enrollment-appliance/aeappliance/ratelimit"
)

// Core is what the web services need of the enrollment core.
type Core interface {
	Policies(ctx context.Context, account string) (*enrollsvc.PolicySet, error)
	Enroll(ctx context.Context, er enrollsvc.EnrollRequest) (*enrollsvc.EnrollResult, error)
	Poll(ctx context.Context, id int64, account string) (*enrollsvc.EnrollResult, error)
	Renew(ctx context.Context, rr enrollsvc.RenewRequest) (*enrollsvc.EnrollResult, error)
	CertificateAccount(ctx context.Context, c *x509.Certificate) (account, name string, err error)
}

// Negotiator authenticates HTTP Negotiate (Kerberos/SPNEGO). When it returns false it has
// written the answer (a 401 challenge, or 503 when no keytab is installed).
type Negotiator interface {
	Authenticate(w http.ResponseWriter, r *http.Request) (spnego.Identity, bool)
	Ready() bool // a keytab is installed: advertise the Kerberos endpoints
}

// PasswordVerifier checks a user's password (an LDAP bind as that user, user@domain or
// DOMAIN\user) and returns the SID of the account the domain controller authenticated.
type PasswordVerifier interface {
	Authenticate(ctx context.Context, user, password string) (secdesc.SID, error)
}

// Config wires the web services.
type Config struct {
	Core      Core
	Passwords PasswordVerifier
	Kerberos  Negotiator // nil: no Kerberos endpoints
	// KerberosRealms returns the client realms whose tickets may enroll: the directory's own,
	// and those an administrator trusts. A ticket from any other realm is refused, however its
	// client is named. Required with Kerberos.
	KerberosRealms func(ctx context.Context) ([]string, error)
	// Recorder writes the audit events of refused authentications (nil: logged only).
	Recorder *events.Recorder
	CACert   *x509.Certificate
	// Exchange returns the CA exchange certificate clients encrypt the keys they archive to
	// (MS-WSTEP Key Exchange Token); nil: not offered.
	Exchange func(ctx context.Context) (*x509.Certificate, error)
	CAName   string   // the CA's name in the CES paths (<CA>_CES_<auth>)
	BaseURLs []string // https://host[:port] for each configured host name, in order of preference
	// Peers, when set, returns the base URLs of the other live instances of this CA (a shared
	// store), listed in the policy after this instance's with greater priority numbers, so that
	// clients try them when this one is down (MS-XCEP 3.1.4.1.3.3, CAURI priority).
	Peers func(ctx context.Context) []string
	// CMCSigner signs the CMC responses of issued requests, as AD CS does with the CA key.
	CMCSigner crypto.Signer
	Logger    *slog.Logger
	Now       func() time.Time
	// PolicyID identifies this policy server (a GUID, stable for the data directory).
	PolicyID string
	// Proxies are the reverse proxies whose X-Forwarded-For names the client (nil: the
	// client is the socket's peer).
	Proxies ratelimit.Proxies
	// PerSource limits requests per client address, PerAccount per authenticated account
	// (nil: no limit). Refusals are SOAP faults with HTTP 429 and Retry-After.
	PerSource, PerAccount *ratelimit.Limiter
}

// Paths of the policy endpoints, as AD CS names them.
const (
	CEPPasswordPath    = "/ADPolicyProvider_CEP_UsernamePassword/service.svc/CEP"
	CEPCertificatePath = "/ADPolicyProvider_CEP_Certificate/service.svc/CEP"
	CEPKerberosPath    = "/ADPolicyProvider_CEP_Kerberos/service.svc/CEP"
)

// CESPath is the CES endpoint path for a CA name and authentication mode name.
func CESPath(caName, auth string) string {
	return "/" + url.PathEscape(caName) + "_CES_" + auth + "/service.svc/CES"
}

// Server is the web services' HTTP handler.
type Server struct {
	cfg    Config
	routes map[string]http.HandlerFunc // by unescaped path: CA names may hold spaces
}

// New validates cfg and builds the handler.
func New(cfg Config) (*Server, error) {
	switch {
	case cfg.Core == nil || cfg.Passwords == nil || cfg.CACert == nil:
		return nil, errors.New("webenroll: Config needs Core, Passwords and CACert")
	case cfg.CAName == "" || len(cfg.BaseURLs) == 0 || cfg.PolicyID == "":
		return nil, errors.New("webenroll: Config needs CAName, BaseURLs and PolicyID")
	case cfg.Kerberos != nil && cfg.KerberosRealms == nil:
		return nil, errors.New("webenroll: Config needs KerberosRealms with Kerberos")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	s := &Server{cfg: cfg, routes: map[string]http.HandlerFunc{}}
	policies, enroll := s.perAccount(s.getPolicies), s.perAccount(s.enroll)
	s.routes[CEPPasswordPath] = s.password(policies)
	s.routes["/"+cfg.CAName+"_CES_UsernamePassword/service.svc/CES"] = s.password(enroll)
	if cfg.Kerberos != nil {
		s.routes[CEPKerberosPath] = s.kerberos(policies)
		s.routes["/"+cfg.CAName+"_CES_Kerberos/service.svc/CES"] = s.kerberos(enroll)
	}
	s.routes[CEPCertificatePath] = s.certificate(policies)
	s.routes["/"+cfg.CAName+"_CES_Certificate/service.svc/CES"] = s.certificate(enroll)
	return s, nil
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h, ok := s.routes[r.URL.Path]
	if !ok {
		http.NotFound(w, r)
		return
	}
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		http.Error(w, "SOAP endpoints take POST", http.StatusMethodNotAllowed)
		return
	}
	client := s.cfg.Proxies.Rewrite(r)
	if s.cfg.PerSource != nil {
		if d := s.cfg.PerSource.Allow(ratelimit.SourceKey(client)); !d.Allowed {
			s.limited(w, r, d, events.RateLimited, "too many requests from "+client.String(), "source", client.String())
			return
		}
	}
	h(w, r)
}

// perAccount limits the requests of each authenticated account.
func (s *Server) perAccount(next handler) handler {
	if s.cfg.PerAccount == nil {
		return next
	}
	return func(w http.ResponseWriter, c caller) {
		if d := s.cfg.PerAccount.Allow(c.account); !d.Allowed {
			s.limited(w, c.r, d, events.RateLimited, "too many requests for this account", "account", c.who())
			return
		}
		next(w, c)
	}
}

// limited answers a request a limit refused: a Sender fault with HTTP 429 and Retry-After
// (RFC 6585 §4), recorded as event id once per key and window.
func (s *Server) limited(w http.ResponseWriter, r *http.Request, d ratelimit.Decision, id events.ID, reason string, kv ...any) {
	s.cfg.Recorder.Limited(r.Context(), id, d, append(kv, "service", "enroll", "remote", r.RemoteAddr, "path", r.URL.Path)...)
	w.Header().Set("Retry-After", ratelimit.RetryAfterSeconds(d.RetryAfter))
	s.fault(w, http.StatusTooManyRequests, true, "", reason+"; try again in "+ratelimit.RetryAfterSeconds(d.RetryAfter)+" s", nil)
}

// caller is an authenticated request.
type caller struct {
	account   string // how the core finds the account: a name, or ldap.SIDAccount for Kerberos
	requester string // who authenticated, for the request's record; empty: account
	env       *soap.Envelope
	r         *http.Request
	// certificate: authenticated with a client certificate; its CES endpoint takes renewals only.
	certificate bool
}

// who is the requester recorded with the caller's requests.
func (c caller) who() string {
	if c.requester != "" {
		return c.requester
	}
	return c.account
}

type handler func(w http.ResponseWriter, c caller)

// password authenticates the UsernameToken of the SOAP header with an LDAP bind.
func (s *Server) password(next handler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.TLS == nil {
			s.fault(w, http.StatusForbidden, true, "", "passwords are accepted over TLS only", nil)
			return
		}
		env, err := soap.Parse(http.MaxBytesReader(w, r.Body, soap.MaxBody))
		if err != nil {
			s.fault(w, http.StatusBadRequest, true, "", "malformed SOAP message: "+err.Error(), nil)
			return
		}
		tok := env.UsernameToken
		if tok == nil || tok.Username == "" {
			s.fault(w, http.StatusUnauthorized, true, env.MessageID, "a WS-Security UsernameToken is required on this endpoint", nil)
			return
		}
		if tok.PasswordType != "" && tok.PasswordType != soap.PasswordText {
			s.fault(w, http.StatusUnauthorized, true, env.MessageID, "only #PasswordText passwords are accepted (over TLS)", nil)
			return
		}
		sid, err := s.cfg.Passwords.Authenticate(r.Context(), tok.Username, tok.Password)
		var stopped *ldap.PasswordsStopped
		if errors.As(err, &stopped) {
			s.cfg.Logger.WarnContext(r.Context(), "enrollment web service password attempt refused without a bind", "user", tok.Username,
				"remote", r.RemoteAddr, "account", stopped.Account, "error", err)
			s.limited(w, r, stopped.Decision, events.PasswordStopped,
				"too many wrong passwords for this account: further attempts are refused before the domain locks it out",
				"user", tok.Username, "account", stopped.Account, "threshold", stopped.Threshold)
			return
		}
		if err != nil {
			code, msg := http.StatusUnauthorized, "authentication failed"
			if errors.Is(err, ldap.ErrUnavailable) {
				code, msg = http.StatusServiceUnavailable, "the directory is unavailable; try again later"
			}
			s.cfg.Logger.WarnContext(r.Context(), "enrollment web service authentication failed", "user", tok.Username,
				"remote", r.RemoteAddr, "path", r.URL.Path, "error", err)
			s.fault(w, code, code != http.StatusServiceUnavailable, env.MessageID, msg, nil)
			return
		}
		// The account the DC authenticated, by its SID: not the name the client sent, which
		// the DC may resolve differently than a search would.
		next(w, caller{account: ldap.SIDAccount(sid), requester: tok.Username, env: env, r: r})
	}
}

// kerberos authenticates HTTP Negotiate. The caller is the account the ticket's PAC names by
// its SID (MS-PAC 2.5: LogonDomainId + UserId), never the client name, which a foreign realm
// chooses freely; a ticket from a realm this CA does not trust, or without a PAC, is refused.
func (s *Server) kerberos(next handler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		id, ok := s.cfg.Kerberos.Authenticate(w, r)
		if !ok {
			return
		}
		realms, err := s.cfg.KerberosRealms(r.Context())
		if err != nil {
			s.cfg.Logger.WarnContext(r.Context(), "the directory's realm is unknown", "error", err)
			s.fault(w, http.StatusServiceUnavailable, false, "", "the directory is unavailable; try again later", nil)
			return
		}
		sid, err := kerberosAccount(id, realms)
		if err != nil {
			s.authRefused(w, r, "kerberos", id.Principal(), err)
			return
		}
		env, err := soap.Parse(http.MaxBytesReader(w, r.Body, soap.MaxBody))
		if err != nil {
			s.fault(w, http.StatusBadRequest, true, "", "malformed SOAP message: "+err.Error(), nil)
			return
		}
		next(w, caller{account: ldap.SIDAccount(sid), requester: id.Principal(), env: env, r: r})
	}
}

// kerberosAccount is the SID of the account a ticket authenticated, if its realm is one of
// realms and it carries a PAC.
func kerberosAccount(id spnego.Identity, realms []string) (secdesc.SID, error) {
	if !slices.ContainsFunc(realms, func(r string) bool { return strings.EqualFold(r, id.Realm) }) {
		return secdesc.SID{}, fmt.Errorf("Kerberos realm %s is not trusted by this CA (trusted: %s)", id.Realm, strings.Join(realms, ", "))
	}
	if len(id.SIDs) == 0 {
		return secdesc.SID{}, errors.New("the Kerberos ticket carries no PAC: the account it names cannot be verified")
	}
	sid, err := secdesc.ParseSID(id.SIDs[0])
	if err != nil {
		return secdesc.SID{}, fmt.Errorf("the ticket's PAC: %w", err)
	}
	return sid, nil
}

// authRefused answers a refused authentication with a SOAP fault and records it.
func (s *Server) authRefused(w http.ResponseWriter, r *http.Request, mode, who string, err error) {
	s.cfg.Logger.WarnContext(r.Context(), "enrollment web service authentication refused", "mode", mode, "user", who,
		"remote", r.RemoteAddr, "path", r.URL.Path, "error", err)
	if s.cfg.Recorder != nil {
		_ = s.cfg.Recorder.Record(r.Context(), events.EnrollAuthRefused, "", "mode", mode, "user", who,
			"remote", r.RemoteAddr, "path", r.URL.Path, "reason", err.Error()) // Record logs its own failure
	}
	s.fault(w, http.StatusUnauthorized, true, "", "authentication refused: "+err.Error(), nil)
}

// certificate authenticates the TLS client certificate: one this CA issued and has neither
// revoked nor seen expire. The caller is the account it was issued to.
func (s *Server) certificate(next handler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
			s.fault(w, http.StatusUnauthorized, true, "", "this endpoint needs a TLS client certificate issued by this CA", nil)
			return
		}
		account, name, err := s.cfg.Core.CertificateAccount(r.Context(), r.TLS.PeerCertificates[0])
		if err != nil {
			s.cfg.Logger.WarnContext(r.Context(), "enrollment web service certificate authentication failed",
				"remote", r.RemoteAddr, "path", r.URL.Path, "error", err)
			code := http.StatusUnauthorized
			if enrollsvc.KindOf(err) == enrollsvc.KindInternal {
				code = http.StatusInternalServerError
			}
			s.fault(w, code, code == http.StatusUnauthorized, "", "client certificate refused: "+err.Error(), nil)
			return
		}
		env, err := soap.Parse(http.MaxBytesReader(w, r.Body, soap.MaxBody))
		if err != nil {
			s.fault(w, http.StatusBadRequest, true, "", "malformed SOAP message: "+err.Error(), nil)
			return
		}
		next(w, caller{account: account, requester: name, env: env, r: r, certificate: true})
	}
}

// fault writes a SOAP fault.
func (s *Server) fault(w http.ResponseWriter, code int, sender bool, relatesTo, reason string, detail []byte) {
	w.Header().Set("Content-Type", "application/soap+xml; charset=utf-8")
	w.WriteHeader(code)
	_, _ = w.Write(soap.Fault(sender, reason, detail, relatesTo))
}

// reply writes a SOAP reply.
func (s *Server) reply(w http.ResponseWriter, action, relatesTo string, body []byte) {
	w.Header().Set("Content-Type", "application/soap+xml; charset=utf-8")
	_, _ = w.Write(soap.Reply(action, relatesTo, body, s.cfg.Now(), true))
}

// coreFault turns a core error into a fault with the right HTTP status.
func (s *Server) coreFault(w http.ResponseWriter, c caller, err error, detail []byte) {
	code, sender := http.StatusInternalServerError, false
	switch enrollsvc.KindOf(err) {
	case enrollsvc.KindBadRequest, enrollsvc.KindRefused, enrollsvc.KindNotFound:
		sender = true // AD CS answers the client's faults with 500 and a Sender fault
	case enrollsvc.KindUnavailable:
		code = http.StatusServiceUnavailable
	}
	if code == http.StatusInternalServerError && !sender {
		s.cfg.Logger.ErrorContext(c.r.Context(), "enrollment web service failed", "path", c.r.URL.Path, "error", err)
	}
	s.fault(w, code, sender, c.env.MessageID, err.Error(), detail)
}
