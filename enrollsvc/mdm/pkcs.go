package mdm

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode"

	pkcs12 "software.sslmate.com/src/go-pkcs12"

	"github.com/enrollment-appliance/aeappliance/apiclient"
	"github.com/enrollment-appliance/aeappliance/enrollsvc"
	"github.com/enrollment-appliance/aeappliance/enrollsvc/events"
	"github.com/enrollment-appliance/aeappliance/enrollsvc/metrics"
	"github.com/enrollment-appliance/aeappliance/enrollsvc/store"
	"github.com/enrollment-appliance/aeappliance/proto/certutil"
	"github.com/enrollment-appliance/aeappliance/proto/cms"
)

// Deliveries and the formats of their results.
const (
	DeliveryPassword  = "password"
	DeliveryDeviceKey = "device-key"

	FormatPKCS12    = "pkcs12"
	FormatEnveloped = "cms-enveloped-pkcs12"
)

// pbkdf2Iterations is the PBKDF2-HMAC-SHA-256 iteration count of a password-protected PKCS#12
// (its key bag, certificate bag and MAC key): far above go-pkcs12's default of 2048, which only
// suits random passwords.
const pbkdf2Iterations = 100_000

// delivery is how a job's result is protected, held in memory only while the job runs.
type delivery struct {
	password string
	device   *rsa.PublicKey
	cert     *x509.Certificate // the device's certificate, when it was given as one
}

// Submit checks a PKCS request from mdm (or Admin), records it queued and starts working on it;
// the answer is the queued job, which Job polls.
func (c *Connector) Submit(ctx context.Context, mdm string, in apiclient.PKCSRequest, remote string) (apiclient.PKCSJob, error) {
	in.Template, in.Account = strings.TrimSpace(in.Template), strings.TrimSpace(in.Account)
	if in.Template == "" || in.Account == "" {
		return apiclient.PKCSJob{}, badRequest("template and account are required")
	}
	if len(in.DeviceID) > 128 || strings.IndexFunc(in.DeviceID, func(r rune) bool { return !unicode.IsPrint(r) }) >= 0 {
		return apiclient.PKCSJob{}, badRequest("device_id: at most 128 printable characters")
	}
	var d delivery
	switch in.Delivery {
	case DeliveryPassword:
		if in.RecipientPEM != "" {
			return apiclient.PKCSJob{}, badRequest("a password delivery takes no recipient")
		}
		if len([]rune(in.Password)) < MinPasswordLen {
			return apiclient.PKCSJob{}, badRequest("password: at least %d characters", MinPasswordLen)
		}
		d.password = in.Password
	case DeliveryDeviceKey:
		if in.Password != "" {
			return apiclient.PKCSJob{}, badRequest("a device-key delivery takes no password")
		}
		var err error
		if d.device, d.cert, err = ParseRecipient([]byte(in.RecipientPEM)); err != nil {
			return apiclient.PKCSJob{}, badRequest("recipient: %v", err)
		}
	default:
		return apiclient.PKCSJob{}, badRequest("delivery: want %q or %q", DeliveryPassword, DeliveryDeviceKey)
	}
	c.mu.Lock()
	if c.queued >= MaxQueued {
		c.mu.Unlock()
		return apiclient.PKCSJob{}, &enrollsvc.Error{Kind: enrollsvc.KindUnavailable, Op: "queueing a PKCS request",
			Err: fmt.Errorf("%d requests are waiting on this instance; try again shortly", MaxQueued)}
	}
	c.queued++
	c.mu.Unlock()
	started := false
	defer func() {
		if !started {
			c.mu.Lock()
			c.queued--
			c.mu.Unlock()
		}
	}()
	id := make([]byte, 16)
	if _, err := rand.Read(id); err != nil {
		return apiclient.PKCSJob{}, err
	}
	now := c.now()
	j := store.MDMJob{ID: hex.EncodeToString(id), MDM: mdm, Template: in.Template, Account: in.Account, DeviceID: in.DeviceID,
		Delivery: in.Delivery, State: store.MDMJobQueued, Created: now, Updated: now, Expires: now.Add(queuedTTL)}
	ev := events.New(now, events.PKCSSubmitted, "", "job", j.ID, "mdm", mdm, "template", j.Template, "account", j.Account,
		"device_id", j.DeviceID, "delivery", j.Delivery, "remote", remote)
	if err := c.cfg.Store.AddMDMJob(ctx, j, ev); err != nil {
		return apiclient.PKCSJob{}, &enrollsvc.Error{Kind: enrollsvc.KindOf(err), Op: "recording a PKCS request", Err: err}
	}
	c.cfg.Recorder.Log(ctx, ev)
	started = true
	c.work.Add(1)
	go c.run(j, d)
	return jobView(j, false), nil
}

// run works on a queued job: a key made by the template's rules, issued by policy, delivered
// encrypted; the key is dropped when run returns.
func (c *Connector) run(j store.MDMJob, d delivery) {
	defer c.work.Done()
	defer func() {
		c.mu.Lock()
		c.queued--
		c.mu.Unlock()
	}()
	c.slots <- struct{}{}
	defer func() { <-c.slots }()
	ctx, cancel := context.WithTimeout(metrics.WithProtocol(context.Background(), metrics.ProtocolMDM), 2*time.Minute)
	defer cancel()
	fields := []any{"job", j.ID, "mdm", j.MDM, "template", j.Template, "account", j.Account, "device_id", j.DeviceID}
	finish := func(id events.ID, kv ...any) {
		now := c.now()
		// Every outcome stays readable as long as an issued result does, then it is erased.
		j.Updated, j.Expires = now, now.Add(c.cfg.ResultTTL)
		ev := events.New(now, id, "", append(fields, kv...)...)
		if err := c.cfg.Store.FinishMDMJob(ctx, j, ev); err != nil {
			c.cfg.Log.Error("recording the outcome of a PKCS request", "job", j.ID, "error", err)
			return
		}
		c.cfg.Recorder.Log(ctx, ev)
	}
	res, key, err := c.cfg.Core.EnrollServerKey(ctx, enrollsvc.ServerKeyRequest{Template: j.Template, Account: j.Account,
		Requester: Requester(j.MDM)})
	if err != nil {
		j.State, j.Reason = store.MDMJobFailed, err.Error()
		finish(events.PKCSFailed, "reason", j.Reason)
		return
	}
	j.RequestID = res.RequestID
	if res.Status != enrollsvc.StatusIssued || key == nil {
		j.State, j.Reason = store.MDMJobRefused, strings.Join(res.Reasons, "; ")
		finish(events.PKCSRefused, "request_id", res.RequestID, "reasons", res.Reasons)
		return
	}
	j.Serial = certutil.SerialString(res.Certificate.SerialNumber)
	out, format, err := c.seal(key, res.Certificate, d)
	key = nil
	if err != nil {
		j.State, j.Reason = store.MDMJobFailed, "the certificate was issued (serial "+j.Serial+") but its PKCS#12 could not be made: "+err.Error()
		finish(events.PKCSFailed, "request_id", res.RequestID, "serial", j.Serial, "reason", j.Reason)
		return
	}
	j.State, j.Result = store.MDMJobIssued, out
	sum := sha256.Sum256(res.Certificate.Raw)
	finish(events.PKCSIssued, "request_id", res.RequestID, "serial", j.Serial, "format", format,
		"thumbprint_sha256", hex.EncodeToString(sum[:]), "not_after", res.Certificate.NotAfter)
}

// seal makes the PKCS#12 of key and cert (with the CA chain) for its delivery.
func (c *Connector) seal(key crypto.Signer, cert *x509.Certificate, d delivery) ([]byte, string, error) {
	if d.device == nil {
		pfx, err := pkcs12.Modern2023.WithIterations(pbkdf2Iterations).Encode(key, cert, c.cfg.Chain, d.password)
		return pfx, FormatPKCS12, err
	}
	// Inside the envelope, the PKCS#12's own password is empty: the envelope is its protection,
	// and only the device's private key opens it.
	pfx, err := pkcs12.Modern2023.Encode(key, cert, c.cfg.Chain, "")
	if err != nil {
		return nil, "", err
	}
	env, err := cms.EncryptOAEP(pfx, d.device, d.cert, cms.AES256CBC)
	clear(pfx)
	return env, FormatEnveloped, err
}

// ParseRecipient reads a device's RSA key (at least 2048 bits) from one PEM block: CERTIFICATE
// or PUBLIC KEY.
func ParseRecipient(p []byte) (*rsa.PublicKey, *x509.Certificate, error) {
	blk, rest := pem.Decode(p)
	if blk == nil || len(strings.TrimSpace(string(rest))) > 0 {
		return nil, nil, errors.New("want exactly one PEM block: CERTIFICATE or PUBLIC KEY")
	}
	var pub any
	var cert *x509.Certificate
	switch blk.Type {
	case "CERTIFICATE":
		var err error
		if cert, err = x509.ParseCertificate(blk.Bytes); err != nil {
			return nil, nil, err
		}
		pub = cert.PublicKey
	case "PUBLIC KEY":
		var err error
		if pub, err = x509.ParsePKIXPublicKey(blk.Bytes); err != nil {
			return nil, nil, err
		}
	default:
		return nil, nil, fmt.Errorf("a PEM %s block is not a recipient: want CERTIFICATE or PUBLIC KEY", blk.Type)
	}
	rk, ok := pub.(*rsa.PublicKey)
	if !ok {
		return nil, nil, errors.New("the device key is not RSA (RSAES-OAEP needs RSA)")
	}
	if rk.N.BitLen() < 2048 {
		return nil, nil, fmt.Errorf("the device key has %d bits; at least 2048 are required", rk.N.BitLen())
	}
	return rk, cert, nil
}

// Job returns a job of mdm's (an administrator: any job) with its result once issued; the first
// time an issued result is returned is recorded.
func (c *Connector) Job(ctx context.Context, mdm, id, remote string) (apiclient.PKCSJob, error) {
	notFound := &enrollsvc.Error{Kind: enrollsvc.KindNotFound, Op: "reading PKCS request " + id,
		Err: errors.New("no such request (or its result expired)")}
	j, err := c.cfg.Store.GetMDMJob(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return apiclient.PKCSJob{}, notFound
	}
	if err != nil {
		return apiclient.PKCSJob{}, err
	}
	if mdm != Admin && j.MDM != mdm {
		return apiclient.PKCSJob{}, notFound // another MDM's job is not even said to exist
	}
	if !j.Expires.After(c.now()) {
		return apiclient.PKCSJob{}, notFound
	}
	if j.State == store.MDMJobIssued {
		ev := events.New(c.now(), events.PKCSCollected, "", "job", j.ID, "mdm", j.MDM, "serial", j.Serial, "by", mdm, "remote", remote)
		first, err := c.cfg.Store.CollectMDMJob(ctx, j.ID, ev.Time, ev)
		if err != nil {
			return apiclient.PKCSJob{}, err
		}
		if first {
			c.cfg.Recorder.Log(ctx, ev)
		}
	}
	return jobView(j, true), nil
}

func jobView(j store.MDMJob, withResult bool) apiclient.PKCSJob {
	v := apiclient.PKCSJob{ID: j.ID, State: j.State, Template: j.Template, Account: j.Account, DeviceID: j.DeviceID,
		Delivery: j.Delivery, RequestID: j.RequestID, Serial: j.Serial, Reason: j.Reason, Created: j.Created,
		Updated: j.Updated, Expires: j.Expires}
	if withResult && j.State == store.MDMJobIssued {
		v.Result = j.Result
		v.Format = FormatPKCS12
		if j.Delivery == DeliveryDeviceKey {
			v.Format = FormatEnveloped
		}
	}
	return v
}

// expire erases the jobs whose time is up; results no one collected are recorded.
func (c *Connector) expire(ctx context.Context) {
	gone, err := c.cfg.Store.ExpireMDMJobs(ctx, c.now())
	if err != nil {
		if ctx.Err() == nil {
			c.cfg.Log.Warn("erasing expired PKCS requests", "error", err)
		}
		return
	}
	var lost []string
	for _, j := range gone {
		if j.State == store.MDMJobIssued && j.Collected.IsZero() || j.State == store.MDMJobQueued {
			lost = append(lost, j.ID)
		}
	}
	if len(lost) > 0 {
		_ = c.cfg.Recorder.Record(ctx, events.PKCSExpired, "", "jobs", lost, "count", len(lost))
	}
}
