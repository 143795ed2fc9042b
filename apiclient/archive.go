package apiclient

import (
	"context"
	"net/url"
)

// KRAPath is where key recovery agents are registered (administrators only).
const KRAPath = "/api/v1/kra"

// KRA is a registered key recovery agent: its certificate (PEM), which archived keys are
// encrypted to; its private key stays with the agent.
type KRA struct {
	Thumbprint string `json:"thumbprint_sha256"`
	Subject    string `json:"subject"`
	PEM        string `json:"pem"`
	NotAfter   string `json:"not_after"`
	Added      string `json:"added"`
	By         string `json:"by"`
}

// RecoveredKey is an archived private key: a DER CMS EnvelopedData to the agents' certificates
// (RSAES-OAEP, AES-256) holding the PKCS#8 key, which only an agent's private key opens.
type RecoveredKey struct {
	Serial   string `json:"serial"`
	Envelope []byte `json:"envelope"`
	Format   string `json:"format"` // "cms-enveloped-pkcs8"
}

// KRAs lists the key recovery agents.
func (c *Client) KRAs(ctx context.Context) ([]KRA, error) {
	var out []KRA
	return out, c.do(ctx, "GET", KRAPath, nil, &out)
}

// AddKRA registers a key recovery agent's certificate (PEM).
func (c *Client) AddKRA(ctx context.Context, certPEM string) (KRA, error) {
	var out KRA
	return out, c.do(ctx, "POST", KRAPath, map[string]string{"pem": certPEM}, &out)
}

// RemoveKRA withdraws a key recovery agent by its certificate's SHA-256 thumbprint.
func (c *Client) RemoveKRA(ctx context.Context, thumbprint string) error {
	return c.do(ctx, "DELETE", KRAPath+"/"+url.PathEscape(thumbprint), nil, nil)
}

// RecoverKey returns the archived key of a certificate, encrypted to the key recovery agents.
func (c *Client) RecoverKey(ctx context.Context, serial string) (RecoveredKey, error) {
	var out RecoveredKey
	return out, c.do(ctx, "GET", "/api/v1/certificates/"+url.PathEscape(serial)+"/archived-key", nil, &out)
}
