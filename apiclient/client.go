// Package apiclient is the enrollment service's local management API as its clients see it: the
// JSON wire types and a Go client (TLS with a pinned CA, the admin bearer token), used by aectl,
// the appliance's console and the tests. It imports only the standard library and the data
// directory's layout (package config, itself standard library only), so a client links no
// server code; the server (enrollsvc/api) answers with these types. Every endpoint but
// /api/v1/health and /api/v1/ca/certificate needs the admin token made by `enrollsvc init`.
package apiclient

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Client talks to the local API.
type Client struct {
	base  string
	token string
	hc    *http.Client
}

// NewClient returns a client for the API at addr (host:port), trusting caPEM for its TLS
// certificate and sending token as the admin credential.
func NewClient(addr, token string, caPEM []byte) (*Client, error) {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, errors.New("api client: no CA certificate to trust")
	}
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return nil, fmt.Errorf("api client: address %q: %w", addr, err)
	}
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12},
		MaxIdleConnsPerHost: 16, TLSHandshakeTimeout: 10 * time.Second}
	return &Client{base: "https://" + addr, token: token, hc: &http.Client{Transport: tr, Timeout: 60 * time.Second}}, nil
}

// HTTPError is a non-2xx answer.
type HTTPError struct {
	StatusCode int
	Body       ErrorBody
}

func (e *HTTPError) Error() string {
	msg := fmt.Sprintf("%d %s: %s", e.StatusCode, http.StatusText(e.StatusCode), e.Body.Error)
	if len(e.Body.Reasons) > 0 {
		msg += " (" + strings.Join(e.Body.Reasons, "; ") + ")"
	}
	return msg
}

func (c *Client) do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	contentType := "application/json"
	if raw, ok := in.([]byte); ok { // a file, sent as it is
		body, contentType = bytes.NewReader(raw), "application/octet-stream"
	} else if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return err
	}
	if in != nil {
		req.Header.Set("Content-Type", contentType)
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return fmt.Errorf("calling the enrollsvc API (is `enrollsvc serve` running?): %w", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return fmt.Errorf("reading API answer: %w", err)
	}
	if resp.StatusCode/100 != 2 {
		he := &HTTPError{StatusCode: resp.StatusCode}
		if json.Unmarshal(b, &he.Body) != nil || he.Body.Error == "" {
			he.Body.Error = strings.TrimSpace(string(b))
		}
		return he
	}
	if raw, ok := out.(*[]byte); ok {
		*raw = b
		return nil
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			return fmt.Errorf("decoding API answer: %w", err)
		}
	}
	return nil
}

// Health asks whether the service is healthy (no credential needed).
func (c *Client) Health(ctx context.Context) error {
	return c.do(ctx, http.MethodGet, "/api/v1/health", nil, nil)
}

// Status returns the service status.
func (c *Client) Status(ctx context.Context) (Status, error) {
	var s Status
	return s, c.do(ctx, http.MethodGet, "/api/v1/status", nil, &s)
}

// Cluster returns the store and the instances serving from it.
func (c *Client) Cluster(ctx context.Context) (Cluster, error) {
	var s Cluster
	return s, c.do(ctx, http.MethodGet, "/api/v1/cluster", nil, &s)
}

// CACertPEM returns the CA certificate.
func (c *Client) CACertPEM(ctx context.Context) ([]byte, error) {
	var b []byte
	return b, c.do(ctx, http.MethodGet, "/api/v1/ca/certificate", nil, &b)
}

// CertQuery filters Certificates.
type CertQuery struct {
	Account, Template string
	Status            CertStatus
	Limit, Offset     int
}

// Certificates lists issued certificates.
func (c *Client) Certificates(ctx context.Context, q CertQuery) ([]Certificate, error) {
	v := url.Values{}
	set(v, "account", q.Account)
	set(v, "template", q.Template)
	set(v, "status", string(q.Status))
	setInt(v, "limit", int64(q.Limit))
	setInt(v, "offset", int64(q.Offset))
	var out []Certificate
	return out, c.do(ctx, http.MethodGet, "/api/v1/certificates"+query(v), nil, &out)
}

// Certificate returns one certificate with its PEM.
func (c *Client) Certificate(ctx context.Context, serial string) (Certificate, error) {
	var out Certificate
	return out, c.do(ctx, http.MethodGet, "/api/v1/certificates/"+url.PathEscape(serial), nil, &out)
}

// RequestQuery filters Requests.
type RequestQuery struct {
	State   RequestState
	Account string
	After   int64
	Limit   int
}

// Requests lists certificate requests.
func (c *Client) Requests(ctx context.Context, q RequestQuery) ([]Request, error) {
	v := url.Values{}
	set(v, "state", string(q.State))
	set(v, "account", q.Account)
	setInt(v, "after", q.After)
	setInt(v, "limit", int64(q.Limit))
	var out []Request
	return out, c.do(ctx, http.MethodGet, "/api/v1/requests"+query(v), nil, &out)
}

// Request returns one request.
func (c *Client) Request(ctx context.Context, id int64) (Request, error) {
	var out Request
	return out, c.do(ctx, http.MethodGet, "/api/v1/requests/"+strconv.FormatInt(id, 10), nil, &out)
}

// EventQuery filters Events.
type EventQuery struct {
	After    int64
	ID       int
	Category string
	Limit    int
	Newest   bool // the last Limit events instead of the first (still oldest first)
}

// Events lists audit events.
func (c *Client) Events(ctx context.Context, q EventQuery) ([]Event, error) {
	v := url.Values{}
	setInt(v, "after", q.After)
	setInt(v, "id", int64(q.ID))
	set(v, "category", q.Category)
	setInt(v, "limit", int64(q.Limit))
	if q.Newest {
		v.Set("newest", "true")
	}
	var raw []byte
	if err := c.do(ctx, http.MethodGet, "/api/v1/events"+query(v), nil, &raw); err != nil {
		return nil, err
	}
	// Numbers stay as written (json.Number): a large integer in an event's fields reads back
	// exactly, and the audit chain's hash covers the fields as stored.
	var out []Event
	d := json.NewDecoder(bytes.NewReader(raw))
	d.UseNumber()
	if err := d.Decode(&out); err != nil {
		return nil, fmt.Errorf("decoding API answer: %w", err)
	}
	return out, nil
}

// Issue has the CA issue a certificate for a CSR as an administrator.
func (c *Client) Issue(ctx context.Context, in IssueRequest) (IssueResponse, error) {
	var out IssueResponse
	return out, c.do(ctx, http.MethodPost, "/api/v1/certificates", in, &out)
}

// Templates lists the templates this CA offers, decoded.
func (c *Client) Templates(ctx context.Context) ([]Template, error) {
	var out []Template
	return out, c.do(ctx, http.MethodGet, "/api/v1/templates", nil, &out)
}

// Explain says what policy decides for account (and only template, if given).
func (c *Client) Explain(ctx context.Context, account, template string) (Explanation, error) {
	v := url.Values{"account": {account}}
	set(v, "template", template)
	var out Explanation
	return out, c.do(ctx, http.MethodGet, "/api/v1/explain"+query(v), nil, &out)
}

// Enroll runs a CSR through the directory's policy for an account.
func (c *Client) Enroll(ctx context.Context, in EnrollRequest) (IssueResponse, error) {
	var out IssueResponse
	return out, c.do(ctx, http.MethodPost, "/api/v1/enroll", in, &out)
}

// Approve issues a pending request.
func (c *Client) Approve(ctx context.Context, id int64) (IssueResponse, error) {
	var out IssueResponse
	return out, c.do(ctx, http.MethodPost, "/api/v1/requests/"+strconv.FormatInt(id, 10)+"/approve", struct{}{}, &out)
}

// Deny refuses a pending request.
func (c *Client) Deny(ctx context.Context, id int64, reason string) (IssueResponse, error) {
	var out IssueResponse
	return out, c.do(ctx, http.MethodPost, "/api/v1/requests/"+strconv.FormatInt(id, 10)+"/deny", DenyRequest{Reason: reason}, &out)
}

// InstallKeytab installs the Kerberos service keytab of the enrollment web services.
func (c *Client) InstallKeytab(ctx context.Context, keytab []byte) error {
	return c.do(ctx, http.MethodPut, "/api/v1/enroll/keytab", keytab, nil)
}

// Revoke revokes a certificate with a reason name (ReasonNames) or number.
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
func (c *Client) SCEPProfiles(ctx context.Context) ([]SCEPProfile, error) {
	var out []SCEPProfile
	return out, c.do(ctx, http.MethodGet, "/api/v1/scep/profiles", nil, &out)
}

// AddSCEPProfile creates a SCEP profile.
func (c *Client) AddSCEPProfile(ctx context.Context, spec SCEPProfileSpec) (SCEPProfile, error) {
	var out SCEPProfile
	return out, c.do(ctx, http.MethodPost, "/api/v1/scep/profiles", spec, &out)
}

// SCEPChallenge asks for a one-time challenge.
func (c *Client) SCEPChallenge(ctx context.Context, in ChallengeRequest) (Challenge, error) {
	var out Challenge
	return out, c.do(ctx, http.MethodPost, "/api/v1/scep/challenges", in, &out)
}

// FirmwareStatus is GET /api/v1/firmware.
func (c *Client) FirmwareStatus(ctx context.Context) (FirmwareStatus, error) {
	var st FirmwareStatus
	return st, c.do(ctx, http.MethodGet, FirmwarePath, nil, &st)
}

// InstallFirmware uploads an update bundle.
func (c *Client) InstallFirmware(ctx context.Context, bundle []byte) (FirmwareInstalled, error) {
	var res FirmwareInstalled
	return res, c.do(ctx, http.MethodPut, FirmwarePath, bundle, &res)
}

func set(v url.Values, k, s string) {
	if s != "" {
		v.Set(k, s)
	}
}

func setInt(v url.Values, k string, n int64) {
	if n != 0 {
		v.Set(k, strconv.FormatInt(n, 10))
	}
}

func query(v url.Values) string {
	if len(v) == 0 {
		return ""
	}
	return "?" + v.Encode()
}

// Ready asks whether the service is ready to take work (no credential needed); a service that is
// not answers 503 with its checks, which are returned with the error.
func (c *Client) Ready(ctx context.Context) (Ready, error) {
	var raw []byte
	err := c.do(ctx, http.MethodGet, "/api/v1/ready", nil, &raw)
	var he *HTTPError
	if errors.As(err, &he) && he.StatusCode == http.StatusServiceUnavailable {
		var r Ready
		if json.Unmarshal([]byte(he.Body.Error), &r) == nil {
			return r, err
		}
	}
	if err != nil {
		return Ready{}, err
	}
	var r Ready
	if err := json.Unmarshal(raw, &r); err != nil {
		return Ready{}, fmt.Errorf("decoding API answer: %w", err)
	}
	return r, nil
}

// Metrics returns GET /metrics (the Prometheus text format) with the client's token.
func (c *Client) Metrics(ctx context.Context) ([]byte, error) {
	var raw []byte
	return raw, c.do(ctx, http.MethodGet, MetricsPath, nil, &raw)
}

// NewMetricsToken has the service make a new metrics token and require it on GET /metrics.
func (c *Client) NewMetricsToken(ctx context.Context) (string, error) {
	var out MetricsToken
	return out.Token, c.do(ctx, http.MethodPost, "/api/v1/metrics/token", nil, &out)
}

// ClearMetricsToken opens GET /metrics again.
func (c *Client) ClearMetricsToken(ctx context.Context) error {
	return c.do(ctx, http.MethodDelete, "/api/v1/metrics/token", nil, nil)
}

// Syslog returns the remote syslog setting and how its streams fare.
func (c *Client) Syslog(ctx context.Context) (SyslogStatus, error) {
	var out SyslogStatus
	return out, c.do(ctx, http.MethodGet, "/api/v1/syslog", nil, &out)
}

// SetSyslog sends the audit events and the log to a remote syslog server from now on.
func (c *Client) SetSyslog(ctx context.Context, s SyslogSettings) (SyslogStatus, error) {
	var out SyslogStatus
	return out, c.do(ctx, http.MethodPut, "/api/v1/syslog", s, &out)
}

// SyslogOff stops sending to the remote syslog server.
func (c *Client) SyslogOff(ctx context.Context) (SyslogStatus, error) {
	var out SyslogStatus
	return out, c.do(ctx, http.MethodDelete, "/api/v1/syslog", nil, &out)
}

// Backup has the service write an encrypted backup (to in's passphrase or recipients) and copies
// it to w. An error means the backup is not whole: what w got must be thrown away.
func (c *Client) Backup(ctx context.Context, in BackupRequest, w io.Writer) (int64, error) {
	b, err := json.Marshal(in)
	if err != nil {
		return 0, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.base+BackupPath, bytes.NewReader(b))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.withoutTimeout().hc.Do(req)
	if err != nil {
		return 0, fmt.Errorf("calling the enrollsvc API (is `enrollsvc serve` running?): %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		he := &HTTPError{StatusCode: resp.StatusCode}
		if json.Unmarshal(body, &he.Body) != nil || he.Body.Error == "" {
			he.Body.Error = strings.TrimSpace(string(body))
		}
		return 0, he
	}
	n, err := io.Copy(w, resp.Body)
	if err != nil {
		return n, fmt.Errorf("the backup was cut short after %d bytes: %w", n, err)
	}
	return n, nil
}

// BackupSchedule returns the backup schedule and how it fares.
func (c *Client) BackupSchedule(ctx context.Context) (BackupScheduleStatus, error) {
	var out BackupScheduleStatus
	return out, c.do(ctx, http.MethodGet, "/api/v1/backup/schedule", nil, &out)
}

// SetBackupSchedule sets the backup schedule.
func (c *Client) SetBackupSchedule(ctx context.Context, s BackupSchedule) (BackupScheduleStatus, error) {
	var out BackupScheduleStatus
	return out, c.do(ctx, http.MethodPut, "/api/v1/backup/schedule", s, &out)
}

// BackupScheduleOff stops the scheduled backups.
func (c *Client) BackupScheduleOff(ctx context.Context) (BackupScheduleStatus, error) {
	var out BackupScheduleStatus
	return out, c.do(ctx, http.MethodDelete, "/api/v1/backup/schedule", nil, &out)
}

// RunBackupSchedule writes a scheduled backup now (kept and pushed as the schedule says).
func (c *Client) RunBackupSchedule(ctx context.Context) (BackupRun, error) {
	var out BackupRun
	return out, c.withoutTimeout().do(ctx, http.MethodPost, "/api/v1/backup/schedule/run", nil, &out)
}

// withoutTimeout is c without its per-request timeout, for backups: a large store takes longer
// than a minute; the caller's context bounds them.
func (c *Client) withoutTimeout() *Client {
	hc := *c.hc
	hc.Timeout = 0
	long := *c
	long.hc = &hc
	return &long
}
