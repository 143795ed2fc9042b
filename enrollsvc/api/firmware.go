package api

import (
	"context"
	"errors"
	"io"
	"net/http"

	"github.com/labstack/echo/v4"

	"github.com/enrollment-appliance/aeappliance/apiclient"
	"github.com/enrollment-appliance/aeappliance/enrollsvc/events"
)

// MaxFirmware is the largest update bundle PUT /api/v1/firmware takes.
const MaxFirmware = 64 << 20

// FirmwareAdmin is the appliance's firmware slots (nil outside an appliance).
type FirmwareAdmin interface {
	FirmwareStatus(ctx context.Context) (apiclient.FirmwareStatus, error)
	// InstallFirmware verifies a signed update bundle completely and installs it in the
	// free slot, to be tried at the next boot; a bundle that fails changes nothing.
	InstallFirmware(ctx context.Context, r io.Reader) (apiclient.FirmwareInstalled, error)
}

// ErrBadBundle marks a bundle that failed verification (422).
var ErrBadBundle = errors.New("update bundle refused")

func (s *Server) firmwareStatus(c echo.Context) error {
	if s.cfg.Firmware == nil {
		return echo.NewHTTPError(http.StatusServiceUnavailable, "firmware updates are only on the appliance")
	}
	st, err := s.cfg.Firmware.FirmwareStatus(c.Request().Context())
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, st)
}

func (s *Server) installFirmware(c echo.Context) error {
	if s.cfg.Firmware == nil {
		return echo.NewHTTPError(http.StatusServiceUnavailable, "firmware updates are only on the appliance")
	}
	body := http.MaxBytesReader(c.Response(), c.Request().Body, MaxFirmware)
	res, err := s.cfg.Firmware.InstallFirmware(c.Request().Context(), body)
	var tooBig *http.MaxBytesError
	switch {
	case errors.As(err, &tooBig):
		return echo.NewHTTPError(http.StatusRequestEntityTooLarge, "the bundle is larger than 64 MiB")
	case errors.Is(err, ErrBadBundle):
		return echo.NewHTTPError(http.StatusUnprocessableEntity, err.Error())
	case err != nil:
		return err
	}
	_ = s.cfg.Recorder.Record(c.Request().Context(), events.FirmwareInstalled, "", "version", res.Version, "slot", res.Slot,
		"remote", c.RealIP())
	return c.JSON(http.StatusOK, res)
}
