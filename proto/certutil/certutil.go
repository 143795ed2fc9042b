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
	if n := parseHex(s); n != nil { // the canonical form, as stores keep it: no allocation but the result
		return n, nil
	}
	s = strings.ReplaceAll(strings.TrimSpace(s), ":", "")
	n, ok := new(big.Int).SetString(s, 16)
	if !ok || n.Sign() <= 0 {
		return nil, fmt.Errorf("bad serial number %q: want positive hex", s)
	}
	return n, nil
}

// parseHex is the positive number of at most 20 octets whose hex digits are s (either case), or
// nil when s is anything else; ParseSerial's fast path (a CRL walks a million stored serials).
func parseHex(s string) *big.Int {
	if len(s) == 0 || len(s) > 40 {
		return nil
	}
	var buf [20]byte
	b := buf[20-(len(s)+1)/2:]
	for i := 0; i < len(s); i++ {
		c := s[len(s)-1-i]
		var v byte
		switch {
		case '0' <= c && c <= '9':
			v = c - '0'
		case 'a' <= c && c <= 'f':
			v = c - 'a' + 10
		case 'A' <= c && c <= 'F':
			v = c - 'A' + 10
		default:
			return nil
		}
		b[len(b)-1-i/2] |= v << (4 * (i % 2))
	}
	n := new(big.Int).SetBytes(b)
	if n.Sign() <= 0 {
		return nil
	}
	return n
}

// PublicKeysEqual reports whether a and b are the same public key.
func PublicKeysEqual(a, b crypto.PublicKey) bool {
	ae, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && ae.Equal(b)
}
