// Package revocation tells aeagent whether a certificate has been revoked, by asking the OCSP
// responder named in its Authority Information Access extension and, failing that, by reading the
// CRLs of its CRL distribution points. MS-CAESO treats a revoked certificate as invalid (its
// template is enrolled again) and aeagent refuses to act for a revoked CA; this package supplies
// the answer, the caller decides what to do with it.
//
// # Sources and order
//
// Check tries the certificate's sources one after another and stops at the first definitive
// answer (Good or Revoked): every OCSP URL of the AIA extension in order, then every CRL
// distribution point in order. Only http:// URLs are fetched (RFC 5280 4.2.1.13, RFC 6960 A.1);
// ldap:// and other URLs are skipped and named in Err. An OCSP request is one POST of
// application/ocsp-request; there is no GET fallback. A CRL is fetched with GET, as DER or as a
// PEM "X509 CRL" block, and read up to Checker.MaxCRL bytes.
//
// # Verification
//
// Before any source is asked, the certificate's issuer name and signature are checked against
// the issuer given (SHA-1 signatures included: a revoked legacy certificate is still found).
// An OCSP response counts only if it is signed by the issuer itself, or by a delegated responder
// whose certificate the issuer signed (name and signature), that carries the id-kp-OCSPSigning
// extended key usage and is valid now; its CertID must name this certificate's serial number and
// this issuer's name and key hashes; its thisUpdate may be at most 5 minutes in the future and its
// nextUpdate, when given, must not have passed. A responder answer of "unknown" is not definitive:
// the next source is tried. Requests carry no nonce (golang.org/x/crypto/ocsp cannot make one and
// most responders serve pre-signed responses), so a response can be replayed until its nextUpdate.
// The revocation status of a delegated responder's own certificate is not checked.
//
// A CRL counts only if its issuer name equals the issuer's subject (byte for byte), its signature
// verifies with the issuer's key, its thisUpdate is at most 5 minutes in the future and its
// nextUpdate has not passed. Delta CRLs, indirect CRLs, CRLs partitioned by reason, CRLs with
// any other critical extension this package does not understand, and a CRL whose issuing
// distribution point covers only CA certificates (or only end-entity certificates, or other
// distribution point names than the certificate's) are not accepted for the certificate. The
// freshest CRL (delta CRL) pointer is ignored: a revocation published only in a delta CRL is seen
// when the next full CRL is. A listed certificate whose entry carries a critical extension is not
// reported as revoked or good: that source fails.
//
// # Soft fail
//
// Check never returns a Go error: a source that cannot be reached, answers with an HTTP or OCSP
// error, or gives an answer that does not verify is passed over, and when no source gives a
// definitive answer the Result is Unknown with every source's failure, each naming its URL, in
// Result.Err. Unknown is never reported as Revoked, and only a verified answer is Revoked or Good.
// Whether Unknown is acceptable is the caller's decision. Every request ends with ctx or after the
// HTTP client's timeout (30 s for the default client), so a responder that is down costs at most
// that per URL; a ctx deadline bounds the whole check.
//
// # Caching and state
//
// A CRL that was fetched and verified is kept in memory, per Checker and per URL and issuer,
// and reused until its nextUpdate (a CRL without nextUpdate is not kept); after that it is fetched
// again. OCSP responses are not cached. The package has no global state; a Checker is safe for
// concurrent use and must not be copied after first use. The clock is Checker.Now.
package revocation
