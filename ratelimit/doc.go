// Package ratelimit holds the service's limits on what one client may ask for: token buckets
// per key (golang.org/x/time/rate) for request rates, failure counters per key for lockouts
// (failed authentications, password guesses), both in a table of bounded size so that a flood
// of distinct keys (source addresses, account names) cannot grow memory without bound, and the
// client address a limit is keyed on (the socket's peer, or X-Forwarded-For behind a proxy an
// administrator trusts). Every decision says whether it is the first refusal of its key in the
// current reporting window, so that callers audit a lockout once per window and not once per
// request. The clock is injected (docs/architecture.md, rule 9).
//
// It is a leaf: it imports nothing of this module, so every edge may use it.
package ratelimit
