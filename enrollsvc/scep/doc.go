// Package scep is the SCEP protocol edge (RFC 8894): it reads a client's HTTP request, calls the enrollment
// core through the Backend interface defined here, and writes the answer. Nothing else: which profile exists,
// whether a challenge password is right, what to issue and whether to pend are the backend's decisions.
//
// Operations: GetCACaps; GetCACert, which returns the RA's two certificates and the CA certificate as a
// certs-only PKCS#7 (application/x-x509-ca-ra-cert); and PKIOperation over GET or POST carrying a pkiMessage
// of type PKCSReq, RenewalReq or CertPoll, answered by a CertRep signed by the RA's signing key
// (docs/architecture.md section 11 lists what certmonger and scepclient need).
//
// The RA has one key to sign and another to decrypt (RFC 8894 §3.5.1): the signing certificate has keyUsage
// digitalSignature only, the encryption certificate keyEncipherment only, and clients pick the one to
// encrypt to by keyUsage (RFC 8894 §3.5.1; certmonger does) or by fingerprint (scepclient -ca-fingerprint;
// without it scepclient encrypts to every certificate, and only the recipient info of the encryption
// certificate is opened). A key that decrypts what anyone sends it never signs, so a decryption oracle
// cannot become a forged RA signature.
//
// The messages themselves are read and written by the codec in proto/scep (and its CMS by proto/cms):
// envelopes encrypted with single DES are accepted only when Config.AllowDES says so, replies are always
// AES-256-CBC, and the RA keys are used through crypto.Signer and crypto.Decrypter so that they may stay in
// an HSM. Every refusal is answered by a FAILURE CertRep carrying the failInfo of its error; a message too broken
// to answer (no readable transactionID and senderNonce) gets HTTP 400.
package scep
