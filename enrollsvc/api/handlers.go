package api

import (
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/enrollment-appliance/aeappliance/apiclient"
	"github.com/enrollment-appliance/aeappliance/enrollsvc"
	"github.com/enrollment-appliance/aeappliance/enrollsvc/events"
	"github.com/enrollment-appliance/aeappliance/enrollsvc/store"
	"github.com/enrollment-appliance/aeappliance/proto/certutil"
)

func badRequest(format string, a ...any) error {
	return echo.NewHTTPError(http.StatusBadRequest, fmt.Sprintf(format, a...))
}

// queryInt reads an optional non-negative integer query parameter.
func queryInt(c echo.Context, name string) (int64, error) {
	v := c.QueryParam(name)
	if v == "" {
		return 0, nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 {
		return 0, badRequest("query parameter %s=%q: want a non-negative integer", name, v)
	}
	return n, nil
}

func certView(sc store.Certificate, now time.Time, withPEM bool) apiclient.Certificate {
	v := apiclient.Certificate{Serial: sc.Serial, Subject: sc.Subject, Account: sc.Account, Template: sc.Template,
		NotBefore: sc.NotBefore, NotAfter: sc.NotAfter, Status: apiclient.CertStatus(sc.Status), Expired: !now.Before(sc.NotAfter),
		RevocationReason: sc.RevocationReason, RequestID: sc.RequestID, IssuedAt: sc.IssuedAt}
	if !sc.RevokedAt.IsZero() {
		t := sc.RevokedAt
		v.RevokedAt = &t
	}
	if withPEM {
		v.PEM = string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: sc.DER}))
	}
	return v
}

func requestView(r store.Request, withCSR bool) apiclient.Request {
	v := apiclient.Request{ID: r.ID, State: apiclient.RequestState(r.State), Template: r.Template, Requester: r.Requester, Account: r.Account,
		Submitted: r.Submitted, Updated: r.Updated, Reason: r.Reason, Serial: r.Serial}
	if withCSR && len(r.CSR) > 0 {
		v.CSRPEM = string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: r.CSR}))
	}
	return v
}

func (s *Server) listCerts(c echo.Context) error {
	limit, err := queryInt(c, "limit")
	if err != nil {
		return err
	}
	offset, err := queryInt(c, "offset")
	if err != nil {
		return err
	}
	st := store.CertStatus(c.QueryParam("status"))
	if st != "" && st != store.CertValid && st != store.CertRevoked {
		return badRequest("query parameter status=%q: want valid or revoked", st)
	}
	list, err := s.cfg.Store.ListCertificates(c.Request().Context(), store.CertFilter{Account: c.QueryParam("account"),
		Template: c.QueryParam("template"), Status: st, Limit: int(limit), Offset: int(offset)})
	if err != nil {
		return err
	}
	now := s.cfg.Now()
	out := make([]apiclient.Certificate, 0, len(list))
	for _, sc := range list {
		out = append(out, certView(sc, now, false))
	}
	return c.JSON(http.StatusOK, out)
}

func (s *Server) getCert(c echo.Context) error {
	n, err := certutil.ParseSerial(c.Param("serial"))
	if err != nil {
		return badRequest("%v", err)
	}
	sc, err := s.cfg.Store.GetCertificate(c.Request().Context(), certutil.SerialString(n))
	if errors.Is(err, store.ErrNotFound) {
		return echo.NewHTTPError(http.StatusNotFound, "no certificate with serial "+certutil.SerialString(n))
	}
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, certView(sc, s.cfg.Now(), true))
}

func (s *Server) listRequests(c echo.Context) error {
	limit, err := queryInt(c, "limit")
	if err != nil {
		return err
	}
	after, err := queryInt(c, "after")
	if err != nil {
		return err
	}
	state := store.RequestState(c.QueryParam("state"))
	if state != "" && !state.Valid() {
		return badRequest("query parameter state=%q: want pending, issued, denied or failed", state)
	}
	list, err := s.cfg.Store.ListRequests(c.Request().Context(), store.RequestFilter{State: state,
		Account: c.QueryParam("account"), AfterID: after, Limit: int(limit)})
	if err != nil {
		return err
	}
	out := make([]apiclient.Request, 0, len(list))
	for _, r := range list {
		out = append(out, requestView(r, false))
	}
	return c.JSON(http.StatusOK, out)
}

func (s *Server) getRequest(c echo.Context) error {
	id, err := strconv.ParseInt(c.Param("id"), 10, 64)
	if err != nil || id <= 0 {
		return badRequest("request id %q: want a positive integer", c.Param("id"))
	}
	r, err := s.cfg.Store.GetRequest(c.Request().Context(), id)
	if errors.Is(err, store.ErrNotFound) {
		return echo.NewHTTPError(http.StatusNotFound, fmt.Sprintf("no request %d", id))
	}
	if err != nil {
		return err
	}
	v := requestView(r, true)
	if r.State == store.RequestPending && s.cfg.Enroller != nil && len(r.Decision) > 0 {
		if h, err := s.cfg.Enroller.HeldOf(c.Request().Context(), id); err == nil {
			v.Held = &apiclient.HeldView{Subject: h.Subject, SANs: h.SANs, Publish: h.Publish, Reasons: h.Reasons}
		}
	}
	return c.JSON(http.StatusOK, v)
}

func (s *Server) listEvents(c echo.Context) error {
	limit, err := queryInt(c, "limit")
	if err != nil {
		return err
	}
	after, err := queryInt(c, "after")
	if err != nil {
		return err
	}
	id, err := queryInt(c, "id")
	if err != nil {
		return err
	}
	cat := c.QueryParam("category")
	if cat != "" && cat != string(events.Admin) && cat != string(events.Operational) {
		return badRequest("query parameter category=%q: want Admin or Operational", cat)
	}
	newest := false
	switch v := c.QueryParam("newest"); v {
	case "", "false":
	case "true":
		newest = true
	default:
		return badRequest("query parameter newest=%q: want true or false", v)
	}
	list, err := s.cfg.Store.ListEvents(c.Request().Context(), store.EventFilter{AfterSeq: after, ID: int(id),
		Category: cat, Limit: int(limit), Newest: newest})
	if err != nil {
		return err
	}
	out := make([]apiclient.Event, 0, len(list))
	for _, e := range list {
		out = append(out, apiclient.Event{Seq: e.Seq, ID: e.ID, Category: e.Category, Level: e.Level, Time: e.Time,
			Message: e.Message, Fields: e.Fields, Instance: e.Instance, N: e.N, Prev: hex.EncodeToString(e.Prev),
			Hash: hex.EncodeToString(e.Hash)})
	}
	return c.JSON(http.StatusOK, out)
}

// MaxValidityDays caps what an administrator can ask for (the profile and the CA certificate
// cap it further).
const MaxValidityDays = 3650

func (s *Server) issue(c echo.Context) error {
	var in apiclient.IssueRequest
	dec := json.NewDecoder(c.Request().Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&in); err != nil {
		return badRequest("request body: %v", err)
	}
	if in.ValidityDays == 0 {
		in.ValidityDays = 365
	}
	if in.ValidityDays < 0 || in.ValidityDays > MaxValidityDays {
		return badRequest("validity_days %d: want 1..%d", in.ValidityDays, MaxValidityDays)
	}
	der, err := csrDER(in.CSR)
	if err != nil {
		return err
	}
	res, err := s.cfg.Service.IssueAdmin(c.Request().Context(), enrollsvc.AdminIssue{Profile: in.Profile, CSR: der,
		Account: in.Account, Validity: time.Duration(in.ValidityDays) * 24 * time.Hour, By: "admin-api", Remote: c.RealIP()})
	if err != nil {
		return err
	}
	serial := certutil.SerialString(res.Certificate.SerialNumber)
	return c.JSON(http.StatusCreated, apiclient.IssueResponse{Status: "issued", RequestID: res.RequestID, Serial: serial,
		Certificate: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: res.Certificate.Raw}))})
}
