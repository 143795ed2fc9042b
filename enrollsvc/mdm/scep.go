package mdm

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/enrollment-appliance/aeappliance/apiclient"
	"github.com/enrollment-appliance/aeappliance/enrollsvc"
	"github.com/enrollment-appliance/aeappliance/enrollsvc/events"
	"github.com/enrollment-appliance/aeappliance/enrollsvc/store"
	"github.com/enrollment-appliance/aeappliance/proto/certutil"
)

// Bounds of the calls to an MDM.
const (
	// callTimeout bounds one call; validateAttempts calls (a network error or a 5xx answer is
	// tried again after validateBackoff) bound a validation.
	callTimeout      = 5 * time.Second
	validateAttempts = 2
	validateBackoff  = 500 * time.Millisecond
	// A notification is tried again after 1 s, 2 s, 4 s ... at most notifyMaxDelay apart, and
	// given up after notifyAttempts tries (about a day).
	notifyMaxDelay = 10 * time.Minute
	notifyAttempts = 150
	// notifyLease is how long a notification an instance claimed is left to it: longer than a
	// call; should the instance die meanwhile, another sends it after that.
	notifyLease = time.Minute
	// deliverEvery is how often due notifications are looked for.
	deliverEvery = time.Second
	// maxAnswer bounds what is read of an MDM's answer.
	maxAnswer = 64 << 10
)

// SetHooks sets the URLs of a registered MDM (HTTPS only) and returns its new signing secret,
// shown this once; both URLs empty remove them.
func (c *Connector) SetHooks(ctx context.Context, name string, h apiclient.MDMWebhooks, by, remote string) (apiclient.MDMWebhooksSet, error) {
	var out apiclient.MDMWebhooksSet
	for _, u := range []string{h.ValidateURL, h.NotifyURL} {
		if u == "" {
			continue
		}
		pu, err := url.Parse(u)
		if err != nil || pu.Scheme != "https" || pu.Host == "" || pu.User != nil {
			return out, badRequest("%q: an MDM's URL is https://host[:port]/path, without credentials", u)
		}
	}
	if (h.ValidateURL == "") != (h.NotifyURL == "") {
		return out, badRequest("give both the validation and the notification URL (or neither, to remove them)")
	}
	if h.CAPEM != "" {
		if _, err := pool(h.CAPEM); err != nil {
			return out, badRequest("ca_pem: %v", err)
		}
	}
	cs, err := c.read(ctx)
	if err != nil {
		return out, err
	}
	i, err := cs.index(name, "setting the URLs of MDM "+name)
	if err != nil {
		return out, err
	}
	cs.Clients[i].Hooks = nil
	if h.ValidateURL != "" {
		key := make([]byte, 32)
		if _, err := rand.Read(key); err != nil {
			return out, err
		}
		cs.Clients[i].Hooks = &hooks{ValidateURL: h.ValidateURL, NotifyURL: h.NotifyURL, CAPEM: h.CAPEM, Secret: hex.EncodeToString(key)}
		out.Secret = cs.Clients[i].Hooks.Secret
	}
	if err := c.put(ctx, cs, events.New(c.now(), events.MDMWebhooksSet, "", "mdm", name, "validate_url", h.ValidateURL,
		"notify_url", h.NotifyURL, "by", by, "remote", remote)); err != nil {
		return out, err
	}
	cl := cs.Clients[i]
	out.MDMClient = apiclient.MDMClient{Name: cl.Name, Created: cl.Created, By: cl.By, ValidateURL: h.ValidateURL, NotifyURL: h.NotifyURL}
	return out, nil
}

func pool(caPEM string) (*x509.CertPool, error) {
	p := x509.NewCertPool()
	if !p.AppendCertsFromPEM([]byte(caPEM)) {
		return nil, errors.New("no PEM certificate")
	}
	return p, nil
}

// hooksOf returns the URLs of mdm, or why it has none.
func (c *Connector) hooksOf(mdm string) (*hooks, error) {
	c.mu.Lock()
	cl, ok := c.byName[mdm]
	c.mu.Unlock()
	switch {
	case !ok:
		return nil, fmt.Errorf("no MDM %q is registered (aectl mdm add)", mdm)
	case cl.Hooks == nil:
		return nil, fmt.Errorf("MDM %q has no validation URL (aectl mdm webhooks %s --validate-url ... --notify-url ...)", mdm, mdm)
	}
	return cl.Hooks, nil
}

// CanValidate implements enrollsvc.MDMValidator.
func (c *Connector) CanValidate(mdm string) error {
	_, err := c.hooksOf(mdm)
	return err
}

// call POSTs body to u, signed with the MDM's secret, and returns the status and the answer.
func (c *Connector) call(ctx context.Context, mdm string, h *hooks, u string, body []byte) (int, []byte, error) {
	status, answer, err := c.post(ctx, mdm, h, u, body)
	if ctx.Err() == nil {
		why := ""
		switch {
		case err != nil:
			why = err.Error()
		case status >= 500:
			why = fmt.Sprintf("%s answered %d", u, status)
		}
		c.health(ctx, mdm, why)
	}
	return status, answer, err
}

// health records a change of an MDM's health: its URLs stopped answering (why is the error) or
// answer again (why is "").
func (c *Connector) health(ctx context.Context, mdm, why string) {
	c.mu.Lock()
	f, wasDown := c.down[mdm]
	switch {
	case why != "" && !wasDown:
		if c.down == nil {
			c.down = map[string]hookFailure{}
		}
		c.down[mdm] = hookFailure{Since: c.now(), Error: why}
	case why != "":
		f.Error = why
		c.down[mdm] = f
	case wasDown:
		delete(c.down, mdm)
	}
	c.mu.Unlock()
	switch {
	case why != "" && !wasDown:
		_ = c.cfg.Recorder.Record(ctx, events.MDMHooksDown, "", "mdm", mdm, "error", why)
	case why == "" && wasDown:
		_ = c.cfg.Recorder.Record(ctx, events.MDMHooksUp, "", "mdm", mdm, "down_since", f.Since.UTC().Format(time.RFC3339),
			"last_error", f.Error)
	}
}

// post makes one signed call to an MDM's URL.
func (c *Connector) post(ctx context.Context, mdm string, h *hooks, u string, body []byte) (int, []byte, error) {
	var roots *x509.CertPool
	if h.CAPEM != "" {
		var err error
		if roots, err = pool(h.CAPEM); err != nil {
			return 0, nil, err
		}
	}
	hc := &http.Client{Timeout: callTimeout, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12},
		TLSHandshakeTimeout: callTimeout, DisableKeepAlives: true},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(apiclient.MDMNameHeader, mdm)
	req.Header.Set(apiclient.MDMSignatureHeader, Sign(h.Secret, c.now(), body))
	resp, err := hc.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer))
	return resp.StatusCode, b, err
}

// Sign is the signature header of a call at t with body: "t=UNIX,v1=HEX", HEX the HMAC-SHA-256
// under the hex key secret of the decimal time, a period and the body.
func Sign(secret string, t time.Time, body []byte) string {
	key, _ := hex.DecodeString(secret)
	ts := strconv.FormatInt(t.Unix(), 10)
	m := hmac.New(sha256.New, key)
	m.Write([]byte(ts + "."))
	m.Write(body)
	return "t=" + ts + ",v1=" + hex.EncodeToString(m.Sum(nil))
}

// ValidateSCEP implements enrollsvc.MDMValidator: it asks the MDM's validation URL, trying once
// more after a network error or a 5xx answer; anything but a 200 with a verdict is an error.
func (c *Connector) ValidateSCEP(ctx context.Context, mdm string, v enrollsvc.SCEPValidation) (enrollsvc.SCEPVerdict, error) {
	h, err := c.hooksOf(mdm)
	if err != nil {
		return enrollsvc.SCEPVerdict{}, err
	}
	body, err := json.Marshal(apiclient.SCEPValidationRequest{Profile: v.Profile, TransactionID: v.TransactionID, Challenge: v.Challenge,
		CSR: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: v.CSR}))})
	if err != nil {
		return enrollsvc.SCEPVerdict{}, err
	}
	var last error
	for attempt := 1; attempt <= validateAttempts; attempt++ {
		if attempt > 1 {
			select {
			case <-ctx.Done():
				return enrollsvc.SCEPVerdict{}, ctx.Err()
			case <-time.After(validateBackoff):
			}
		}
		status, answer, err := c.call(ctx, mdm, h, h.ValidateURL, body)
		switch {
		case err != nil:
			last = err
			continue
		case status >= 500:
			last = fmt.Errorf("the MDM answered %d", status)
			continue
		case status != http.StatusOK:
			return enrollsvc.SCEPVerdict{}, fmt.Errorf("the MDM answered %d", status)
		}
		var r apiclient.SCEPValidationResponse
		if err := json.Unmarshal(answer, &r); err != nil {
			return enrollsvc.SCEPVerdict{}, fmt.Errorf("the MDM's answer is not a verdict: %v", err)
		}
		return enrollsvc.SCEPVerdict{Valid: r.Valid, Reason: r.Reason, Account: r.Account, Names: r.Names}, nil
	}
	return enrollsvc.SCEPVerdict{}, fmt.Errorf("%d tries: %w", validateAttempts, last)
}

// NotifySCEP implements enrollsvc.MDMValidator: the outcome is kept in the store until the MDM
// acknowledges it (a 2xx answer), and sent again until then, with the same ID.
func (c *Connector) NotifySCEP(ctx context.Context, mdm string, o enrollsvc.SCEPOutcome) {
	id := make([]byte, 16)
	_, _ = rand.Read(id)
	n := apiclient.SCEPNotification{ID: hex.EncodeToString(id), Profile: o.Profile, TransactionID: o.TransactionID,
		RequestID: o.RequestID, Status: "failed", Reason: o.Reason}
	if cert := o.Certificate; cert != nil {
		s1, s256 := sha1.Sum(cert.Raw), sha256.Sum256(cert.Raw)
		n.Status, n.Serial, n.ThumbprintSHA1, n.ThumbprintSHA256 = "issued", certutil.SerialString(cert.SerialNumber),
			hex.EncodeToString(s1[:]), hex.EncodeToString(s256[:])
		n.NotBefore, n.NotAfter = cert.NotBefore.UTC(), cert.NotAfter.UTC()
	} else if o.Pending {
		n.Status = "pending"
	}
	body, err := json.Marshal(n)
	if err == nil {
		now := c.now()
		err = c.cfg.Store.AddMDMNotification(ctx, store.MDMNotification{ID: n.ID, MDM: mdm, Payload: body, Created: now, NextTry: now})
	}
	if err != nil {
		c.cfg.Log.Error("queueing the notification of an MDM", "mdm", mdm, "transaction", o.TransactionID, "error", err)
		return
	}
	select { // deliver it now rather than at the next tick
	case c.kick <- struct{}{}:
	default:
	}
}

// deliver sends the notifications that are due, one MDM call at a time.
func (c *Connector) deliver(ctx context.Context) {
	due, err := c.cfg.Store.DueMDMNotifications(ctx, c.now(), 50)
	if err != nil {
		if ctx.Err() == nil {
			c.cfg.Log.Warn("reading the MDM notifications", "error", err)
		}
		return
	}
	for _, n := range due {
		if ctx.Err() != nil {
			return
		}
		// Another instance of a shared store may have read it too: whoever claims it sends it.
		if ok, err := c.cfg.Store.ClaimMDMNotification(ctx, n, c.now().Add(notifyLease)); err != nil || !ok {
			continue
		}
		c.deliverOne(ctx, n)
	}
}

func (c *Connector) deliverOne(ctx context.Context, n store.MDMNotification) {
	var why string
	h, err := c.hooksOf(n.MDM)
	if err == nil {
		var status int
		status, _, err = c.call(ctx, n.MDM, h, h.NotifyURL, n.Payload)
		if err == nil && (status < 200 || status > 299) {
			err = fmt.Errorf("the MDM answered %d", status)
		}
	}
	var head apiclient.SCEPNotification
	_ = json.Unmarshal(n.Payload, &head)
	kv := []any{"mdm", n.MDM, "notification", n.ID, "transaction", head.TransactionID, "status", head.Status, "serial", head.Serial}
	if err == nil {
		if derr := c.cfg.Store.DeleteMDMNotification(ctx, n.ID); derr != nil {
			c.cfg.Log.Warn("removing a delivered MDM notification (it will be sent again, with its ID)", "error", derr)
			return
		}
		_ = c.cfg.Recorder.Record(ctx, events.SCEPMDMNotified, "", append(kv, "attempts", n.Attempts+1)...)
		return
	}
	why = err.Error()
	attempts := n.Attempts + 1
	if attempts >= notifyAttempts {
		if derr := c.cfg.Store.DeleteMDMNotification(ctx, n.ID); derr == nil {
			_ = c.cfg.Recorder.Record(ctx, events.SCEPMDMNotifyDropped, "", append(kv, "attempts", attempts, "error", why)...)
		}
		return
	}
	delay := min(time.Second<<min(attempts-1, 20), notifyMaxDelay)
	if err := c.cfg.Store.RetryMDMNotification(ctx, n.ID, c.now().Add(delay), attempts, why); err != nil {
		c.cfg.Log.Warn("recording a failed MDM notification", "error", err)
	}
	c.cfg.Log.Warn("notifying an MDM failed; trying again", append(kv, "attempts", attempts, "next_in", delay.String(), "error", why)...)
}
