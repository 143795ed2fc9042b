// Package policy decides, purely, whether an account gets a certificate from a template and
// exactly what goes into it, the way Microsoft AD CS does with Active Directory certificate
// templates: Decide(Input) Decision, with every reason (the basis of `aectl explain`).
//
// It does no I/O and reads no clock. The directory client hands over raw attributes
// (map[string][][]byte with lower-cased names): ParseTemplate and ParseAccount decode them;
// ParseRequest parses and verifies a PKCS#10 request. Decide then applies, in order:
// permissions from the template's security descriptor (Read and Enroll, Autoenroll for
// autoenrollment; deny wins), the template's flags, the subject and subjectAltName built from the
// directory per msPKI-Certificate-Name-Flag (what the request asks for is ignored unless the
// enrollee supplies the subject, and even then another account's UPN, SID or GUID is refused),
// the SID, template, EKU, policy and custom extensions, the validity clipped to the CA
// certificate, and key checks (type, size, exponent, small factors, ROCA, curve point, not the
// CA's key). The result's Order is what issue.Prepare builds and lints; the subjectAltName is
// encoded here, in Order.ExtraExtensions, because Go's x509 cannot write otherName.
package policy
