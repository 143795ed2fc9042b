// Package agent carries out aeagent's autoenrollment passes: it reads the certificate store
// (aeagent/store), fetches the policy from the policy server (aeagent/wsclient, MS-XCEP; the
// policy is cached in the store and policiesNotChanged honoured), checks that the policy's CAs are
// trusted and not revoked and whether each held certificate was revoked (aeagent/revocation),
// asks aeagent/plan what to do, and does it: new keys are generated here, per the template's key
// rules, and never leave the host; requests carry the template; renewals are signed with the old
// key (cmc.SignRenewal) and keep it only when the template requires the same key; issued
// certificates are checked (public key, chain to a trusted root, template) before the store
// installs them, archiving what they replace; pending requests are kept with their keys and
// retrieved on later passes; hooks run after each change.
//
// A pass that cannot start (store corrupt or locked, policy server down, CA untrusted or revoked)
// changes nothing and returns an error. A failed action (a denial, a full disk) leaves that
// template's certificates as they were; the other actions still run and the pass returns the
// joined errors, so `aeagent pulse` exits non-zero.
//
// Options.Now is the only clock of decisions, so tests can run a pass at 79% or 80% of a
// certificate's lifetime against the real server.
package agent
