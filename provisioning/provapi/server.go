package provapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/enrollment-appliance/aeappliance/provisioning"
	"github.com/enrollment-appliance/aeappliance/ratelimit"
)

// The API's constants.
const (
	Prefix    = "/api/v1/provisioning" // every endpoint is under it
	MaxBody   = 64 << 10               // the largest request body accepted
	AdminUser = "admin"                // the Basic authentication user
	Realm     = "aeappliance provisioning"

	// After MaxFailures failed authentications from one client address within
	// FailureWindow (counted from the first), every request from that address is refused
	// with 429 until the window ends; other addresses are not affected.
	MaxFailures   = 5
	FailureWindow = time.Minute
)

// Config wires the API to the steps. Settings and Steps are required.
type Config struct {
	Settings string // the appliance's settings directory: the admin passphrase (provisioning.CheckPassphrase)
	Steps    Steps
	Logger   *slog.Logger // default slog.Default()
	// OnFinish is called once, after the first successful Finish response has been
	// written and flushed, in its own goroutine (the appliance then stops this server
	// and starts the service).
	OnFinish func()
	Now      func() time.Time // default time.Now; the failed-authentication limiter's clock
}

type server struct {
	cfg      Config
	e        *echo.Echo
	cop      *http.CrossOriginProtection
	authMu   sync.Mutex // one passphrase check at a time: Argon2id takes 19 MiB, and the limiter stays exact
	failures *ratelimit.Failures
	busy     chan struct{} // one step at a time
	finished sync.Once
}

// NewHandler validates cfg and builds the API's handler.
func NewHandler(cfg Config) (http.Handler, error) {
	switch {
	case cfg.Settings == "":
		return nil, errors.New("provapi: Config.Settings (the settings directory) is required")
	case cfg.Steps == nil:
		return nil, errors.New("provapi: Config.Steps is required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	s := &server{cfg: cfg, cop: http.NewCrossOriginProtection(), failures: ratelimit.NewFailures(ratelimit.FailureOptions{
		Max: MaxFailures, Window: FailureWindow, Now: cfg.Now}),
		busy: make(chan struct{}, 1)}
	e := echo.New()
	e.HideBanner, e.HidePort = true, true
	e.IPExtractor = echo.ExtractIPDirect() // log the peer, not what X-Forwarded-For claims
	e.HTTPErrorHandler = s.errorHandler
	e.Use(s.crossOrigin, s.authenticate)
	g := e.Group(Prefix)
	g.GET("/"+provisioning.Status, s.status)
	g.PUT("/"+provisioning.StepNetwork, s.network)
	g.POST("/"+provisioning.StepToken, s.token)
	g.POST("/"+provisioning.StepKey, s.key)
	g.POST("/"+provisioning.CASelfSigned, s.selfSigned)
	g.POST("/"+provisioning.CACSR, s.csr)
	g.POST("/"+provisioning.CAImport, s.importChain)
	g.POST("/"+provisioning.StepDirectory, s.directory)
	g.POST("/"+provisioning.StepStore, s.store)
	g.POST("/"+provisioning.StepFinish, s.finish)
	g.POST("/"+provisioning.StepJoin, s.join)
	g.POST("/"+provisioning.StepRestore, s.restore)
	s.e = e
	return s, nil
}

type finishedKey struct{}

// ServeHTTP runs echo, then OnFinish once a successful finish has been answered: the
// answer is flushed first, and OnFinish runs in its own goroutine so that it may shut
// down the server this request is part of.
func (s *server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var finished atomic.Bool
	s.e.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), finishedKey{}, &finished)))
	if !finished.Load() || s.cfg.OnFinish == nil {
		return
	}
	_ = http.NewResponseController(w).Flush()
	s.finished.Do(func() { go s.cfg.OnFinish() })
}

// crossOrigin refuses state-changing requests a browser makes for another site: a
// browser that has the admin credentials cached would send them along (CSRF).
func (s *server) crossOrigin(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		if err := s.cop.Check(c.Request()); err != nil {
			s.cfg.Logger.Warn("provisioning API: refused a cross-origin request", "remote", c.RealIP(),
				"method", c.Request().Method, "path", c.Request().URL.Path)
			return echo.NewHTTPError(http.StatusForbidden, "cross-origin request refused")
		}
		return next(c)
	}
}

func (s *server) authenticate(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		// The first passphrase is never set over the network: whoever reached this port
		// first would own the appliance.
		if !provisioning.HasPassphrase(s.cfg.Settings) {
			return errNoPassphrase
		}
		if err := s.checkCredentials(c); err != nil {
			return err
		}
		return next(c)
	}
}

// checkCredentials checks the request's Basic credentials and counts the failures.
func (s *server) checkCredentials(c echo.Context) error {
	user, pass, hasCred := c.Request().BasicAuth()
	s.authMu.Lock()
	defer s.authMu.Unlock()
	source := ratelimit.SourceKeyOf(c.RealIP())
	if d := s.failures.Check(source); !d.Allowed {
		// Even the right passphrase is refused: answering it would let guessing go on. The
		// lockout is logged once per window, not once per request.
		if d.Report {
			s.cfg.Logger.Warn("provisioning API: authentication locked out for a client address: too many failures",
				"remote", c.RealIP(), "path", c.Request().URL.Path, "retry_after_s", ratelimit.RetryAfterSeconds(d.RetryAfter))
		}
		c.Response().Header().Set("Retry-After", ratelimit.RetryAfterSeconds(d.RetryAfter))
		return echo.NewHTTPError(http.StatusTooManyRequests, "too many failed authentications; try again in a minute")
	}
	reason := ""
	switch {
	case !hasCred:
		reason = "no credential"
	case user != AdminUser:
		reason = "unknown user"
	default:
		switch err := provisioning.CheckPassphrase(s.cfg.Settings, pass); {
		case err == nil:
			return nil
		case errors.Is(err, provisioning.ErrNoPassphrase):
			return errNoPassphrase
		case errors.Is(err, provisioning.ErrWrongPassphrase):
			reason = "wrong passphrase"
		default:
			return fmt.Errorf("checking the admin passphrase: %w", err)
		}
	}
	// A request without a credential is not a guess (a browser sends one first to be
	// asked for the passphrase): it is not counted.
	if hasCred {
		s.failures.Fail(source)
	}
	s.cfg.Logger.Warn("provisioning API: authentication failed", "remote", c.RealIP(),
		"method", c.Request().Method, "path", c.Request().URL.Path, "reason", reason)
	c.Response().Header().Set(echo.HeaderWWWAuthenticate, `Basic realm="`+Realm+`"`)
	return echo.NewHTTPError(http.StatusUnauthorized, "authentication required: "+reason+
		" (HTTP Basic, user "+AdminUser+", the admin passphrase)")
}

var errNoPassphrase = echo.NewHTTPError(http.StatusForbidden, "set the admin passphrase at the console first (provision passphrase)")

func (s *server) errorHandler(err error, c echo.Context) {
	if c.Response().Committed {
		return
	}
	code, msg := http.StatusInternalServerError, err.Error()
	var he *echo.HTTPError
	if errors.As(err, &he) {
		code, msg = he.Code, fmt.Sprint(he.Message)
	}
	if code >= 500 {
		s.cfg.Logger.Error("provisioning API: request failed", "path", c.Request().URL.Path, "status", code, "error", err)
	}
	_ = c.JSON(code, ErrorBody{Error: msg})
}

// readBody reads the request body, at most MaxBody bytes, after checking its media type
// against the ones accepted (none: any).
func readBody(c echo.Context, mediaTypes ...string) ([]byte, error) {
	req := c.Request()
	if req.ContentLength > MaxBody {
		return nil, errTooLarge
	}
	b, err := io.ReadAll(io.LimitReader(req.Body, MaxBody+1))
	if err != nil {
		return nil, echo.NewHTTPError(http.StatusBadRequest, "reading the request body: "+err.Error())
	}
	if len(b) > MaxBody {
		return nil, errTooLarge
	}
	if ct := req.Header.Get(echo.HeaderContentType); len(mediaTypes) > 0 && (ct != "" || len(b) > 0) {
		mt, _, err := mime.ParseMediaType(ct)
		ok := false
		for _, want := range mediaTypes {
			ok = ok || err == nil && mt == want
		}
		if !ok {
			return nil, echo.NewHTTPError(http.StatusUnsupportedMediaType,
				fmt.Sprintf("Content-Type %q: want %s", ct, strings.Join(mediaTypes, " or ")))
		}
	}
	return b, nil
}

var errTooLarge = echo.NewHTTPError(http.StatusRequestEntityTooLarge, fmt.Sprintf("the request body is larger than %d KiB", MaxBody>>10))

// decode reads a JSON object into v, refusing unknown fields and anything after it. An
// empty body is refused unless emptyOK.
func decode(c echo.Context, v any, emptyOK bool) error {
	b, err := readBody(c, echo.MIMEApplicationJSON)
	if err != nil {
		return err
	}
	if len(bytes.TrimSpace(b)) == 0 {
		if emptyOK {
			return nil
		}
		return echo.NewHTTPError(http.StatusBadRequest, "the request body is empty: want a JSON object")
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return echo.NewHTTPError(http.StatusBadRequest, "the request body is not the JSON object expected: "+err.Error())
	}
	if _, err := dec.Token(); err != io.EOF {
		return echo.NewHTTPError(http.StatusBadRequest, "the request body has more after its JSON object")
	}
	return nil
}

// run runs one step (one at a time) and turns its error into 409 Conflict: the steps'
// messages say what is wrong and that nothing changed.
func (s *server) run(c echo.Context, step string, f func(ctx context.Context) (provisioning.Report, error)) (provisioning.Report, error) {
	ctx := c.Request().Context()
	select {
	case s.busy <- struct{}{}:
	case <-ctx.Done():
		return provisioning.Report{}, echo.NewHTTPError(http.StatusServiceUnavailable, "the request ended while another step ran")
	}
	defer func() { <-s.busy }()
	// A step, once started, runs to its end even if the client goes away: a step
	// interrupted halfway is harder to reason about than one that finished unseen.
	r, err := f(context.WithoutCancel(ctx))
	log := s.cfg.Logger.With("step", step, "remote", c.RealIP())
	if err != nil {
		log.Warn("provisioning step refused", "error", err)
		return r, echo.NewHTTPError(http.StatusConflict, err.Error())
	}
	log.Info("provisioning step", "changed", r.Changed)
	return r, nil
}

func (s *server) status(c echo.Context) error {
	ctx := c.Request().Context()
	steps, err := s.cfg.Steps.Progress(ctx)
	if err != nil {
		return fmt.Errorf("reading the ceremony's progress: %w", err)
	}
	n, _, err := s.cfg.Steps.Network(ctx, nil)
	if err != nil {
		return fmt.Errorf("reading the network settings: %w", err)
	}
	return c.JSON(http.StatusOK, Status{Steps: steps, Network: n})
}

func (s *server) network(c echo.Context) error {
	var in NetworkChange
	if err := decode(c, &in, false); err != nil {
		return err
	}
	var n provisioning.Network
	r, err := s.run(c, provisioning.StepNetwork, func(ctx context.Context) (provisioning.Report, error) {
		var r provisioning.Report
		var err error
		n, r, err = s.cfg.Steps.Network(ctx, in.apply)
		return r, err
	})
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, NetworkResult{Network: n, Report: r})
}

func (s *server) token(c echo.Context) error {
	var in TokenRequest
	if err := decode(c, &in, false); err != nil {
		return err
	}
	return s.reply(c)(s.run(c, provisioning.StepToken, func(ctx context.Context) (provisioning.Report, error) {
		return s.cfg.Steps.Token(ctx, in.SOPIN, in.UserPIN)
	}))
}

func (s *server) key(c echo.Context) error {
	var in KeyRequest
	if err := decode(c, &in, false); err != nil {
		return err
	}
	return s.reply(c)(s.run(c, provisioning.StepKey, func(ctx context.Context) (provisioning.Report, error) {
		return s.cfg.Steps.Key(ctx, in.Type)
	}))
}

func (s *server) selfSigned(c echo.Context) error {
	var in SelfSignedRequest
	if err := decode(c, &in, false); err != nil {
		return err
	}
	if in.ValidityDays < 0 || in.ValidityDays > MaxValidityDays {
		return echo.NewHTTPError(http.StatusBadRequest, fmt.Sprintf("validity_days %d: want 1 to %d (0: the default, 10 years)",
			in.ValidityDays, MaxValidityDays))
	}
	validity := time.Duration(in.ValidityDays) * 24 * time.Hour
	return s.reply(c)(s.run(c, provisioning.StepCA, func(ctx context.Context) (provisioning.Report, error) {
		return s.cfg.Steps.SelfSigned(ctx, in.Name, validity)
	}))
}

func (s *server) csr(c echo.Context) error {
	var in CSRRequest
	if err := decode(c, &in, false); err != nil {
		return err
	}
	var csr []byte
	r, err := s.run(c, provisioning.StepCA, func(ctx context.Context) (provisioning.Report, error) {
		var r provisioning.Report
		var err error
		csr, r, err = s.cfg.Steps.CSR(ctx, in.Name)
		return r, err
	})
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, CSRResult{Report: r, CSR: string(csr)})
}

func (s *server) importChain(c echo.Context) error {
	b, err := readBody(c, "application/x-pem-file", echo.MIMETextPlain)
	if err != nil {
		return err
	}
	return s.reply(c)(s.run(c, provisioning.StepCA, func(ctx context.Context) (provisioning.Report, error) {
		return s.cfg.Steps.Import(ctx, b)
	}))
}

func (s *server) directory(c echo.Context) error {
	var in DirectoryRequest
	if err := decode(c, &in, false); err != nil {
		return err
	}
	return s.reply(c)(s.run(c, provisioning.StepDirectory, func(ctx context.Context) (provisioning.Report, error) {
		return s.cfg.Steps.Directory(ctx, in.directory())
	}))
}

func (s *server) store(c echo.Context) error {
	var in StoreRequest
	if err := decode(c, &in, false); err != nil {
		return err
	}
	return s.reply(c)(s.run(c, provisioning.StepStore, func(ctx context.Context) (provisioning.Report, error) {
		return s.cfg.Steps.Store(ctx, in.store())
	}))
}

func (s *server) finish(c echo.Context) error {
	if err := decode(c, &struct{}{}, true); err != nil {
		return err
	}
	return s.provisioned(c, provisioning.StepFinish, s.cfg.Steps.Finish)
}

func (s *server) join(c echo.Context) error {
	var in JoinRequest
	if err := decode(c, &in, false); err != nil {
		return err
	}
	return s.provisioned(c, provisioning.StepJoin, func(ctx context.Context) (provisioning.Report, error) {
		return s.cfg.Steps.Join(ctx, in.join())
	})
}

func (s *server) restore(c echo.Context) error {
	var in RestoreRequest
	if err := decode(c, &in, false); err != nil {
		return err
	}
	return s.provisioned(c, provisioning.StepRestore, func(ctx context.Context) (provisioning.Report, error) {
		return s.cfg.Steps.Restore(ctx, provisioning.Restore{From: in.From, Passphrase: in.Passphrase})
	})
}

// provisioned runs a step that ends provisioned (finish, join, restore) and, once it has answered, lets
// OnFinish start the service.
func (s *server) provisioned(c echo.Context, step string, f func(ctx context.Context) (provisioning.Report, error)) error {
	r, err := s.run(c, step, f)
	if err != nil {
		return err
	}
	err = c.JSON(http.StatusOK, r)
	// Provisioned: the service may start even if the client missed the answer.
	if f, ok := c.Request().Context().Value(finishedKey{}).(*atomic.Bool); ok {
		f.Store(true)
	}
	return err
}

// reply answers with a step's report.
func (s *server) reply(c echo.Context) func(provisioning.Report, error) error {
	return func(r provisioning.Report, err error) error {
		if err != nil {
			return err
		}
		return c.JSON(http.StatusOK, r)
	}
}
