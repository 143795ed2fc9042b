// Package daemon wires a data directory into a running enrollment service: it opens the HSM
// and finds the CA key, checks the key against the CA certificate, opens the store, builds the
// issuer and the service, keeps the local API's TLS certificate current and serves the API
// until its context ends. Both `enrollsvc serve` and the appliance's supervisor use it.
package daemon

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/enrollment-appliance/aeappliance/apiclient"
	"github.com/enrollment-appliance/aeappliance/config"
	"github.com/enrollment-appliance/aeappliance/enrollsvc"
	"github.com/enrollment-appliance/aeappliance/enrollsvc/api"
	"github.com/enrollment-appliance/aeappliance/enrollsvc/events"
	"github.com/enrollment-appliance/aeappliance/enrollsvc/issue"
	"github.com/enrollment-appliance/aeappliance/enrollsvc/metrics"
	"github.com/enrollment-appliance/aeappliance/enrollsvc/remotelog"
	"github.com/enrollment-appliance/aeappliance/enrollsvc/store"
	"github.com/enrollment-appliance/aeappliance/hsm"
	"github.com/enrollment-appliance/aeappliance/proto/certutil"
)

// Runtime is an opened data directory.
type Runtime struct {
	Dir      string
	Config   *config.Config
	KeyStore *hsm.KeyStore
	Key      *hsm.Key
	CACert   *x509.Certificate
	CAChain  []*x509.Certificate // above a subordinate CA, up to the root; nil for a root
	Store    store.Store
	Issuer   *issue.Issuer
	Service  *enrollsvc.Service
	Recorder *events.Recorder
	Log      *slog.Logger
	Started  time.Time

	directory  *lazyDirectory                  // nil without a directory
	ready      atomic.Pointer[apiclient.Ready] // the monitor's last readiness verdict (GET /api/v1/ready)
	metrics    *metrics.Metrics                // what GET /metrics serves (Serve)
	settings   *opsSettings                    // the operations settings, cached (Serve)
	audit      *auditStream                    // the audit events to remote syslog (Serve)
	logTee     *remotelog.Tee                  // the operational log to remote syslog (nil: not teed)
	version    string                          // the service's (Serve)
	firmware   api.FirmwareAdmin               // the appliance's slots (nil elsewhere)
	lastBackup atomic.Int64                    // unix time of the last complete backup, 0: none known
	scheduler  *scheduler                      // the scheduled backups (Serve)
	revocation *revocation                     // nil without CRL distribution and SCEP
	xchg       exchangeCert                    // the CA exchange certificate (key archival), made when the web services start
	kerberos   *kerberosAuth                   // nil without the enrollment web services
	// enrollBases are this instance's enrollment web services base URLs (once they listen);
	// peers caches the other instances' (peerEnrollURLs).
	enrollBases []string
	peers       struct {
		mu   sync.Mutex
		urls []string
		at   time.Time
	}

	limitsOnce sync.Once
	limits     *limits // limitsOf
	limitsErr  error

	startup *startup // the start's steps, written once the API serves (config.StartupFile)
}

// Open opens the data directory dir: configuration, HSM and CA key, store. On error nothing
// stays open.
func Open(ctx context.Context, dir string, log *slog.Logger) (_ *Runtime, err error) {
	if log == nil {
		log = slog.Default()
	}
	began := time.Now()
	cfg, err := config.Load(dir)
	if err != nil {
		return nil, err
	}
	caCert, err := ReadCACert(config.Path(dir, cfg.CACert))
	if err != nil {
		return nil, err
	}
	rt := &Runtime{Dir: dir, Config: cfg, CACert: caCert, Log: log, Started: began, startup: newStartup(began)}
	if cfg.CAChain != "" {
		if rt.CAChain, err = ReadCAChain(config.Path(dir, cfg.CAChain), caCert); err != nil {
			return nil, err
		}
	}
	defer func() {
		if err != nil {
			rt.Close()
		}
	}()
	if cfg.HSM.SoftHSMConf != "" {
		// SoftHSM takes its configuration only from the environment of the process.
		if err := os.Setenv("SOFTHSM2_CONF", config.Path(dir, cfg.HSM.SoftHSMConf)); err != nil {
			return nil, fmt.Errorf("setting SOFTHSM2_CONF: %w", err)
		}
	}
	pin, err := hsm.ReadPIN(config.Path(dir, cfg.HSM.PINFile), cfg.HSM.PINEnv)
	if err != nil {
		return nil, fmt.Errorf("reading the HSM PIN: %w", err)
	}
	rt.KeyStore, err = hsm.Open(ctx, hsm.Config{ModulePath: cfg.HSM.Module, TokenLabel: cfg.HSM.TokenLabel,
		TokenSerial: cfg.HSM.TokenSerial, PIN: pin, Sessions: cfg.HSM.Sessions, Logger: log})
	if err != nil {
		return nil, fmt.Errorf("opening the HSM: %w", err)
	}
	uri, err := hsm.ParseURI(cfg.HSM.KeyURI)
	if err != nil {
		return nil, fmt.Errorf("hsm.key_uri: %w", err)
	}
	rt.Key, err = rt.KeyStore.FindKey(ctx, uri)
	if err != nil {
		return nil, fmt.Errorf("finding the CA key %s: %w", uri, err)
	}
	if !certutil.PublicKeysEqual(caCert.PublicKey, rt.Key.Public()) {
		return nil, fmt.Errorf("the CA key %s in the HSM does not match the CA certificate %s", uri, config.Path(dir, cfg.CACert))
	}
	rt.startup.step("HSM")
	rt.Store, err = OpenStore(ctx, dir, cfg, log)
	if err != nil {
		return nil, fmt.Errorf("opening the store: %w", err)
	}
	if err := rt.checkCluster(ctx); err != nil {
		return nil, err
	}
	rt.startup.step("store")
	rt.Recorder = events.NewRecorder(rt.Store, log, nil)
	rt.Issuer, err = issue.New(issue.Config{CACert: caCert, Signer: rt.Key, CRLURLs: cfg.CRLURLs,
		OCSPURLs: cfg.OCSPURLs, CAIssuerURLs: cfg.CAIssuerURLs})
	if err != nil {
		return nil, err
	}
	rt.Service = enrollsvc.New(rt.Store, rt.Issuer, rt.Recorder, log)
	if err := rt.openDirectory(); err != nil {
		return nil, err
	}
	if e := cfg.Enroll; e != nil {
		rt.kerberos = newKerberosAuth(config.Path(dir, config.EnrollKeytab), e.Hostnames, log)
	}
	return rt, nil
}

// OpenStore opens the store cfg names: the SQLite file in dir, or the shared PostgreSQL
// database (its CA, password and client certificate files in dir).
func OpenStore(ctx context.Context, dir string, cfg *config.Config, log *slog.Logger) (store.Store, error) {
	p := cfg.Postgres
	if p == nil {
		s, err := store.Open(ctx, config.Path(dir, cfg.Store), log)
		if err != nil {
			return nil, err // not a nil *SQLite in a non-nil Store
		}
		return s, nil
	}
	s, err := store.OpenPostgres(ctx, store.PGConfig{URL: p.URL, CAFile: config.Path(dir, p.CAFile),
		PasswordFile: config.Path(dir, p.PasswordFile), ClientCertFile: config.Path(dir, p.ClientCertFile),
		ClientKeyFile: config.Path(dir, p.ClientKeyFile), Instance: instanceName(cfg)}, log)
	if err != nil {
		return nil, err
	}
	return s, nil
}

// checkCluster makes sure the store serves this CA: it records the CA (and the settings every
// instance shares) in a store that has none, and refuses a store that serves another CA.
func (rt *Runtime) checkCluster(ctx context.Context) error {
	cs, ok := rt.Store.(store.ClusterStore)
	if !ok {
		return nil
	}
	c, err := cs.GetCluster(ctx)
	switch {
	case errors.Is(err, store.ErrNotFound):
		shared, err := rt.Config.Shared(rt.Dir)
		if err != nil {
			return err
		}
		settings, err := json.Marshal(shared)
		if err != nil {
			return err
		}
		var chain strings.Builder
		for _, c := range rt.CAChain {
			chain.Write(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw}))
		}
		now := time.Now()
		return cs.InitCluster(ctx, store.Cluster{CACert: rt.CACert.Raw, CAChain: chain.String(), KeyURI: rt.Config.HSM.KeyURI,
			Settings: settings, Created: now}, events.New(now, events.ClusterCARecorded, "", "subject", rt.CACert.Subject.String(),
			"key", rt.Config.HSM.KeyURI, "instance", rt.Config.Instance))
	case err != nil:
		return fmt.Errorf("reading the CA the store serves: %w", err)
	case !bytes.Equal(c.CACert, rt.CACert.Raw):
		other := "another CA"
		if oc, err := x509.ParseCertificate(c.CACert); err == nil {
			other = oc.Subject.String()
		}
		return fmt.Errorf("the store serves %s, not this instance's CA %s: refusing to serve from it", other, rt.CACert.Subject)
	}
	return nil
}

// Close closes the store and the HSM.
func (rt *Runtime) Close() {
	if rt.directory != nil {
		rt.directory.Close()
	}
	if rt.Store != nil {
		if err := rt.Store.Close(); err != nil {
			rt.Log.Error("closing the store", "error", err)
		}
	}
	if rt.KeyStore != nil {
		if err := rt.KeyStore.Close(); err != nil {
			rt.Log.Error("closing the HSM", "error", err)
		}
	}
}

// ReadCAChain reads the certificates above the CA (PEM) and checks that they chain caCert
// to a self-signed root.
func ReadCAChain(path string, caCert *x509.Certificate) ([]*x509.Certificate, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading the CA chain: %w", err)
	}
	var chain []*x509.Certificate
	for {
		var blk *pem.Block
		if blk, b = pem.Decode(b); blk == nil {
			break
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil || blk.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("%s: corrupt CA chain: certificate %d", path, len(chain)+1)
		}
		chain = append(chain, c)
	}
	child := caCert
	for i, c := range chain {
		if err := child.CheckSignatureFrom(c); err != nil {
			return nil, fmt.Errorf("%s: certificate %d (%s) did not sign %s: %w", path, i+1, c.Subject, child.Subject, err)
		}
		child = c
	}
	if len(chain) == 0 || child.CheckSignatureFrom(child) != nil {
		return nil, fmt.Errorf("%s: the CA chain does not end in a self-signed root", path)
	}
	return chain, nil
}

// ChainPEM is the CA certificate followed by the certificates above it, in PEM.
func (rt *Runtime) ChainPEM() []byte {
	b := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: rt.CACert.Raw})
	for _, c := range rt.CAChain {
		b = append(b, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	return b
}

// ReadCACert reads a PEM CA certificate file.
func ReadCACert(path string) (*x509.Certificate, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading the CA certificate: %w", err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "CERTIFICATE" {
		return nil, fmt.Errorf("%s: corrupt CA certificate: no PEM CERTIFICATE block", path)
	}
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%s: corrupt CA certificate: %w", path, err)
	}
	if !c.IsCA {
		return nil, errors.New(path + ": not a CA certificate")
	}
	return c, nil
}
