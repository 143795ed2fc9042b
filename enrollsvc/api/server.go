// Package api is the server of the enrollment service's local management API (echo, JSON over
// TLS on 127.0.0.1 by default). Its wire types and Go client are package apiclient, which links
// no server code; the handlers turn store rows and core results into those types. Every endpoint but
// /api/v1/health and /api/v1/ca/certificate needs the admin bearer token made by `enrollsvc init`.
package api

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/labstack/echo/v4/middleware"

	"github.com/enrollment-appliance/aeappliance/apiclient"
	"github.com/enrollment-appliance/aeappliance/enrollsvc"
	"github.com/enrollment-appliance/aeappliance/enrollsvc/events"
	"github.com/enrollment-appliance/aeappliance/enrollsvc/issue"
	"github.com/enrollment-appliance/aeappliance/enrollsvc/mdm"
	"github.com/enrollment-appliance/aeappliance/enrollsvc/metrics"
	"github.com/enrollment-appliance/aeappliance/enrollsvc/store"
	"github.com/enrollment-appliance/aeappliance/ratelimit"
)

// MaxBody is the largest request body accepted.
const MaxBody = 64 << 10

// Reader is the read side of the store the API shows.
type Reader interface {
	GetCertificate(ctx context.Context, serial string) (store.Certificate, error)
	ListCertificates(ctx context.Context, f store.CertFilter) ([]store.Certificate, error)
	GetRequest(ctx context.Context, id int64) (store.Request, error)
	ListRequests(ctx context.Context, f store.RequestFilter) ([]store.Request, error)
	ListEvents(ctx context.Context, f store.EventFilter) ([]store.Event, error)
}

// Issuer is the core call behind POST /api/v1/certificates.
type Issuer interface {
	IssueAdmin(ctx context.Context, a enrollsvc.AdminIssue) (*enrollsvc.Issued, error)
}

// Config wires the API to the service. All fields are required but Logger and Now.
type Config struct {
	TokenSHA256 string // hex SHA-256 of the admin token
	CACert      *x509.Certificate
	CAChain     []*x509.Certificate // above a subordinate CA, up to its root
	Store       Reader
	Service     Issuer
	Enroller    Enroller // nil without a directory
	// Keytabs installs the enrollment web services' Kerberos keytab (nil without them).
	Keytabs interface {
		InstallKeytab(ctx context.Context, keytab []byte) error
	}
	Revoker  Revoker       // nil: no revocation
	CRL      CRLPublisher  // nil: no CRL publishing
	SCEP     SCEPAdmin     // nil without a directory
	Firmware FirmwareAdmin // nil outside the appliance
	Recorder *events.Recorder
	Status   func(ctx context.Context) apiclient.Status
	// Cluster reports the store and the instances serving from it (nil: not available).
	Cluster func(ctx context.Context) (apiclient.Cluster, error)
	Logger  *slog.Logger
	Now     func() time.Time
	// Proxies are the reverse proxies whose X-Forwarded-For names the client (nil: the
	// client is the socket's peer, whatever the headers claim).
	Proxies ratelimit.Proxies
	// Health limits the unauthenticated health check per client address (nil: no limit).
	Health *ratelimit.Limiter
	// Healthy is the service's verdict computed in the background, which the unauthenticated
	// health check serves from memory; nil: Status is asked.
	Healthy func() bool
	// Ready is the readiness verdict computed in the background (GET /api/v1/ready); nil, or a
	// nil verdict: not ready.
	Ready func() *apiclient.Ready
	// Metrics is what GET /metrics serves (nil: 404).
	Metrics *metrics.Metrics
	// Settings are the operations settings an administrator changes here (nil: not available).
	Settings OpsSettings
	// Backup writes an encrypted backup to w (nil: not available). An error once writing began
	// cuts the answer short, which the client sees as an incomplete body.
	Backup func(ctx context.Context, w io.Writer, in apiclient.BackupRequest, remote string) error
	// MDM is the MDM connector (nil: its endpoints answer 503, and no MDM token is accepted).
	MDM MDMConnector
	// Archive is key archival: the recovery agents and recovery (nil: 503).
	Archive Archiver
	// Agents manages the enrollment agent restrictions (nil: 503).
	Agents AgentRestrictions
	// AgentAuth tells who holds a sign-on server's agent certificate, AgentLimit limits its
	// logon certificates per agent (AgentLogonPath; nil AgentAuth: 401).
	AgentAuth  AgentAuthenticator
	AgentLimit *ratelimit.Limiter
}

// OpsSettings are the operations settings of the running service, shared by the instances of its
// store.
type OpsSettings interface {
	// MetricsToken is the SHA-256 of the token GET /metrics requires; nil: /metrics is open.
	MetricsToken() []byte
	// SetMetricsToken requires the token whose SHA-256 is sum from now on (nil: open again),
	// recording who did it.
	SetMetricsToken(ctx context.Context, sum []byte, by, remote string) error
	// Syslog is the remote syslog setting and how its streams fare.
	Syslog(ctx context.Context) apiclient.SyslogStatus
	// SetSyslog checks and stores the remote syslog setting (nil: off).
	SetSyslog(ctx context.Context, s *apiclient.SyslogSettings, by, remote string) error
	// BackupSchedule is the backup schedule and how it fares on this instance.
	BackupSchedule(ctx context.Context) apiclient.BackupScheduleStatus
	// SetBackupSchedule checks and stores the backup schedule (nil: off).
	SetBackupSchedule(ctx context.Context, s *apiclient.BackupSchedule, by, remote string) error
	// RunBackupSchedule writes a scheduled backup now and returns its file name.
	RunBackupSchedule(ctx context.Context, by string) (string, error)
}

// After MaxFailures failed authentications from one client address within FailureWindow
// (from the first), further failures from it are answered 429 until the window ends; other
// addresses are not affected. The right token is always accepted: 256 random bits cannot be
// guessed, and refusing it would let anyone behind the same address keep the admin out.
const (
	MaxFailures   = 10
	FailureWindow = time.Minute
)

// Server is the API's HTTP handler.
type Server struct {
	cfg       Config
	tokenHash []byte
	e         *echo.Echo
	failures  *ratelimit.Failures
}

// New validates cfg and builds the handler.
func New(cfg Config) (*Server, error) {
	h, err := hex.DecodeString(cfg.TokenSHA256)
	if err != nil || len(h) != sha256.Size {
		return nil, errors.New("api: Config.TokenSHA256 is not a hex SHA-256")
	}
	if cfg.CACert == nil || cfg.Store == nil || cfg.Service == nil || cfg.Recorder == nil || cfg.Status == nil {
		return nil, errors.New("api: Config needs CACert, Store, Service, Recorder and Status")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	s := &Server{cfg: cfg, tokenHash: h, failures: ratelimit.NewFailures(ratelimit.FailureOptions{
		Max: MaxFailures, Window: FailureWindow, Now: cfg.Now})}
	e := echo.New()
	e.HideBanner, e.HidePort = true, true
	// Audit records name the peer, not what X-Forwarded-For or X-Real-IP claim: any client can
	// send those, unless the peer is a proxy the administrator trusts.
	e.IPExtractor = func(r *http.Request) string {
		if a := cfg.Proxies.ClientAddr(r); a.IsValid() {
			return a.String()
		}
		return ""
	}
	e.HTTPErrorHandler = s.errorHandler
	e.Use(middleware.BodyLimitWithConfig(middleware.BodyLimitConfig{Limit: strconv.Itoa(MaxBody),
		Skipper: func(c echo.Context) bool { return c.Request().URL.Path == apiclient.FirmwarePath }})) // its own limit (MaxFirmware)
	e.Use(s.authenticate)
	e.Use(func(next echo.HandlerFunc) echo.HandlerFunc { // requests of the management API (not the checks)
		return func(c echo.Context) error {
			if public[c.Request().URL.Path] {
				return next(c)
			}
			start := time.Now()
			c.SetRequest(c.Request().WithContext(metrics.WithProtocol(c.Request().Context(), metrics.ProtocolAPI)))
			err := next(c)
			cfg.Metrics.Observe(metrics.ProtocolAPI, time.Since(start))
			return err
		}
	})
	e.GET(apiclient.MetricsPath, s.metrics)
	g := e.Group("/api/v1")
	g.GET("/health", s.health)
	g.GET("/ready", s.ready)
	g.POST("/metrics/token", s.newMetricsToken)
	g.DELETE("/metrics/token", s.clearMetricsToken)
	g.POST("/backup", s.backup)
	g.GET("/backup/schedule", s.backupSchedule)
	g.PUT("/backup/schedule", s.setBackupSchedule)
	g.DELETE("/backup/schedule", s.setBackupSchedule)
	g.POST("/backup/schedule/run", s.runBackupSchedule)
	g.GET("/syslog", s.syslog)
	g.PUT("/syslog", s.setSyslog)
	g.DELETE("/syslog", s.setSyslog)
	g.GET("/ca/certificate", s.caCert)
	g.GET("/status", s.status)
	g.GET("/cluster", s.cluster)
	g.GET("/certificates", s.listCerts)
	g.GET("/certificates/:serial", s.getCert)
	g.POST("/certificates", s.issue)
	g.GET("/requests", s.listRequests)
	g.GET("/requests/:id", s.getRequest)
	g.GET("/events", s.listEvents)
	g.GET("/templates", s.templates)
	g.GET("/explain", s.explain)
	g.POST("/enroll", s.enroll)
	g.POST("/requests/:id/approve", s.approve)
	g.POST("/requests/:id/deny", s.deny)
	g.PUT("/enroll/keytab", s.installKeytab)
	g.POST("/certificates/:serial/revoke", s.revoke)
	g.POST("/crl/publish", s.publishCRL)
	g.GET("/scep/profiles", s.scepProfiles)
	g.POST("/scep/profiles", s.addSCEPProfile)
	g.POST("/scep/challenges", s.scepChallenge)
	g.GET("/kra", s.kras)
	g.POST("/kra", s.addKRA)
	g.DELETE("/kra/:thumbprint", s.removeKRA)
	g.GET("/agent-restrictions", s.agentRestrictions)
	g.POST("/agent-restrictions", s.addAgentRestriction)
	g.DELETE("/agent-restrictions/:n", s.removeAgentRestriction)
	g.POST(strings.TrimPrefix(apiclient.AgentLogonPath, "/api/v1"), s.agentLogon)
	g.GET("/certificates/:serial/archived-key", s.recoverKey)
	g.GET("/mdm/clients", s.mdmClients)
	g.POST("/mdm/clients", s.addMDMClient)
	g.DELETE("/mdm/clients/:name", s.removeMDMClient)
	g.PUT("/mdm/clients/:name/webhooks", s.setMDMHooks)
	g.POST("/mdm/clients/:name/certificate", s.issueMDMCert)
	g.POST("/mdm/pkcs", s.submitPKCS)
	g.GET("/mdm/pkcs/:id", s.pkcsJob)
	g.POST("/mdm/revoke", s.mdmRevoke)
	g.GET("/mdm/import-certificate", s.importCertificate)
	g.POST("/mdm/imports", s.importKey)
	g.GET("/mdm/imports", s.imports)
	g.POST("/mdm/imports/:id/deliver", s.deliverImport)
	g.GET("/firmware", s.firmwareStatus)
	g.PUT("/firmware", s.installFirmware)
	s.e = e
	return s, nil
}

// Handler returns the HTTP handler.
func (s *Server) Handler() http.Handler { return s.e }

// Serve answers on ln with TLS until ctx is done, then shuts down gracefully.
func (s *Server) Serve(ctx context.Context, ln net.Listener, tlsCfg *tls.Config) error {
	return ServeTLS(ctx, s.e, ln, tlsCfg, s.cfg.Logger, MaxHeaderBytes)
}

// MaxHeaderBytes bounds the request headers of the local API.
const MaxHeaderBytes = 32 << 10

// MaxNegotiateHeaderBytes bounds the request headers where Kerberos is spoken: a Negotiate
// token holds the whole service ticket with its PAC, which grows with the user's groups.
// Windows allows tickets up to MaxTokenSize 65535 bytes, 87,380 in base64; this leaves room
// for the rest of the headers.
const MaxNegotiateHeaderBytes = 128 << 10

// ServeTLS serves h over TLS on ln, with the service's timeouts and maxHeader bytes of request
// headers, until ctx is done, then shuts down gracefully (in-flight requests get 10 s to finish).
func ServeTLS(ctx context.Context, h http.Handler, ln net.Listener, tlsCfg *tls.Config, log *slog.Logger, maxHeader int) error {
	hs := &http.Server{Handler: h, TLSConfig: tlsCfg, ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout: 30 * time.Second, WriteTimeout: 60 * time.Second, IdleTimeout: 2 * time.Minute,
		MaxHeaderBytes: maxHeader, ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(tls.NewListener(ln, tlsCfg)) }()
	select {
	case err := <-errc:
		return fmt.Errorf("serving on %s: %w", ln.Addr(), err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := hs.Shutdown(sctx); err != nil {
		return fmt.Errorf("shutting down %s: %w", ln.Addr(), err)
	}
	return nil
}

// public paths need no admin token (GET /metrics checks its own, when one is set).
var public = map[string]bool{"/api/v1/health": true, "/api/v1/ready": true, "/api/v1/ca/certificate": true,
	apiclient.MetricsPath: true}

func (s *Server) authenticate(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		if public[c.Request().URL.Path] {
			return next(c)
		}
		reason := ""
		h := c.Request().Header.Get(echo.HeaderAuthorization)
		token, ok := strings.CutPrefix(h, "Bearer ")
		// A client certificate: the TLS layer verified that it chains to this CA
		// (certutil.ClientCertVerifier); the store says whose it is.
		if cs := c.Request().TLS; h == "" && s.cfg.MDM != nil && cs != nil && len(cs.PeerCertificates) > 0 {
			// A client certificate this CA issued to an MDM.
			if name, ok := s.cfg.MDM.AuthenticateCert(c.Request().Context(), cs.PeerCertificates[0]); ok {
				return s.mdmOnly(c, name, next)
			}
		}
		if c.Request().URL.Path == apiclient.AgentLogonPath {
			// A sign-on server: its enrollment agent certificate (which the TLS layer verified
			// chains to this CA) and nothing else; the handler checks the rest.
			if cs := c.Request().TLS; h == "" && cs != nil && len(cs.PeerCertificates) > 0 {
				c.Set(callerKey, "agent-certificate")
				c.Set(agentCertKey, cs.PeerCertificates[0])
				return next(c)
			}
			return echo.NewHTTPError(http.StatusUnauthorized, "a sign-on server authenticates with its enrollment agent certificate (TLS client authentication), not a token")
		}
		switch {
		case h == "":
			reason = "no credential"
		case !ok || token == "":
			reason = "not a bearer token"
		default:
			sum := sha256.Sum256([]byte(token))
			if subtle.ConstantTimeCompare(sum[:], s.tokenHash) != 1 {
				reason = "wrong token"
			}
		}
		if reason == "" {
			c.Set(callerKey, mdm.Admin)
			return next(c)
		}
		if reason == "wrong token" && s.cfg.MDM != nil {
			if name, ok := s.cfg.MDM.Authenticate(token); ok {
				return s.mdmOnly(c, name, next)
			}
		}
		source := c.RealIP()
		if d := s.failures.Check(ratelimit.SourceKeyOf(source)); !d.Allowed {
			s.cfg.Recorder.Limited(c.Request().Context(), events.APILockout, d, "remote", source, "api", "admin",
				"failures", MaxFailures, "window", FailureWindow.String())
			c.Response().Header().Set("Retry-After", ratelimit.RetryAfterSeconds(d.RetryAfter))
			return echo.NewHTTPError(http.StatusTooManyRequests, "too many failed authentications from "+source+"; try again later")
		}
		s.failures.Fail(ratelimit.SourceKeyOf(source))
		_ = s.cfg.Recorder.Record(c.Request().Context(), events.APIAuthFailed, "",
			"remote", c.RealIP(), "method", c.Request().Method, "path", c.Request().URL.Path, "reason", reason)
		c.Response().Header().Set(echo.HeaderWWWAuthenticate, `Bearer realm="enrollsvc"`)
		return echo.NewHTTPError(http.StatusUnauthorized, "authentication required: "+reason+
			" (send the admin token from the data directory as \"Authorization: Bearer TOKEN\")")
	}
}

func (s *Server) errorHandler(err error, c echo.Context) {
	if c.Response().Committed {
		return
	}
	code, body := http.StatusInternalServerError, apiclient.ErrorBody{Error: err.Error()}
	var he *echo.HTTPError
	if errors.As(err, &he) {
		code = he.Code
		body.Error = fmt.Sprint(he.Message)
	} else {
		var le *issue.LintError
		if errors.As(err, &le) {
			body.Reasons = le.Findings
		}
		var se *enrollsvc.Error
		if errors.As(err, &se) {
			body.RequestID = se.RequestID
		}
		switch enrollsvc.KindOf(err) {
		case enrollsvc.KindBadRequest:
			code = http.StatusBadRequest
		case enrollsvc.KindNotFound:
			code = http.StatusNotFound
		case enrollsvc.KindConflict:
			code = http.StatusConflict
		case enrollsvc.KindRefused:
			code = http.StatusUnprocessableEntity
		case enrollsvc.KindUnavailable:
			code = http.StatusServiceUnavailable
		}
	}
	if code >= 500 {
		s.cfg.Logger.Error("api request failed", "path", c.Request().URL.Path, "status", code, "error", err)
	}
	_ = c.JSON(code, body)
}

// limitChecks applies the per-address limit of the unauthenticated checks (health, ready, metrics).
func (s *Server) limitChecks(c echo.Context, what string) error {
	if s.cfg.Health == nil {
		return nil
	}
	ip := c.RealIP()
	if d := s.cfg.Health.Allow(ratelimit.SourceKeyOf(ip)); !d.Allowed {
		s.cfg.Recorder.Limited(c.Request().Context(), events.RateLimited, d, "remote", ip, "service", what)
		c.Response().Header().Set("Retry-After", ratelimit.RetryAfterSeconds(d.RetryAfter))
		return echo.NewHTTPError(http.StatusTooManyRequests, "too many "+what+" requests; try again later")
	}
	return nil
}

// health is liveness: the service answers (200), with the background verdict on its parts as
// "healthy"; whether to send it work is GET /api/v1/ready.
func (s *Server) health(c echo.Context) error {
	if err := s.limitChecks(c, "health"); err != nil {
		return err
	}
	var healthy bool
	if s.cfg.Healthy != nil {
		healthy = s.cfg.Healthy()
	} else {
		healthy = s.cfg.Status(c.Request().Context()).Healthy
	}
	return c.JSON(http.StatusOK, map[string]any{"alive": true, "healthy": healthy})
}

// ready is readiness, for load balancers: 200 when every check of the last background verdict
// passed, else 503, with the checks either way.
func (s *Server) ready(c echo.Context) error {
	if err := s.limitChecks(c, "ready"); err != nil {
		return err
	}
	var r *apiclient.Ready
	if s.cfg.Ready != nil {
		r = s.cfg.Ready()
	}
	if r == nil {
		r = &apiclient.Ready{Checks: map[string]string{"service": "not checked yet"}}
	}
	code := http.StatusOK
	if !r.Ready {
		code = http.StatusServiceUnavailable
	}
	return c.JSON(code, r)
}

// metrics serves the Prometheus registry: open, unless an administrator set a metrics token;
// then the metrics token or the admin token, as a bearer token.
func (s *Server) metrics(c echo.Context) error {
	if s.cfg.Metrics == nil {
		return echo.NewHTTPError(http.StatusNotFound, "no metrics in this service")
	}
	if err := s.limitChecks(c, "metrics"); err != nil {
		return err
	}
	if s.cfg.Settings != nil {
		if want := s.cfg.Settings.MetricsToken(); want != nil {
			token, _ := strings.CutPrefix(c.Request().Header.Get(echo.HeaderAuthorization), "Bearer ")
			sum := sha256.Sum256([]byte(token))
			if subtle.ConstantTimeCompare(sum[:], want) != 1 && subtle.ConstantTimeCompare(sum[:], s.tokenHash) != 1 {
				c.Response().Header().Set(echo.HeaderWWWAuthenticate, `Bearer realm="metrics"`)
				return echo.NewHTTPError(http.StatusUnauthorized, "a metrics token is set: send it as \"Authorization: Bearer TOKEN\"")
			}
		}
	}
	s.cfg.Metrics.Handler().ServeHTTP(c.Response(), c.Request())
	return nil
}

// newMetricsToken makes a new random metrics token, requires it from now on, and returns it
// (only its hash is kept).
func (s *Server) newMetricsToken(c echo.Context) error {
	if s.cfg.Settings == nil {
		return echo.NewHTTPError(http.StatusServiceUnavailable, "settings are not available in this service")
	}
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return err
	}
	token := hex.EncodeToString(b)
	sum := sha256.Sum256([]byte(token))
	if err := s.cfg.Settings.SetMetricsToken(c.Request().Context(), sum[:], "admin-api", c.RealIP()); err != nil {
		return err
	}
	return c.JSON(http.StatusCreated, apiclient.MetricsToken{Token: token})
}

// clearMetricsToken opens GET /metrics again.
func (s *Server) clearMetricsToken(c echo.Context) error {
	if s.cfg.Settings == nil {
		return echo.NewHTTPError(http.StatusServiceUnavailable, "settings are not available in this service")
	}
	if err := s.cfg.Settings.SetMetricsToken(c.Request().Context(), nil, "admin-api", c.RealIP()); err != nil {
		return err
	}
	return c.NoContent(http.StatusNoContent)
}

func (s *Server) caCert(c echo.Context) error {
	b := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: s.cfg.CACert.Raw})
	for _, cc := range s.cfg.CAChain {
		b = append(b, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cc.Raw})...)
	}
	return c.Blob(http.StatusOK, "application/x-pem-file", b)
}

func (s *Server) status(c echo.Context) error {
	return c.JSON(http.StatusOK, s.cfg.Status(c.Request().Context()))
}

func (s *Server) cluster(c echo.Context) error {
	if s.cfg.Cluster == nil {
		return echo.NewHTTPError(http.StatusServiceUnavailable, "no cluster status in this service")
	}
	st, err := s.cfg.Cluster(c.Request().Context())
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, st)
}

func (s *Server) syslog(c echo.Context) error {
	if s.cfg.Settings == nil {
		return echo.NewHTTPError(http.StatusServiceUnavailable, "settings are not available in this service")
	}
	return c.JSON(http.StatusOK, s.cfg.Settings.Syslog(c.Request().Context()))
}

// setSyslog is PUT (a SyslogSettings body) and DELETE (off) /api/v1/syslog.
func (s *Server) setSyslog(c echo.Context) error {
	if s.cfg.Settings == nil {
		return echo.NewHTTPError(http.StatusServiceUnavailable, "settings are not available in this service")
	}
	var in *apiclient.SyslogSettings
	if c.Request().Method == http.MethodPut {
		in = &apiclient.SyslogSettings{}
		dec := json.NewDecoder(c.Request().Body)
		dec.DisallowUnknownFields()
		if err := dec.Decode(in); err != nil {
			return badRequest("request body: %v", err)
		}
		if in.Address == "" {
			return badRequest("address is required (DELETE /api/v1/syslog turns remote syslog off)")
		}
	}
	if err := s.cfg.Settings.SetSyslog(c.Request().Context(), in, "admin-api", c.RealIP()); err != nil {
		return err
	}
	return c.JSON(http.StatusOK, s.cfg.Settings.Syslog(c.Request().Context()))
}

// backup streams an encrypted backup. Its write deadline is lifted: a large store takes longer
// than the API's usual minute.
func (s *Server) backup(c echo.Context) error {
	if s.cfg.Backup == nil {
		return echo.NewHTTPError(http.StatusServiceUnavailable, "backups are not available in this service")
	}
	var in apiclient.BackupRequest
	dec := json.NewDecoder(c.Request().Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&in); err != nil {
		return badRequest("request body: %v", err)
	}
	_ = http.NewResponseController(c.Response()).SetWriteDeadline(time.Time{})
	w := &lazyHeader{c: c}
	if err := s.cfg.Backup(c.Request().Context(), w, in, c.RealIP()); err != nil {
		if w.started {
			s.cfg.Logger.Error("backup cut short", "error", err)
			panic(http.ErrAbortHandler) // the client must not take a partial backup for a whole one
		}
		return err
	}
	if !w.started {
		c.Response().WriteHeader(http.StatusOK)
	}
	return nil
}

// lazyHeader sends the success header with the first byte, so that an error found before
// (a bad passphrase, no snapshot) is still an HTTP error.
type lazyHeader struct {
	c       echo.Context
	started bool
}

func (l *lazyHeader) Write(p []byte) (int, error) {
	if !l.started {
		l.started = true
		l.c.Response().Header().Set(echo.HeaderContentType, "application/octet-stream")
		l.c.Response().WriteHeader(http.StatusOK)
	}
	return l.c.Response().Write(p)
}

func (s *Server) backupSchedule(c echo.Context) error {
	if s.cfg.Settings == nil {
		return echo.NewHTTPError(http.StatusServiceUnavailable, "settings are not available in this service")
	}
	return c.JSON(http.StatusOK, s.cfg.Settings.BackupSchedule(c.Request().Context()))
}

// setBackupSchedule is PUT (a BackupSchedule body) and DELETE (off) /api/v1/backup/schedule.
func (s *Server) setBackupSchedule(c echo.Context) error {
	if s.cfg.Settings == nil {
		return echo.NewHTTPError(http.StatusServiceUnavailable, "settings are not available in this service")
	}
	var in *apiclient.BackupSchedule
	if c.Request().Method == http.MethodPut {
		in = &apiclient.BackupSchedule{}
		dec := json.NewDecoder(c.Request().Body)
		dec.DisallowUnknownFields()
		if err := dec.Decode(in); err != nil {
			return badRequest("request body: %v", err)
		}
	}
	if err := s.cfg.Settings.SetBackupSchedule(c.Request().Context(), in, "admin-api", c.RealIP()); err != nil {
		return err
	}
	return c.JSON(http.StatusOK, s.cfg.Settings.BackupSchedule(c.Request().Context()))
}

func (s *Server) runBackupSchedule(c echo.Context) error {
	if s.cfg.Settings == nil {
		return echo.NewHTTPError(http.StatusServiceUnavailable, "settings are not available in this service")
	}
	_ = http.NewResponseController(c.Response()).SetWriteDeadline(time.Time{})
	name, err := s.cfg.Settings.RunBackupSchedule(c.Request().Context(), "admin-api")
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, apiclient.BackupRun{File: name})
}
