package api

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"net/http"
	"strconv"

	"github.com/labstack/echo/v4"

	"github.com/enrollment-appliance/aeappliance/apiclient"
	"github.com/enrollment-appliance/aeappliance/enrollsvc"
	"github.com/enrollment-appliance/aeappliance/enrollsvc/events"
	"github.com/enrollment-appliance/aeappliance/proto/certutil"
	"github.com/enrollment-appliance/aeappliance/ratelimit"
)

// AgentRestrictions manages the enrollment agent restrictions (enrollsvc.Service).
type AgentRestrictions interface {
	AgentRestrictions(ctx context.Context) ([]enrollsvc.AgentRestriction, error)
	AddAgentRestriction(ctx context.Context, in apiclient.AgentRestrictionSpec, by string) (enrollsvc.AgentRestriction, error)
	RemoveAgentRestriction(ctx context.Context, n int, by string) error
}

func (s *Server) restrictionsService() (AgentRestrictions, error) {
	if s.cfg.Agents == nil {
		return nil, echo.NewHTTPError(http.StatusServiceUnavailable, "enrollment agent restrictions need the directory")
	}
	return s.cfg.Agents, nil
}

func (s *Server) agentRestrictions(c echo.Context) error {
	a, err := s.restrictionsService()
	if err != nil {
		return err
	}
	rs, err := a.AgentRestrictions(c.Request().Context())
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, rs)
}

func (s *Server) addAgentRestriction(c echo.Context) error {
	a, err := s.restrictionsService()
	if err != nil {
		return err
	}
	var in apiclient.AgentRestrictionSpec
	if err := decodeStrict(c, &in); err != nil {
		return err
	}
	r, err := a.AddAgentRestriction(c.Request().Context(), in, "admin-api")
	if err != nil {
		return err
	}
	return c.JSON(http.StatusCreated, r)
}

func (s *Server) removeAgentRestriction(c echo.Context) error {
	a, err := s.restrictionsService()
	if err != nil {
		return err
	}
	n, err := strconv.Atoi(c.Param("n"))
	if err != nil {
		return echo.NewHTTPError(http.StatusBadRequest, "the restriction is given by its number")
	}
	if err := a.RemoveAgentRestriction(c.Request().Context(), n, "admin-api"); err != nil {
		return err
	}
	return c.NoContent(http.StatusNoContent)
}

// agentCertKey is the echo context key of the verified TLS client certificate a sign-on server
// authenticated with.
const agentCertKey = "agent-certificate"

// AgentAuthenticator tells who holds an enrollment agent's certificate (enrollsvc.Service).
type AgentAuthenticator interface {
	CertificateAccount(ctx context.Context, c *x509.Certificate) (account, name string, err error)
}

// agentLogon issues a logon certificate for a user to a sign-on server authenticated by its
// agent certificate (TLS): the request goes through directory policy as one the agent signed on
// the user's behalf (the TLS handshake proved the agent's key), rate-limited per agent.
func (s *Server) agentLogon(c echo.Context) error {
	if err := s.needDirectory(); err != nil {
		return err
	}
	cert, _ := c.Get(agentCertKey).(*x509.Certificate)
	if cert == nil || s.cfg.AgentAuth == nil {
		return echo.NewHTTPError(http.StatusUnauthorized, "a sign-on server authenticates with its enrollment agent certificate (TLS client authentication)")
	}
	ctx := c.Request().Context()
	account, name, err := s.cfg.AgentAuth.CertificateAccount(ctx, cert)
	if err != nil {
		_ = s.cfg.Recorder.Record(ctx, events.APIAuthFailed, "", "remote", c.RealIP(), "method", c.Request().Method,
			"path", c.Request().URL.Path, "reason", err.Error())
		return echo.NewHTTPError(http.StatusUnauthorized, err.Error())
	}
	if s.cfg.AgentLimit != nil {
		if d := s.cfg.AgentLimit.Allow("agent:" + account); !d.Allowed {
			s.cfg.Recorder.Limited(ctx, events.RateLimited, d, "service", "agent-logon", "agent", name, "remote", c.RealIP())
			c.Response().Header().Set("Retry-After", ratelimit.RetryAfterSeconds(d.RetryAfter))
			return echo.NewHTTPError(http.StatusTooManyRequests, "too many logon certificates for agent "+name+"; try again later")
		}
	}
	var in apiclient.AgentLogonRequest
	if err := decodeStrict(c, &in); err != nil {
		return err
	}
	if in.Template == "" || in.Target == "" {
		return badRequest("template and target are required")
	}
	der, err := csrDER(in.CSR)
	if err != nil {
		return err
	}
	res, err := s.cfg.Enroller.Enroll(ctx, enrollsvc.EnrollRequest{Template: in.Template, Account: in.Target,
		Requester: "agent-api:" + name, CSR: der, OnBehalf: &enrollsvc.OnBehalf{Agent: account, Signers: []*x509.Certificate{cert}}})
	if err != nil {
		return err
	}
	out := apiclient.IssueResponse{Status: res.Status, RequestID: res.RequestID, Reasons: res.Reasons}
	code := http.StatusOK
	switch {
	case res.Certificate != nil:
		out.Serial = certutil.SerialString(res.Certificate.SerialNumber)
		out.Certificate = string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: res.Certificate.Raw}))
	case res.Status == enrollsvc.StatusDenied:
		code = http.StatusUnprocessableEntity
	}
	return c.JSON(code, out)
}
