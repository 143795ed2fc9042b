// Package scep is the SCEP protocol edge (RFC 8894): it reads a client's HTTP request, calls the enrollment
// core through the Backend interface defined here, and writes the answer. Nothing else: which profile exists,
// whether a challenge password is right, what to issue and whether to pend are the backend's decisions.
//
// Operations: GetCACaps; GetCACert, which returns the RA certificate and the CA certificate as a certs-only
// PKCS#7 (application/x-x509-ca-ra-cert); and PKIOperation over GET or POST carrying a pkiMessage of type
// PKCSReq, RenewalReq or CertPoll, answered by a CertRep signed by the RA key (ARCHITECTURE §11 lists what
// certmonger and scepclient need).
//
// The message layer (ParsePKIMessage, PKIMessage.Decrypt, NewCertRep) writes and reads its CMS with
// cryptobyte, DER only: SignedData with exactly one signer, verified with the certificate the message
// includes for it; EnvelopedData with RSA PKCS#1 v1.5 key transport and AES-CBC or DES-EDE3-CBC (single DES
// only when Config.AllowDES says so), decrypted with a crypto.Decrypter so that the RA key may stay in an HSM.
// Replies are always AES-256-CBC. Every refusal is an *Error carrying the failInfo of the FAILURE CertRep
// that answers it; a message too broken to answer (no readable transactionID and senderNonce) gets HTTP 400.
package scep
