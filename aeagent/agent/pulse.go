package agent

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/enrollment-appliance/aeappliance/aeagent/plan"
	"github.com/enrollment-appliance/aeappliance/aeagent/store"
	"github.com/enrollment-appliance/aeappliance/aeagent/wsclient"
	"github.com/enrollment-appliance/aeappliance/proto/certutil"
	"github.com/enrollment-appliance/aeappliance/proto/cmc"
)

// lastFile records the last pass for `aeagent status`.
const lastFile = "last-pass.json"

// Outcome is what happened to one action of the plan.
type Outcome struct {
	Action plan.Action `json:"action"`
	Result string      `json:"result"`
	Error  string      `json:"error,omitempty"`
}

// Report is what a pass did.
type Report struct {
	Started         time.Time `json:"started"`
	Outcomes        []Outcome `json:"outcomes"`
	Notes           []string  `json:"notes,omitempty"`
	Changed         bool      `json:"changed"`                     // a certificate or request was added, replaced or removed
	NextUpdateHours int       `json:"next_update_hours,omitempty"` // the policy's
}

// lastPass is the record in the store.
type lastPass struct {
	Finished        time.Time `json:"finished"`
	OK              bool      `json:"ok"`
	Error           string    `json:"error,omitempty"`
	Changed         bool      `json:"changed"`
	NextUpdateHours int       `json:"next_update_hours,omitempty"`
}

// Pulse runs one autoenrollment pass, as `certutil -pulse` does on Windows. The returned error
// joins every failure; a failure before the plan (store unreadable, policy server down, CA
// revoked or untrusted) leaves the store as it was, and a failed action leaves that template's
// certificates as they were while the other actions still run.
func (a *Agent) Pulse(ctx context.Context) (*Report, error) {
	now := a.now()
	rep := &Report{Started: now}
	st, err := a.openStore(ctx)
	if err != nil {
		return rep, err
	}
	defer st.Close()
	err = a.pulse(ctx, st, now, rep)
	rec := lastPass{Finished: a.now(), OK: err == nil, Changed: rep.Changed, NextUpdateHours: rep.NextUpdateHours}
	if err != nil {
		rec.Error = err.Error()
	}
	if werr := st.WriteJSON(lastFile, rec); werr != nil && err == nil {
		err = fmt.Errorf("recording the pass: %w", werr)
	}
	return rep, err
}

func (a *Agent) pulse(ctx context.Context, st *store.Store, now time.Time, rep *Report) error {
	p, err := a.prepare(ctx, st, now, true)
	if err != nil {
		return err
	}
	rep.NextUpdateHours = p.policy.NextUpdateHours
	pl := plan.Decide(p.input)
	for _, r := range pl.Reasons {
		rep.Notes = append(rep.Notes, r.String())
	}
	x := &executor{pass: p, installed: map[string]bool{}}
	var errs []error
	for _, act := range pl.Actions {
		result, err := x.do(ctx, act)
		o := Outcome{Action: act, Result: result}
		if err != nil {
			o.Error = err.Error()
			errs = append(errs, fmt.Errorf("%s: %w", act, err))
			a.log.Error("action failed", "action", act.String(), "err", err)
		} else if act.Kind != plan.Keep {
			a.log.Info("action", "action", act.String(), "result", result)
		}
		rep.Outcomes = append(rep.Outcomes, o)
	}
	rep.Changed = x.changed
	return errors.Join(errs...)
}

// executor carries out one plan.
type executor struct {
	*pass
	installed map[string]bool // templates whose install action installed a certificate
	changed   bool
}

func (x *executor) do(ctx context.Context, act plan.Action) (string, error) {
	switch act.Kind {
	case plan.Keep:
		return "kept", nil
	case plan.DropPending:
		id, _ := strconv.ParseInt(act.Request.RequestID, 10, 64)
		if err := x.st.DropPending(act.Template, id); err != nil {
			return "", err
		}
		x.changed = true
		return "dropped request " + act.Request.RequestID, nil
	case plan.RetrievePending:
		return x.retrieve(ctx, act)
	case plan.Remove:
		return x.remove(ctx, act)
	case plan.Enroll, plan.Reenroll:
		return x.enroll(ctx, act)
	case plan.Renew:
		return x.renew(ctx, act)
	case plan.Archive:
		return x.archive(ctx, act)
	}
	return "", fmt.Errorf("unknown action kind %v", act.Kind)
}

func (x *executor) template(name string) (wsclient.Template, error) {
	t, ok := x.pol.Template(name)
	if !ok {
		return t, fmt.Errorf("the policy has no template %s", name)
	}
	return t, nil
}

func (x *executor) retrieve(ctx context.Context, act plan.Action) (string, error) {
	r, ok := x.pending[heldKey(act.Template, act.Request.RequestID)]
	if !ok {
		return "", fmt.Errorf("request %s is not in the store", act.Request.RequestID)
	}
	res, err := x.client.QueryTokenStatus(ctx, r.CESURL, r.RequestID)
	if err != nil {
		return "", fmt.Errorf("asking %s about request %d: %w", r.CESURL, r.RequestID, err)
	}
	switch res.Status {
	case wsclient.StatusPending:
		return fmt.Sprintf("request %d still waits for approval", r.RequestID), nil
	case wsclient.StatusDenied:
		if err := x.st.DropPending(r.Template, r.RequestID); err != nil {
			return "", err
		}
		x.changed = true
		return "", fmt.Errorf("request %d was denied: %s", r.RequestID, res.Reason)
	}
	t, _ := x.pol.Template(act.Template) // may be gone from the policy: still install what was approved
	if t.Name == "" {
		t.Name = act.Template
	}
	msg, err := x.install(ctx, t, res, r.Key)
	if err != nil {
		return "", err
	}
	if err := x.st.DropPending(r.Template, r.RequestID); err != nil {
		return "", fmt.Errorf("%s, but forgetting request %d failed: %w", msg, r.RequestID, err)
	}
	return msg, nil
}

func (x *executor) enroll(ctx context.Context, act plan.Action) (string, error) {
	t, err := x.template(act.Template)
	if err != nil {
		return "", err
	}
	if x.a.cfg.Auth == AuthCertificate {
		return "", errors.New("a new request needs kerberos or password authentication: the certificate endpoints take renewals only")
	}
	urls, err := x.enrollmentURLs(t)
	if err != nil {
		return "", err
	}
	key, err := newKey(t)
	if err != nil {
		return "", err
	}
	csr, err := NewRequest(t, key, x.a.cfg.subject())
	if err != nil {
		return "", err
	}
	if t.Archival() {
		return x.enrollArchival(ctx, t, urls, csr, key)
	}
	return x.submit(ctx, t, x.client, urls, csr, key, nil)
}

// enrollArchival sends a key archival request (MS-WCCE 3.1.1.4.3.6) for a template whose keys
// the CA archives: the private key encrypted to the CA exchange certificate, which the
// enrollment service hands out (MS-WSTEP Key Exchange Token) and must be the issuing CA's. The
// certificate is installed only if the CA's response names the archived key.
func (x *executor) enrollArchival(ctx context.Context, t wsclient.Template, urls []string, csr []byte, key crypto.Signer) (string, error) {
	rk, ok := key.(*rsa.PrivateKey)
	if !ok {
		return "", fmt.Errorf("template %s archives keys: only RSA keys are archived", t.Name)
	}
	ca := x.caOf(t)
	if ca == nil {
		return "", fmt.Errorf("template %s names no CA of the policy", t.Name)
	}
	var xcert *x509.Certificate
	var err error
	for i, u := range urls {
		xcert, err = x.client.KeyExchangeCertificate(ctx, u, ca)
		if !unreachable(ctx, err) || i+1 == len(urls) {
			break
		}
	}
	if err != nil {
		return "", fmt.Errorf("template %s archives keys, and the CA exchange certificate: %w", t.Name, err)
	}
	env, err := cmc.EncryptKey(rk, xcert)
	if err != nil {
		return "", fmt.Errorf("encrypting the key for archival: %w", err)
	}
	token, err := cmc.SignArchival(csr, key, env)
	if err != nil {
		return "", fmt.Errorf("building the key archival request: %w", err)
	}
	sum := sha256.Sum256(env)
	return x.submit(ctx, t, x.client, urls, token, key, sum[:])
}

// caOf is the certificate of the first policy CA that issues t.
func (x *executor) caOf(t wsclient.Template) *x509.Certificate {
	for _, ref := range t.CARefs {
		for _, ca := range x.pol.CAs {
			if ca.Ref == ref && ca.Certificate != nil {
				return ca.Certificate
			}
		}
	}
	return nil
}

func (x *executor) renew(ctx context.Context, act plan.Action) (string, error) {
	t, err := x.template(act.Template)
	if err != nil {
		return "", err
	}
	old, ok := x.held[heldKey(act.Template, act.Cert.Serial)]
	if !ok || old.Key == nil {
		return "", fmt.Errorf("the certificate %s to renew or its key is not in the store", act.Cert.Serial)
	}
	key := old.Key
	if !act.SameKey {
		if key, err = newKey(t); err != nil {
			return "", err
		}
		if t.Archival() {
			// A renewal signed with the old key has no room for an archived key: a new key of
			// an archival template goes as a key archival request.
			if x.a.cfg.Auth == AuthCertificate {
				return "", fmt.Errorf("template %s archives keys: a new key goes as a key archival request, which needs kerberos or password authentication", t.Name)
			}
			urls, err := x.enrollmentURLs(t)
			if err != nil {
				return "", err
			}
			csr, err := NewRequest(t, key, x.a.cfg.subject())
			if err != nil {
				return "", err
			}
			return x.enrollArchival(ctx, t, urls, csr, key)
		}
	}
	csr, err := NewRequest(t, key, x.a.cfg.subject())
	if err != nil {
		return "", err
	}
	token, err := cmc.SignRenewal(csr, old.Certificate, old.Key)
	if err != nil {
		return "", fmt.Errorf("signing the renewal with the old key: %w", err)
	}
	client := x.client
	urls, err := x.enrollmentURLs(t)
	if x.a.cfg.Auth == AuthCertificate {
		// The certificate being renewed authenticates its own renewal.
		if err == nil {
			client, err = x.a.certClient(x.a.cfg.Server, old)
		}
	}
	if err != nil {
		return "", err
	}
	return x.submit(ctx, t, client, urls, token, key, nil)
}

// enrollmentURLs are the policy's CES URIs for t and this agent's authentication, in the order of
// their priority (MS-XCEP 3.1.4.1.3.3: a lower number is preferred).
func (x *executor) enrollmentURLs(t wsclient.Template) ([]string, error) {
	var urls []string
	for _, u := range x.pol.EnrollmentURLs(t, x.a.authMode()) {
		urls = append(urls, u.URI)
	}
	if len(urls) == 0 {
		return nil, fmt.Errorf("no enrollment service with this agent's authentication for template %s", t.Name)
	}
	return urls, nil
}

// unreachable reports whether err says nothing answered at a URI (the HTTP exchange failed), or
// that the service there is unavailable (HTTP 503, or a 5xx without a SOAP fault): the next URI is
// worth trying. A SOAP answer (a refusal, a fault about the request, an authentication failure) or
// a reply that does not make sense is final: another instance of the same CA answers alike. Once
// ctx is done nothing is worth trying.
func unreachable(ctx context.Context, err error) bool {
	if err == nil || ctx.Err() != nil {
		return false
	}
	var we *wsclient.Error
	if errors.As(err, &we) {
		return we.StatusCode == http.StatusServiceUnavailable || we.StatusCode >= 500 && we.Code == ""
	}
	var ue *url.Error
	return errors.As(err, &ue)
}

// submit sends a request to the first of urls that answers (failing over to the next while they
// are unreachable) and installs, records as pending, or reports the refusal. keyHash, for a key
// archival request, is the hash of the archived key, which an issuing response must repeat.
func (x *executor) submit(ctx context.Context, t wsclient.Template, c *wsclient.Client, urls []string, token []byte, key crypto.Signer, keyHash []byte) (string, error) {
	var res *wsclient.Result
	var err error
	var url string
	for i, u := range urls {
		url = u
		res, err = c.Issue(ctx, url, token, map[string]string{"CertificateTemplate": t.Name})
		if !unreachable(ctx, err) {
			break
		}
		if i+1 < len(urls) {
			x.a.log.Warn("enrollment service unreachable; trying the next one the policy lists", "url", url, "next", urls[i+1], "error", err)
		}
	}
	if err != nil {
		return "", fmt.Errorf("requesting %s from %s: %w", t.Name, url, err)
	}
	switch res.Status {
	case wsclient.StatusDenied:
		return "", fmt.Errorf("the CA denied the %s request: %s", t.Name, res.Reason)
	case wsclient.StatusPending:
		ref := res.ReferenceURI
		if ref == "" {
			ref = url
		}
		if err := x.st.AddPending(store.PendingRequest{Template: t.Name, RequestID: res.RequestID, Submitted: x.now, CESURL: ref, Key: key}); err != nil {
			return "", fmt.Errorf("request %d is pending, but recording it failed: %w", res.RequestID, err)
		}
		x.changed = true
		return fmt.Sprintf("request %d waits for a certificate manager's approval", res.RequestID), nil
	}
	if keyHash != nil && !bytes.Equal(res.EncryptedKeyHash, keyHash) {
		// Windows fails alike (XENROLL_E_RESPONSE_KA_HASH_NOT_FOUND / _MISMATCH).
		return "", fmt.Errorf("the CA issued certificate %s but its response does not confirm that it archived this key; not installed",
			serialOf(res.Certificate))
	}
	return x.install(ctx, t, res, key)
}

// install checks an issued certificate and puts it in the store, archiving the template's
// current one.
func (x *executor) install(ctx context.Context, t wsclient.Template, res *wsclient.Result, key crypto.Signer) (string, error) {
	cert := res.Certificate
	if cert == nil {
		return "", errors.New("the reply says issued but holds no certificate")
	}
	if _, err := verifyIssued(cert, res.Chain, x.a.roots, x.now); err != nil {
		return "", fmt.Errorf("the issued certificate %s does not chain to a trusted CA: %w", serialOf(cert), err)
	}
	if oid, name, _, _ := templateInfo(cert); (t.OID != "" && oid != "" && oid != t.OID) || (oid == "" && name != "" && name != t.Name) {
		return "", fmt.Errorf("the CA issued certificate %s under another template (%s%s) than %s", serialOf(cert), oid, name, t.Name)
	}
	replaced, err := x.st.Install(t.Name, cert, res.Chain, key)
	if err != nil {
		return "", fmt.Errorf("installing certificate %s: %w", serialOf(cert), err)
	}
	x.installed[t.Name] = true
	x.changed = true
	msg := fmt.Sprintf("installed certificate %s (request %d), valid until %s", serialOf(cert), res.RequestID, cert.NotAfter.UTC().Format(time.DateOnly))
	if replaced != nil {
		msg += fmt.Sprintf("; certificate %s archived", serialOf(replaced.Certificate))
		if err := x.hooks(ctx, "archived", t.Name, replaced); err != nil {
			return msg, err
		}
	}
	cur := &store.Cert{Template: t.Name, Certificate: cert, Chain: res.Chain, Key: key, Path: x.st.Path(t.Name)}
	return msg, x.hooks(ctx, "installed", t.Name, cur)
}

func (x *executor) archive(ctx context.Context, act plan.Action) (string, error) {
	if act.After != "" && !x.installed[act.After] {
		return fmt.Sprintf("kept: %s installed no new certificate in this pass", act.After), nil
	}
	n, err := certutil.ParseSerial(act.Cert.Serial)
	if err != nil {
		return "", err
	}
	c, err := x.st.Archive(act.Template, n)
	if errors.Is(err, store.ErrNotFound) {
		return "already archived", nil
	}
	if err != nil {
		return "", err
	}
	x.changed = true
	return "archived to " + c.Path, x.hooks(ctx, "archived", act.Template, c)
}

func (x *executor) remove(ctx context.Context, act plan.Action) (string, error) {
	c := x.held[heldKey(act.Template, act.Cert.Serial)]
	n, err := certutil.ParseSerial(act.Cert.Serial)
	if err != nil {
		return "", err
	}
	if err := x.st.Remove(act.Template, n); err != nil {
		return "", err
	}
	x.changed = true
	c.Path = ""
	return "removed", x.hooks(ctx, "removed", act.Template, &c)
}
