package api

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/enrollment-appliance/aeappliance/enrollsvc"
	"github.com/enrollment-appliance/aeappliance/enrollsvc/store"
	"github.com/enrollment-appliance/aeappliance/proto/certutil"
)

// Revoker is the core call behind POST /api/v1/certificates/{serial}/revoke.
type Revoker interface {
	Revoke(ctx context.Context, serial string, reason int, by string) (*store.Certificate, error)
}

// CRLInfo describes the CRLs just published.
type CRLInfo struct {
	Number       int64     `json:"number"`
	ThisUpdate   time.Time `json:"this_update"`
	NextUpdate   time.Time `json:"next_update"`
	Entries      int       `json:"entries"`
	Bytes        int       `json:"bytes"`
	DeltaNumber  int64     `json:"delta_number"`
	DeltaEntries int       `json:"delta_entries"`
	URL          string    `json:"url,omitempty"`
	Took         string    `json:"took"`
}

// CRLPublisher publishes new CRLs at once (POST /api/v1/crl/publish).
type CRLPublisher interface {
	PublishCRL(ctx context.Context) (CRLInfo, error)
}

// SCEPAdmin manages SCEP profiles and one-time challenges.
type SCEPAdmin interface {
	AddSCEPProfile(ctx context.Context, spec enrollsvc.SCEPProfileSpec, by string) (store.SCEPProfile, error)
	SCEPProfiles(ctx context.Context) ([]store.SCEPProfile, error)
	NewSCEPChallenge(ctx context.Context, spec enrollsvc.SCEPChallengeSpec, by string) (string, time.Time, error)
}

// RevokeRequest is the body of POST /api/v1/certificates/{serial}/revoke.
type RevokeRequest struct {
	Reason string `json:"reason"` // keyCompromise, superseded, cessationOfOperation, ... (or the number)
}

// ChallengeRequest is the body of POST /api/v1/scep/challenges.
type ChallengeRequest struct {
	Profile string `json:"profile"`
	Subject string `json:"subject,omitempty"`
	Account string `json:"account,omitempty"`
	TTL     string `json:"ttl,omitempty"` // Go duration, default 1h
}

// Challenge is a new one-time challenge, shown once.
type Challenge struct {
	Challenge string    `json:"challenge"`
	Profile   string    `json:"profile"`
	Expires   time.Time `json:"expires"`
}

func (s *Server) revoke(c echo.Context) error {
	if s.cfg.Revoker == nil {
		return echo.NewHTTPError(http.StatusServiceUnavailable, "revocation is not configured")
	}
	n, err := certutil.ParseSerial(c.Param("serial"))
	if err != nil {
		return badRequest("%v", err)
	}
	var in RevokeRequest
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
	if ps == nil {
		ps = []store.SCEPProfile{}
	}
	return c.JSON(http.StatusOK, ps)
}

func (s *Server) addSCEPProfile(c echo.Context) error {
	a, err := s.scepAdmin()
	if err != nil {
		return err
	}
	var in enrollsvc.SCEPProfileSpec
	if err := json.NewDecoder(c.Request().Body).Decode(&in); err != nil {
		return badRequest("request body: %v", err)
	}
	p, err := a.AddSCEPProfile(c.Request().Context(), in, "admin-api")
	if err != nil {
		return err
	}
	return c.JSON(http.StatusCreated, p)
}

func (s *Server) scepChallenge(c echo.Context) error {
	a, err := s.scepAdmin()
	if err != nil {
		return err
	}
	var in ChallengeRequest
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
	return c.JSON(http.StatusCreated, Challenge{Challenge: ch, Profile: in.Profile, Expires: exp})
}

// Revoke revokes a certificate with a reason name.
func (c *Client) Revoke(ctx context.Context, serial, reason string) (Certificate, error) {
	var out Certificate
	return out, c.do(ctx, http.MethodPost, "/api/v1/certificates/"+url.PathEscape(serial)+"/revoke", RevokeRequest{Reason: reason}, &out)
}

// PublishCRL publishes new CRLs now.
func (c *Client) PublishCRL(ctx context.Context) (CRLInfo, error) {
	var out CRLInfo
	return out, c.do(ctx, http.MethodPost, "/api/v1/crl/publish", struct{}{}, &out)
}

// SCEPProfiles lists the SCEP profiles.
func (c *Client) SCEPProfiles(ctx context.Context) ([]store.SCEPProfile, error) {
	var out []store.SCEPProfile
	return out, c.do(ctx, http.MethodGet, "/api/v1/scep/profiles", nil, &out)
}

// AddSCEPProfile creates a SCEP profile.
func (c *Client) AddSCEPProfile(ctx context.Context, spec enrollsvc.SCEPProfileSpec) (store.SCEPProfile, error) {
	var out store.SCEPProfile
	return out, c.do(ctx, http.MethodPost, "/api/v1/scep/profiles", spec, &out)
}

// SCEPChallenge asks for a one-time challenge.
func (c *Client) SCEPChallenge(ctx context.Context, in ChallengeRequest) (Challenge, error) {
	var out Challenge
	return out, c.do(ctx, http.MethodPost, "/api/v1/scep/challenges", in, &out)
}
