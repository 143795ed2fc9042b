package daemon

import (
	"context"
	"fmt"
	"net/http"
	"net/netip"
	"strings"
	"time"

	"github.com/enrollment-appliance/aeappliance/config"
	"github.com/enrollment-appliance/aeappliance/enrollsvc/events"
	"github.com/enrollment-appliance/aeappliance/enrollsvc/metrics"
	"github.com/enrollment-appliance/aeappliance/enrollsvc/revoke"
	"github.com/enrollment-appliance/aeappliance/ldap"
	"github.com/enrollment-appliance/aeappliance/ldap/secdesc"
	"github.com/enrollment-appliance/aeappliance/ratelimit"
)

// limits are the service's limits per client address and account (config.json limits) and
// the proxies whose X-Forwarded-For it believes (trusted_proxies); one set per Runtime, shared
// by every listener, so that SCEP over HTTP and over HTTPS count together.
type limits struct {
	proxies                     ratelimit.Proxies
	enrollSource, enrollAccount *ratelimit.Limiter
	scep, ocsp, health          *ratelimit.Limiter
	agentLogon                  *ratelimit.Limiter
	password                    config.PasswordLimits
}

func newLimits(cfg *config.Config, now func() time.Time) (*limits, error) {
	p, err := ratelimit.ParseProxies(cfg.TrustedProxies)
	if err != nil {
		return nil, err
	}
	l := cfg.LimitsOrDefault()
	out := &limits{proxies: p, password: *l.Password}
	for _, x := range []struct {
		to   **ratelimit.Limiter
		from *config.RateLimit
		name string
	}{{&out.enrollSource, l.EnrollPerSource, "enroll_per_source"}, {&out.enrollAccount, l.EnrollPerAccount, "enroll_per_account"},
		{&out.scep, l.SCEPPerSource, "scep_per_source"}, {&out.ocsp, l.OCSPPerSource, "ocsp_per_source"},
		{&out.health, l.HealthPerSource, "health_per_source"}, {&out.agentLogon, l.AgentLogonPerAgent, "agent_logon_per_agent"}} {
		if *x.to, err = ratelimit.NewLimiter(ratelimit.Options{Rate: ratelimit.Rate{PerSecond: x.from.PerMinute / 60,
			Burst: x.from.Burst}, Now: now}); err != nil {
			return nil, fmt.Errorf("limits.%s: %w", x.name, err)
		}
	}
	return out, nil
}

// limitsOf is the runtime's limits, made from its configuration on first use.
func (rt *Runtime) limitsOf() (*limits, error) {
	rt.limitsOnce.Do(func() { rt.limits, rt.limitsErr = newLimits(rt.Config, time.Now) })
	return rt.limits, rt.limitsErr
}

// passwordGuard is the directory's password check behind the lockout guard.
func (rt *Runtime) passwordGuard(l *limits) *ldap.PasswordGuard {
	p := l.password
	return ldap.NewPasswordGuard(rt.directory, ldap.GuardOptions{Margin: p.LockoutMargin, NoLockoutCap: p.NoLockoutCap,
		NoLockoutWindow: p.Duration(p.NoLockoutWindow), Refresh: p.Duration(p.PolicyRefresh)})
}

// limitedHTTP wraps the plain-HTTP (and SCEP over HTTPS) handlers: the client address from
// the trusted proxies, SCEP and OCSP limited per client address. A refused SCEP request is
// an HTTP 429, not a CertRep: a FAILURE CertRep is signed with the RA's signing key, which a flood
// must not be able to make the appliance do, and it needs the request decrypted first.
// A refused OCSP request is a 429 whose body is the unsigned tryLater response (RFC 6960
// §2.3), which OCSP clients understand and which costs no signature either.
func (rt *Runtime) limitedHTTP(l *limits, scep, rev http.Handler) http.Handler {
	audit := func(service string) ratelimit.Refused {
		return func(w http.ResponseWriter, r *http.Request, client netip.Addr, d ratelimit.Decision) {
			rt.Recorder.Limited(r.Context(), events.RateLimited, d, "service", service, "remote", client.String(), "path", r.URL.Path)
			if service == "ocsp" {
				revoke.TryLater(w, ratelimit.RetryAfterSeconds(d.RetryAfter))
				return
			}
			ratelimit.TooMany(w, d, "too many "+service+" requests from "+client.String()+"; try again later")
		}
	}
	scep = rt.metrics.Instrument(metrics.ProtocolSCEP, l.proxies.Handler(l.scep, audit("scep"), scep))
	ocsp := rt.metrics.Instrument(metrics.ProtocolOCSP, l.proxies.Handler(l.ocsp, audit("ocsp"), rev))
	rev = rt.metrics.Instrument(metrics.ProtocolCRL, l.proxies.Handler(nil, nil, rev))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case strings.HasPrefix(r.URL.Path, "/scep/"):
			scep.ServeHTTP(w, r)
		case r.URL.Path == "/ocsp" || strings.HasPrefix(r.URL.Path, "/ocsp/"):
			ocsp.ServeHTTP(w, r)
		default:
			rev.ServeHTTP(w, r)
		}
	})
}

// BindCandidates and LockoutPolicy are the password guard's directory calls.
func (l *lazyDirectory) BindCandidates(ctx context.Context, user string) ([]secdesc.SID, error) {
	c, err := l.client(ctx)
	if err != nil {
		return nil, err
	}
	return c.BindCandidates(ctx, user)
}

func (l *lazyDirectory) LockoutPolicy(ctx context.Context) (ldap.LockoutPolicy, error) {
	c, err := l.client(ctx)
	if err != nil {
		return ldap.LockoutPolicy{}, err
	}
	return c.LockoutPolicy(ctx)
}
