package ldap

import (
	"context"
	"fmt"
	"strings"

	goldap "github.com/go-ldap/ldap/v3"

	"github.com/enrollment-appliance/aeappliance/ldap/secdesc"
)

// wellKnown names the SIDs that have no object in the domain partition.
var wellKnown = map[string]string{
	"S-1-1-0":  "Everyone",
	"S-1-5-11": "Authenticated Users",
	"S-1-5-18": "SYSTEM",
	"S-1-5-9":  "Enterprise Domain Controllers",
	"S-1-3-0":  "Creator Owner",
}

// SIDNames returns display names (DOMAIN-less sAMAccountName, or the well-known name) for
// sids, keyed by the SID's string form. SIDs the directory does not know are left out. Names are
// cached like accounts; one search answers all misses.
func (c *Client) SIDNames(ctx context.Context, sids []secdesc.SID) (map[string]string, error) {
	out := make(map[string]string, len(sids))
	var filter strings.Builder
	n := 0
	for _, s := range sids {
		str := s.String()
		if name, ok := wellKnown[str]; ok {
			out[str] = name
			continue
		}
		if v, ok := c.cache.get("sid:" + str); ok {
			c.hits.Add(1)
			if name := v.(string); name != "" {
				out[str] = name
			}
			continue
		}
		if _, dup := out[str]; dup {
			continue
		}
		filter.WriteString("(objectSid=" + escapeBinary(s.Bytes()) + ")")
		n++
	}
	if n == 0 {
		return out, nil
	}
	c.misses.Add(1)
	entries, err := c.search(ctx, "resolve SIDs", searchSpec{base: c.RootDSE().DefaultNamingContext,
		scope: goldap.ScopeWholeSubtree, filter: "(|" + filter.String() + ")", attrs: []string{"objectSid", "sAMAccountName", "cn"}, paged: true})
	if err != nil {
		return out, err
	}
	found := map[string]bool{}
	for _, e := range entries {
		raw := e.Raw("objectSid")
		if len(raw) != 1 {
			continue
		}
		sid, err := secdesc.DecodeSID(raw[0])
		if err != nil {
			continue
		}
		name := e.Get("sAMAccountName")
		if name == "" {
			name = e.Get("cn")
		}
		out[sid.String()] = name
		found[sid.String()] = true
		c.cache.put("sid:"+sid.String(), e.DN, name)
	}
	for _, s := range sids { // remember misses too, so an unknown SID costs one search per TTL
		if str := s.String(); !found[str] && wellKnown[str] == "" {
			c.cache.put("sid:"+str, "", "")
		}
	}
	return out, nil
}

// CachedSIDNames is SIDNames from the cache and the well-known names only, without a round trip;
// complete reports that every SID was answered (named, or known to the cache as unknown to the
// directory).
func (c *Client) CachedSIDNames(sids []secdesc.SID) (names map[string]string, complete bool) {
	names, complete = make(map[string]string, len(sids)), true
	for _, s := range sids {
		str := s.String()
		if name, ok := wellKnown[str]; ok {
			names[str] = name
			continue
		}
		v, ok := c.cache.get("sid:" + str)
		if !ok {
			complete = false
			continue
		}
		if name := v.(string); name != "" {
			names[str] = name
		}
	}
	return names, complete
}

// escapeBinary writes bytes as an LDAP filter value (RFC 4515: every byte as \hh).
func escapeBinary(b []byte) string {
	var sb strings.Builder
	for _, c := range b {
		fmt.Fprintf(&sb, "\\%02x", c)
	}
	return sb.String()
}
