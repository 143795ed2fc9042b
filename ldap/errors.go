package ldap

import (
	"errors"
	"fmt"

	goldap "github.com/go-ldap/ldap/v3"
)

// The error kinds callers decide on; every error this package returns wraps at most one of them.
var (
	// ErrUnavailable: the directory could not be reached or did not answer in time (network, TLS, DC down,
	// timeout, client closed). Fail closed: a caller must not fall back to older data.
	ErrUnavailable = errors.New("directory unavailable")
	// ErrBind: the directory refused the service account's credentials.
	ErrBind = errors.New("directory bind failed")
	// ErrNotFound: no such account, template or enrollment service.
	ErrNotFound = errors.New("not found in directory")
	// ErrAmbiguous: a name matched more than one account.
	ErrAmbiguous = errors.New("ambiguous name in directory")
)

// isNetworkError reports whether err means the connection is unusable (as opposed to an LDAP result such as
// noSuchObject, which leaves the connection fine).
func isNetworkError(err error) bool {
	if err == nil {
		return false
	}
	var le *goldap.Error
	if errors.As(err, &le) {
		return le.ResultCode == goldap.ErrorNetwork || le.ResultCode == goldap.LDAPResultUnavailable ||
			le.ResultCode == goldap.LDAPResultBusy || le.ResultCode == goldap.LDAPResultServerDown
	}
	// go-ldap returns plain errors for some transport failures ("unable to send request", closed channel).
	return true
}

func unavailable(op string, err error) error {
	return fmt.Errorf("ldap: %s: %w: %w", op, ErrUnavailable, err)
}
