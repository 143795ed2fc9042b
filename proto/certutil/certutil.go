// Package certutil holds the small certificate helpers that the service and its clients (aeagent, aectl)
// share: how a serial number is written and read, and public key comparison. It imports nothing of this
// module, so a client links it without any server code (docs/architecture.md section 3).
package certutil

import (
	"crypto"
	"fmt"
	"math/big"
	"strings"
)

// SerialString formats a serial number the way the store and the API name certificates: lower-case hex, no
// leading zeros (RFC 5280 section 4.1.2.2 serials are positive integers).
func SerialString(n *big.Int) string { return n.Text(16) }

// ParseSerial parses what SerialString makes (also accepting upper case and colons).
func ParseSerial(s string) (*big.Int, error) {
	s = strings.ReplaceAll(strings.TrimSpace(s), ":", "")
	n, ok := new(big.Int).SetString(s, 16)
	if !ok || n.Sign() <= 0 {
		return nil, fmt.Errorf("bad serial number %q: want positive hex", s)
	}
	return n, nil
}

// PublicKeysEqual reports whether a and b are the same public key.
func PublicKeysEqual(a, b crypto.PublicKey) bool {
	ae, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && ae.Equal(b)
}
