package api

import (
	"context"
	"net/http"

	"github.com/labstack/echo/v4"

	"github.com/enrollment-appliance/aeappliance/apiclient"
	"github.com/enrollment-appliance/aeappliance/enrollsvc"
)

// Archiver is key archival: the key recovery agents and recovery (enrollsvc.Service).
type Archiver interface {
	KRAs(ctx context.Context) ([]enrollsvc.KRA, error)
	AddKRA(ctx context.Context, certPEM, by string) (enrollsvc.KRA, error)
	RemoveKRA(ctx context.Context, thumbprint, by string) error
	RecoverKey(ctx context.Context, serial, by string) ([]byte, error)
}

func (s *Server) archiver() (Archiver, error) {
	if s.cfg.Archive == nil {
		return nil, echo.NewHTTPError(http.StatusServiceUnavailable, "key archival is not available in this service")
	}
	return s.cfg.Archive, nil
}

func (s *Server) kras(c echo.Context) error {
	a, err := s.archiver()
	if err != nil {
		return err
	}
	ks, err := a.KRAs(c.Request().Context())
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, ks)
}

func (s *Server) addKRA(c echo.Context) error {
	a, err := s.archiver()
	if err != nil {
		return err
	}
	var in struct {
		PEM string `json:"pem"`
	}
	if err := decodeStrict(c, &in); err != nil {
		return err
	}
	k, err := a.AddKRA(c.Request().Context(), in.PEM, "admin-api")
	if err != nil {
		return err
	}
	return c.JSON(http.StatusCreated, k)
}

func (s *Server) removeKRA(c echo.Context) error {
	a, err := s.archiver()
	if err != nil {
		return err
	}
	if err := a.RemoveKRA(c.Request().Context(), c.Param("thumbprint"), "admin-api"); err != nil {
		return err
	}
	return c.NoContent(http.StatusNoContent)
}

func (s *Server) recoverKey(c echo.Context) error {
	a, err := s.archiver()
	if err != nil {
		return err
	}
	env, err := a.RecoverKey(c.Request().Context(), c.Param("serial"), "admin-api")
	if err != nil {
		return err
	}
	c.Response().Header().Set("Cache-Control", "no-store")
	return c.JSON(http.StatusOK, apiclient.RecoveredKey{Serial: c.Param("serial"), Envelope: env, Format: "cms-enveloped-pkcs8"})
}
