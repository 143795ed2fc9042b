package apiclient

import (
	"fmt"
	"time"
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
	// Backup is the last complete backup; Activity the figures an operator looks at first.
	Backup   BackupInfo `json:"backup"`
	Activity Activity   `json:"activity"`
}

// BackupInfo is the last backup written completely (zero Last: never).
type BackupInfo struct {
	Last  time.Time `json:"last,omitempty"`
	By    string    `json:"by,omitempty"`
	Bytes int64     `json:"bytes,omitempty"`
	Error string    `json:"error,omitempty"`
}

// Activity is what this instance did since it started, from its metrics, and what the CA issued
// today, from the store.
type Activity struct {
	// IssuedToday counts the certificates issued since 00:00 UTC by every instance of the CA;
	// Pending the requests waiting for a certificate manager (-1 each: the store could not say).
	IssuedToday int64   `json:"issued_today"`
	Pending     int64   `json:"pending"`
	Issued      int64   `json:"issued"`       // certificates, every protocol
	Failed      int64   `json:"failed"`       // requests that failed inside the service
	Refused     int64   `json:"refused"`      // by policy, the key checks or lint
	HSMErrors   int64   `json:"hsm_errors"`   // private-key operations the HSM failed
	HSMSignP50  float64 `json:"hsm_sign_p50"` // seconds, estimated from the histogram; 0: none yet
	HSMSignP99  float64 `json:"hsm_sign_p99"`
	HSMSessions string  `json:"hsm_sessions"` // "in use/size"
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

// DirectoryStatus is the directory part of Status.
type DirectoryStatus struct {
	Configured bool   `json:"configured"`
	OK         bool   `json:"ok"`
	Error      string `json:"error,omitempty"`
	URL        string `json:"url,omitempty"`
	CA         string `json:"ca_cn,omitempty"`
}

// CertStatus is the revocation status of an issued certificate; expiry is Certificate.Expired.
type CertStatus string

// Certificate statuses (the status query parameter of GET /api/v1/certificates takes them too).
const (
	CertValid   CertStatus = "valid"
	CertRevoked CertStatus = "revoked"
)

// Certificate is one issued certificate as the API shows it.
type Certificate struct {
	Serial           string     `json:"serial"`
	Subject          string     `json:"subject"`
	Account          string     `json:"account,omitempty"`
	Template         string     `json:"template,omitempty"`
	NotBefore        time.Time  `json:"not_before"`
	NotAfter         time.Time  `json:"not_after"`
	Status           CertStatus `json:"status"` // valid, revoked; Expired says whether it has expired
	Expired          bool       `json:"expired"`
	RevokedAt        *time.Time `json:"revoked_at,omitempty"`
	RevocationReason int        `json:"revocation_reason,omitempty"`
	RequestID        int64      `json:"request_id,omitempty"`
	IssuedAt         time.Time  `json:"issued_at"`
	PEM              string     `json:"pem,omitempty"` // only when one certificate is asked for
}

// RequestState is the life-cycle state of a certificate request.
type RequestState string

// Request states (the state query parameter of GET /api/v1/requests takes them too).
const (
	RequestPending RequestState = "pending"
	RequestIssued  RequestState = "issued"
	RequestDenied  RequestState = "denied"
	RequestFailed  RequestState = "failed"
)

// Request is one certificate request as the API shows it.
type Request struct {
	ID        int64        `json:"id"`
	State     RequestState `json:"state"`
	Template  string       `json:"template,omitempty"`
	Requester string       `json:"requester,omitempty"`
	Account   string       `json:"account,omitempty"`
	Submitted time.Time    `json:"submitted"`
	Updated   time.Time    `json:"updated"`
	Reason    string       `json:"reason,omitempty"`
	Serial    string       `json:"serial,omitempty"`
	CSRPEM    string       `json:"csr,omitempty"` // only when one request is asked for
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

// Event is one audit event (GET /api/v1/events).
type Event struct {
	Seq      int64          `json:"seq"` // assigned by the store, increasing
	ID       int            `json:"id"`
	Category string         `json:"category"` // "Admin" or "Operational"
	Level    string         `json:"level"`    // "info", "warning", "error"
	Time     time.Time      `json:"time"`
	Message  string         `json:"message"`
	Fields   map[string]any `json:"fields,omitempty"` // numbers as json.Number (Client.Events)
	// The audit chain (proto/auditlog): the instance whose chain holds the event, its position,
	// the previous event's hash and its own (hex). Empty for events from before the trail was
	// chained.
	Instance string `json:"instance,omitempty"`
	N        int64  `json:"n,omitempty"`
	Prev     string `json:"prev,omitempty"`
	Hash     string `json:"hash,omitempty"`
}

// IssueRequest is POST /api/v1/certificates: an administrator issues a certificate for a CSR.
// Subject and SANs are taken from the CSR as the administrator approved it.
type IssueRequest struct {
	CSR          string `json:"csr"`     // PEM "CERTIFICATE REQUEST"
	Profile      string `json:"profile"` // "server" or "client"
	ValidityDays int    `json:"validity_days,omitempty"`
	Account      string `json:"account,omitempty"`
}

// What became of a request: IssueResponse.Status.
const (
	StatusIssued  = "issued"
	StatusPending = "pending"
	StatusDenied  = "denied"
)

// IssueResponse answers IssueRequest, EnrollRequest, approve and deny.
type IssueResponse struct {
	Status      string   `json:"status"` // StatusIssued, StatusPending or StatusDenied
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

// Template is a directory template as the API shows it.
type Template struct {
	Name            string   `json:"name"`
	Error           string   `json:"error,omitempty"`
	DisplayName     string   `json:"display_name,omitempty"`
	SchemaVersion   int      `json:"schema_version,omitempty"`
	Revision        string   `json:"revision,omitempty"` // major.minor
	OID             string   `json:"oid,omitempty"`
	Validity        string   `json:"validity,omitempty"`
	RenewalPeriod   string   `json:"renewal_period,omitempty"`
	ValiditySeconds int64    `json:"validity_seconds,omitempty"`
	RenewalSeconds  int64    `json:"renewal_seconds,omitempty"`
	MinimalKeySize  int      `json:"minimal_key_size,omitempty"`
	KeyAlgorithm    string   `json:"key_algorithm,omitempty"`
	KeyUsage        []string `json:"key_usage,omitempty"`
	EKUs            []string `json:"ekus,omitempty"`
	NameFlags       []string `json:"name_flags,omitempty"`
	EnrollmentFlags []string `json:"enrollment_flags,omitempty"`
	PrivateKeyFlags []string `json:"private_key_flags,omitempty"`
	GeneralFlags    []string `json:"general_flags,omitempty"`
	Supersedes      []string `json:"supersedes,omitempty"`
	RASignatures    int      `json:"ra_signatures,omitempty"`
}

// Verdict is one permission and what decided it.
type Verdict struct {
	Allowed bool   `json:"allowed"`
	Reason  string `json:"reason"`
	SID     string `json:"sid,omitempty"`     // the deciding ACE's trustee
	Trustee string `json:"trustee,omitempty"` // its name in the directory
}

// TemplateDecision is what policy says for one account and template.
type TemplateDecision struct {
	Template   string   `json:"template"`
	Outcome    string   `json:"outcome"` // issue, pend, refuse
	Read       Verdict  `json:"read"`
	Enroll     Verdict  `json:"enroll"`
	Autoenroll Verdict  `json:"autoenroll"`
	Subject    string   `json:"subject,omitempty"`
	SANs       []string `json:"sans,omitempty"`
	Publish    bool     `json:"publish"`
	Reasons    []string `json:"reasons,omitempty"`
	Text       string   `json:"text"` // the human explanation
}

// AccountView is the account an explanation is about.
type AccountView struct {
	DN             string `json:"dn"`
	SID            string `json:"sid"`
	SAMAccountName string `json:"sam_account_name"`
	UPN            string `json:"upn,omitempty"`
	Mail           string `json:"mail,omitempty"`
	DNSHostName    string `json:"dns_host_name,omitempty"`
	Computer       bool   `json:"computer"`
	TokenSIDs      int    `json:"token_sids"`
}

// Explanation is GET /api/v1/explain.
type Explanation struct {
	Account   *AccountView       `json:"account,omitempty"`
	Templates []TemplateDecision `json:"templates"`
	Errors    []string           `json:"errors,omitempty"`
	Reasons   []string           `json:"reasons,omitempty"`
}

// EnrollRequest is POST /api/v1/enroll: run a CSR through the directory's policy for an account.
type EnrollRequest struct {
	Template string `json:"template,omitempty"`
	Account  string `json:"account"`
	CSR      string `json:"csr"` // PEM
}

// DenyRequest is POST /api/v1/requests/{id}/deny.
type DenyRequest struct {
	Reason string `json:"reason"`
}

// Cluster is GET /api/v1/cluster: the store and the instances serving from it.
type Cluster struct {
	Instance   string `json:"instance"` // the one that answered
	Store      string `json:"store"`    // "sqlite" or "postgresql postgres://..."
	StoreOK    bool   `json:"store_ok"`
	StoreError string `json:"store_error,omitempty"`
	// What the PostgreSQL server says: its version, which instance publishes the CRLs (holds the
	// lock), its streaming replicas and their replay lag ("name state lag").
	DatabaseVersion string     `json:"database_version,omitempty"`
	CRLPublisher    string     `json:"crl_publisher,omitempty"`
	Replicas        []string   `json:"replicas,omitempty"`
	Instances       []Instance `json:"instances"`
}

// Instance is one instance serving from the store.
type Instance struct {
	Name      string    `json:"name"`
	Version   string    `json:"version"`
	Addresses []string  `json:"addresses"`
	Started   time.Time `json:"started"`
	Heartbeat time.Time `json:"heartbeat"`
	Live      bool      `json:"live"` // its last heartbeat is recent
}

// CheckOK is a Ready check that passed; any other value says what is wrong.
const CheckOK = "ok"

// Ready is GET /api/v1/ready (no credential): whether this instance can serve (for load
// balancers), with each check: "hsm", "store", "ca" (the CA certificate is valid), "directory"
// (with one), "crl" (with CRL distribution: the full and delta CRLs served are within nextUpdate).
// The service checks in the background; Checked is when. HTTP 200 when ready, else 503.
type Ready struct {
	Ready   bool              `json:"ready"`
	Checks  map[string]string `json:"checks"`
	Checked time.Time         `json:"checked"`
}

// MetricsPath is where the Prometheus metrics are served, on the API's listener.
const MetricsPath = "/metrics"

// MetricsToken is POST /api/v1/metrics/token: the new token GET /metrics requires from now on,
// shown once (the service keeps its hash).
type MetricsToken struct {
	Token string `json:"token"`
}

// SyslogSettings are the remote syslog server (GET, PUT and DELETE /api/v1/syslog): RFC 5424
// messages, the audit events (in order, caught up after an outage) and the operational log
// (best effort), each on its own connection.
type SyslogSettings struct {
	Address    string `json:"address"`               // host:port; "" means off
	Transport  string `json:"transport,omitempty"`   // "tls" (default, RFC 5425), "tcp" or "udp"
	CAPEM      string `json:"ca_pem,omitempty"`      // the server's CA (tls; default: the system's)
	ServerName string `json:"server_name,omitempty"` // the name its certificate must carry (default: Address's host)
}

// SyslogStatus is GET /api/v1/syslog: the setting and how the streams fare on this instance.
type SyslogStatus struct {
	SyslogSettings
	Audit      string `json:"audit"` // off, connecting, sending, caught up, or the last error
	LogSent    int64  `json:"log_sent"`
	LogDropped int64  `json:"log_dropped"` // operational log lines dropped while the server was away
}

// BackupRequest is POST /api/v1/backup: whom to encrypt the backup to (a passphrase of at least
// 12 characters, or age X25519 recipients "age1..."). The answer is the encrypted backup.
type BackupRequest struct {
	Passphrase string   `json:"passphrase,omitempty"`
	Recipients []string `json:"recipients,omitempty"`
}

// BackupSchedule is the backup schedule (GET, PUT and DELETE /api/v1/backup/schedule): a backup
// every Every, encrypted to age Recipients (public keys: the appliance holds nothing that opens
// its own backups), the newest Keep kept on the appliance, and each pushed with an HTTPS PUT to
// PushURL (its name appended when the URL ends in '/'), with PushToken as a bearer token and
// PushCAPEM as the server's CA when given. PushToken is never shown back.
type BackupSchedule struct {
	Every      string   `json:"every"` // a Go duration, at least 1m: "24h"
	Recipients []string `json:"recipients"`
	Keep       int      `json:"keep"`
	PushURL    string   `json:"push_url,omitempty"`
	PushToken  string   `json:"push_token,omitempty"`
	PushCAPEM  string   `json:"push_ca_pem,omitempty"`
}

// BackupScheduleStatus is GET /api/v1/backup/schedule.
type BackupScheduleStatus struct {
	Schedule   *BackupSchedule `json:"schedule,omitempty"` // nil: no schedule
	LastBackup time.Time       `json:"last_backup,omitempty"`
	LastRun    time.Time       `json:"last_run,omitempty"`   // of the schedule, on this instance
	LastError  string          `json:"last_error,omitempty"` // of its last run
}

// BackupRun is POST /api/v1/backup/schedule/run: the file a scheduled backup was written to.
type BackupRun struct {
	File string `json:"file"`
}

// BackupPath is where backups are made.
const BackupPath = "/api/v1/backup"

// OpsRows are the status lines an operator looks at first, as aectl status and the console show
// them: the last backup, and what the instance did since it started.
func (st Status) OpsRows() [][2]string {
	backup := "never"
	switch {
	case st.Backup.Error != "":
		backup = "unknown: " + st.Backup.Error
	case !st.Backup.Last.IsZero():
		backup = fmt.Sprintf("%s (%s ago, %d bytes, by %s)", st.Backup.Last.UTC().Format(time.RFC3339),
			time.Since(st.Backup.Last).Truncate(time.Second), st.Backup.Bytes, st.Backup.By)
	}
	a := st.Activity
	sign := "no signature yet"
	if a.HSMSignP50 > 0 {
		sign = fmt.Sprintf("p50 <= %s, p99 <= %s", secs(a.HSMSignP50), secs(a.HSMSignP99))
	}
	today := "unknown (the store did not answer)"
	if a.IssuedToday >= 0 && a.Pending >= 0 {
		today = fmt.Sprintf("%d issued since 00:00 UTC (every instance); %d pending approval", a.IssuedToday, a.Pending)
	}
	return [][2]string{
		{"Last backup", backup},
		{"Today", today},
		{"Since start", fmt.Sprintf("%d issued, %d refused, %d failed", a.Issued, a.Refused, a.Failed)},
		{"HSM", fmt.Sprintf("signatures %s; %d errors; sessions %s", sign, a.HSMErrors, a.HSMSessions)},
	}
}

func secs(s float64) string { return time.Duration(s * float64(time.Second)).String() }
