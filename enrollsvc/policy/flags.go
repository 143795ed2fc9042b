package policy

import (
	"fmt"
	"strings"
)

// EnrollmentFlag is msPKI-Enrollment-Flag (MS-CRTD 2.26).
type EnrollmentFlag uint32

// Enrollment flags.
const (
	EnrollIncludeSymmetricAlgorithms         EnrollmentFlag = 0x00000001
	EnrollPendAllRequests                    EnrollmentFlag = 0x00000002
	EnrollPublishToKRAContainer              EnrollmentFlag = 0x00000004
	EnrollPublishToDS                        EnrollmentFlag = 0x00000008
	EnrollAutoEnrollmentCheckUserDSCert      EnrollmentFlag = 0x00000010
	EnrollAutoEnrollment                     EnrollmentFlag = 0x00000020
	EnrollPreviousApprovalValidateReenroll   EnrollmentFlag = 0x00000040
	EnrollUserInteractionRequired            EnrollmentFlag = 0x00000100
	EnrollRemoveInvalidCertificateFromStore  EnrollmentFlag = 0x00000400
	EnrollAllowEnrollOnBehalfOf              EnrollmentFlag = 0x00000800
	EnrollAddOCSPNoCheck                     EnrollmentFlag = 0x00001000
	EnrollEnableKeyReuseOnTokenFull          EnrollmentFlag = 0x00002000
	EnrollNoRevocationInfoInIssuedCerts      EnrollmentFlag = 0x00004000
	EnrollIncludeBasicConstraintsForEECerts  EnrollmentFlag = 0x00008000
	EnrollAllowPreviousApprovalKeyBasedRenew EnrollmentFlag = 0x00010000
	EnrollIssuancePoliciesFromRequest        EnrollmentFlag = 0x00020000
	EnrollSkipAutoRenewal                    EnrollmentFlag = 0x00040000
	EnrollNoSecurityExtension                EnrollmentFlag = 0x00080000
)

var enrollmentFlagNames = []flagName{
	{0x1, "INCLUDE_SYMMETRIC_ALGORITHMS"}, {0x2, "PEND_ALL_REQUESTS"}, {0x4, "PUBLISH_TO_KRA_CONTAINER"},
	{0x8, "PUBLISH_TO_DS"}, {0x10, "AUTO_ENROLLMENT_CHECK_USER_DS_CERTIFICATE"}, {0x20, "AUTO_ENROLLMENT"},
	{0x40, "PREVIOUS_APPROVAL_VALIDATE_REENROLLMENT"}, {0x100, "USER_INTERACTION_REQUIRED"},
	{0x400, "REMOVE_INVALID_CERTIFICATE_FROM_PERSONAL_STORE"}, {0x800, "ALLOW_ENROLL_ON_BEHALF_OF"},
	{0x1000, "ADD_OCSP_NOCHECK"}, {0x2000, "ENABLE_KEY_REUSE_ON_NT_TOKEN_KEYSET_STORAGE_FULL"},
	{0x4000, "NOREVOCATIONINFOINISSUEDCERTS"}, {0x8000, "INCLUDE_BASIC_CONSTRAINTS_FOR_EE_CERTS"},
	{0x10000, "ALLOW_PREVIOUS_APPROVAL_KEYBASEDRENEWAL_VALIDATE_REENROLLMENT"},
	{0x20000, "ISSUANCE_POLICIES_FROM_REQUEST"}, {0x40000, "SKIP_AUTO_RENEWAL"}, {0x80000, "NO_SECURITY_EXTENSION"},
}

// Names lists the set flags by their MS-CRTD names (CT_FLAG_ left off); unknown bits as hex.
func (f EnrollmentFlag) Names() []string { return flagNames(uint32(f), enrollmentFlagNames) }
func (f EnrollmentFlag) String() string  { return flagString(uint32(f), enrollmentFlagNames) }

// NameFlag is msPKI-Certificate-Name-Flag (MS-CRTD 2.28).
type NameFlag uint32

// Name flags.
const (
	NameEnrolleeSuppliesSubject        NameFlag = 0x00000001
	NameOldCertSuppliesSubjectAndAlt   NameFlag = 0x00000008
	NameEnrolleeSuppliesSubjectAltName NameFlag = 0x00010000
	NameAltRequireDomainDNS            NameFlag = 0x00400000
	NameAltRequireSPN                  NameFlag = 0x00800000
	NameAltRequireDirectoryGUID        NameFlag = 0x01000000
	NameAltRequireUPN                  NameFlag = 0x02000000
	NameAltRequireEmail                NameFlag = 0x04000000
	NameAltRequireDNS                  NameFlag = 0x08000000
	NameRequireDNSAsCN                 NameFlag = 0x10000000
	NameRequireEmail                   NameFlag = 0x20000000
	NameRequireCommonName              NameFlag = 0x40000000
	NameRequireDirectoryPath           NameFlag = 0x80000000
)

var nameFlagNames = []flagName{
	{0x1, "ENROLLEE_SUPPLIES_SUBJECT"}, {0x8, "OLD_CERT_SUPPLIES_SUBJECT_AND_ALT_NAME"},
	{0x10000, "ENROLLEE_SUPPLIES_SUBJECT_ALT_NAME"}, {0x400000, "SUBJECT_ALT_REQUIRE_DOMAIN_DNS"},
	{0x800000, "SUBJECT_ALT_REQUIRE_SPN"}, {0x1000000, "SUBJECT_ALT_REQUIRE_DIRECTORY_GUID"},
	{0x2000000, "SUBJECT_ALT_REQUIRE_UPN"}, {0x4000000, "SUBJECT_ALT_REQUIRE_EMAIL"},
	{0x8000000, "SUBJECT_ALT_REQUIRE_DNS"}, {0x10000000, "SUBJECT_REQUIRE_DNS_AS_CN"},
	{0x20000000, "SUBJECT_REQUIRE_EMAIL"}, {0x40000000, "SUBJECT_REQUIRE_COMMON_NAME"},
	{0x80000000, "SUBJECT_REQUIRE_DIRECTORY_PATH"},
}

// Names lists the set flags by their MS-CRTD names (CT_FLAG_ left off); unknown bits as hex.
func (f NameFlag) Names() []string { return flagNames(uint32(f), nameFlagNames) }
func (f NameFlag) String() string  { return flagString(uint32(f), nameFlagNames) }

// PrivateKeyFlag is msPKI-Private-Key-Flag (MS-CRTD 2.27) with the version fields masked off.
type PrivateKeyFlag uint32

// Private key flags.
const (
	PrivateKeyRequireArchival           PrivateKeyFlag = 0x00000001
	PrivateKeyExportable                PrivateKeyFlag = 0x00000010
	PrivateKeyStrongProtectionRequired  PrivateKeyFlag = 0x00000020
	PrivateKeyRequireAlternateSignature PrivateKeyFlag = 0x00000040
	PrivateKeyRequireSameKeyRenewal     PrivateKeyFlag = 0x00000080
	PrivateKeyUseLegacyProvider         PrivateKeyFlag = 0x00000100
	PrivateKeyEKTrustOnUse              PrivateKeyFlag = 0x00000200
	PrivateKeyEKValidateCert            PrivateKeyFlag = 0x00000400
	PrivateKeyEKValidateKey             PrivateKeyFlag = 0x00000800
	PrivateKeyAttestPreferred           PrivateKeyFlag = 0x00001000
	PrivateKeyAttestRequired            PrivateKeyFlag = 0x00002000
	PrivateKeyAttestWithoutPolicy       PrivateKeyFlag = 0x00004000
	PrivateKeyHelloLogonKey             PrivateKeyFlag = 0x00200000
)

var privateKeyFlagNames = []flagName{
	{0x1, "REQUIRE_PRIVATE_KEY_ARCHIVAL"}, {0x10, "EXPORTABLE_KEY"}, {0x20, "STRONG_KEY_PROTECTION_REQUIRED"},
	{0x40, "REQUIRE_ALTERNATE_SIGNATURE_ALGORITHM"}, {0x80, "REQUIRE_SAME_KEY_RENEWAL"},
	{0x100, "USE_LEGACY_PROVIDER"}, {0x200, "EK_TRUST_ON_USE"}, {0x400, "EK_VALIDATE_CERT"},
	{0x800, "EK_VALIDATE_KEY"}, {0x1000, "ATTEST_PREFERRED"}, {0x2000, "ATTEST_REQUIRED"},
	{0x4000, "ATTESTATION_WITHOUT_POLICY"}, {0x200000, "HELLO_LOGON_KEY"},
}

// Names lists the set flags by their MS-CRTD names (CT_FLAG_ left off); unknown bits as hex.
func (f PrivateKeyFlag) Names() []string { return flagNames(uint32(f), privateKeyFlagNames) }
func (f PrivateKeyFlag) String() string  { return flagString(uint32(f), privateKeyFlagNames) }

// GeneralFlag is the template's flags attribute (MS-CRTD 2.4).
type GeneralFlag uint32

// General flags.
const (
	GeneralAutoEnrollment   GeneralFlag = 0x00000020
	GeneralMachineType      GeneralFlag = 0x00000040
	GeneralIsCA             GeneralFlag = 0x00000080
	GeneralAddTemplateName  GeneralFlag = 0x00000200
	GeneralIsCrossCA        GeneralFlag = 0x00000800
	GeneralDoNotPersistInDB GeneralFlag = 0x00001000
	GeneralIsDefault        GeneralFlag = 0x00010000
	GeneralIsModified       GeneralFlag = 0x00020000
)

var generalFlagNames = []flagName{
	{0x2, "ADD_EMAIL"}, {0x8, "PUBLISH_TO_DS"}, {0x10, "EXPORTABLE_KEY"},
	{0x20, "AUTO_ENROLLMENT"}, {0x40, "MACHINE_TYPE"}, {0x80, "IS_CA"}, {0x200, "ADD_TEMPLATE_NAME"},
	{0x800, "IS_CROSS_CA"}, {0x1000, "DONOTPERSISTINDB"}, {0x10000, "IS_DEFAULT"}, {0x20000, "IS_MODIFIED"},
}

// Names lists the set flags by their MS-CRTD names (CT_FLAG_ left off); unknown bits as hex.
func (f GeneralFlag) Names() []string { return flagNames(uint32(f), generalFlagNames) }
func (f GeneralFlag) String() string  { return flagString(uint32(f), generalFlagNames) }

type flagName struct {
	bit  uint32
	name string
}

func flagNames(v uint32, table []flagName) []string {
	var out []string
	for _, f := range table {
		if v&f.bit != 0 {
			out = append(out, f.name)
			v &^= f.bit
		}
	}
	if v != 0 {
		out = append(out, fmt.Sprintf("0x%x", v))
	}
	return out
}

func flagString(v uint32, table []flagName) string {
	if v == 0 {
		return "0"
	}
	return strings.Join(flagNames(v, table), "|")
}
