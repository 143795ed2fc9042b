// Package mdm is the MDM connector (docs/mdm.md): the MDMs registered to call it, each a name and
// a bearer token with the MDM role; PKCS requests, where the appliance makes a device's key pair,
// has it certified by directory policy through the one issuance gate and delivers it as a PKCS#12
// encrypted to a password (RFC 7292 with PBES2, RFC 8018) or enveloped to the device's RSA key
// (RFC 5652 EnvelopedData with RSAES-OAEP, RFC 8017), queued, polled and expired; and the
// revocations an MDM asks for, of the certificates it obtained. Its audit events are in the
// 4000-4599 ranges of package events.
package mdm

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/enrollment-appliance/aeappliance/apiclient"
	"github.com/enrollment-appliance/aeappliance/enrollsvc"
	"github.com/enrollment-appliance/aeappliance/enrollsvc/events"
	"github.com/enrollment-appliance/aeappliance/enrollsvc/store"
	"github.com/enrollment-appliance/aeappliance/proto/certutil"
)

// Admin is who an administrator's calls are made as (the admin token).
const Admin = "admin"

// Requester is how requests and revocations name an MDM in the store and the audit trail.
func Requester(mdm string) string {
	if mdm == Admin {
		return "admin-api"
	}
	return "mdm:" + mdm
}

// Core is what the connector asks of the service core.
type Core interface {
	EnrollServerKey(ctx context.Context, r enrollsvc.ServerKeyRequest) (*enrollsvc.EnrollResult, crypto.Signer, error)
	Revoke(ctx context.Context, serial string, reason int, by string) (*store.Certificate, error)
	IssueProfile(ctx context.Context, r enrollsvc.ProfileRequest, extra ...store.Event) (*enrollsvc.Issued, error)
}

// Store is what the connector keeps and reads.
type Store interface {
	store.SettingsStore
	store.MDMJobStore
	store.MDMNotificationStore
	store.MDMImportStore
	GetCertificate(ctx context.Context, serial string) (store.Certificate, error)
	ListCertificates(ctx context.Context, f store.CertFilter) ([]store.Certificate, error)
	GetRequest(ctx context.Context, id int64) (store.Request, error)
}

// Config wires the connector. Core, Store, Recorder and Chain are required.
type Config struct {
	Core     Core
	Store    Store
	Recorder *events.Recorder
	// Chain is the CA's certificate and those above it, put in every PKCS#12 after the leaf.
	Chain []*x509.Certificate
	Log   *slog.Logger
	// Workers is how many PKCS requests are worked on at once (default 2); at most MaxQueued wait.
	Workers int
	// ResultTTL is how long an issued PKCS#12 can be collected (default 1h).
	ResultTTL time.Duration
	// Import is the import key of imported PKCS, Accounts the directory's accounts (nil: no
	// imported PKCS).
	Import   *ImportKey
	Accounts Accounts
}

// Limits.
const (
	// MaxQueued is how many PKCS requests may wait on one instance; more are refused (busy).
	MaxQueued = 256
	// queuedTTL is how long a job may stay queued (an instance that stopped mid-way leaves it
	// so): then it is erased, and its poll answers not found.
	queuedTTL = 10 * time.Minute
	// refresh is how often the registered MDMs are read again (changes made on another instance).
	refresh = 10 * time.Second
	// MinPasswordLen is the shortest delivery password accepted.
	MinPasswordLen = 12
)

// Connector is the MDM connector. Make it with New; Run keeps it current.
type Connector struct {
	cfg Config

	mu      sync.Mutex
	clients map[string]client // by hex SHA-256 of the token
	byName  map[string]client
	byCert  map[string]string // MDM name by client certificate serial
	queued  int
	slots   chan struct{}
	work    sync.WaitGroup
	kick    chan struct{} // a notification was queued: deliver now
	// down is when each MDM whose URLs do not answer stopped answering (connector health).
	down map[string]hookFailure
}

// hookFailure is an MDM's URLs not answering: since when, and the last error.
type hookFailure struct {
	Since time.Time
	Error string
}

// client is a registered MDM as the setting keeps it.
type client struct {
	Name        string    `json:"name"`
	TokenSHA256 string    `json:"token_sha256"`
	Created     time.Time `json:"created"`
	By          string    `json:"by"`
	// Hooks are the MDM's URLs the appliance calls (nil: none).
	Hooks *hooks `json:"hooks,omitempty"`
	// Certs are the client certificates issued to the MDM (serials), which open what its token
	// opens, over TLS client authentication.
	Certs []string `json:"certs,omitempty"`
}

// hooks are the URLs of an MDM the appliance calls, and the key its calls are signed with.
type hooks struct {
	ValidateURL string `json:"validate_url,omitempty"`
	NotifyURL   string `json:"notify_url,omitempty"`
	CAPEM       string `json:"ca_pem,omitempty"` // the MDM server's CA ("" the system's)
	// Secret is the HMAC-SHA-256 key of the signature on every call (hex); shown to the
	// administrator once, when the URLs are set.
	Secret string `json:"secret"`
}

// settingClients is the setting holding the registered MDMs: {"clients": [client...]}.
const settingClients = "mdm_clients"

type clientsSetting struct {
	Clients []client `json:"clients"`
}

// index is the position of the MDM name, or KindNotFound for op.
func (cs clientsSetting) index(name, op string) (int, error) {
	i := slices.IndexFunc(cs.Clients, func(cl client) bool { return cl.Name == name })
	if i < 0 {
		return 0, &enrollsvc.Error{Kind: enrollsvc.KindNotFound, Op: op, Err: errors.New("no MDM of that name is registered")}
	}
	return i, nil
}

// New checks cfg and loads the registered MDMs.
func New(ctx context.Context, cfg Config) (*Connector, error) {
	if cfg.Core == nil || cfg.Store == nil || cfg.Recorder == nil || len(cfg.Chain) == 0 {
		return nil, errors.New("mdm: Config needs Core, Store, Recorder and Chain")
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.Workers <= 0 {
		cfg.Workers = 2
	}
	if cfg.ResultTTL <= 0 {
		cfg.ResultTTL = time.Hour
	}
	c := &Connector{cfg: cfg, slots: make(chan struct{}, cfg.Workers), kick: make(chan struct{}, 1)}
	return c, c.load(ctx)
}

// Run reads the registered MDMs again every 10 s, erases expired jobs every 30 s and delivers
// the MDMs' notifications until ctx ends, then waits for the requests being worked on.
func (c *Connector) Run(ctx context.Context) {
	defer c.work.Wait()
	c.work.Add(1)
	go func() {
		defer c.work.Done()
		t := time.NewTicker(deliverEvery)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			case <-c.kick:
			}
			c.deliver(ctx)
		}
	}()
	t := time.NewTicker(refresh)
	defer t.Stop()
	for n := 0; ; n++ {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if err := c.load(ctx); err != nil && ctx.Err() == nil {
			c.cfg.Log.Warn("reading the registered MDMs", "error", err)
		}
		if n%3 == 2 {
			c.expire(ctx)
		}
	}
}

func (c *Connector) now() time.Time { return c.cfg.Recorder.Now() }

// load reads the registered MDMs from the store.
func (c *Connector) load(ctx context.Context) error {
	cs, err := c.read(ctx)
	if err != nil {
		return err
	}
	m := make(map[string]client, len(cs.Clients))
	byName := make(map[string]client, len(cs.Clients))
	byCert := map[string]string{}
	for _, cl := range cs.Clients {
		m[cl.TokenSHA256], byName[cl.Name] = cl, cl
		for _, serial := range cl.Certs {
			byCert[serial] = cl.Name
		}
	}
	c.mu.Lock()
	c.clients, c.byName, c.byCert = m, byName, byCert
	c.mu.Unlock()
	return nil
}

func (c *Connector) read(ctx context.Context) (clientsSetting, error) {
	var cs clientsSetting
	st, err := c.cfg.Store.GetSetting(ctx, settingClients)
	if errors.Is(err, store.ErrNotFound) {
		return cs, nil
	}
	if err != nil {
		return cs, err
	}
	if err := json.Unmarshal(st.Value, &cs); err != nil {
		return cs, fmt.Errorf("setting %q: %w", settingClients, err)
	}
	return cs, nil
}

// Authenticate returns the MDM whose token this is.
func (c *Connector) Authenticate(token string) (string, bool) {
	if token == "" {
		return "", false
	}
	sum := sha256.Sum256([]byte(token))
	c.mu.Lock()
	defer c.mu.Unlock()
	cl, ok := c.clients[hex.EncodeToString(sum[:])]
	return cl.Name, ok
}

// Clients lists the registered MDMs by name.
func (c *Connector) Clients(ctx context.Context) ([]apiclient.MDMClient, error) {
	cs, err := c.read(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]apiclient.MDMClient, 0, len(cs.Clients))
	for _, cl := range cs.Clients {
		v := apiclient.MDMClient{Name: cl.Name, Created: cl.Created, By: cl.By, Certificates: cl.Certs}
		if cl.Hooks != nil {
			v.ValidateURL, v.NotifyURL = cl.Hooks.ValidateURL, cl.Hooks.NotifyURL
		}
		c.mu.Lock()
		if f, ok := c.down[cl.Name]; ok {
			since := f.Since
			v.NotAnsweringSince, v.LastError = &since, f.Error
		}
		c.mu.Unlock()
		out = append(out, v)
	}
	slices.SortFunc(out, func(a, b apiclient.MDMClient) int {
		switch {
		case a.Name < b.Name:
			return -1
		case a.Name > b.Name:
			return 1
		}
		return 0
	})
	return out, nil
}

var validName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

// Add registers an MDM and returns its token, shown this once: only its SHA-256 is kept.
func (c *Connector) Add(ctx context.Context, name, by, remote string) (apiclient.MDMClientAdded, error) {
	if !validName.MatchString(name) || name == Admin {
		return apiclient.MDMClientAdded{}, badRequest("an MDM's name is 1 to 64 letters, digits, '.', '_' or '-' (not %q)", Admin)
	}
	cs, err := c.read(ctx)
	if err != nil {
		return apiclient.MDMClientAdded{}, err
	}
	for _, cl := range cs.Clients {
		if cl.Name == name {
			return apiclient.MDMClientAdded{}, &enrollsvc.Error{Kind: enrollsvc.KindConflict, Op: "adding MDM " + name,
				Err: errors.New("an MDM of that name is registered (remove it first to give it a new token)")}
		}
	}
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return apiclient.MDMClientAdded{}, err
	}
	token := hex.EncodeToString(b)
	sum := sha256.Sum256([]byte(token))
	now := c.now()
	cl := client{Name: name, TokenSHA256: hex.EncodeToString(sum[:]), Created: now, By: by}
	cs.Clients = append(cs.Clients, cl)
	if err := c.put(ctx, cs, events.New(now, events.MDMAdded, "", "mdm", name, "by", by, "remote", remote)); err != nil {
		return apiclient.MDMClientAdded{}, err
	}
	return apiclient.MDMClientAdded{MDMClient: apiclient.MDMClient{Name: name, Created: now, By: by}, Token: token}, nil
}

// Remove withdraws an MDM's credential (at once on this instance, within 10 s on the others).
func (c *Connector) Remove(ctx context.Context, name, by, remote string) error {
	cs, err := c.read(ctx)
	if err != nil {
		return err
	}
	i, err := cs.index(name, "removing MDM "+name)
	if err != nil {
		return err
	}
	certs := cs.Clients[i].Certs
	cs.Clients = slices.Delete(cs.Clients, i, i+1)
	if err := c.put(ctx, cs, events.New(c.now(), events.MDMRemoved, "", "mdm", name, "by", by, "remote", remote, "certs", certs)); err != nil {
		return err
	}
	// Its client certificates are revoked too: they open nothing here any more, and nothing
	// elsewhere that trusts this CA.
	for _, serial := range certs {
		if _, err := c.cfg.Core.Revoke(ctx, serial, reasonCessation, by); err != nil && enrollsvc.KindOf(err) != enrollsvc.KindConflict {
			return fmt.Errorf("MDM %s removed, but revoking its client certificate %s: %w", name, serial, err)
		}
	}
	return nil
}

// reasonCessation is RFC 5280 CRLReason cessationOfOperation.
const reasonCessation = 5

// IssueCert issues a client certificate to a registered MDM for the key of csrPEM (a PEM
// CERTIFICATE REQUEST whose signature verifies), through the issuance gate: CN "MDM NAME",
// clientAuth, for a year. It opens what the MDM's token opens, over TLS client authentication.
func (c *Connector) IssueCert(ctx context.Context, name, csrPEM, by, remote string) (*x509.Certificate, error) {
	blk, rest := pem.Decode([]byte(csrPEM))
	if blk == nil || (blk.Type != "CERTIFICATE REQUEST" && blk.Type != "NEW CERTIFICATE REQUEST") || strings.TrimSpace(string(rest)) != "" {
		return nil, badRequest("csr: want exactly one PEM CERTIFICATE REQUEST")
	}
	csr, err := x509.ParseCertificateRequest(blk.Bytes)
	if err == nil {
		err = csr.CheckSignature()
	}
	if err != nil {
		return nil, badRequest("csr: %v", err)
	}
	cs, err := c.read(ctx)
	if err != nil {
		return nil, err
	}
	i, err := cs.index(name, "issuing a certificate to MDM "+name)
	if err != nil {
		return nil, err
	}
	res, err := c.cfg.Core.IssueProfile(ctx, enrollsvc.ProfileRequest{Profile: enrollsvc.ProfileMDMClient,
		Subject: pkix.Name{CommonName: "MDM " + name, OrganizationalUnit: []string{"MDM connector"}}, PublicKey: csr.PublicKey,
		Validity: 365 * 24 * time.Hour, Meta: enrollsvc.Meta{Requester: by, Account: "mdm:" + name}})
	if err != nil {
		return nil, err
	}
	serial := certutil.SerialString(res.Certificate.SerialNumber)
	cs.Clients[i].Certs = append(cs.Clients[i].Certs, serial)
	if err := c.put(ctx, cs, events.New(c.now(), events.MDMCertIssued, "", "mdm", name, "serial", serial, "by", by, "remote", remote)); err != nil {
		return nil, err
	}
	return res.Certificate, nil
}

// AuthenticateCert returns the MDM a verified TLS client certificate was issued to, when it is
// still valid in the store (not revoked).
func (c *Connector) AuthenticateCert(ctx context.Context, cert *x509.Certificate) (string, bool) {
	if cert == nil {
		return "", false
	}
	serial := certutil.SerialString(cert.SerialNumber)
	c.mu.Lock()
	name, ok := c.byCert[serial]
	c.mu.Unlock()
	if !ok {
		return "", false
	}
	sc, err := c.cfg.Store.GetCertificate(ctx, serial)
	if err != nil || sc.Status != store.CertValid || !bytes.Equal(sc.DER, cert.Raw) {
		return "", false
	}
	return name, true
}

func (c *Connector) put(ctx context.Context, cs clientsSetting, ev store.Event) error {
	if cs.Clients == nil {
		cs.Clients = []client{}
	}
	v, err := json.Marshal(cs)
	if err != nil {
		return err
	}
	by, _ := ev.Fields["by"].(string)
	if err := c.cfg.Store.PutSetting(ctx, store.Setting{Name: settingClients, Value: v, Updated: ev.Time, By: by}, ev); err != nil {
		return &enrollsvc.Error{Kind: enrollsvc.KindOf(err), Op: "changing the registered MDMs", Err: err}
	}
	c.cfg.Recorder.Log(ctx, ev)
	return c.load(ctx)
}

// Denied records an MDM credential used outside its role.
func (c *Connector) Denied(ctx context.Context, mdm, method, path, remote string) {
	_ = c.cfg.Recorder.Record(ctx, events.MDMDenied, "", "mdm", mdm, "method", method, "path", path, "remote", remote)
}

func badRequest(format string, a ...any) error {
	return &enrollsvc.Error{Kind: enrollsvc.KindBadRequest, Op: "reading the request", Err: fmt.Errorf(format, a...)}
}
