// Package provapi is the provisioning ceremony over HTTPS: the appliance serves it before
// the service exists, so that an administrator can provision the appliance from a
// workstation instead of its console. It offers the ceremony's steps (network, token,
// key, self-signed root or subordinate CA request and chain import, directory, finish)
// as a small JSON API under /api/v1/provisioning, behind HTTP Basic authentication with
// the admin passphrase set at the console; Client is its Go client.
//
// The package builds without cgo: the HSM work is behind Steps, which the appliance
// implements by running each step in a child process, and Local implements in this
// process (its HSM steps need a cgo build, as the hsm package does).
package provapi
