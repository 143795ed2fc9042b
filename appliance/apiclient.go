package appliance

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/enrollment-appliance/aeappliance/enrollsvc/config"
)

// serviceClient is the console's client of the service's management API: the few calls
// the console makes, kept here rather than importing the service's API package, which
// would bring the whole service (store, linter, directory) into the init payload.
type serviceClient struct {
	base, token string
	hc          *http.Client
}

// dialService reads the address, the admin token and the CA from the data directory.
func dialService(dir string) (*serviceClient, error) {
	cfg, err := config.Load(dir)
	if err != nil {
		return nil, err
	}
	addr := cfg.API.Listen
	if b, err := os.ReadFile(config.Path(dir, config.APIAddrFile)); err == nil {
		addr = strings.TrimSpace(string(b))
	}
	token, err := os.ReadFile(config.Path(dir, cfg.API.TokenFile))
	if err != nil {
		return nil, fmt.Errorf("reading the admin token: %w", err)
	}
	ca, err := os.ReadFile(config.Path(dir, cfg.CACert))
	if err != nil {
		return nil, fmt.Errorf("reading the CA certificate: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(ca) {
		return nil, errors.New("no CA certificate to trust")
	}
	return &serviceClient{base: "https://" + addr, token: strings.TrimSpace(string(token)),
		hc: &http.Client{Timeout: time.Minute, Transport: &http.Transport{
			TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}}}, nil
}

// do calls the API; a non-2xx answer is an error with the API's message.
func (c *serviceClient) do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
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
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	resp, err := c.hc.Do(req)
	if err != nil {
		return fmt.Errorf("the service's API: %w", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	if err != nil {
		return fmt.Errorf("the service's API: %w", err)
	}
	if resp.StatusCode/100 != 2 {
		var e struct {
			Error   string   `json:"error"`
			Reasons []string `json:"reasons"`
		}
		if json.Unmarshal(b, &e) != nil || e.Error == "" {
			e.Error = strings.TrimSpace(string(b))
		}
		msg := fmt.Sprintf("%d %s: %s", resp.StatusCode, http.StatusText(resp.StatusCode), e.Error)
		if len(e.Reasons) > 0 {
			msg += " (" + strings.Join(e.Reasons, "; ") + ")"
		}
		return errors.New(msg)
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("the service's API: decoding the answer: %w", err)
	}
	return nil
}

type svcRequest struct {
	ID        int64     `json:"id"`
	State     string    `json:"state"`
	Template  string    `json:"template"`
	Account   string    `json:"account"`
	Submitted time.Time `json:"submitted"`
}

type svcEvent struct {
	Seq     int64     `json:"seq"`
	ID      int       `json:"id"`
	Time    time.Time `json:"time"`
	Message string    `json:"message"`
}

type svcIssued struct {
	Status string `json:"status"`
	Serial string `json:"serial"`
}

type svcCert struct {
	Serial  string `json:"serial"`
	Subject string `json:"subject"`
}

func (c *serviceClient) requests(ctx context.Context, state string, limit int) ([]svcRequest, error) {
	v := url.Values{"limit": {strconv.Itoa(limit)}}
	if state != "" {
		v.Set("state", state)
	}
	var out []svcRequest
	return out, c.do(ctx, http.MethodGet, "/api/v1/requests?"+v.Encode(), nil, &out)
}

func (c *serviceClient) approve(ctx context.Context, id int64) (svcIssued, error) {
	var out svcIssued
	return out, c.do(ctx, http.MethodPost, "/api/v1/requests/"+strconv.FormatInt(id, 10)+"/approve", struct{}{}, &out)
}

func (c *serviceClient) deny(ctx context.Context, id int64, reason string) (svcIssued, error) {
	var out svcIssued
	return out, c.do(ctx, http.MethodPost, "/api/v1/requests/"+strconv.FormatInt(id, 10)+"/deny",
		map[string]string{"reason": reason}, &out)
}

func (c *serviceClient) revoke(ctx context.Context, serial, reason string) (svcCert, error) {
	var out svcCert
	return out, c.do(ctx, http.MethodPost, "/api/v1/certificates/"+url.PathEscape(serial)+"/revoke",
		map[string]string{"reason": reason}, &out)
}

// events are the newest limit events, oldest first.
func (c *serviceClient) events(ctx context.Context, limit int) ([]svcEvent, error) {
	v := url.Values{"limit": {strconv.Itoa(limit)}, "newest": {"true"}}
	var out []svcEvent
	return out, c.do(ctx, http.MethodGet, "/api/v1/events?"+v.Encode(), nil, &out)
}
