// Package issue builds and signs X.509 certificates from an already-approved order. It is the
// only code that asks the CA key to sign a certificate, and it makes the unsafe path impossible
// to write: Sign accepts only a *Prepared, which only Prepare makes, and Prepare lints the exact
// to-be-signed bytes first.
//
// Prepare builds the certificate (random positive serial of 128 bits, validity clamped to the CA
// certificate, SKI, AKI, CDP and AIA from configuration), signs a throwaway copy with a software
// key under an issuer that has the CA's name and key identifier, and lints that copy with zlint
// (RFC 5280, 5480, 5891, 8813 lints) and our own checks. Because issuer name, AKI and signature
// algorithm are the same, the throwaway's TBSCertificate is byte for byte the one the CA signs:
// Sign hands its digest to the HSM, assembles the certificate and verifies the signature with the
// CA certificate before returning it. A certificate that fails lint is never signed by the CA key.
package issue
