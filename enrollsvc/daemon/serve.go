package daemon

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/enrollment-appliance/aeappliance/apiclient"
	"github.com/enrollment-appliance/aeappliance/config"
	"github.com/enrollment-appliance/aeappliance/enrollsvc"
	"github.com/enrollment-appliance/aeappliance/enrollsvc/api"
	"github.com/enrollment-appliance/aeappliance/enrollsvc/backup"
	"github.com/enrollment-appliance/aeappliance/enrollsvc/events"
	"github.com/enrollment-appliance/aeappliance/enrollsvc/mdm"
	"github.com/enrollment-appliance/aeappliance/enrollsvc/remotelog"
	"github.com/enrollment-appliance/aeappliance/enrollsvc/store"
	"github.com/enrollment-appliance/aeappliance/proto/certutil"
)

// APICertRenewBefore: the API's TLS certificate is replaced when it has less than this left.
const APICertRenewBefore = 30 * 24 * time.Hour

// APIHosts are the names the local API's certificate covers for a listen address.
func APIHosts(listen string) []string {
	hosts := []string{"localhost", "127.0.0.1", "::1"}
	if h, _, err := net.SplitHostPort(listen); err == nil && h != "" && h != "0.0.0.0" && h != "::" && !slices.Contains(hosts, h) {
		hosts = append(hosts, h)
	}
	return hosts
}

// EnsureAPICert returns the local API's TLS certificate, issuing a new one from this CA (and
// storing it like any other certificate) when there is none, it is not from this CA, expires
// within APICertRenewBefore, or misses one of hosts.
func (rt *Runtime) EnsureAPICert(ctx context.Context, hosts []string) (tls.Certificate, error) {
	return rt.ensureTLSCert(ctx, config.Path(rt.Dir, rt.Config.API.CertFile), config.Path(rt.Dir, rt.Config.API.KeyFile),
		hosts, enrollsvc.Meta{Requester: "enrollsvc", Account: "enrollsvc-api", Template: "api-tls"}, "enrollsvc local API")
}

// ensureTLSCert keeps a server certificate for hosts, issued by this CA, at certPath/keyPath.
func (rt *Runtime) ensureTLSCert(ctx context.Context, certPath, keyPath string, hosts []string, m enrollsvc.Meta, ou string) (tls.Certificate, error) {
	if kp, err := tls.LoadX509KeyPair(certPath, keyPath); err == nil && rt.tlsCertGood(kp, hosts) {
		return kp, nil
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	r := enrollsvc.ProfileRequest{Profile: enrollsvc.ProfileServer,
		Subject:   pkix.Name{CommonName: hosts[0], OrganizationalUnit: []string{ou}},
		PublicKey: key.Public(), Validity: 365 * 24 * time.Hour, Meta: m}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			r.IPAddresses = append(r.IPAddresses, ip)
		} else {
			r.DNSNames = append(r.DNSNames, h)
		}
	}
	res, err := rt.Service.IssueProfile(ctx, r)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("issuing the %s TLS certificate: %w", ou, err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return tls.Certificate{}, err
	}
	if err := os.MkdirAll(filepath.Dir(keyPath), 0o700); err != nil {
		return tls.Certificate{}, err
	}
	if err := config.WriteFileAtomic(keyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		return tls.Certificate{}, err
	}
	chain := append(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: res.Certificate.Raw}), rt.ChainPEM()...)
	if err := config.WriteFileAtomic(certPath, chain, 0o644); err != nil {
		return tls.Certificate{}, err
	}
	return tls.X509KeyPair(chain, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}))
}

func (rt *Runtime) tlsCertGood(kp tls.Certificate, hosts []string) bool {
	leaf, err := x509.ParseCertificate(kp.Certificate[0])
	if err != nil || leaf.CheckSignatureFrom(rt.CACert) != nil || time.Until(leaf.NotAfter) < APICertRenewBefore {
		return false
	}
	for _, h := range hosts {
		if leaf.VerifyHostname(h) != nil {
			return false
		}
	}
	return true
}

// ServeOptions adjust Serve.
type ServeOptions struct {
	APIListen string            // overrides the configured address; ":0" picks a free port
	OnListen  func(addr string) // called once the API listens
	// EnrollListen overrides the enrollment web services' address; OnEnrollListen is called once
	// they listen (only when they are configured).
	EnrollListen   string
	OnEnrollListen func(addr string)
	// HTTPListen overrides the plain-HTTP listener's address (CRLs, OCSP, AIA, SCEP);
	// OnHTTPListen is called once it listens (only when configured: init --http-url).
	HTTPListen   string
	OnHTTPListen func(addr string)
	// HTTPListener, when set, is the plain-HTTP listener's socket, bound by the caller (it takes
	// precedence over HTTPListen). A caller that writes the listener's address into the CA's
	// URLs before the service starts (the tests) binds it first, so that nothing else can take
	// the port in between. Serve closes it when it returns.
	HTTPListener net.Listener
	// HealthInterval is how often HSM and store are checked for the audit log (default 30s).
	HealthInterval time.Duration
	// Version is the service's version, shown by status and recorded when it starts (default
	// "dev"); the command sets it from its build.
	Version string
	// Firmware is the appliance's firmware slots (nil elsewhere), handed in by the command so
	// that the service does not import firmware/.
	Firmware api.FirmwareAdmin
	// LogTee is the service's log handler, which the remote syslog setting connects to a
	// server (nil: the operational log stays local; the audit stream is sent regardless).
	LogTee *remotelog.Tee
	// Began is how the command's start went before Open, steps as the startup file shows
	// them ("program load and init 0.35s, confinement 0.02s"), and ProcessStart when the
	// process was created (ProcessStart()); both may be empty.
	Began        string
	ProcessStart time.Time
}

// Check refuses options that cannot take effect with the configuration cfg: an address for a
// listener the configuration does not have would otherwise be ignored without a word.
func (o ServeOptions) Check(cfg *config.Config) error {
	if (o.HTTPListen != "" || o.HTTPListener != nil) && cfg.HTTP == nil {
		return errors.New("--http-listen: the plain-HTTP listener is not configured (enrollsvc init --http-url, or provision finish --http-url)")
	}
	if o.EnrollListen != "" && cfg.Enroll == nil {
		return errors.New("--enroll-listen: the enrollment web services are not configured (they need the directory: enrollsvc init --ldap-url ..., or provision directory)")
	}
	return nil
}

// Serve runs the service on the data directory dir until ctx ends. It changes nothing when o
// does not pass Check.
func Serve(ctx context.Context, dir string, o ServeOptions, rt *Runtime) error {
	if o.HTTPListener != nil {
		defer o.HTTPListener.Close() // already closed when the listener served; harmless then
	}
	if err := o.Check(rt.Config); err != nil {
		return err
	}
	if o.Version == "" {
		o.Version = "dev"
	}
	if err := rt.checkVersions(ctx, o.Version); err != nil {
		return err
	}
	listen := rt.Config.API.Listen
	if o.APIListen != "" {
		listen = o.APIListen
	}
	if _, _, err := net.SplitHostPort(listen); err != nil {
		return fmt.Errorf("API listen address %q: %w", listen, err)
	}
	kp, err := rt.EnsureAPICert(ctx, APIHosts(listen))
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return fmt.Errorf("listening for the API: %w", err)
	}
	defer ln.Close()
	addr := ln.Addr().String()
	addrFile := config.Path(dir, config.APIAddrFile)
	if err := config.WriteFileAtomic(addrFile, []byte(addr+"\n"), 0o644); err != nil {
		return err
	}
	defer os.Remove(addrFile)
	slot := ""
	if o.Firmware != nil {
		if fs, err := o.Firmware.FirmwareStatus(ctx); err == nil {
			slot = fs.Running
		}
	}
	rt.version, rt.firmware = o.Version, o.Firmware
	if last, err := rt.LastBackup(ctx); err == nil && !last.Time.IsZero() {
		rt.lastBackup.Store(last.Time.Unix())
	}
	if c, ok := rt.Store.(interface{ Chain() string }); ok {
		rt.audit = newAuditStream(rt, c.Chain(), rt.InstanceName())
	}
	if rt.logTee = o.LogTee; rt.logTee != nil {
		rt.logTee.SetHostname(rt.InstanceName())
	}
	rt.metrics = rt.startMetrics(o.Version, slot)
	rt.scheduler = &scheduler{rt: rt, now: time.Now}
	if rt.settings, err = rt.newOpsSettings(ctx); err != nil {
		return fmt.Errorf("reading the operations settings: %w", err)
	}
	mon := &monitor{rt: rt}
	rt.startup.step("API certificate and settings")
	if err := rt.startRevocation(ctx); err != nil {
		return err
	}
	rt.startup.step("first CRLs and SCEP")
	mon.check(ctx) // the health check has a verdict before the API answers
	rt.startup.step("health check")
	lim, err := rt.limitsOf()
	if err != nil {
		return err
	}
	acfg := api.Config{TokenSHA256: rt.Config.API.TokenHash, CACert: rt.CACert, CAChain: rt.CAChain, Store: rt.Store,
		Service: rt.Service, Revoker: rt.Service, Archive: rt.Service, Recorder: rt.Recorder, Logger: rt.Log, Firmware: o.Firmware,
		Proxies: lim.proxies, Health: lim.health,
		Status:  func(ctx context.Context) apiclient.Status { return rt.Status(ctx, addr, o.Version) },
		Healthy: rt.healthy, Ready: rt.Ready, Cluster: rt.ClusterStatus, Metrics: rt.metrics,
		Backup: func(ctx context.Context, w io.Writer, in apiclient.BackupRequest, remote string) error {
			_, err := rt.Backup(ctx, w, backup.Encryption{Passphrase: in.Passphrase, Recipients: in.Recipients}, "admin-api", remote)
			return err
		}}
	if rt.settings != nil {
		acfg.Settings = rt.settings
	}
	if rt.directory != nil {
		acfg.Enroller = rt.Service
		acfg.SCEP = rt.Service
		acfg.Agents = rt.Service
		acfg.AgentAuth, acfg.AgentLimit = rt.Service, lim.agentLogon
		if ms, ok := rt.Store.(mdm.Store); ok {
			importCert, importKey, err := rt.ensureRAKey(ctx, mdmImport)
			if err != nil {
				return err
			}
			rejection, err := rt.secret(scepRejectionKeyFile)
			if err != nil {
				return fmt.Errorf("the MDM connector: %w", err)
			}
			conn, err := mdm.New(ctx, mdm.Config{Core: rt.Service, Store: ms, Recorder: rt.Recorder,
				Chain: append([]*x509.Certificate{rt.CACert}, rt.CAChain...), Log: rt.Log, Accounts: rt.Service,
				Import: &mdm.ImportKey{Cert: importCert, Key: importKey, RejectionKey: rejection}})
			if err != nil {
				return fmt.Errorf("the MDM connector: %w", err)
			}
			mctx, stopMDM := context.WithCancel(ctx)
			mdone := make(chan struct{})
			go func() { conn.Run(mctx); close(mdone) }()
			defer func() { stopMDM(); <-mdone }()
			acfg.MDM = conn
			rt.Service.WithMDM(conn)
		}
	}
	if rt.kerberos != nil {
		acfg.Keytabs = rt
	}
	if rt.revocation != nil && rt.revocation.publisher != nil {
		acfg.CRL = rt
	}
	srv, err := api.New(acfg)
	if err != nil {
		return err
	}
	ti := rt.KeyStore.TokenInfo()
	_ = rt.Recorder.Record(ctx, events.ServiceStarted, "", "api", addr, "version", o.Version,
		"ca", rt.CACert.Subject.String(), "token", ti.Label, "key", rt.Key.URI().String())
	if o.OnListen != nil {
		o.OnListen(addr)
	}
	rt.startup.step("API and start event")
	ectx, stopEnroll := context.WithCancel(ctx)
	defer stopEnroll()
	enrollAddr, enrollDone, err := rt.startEnroll(ectx, o.EnrollListen)
	if err != nil {
		return err
	}
	if enrollDone != nil {
		defer func() {
			stopEnroll()
			if err := <-enrollDone; err != nil {
				rt.Log.Error("enrollment web services", "error", err)
			}
			os.Remove(config.Path(dir, config.EnrollAddr))
		}()
		if o.OnEnrollListen != nil {
			o.OnEnrollListen(enrollAddr)
		}
	}
	httpAddr, httpDone, err := rt.startHTTP(ectx, o.HTTPListen, o.HTTPListener)
	if err != nil {
		return err
	}
	rt.startup.step("other listeners")
	if httpDone != nil {
		defer func() {
			stopEnroll()
			if err := <-httpDone; err != nil {
				rt.Log.Error("plain-HTTP listener", "error", err)
			}
		}()
		if o.OnHTTPListen != nil {
			o.OnHTTPListen(httpAddr)
		}
	}
	var wg sync.WaitGroup
	mctx, stop := context.WithCancel(ctx)
	rt.runRevocation(mctx, &wg)
	in := store.Instance{Name: rt.InstanceName(), Version: o.Version, Started: rt.Started, Addresses: []string{"https://" + addr}}
	if enrollDone != nil {
		in.Addresses = append(in.Addresses, "https://"+enrollAddr)
		in.EnrollURLs = rt.enrollBases
	}
	if httpDone != nil {
		in.Addresses = append(in.Addresses, "http://"+httpAddr)
	}
	wg.Add(1)
	go func() { defer wg.Done(); rt.runCluster(mctx, in) }()
	wg.Add(1)
	go func() { defer wg.Done(); mon.run(mctx, o.HealthInterval) }()
	if rt.settings != nil {
		wg.Add(1)
		go func() { defer wg.Done(); rt.settings.run(mctx) }()
	}
	if rt.audit != nil {
		wg.Add(1)
		go func() { defer wg.Done(); rt.audit.run(mctx) }()
	}
	wg.Add(1)
	go func() { defer wg.Done(); rt.scheduler.run(mctx, 30*time.Second) }()
	if rt.logTee != nil {
		wg.Add(1)
		go func() { defer wg.Done(); rt.logTee.Run(mctx) }()
	}
	// A client certificate is asked for and, when given, must chain to this CA: MDMs and sign-on
	// servers may authenticate with one (the API checks it against the store); everyone else
	// sends a token.
	clientCAs := x509.NewCertPool()
	clientCAs.AddCert(rt.CACert)
	rt.startup.step("background tasks")
	rt.writeStartup(o)
	defer os.Remove(config.Path(dir, config.StartupFile))
	err = srv.Serve(ctx, ln, &tls.Config{Certificates: []tls.Certificate{kp}, MinVersion: tls.VersionTLS12,
		ClientAuth: tls.RequestClientCert, ClientCAs: clientCAs, VerifyPeerCertificate: certutil.ClientCertVerifier(clientCAs)})
	stop()
	wg.Wait()
	_ = rt.Recorder.Record(context.WithoutCancel(ctx), events.ServiceStopping, "", "api", addr)
	return err
}

// Status reports on the service's parts; addr is where the API listens, version the service's.
func (rt *Runtime) Status(ctx context.Context, addr, version string) apiclient.Status {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	ti := rt.KeyStore.TokenInfo()
	st := apiclient.Status{Service: "enrollsvc", Version: version, Started: rt.Started, API: addr,
		CA: apiclient.CAStatus{Name: rt.Config.CAName, Subject: rt.CACert.Subject.String(),
			Serial: certutil.SerialString(rt.CACert.SerialNumber), NotBefore: rt.CACert.NotBefore,
			NotAfter: rt.CACert.NotAfter, KeyURI: rt.Key.URI().String(), KeyType: string(rt.Key.Type())},
		HSM: apiclient.HSMStatus{OK: true, Module: rt.Config.HSM.Module, TokenLabel: ti.Label, TokenSerial: ti.Serial,
			Manufacturer: ti.Manufacturer, Model: ti.Model},
		Store: apiclient.StoreStatus{OK: true}}
	if err := rt.KeyStore.Health(ctx); err != nil {
		st.HSM.OK, st.HSM.Error = false, err.Error()
	}
	if err := rt.Store.Ping(ctx); err != nil {
		st.Store.OK, st.Store.Error = false, err.Error()
	} else if n, err := rt.Store.CountCertificates(ctx); err != nil {
		st.Store.OK, st.Store.Error = false, err.Error()
	} else {
		st.Store.Certificates = n
	}
	st.Directory = rt.directoryStatus(ctx)
	st.Backup = rt.backupInfo(ctx)
	sum := rt.metrics.Summary()
	inUse, size := rt.KeyStore.Sessions()
	st.Activity = apiclient.Activity{Issued: sum.Issued, Failed: sum.Failed, Refused: sum.Refused, HSMErrors: sum.HSMErrors,
		HSMSignP50: sum.HSMSignP50, HSMSignP99: sum.HSMSignP99, HSMSessions: fmt.Sprintf("%d/%d", inUse, size)}
	if ops, err := opsStats(ctx, rt.Store, rt.Recorder.Now()); err != nil {
		st.Activity.IssuedToday, st.Activity.Pending = -1, -1
		if st.Store.OK {
			st.Store.OK, st.Store.Error = false, err.Error()
		}
	} else {
		st.Activity.IssuedToday, st.Activity.Pending = ops.IssuedToday, ops.Pending
	}
	st.Healthy = st.HSM.OK && st.Store.OK && time.Now().Before(rt.CACert.NotAfter) && (!st.Directory.Configured || st.Directory.OK)
	return st
}

// monitor records health changes of the HSM and the store as audit events, and keeps the verdict
// the unauthenticated health check serves (Runtime.healthy): HSM, store, directory and CA
// validity, checked every HealthInterval in the background, so that asking costs no signature,
// query or LDAP search.
type monitor struct {
	rt     *Runtime
	hsmBad bool
	dbBad  bool
}

func (m *monitor) run(ctx context.Context, every time.Duration) {
	if every <= 0 {
		every = 30 * time.Second
	}
	runEvery(ctx, every, func() { m.check(ctx) })
}

// runEvery calls f every d until ctx ends.
func runEvery(ctx context.Context, d time.Duration, f func()) {
	t := time.NewTicker(d)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			f()
		}
	}
}

func (m *monitor) check(ctx context.Context) {
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	herr := m.rt.KeyStore.Health(cctx)
	switch {
	case herr != nil && !m.hsmBad:
		m.hsmBad = true
		_ = m.rt.Recorder.Record(ctx, events.HSMFailure, "", "error", herr.Error())
	case herr == nil && m.hsmBad:
		m.hsmBad = false
		_ = m.rt.Recorder.Record(ctx, events.HSMRecovered, "")
	}
	if n, err := m.rt.Service.ExpirePending(cctx); err != nil {
		m.rt.Log.Error("expiring pending requests", "error", err)
	} else if n > 0 {
		m.rt.Log.Info("expired pending requests", "count", n)
	}
	derr := m.rt.Store.Ping(cctx)
	switch {
	case derr != nil && !m.dbBad:
		m.dbBad = true
		m.rt.Log.Error("store unhealthy", "error", derr) // the store cannot take the event
	case derr == nil && m.dbBad:
		m.dbBad = false
		_ = m.rt.Recorder.Record(ctx, events.ServiceHealthy, "store answers again")
	}
	dir := m.rt.directoryStatus(cctx)
	m.rt.ready.Store(m.rt.readiness(herr, derr, dir, time.Now()))
}
