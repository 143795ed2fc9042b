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
	// MDMImportCertPath is the certificate imported keys are encrypted to (PEM); MDMImportsPath
	// takes and lists imported keys, MDMImportsPath/ID/deliver re-encrypts one for a device.
	MDMImportCertPath = "/api/v1/mdm/import-certificate"
	MDMImportsPath    = "/api/v1/mdm/imports"
	// MDMPathPrefix is what an MDM credential may call: the connector operations below it but
	// the clients (an administrator's).
	MDMPathPrefix = "/api/v1/mdm/"
)

// MDMClient is a registered MDM: a name and a credential with the MDM role.
type MDMClient struct {
	Name    string    `json:"name"`
	Created time.Time `json:"created"`
	By      string    `json:"by"`
	// ValidateURL and NotifyURL are the MDM's URLs for SCEP profiles it validates ("" none).
	ValidateURL string `json:"validate_url,omitempty"`
	NotifyURL   string `json:"notify_url,omitempty"`
	// Certificates are the serials of the client certificates issued to the MDM.
	Certificates []string `json:"certificates,omitempty"`
	// NotAnsweringSince is set while the MDM's URLs do not answer (a network error or a 5xx,
	// as the instance that answers this saw them), with the last error.
	NotAnsweringSince *time.Time `json:"not_answering_since,omitempty"`
	LastError         string     `json:"last_error,omitempty"`
}

// MDMWebhooks are an MDM's URLs the appliance calls (HTTPS), for SCEP profiles whose challenges
// the MDM issues and validates: ValidateURL is asked about each PKCSReq, NotifyURL told each
// outcome. CAPEM is the CA of the MDM server's certificate ("" the system's).
type MDMWebhooks struct {
	ValidateURL string `json:"validate_url"`
	NotifyURL   string `json:"notify_url"`
	CAPEM       string `json:"ca_pem,omitempty"`
}

// MDMWebhooksSet is the answer to setting them: the HMAC-SHA-256 key the appliance signs its
// calls with (hex), shown this once.
type MDMWebhooksSet struct {
	MDMClient
	Secret string `json:"secret"`
}

// The signature on the appliance's calls to an MDM: the header carries the Unix time and the
// HMAC-SHA-256, under the secret, of the time, a period and the body (docs/mdm.md).
const (
	MDMSignatureHeader = "X-Enrollment-Signature" // "t=UNIX,v1=HEX"
	MDMNameHeader      = "X-Enrollment-MDM"
)

// SCEPValidationRequest is what the appliance POSTs to an MDM's validation URL.
type SCEPValidationRequest struct {
	Profile       string `json:"profile"`
	TransactionID string `json:"transaction_id"`
	Challenge     string `json:"challenge"`
	CSR           string `json:"csr"` // PEM CERTIFICATE REQUEST
}

// SCEPValidationResponse is the MDM's answer: valid or not (with a reason); it may name the
// account the certificate is for and the only names the request may carry.
type SCEPValidationResponse struct {
	Valid   bool     `json:"valid"`
	Reason  string   `json:"reason,omitempty"`
	Account string   `json:"account,omitempty"`
	Names   []string `json:"names,omitempty"`
}

// SCEPNotification is what the appliance POSTs to an MDM's notification URL after a request its
// validation allowed: issued (serial, thumbprint, validity), failed (reason), or pending a
// certificate manager (a second notification says issued or failed once decided). The ID is the same
// when a notification is sent again: an MDM counts each ID once.
type SCEPNotification struct {
	ID               string    `json:"id"`
	Profile          string    `json:"profile"`
	TransactionID    string    `json:"transaction_id"`
	Status           string    `json:"status"` // "issued", "failed" or "pending" (decided later: another notification follows)
	RequestID        int64     `json:"request_id,omitempty"`
	Serial           string    `json:"serial,omitempty"`
	ThumbprintSHA1   string    `json:"thumbprint_sha1,omitempty"`
	ThumbprintSHA256 string    `json:"thumbprint_sha256,omitempty"`
	NotBefore        time.Time `json:"not_before,omitzero"`
	NotAfter         time.Time `json:"not_after,omitzero"`
	Reason           string    `json:"reason,omitempty"`
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

// MDMImportRequest uploads a user's existing key and certificate: Envelope is a DER CMS
// EnvelopedData to the import certificate (AES content encryption, RSA PKCS#1 v1.5 key
// transport, as `openssl cms -encrypt -aes256 -binary` writes it) holding a PKCS#12, whose
// password is Password ("" none). The certificate must carry the account's e-mail address.
type MDMImportRequest struct {
	Account  string `json:"account"`
	Envelope []byte `json:"envelope"` // base64 in JSON
	Password string `json:"password,omitempty"`
}

// MDMImport is an imported key, as listed (never the key).
type MDMImport struct {
	ID         string    `json:"id"`
	MDM        string    `json:"mdm"`
	Account    string    `json:"account"`
	Subject    string    `json:"subject"`
	Email      string    `json:"email"`
	Serial     string    `json:"serial"`
	Thumbprint string    `json:"thumbprint_sha256"`
	NotAfter   time.Time `json:"not_after"`
	Created    time.Time `json:"created"`
}

// MDMDeliverRequest names the device an imported key is re-encrypted for: its RSA key (PEM
// CERTIFICATE or PUBLIC KEY).
type MDMDeliverRequest struct {
	DeviceID     string `json:"device_id,omitempty"`
	RecipientPEM string `json:"recipient"`
}

// MDMDelivery is the re-encrypted key: a DER CMS EnvelopedData (RSAES-OAEP, AES-256) to the
// device's key, holding the PKCS#12 with an empty password.
type MDMDelivery struct {
	ImportID string `json:"import_id"`
	Result   []byte `json:"result"`
	Format   string `json:"format"` // "cms-enveloped-pkcs12"
}

// MDMImportCertificate returns the PEM certificate imported keys are encrypted to.
func (c *Client) MDMImportCertificate(ctx context.Context) (string, error) {
	var out struct {
		Certificate string `json:"certificate"`
	}
	return out.Certificate, c.do(ctx, "GET", MDMImportCertPath, nil, &out)
}

// ImportKey uploads a user's existing key and certificate.
func (c *Client) ImportKey(ctx context.Context, in MDMImportRequest) (MDMImport, error) {
	var out MDMImport
	return out, c.do(ctx, "POST", MDMImportsPath, in, &out)
}

// Imports lists imported keys (of one account, or "" all).
func (c *Client) Imports(ctx context.Context, account string) ([]MDMImport, error) {
	var out []MDMImport
	return out, c.do(ctx, "GET", MDMImportsPath+"?account="+url.QueryEscape(account), nil, &out)
}

// DeliverImport re-encrypts an imported key for a device.
func (c *Client) DeliverImport(ctx context.Context, id string, in MDMDeliverRequest) (MDMDelivery, error) {
	var out MDMDelivery
	return out, c.do(ctx, "POST", MDMImportsPath+"/"+url.PathEscape(id)+"/deliver", in, &out)
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

// SetMDMWebhooks sets an MDM's URLs and returns the new signing secret (shown once).
func (c *Client) SetMDMWebhooks(ctx context.Context, name string, h MDMWebhooks) (MDMWebhooksSet, error) {
	var out MDMWebhooksSet
	return out, c.do(ctx, "PUT", MDMClientsPath+"/"+url.PathEscape(name)+"/webhooks", h, &out)
}

// IssueMDMCertificate has a client certificate issued to an MDM for the key of csrPEM, and
// returns it (PEM).
func (c *Client) IssueMDMCertificate(ctx context.Context, name, csrPEM string) (string, error) {
	var out struct {
		Certificate string `json:"certificate"`
	}
	return out.Certificate, c.do(ctx, "POST", MDMClientsPath+"/"+url.PathEscape(name)+"/certificate", map[string]string{"csr": csrPEM}, &out)
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
