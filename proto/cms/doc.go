// Package cms is the one implementation of the Cryptographic Message Syntax (RFC 5652) in this module: the
// SignedData and EnvelopedData that CMC (RFC 5272; MS-WCCE and MS-WSTEP renewal PKCS#7 and CMC full PKI
// requests and responses) and SCEP (RFC 8894) carry, and whatever protocol comes later.
//
// Reading (ParseSignedData, ParseEnvelopedData) accepts DER only, read with cryptobyte: minimal lengths, no
// indefinite lengths, no trailing data, no unexpected fields, bounded counts of certificates, signers,
// recipients and attributes. Parsing checks structure only; SignerInfo.Verify checks the signed attributes
// (contentType and messageDigest, RFC 5652 section 5.4 and 11) and the signature with a key the caller chooses,
// because the protocols name their signers differently: SCEP by a certificate in the message, Windows CMC by
// the subject key identifier of the PKCS#10's own key, which is in no certificate at all.
// EnvelopedData.Decrypt opens RSA PKCS#1 v1.5 key transport (RFC 5652 section 6.2.1, RFC 3370 section 4.2.1)
// with a crypto.Decrypter, so the key may stay in an HSM, and AES-CBC (RFC 3565) or DES-EDE3-CBC content
// (single DES only when asked), with implicit rejection so that no padding oracle is offered.
//
// Writing (NewSignedData, Encrypt) signs with a crypto.Signer (RSA PKCS#1 v1.5, ECDSA, Ed25519 per RFC 8419;
// an HSM key never leaves the HSM) and encrypts with AES-128-CBC or AES-256-CBC, never DES: the OpenSSL 3 in
// certmonger cannot decrypt DES (docs/architecture.md section 11).
//
// Why our own rather than github.com/smallstep/pkcs7 (what step-ca's SCEP uses): pkcs7 verifies a signer only
// against a certificate in the message, so it cannot check a Windows CMC request signed by the PKCS#10 key
// and named by subject key identifier; it converts BER to DER before parsing, so it accepts what we refuse
// (and what our parsers' fuzzers hold us to); its content cipher is a package-level variable defaulting to
// DES-CBC; and its decryption returns distinct errors for key-transport and padding failures. The parts we
// need fit in a few hundred lines over cryptobyte.
package cms
