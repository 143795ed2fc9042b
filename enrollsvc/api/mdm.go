package api

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"strings"

	"github.com/labstack/echo/v4"

	"github.com/enrollment-appliance/aeappliance/apiclient"
	"github.com/enrollment-appliance/aeappliance/enrollsvc/mdm"
	"github.com/enrollment-appliance/aeappliance/enrollsvc/store"
)

// MDMConnector is the MDM connector behind /api/v1/mdm (package mdm).
type MDMConnector interface {
	// Authenticate returns the registered MDM whose bearer token this is.
	Authenticate(token string) (string, bool)
	// Denied records an MDM credential used outside its role.
	Denied(ctx context.Context, mdm, method, path, remote string)
	Clients(ctx context.Context) ([]apiclient.MDMClient, error)
	Add(ctx context.Context, name, by, remote string) (apiclient.MDMClientAdded, error)
	Remove(ctx context.Context, name, by, remote string) error
	SetHooks(ctx context.Context, name string, h apiclient.MDMWebhooks, by, remote string) (apiclient.MDMWebhooksSet, error)
	IssueCert(ctx context.Context, name, csrPEM, by, remote string) (*x509.Certificate, error)
	// AuthenticateCert returns the MDM a verified TLS client certificate was issued to.
	AuthenticateCert(ctx context.Context, cert *x509.Certificate) (string, bool)
	Submit(ctx context.Context, mdm string, in apiclient.PKCSRequest, remote string) (apiclient.PKCSJob, error)
	Job(ctx context.Context, mdm, id, remote string) (apiclient.PKCSJob, error)
	Revoke(ctx context.Context, mdm string, in apiclient.MDMRevokeRequest, remote string) (*store.Certificate, error)
	ImportCertificate() (*x509.Certificate, error)
	Import(ctx context.Context, mdm string, in apiclient.MDMImportRequest, remote string) (apiclient.MDMImport, error)
	Imports(ctx context.Context, mdm, account string) ([]apiclient.MDMImport, error)
	Deliver(ctx context.Context, mdm, id string, in apiclient.MDMDeliverRequest, remote string) ([]byte, error)
}

// callerKey is the echo context key holding who authenticated: mdm.Admin (the admin token) or
// a registered MDM's name.
const callerKey = "caller"

func caller(c echo.Context) string {
	if v, ok := c.Get(callerKey).(string); ok {
		return v
	}
	return ""
}

// mdmOnly lets an MDM's credential reach the connector's operations and nothing else: not the
// MDM registry, not a single admin endpoint (403, recorded).
func (s *Server) mdmOnly(c echo.Context, name string, next echo.HandlerFunc) error {
	p := c.Request().URL.Path
	if strings.HasPrefix(p, apiclient.MDMPathPrefix) && p != apiclient.MDMClientsPath && !strings.HasPrefix(p, apiclient.MDMClientsPath+"/") {
		c.Set(callerKey, name)
		return next(c)
	}
	s.cfg.MDM.Denied(c.Request().Context(), name, c.Request().Method, p, c.RealIP())
	return echo.NewHTTPError(http.StatusForbidden, "an MDM credential opens the MDM connector's operations only ("+
		apiclient.MDMPKCSPath+", "+apiclient.MDMRevokePath+")")
}

func (s *Server) connector() (MDMConnector, error) {
	if s.cfg.MDM == nil {
		return nil, echo.NewHTTPError(http.StatusServiceUnavailable, "the MDM connector needs a directory (enrollsvc init --ldap-url ...)")
	}
	return s.cfg.MDM, nil
}

// adminConnector is connector for the administrator's calls: anyone else is refused (the MDM
// role never reaches them; this keeps it so if the routes change).
func (s *Server) adminConnector(c echo.Context) (MDMConnector, error) {
	m, err := s.connector()
	if err != nil {
		return nil, err
	}
	if caller(c) != mdm.Admin {
		return nil, echo.NewHTTPError(http.StatusForbidden, "administrators only")
	}
	return m, nil
}

func decodeStrict(c echo.Context, v any) error {
	dec := json.NewDecoder(c.Request().Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return badRequest("request body: %v", err)
	}
	return nil
}

func (s *Server) mdmClients(c echo.Context) error {
	m, err := s.adminConnector(c)
	if err != nil {
		return err
	}
	out, err := m.Clients(c.Request().Context())
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, out)
}

func (s *Server) addMDMClient(c echo.Context) error {
	m, err := s.adminConnector(c)
	if err != nil {
		return err
	}
	var in struct {
		Name string `json:"name"`
	}
	if err := decodeStrict(c, &in); err != nil {
		return err
	}
	out, err := m.Add(c.Request().Context(), in.Name, "admin-api", c.RealIP())
	if err != nil {
		return err
	}
	return c.JSON(http.StatusCreated, out)
}

func (s *Server) removeMDMClient(c echo.Context) error {
	m, err := s.adminConnector(c)
	if err != nil {
		return err
	}
	if err := m.Remove(c.Request().Context(), c.Param("name"), "admin-api", c.RealIP()); err != nil {
		return err
	}
	return c.NoContent(http.StatusNoContent)
}

func (s *Server) setMDMHooks(c echo.Context) error {
	m, err := s.adminConnector(c)
	if err != nil {
		return err
	}
	var in apiclient.MDMWebhooks
	if err := decodeStrict(c, &in); err != nil {
		return err
	}
	out, err := m.SetHooks(c.Request().Context(), c.Param("name"), in, "admin-api", c.RealIP())
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, out)
}

func (s *Server) issueMDMCert(c echo.Context) error {
	m, err := s.adminConnector(c)
	if err != nil {
		return err
	}
	var in struct {
		CSR string `json:"csr"`
	}
	if err := decodeStrict(c, &in); err != nil {
		return err
	}
	cert, err := m.IssueCert(c.Request().Context(), c.Param("name"), in.CSR, "admin-api", c.RealIP())
	if err != nil {
		return err
	}
	return c.JSON(http.StatusCreated, map[string]string{"certificate": string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw}))})
}

func (s *Server) submitPKCS(c echo.Context) error {
	m, err := s.connector()
	if err != nil {
		return err
	}
	var in apiclient.PKCSRequest
	if err := decodeStrict(c, &in); err != nil {
		return err
	}
	out, err := m.Submit(c.Request().Context(), caller(c), in, c.RealIP())
	if err != nil {
		return err
	}
	c.Response().Header().Set("Location", apiclient.MDMPKCSPath+"/"+out.ID)
	return c.JSON(http.StatusAccepted, out)
}

func (s *Server) pkcsJob(c echo.Context) error {
	m, err := s.connector()
	if err != nil {
		return err
	}
	out, err := m.Job(c.Request().Context(), caller(c), c.Param("id"), c.RealIP())
	if err != nil {
		return err
	}
	c.Response().Header().Set("Cache-Control", "no-store")
	return c.JSON(http.StatusOK, out)
}

func (s *Server) mdmRevoke(c echo.Context) error {
	m, err := s.connector()
	if err != nil {
		return err
	}
	var in apiclient.MDMRevokeRequest
	if err := decodeStrict(c, &in); err != nil {
		return err
	}
	sc, err := m.Revoke(c.Request().Context(), caller(c), in, c.RealIP())
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, certView(*sc, s.cfg.Now(), false))
}

func (s *Server) importCertificate(c echo.Context) error {
	m, err := s.connector()
	if err != nil {
		return err
	}
	cert, err := m.ImportCertificate()
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, map[string]string{"certificate": string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw}))})
}

func (s *Server) importKey(c echo.Context) error {
	m, err := s.connector()
	if err != nil {
		return err
	}
	var in apiclient.MDMImportRequest
	if err := decodeStrict(c, &in); err != nil {
		return err
	}
	out, err := m.Import(c.Request().Context(), caller(c), in, c.RealIP())
	if err != nil {
		return err
	}
	return c.JSON(http.StatusCreated, out)
}

func (s *Server) imports(c echo.Context) error {
	m, err := s.connector()
	if err != nil {
		return err
	}
	out, err := m.Imports(c.Request().Context(), caller(c), c.QueryParam("account"))
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, out)
}

func (s *Server) deliverImport(c echo.Context) error {
	m, err := s.connector()
	if err != nil {
		return err
	}
	var in apiclient.MDMDeliverRequest
	if err := decodeStrict(c, &in); err != nil {
		return err
	}
	env, err := m.Deliver(c.Request().Context(), caller(c), c.Param("id"), in, c.RealIP())
	if err != nil {
		return err
	}
	c.Response().Header().Set("Cache-Control", "no-store")
	return c.JSON(http.StatusOK, apiclient.MDMDelivery{ImportID: c.Param("id"), Result: env, Format: "cms-enveloped-pkcs12"})
}
