package provapi

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/enrollment-appliance/aeappliance/provisioning"
)

// Client talks to the provisioning API.
type Client struct {
	base       string
	passphrase string
	hc         *http.Client
}

// NewClient returns a client for the API at baseURL (https://host:port), sending
// passphrase as the admin's and verifying the server with tlsConfig (nil: the system
// roots).
func NewClient(baseURL, passphrase string, tlsConfig *tls.Config) *Client {
	if tlsConfig == nil {
		tlsConfig = &tls.Config{}
	}
	tlsConfig = tlsConfig.Clone()
	if tlsConfig.MinVersion == 0 {
		tlsConfig.MinVersion = tls.VersionTLS12
	}
	tr := &http.Transport{TLSClientConfig: tlsConfig, TLSHandshakeTimeout: 10 * time.Second, Proxy: http.ProxyFromEnvironment}
	// Generous: a step may generate an RSA key in a slow HSM. Contexts bound single calls.
	return &Client{base: strings.TrimSuffix(baseURL, "/"), passphrase: passphrase,
		hc: &http.Client{Transport: tr, Timeout: 10 * time.Minute}}
}

// HTTPError is a non-2xx answer.
type HTTPError struct {
	StatusCode int
	Message    string // the answer's "error"
}

func (e *HTTPError) Error() string {
	return fmt.Sprintf("%d %s: %s", e.StatusCode, http.StatusText(e.StatusCode), e.Message)
}

// do sends in (JSON, or []byte as PEM) to the endpoint path and decodes the answer into out.
func (c *Client) do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	contentType := "application/json"
	if raw, ok := in.([]byte); ok {
		body, contentType = bytes.NewReader(raw), "application/x-pem-file"
	} else if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+Prefix+path, body)
	if err != nil {
		return err
	}
	if in != nil {
		req.Header.Set("Content-Type", contentType)
	}
	req.SetBasicAuth(AdminUser, c.passphrase)
	resp, err := c.hc.Do(req)
	if err != nil {
		return fmt.Errorf("calling the provisioning API: %w", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return fmt.Errorf("reading the provisioning API's answer: %w", err)
	}
	if resp.StatusCode/100 != 2 {
		he := &HTTPError{StatusCode: resp.StatusCode}
		var eb ErrorBody
		if json.Unmarshal(b, &eb) == nil && eb.Error != "" {
			he.Message = eb.Error
		} else {
			he.Message = strings.TrimSpace(string(b))
		}
		return he
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("decoding the provisioning API's answer: %w", err)
	}
	return nil
}

// Status is GET /status: the steps and the network settings.
func (c *Client) Status(ctx context.Context) (Status, error) {
	var s Status
	return s, c.do(ctx, http.MethodGet, "/"+provisioning.Status, nil, &s)
}

// Network is PUT /network: the fields set in change replace the saved ones.
func (c *Client) Network(ctx context.Context, change NetworkChange) (provisioning.Network, provisioning.Report, error) {
	var out NetworkResult
	err := c.do(ctx, http.MethodPut, "/"+provisioning.StepNetwork, change, &out)
	return out.Network, out.Report, err
}

// Token is POST /token: initialise the HSM token (or check the user PIN once it is).
func (c *Client) Token(ctx context.Context, soPIN, userPIN string) (provisioning.Report, error) {
	return c.step(ctx, "/"+provisioning.StepToken, TokenRequest{SOPIN: soPIN, UserPIN: userPIN})
}

// Key is POST /key: generate the CA key of keyType ("": the default) in the token.
func (c *Client) Key(ctx context.Context, keyType string) (provisioning.Report, error) {
	return c.step(ctx, "/"+provisioning.StepKey, KeyRequest{Type: keyType})
}

// SelfSigned is POST /selfsigned: make a self-signed root CA valid for validityDays
// (0: the default).
func (c *Client) SelfSigned(ctx context.Context, name string, validityDays int) (provisioning.Report, error) {
	return c.step(ctx, "/"+provisioning.CASelfSigned, SelfSignedRequest{Name: name, ValidityDays: validityDays})
}

// CSR is POST /csr: the PEM request of a subordinate CA named name.
func (c *Client) CSR(ctx context.Context, name string) ([]byte, provisioning.Report, error) {
	var out CSRResult
	err := c.do(ctx, http.MethodPost, "/"+provisioning.CACSR, CSRRequest{Name: name}, &out)
	return []byte(out.CSR), out.Report, err
}

// Import is POST /import: the subordinate CA's certificate and its chain, in PEM.
func (c *Client) Import(ctx context.Context, bundle []byte) (provisioning.Report, error) {
	var r provisioning.Report
	return r, c.do(ctx, http.MethodPost, "/"+provisioning.CAImport, bundle, &r) // a []byte, even nil, goes as PEM
}

// Directory is POST /directory: check and save the Active Directory settings.
func (c *Client) Directory(ctx context.Context, d provisioning.Directory) (provisioning.Report, error) {
	return c.step(ctx, "/"+provisioning.StepDirectory, DirectoryRequest{URL: d.URL, BindUser: d.BindUser, Password: d.Password,
		CACN: d.CACN, CAPEM: string(d.CAPEM), ServerName: d.ServerName})
}

// Store is POST /store: check and save the shared PostgreSQL store's settings.
func (c *Client) Store(ctx context.Context, s provisioning.Store) (provisioning.Report, error) {
	return c.step(ctx, "/"+provisioning.StepStore, StoreRequest{URL: s.URL, Password: s.Password, CAPEM: string(s.CAPEM),
		ClientCertPEM: string(s.ClientCertPEM), ClientKeyPEM: string(s.ClientKeyPEM)})
}

// Join is POST /join: join the CA whose store j.Store names (instead of token to finish); the
// appliance then starts the service.
func (c *Client) Join(ctx context.Context, j provisioning.Join) (provisioning.Report, error) {
	s := j.Store
	return c.step(ctx, "/"+provisioning.StepJoin, JoinRequest{Store: StoreRequest{URL: s.URL, Password: s.Password, CAPEM: string(s.CAPEM),
		ClientCertPEM: string(s.ClientCertPEM), ClientKeyPEM: string(s.ClientKeyPEM)}, TokenBundle: string(j.TokenBundle),
		BundlePassphrase: j.BundlePassphrase, UserPIN: j.UserPIN, LDAPPassword: j.LDAPPassword})
}

// Restore is POST /restore: the data directory from a backup the appliance fetches, instead of
// token to finish.
func (c *Client) Restore(ctx context.Context, r provisioning.Restore) (provisioning.Report, error) {
	return c.step(ctx, "/"+provisioning.StepRestore, RestoreRequest{From: r.From, Passphrase: r.Passphrase})
}

// Finish is POST /finish: write the service's configuration; the appliance then starts it.
func (c *Client) Finish(ctx context.Context) (provisioning.Report, error) {
	var r provisioning.Report
	return r, c.do(ctx, http.MethodPost, "/"+provisioning.StepFinish, nil, &r)
}

func (c *Client) step(ctx context.Context, path string, in any) (provisioning.Report, error) {
	var r provisioning.Report
	return r, c.do(ctx, http.MethodPost, path, in, &r)
}
