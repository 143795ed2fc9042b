package ldap

import (
	"context"
	"fmt"
	"strings"
)

// VerifyPassword checks a user's password the way AD CS's username/password endpoints do: a
// simple bind as that user, over TLS, on a connection of its own that is closed right after.
// user is a UPN or DN. An empty password is refused before anything is sent: LDAP treats a
// simple bind with an empty password as an unauthenticated bind, which succeeds. Wrong
// credentials give ErrBind; a DC that does not answer gives ErrUnavailable. The password is
// never logged and never part of an error.
func (c *Client) VerifyPassword(ctx context.Context, user, password string) error {
	if strings.TrimSpace(user) == "" || password == "" {
		return fmt.Errorf("ldap: verifying a password: empty user name or password: %w", ErrBind)
	}
	cfg := c.cfg
	cfg.BindUser, cfg.Password = user, password
	cfg.Keytab, cfg.Principal = "", ""
	ep := c.ep
	ep.krb = nil
	tmp := &Client{cfg: cfg, ep: ep, now: c.now}
	conn, _, err := tmp.dial(ctx)
	c.roundTrips.Add(tmp.roundTrips.Load())
	if err != nil {
		return err
	}
	conn.Close()
	return nil
}
