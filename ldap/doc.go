// Package ldap is the appliance's client for Active Directory, the source of truth for certificate templates,
// their permissions and the accounts certificates are issued to.
//
// A Client holds one authenticated connection to a domain controller (LDAPS or StartTLS, never plain LDAP;
// simple bind with the service account's password, or Kerberos with its keytab), shared by concurrent callers.
// It redials by itself after the connection breaks (once per call, with backoff between failed dials), bounds
// every call by its context and Config.Timeout, and pages every search that can return many entries. It reads:
//
//   - the RootDSE (naming contexts), once per connection;
//   - the pKIEnrollmentService object of this CA and the pKICertificateTemplate objects it offers, with their
//     nTSecurityDescriptor (read with the SD_FLAGS control; parse it with package ldap/secdesc);
//   - accounts (users and computers) by sAMAccountName, UPN or DN, with their transitive group SIDs from the
//     constructed tokenGroups attribute plus Authenticated Users and Everyone, which AD does not list;
//
// and writes one thing: values of userCertificate (publishing and unpublishing issued certificates).
//
// Templates, the enrollment service and accounts are cached for Config.CacheTTL. A cache hit sends nothing to
// the directory; an expired entry is fetched again, and if the directory is down the call fails with
// ErrUnavailable: data older than the TTL is never served, so permissions removed in AD stop working within
// one TTL. Errors wrap one of ErrUnavailable, ErrBind, ErrNotFound, ErrAmbiguous.
//
// Package ldap/ldaptest starts a throwaway Samba AD DC with a sample domain for tests.
package ldap
