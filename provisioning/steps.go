package provisioning

// The provisioning steps, in order. Each step has one name, and every part uses it as
// is: the console's command `provision NAME` (network is the console's `network`
// command), `enrollsvc provision NAME`, the provisioning API's endpoint
// /api/v1/provisioning/NAME, Report.Step and Step.Name, and the Go methods named after it
// (ceremony.Ceremony, provapi.Steps, provapi.Client). The numbers are the order the
// console's help shows. docs/architecture.md describes the ceremony.
const (
	StepPassphrase = "passphrase" // 1. the admin passphrase (the appliance's own settings)
	StepNetwork    = "network"    // 2. the management network (the appliance's own settings)
	StepToken      = "token"      // 3. initialise the HSM token: SO PIN, user PIN
	StepKey        = "key"        // 4. the CA key in the token
	StepCA         = "ca"         // 5. the CA certificate, one of the three ways below
	StepDirectory  = "directory"  // 6. Active Directory (optional)
	StepStore      = "store"      // 7. a PostgreSQL store several appliances share (optional)
	StepFinish     = "finish"     // 8. write the service's configuration: it can start
	// StepJoin replaces steps 3 to 8 on an appliance that joins a CA whose store is PostgreSQL:
	// the CA key comes from the first appliance's HSM (a SoftHSM token bundle), the CA
	// certificate and the shared settings from the store; it ends provisioned, like finish.
	StepJoin = "join"
	// StepRestore replaces steps 3 to 8 too: the data directory comes back from a backup
	// (aectl backup), with the same CA, certificates, revocations and settings; it ends
	// provisioned, like finish.
	StepRestore = "restore"
)

// The three ways of step ca. Each is a command of its own (`provision selfsigned`,
// `enrollsvc provision csr`, POST /api/v1/provisioning/import); their reports say
// Step: StepCA.
const (
	CASelfSigned = "selfsigned" // 5a. a self-signed root CA certificate
	CACSR        = "csr"        // 5b. a subordinate CA: its PKCS#10 request
	CAImport     = "import"     // 5b. then the subordinate CA's certificate and chain
)

// Status is not a step: it lists the steps, done and next (`provision status`,
// `enrollsvc provision status`, GET /api/v1/provisioning/status).
const Status = "status"
