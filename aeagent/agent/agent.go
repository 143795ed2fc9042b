package agent

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/enrollment-appliance/aeappliance/aeagent/plan"
	"github.com/enrollment-appliance/aeappliance/aeagent/revocation"
	"github.com/enrollment-appliance/aeappliance/aeagent/store"
	"github.com/enrollment-appliance/aeappliance/aeagent/wsclient"
	"github.com/enrollment-appliance/aeappliance/proto/certutil"
)

// Options are what a caller may inject; every field is optional.
type Options struct {
	Logger *slog.Logger
	// Now is the clock of every decision (renewal, expiry, pending age); tests move it. The
	// policy cache's lastUpdate always uses the wall clock, since the server compares it with its
	// own.
	Now func() time.Time
}

// Agent is a configured autoenrollment client. Its methods open the store for the time of one
// call, so `aeagent status` can run beside a resident `aeagent run`.
type Agent struct {
	cfg   Config
	log   *slog.Logger
	now   func() time.Time
	roots *x509.CertPool // nil: the system's
	rev   *revocation.Checker
	auth  wsclient.Auth    // kerberos or password; nil for certificate auth (made per pass)
	cep   *wsclient.Client // for auth (reused, so that a Kerberos ticket is reused)
}

// New checks the configuration (defaults filled in) and reads the credentials it names.
func New(cfg Config, o Options) (*Agent, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	a := &Agent{cfg: cfg, log: o.Logger, now: o.Now}
	if a.log == nil {
		a.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if a.now == nil {
		a.now = time.Now
	}
	a.rev = &revocation.Checker{Now: a.now}
	if cfg.CAFile != "" {
		pem, err := os.ReadFile(cfg.CAFile)
		if err != nil {
			return nil, fmt.Errorf("ca_file: %w", err)
		}
		a.roots = x509.NewCertPool()
		if !a.roots.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("ca_file %s: no PEM certificate in it", cfg.CAFile)
		}
	}
	switch cfg.Auth {
	case AuthPassword:
		pw, err := os.ReadFile(cfg.PasswordFile)
		if err != nil {
			return nil, fmt.Errorf("password_file: %w", err)
		}
		a.auth = wsclient.PasswordAuth{Username: cfg.User, Password: strings.TrimRight(string(pw), "\r\n")}
	case AuthKerberos:
		a.auth = wsclient.KerberosAuth{Keytab: cfg.Keytab, Principal: cfg.User, CCache: cfg.CCache, Krb5Conf: cfg.Krb5Conf}
	}
	if a.auth != nil {
		c, err := wsclient.New(cfg.Server, a.auth, a.roots)
		if err != nil {
			return nil, err
		}
		a.cep = c
	}
	return a, nil
}

// Config is the configuration in effect (defaults filled in).
func (a *Agent) Config() Config { return a.cfg }

// identity names who asks, so that a cached policy of another identity is not used.
func (a *Agent) identity() string {
	switch a.cfg.Auth {
	case AuthPassword:
		return "password:" + a.cfg.User
	case AuthKerberos:
		return "kerberos:" + a.cfg.User + ":" + a.cfg.Keytab + ":" + a.cfg.CCache
	}
	return "certificate:" + a.cfg.CertTemplate
}

// authMode is the MS-XCEP client authentication of the configured auth.
func (a *Agent) authMode() int {
	switch a.cfg.Auth {
	case AuthPassword:
		return wsclient.AuthUsername
	case AuthKerberos:
		return wsclient.AuthKerberos
	}
	return wsclient.AuthCertificate
}

// certClient is a client that authenticates with a certificate of the store.
func (a *Agent) certClient(url string, c store.Cert) (*wsclient.Client, error) {
	if c.Key == nil {
		return nil, fmt.Errorf("the %s certificate has no private key", c.Template)
	}
	return wsclient.New(url, wsclient.CertificateAuth{Certificate: tls.Certificate{
		Certificate: [][]byte{c.Certificate.Raw}, PrivateKey: c.Key, Leaf: c.Certificate}}, a.roots)
}

// policyClient is the client for the policy server: the configured one, or for certificate
// authentication one presenting a valid certificate of the store.
func (a *Agent) policyClient(held []store.Cert, now time.Time) (*wsclient.Client, error) {
	if a.cep != nil {
		return a.cep, nil
	}
	for _, c := range held {
		if a.cfg.CertTemplate != "" && c.Template != a.cfg.CertTemplate {
			continue
		}
		if c.Key != nil && hasClientAuth(c.Certificate) && now.After(c.Certificate.NotBefore) && now.Before(c.Certificate.NotAfter) {
			return a.certClient(a.cfg.Server, c)
		}
	}
	if a.cfg.CertTemplate != "" {
		return nil, fmt.Errorf("certificate authentication: no valid %s certificate with its key in the store", a.cfg.CertTemplate)
	}
	return nil, errors.New("certificate authentication: no valid client authentication certificate with its key in the store; enroll first with kerberos or password")
}

// pass is the state of one autoenrollment pass up to the plan.
type pass struct {
	a       *Agent
	st      *store.Store
	now     time.Time
	client  *wsclient.Client
	policy  *cachedPolicy
	pol     *wsclient.Policies
	held    map[string]store.Cert // by template + "/" + serial
	pending map[string]store.PendingRequest
	input   plan.Input
}

// readStore reads the current certificates and the pending requests.
func readStore(st *store.Store) ([]store.Cert, []store.PendingRequest, error) {
	certs, err := st.Current()
	if err != nil {
		return nil, nil, fmt.Errorf("reading the certificate store: %w", err)
	}
	pending, err := st.Pending()
	if err != nil {
		return nil, nil, fmt.Errorf("reading the pending requests: %w", err)
	}
	return certs, pending, nil
}

func heldKey(template, serial string) string { return template + "/" + serial }

// serialOf spells a serial number as the CA does (certutil.SerialString), so the two can be compared.
func serialOf(c *x509.Certificate) string { return certutil.SerialString(c.SerialNumber) }

// prepare reads the store, fetches the policy (saving it only with save), checks the CAs and the
// held certificates' revocation, and builds the planner's input. Nothing in the store changes
// but the policy cache.
func (a *Agent) prepare(ctx context.Context, st *store.Store, now time.Time, save bool) (*pass, error) {
	certs, pending, err := readStore(st)
	if err != nil {
		return nil, err
	}
	client, err := a.policyClient(certs, now)
	if err != nil {
		return nil, err
	}
	cached, err := a.fetchPolicy(ctx, st, client, save)
	if err != nil {
		return nil, err
	}
	pol, err := cached.policies()
	if err != nil {
		return nil, err
	}
	p := &pass{a: a, st: st, now: now, client: client, policy: cached, pol: pol,
		held: map[string]store.Cert{}, pending: map[string]store.PendingRequest{}}
	if err := p.checkCAs(ctx); err != nil {
		return nil, err
	}
	in := plan.Input{Now: now, Machine: a.cfg.Context == ContextMachine, Templates: planTemplates(pol.Templates)}
	for _, c := range certs {
		h, err := p.heldOf(ctx, c)
		if err != nil {
			return nil, err
		}
		p.held[heldKey(h.Template, h.Serial)] = c
		in.Store = append(in.Store, h)
	}
	for _, r := range pending {
		id := strconv.FormatInt(r.RequestID, 10)
		p.pending[heldKey(r.Template, id)] = r
		in.Pending = append(in.Pending, plan.Pending{Template: r.Template, RequestID: id, Submitted: r.Submitted})
	}
	p.input = in
	return p, nil
}

// checkCAs refuses a policy whose CA is not trusted or has been revoked: nothing is requested
// from it and nothing held is touched.
func (p *pass) checkCAs(ctx context.Context) error {
	for _, ca := range p.pol.CAs {
		if ca.Certificate == nil {
			return fmt.Errorf("the policy's CA %d has no certificate", ca.Ref)
		}
		name := ca.Certificate.Subject.String()
		chains, err := ca.Certificate.Verify(x509.VerifyOptions{Roots: p.a.roots, CurrentTime: p.now,
			KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
		if err != nil {
			return fmt.Errorf("the CA %q of the policy is not trusted (ca_file): %w", name, err)
		}
		if i, r := p.a.rev.CheckChain(ctx, chains[0]); r.Status == revocation.Revoked {
			return fmt.Errorf("the CA %q is revoked: %q was revoked on %s (%s, %s); nothing is requested from it",
				name, chains[0][i].Subject.String(), r.RevokedAt.UTC().Format(time.DateOnly), revocation.ReasonName(r.Reason), r.Source)
		}
	}
	return nil
}

// heldOf describes a certificate of the store for the planner, with its revocation status.
func (p *pass) heldOf(ctx context.Context, c store.Cert) (plan.Held, error) {
	_, _, major, minor := templateInfo(c.Certificate)
	h := plan.Held{Template: c.Template, TemplateMajor: major, TemplateMinor: minor, NotBefore: c.Certificate.NotBefore,
		NotAfter: c.Certificate.NotAfter, Serial: serialOf(c.Certificate), HasKey: c.Key != nil}
	if p.now.After(c.Certificate.NotAfter) {
		return h, nil // expired: no need to ask
	}
	chain := append([]*x509.Certificate{c.Certificate}, c.Chain...)
	// The chain up to a trusted root, when the store's chain.pem stops short of it.
	if chains, err := verifyIssued(c.Certificate, c.Chain, p.a.roots, p.now); err == nil {
		chain = chains[0]
	}
	i, r := p.a.rev.CheckChain(ctx, chain)
	switch {
	case r.Status == revocation.Revoked && i == 0:
		h.Revoked = true
		p.a.log.Warn("certificate revoked", "template", c.Template, "serial", h.Serial,
			"reason", revocation.ReasonName(r.Reason), "source", r.Source)
	case r.Status == revocation.Revoked:
		return h, fmt.Errorf("the CA %q that issued the %s certificate (serial %s) is revoked (%s, %s): leaving the store as it is",
			chain[i].Subject.String(), c.Template, h.Serial, revocation.ReasonName(r.Reason), r.Source)
	case r.Status == revocation.Unknown:
		p.a.log.Debug("revocation status unknown", "template", c.Template, "serial", h.Serial, "why", r.Err)
	}
	return h, nil
}

// Plan works out what a pass would do at time at (zero: now) without changing anything.
func (a *Agent) Plan(ctx context.Context, at time.Time) (plan.Plan, error) {
	if at.IsZero() {
		at = a.now()
	}
	st, err := a.openStore(ctx)
	if err != nil {
		return plan.Plan{}, err
	}
	defer st.Close()
	p, err := a.prepare(ctx, st, at, false)
	if err != nil {
		return plan.Plan{}, err
	}
	return plan.Decide(p.input), nil
}

// LockWait is how long a call waits for another aeagent process (a resident `run` in the middle
// of a pass, say) to let go of the store.
const LockWait = 2 * time.Minute

// openStore opens the store, waiting up to LockWait while another process holds it.
func (a *Agent) openStore(ctx context.Context) (*store.Store, error) {
	deadline := time.Now().Add(LockWait)
	for {
		st, err := store.Open(a.cfg.Store)
		if !errors.Is(err, store.ErrLocked) || time.Now().After(deadline) {
			return st, err
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("waiting for the store lock: %w", ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}
