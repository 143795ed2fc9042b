package api

import (
	"context"
	"net/http"
	"strconv"

	"github.com/labstack/echo/v4"

	"github.com/enrollment-appliance/aeappliance/apiclient"
	"github.com/enrollment-appliance/aeappliance/enrollsvc"
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
