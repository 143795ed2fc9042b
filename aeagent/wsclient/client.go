// Package wsclient is aeagent's client of the Windows enrollment web services: the certificate
// enrollment policy service (MS-XCEP, "CEP": GetPolicies) and the certificate enrollment service
// (MS-WSTEP, "CES": RequestSecurityToken Issue and QueryTokenStatus), as AD CS and enrollsvc
// serve them.
//
// Requests are SOAP 1.2 envelopes with the WS-Addressing Action, MessageID (a random urn:uuid) and
// To headers, shaped like those of a real client (cepces; testdata/00N_*.xml), and with a
// WS-Security UsernameToken (#PasswordText, only ever sent over TLS) when the client uses
// PasswordAuth. CertificateAuth presents a TLS client certificate instead, for the _Certificate
// endpoints (whose CES takes renewals only). KerberosAuth sends a Kerberos ticket in the HTTP
// Authorization header (Negotiate, SPNEGO) of each request, for the _Kerberos endpoints, from a
// keytab (the machine's) or a credential cache (a user's), logged in once per Client.
//
// Replies are read with encoding/xml by local element names, at most MaxResponse bytes. An issued
// certificate, a pending request and a policy refusal are results (Result.Status "issued",
// "pending", "denied"); a refusal is the SOAP Sender fault with a CertificateEnrollmentWSDetail
// that AD CS sends with HTTP 500. Everything else (TLS, HTTP 401/403 authentication failures,
// 503, malformed replies, other faults) is a Go error; an answered fault is an *Error, which
// wraps ErrAuthentication or ErrUnavailable where they apply.
//
// This package does I/O and nothing else: what to request and when is decided by aeagent/plan.
package wsclient

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/enrollment-appliance/aeappliance/proto/soap"
)

// MaxResponse is the largest reply body read, in bytes.
const MaxResponse = 4 << 20

// Auth is how the client authenticates: PasswordAuth, CertificateAuth or KerberosAuth.
type Auth interface {
	// configure adds what the authentication needs to the TLS configuration.
	configure(*tls.Config)
	// header writes the WS-Security header block, if any, into the SOAP Header.
	header(b *bytes.Buffer, now time.Time) error
}

// PasswordAuth authenticates with a WS-Security UsernameToken (#PasswordText) in the SOAP
// header, for the _UsernamePassword endpoints. Username is a UPN such as alice@example.test.
type PasswordAuth struct {
	Username, Password string
}

func (PasswordAuth) configure(*tls.Config) {}

func (a PasswordAuth) header(b *bytes.Buffer, now time.Time) error {
	var nonce [16]byte
	if _, err := rand.Read(nonce[:]); err != nil {
		return err
	}
	b.WriteString(`<o:Security s:mustUnderstand="1"><o:UsernameToken><o:Username>`)
	escape(b, a.Username)
	b.WriteString(`</o:Username><o:Password Type="` + soap.PasswordText + `">`)
	escape(b, a.Password)
	b.WriteString(`</o:Password><o:Nonce>` + base64.StdEncoding.EncodeToString(nonce[:]) + `</o:Nonce>`)
	b.WriteString(`<u:Created>` + now.UTC().Format("2006-01-02T15:04:05Z") + `</u:Created></o:UsernameToken></o:Security>`)
	return nil
}

// String never shows the password.
func (a PasswordAuth) String() string {
	return fmt.Sprintf("PasswordAuth{%q, password redacted}", a.Username)
}

// GoString never shows the password either (%#v).
func (a PasswordAuth) GoString() string { return a.String() }

// CertificateAuth authenticates with a TLS client certificate, for the _Certificate endpoints.
type CertificateAuth struct {
	Certificate tls.Certificate
}

func (a CertificateAuth) configure(c *tls.Config) {
	c.Certificates = []tls.Certificate{a.Certificate}
}

func (CertificateAuth) header(*bytes.Buffer, time.Time) error { return nil }

// Errors an *Error wraps, for errors.Is.
var (
	// ErrAuthentication: the server refused the credentials (HTTP 401 or 403).
	ErrAuthentication = errors.New("wsclient: authentication failed")
	// ErrUnavailable: the server or its directory is unavailable for now (HTTP 503).
	ErrUnavailable = errors.New("wsclient: service unavailable")
)

// Error is a SOAP fault or HTTP error status the server answered with, other than a policy
// refusal (which is a Result with Status "denied").
type Error struct {
	URL        string
	StatusCode int    // HTTP status
	Code       string // SOAP fault code value, e.g. "s:Sender"; "" when the reply was no fault
	Reason     string // fault reason text, or the start of a non-SOAP body
	ErrorCode  int32  // CertificateEnrollmentWSDetail ErrorCode (an HRESULT), 0 when absent
	RequestID  int64  // CertificateEnrollmentWSDetail RequestID, 0 when absent
}

func (e *Error) Error() string {
	what := "wsclient: " + e.URL + ": HTTP " + fmt.Sprint(e.StatusCode)
	switch {
	case e.StatusCode == http.StatusUnauthorized || e.StatusCode == http.StatusForbidden:
		what = "wsclient: authentication failed at " + e.URL + " (HTTP " + fmt.Sprint(e.StatusCode) + ")"
	case e.StatusCode == http.StatusServiceUnavailable:
		what = "wsclient: service unavailable at " + e.URL + " (HTTP 503)"
	}
	if e.Reason != "" {
		what += ": " + e.Reason
	}
	if e.ErrorCode != 0 {
		what += fmt.Sprintf(" (error 0x%08X)", uint32(e.ErrorCode))
	}
	return what
}

// Unwrap lets errors.Is find ErrAuthentication and ErrUnavailable.
func (e *Error) Unwrap() error {
	switch e.StatusCode {
	case http.StatusUnauthorized, http.StatusForbidden:
		return ErrAuthentication
	case http.StatusServiceUnavailable:
		return ErrUnavailable
	}
	return nil
}

// Client talks to one policy server and the enrollment services it advertises.
type Client struct {
	policyURL string
	auth      Auth
	hc        *http.Client
	now       func() time.Time
	negotiate *negotiator // KerberosAuth's login, shared by the requests; nil with other Auths
}

// New returns a client of the policy service at policyURL (the CEP URL, https only), which
// authenticates with auth and trusts rootCAs for the servers' certificates (nil: the system's).
func New(policyURL string, auth Auth, rootCAs *x509.CertPool) (*Client, error) {
	if err := checkURL(policyURL); err != nil {
		return nil, fmt.Errorf("wsclient: policy URL: %w", err)
	}
	if auth == nil {
		return nil, errors.New("wsclient: no authentication given (PasswordAuth, CertificateAuth or KerberosAuth)")
	}
	if a, ok := auth.(PasswordAuth); ok && a.Username == "" {
		return nil, errors.New("wsclient: PasswordAuth without a Username")
	}
	if a, ok := auth.(CertificateAuth); ok && (len(a.Certificate.Certificate) == 0 || a.Certificate.PrivateKey == nil) {
		return nil, errors.New("wsclient: CertificateAuth needs a certificate and its private key")
	}
	var neg *negotiator
	if a, ok := auth.(negotiateAuth); ok {
		var err error
		if neg, err = a.negotiator(); err != nil {
			return nil, err
		}
	}
	tc := &tls.Config{RootCAs: rootCAs, MinVersion: tls.VersionTLS12}
	auth.configure(tc)
	tr := &http.Transport{TLSClientConfig: tc, Proxy: http.ProxyFromEnvironment, ForceAttemptHTTP2: true,
		TLSHandshakeTimeout: 30 * time.Second, ResponseHeaderTimeout: 2 * time.Minute, MaxIdleConnsPerHost: 2,
		IdleConnTimeout: time.Minute}
	hc := &http.Client{Transport: tr, Timeout: 5 * time.Minute,
		// A redirect could carry the password elsewhere, or downgrade to http: never follow one.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	c := &Client{policyURL: policyURL, auth: auth, hc: hc, now: time.Now, negotiate: neg}
	if neg != nil {
		runtime.AddCleanup(c, (*negotiator).close, neg) // gokrb5 renews a keytab login until told to stop
	}
	return c, nil
}

// Login logs in now rather than at the first request, with KerberosAuth: the AS exchange with the
// keytab's key, or reading the credential cache's TGT (what a Windows client has from its logon).
// A wrong key or an expired cache shows here. Later requests reuse the login. Other Auths have no
// login: nil.
func (c *Client) Login(ctx context.Context) error {
	if c.negotiate == nil {
		return nil
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("wsclient: %w", err)
	}
	c.negotiate.mu.Lock()
	defer c.negotiate.mu.Unlock()
	return c.negotiate.login(time.Now())
}

// PolicyURL is the CEP URL the client was made for.
func (c *Client) PolicyURL() string { return c.policyURL }

// CloseIdleConnections closes connections kept open for reuse.
func (c *Client) CloseIdleConnections() { c.hc.CloseIdleConnections() }

func checkURL(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		return err
	}
	if u.Scheme != "https" {
		return fmt.Errorf("%q is not an https URL: credentials and requests go over TLS only", s)
	}
	if u.Host == "" {
		return fmt.Errorf("%q names no host", s)
	}
	return nil
}

// envelope writes a request envelope: the WS-Addressing headers, the authentication header and body.
func (c *Client) envelope(action, to string, body []byte) ([]byte, string, error) {
	id, err := uuidURN()
	if err != nil {
		return nil, "", err
	}
	var b bytes.Buffer
	b.WriteString(`<s:Envelope xmlns:s="` + soap.NS12 + `" xmlns:a="` + soap.NSAddressing + `" xmlns:o="` + soap.NSSecExt +
		`" xmlns:u="` + soap.NSUtility + `"><s:Header><a:Action s:mustUnderstand="1">`)
	escape(&b, action)
	b.WriteString(`</a:Action><a:MessageID>` + id + `</a:MessageID><a:To s:mustUnderstand="1">`)
	escape(&b, to)
	b.WriteString(`</a:To>`)
	if err := c.auth.header(&b, c.now()); err != nil {
		return nil, "", err
	}
	b.WriteString(`</s:Header><s:Body>`)
	b.Write(body)
	b.WriteString(`</s:Body></s:Envelope>`)
	return b.Bytes(), id, nil
}

// uuidURN is a random (version 4) UUID as a urn:uuid URI.
func uuidURN() (string, error) {
	var u [16]byte
	if _, err := rand.Read(u[:]); err != nil {
		return "", err
	}
	u[6] = u[6]&0x0f | 0x40
	u[8] = u[8]&0x3f | 0x80
	return fmt.Sprintf("urn:uuid:%x-%x-%x-%x-%x", u[0:4], u[4:6], u[6:8], u[8:10], u[10:16]), nil
}

// response is a reply envelope, read by local names.
type response struct {
	XMLName xml.Name
	Header  struct {
		Action    string `xml:"Action"`
		RelatesTo string `xml:"RelatesTo"`
	} `xml:"Header"`
	Body struct {
		Fault       *fault          `xml:"Fault"`
		GetPolicies *getPoliciesXML `xml:"GetPoliciesResponse"`
		RSTRC       *rstrcXML       `xml:"RequestSecurityTokenResponseCollection"`
	} `xml:"Body"`
}

type fault struct {
	Code struct {
		Value string `xml:"Value"`
	} `xml:"Code"`
	Reason struct {
		Text []string `xml:"Text"`
	} `xml:"Reason"`
	Detail struct {
		WS *wsDetail `xml:"CertificateEnrollmentWSDetail"`
	} `xml:"Detail"`
}

// nillable is an element that may carry xsi:nil="true".
type nillable struct {
	Nil   string `xml:"nil,attr"`
	Value string `xml:",chardata"`
}

func (n nillable) isNil() bool { return isTrue(n.Nil) }
func (n nillable) text() string {
	if n.isNil() {
		return ""
	}
	return strings.TrimSpace(n.Value)
}

func isTrue(s string) bool { s = strings.TrimSpace(s); return s == "true" || s == "1" }

// call posts one request and reads the reply. A reply that is a SOAP fault is returned with the
// fault set (the caller decides what it means) only when it is a policy refusal; every other
// fault or error status is an *Error.
func (c *Client) call(ctx context.Context, to, action string, body []byte) (*response, error) {
	if err := checkURL(to); err != nil {
		return nil, fmt.Errorf("wsclient: %w", err)
	}
	msg, id, err := c.envelope(action, to, body)
	if err != nil {
		return nil, fmt.Errorf("wsclient: building the request: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, to, bytes.NewReader(msg))
	if err != nil {
		return nil, fmt.Errorf("wsclient: %w", err)
	}
	req.Header.Set("Content-Type", `application/soap+xml; charset=utf-8; action="`+action+`"`)
	if c.negotiate != nil {
		if err := c.negotiate.authorize(ctx, req); err != nil {
			return nil, err
		}
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("wsclient: %s: %w", to, err)
	}
	defer resp.Body.Close()
	if c.negotiate != nil && resp.StatusCode == http.StatusUnauthorized && strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Negotiate") {
		c.negotiate.refused()
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, MaxResponse+1))
	if err != nil {
		return nil, fmt.Errorf("wsclient: %s: reading the reply: %w", to, err)
	}
	if len(data) > MaxResponse {
		return nil, fmt.Errorf("wsclient: %s: reply over %d bytes", to, MaxResponse)
	}
	r, perr := parseResponse(data)
	if perr != nil || r.Body.Fault != nil || resp.StatusCode != http.StatusOK {
		return r, httpError(to, resp.StatusCode, r, perr, data)
	}
	if r.Header.RelatesTo != "" && r.Header.RelatesTo != id {
		return nil, fmt.Errorf("wsclient: %s: reply relates to %q, not to this request %s", to, r.Header.RelatesTo, id)
	}
	return r, nil
}

// httpError classifies a reply that is not a plain success. It returns nil for a policy
// refusal: HTTP 500 with a Sender fault carrying CertificateEnrollmentWSDetail.
func httpError(to string, status int, r *response, perr error, data []byte) error {
	if perr != nil || r.Body.Fault == nil {
		if status == http.StatusOK {
			return fmt.Errorf("wsclient: %s: unreadable reply: %v", to, perr)
		}
		return &Error{URL: to, StatusCode: status, Reason: snippet(data)}
	}
	f := r.Body.Fault
	e := &Error{URL: to, StatusCode: status, Code: strings.TrimSpace(f.Code.Value), Reason: f.reason()}
	if ws := f.Detail.WS; ws != nil {
		e.ErrorCode, e.RequestID = ws.errorCode(), ws.requestID()
	}
	if status == http.StatusInternalServerError && f.sender() && f.Detail.WS != nil {
		return nil
	}
	return e
}

func (f *fault) sender() bool {
	v := strings.TrimSpace(f.Code.Value)
	return v == "Sender" || strings.HasSuffix(v, ":Sender")
}

func (f *fault) reason() string {
	for _, t := range f.Reason.Text {
		if t = strings.TrimSpace(t); t != "" {
			return t
		}
	}
	return ""
}

// wsDetail is MS-WSTEP's CertificateEnrollmentWSDetail.
type wsDetail struct {
	ErrorCode      nillable `xml:"ErrorCode"`
	InvalidRequest nillable `xml:"InvalidRequest"`
	RequestID      nillable `xml:"RequestID"`
}

func (d *wsDetail) errorCode() int32 {
	v, _ := strconv.ParseInt(d.ErrorCode.text(), 10, 32)
	return int32(v)
}

func (d *wsDetail) requestID() int64 {
	v, _ := strconv.ParseInt(d.RequestID.text(), 10, 64)
	return v
}

// snippet is the start of a non-SOAP body for an error message, on one line.
func snippet(data []byte) string {
	s := strings.Join(strings.Fields(string(data)), " ")
	if len(s) > 200 {
		s = s[:200] + "…"
	}
	return s
}

// parseResponse reads a SOAP 1.2 reply envelope.
func parseResponse(data []byte) (*response, error) {
	d := xml.NewDecoder(bytes.NewReader(data))
	d.Strict = true
	var r response
	if err := d.Decode(&r); err != nil {
		return nil, fmt.Errorf("not a SOAP envelope: %v", err)
	}
	if r.XMLName.Space != soap.NS12 || r.XMLName.Local != "Envelope" {
		return nil, fmt.Errorf("root element {%s}%s is not a SOAP 1.2 Envelope", r.XMLName.Space, r.XMLName.Local)
	}
	return &r, nil
}

func escape(b *bytes.Buffer, s string) {
	_ = xml.EscapeText(b, []byte(s)) // writing to a bytes.Buffer does not fail
}
