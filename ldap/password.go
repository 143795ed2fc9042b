package ldap

import (
	"context"
	"errors"
	"fmt"
	"strings"

	goldap "github.com/go-ldap/ldap/v3"

	"github.com/enrollment-appliance/aeappliance/ldap/secdesc"
)

// Authenticate checks a user's password the way AD CS's username/password endpoints do, with a
// simple bind as that user, over TLS, on a connection of its own that is closed right after, and
// returns the SID of the account the domain controller authenticated: the DC resolves bind names
// in more ways than a search can copy (an explicit UPN of one account equal to the implicit UPN of
// another, for one), so the appliance asks it. user must be a UPN ("alice@corp.example.test") or
// a down-level logon name ("CORP\alice"). On the bound connection the DC is asked "Who am I?"
// (RFC 4532; AD answers u:DOMAIN\name), or, where it does not support that (Samba), for the
// connection's own token (the RootDSE's tokenGroups); the one user or computer among the
// token's SIDs is who authenticated. If neither answers, or the answer names no single account
// of this domain, the password is refused (ErrBind).
func (c *Client) Authenticate(ctx context.Context, user, password string) (secdesc.SID, error) {
	name, domain, upn := strings.Cut(user, "@")
	if !upn {
		domain, name, _ = strings.Cut(user, `\`)
	}
	if name == "" || domain == "" || strings.ContainsAny(name, `@\`) || strings.ContainsAny(domain, `@\`) {
		return secdesc.SID{}, fmt.Errorf(`ldap: user name %q: want user@domain or DOMAIN\user: %w`, user, ErrBind)
	}
	if password == "" { // LDAP treats a simple bind with an empty password as unauthenticated: it succeeds
		return secdesc.SID{}, fmt.Errorf("ldap: verifying a password: empty password: %w", ErrBind)
	}
	cfg := c.cfg
	cfg.BindUser, cfg.Password = user, password
	cfg.Keytab, cfg.Principal = "", ""
	ep := c.ep
	ep.krb = nil
	tmp := &Client{cfg: cfg, ep: ep, now: c.now}
	conn, _, err := tmp.dial(ctx)
	c.roundTrips.Add(tmp.dialTrips.Load())
	if err != nil {
		return secdesc.SID{}, err
	}
	defer conn.Close()
	filter, err := c.boundIdentity(conn)
	if err != nil {
		return secdesc.SID{}, fmt.Errorf("ldap: who authenticated as %q: %w: %w", user, ErrBind, err)
	}
	entries, err := c.search(ctx, "find the authenticated account", searchSpec{base: c.RootDSE().DefaultNamingContext,
		scope: goldap.ScopeWholeSubtree, filter: "(&(objectClass=user)" + filter + ")", attrs: []string{"objectSid"}})
	if err != nil {
		return secdesc.SID{}, err
	}
	if len(entries) != 1 {
		return secdesc.SID{}, fmt.Errorf("ldap: who authenticated as %q: %d accounts of this domain match the DC's answer: %w", user, len(entries), ErrBind)
	}
	sid, err := secdesc.DecodeSID([]byte(entries[0].Get("objectSid")))
	if err != nil {
		return secdesc.SID{}, fmt.Errorf("ldap: %s: objectSid: %w", entries[0].DN, err)
	}
	return sid, nil
}

// boundIdentity asks the DC on conn who is bound and returns an LDAP filter for that account.
func (c *Client) boundIdentity(conn *goldap.Conn) (string, error) {
	c.roundTrips.Add(1)
	if who, err := conn.WhoAmI(nil); err == nil {
		authz := who.AuthzID
		switch {
		case strings.HasPrefix(authz, "dn:") && len(authz) > 3:
			return "(distinguishedName=" + goldap.EscapeFilter(authz[3:]) + ")", nil
		case strings.HasPrefix(authz, "u:"):
			if _, sam, ok := strings.Cut(authz[2:], `\`); ok && sam != "" {
				return "(sAMAccountName=" + goldap.EscapeFilter(sam) + ")", nil
			}
		}
		// An anonymous or unexpected answer: fall through to the token.
	}
	c.roundTrips.Add(1)
	res, err := conn.Search(goldap.NewSearchRequest("", goldap.ScopeBaseObject, goldap.NeverDerefAliases, 0, 0,
		false, "(objectClass=*)", []string{"tokenGroups"}, nil))
	if err != nil {
		return "", fmt.Errorf("neither Who am I? nor the RootDSE's tokenGroups answered: %w", err)
	}
	if len(res.Entries) != 1 {
		return "", errors.New("the RootDSE's tokenGroups did not answer")
	}
	var f strings.Builder
	f.WriteString("(|")
	n := 0
	for _, raw := range res.Entries[0].GetRawAttributeValues("tokenGroups") {
		sid, err := secdesc.DecodeSID(raw)
		if err != nil {
			continue
		}
		f.WriteString("(objectSid=" + escapeBinary(sid.Bytes()) + ")")
		n++
	}
	if n == 0 {
		return "", errors.New("the bound connection's token holds no SID")
	}
	f.WriteString(")")
	return f.String(), nil
}
