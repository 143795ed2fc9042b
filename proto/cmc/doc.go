// Package cmc reads and writes the binary tokens of MS-WSTEP enrollment: what a client puts in the
// BinarySecurityToken of an RST Issue request, and what the appliance returns in the BinarySecurityToken of an
// Issued reply or in the BinaryResponse of a fault.
//
// Requests come in three shapes, and ParseRequest tells them apart by their content, never by the ValueType
// the client declared:
//
//   - PKCS10: a bare PKCS#10 CertificationRequest (RFC 2986), as cepces and many tools send.
//   - CMC: a CMS SignedData (RFC 5652) whose eContentType is id-cct-PKIData, holding a CMC PKIData
//     (RFC 5272) with exactly one PKCS#10 TaggedRequest, as Windows sends (MS-WCCE 2.2.2.6.3, 3.1.1.4.3.1.3).
//   - Renewal: a SignedData around a PKCS#10 (id-data) or a PKIData, signed with the key of the certificate
//     being renewed, the PKCS#10 carrying that certificate in attribute 1.3.6.1.4.1.311.13.1
//     (MS-WCCE 3.1.1.4.3.2.1 and 3.1.1.4.3.2.2).
//
// Every signature is verified before a Request is returned: the PKCS#10's own, and every SignerInfo's over its
// signed attributes (which must carry contentType and a matching messageDigest). What this package does NOT
// decide is whether a verified signer may do what it asks: the caller checks that a renewal's OldCert is ours,
// valid, unrevoked and of the same template, and refuses a CMC request signed by someone other than the
// request key unless it supports enrollment on behalf of others.
//
// Responses: FullPKIResponse (a CMC Full PKI Response, RFC 5272 section 4.2, signed by the CA, or a
// certs-only Simple PKI Response when no signer is given) and FailureResponse. There is no PendingResponse:
// MS-WSTEP answers a pended request with a RequestedSecurityToken reference and a RequestID (ARCHITECTURE §6),
// and the captured reply a real client accepted carries no binary token at all.
//
// Only the standard library is used; there is no network code: bytes in, values out.
package cmc
