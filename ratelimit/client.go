package ratelimit

import (
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"
)

// Proxies are the reverse proxies an administrator trusts to say who their client is
// (config.json trusted_proxies). The zero value trusts none: the client is the socket's peer,
// whatever X-Forwarded-For claims.
type Proxies []netip.Prefix

// ParseProxies parses CIDR prefixes ("192.0.2.0/24", "2001:db8::/48") or single addresses.
func ParseProxies(cidrs []string) (Proxies, error) {
	var p Proxies
	for _, c := range cidrs {
		pfx, err := netip.ParsePrefix(c)
		if err != nil {
			a, aerr := netip.ParseAddr(c)
			if aerr != nil {
				return nil, fmt.Errorf("trusted proxy %q: want an address or a CIDR prefix", c)
			}
			pfx = netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen())
		}
		p = append(p, pfx.Masked())
	}
	return p, nil
}

func (p Proxies) trusted(a netip.Addr) bool {
	for _, pfx := range p {
		if pfx.Contains(a) {
			return true
		}
	}
	return false
}

// ClientAddr is the address of r's client: the socket's peer, or, when the peer is a trusted
// proxy, the rightmost address of X-Forwarded-For that is not one (each proxy appends the
// peer it saw, so only the entries that trusted proxies wrote can be believed; everything to
// the left of the first untrusted one is the client's to choose). An invalid entry stops the
// walk at the proxy that passed it on. The zero Addr when RemoteAddr is not an address (a test
// handler called without a connection).
func (p Proxies) ClientAddr(r *http.Request) netip.Addr {
	addr := peer(r.RemoteAddr)
	if len(p) == 0 || !addr.IsValid() || !p.trusted(addr) {
		return addr
	}
	var hops []string
	for _, h := range r.Header.Values("X-Forwarded-For") {
		hops = append(hops, strings.Split(h, ",")...)
	}
	for i := len(hops) - 1; i >= 0; i-- {
		hop := peer(strings.TrimSpace(hops[i]))
		if !hop.IsValid() {
			return addr
		}
		addr = hop
		if !p.trusted(addr) {
			return addr
		}
	}
	return addr
}

// peer parses "host:port", "[v6]:port" or a bare address.
func peer(s string) netip.Addr {
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap.Addr().Unmap()
	}
	if h, _, err := net.SplitHostPort(s); err == nil {
		s = h
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Addr{}
	}
	return a.WithZone("").Unmap()
}

// SourceKey is the key a client address is limited under: the address itself for IPv4, its
// /64 for IPv6 (one host usually holds a whole /64, RFC 4291 §2.5.1, and picks addresses in
// it freely, RFC 8981).
func SourceKey(a netip.Addr) string {
	if a.Is6() {
		p, _ := a.Prefix(64)
		return p.String()
	}
	return a.String()
}

// SourceKeyOf is SourceKey of an address in text ("192.0.2.1", "2001:db8::1"); text that is
// no address is its own key.
func SourceKeyOf(s string) string {
	if a := peer(s); a.IsValid() {
		return SourceKey(a)
	}
	return s
}
