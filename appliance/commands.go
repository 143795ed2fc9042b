package appliance

import (
	"golang.org/x/sys/unix"

	"github.com/enrollment-appliance/aeappliance/appliance/console"
	"github.com/enrollment-appliance/aeappliance/provisioning"
)

// access says who may run a console command.
type access int

const (
	// needLogin: once the admin passphrase is set, only a logged-in admin (the zero value).
	needLogin access = iota
	// open: anyone at the console, always.
	open
	// beforePassphrase: anyone until the admin passphrase is set, then needLogin.
	beforePassphrase
)

// command is one line of the console's command table: console.Command (name, usage,
// help, menu entry, handler) and who may run it.
type command struct {
	console.Command
	Access access
}

// commandTable is the console's command set. The words follow aectl's. Once the admin
// passphrase is set, everything but help, status, version, login, logout, provision status and
// poweroff (anyone at the machine can pull its plug; poweroff at least unmounts cleanly) needs a
// login.
func (a *Appliance) commandTable() []command {
	cmds := []command{
		{Command: console.Command{Name: "status", Help: "state, data disk, network, time, service", Menu: "Status", Run: a.cmdStatus}, Access: open},
		{Command: console.Command{Name: "version", Help: "image, kernel and service versions", Menu: "Version", Run: a.cmdVersion}, Access: open},
		{Command: console.Command{Name: "login", Help: "log in with the admin passphrase", Menu: "Log in", Run: a.cmdLogin}, Access: open},
		{Command: console.Command{Name: "logout", Help: "log out of the console", Run: a.cmdLogout}, Access: open},
		{Command: console.Command{Name: provisionCmd + provisioning.Status, Help: "the provisioning steps: done and next", Menu: "Provisioning: what is done",
			Run: a.cmdProvisionStatus}, Access: open},
		{Command: console.Command{Name: provisionCmd + provisioning.StepPassphrase, Help: "1. set or change the admin passphrase", Menu: "Provisioning 1: admin passphrase",
			Run: a.cmdPassphrase}, Access: beforePassphrase},
		{Command: console.Command{Name: provisionCmd + provisioning.StepToken, Help: "3. initialise the HSM token (SO, user PIN)", Menu: "Provisioning 3: HSM token",
			Run: a.cmdToken}},
		{Command: console.Command{Name: provisionCmd + provisioning.StepKey, Args: "[TYPE]", MaxArgs: 1, Help: "4. CA key in the token (ecdsa-p256...)",
			Menu: "Provisioning 4: CA key", Run: a.cmdKey}},
		{Command: console.Command{Name: provisionCmd + provisioning.CASelfSigned, Args: "CA-NAME", MinArgs: 1, MaxArgs: -1, Help: "5a. a self-signed root CA",
			Menu: "Provisioning 5a: self-signed root CA", Ask: []string{"Name of the CA (e.g. Corp Root CA)"}, Run: a.cmdSelfSigned}},
		{Command: console.Command{Name: provisionCmd + provisioning.CACSR, Args: "CA-NAME", MinArgs: 1, MaxArgs: -1, Help: "5b. subordinate CA: print its request",
			Menu: "Provisioning 5b: subordinate CA request", Ask: []string{"Name of the CA (e.g. Corp Issuing CA)"}, Run: a.cmdCSR}},
		{Command: console.Command{Name: provisionCmd + provisioning.CAImport, Help: "5b. paste the signed CA chain (PEM)", Menu: "Provisioning 5b: import the CA chain",
			Run: a.cmdImport}},
		{Command: console.Command{Name: provisionCmd + provisioning.StepDirectory, Args: "URL BIND-USER CA-CN [DC-NAME]", MinArgs: 3, MaxArgs: 4,
			Help: "6. Active Directory (optional)", Menu: "Provisioning 6: Active Directory",
			Ask: []string{"LDAP URL (ldaps://dc.example.test)", "Service account (UPN or DN)", "Enrollment service cn"},
			Run: a.cmdDirectory}},
		{Command: console.Command{Name: provisionCmd + provisioning.StepStore, Args: "POSTGRES-URL", MinArgs: 1, MaxArgs: 1,
			Help: "7. a PostgreSQL store several appliances share (optional)", Menu: "Provisioning 7: shared PostgreSQL store",
			Ask: []string{"PostgreSQL URL (postgres://ROLE@HOST:5432/DATABASE)"}, Run: a.cmdStore}},
		{Command: console.Command{Name: provisionCmd + provisioning.StepFinish, Help: "8. write the configuration, start", Menu: "Provisioning 8: finish and start",
			Run: a.cmdFinish}},
		{Command: console.Command{Name: provisionCmd + provisioning.StepJoin, Args: "POSTGRES-URL", MinArgs: 1, MaxArgs: 1,
			Help: "3-8 instead: join a CA whose store is PostgreSQL", Menu: "Provisioning: join another appliance's CA",
			Ask: []string{"PostgreSQL URL of the CA's store (postgres://ROLE@HOST:5432/DATABASE)"}, Run: a.cmdJoin}},
		{Command: console.Command{Name: provisionCmd + provisioning.StepRestore, Args: "URL", MinArgs: 1, MaxArgs: 1,
			Help: "3-8 instead: restore a backup (aectl backup) fetched from URL", Menu: "Provisioning: restore a backup",
			Ask: []string{"URL of the backup (https://... or http://...; the backup is encrypted and checks itself)"}, Run: a.cmdRestore}},
		{Command: console.Command{Name: "network", Help: "2. network settings and state", Menu: "Network", Run: a.cmdNetwork("")}},
		{Command: console.Command{Name: "network dhcp", Help: "address by DHCP", Run: a.cmdNetwork("dhcp")}},
		{Command: console.Command{Name: "network static", Args: "ADDR/PREFIX [GATEWAY]", MinArgs: 1, MaxArgs: 2, Help: "a static address",
			Run: a.cmdNetwork("static")}},
		{Command: console.Command{Name: "network dns", Args: "IP...", MaxArgs: 3, Help: "name servers (none: DHCP's)", Run: a.cmdNetwork("dns")}},
		{Command: console.Command{Name: "network ntp", Args: "SERVER...", MaxArgs: 4, Help: "time servers (none: DHCP's)", Run: a.cmdNetwork("ntp")}},
		{Command: console.Command{Name: "network hostname", Args: "NAME", MinArgs: 1, MaxArgs: 1, Help: "the appliance's DNS name",
			Run: a.cmdNetwork("hostname")}},
		{Command: console.Command{Name: "requests", Args: "[STATE]", MaxArgs: 1, Help: "certificate requests (pending, issued...)",
			Menu: "Pending requests", Run: a.cmdRequests}},
		{Command: console.Command{Name: "approve", Args: "ID", MinArgs: 1, MaxArgs: 1, Help: "issue a pending request", Run: a.cmdApprove}},
		{Command: console.Command{Name: "deny", Args: "ID REASON...", MinArgs: 2, MaxArgs: -1, Help: "refuse a pending request", Run: a.cmdDeny}},
		{Command: console.Command{Name: "revoke", Args: "SERIAL REASON", MinArgs: 2, MaxArgs: 2, Help: "revoke a certificate (final)",
			Confirm: "Revoke the certificate? This cannot be undone.", Run: a.cmdRevoke}},
		{Command: console.Command{Name: "cluster", Help: "the store and the appliances serving the CA from it", Menu: "Cluster status",
			Run: a.cmdCluster}},
		{Command: console.Command{Name: "events", Args: "[N]", MaxArgs: 1, Help: "the latest audit events", Menu: "Events", Run: a.cmdEvents}},
		{Command: console.Command{Name: "syslog", Help: "the remote syslog server and how its streams fare", Menu: "Remote syslog",
			Run: a.cmdSyslog("")}},
		{Command: console.Command{Name: "syslog tls", Args: "HOST:PORT [SERVER-NAME]", MinArgs: 1, MaxArgs: 2,
			Help: "send audit events and the log over TLS (RFC 5425); asks for the server's CA", Run: a.cmdSyslog("tls")}},
		{Command: console.Command{Name: "syslog udp", Args: "HOST:PORT", MinArgs: 1, MaxArgs: 1,
			Help: "send them over UDP (RFC 5426): unencrypted, and lost when the network drops them", Run: a.cmdSyslog("udp")}},
		{Command: console.Command{Name: "syslog off", Help: "stop sending to the remote syslog server", Run: a.cmdSyslog("off")}},
		{Command: console.Command{Name: "ca", Help: "the CA certificate and its chain (PEM)", Menu: "CA certificate", Run: a.cmdCA}},
		{Command: console.Command{Name: "ca export-token", Help: "the SoftHSM token, encrypted, for an appliance to join",
			Confirm: "Export a copy of the CA key (encrypted to a passphrase you choose)?", ConfirmTyped: true, Run: a.cmdExportToken}},
		{Command: console.Command{Name: "api token", Help: "the management API's admin token", Run: a.cmdAPIToken}},
		{Command: console.Command{Name: "disk unlock", Help: "open a locked data disk with its (recovery) passphrase", Run: a.cmdDiskUnlock},
			Access: open},
		{Command: console.Command{Name: "disk migrate", Help: "encrypt the plain data disk in place",
			Confirm: "Encrypt the data disk in place? The service stops until it is done; keep the power on.", Run: a.cmdDiskMigrate}},
		{Command: console.Command{Name: "disk encrypt", Help: "no TPM: encrypt the blank data disk with a passphrase", Run: a.cmdDiskEncrypt},
			Access: open},
		{Command: console.Command{Name: "disk recovery", Help: "a new recovery passphrase for the data disk",
			Confirm: "Replace the data disk's recovery passphrase?", Run: a.cmdDiskRecovery}},
		{Command: console.Command{Name: "update", Help: "firmware: running version, slots, last update", Menu: "Firmware updates",
			Run: a.cmdUpdateStatus}},
		{Command: console.Command{Name: "update force", Help: "install the held update below the security version",
			Confirm: "Install firmware below the security version (it may reopen old flaws)?", ConfirmTyped: true,
			Run: a.cmdUpdateForce}},
		{Command: console.Command{Name: "update rollback", Help: "boot the factory image from now on", Confirm: "Stop booting the installed update?",
			Run: a.cmdUpdateRollback}},
	}
	if a.rel.Debug {
		cmds = append(cmds, command{Command: console.Command{Name: "shell", Help: "a shell (debug image only)", Run: a.cmdShell}})
	}
	return append(cmds,
		command{Command: console.Command{Name: "reboot", Help: "stop the service, unmount, reboot", Menu: "Reboot",
			Confirm: "Reboot the appliance?", Run: a.power(unix.LINUX_REBOOT_CMD_RESTART, "Rebooting")}, Access: beforePassphrase},
		command{Command: console.Command{Name: "poweroff", Help: "stop the service, unmount, power off", Menu: "Power off",
			Confirm: "Power off the appliance?", Run: a.power(unix.LINUX_REBOOT_CMD_POWER_OFF, "Powering off")}, Access: open})
}

// provisionCmd is the first word of the console's provisioning commands: `provision`
// and a step's name (provisioning.StepToken...).
const provisionCmd = "provision "
