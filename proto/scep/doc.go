// Package scep is the SCEP message codec (RFC 8894): it reads and writes pkiMessages, the signed and
// enveloped CMS messages of a PKIOperation, and the certs-only reply of GetCACert. It has no HTTP code: the
// server's edge (enrollsvc/scep) and any client call it.
//
// ParsePKIMessage reads a SignedData with exactly one signer, verified with the certificate the message
// includes for it, and its SCEP signed attributes; PKIMessage.Decrypt opens its EnvelopedData (RSA PKCS#1 v1.5
// key transport and AES-CBC or DES-EDE3-CBC; single DES only with DecryptWith and cms.DecryptOptions.AllowDES)
// with a crypto.Decrypter, so that the RA's decryption key may stay in an HSM (and never sign). NewCertRep
// writes the reply, signed with the RA's signing key through crypto.Signer and always AES-256-CBC
// (docs/architecture.md section 11 lists what certmonger and scepclient need). The CMS itself is package cms. Every refusal is an *Error (or a *cms.Error) carrying the failInfo of the FAILURE CertRep that
// answers it: see FailInfoOf.
package scep
