package api

import (
	"context"
	"encoding/json"
	"net/http"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/enrollment-appliance/aeappliance/apiclient"
	"github.com/enrollment-appliance/aeappliance/enrollsvc"
	"github.com/enrollment-appliance/aeappliance/enrollsvc/store"
	"github.com/enrollment-appliance/aeappliance/proto/certutil"
)

// Revoker is the core call behind POST /api/v1/certificates/{serial}/revoke.
type Revoker interface {
	Revoke(ctx context.Context, serial string, reason int, by string) (*store.Certificate, error)
}

// CRLPublisher publishes new CRLs at once (POST /api/v1/crl/publish).
type CRLPublisher interface {
	PublishCRL(ctx context.Context) (apiclient.CRLInfo, error)
}

// SCEPAdmin manages SCEP profiles and one-time challenges.
type SCEPAdmin interface {
	AddSCEPProfile(ctx context.Context, spec enrollsvc.SCEPProfileSpec, by string) (store.SCEPProfile, error)
	SCEPProfiles(ctx context.Context) ([]store.SCEPProfile, error)
	NewSCEPChallenge(ctx context.Context, spec enrollsvc.SCEPChallengeSpec, by string) (string, time.Time, error)
}

func (s *Server) revoke(c echo.Context) error {
	if s.cfg.Revoker == nil {
		return echo.NewHTTPError(http.StatusServiceUnavailable, "revocation is not configured")
	}
	n, err := certutil.ParseSerial(c.Param("serial"))
	if err != nil {
		return badRequest("%v", err)
	}
	var in apiclient.RevokeRequest
	if err := json.NewDecoder(c.Request().Body).Decode(&in); err != nil {
		return badRequest("request body: %v", err)
	}
	reason, err := enrollsvc.ParseReason(in.Reason)
	if err != nil {
		return err
	}
	sc, err := s.cfg.Revoker.Revoke(c.Request().Context(), certutil.SerialString(n), reason, "admin-api")
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, certView(*sc, s.cfg.Now(), false))
}

func (s *Server) publishCRL(c echo.Context) error {
	if s.cfg.CRL == nil {
		return echo.NewHTTPError(http.StatusServiceUnavailable, "CRL publishing is not configured")
	}
	info, err := s.cfg.CRL.PublishCRL(c.Request().Context())
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, info)
}

func (s *Server) scepAdmin() (SCEPAdmin, error) {
	if s.cfg.SCEP == nil {
		return nil, echo.NewHTTPError(http.StatusServiceUnavailable, "SCEP needs a directory (enrollsvc init --ldap-url ...)")
	}
	return s.cfg.SCEP, nil
}

func (s *Server) scepProfiles(c echo.Context) error {
	a, err := s.scepAdmin()
	if err != nil {
		return err
	}
	ps, err := a.SCEPProfiles(c.Request().Context())
	if err != nil {
		return err
	}
	out := make([]apiclient.SCEPProfile, 0, len(ps))
	for _, p := range ps {
		out = append(out, profileView(p))
	}
	return c.JSON(http.StatusOK, out)
}

func profileView(p store.SCEPProfile) apiclient.SCEPProfile {
	v := apiclient.SCEPProfile{Name: p.Name, Template: p.Template, Account: p.Account, AccountSID: p.AccountSID, Mode: p.Mode, Created: p.Created,
		AllowDES: p.AllowDES, MDM: p.MDM}
	if p.MDM != "" {
		v.Mode = "mdm"
	}
	return v
}

func (s *Server) addSCEPProfile(c echo.Context) error {
	a, err := s.scepAdmin()
	if err != nil {
		return err
	}
	var in apiclient.SCEPProfileSpec
	if err := json.NewDecoder(c.Request().Body).Decode(&in); err != nil {
		return badRequest("request body: %v", err)
	}
	p, err := a.AddSCEPProfile(c.Request().Context(), enrollsvc.SCEPProfileSpec{Name: in.Name, Template: in.Template,
		Account: in.Account, StaticChallenge: in.StaticChallenge, OneTime: in.OneTime, AllowDES: in.AllowDES, MDM: in.MDM}, "admin-api")
	if err != nil {
		return err
	}
	return c.JSON(http.StatusCreated, profileView(p))
}

func (s *Server) scepChallenge(c echo.Context) error {
	a, err := s.scepAdmin()
	if err != nil {
		return err
	}
	var in apiclient.ChallengeRequest
	if err := json.NewDecoder(c.Request().Body).Decode(&in); err != nil {
		return badRequest("request body: %v", err)
	}
	spec := enrollsvc.SCEPChallengeSpec{Profile: in.Profile, Subject: in.Subject, Account: in.Account}
	if in.TTL != "" {
		if spec.TTL, err = time.ParseDuration(in.TTL); err != nil {
			return badRequest("ttl %q: %v", in.TTL, err)
		}
	}
	ch, exp, err := a.NewSCEPChallenge(c.Request().Context(), spec, "admin-api")
	if err != nil {
		return err
	}
	return c.JSON(http.StatusCreated, apiclient.Challenge{Challenge: ch, Profile: in.Profile, Expires: exp})
}
