package provapi

import "github.com/enrollment-appliance/aeappliance/provisioning"

// The wire form of the API: request and response bodies.

// ErrorBody is the body of every error answer.
type ErrorBody struct {
	Error string `json:"error"`
}

// Status is GET /status.
type Status struct {
	Steps   []provisioning.Step  `json:"steps"`
	Network provisioning.Network `json:"network"`
}

// NetworkChange is PUT /network: the fields that are present replace the saved ones; the
// others (absent or null) stay as they are. An empty list clears DNS or NTP.
type NetworkChange struct {
	Mode     *string   `json:"mode,omitempty"`
	Address  *string   `json:"address,omitempty"`
	Gateway  *string   `json:"gateway,omitempty"`
	DNS      *[]string `json:"dns,omitempty"`
	NTP      *[]string `json:"ntp,omitempty"`
	Hostname *string   `json:"hostname,omitempty"`
}

func (c NetworkChange) apply(n *provisioning.Network) {
	set := func(dst *string, src *string) {
		if src != nil {
			*dst = *src
		}
	}
	set(&n.Mode, c.Mode)
	set(&n.Address, c.Address)
	set(&n.Gateway, c.Gateway)
	set(&n.Hostname, c.Hostname)
	if c.DNS != nil {
		n.DNS = append([]string(nil), *c.DNS...)
	}
	if c.NTP != nil {
		n.NTP = append([]string(nil), *c.NTP...)
	}
}

// NetworkResult is the answer to PUT /network.
type NetworkResult struct {
	Network provisioning.Network `json:"network"`
	Report  provisioning.Report  `json:"report"`
}

// TokenRequest is POST /token.
type TokenRequest struct {
	SOPIN   string `json:"so_pin"`
	UserPIN string `json:"user_pin"`
}

// KeyRequest is POST /key; an empty type is the ceremony's default.
type KeyRequest struct {
	Type string `json:"type"`
}

// SelfSignedRequest is POST /selfsigned; 0 days is the ceremony's default (10 years).
type SelfSignedRequest struct {
	Name         string `json:"name"`
	ValidityDays int    `json:"validity_days"`
}

// MaxValidityDays bounds SelfSignedRequest.ValidityDays (100 years).
const MaxValidityDays = 36525

// CSRRequest is POST /csr.
type CSRRequest struct {
	Name string `json:"name"`
}

// CSRResult is the answer to POST /csr: the request in PEM.
type CSRResult struct {
	Report provisioning.Report `json:"report"`
	CSR    string              `json:"csr"`
}

// DirectoryRequest is POST /directory. CAPEM, when set, is the trust for the domain
// controller's certificate; empty: the system roots.
type DirectoryRequest struct {
	URL      string `json:"url"`
	BindUser string `json:"bind_user"`
	Password string `json:"password"`
	CACN     string `json:"ca_cn"`
	CAPEM    string `json:"ca_pem"`
	// ServerName is the DC's name in its certificate when the URL has an address.
	ServerName string `json:"server_name,omitempty"`
}

// StoreRequest is the body of POST /store: the shared PostgreSQL store.
type StoreRequest struct {
	URL           string `json:"url"` // postgres://ROLE@HOST[:PORT]/DATABASE, no password in it
	Password      string `json:"password,omitempty"`
	CAPEM         string `json:"ca_pem"`
	ClientCertPEM string `json:"client_cert_pem,omitempty"`
	ClientKeyPEM  string `json:"client_key_pem,omitempty"`
}

func (s StoreRequest) store() provisioning.Store {
	ps := provisioning.Store{URL: s.URL, Password: s.Password, CAPEM: []byte(s.CAPEM)}
	if s.ClientCertPEM != "" || s.ClientKeyPEM != "" {
		ps.ClientCertPEM, ps.ClientKeyPEM = []byte(s.ClientCertPEM), []byte(s.ClientKeyPEM)
	}
	return ps
}

// JoinRequest is the body of POST /join: the shared store, the first appliance's SoftHSM token
// bundle (ASCII armor) with its passphrase, the token's user PIN, and the directory service
// account's password when the CA uses a directory.
type JoinRequest struct {
	Store            StoreRequest `json:"store"`
	TokenBundle      string       `json:"token_bundle"`
	BundlePassphrase string       `json:"bundle_passphrase"`
	UserPIN          string       `json:"user_pin"`
	LDAPPassword     string       `json:"ldap_password,omitempty"`
}

// RestoreRequest is the body of POST /restore: where the backup is (an http:// or https:// URL
// the appliance fetches it from) and its passphrase.
type RestoreRequest struct {
	From       string `json:"from"`
	Passphrase string `json:"passphrase"`
}

func (j JoinRequest) join() provisioning.Join {
	return provisioning.Join{Store: j.Store.store(), TokenBundle: []byte(j.TokenBundle), BundlePassphrase: j.BundlePassphrase,
		UserPIN: j.UserPIN, LDAPPassword: j.LDAPPassword}
}

func (d DirectoryRequest) directory() provisioning.Directory {
	pd := provisioning.Directory{URL: d.URL, BindUser: d.BindUser, Password: d.Password, CACN: d.CACN, ServerName: d.ServerName}
	if d.CAPEM != "" {
		pd.CAPEM = []byte(d.CAPEM)
	}
	return pd
}
