package ldap

import (
	"crypto/tls"
	"time"
)

// SetNow replaces the cache's clock.
func SetNow(c *Client, now func() time.Time) { c.now = now }

// TLSState returns the TLS state of the pool's first connection (ok false if not TLS or not connected).
func TLSState(c *Client) (tls.ConnectionState, bool) {
	conn, _ := c.liveConn(0)
	if conn == nil {
		return tls.ConnectionState{}, false
	}
	return conn.TLSConnectionState()
}

var SimpleBind = simpleBind
var ErrInsecureBind = errInsecureBind
var PickAccount = pickAccount
