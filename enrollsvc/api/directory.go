package api

import (
	"context"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/enrollment-appliance/aeappliance/apiclient"
	"github.com/enrollment-appliance/aeappliance/enrollsvc"
	"github.com/enrollment-appliance/aeappliance/enrollsvc/events"
	"github.com/enrollment-appliance/aeappliance/enrollsvc/issue"
	"github.com/enrollment-appliance/aeappliance/enrollsvc/policy"
	"github.com/enrollment-appliance/aeappliance/ldap/secdesc"
)

// Enroller is the directory-driven part of the core the API exposes.
type Enroller interface {
	OfferedTemplates(ctx context.Context) ([]enrollsvc.OfferedTemplate, error)
	Explain(ctx context.Context, account, template string) (*enrollsvc.Explanation, error)
	Enroll(ctx context.Context, er enrollsvc.EnrollRequest) (*enrollsvc.EnrollResult, error)
	ApproveRequest(ctx context.Context, id int64, by string) (*enrollsvc.Issued, error)
	Deny(ctx context.Context, id int64, reason, by string) error
	HeldOf(ctx context.Context, id int64) (enrollsvc.Held, error)
}

func templateView(ot enrollsvc.OfferedTemplate) apiclient.Template {
	v := apiclient.Template{Name: ot.Name, Error: ot.Error}
	t := ot.Template
	if t == nil {
		return v
	}
	v.DisplayName, v.SchemaVersion = t.DisplayName, t.SchemaVersion
	v.Revision = fmt.Sprintf("%d.%d", t.Major, t.Minor)
	if len(t.OID) > 0 {
		v.OID = t.OID.String()
	}
	v.Validity, v.RenewalPeriod = humanDuration(t.Validity), humanDuration(t.Renewal)
	v.ValiditySeconds, v.RenewalSeconds = int64(t.Validity/time.Second), int64(t.Renewal/time.Second)
	v.MinimalKeySize, v.KeyAlgorithm, v.RASignatures = t.MinimalKeySize, t.KeyAlgorithm, t.RASignatures
	v.KeyUsage = policy.KeyUsageNames(t.KeyUsage)
	for _, o := range t.EKUs {
		v.EKUs = append(v.EKUs, o.String())
	}
	v.NameFlags, v.EnrollmentFlags = t.NameFlags.Names(), t.EnrollmentFlags.Names()
	v.PrivateKeyFlags, v.GeneralFlags = t.PrivateKeyFlags.Names(), t.GeneralFlags.Names()
	v.Supersedes = t.Supersedes
	return v
}

// humanDuration writes periods the way the template console does: years, weeks, days, hours.
func humanDuration(d time.Duration) string {
	if d <= 0 {
		return ""
	}
	const day = 24 * time.Hour
	switch {
	case d%(365*day) == 0:
		return plural(int64(d/(365*day)), "year")
	case d%(7*day) == 0:
		return plural(int64(d/(7*day)), "week")
	case d%day == 0:
		return plural(int64(d/day), "day")
	}
	return d.String()
}

func plural(n int64, unit string) string {
	if n == 1 {
		return "1 " + unit
	}
	return strconv.FormatInt(n, 10) + " " + unit + "s"
}

func verdictView(v secdesc.Verdict, names map[string]string) apiclient.Verdict {
	out := apiclient.Verdict{Allowed: v.Allowed, Reason: v.Reason}
	if !v.SID.IsZero() {
		out.SID = v.SID.String()
		out.Trustee = names[out.SID]
	}
	return out
}

func decisionView(d policy.Decision) apiclient.TemplateDecision {
	return apiclient.TemplateDecision{Template: d.Template, Outcome: outcomeName(d.Outcome), Read: verdictView(d.Access.Read, d.Names),
		Enroll: verdictView(d.Access.Enroll, d.Names), Autoenroll: verdictView(d.Access.Autoenroll, d.Names), Subject: d.Subject,
		SANs: d.SANs, Publish: d.Publish, Reasons: d.Reasons, Text: d.Explain()}
}

func outcomeName(o policy.Outcome) string {
	switch o {
	case policy.Issue:
		return "issue"
	case policy.Pend:
		return "pend"
	}
	return "refuse"
}

func (s *Server) needDirectory() error {
	if s.cfg.Enroller == nil {
		return echo.NewHTTPError(http.StatusServiceUnavailable, "no directory is configured (enrollsvc init --ldap-url ...)")
	}
	return nil
}

func (s *Server) templates(c echo.Context) error {
	if err := s.needDirectory(); err != nil {
		return err
	}
	list, err := s.cfg.Enroller.OfferedTemplates(c.Request().Context())
	if err != nil {
		return err
	}
	out := make([]apiclient.Template, 0, len(list))
	for _, ot := range list {
		out = append(out, templateView(ot))
	}
	return c.JSON(http.StatusOK, out)
}

func (s *Server) explain(c echo.Context) error {
	if err := s.needDirectory(); err != nil {
		return err
	}
	account := c.QueryParam("account")
	if account == "" {
		return badRequest("query parameter account is required (sAMAccountName, UPN, HOST$ or DN)")
	}
	ex, err := s.cfg.Enroller.Explain(c.Request().Context(), account, c.QueryParam("template"))
	if err != nil {
		return err
	}
	out := apiclient.Explanation{Templates: []apiclient.TemplateDecision{}, Errors: ex.Errors, Reasons: ex.Reasons}
	if a := ex.Account; a != nil {
		out.Account = &apiclient.AccountView{DN: a.DN, SID: a.SID.String(), SAMAccountName: a.SAMAccountName, UPN: a.UPN,
			Mail: a.Mail, DNSHostName: a.DNSHostName, Computer: a.Computer, TokenSIDs: len(a.Token)}
	}
	for _, d := range ex.Decisions {
		out.Templates = append(out.Templates, decisionView(d))
	}
	return c.JSON(http.StatusOK, out)
}

func (s *Server) enroll(c echo.Context) error {
	if err := s.needDirectory(); err != nil {
		return err
	}
	var in apiclient.EnrollRequest
	dec := json.NewDecoder(c.Request().Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&in); err != nil {
		return badRequest("request body: %v", err)
	}
	if in.Account == "" {
		return badRequest("account is required")
	}
	der, err := csrDER(in.CSR)
	if err != nil {
		return err
	}
	res, err := s.cfg.Enroller.Enroll(c.Request().Context(), enrollsvc.EnrollRequest{Template: in.Template,
		Account: in.Account, Requester: "admin-api", CSR: der})
	if err != nil {
		return err
	}
	out := apiclient.IssueResponse{Status: res.Status, RequestID: res.RequestID, Reasons: res.Reasons}
	if res.Certificate != nil {
		out.Serial = issue.SerialString(res.Certificate.SerialNumber)
		out.Certificate = string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: res.Certificate.Raw}))
	}
	return c.JSON(http.StatusOK, out)
}

// csrDER takes exactly one PEM certificate request.
func csrDER(p string) ([]byte, error) {
	blk, rest := pem.Decode([]byte(p))
	if blk == nil || blk.Type != "CERTIFICATE REQUEST" && blk.Type != "NEW CERTIFICATE REQUEST" || len(strings.TrimSpace(string(rest))) > 0 {
		return nil, badRequest("csr: want exactly one PEM CERTIFICATE REQUEST block")
	}
	return blk.Bytes, nil
}

func requestID(c echo.Context) (int64, error) {
	id, err := strconv.ParseInt(c.Param("id"), 10, 64)
	if err != nil || id <= 0 {
		return 0, badRequest("request id %q: want a positive integer", c.Param("id"))
	}
	return id, nil
}

func (s *Server) approve(c echo.Context) error {
	if err := s.needDirectory(); err != nil {
		return err
	}
	id, err := requestID(c)
	if err != nil {
		return err
	}
	res, err := s.cfg.Enroller.ApproveRequest(c.Request().Context(), id, "admin-api")
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, apiclient.IssueResponse{Status: enrollsvc.StatusIssued, RequestID: id,
		Serial:      issue.SerialString(res.Certificate.SerialNumber),
		Certificate: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: res.Certificate.Raw}))})
}

func (s *Server) deny(c echo.Context) error {
	if err := s.needDirectory(); err != nil {
		return err
	}
	id, err := requestID(c)
	if err != nil {
		return err
	}
	var in apiclient.DenyRequest
	if err := json.NewDecoder(c.Request().Body).Decode(&in); err != nil {
		return badRequest("request body: %v", err)
	}
	if err := s.cfg.Enroller.Deny(c.Request().Context(), id, in.Reason, "admin-api"); err != nil {
		return err
	}
	return c.JSON(http.StatusOK, apiclient.IssueResponse{Status: enrollsvc.StatusDenied, RequestID: id, Reasons: []string{in.Reason}})
}

// installKeytab is PUT /api/v1/enroll/keytab: the body is the keytab file.
func (s *Server) installKeytab(c echo.Context) error {
	if s.cfg.Keytabs == nil {
		return echo.NewHTTPError(http.StatusServiceUnavailable, "the enrollment web services are not configured")
	}
	b, err := io.ReadAll(c.Request().Body)
	if err != nil {
		return badRequest("reading the keytab: %v", err)
	}
	if len(b) == 0 {
		return badRequest("the body must be the keytab file")
	}
	if err := s.cfg.Keytabs.InstallKeytab(c.Request().Context(), b); err != nil {
		return echo.NewHTTPError(http.StatusUnprocessableEntity, err.Error())
	}
	_ = s.cfg.Recorder.Record(c.Request().Context(), events.KeytabInstalled, "", "remote", c.RealIP())
	return c.JSON(http.StatusOK, map[string]string{"status": "installed"})
}
