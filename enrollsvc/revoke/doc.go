// Package revoke publishes revocation for one CA: CRLs (RFC 5280), full and delta, streamed from
// the store and signed once by the CA key, and OCSP answers (RFC 6960) signed as they are asked
// for, both served over plain HTTP by Handler. The store is reached through Source and
// NumberStore, which enrollsvc/store implements; the key is a crypto.Signer (an hsm.Key, whose
// SignContext is used when present so that every signature has the caller's deadline).
//
// # CRLs
//
// BuildCRL writes a version 2 CRL: the CA's subject as issuer, byte for byte; thisUpdate and
// nextUpdate in whole seconds (UTCTime up to 2049, GeneralizedTime after, as RFC 5280 5.1.2.4
// requires); one entry per revoked certificate with its serial, revocation date and, unless the
// reason is unspecified (RFC 5280 5.3.1 recommends leaving it out then), a reasonCode; no
// revokedCertificates field at all when there is no entry. Extensions: AuthorityKeyIdentifier
// (the CA's subject key identifier, or RFC 5280 method 1 when the certificate has none),
// CRLNumber, then for a delta CRL a critical DeltaCRLIndicator naming its base, for a full CRL
// optionally FreshestCRL pointing at the delta CRL, and the Microsoft "Next CRL Publish"
// extension, which Windows clients use to fetch a new CRL before nextUpdate. There is no
// IssuingDistributionPoint: every CRL covers all of the CA's certificates and all reasons.
// Expired certificates stay listed as long as the Source lists them. Entries are in the order
// the Source gives them; RFC 5280 asks for none.
//
// A CRL is not built with x509.CreateRevocationList, which holds every entry as a Go value (a
// million entries: 2.3 to 6.8 s and some 970 MB allocated here). The entries are encoded as the
// Source yields them, into chunks; the TBSCertList is hashed from its parts and the CA key signs
// that one digest, so the key type and the HSM hardly matter; then the parts are copied once
// into the CRL. A million entries (a 47 MB CRL) take some 0.35 s and 90 MB allocated, 100,000
// some 35 ms, on two cores.
// The signature algorithm is the one crypto/x509 picks for the key: SHA-256 with RSA PKCS #1
// v1.5 for RSA keys, ECDSA with SHA-256, SHA-384 or SHA-512 for P-256, P-384 or P-521. Every CRL
// signature is verified with the CA's key before the CRL is returned.
//
// # Publishing, numbers and delta CRLs
//
// A Publisher keeps the latest full and delta CRL in memory. Full and delta CRLs draw their
// CRLNumbers from one sequence (RFC 5280 5.2.3), which the NumberStore keeps durably, so numbers
// rise across restarts; the Publisher also refuses a number that is not above the last it used.
// The defaults follow AD CS: a full CRL is valid 7 days and a new one is published every 3.5
// days (the rest is overlap, so a client's cached CRL never runs out before the next is there);
// a delta CRL is valid 1 day and published every 12 hours, and at once when RequestDelta asks
// (after a revocation). A delta's base is the current full CRL, and it lists the revocations
// recorded since the base's thisUpdate less DeltaMargin (10 minutes), which covers revocations
// committed while the base was being read. Publish makes a full CRL and a delta on it. Run keeps
// to the schedule; a failed publication is tried again a minute later while the CRLs already out
// (still valid: that is what the overlap is for) go on being served. Nothing is written to disk:
// after a restart Run publishes anew with the next numbers.
//
// # OCSP
//
// A Responder answers from the Source when asked; nothing is pre-signed. One request may hold up
// to 16 CertIDs (x/crypto/ocsp reads only the first; RFC 6960 allows several) and all are
// answered in one response, each CertID repeated exactly as it came. CertIDs may be hashed with
// SHA-1 (what nearly every client sends), SHA-256, SHA-384 or SHA-512. The answers:
//
//   - good: issued by this CA and not revoked (expired certificates too);
//   - revoked: with the revocation time and, unless unspecified, the reason;
//   - unknown: a serial this CA never issued (the "revoked for never issued" answer of RFC 6960
//     2.2 is not used);
//   - unauthorized (the response status, unsigned): a CertID names another issuer, or is hashed
//     with another algorithm, so this responder cannot speak for it;
//   - malformedRequest (unsigned): the request does not parse as DER, is not version 1, has no
//     CertID or more than 16, a nonce outside 1..32 octets (RFC 8954), an extension twice, or a
//     critical extension other than the nonce;
//   - internalError (unsigned): the store or the key failed; Respond then also returns the error.
//
// The nonce extension of a request is echoed in the response's extensions exactly as sent (its
// value is normally an OCTET STRING, whose length is what is bounded; a bare value is bounded by
// its own length). Signed requests are accepted and their signature is ignored, as is the
// requestorName: the answers are public. The response is signed by the CA key, or by a delegated
// responder certificate issued by the CA with id-kp-OCSPSigning (ideally with id-pkix-ocsp-nocheck),
// which is then sent along; NewResponder checks it, and renewing it before it expires is the
// caller's job. The ResponderID is byKey (RFC 5019 2.2.3); producedAt and thisUpdate are now in
// whole seconds and nextUpdate is Validity later (default 1 hour: the longest a cached "good"
// outlives a revocation). RSA signatures are verified before they leave (a faulty RSA-CRT
// signature gives the key away); ECDSA answers are not, which doubles throughput (about 25,000
// P-256 answers/s against 13,000 on two cores; the HSM sets the real limit).
//
// # HTTP
//
// Handler serves /crl/<name>.crl, /crl/<name>+.crl (the delta, named as AD CS names it),
// /aia/<name>.crt, POST /ocsp and GET /ocsp/<base64 request>, where name is FileName of the CA
// name. Every OCSP answer is HTTP 200 with application/ocsp-response, whatever its response status,
// so that clients read the OCSP status rather than guess from HTTP; only a body over 64 KiB is
// refused (413). Successful answers without a nonce may be cached until their nextUpdate; see
// Handler for the caching of each.
package revoke
