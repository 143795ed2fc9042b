package apiclient

import (
	"context"
	"net/url"
	"time"
)

// The MDM connector's API (docs/mdm.md). An MDM calls it with its own bearer token (made by
// POST /api/v1/mdm/clients), which opens these paths and nothing else; the admin token opens them
// too.
const (
	MDMClientsPath = "/api/v1/mdm/clients"
	MDMPKCSPath    = "/api/v1/mdm/pkcs"
	MDMRevokePath  = "/api/v1/mdm/revoke"
	// MDMPathPrefix is what an MDM credential may call: the connector operations below it but
	// the clients (an administrator's).
	MDMPathPrefix = "/api/v1/mdm/"
)

// MDMClient is a registered MDM: a name and a credential with the MDM role.
type MDMClient struct {
	Name    string    `json:"name"`
	Created time.Time `json:"created"`
	By      string    `json:"by"`
}

// MDMClientAdded is the answer to adding an MDM: its token, shown this once (only its SHA-256
// is kept).
type MDMClientAdded struct {
	MDMClient
	Token string `json:"token"`
}

// PKCSRequest asks for a key pair made by the appliance for an account on a directory template,
// delivered as a PKCS#12: encrypted to Password (PBES2 with PBKDF2-HMAC-SHA-256 and AES-256-CBC,
// HMAC-SHA-256 MAC), or inside a CMS EnvelopedData (RSAES-OAEP with SHA-256, AES-256-CBC) to the
// device's RSA key, given as a PEM certificate or PEM public key in RecipientPEM (the PKCS#12
// inside is then protected by the envelope, its password empty).
type PKCSRequest struct {
	Template string `json:"template"`
	Account  string `json:"account"`
	DeviceID string `json:"device_id,omitempty"`
	// Delivery is "password" or "device-key".
	Delivery     string `json:"delivery"`
	Password     string `json:"password,omitempty"`
	RecipientPEM string `json:"recipient,omitempty"`
}

// PKCSJob is a PKCS request's state: queued, then issued (with Result, the encrypted PKCS#12 or
// EnvelopedData, base64 in JSON), refused or failed (with Reason). Results are erased at Expires.
type PKCSJob struct {
	ID        string    `json:"id"`
	State     string    `json:"state"`
	Template  string    `json:"template"`
	Account   string    `json:"account"`
	DeviceID  string    `json:"device_id,omitempty"`
	Delivery  string    `json:"delivery"`
	RequestID int64     `json:"request_id,omitempty"`
	Serial    string    `json:"serial,omitempty"`
	Reason    string    `json:"reason,omitempty"`
	Result    []byte    `json:"result,omitempty"`
	Format    string    `json:"format,omitempty"` // "pkcs12" or "cms-enveloped-pkcs12"
	Created   time.Time `json:"created"`
	Updated   time.Time `json:"updated"`
	Expires   time.Time `json:"expires"`
}

// MDMRevokeRequest asks to revoke a certificate an MDM obtained (device retired or wiped), by
// serial or by thumbprint (hex SHA-1 or SHA-256 of the certificate), with a reason as in
// RevokeRequest.
type MDMRevokeRequest struct {
	Serial     string `json:"serial,omitempty"`
	Thumbprint string `json:"thumbprint,omitempty"`
	Reason     string `json:"reason"`
}

// MDMClients lists the registered MDMs.
func (c *Client) MDMClients(ctx context.Context) ([]MDMClient, error) {
	var out []MDMClient
	return out, c.do(ctx, "GET", MDMClientsPath, nil, &out)
}

// AddMDMClient registers an MDM and returns its token (shown once).
func (c *Client) AddMDMClient(ctx context.Context, name string) (MDMClientAdded, error) {
	var out MDMClientAdded
	return out, c.do(ctx, "POST", MDMClientsPath, map[string]string{"name": name}, &out)
}

// RemoveMDMClient withdraws an MDM's credential.
func (c *Client) RemoveMDMClient(ctx context.Context, name string) error {
	return c.do(ctx, "DELETE", MDMClientsPath+"/"+url.PathEscape(name), nil, nil)
}

// SubmitPKCS queues a PKCS request and returns its job (state "queued").
func (c *Client) SubmitPKCS(ctx context.Context, in PKCSRequest) (PKCSJob, error) {
	var out PKCSJob
	return out, c.do(ctx, "POST", MDMPKCSPath, in, &out)
}

// PKCSJob returns a PKCS request's state, with its result once issued.
func (c *Client) PKCSJob(ctx context.Context, id string) (PKCSJob, error) {
	var out PKCSJob
	return out, c.do(ctx, "GET", MDMPKCSPath+"/"+url.PathEscape(id), nil, &out)
}

// WaitPKCS polls a PKCS request every interval until it is no longer queued or ctx ends.
func (c *Client) WaitPKCS(ctx context.Context, id string, interval time.Duration) (PKCSJob, error) {
	for {
		j, err := c.PKCSJob(ctx, id)
		if err != nil || j.State != "queued" {
			return j, err
		}
		select {
		case <-ctx.Done():
			return j, ctx.Err()
		case <-time.After(interval):
		}
	}
}

// MDMRevoke revokes a certificate the calling MDM obtained (an administrator: any).
func (c *Client) MDMRevoke(ctx context.Context, in MDMRevokeRequest) (Certificate, error) {
	var out Certificate
	return out, c.do(ctx, "POST", MDMRevokePath, in, &out)
}
