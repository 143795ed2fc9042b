package provisioning

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/enrollment-appliance/aeappliance/config"
)

// Files the ceremony keeps in the service's data directory besides enrollsvc's own.
const (
	StateFile   = "ceremony.json" // what the ceremony has done so far
	CSRFile     = "ca.csr"        // the subordinate CA's request, until its chain is imported
	CAChainFile = "ca-chain.pem"  // the certificates above a subordinate CA, up to the root
)

// Report says what a step did; Changed is false when it found the work already done.
type Report struct {
	Step    string   `json:"step"`
	Changed bool     `json:"changed"`
	Lines   []string `json:"lines"`
}

// Say adds a line.
func (r *Report) Say(format string, a ...any) { r.Lines = append(r.Lines, fmt.Sprintf(format, a...)) }

// String is the report's lines.
func (r Report) String() string { return strings.Join(r.Lines, "\n") }

// State is ceremony.json.
type State struct {
	Token     *TokenState       `json:"token,omitempty"`
	Key       *KeyState         `json:"key,omitempty"`
	CA        *CAState          `json:"ca,omitempty"`
	Directory *config.Directory `json:"directory,omitempty"`
	// Store is the shared PostgreSQL store's section (its files in the data directory); nil: the
	// appliance's own SQLite file.
	Store *config.Postgres `json:"store,omitempty"`
}

// TokenState is the initialised token.
type TokenState struct {
	Module  string    `json:"module"`
	SoftHSM bool      `json:"softhsm"`
	Label   string    `json:"label"`
	Serial  string    `json:"serial"`
	At      time.Time `json:"at"`
}

// KeyState is the CA key in the token.
type KeyState struct {
	URI  string    `json:"uri"`
	Type string    `json:"type"`
	At   time.Time `json:"at"`
}

// CAState is the CA certificate, or the request waiting for it.
type CAState struct {
	Mode      string    `json:"mode"` // "selfsigned" or "subordinate"
	Name      string    `json:"name"` // common name asked for
	Certified bool      `json:"certified"`
	Subject   string    `json:"subject,omitempty"`
	Issuer    string    `json:"issuer,omitempty"`
	NotAfter  time.Time `json:"not_after,omitzero"`
	SHA256    string    `json:"sha256,omitempty"`
}

// Store is the store step's input: a PostgreSQL database (TLS required, verified against CAPEM)
// and the role's password or a client certificate and key.
type Store struct {
	URL           string // postgres://ROLE@HOST[:PORT]/DATABASE, no password in it
	Password      string
	CAPEM         []byte
	ClientCertPEM []byte
	ClientKeyPEM  []byte
}

// Join is the join step's input: the shared store, the first appliance's SoftHSM token bundle
// (`ca export-token` at its console) with its passphrase, the token's user PIN, and the
// directory service account's password when the CA uses a directory.
type Join struct {
	Store            Store
	TokenBundle      []byte
	BundlePassphrase string
	UserPIN          string
	LDAPPassword     string
}

// Restore is the restore step's input: where the backup is (an http:// or https:// URL, or a
// file on the appliance) and its passphrase.
type Restore struct {
	From       string
	Passphrase string
}

// Directory is the directory step's input.
type Directory struct {
	URL      string // ldaps://dc:636 or ldap://dc:389 (StartTLS)
	BindUser string // UPN or DN of the service account
	Password string
	CACN     string // cn of the pKIEnrollmentService object
	CAPEM    []byte // trust for the DC's certificate; nil: the system roots
	// ServerName is the DC's name in its certificate when the URL names it otherwise
	// (an IP address); "": the URL's host.
	ServerName string
}

// Step is one line of Progress.
type Step struct {
	Name   string `json:"name"`
	Done   bool   `json:"done"`
	Detail string `json:"detail"`
}

// LoadState reads dir/ceremony.json (empty before the first step).
func LoadState(dir string) (State, error) {
	var st State
	b, err := os.ReadFile(filepath.Join(dir, StateFile))
	if errors.Is(err, os.ErrNotExist) {
		return st, nil
	}
	if err != nil {
		return st, fmt.Errorf("reading the ceremony state: %w", err)
	}
	if err := json.Unmarshal(b, &st); err != nil {
		return st, fmt.Errorf("%s is corrupt: %w", filepath.Join(dir, StateFile), err)
	}
	return st, nil
}
