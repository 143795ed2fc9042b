// Package plan is the pure decision core of aeagent, the Linux autoenrollment client: given the
// templates the policy server offers, the certificates in the agent's store, the requests waiting
// for approval and the time, Decide says what one autoenrollment pass does and why, the way the
// Windows client does it (MS-CAESO):
//
//  1. The requirements list: templates where the caller has Enroll and Autoenroll permission, that
//     need no user interaction, whose subject is not supplied by the enrollee (such templates are
//     never autoenrolled), and of the right type (machine templates only in machine context).
//     A template superseded by another one on the list is dropped: the newer template is
//     requested instead.
//  2. A requirement is met by a valid certificate of that template, or of a template that
//     supersedes it. Expired and revoked certificates and certificates without their private key
//     are not valid: their template is enrolled again.
//  3. Every pending request is retrieved; one pending longer than PendingExpiry (60 days) is
//     dropped. A template with a pending request is not requested again in the same pass.
//  4. If X supersedes Y and X is on the requirements list, a holder of Y enrolls for X, and Y is
//     archived once X is issued.
//  5. A certificate is renewed once NextRenewal has come: 80% of its lifetime has passed AND the
//     template's renewal period has begun, unless the template sets SKIP_AUTO_RENEWAL. A raised
//     template major revision forces a new request (Reenroll); a minor revision does not.
//     A renewal keeps the key only when the template sets REQUIRE_SAME_KEY_RENEWAL.
//  6. Expired or revoked certificates are removed when the template sets
//     REMOVE_INVALID_CERTIFICATE_FROM_PERSONAL_STORE; otherwise they stay until their
//     replacement is installed and are then archived.
//
// Key generation (MinimalKeySize and the other key rules) belongs to the caller that carries the
// plan out. The package does no I/O of any kind and reads no clock: the time is Input.Now, and
// Decide returns the same Plan for the same Input. Every Action carries a Why that spells the rule
// out for `aeagent plan`; NextRenewal tells `aeagent status` when each certificate renews.
//
// Order matters when a plan is carried out: actions are sorted by template name, then kind, except
// that an action with After set (an archive waiting for a replacement) is placed in the group of
// the template it waits for, after that template's install action. The caller performs such an
// action only if the install action for After succeeded in this pass and installed a certificate
// (not if it pended or failed).
package plan
