package ratelimit

import (
	"net"
	"net/http"
	"net/netip"
)

// Refused answers a request its limit refused; d says when to come back and whether to
// audit it.
type Refused func(w http.ResponseWriter, r *http.Request, client netip.Addr, d Decision)

// Handler wraps next. Each request's RemoteAddr becomes its client's address (ClientAddr: the
// peer, or the client behind a trusted proxy), so that next logs and audits the same address
// the limit keys on; then, when lim is not nil and refuses the client's source (SourceKey),
// refused answers instead of next.
func (p Proxies) Handler(lim *Limiter, refused Refused, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		client := p.Rewrite(r)
		if lim != nil {
			if d := lim.Allow(SourceKey(client)); !d.Allowed {
				refused(w, r, client, d)
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

// Rewrite sets r.RemoteAddr to the client's address (ClientAddr) when a trusted proxy stands
// between, with port 0 (the client's port is not known), and returns that address.
func (p Proxies) Rewrite(r *http.Request) netip.Addr {
	client := p.ClientAddr(r)
	if client.IsValid() && client != peer(r.RemoteAddr) {
		r.RemoteAddr = net.JoinHostPort(client.String(), "0")
	}
	return client
}

// TooMany answers 429 Too Many Requests (RFC 6585 §4) with Retry-After and msg.
func TooMany(w http.ResponseWriter, d Decision, msg string) {
	w.Header().Set("Retry-After", RetryAfterSeconds(d.RetryAfter))
	http.Error(w, msg, http.StatusTooManyRequests)
}
