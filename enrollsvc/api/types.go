package api

import (
	"time"

	"github.com/enrollment-appliance/aeappliance/enrollsvc/store"
)

// Status is GET /api/v1/status.
type Status struct {
	Service string      `json:"service"`
	Version string      `json:"version"`
	Started time.Time   `json:"started"`
	Healthy bool        `json:"healthy"`
	API     string      `json:"api"` // listen address
	CA      CAStatus    `json:"ca"`
	HSM     HSMStatus   `json:"hsm"`
	Store   StoreStatus `json:"store"`
	// Directory is the Active Directory the templates and accounts come from.
	Directory DirectoryStatus `json:"directory"`
}

// CAStatus describes the issuing CA.
type CAStatus struct {
	Name      string    `json:"name"`
	Subject   string    `json:"subject"`
	Serial    string    `json:"serial"`
	NotBefore time.Time `json:"not_before"`
	NotAfter  time.Time `json:"not_after"`
	KeyURI    string    `json:"key_uri"`
	KeyType   string    `json:"key_type"`
}

// HSMStatus is the token holding the CA key.
type HSMStatus struct {
	OK           bool   `json:"ok"`
	Error        string `json:"error,omitempty"`
	Module       string `json:"module"`
	TokenLabel   string `json:"token_label"`
	TokenSerial  string `json:"token_serial"`
	Manufacturer string `json:"manufacturer,omitempty"`
	Model        string `json:"model,omitempty"`
}

// StoreStatus is the durable store.
type StoreStatus struct {
	OK           bool   `json:"ok"`
	Error        string `json:"error,omitempty"`
	Certificates int64  `json:"certificates"`
}

// Certificate is one issued certificate as the API shows it.
type Certificate struct {
	Serial           string           `json:"serial"`
	Subject          string           `json:"subject"`
	Account          string           `json:"account,omitempty"`
	Template         string           `json:"template,omitempty"`
	NotBefore        time.Time        `json:"not_before"`
	NotAfter         time.Time        `json:"not_after"`
	Status           store.CertStatus `json:"status"` // valid, revoked; Expired says whether it has expired
	Expired          bool             `json:"expired"`
	RevokedAt        *time.Time       `json:"revoked_at,omitempty"`
	RevocationReason int              `json:"revocation_reason,omitempty"`
	RequestID        int64            `json:"request_id,omitempty"`
	IssuedAt         time.Time        `json:"issued_at"`
	PEM              string           `json:"pem,omitempty"` // only when one certificate is asked for
}

// Request is one certificate request as the API shows it.
type Request struct {
	ID        int64              `json:"id"`
	State     store.RequestState `json:"state"`
	Template  string             `json:"template,omitempty"`
	Requester string             `json:"requester,omitempty"`
	Account   string             `json:"account,omitempty"`
	Submitted time.Time          `json:"submitted"`
	Updated   time.Time          `json:"updated"`
	Reason    string             `json:"reason,omitempty"`
	Serial    string             `json:"serial,omitempty"`
	CSRPEM    string             `json:"csr,omitempty"` // only when one request is asked for
	// Held is what a pending request becomes on approval (only when one request is asked for).
	Held *HeldView `json:"held,omitempty"`
}

// HeldView is the certificate a pending request will get, as the certificate manager reviews it.
type HeldView struct {
	Subject string   `json:"subject"`
	SANs    []string `json:"sans,omitempty"`
	Publish bool     `json:"publish"`
	Reasons []string `json:"reasons,omitempty"`
}

// IssueRequest is POST /api/v1/certificates: an administrator issues a certificate for a CSR.
// Subject and SANs are taken from the CSR as the administrator approved it.
type IssueRequest struct {
	CSR          string `json:"csr"`     // PEM "CERTIFICATE REQUEST"
	Profile      string `json:"profile"` // "server" or "client"
	ValidityDays int    `json:"validity_days,omitempty"`
	Account      string `json:"account,omitempty"`
}

// IssueResponse answers IssueRequest.
type IssueResponse struct {
	Status      string   `json:"status"` // issued|pending|denied
	RequestID   int64    `json:"request_id"`
	Serial      string   `json:"serial,omitempty"`
	Certificate string   `json:"certificate,omitempty"` // PEM
	Reasons     []string `json:"reasons,omitempty"`
}

// ErrorBody is every error answer.
type ErrorBody struct {
	Error     string   `json:"error"`
	RequestID int64    `json:"request_id,omitempty"` // the request the error is about, if one was recorded
	Reasons   []string `json:"reasons,omitempty"`
}
