package ldap

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	goldap "github.com/go-ldap/ldap/v3"
	"github.com/jcmturner/gokrb5/v8/krberror"
)

// Redial backoff after a failed dial: calls made before the next attempt is due fail at once with
// ErrUnavailable instead of hammering a DC that is down.
const (
	minBackoff = 100 * time.Millisecond
	maxBackoff = 2 * time.Second
)

// Client is a pool of connections to one domain controller (Config.Connections), shared by concurrent
// callers: each request goes to the next connection in turn, and a connection that is not there yet (or
// was lost) is dialled. Its methods are safe for concurrent use. Values it returns (entries, accounts)
// may be shared with its cache: treat them as read-only.
type Client struct {
	cfg Config
	ep  endpoint
	now func() time.Time

	dialSem chan struct{} // one dial at a time; a channel so waiters can give up on their ctx
	next    atomic.Uint32 // the slot the next request takes (mod len(conns))

	mu       sync.Mutex
	conns    []*goldap.Conn // the pool's slots; nil: not dialled, or lost
	root     RootDSE
	closed   bool
	lost     bool // a connection was lost since the last dial: the next successful dial says so
	nextDial time.Time
	backoff  time.Duration
	dialErr  error

	cache                    *cache
	hits, misses, roundTrips atomic.Int64
	dialTrips                atomic.Int64 // StartTLS, bind and RootDSE of the pool's dials
	failures                 atomic.Int64 // calls that failed because the DC could not be reached or did not answer
}

// RootDSE holds the naming contexts read from the DC's RootDSE when connecting.
type RootDSE struct {
	DefaultNamingContext       string // DC=corp,DC=example,DC=test
	ConfigurationNamingContext string // CN=Configuration,DC=corp,...
	SchemaNamingContext        string
	DNSHostName                string // of the DC
	DomainDNS                  string // corp.example.test, from DefaultNamingContext
}

// CacheStats counts cache lookups and the LDAP requests sent, so tests can prove that a cache hit costs
// no round trip: RoundTrips are the requests made for callers (a password check's own connection, its
// StartTLS and bind included), DialTrips those of dialling the pool's connections (StartTLS, bind,
// RootDSE); and the pool's live connections.
type CacheStats struct {
	Hits, Misses, RoundTrips, DialTrips int64
	// Failures are calls that failed with ErrUnavailable: no connection, a lost one or no answer
	// in time (not the directory's own refusals, such as a wrong password).
	Failures    int64
	Connections int
}

// Dial validates cfg, connects, binds and reads the RootDSE. It fails with an error wrapping ErrUnavailable
// when the DC cannot be reached or TLS fails, ErrBind when the credentials are refused, or a plain error
// naming the bad Config field.
func Dial(ctx context.Context, cfg Config) (*Client, error) {
	ep, err := cfg.validate()
	if err != nil {
		return nil, err
	}
	c := &Client{cfg: cfg, ep: ep, now: time.Now, dialSem: make(chan struct{}, 1), conns: make([]*goldap.Conn, cfg.Connections)}
	c.cache = newCache(cfg.CacheTTL, func() time.Time { return c.now() })
	conn, root, err := c.dial(ctx)
	if err != nil {
		return nil, fmt.Errorf("ldap: %w", err)
	}
	c.conns[0], c.root = conn, root
	return c, nil
}

// Close closes the connections; later calls fail with ErrUnavailable.
func (c *Client) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	var errs []error
	for i, conn := range c.conns {
		if conn != nil {
			errs = append(errs, conn.Close())
			c.conns[i] = nil
		}
	}
	return errors.Join(errs...)
}

// RootDSE returns the naming contexts read when the connection was (re)established.
func (c *Client) RootDSE() RootDSE {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.root
}

// Ping reads the RootDSE: a cheap check that the directory answers. It redials if the connection died, so a
// successful Ping after an outage means the Client works again.
func (c *Client) Ping(ctx context.Context) error {
	_, err := c.search(ctx, "ping", searchSpec{scope: goldap.ScopeBaseObject, filter: "(objectClass=*)",
		attrs: []string{"dnsHostName"}})
	return err
}

// Stats returns cache and round-trip counters since Dial, and the live connections now.
func (c *Client) Stats() CacheStats {
	st := CacheStats{Hits: c.hits.Load(), Misses: c.misses.Load(), RoundTrips: c.roundTrips.Load(), DialTrips: c.dialTrips.Load(),
		Failures: c.failures.Load()}
	c.mu.Lock()
	for _, conn := range c.conns {
		if conn != nil && !conn.IsClosing() {
			st.Connections++
		}
	}
	c.mu.Unlock()
	return st
}

// Invalidate drops every cached template, enrollment service and account.
func (c *Client) Invalidate() { c.cache.clear() }

// do sends one request on a connection of the pool and is, with dial, the only place that does:
// RoundTrips counts here. The whole call, including a redial, takes at most cfg.Timeout (or less if ctx
// says so). On a network error or a timeout it drops the connection; if that connection was not freshly
// dialed by this call, time is left and retry is set, it redials once and sends the request again, so a
// DC restart is invisible to callers. Requests passed with retry must be idempotent.
func (c *Client) do(ctx context.Context, op string, retry bool, f func(*goldap.Conn) error) error {
	return c.doOn(ctx, op, retry, nil, f)
}

// countFailure counts err in Failures when it says the DC could not be reached; it returns err.
func (c *Client) countFailure(err error) error {
	if errors.Is(err, ErrUnavailable) {
		c.failures.Add(1)
	}
	return err
}

// doOn is do on the connection pinned, when it is not nil (a paged search's later pages: the
// cookie belongs to the connection of the first); it is never redialled nor retried.
func (c *Client) doOn(ctx context.Context, op string, retry bool, pinned *goldap.Conn, f func(*goldap.Conn) error) error {
	return c.countFailure(c.tryOn(ctx, op, retry, pinned, f))
}

func (c *Client) tryOn(ctx context.Context, op string, retry bool, pinned *goldap.Conn, f func(*goldap.Conn) error) error {
	opCtx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()
	for attempt := 0; ; attempt++ {
		conn, fresh := pinned, false
		if conn == nil {
			var err error
			if conn, fresh, err = c.getConn(opCtx); err != nil {
				return fmt.Errorf("ldap: %s: %w", op, err)
			}
		} else if conn.IsClosing() {
			return unavailable(op, errors.New("the connection of the search's first page was lost"))
		}
		c.roundTrips.Add(1)
		err := runCtx(opCtx, func() error { return f(conn) })
		switch {
		case err == nil:
			return nil
		case ctx.Err() != nil: // the caller gave up; nothing says the connection is bad
			return unavailable(op, ctx.Err())
		case opCtx.Err() != nil: // no answer within the timeout: the DC hangs
			c.drop(conn, err)
			return unavailable(op, fmt.Errorf("no answer within %v: %w", c.cfg.Timeout, err))
		case !isNetworkError(err):
			return fmt.Errorf("ldap: %s: %w", op, err)
		}
		c.drop(conn, err)
		if fresh || attempt > 0 || !retry || pinned != nil {
			return unavailable(op, err)
		}
	}
}

// runCtx runs f and returns its error, or ctx's error as soon as ctx is done. f keeps running in the
// background until the connection's own request timeout ends it.
func runCtx(ctx context.Context, f func() error) error {
	if ctx.Done() == nil {
		return f()
	}
	ch := make(chan error, 1)
	go func() { ch <- f() }()
	select {
	case err := <-ch:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// getConn returns the live connection of the next slot of the pool, or dials one for it (at most one dial
// in flight; respecting backoff). fresh reports that this call dialed it.
func (c *Client) getConn(ctx context.Context) (conn *goldap.Conn, fresh bool, err error) {
	slot := int(c.next.Add(1)-1) % len(c.conns)
	if conn, err := c.liveConn(slot); conn != nil || err != nil {
		return conn, false, err
	}
	select {
	case c.dialSem <- struct{}{}:
	case <-ctx.Done():
		return nil, false, fmt.Errorf("%w: %w", ErrUnavailable, ctx.Err())
	}
	defer func() { <-c.dialSem }()
	// Someone else may have dialed while we waited.
	if conn, err := c.liveConn(slot); conn != nil || err != nil {
		return conn, false, err
	}
	c.mu.Lock()
	if wait := c.nextDial.Sub(time.Now()); wait > 0 {
		last := c.dialErr
		c.mu.Unlock()
		return nil, false, fmt.Errorf("next reconnect in %v, the last one failed: %w", wait.Round(time.Millisecond), last)
	}
	c.mu.Unlock()

	conn, root, err := c.dial(ctx)
	c.mu.Lock()
	defer c.mu.Unlock()
	if err != nil && errors.Is(ctx.Err(), context.Canceled) {
		return nil, false, err // the caller gave up: not the DC's fault, no backoff
	}
	if err != nil {
		c.backoff = min(max(2*c.backoff, minBackoff), maxBackoff)
		c.nextDial = time.Now().Add(c.backoff)
		c.dialErr = err
		return nil, false, err
	}
	if c.closed {
		conn.Close()
		return nil, false, fmt.Errorf("%w: client closed", ErrUnavailable)
	}
	if c.lost {
		c.cfg.Logger.Info("directory reconnected", "url", c.cfg.URL)
		c.lost = false
	}
	c.conns[slot], c.root, c.backoff, c.nextDial, c.dialErr = conn, root, 0, time.Time{}, nil
	return conn, true, nil
}

func (c *Client) liveConn(slot int) (*goldap.Conn, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, fmt.Errorf("%w: client closed", ErrUnavailable)
	}
	if conn := c.conns[slot]; conn != nil && !conn.IsClosing() {
		return conn, nil
	}
	return nil, nil
}

// drop forgets conn after a network error, so the next call on its slot redials.
func (c *Client) drop(conn *goldap.Conn, cause error) {
	c.mu.Lock()
	for i, have := range c.conns {
		if have == conn {
			c.conns[i] = nil
			if !c.lost {
				c.cfg.Logger.Warn("directory connection lost", "url", c.cfg.URL, "err", cause)
			}
			c.lost = true
		}
	}
	c.mu.Unlock()
	conn.Close()
}

// dial connects (TLS from the first byte for ldaps, StartTLS for ldap), binds and reads the RootDSE, all
// within cfg.Timeout (or ctx's deadline if sooner).
func (c *Client) dial(ctx context.Context) (*goldap.Conn, RootDSE, error) {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()
	var root RootDSE
	raw, err := (&net.Dialer{}).DialContext(ctx, "tcp", c.ep.hostPort)
	if err != nil {
		return nil, root, fmt.Errorf("dial %s: %w: %w", c.cfg.URL, ErrUnavailable, err)
	}
	deadline, _ := ctx.Deadline()
	// The deadline covers the TLS handshake and the bind, which go-ldap cannot bound by itself.
	raw.SetDeadline(deadline)
	var conn *goldap.Conn
	if c.ep.ldaps {
		tc := tls.Client(raw, c.ep.tls)
		if err := tc.HandshakeContext(ctx); err != nil {
			raw.Close()
			return nil, root, fmt.Errorf("TLS with %s: %w: %w", c.cfg.URL, ErrUnavailable, err)
		}
		conn = goldap.NewConn(tc, true)
	} else {
		conn = goldap.NewConn(raw, false)
	}
	conn.Start()
	conn.SetTimeout(c.cfg.Timeout)
	fail := func(err error) (*goldap.Conn, RootDSE, error) {
		conn.Close()
		return nil, root, err
	}
	if !c.ep.ldaps {
		c.dialTrips.Add(1)
		if err := conn.StartTLS(c.ep.tls); err != nil {
			return fail(fmt.Errorf("StartTLS with %s: %w: %w", c.cfg.URL, ErrUnavailable, err))
		}
	}
	c.dialTrips.Add(1)
	bind, as := func() error { return simpleBind(conn, c.cfg.BindUser, c.cfg.Password) }, c.cfg.BindUser
	if c.ep.krb != nil {
		bind, as = func() error { return c.ep.krb.bind(conn) }, c.cfg.Principal+" (Kerberos)"
	}
	if err := bind(); err != nil {
		kind := ErrBind // the DC answered and said no
		var le *goldap.Error
		if errors.Is(err, errInsecureBind) {
			return fail(fmt.Errorf("bind to %s as %s: %w", c.cfg.URL, as, err))
		} else if kerr, ok := asKerberosError(err); ok {
			if kerr.RootCause == krberror.NetworkingError { // the KDC did not answer
				kind = ErrUnavailable
			}
		} else if !errors.As(err, &le) || le.ResultCode == goldap.ErrorNetwork {
			kind = ErrUnavailable
		}
		return fail(fmt.Errorf("bind to %s as %s: %w: %w", c.cfg.URL, as, kind, err))
	}
	c.dialTrips.Add(1)
	res, err := conn.Search(goldap.NewSearchRequest("", goldap.ScopeBaseObject, goldap.NeverDerefAliases, 0, 0,
		false, "(objectClass=*)", []string{"defaultNamingContext", "configurationNamingContext",
			"schemaNamingContext", "dnsHostName"}, nil))
	if err != nil {
		return fail(fmt.Errorf("reading RootDSE of %s: %w: %w", c.cfg.URL, ErrUnavailable, err))
	}
	if len(res.Entries) != 1 {
		return fail(fmt.Errorf("reading RootDSE of %s: %w: %d entries", c.cfg.URL, ErrUnavailable, len(res.Entries)))
	}
	e := res.Entries[0]
	root = RootDSE{
		DefaultNamingContext:       e.GetAttributeValue("defaultNamingContext"),
		ConfigurationNamingContext: e.GetAttributeValue("configurationNamingContext"),
		SchemaNamingContext:        e.GetAttributeValue("schemaNamingContext"),
		DNSHostName:                e.GetAttributeValue("dnsHostName"),
	}
	root.DomainDNS = dnsFromDN(root.DefaultNamingContext)
	if root.DefaultNamingContext == "" || root.ConfigurationNamingContext == "" {
		return fail(fmt.Errorf("RootDSE of %s lacks naming contexts: is it an Active Directory DC?", c.cfg.URL))
	}
	raw.SetDeadline(time.Time{})
	return conn, root, nil
}

var errInsecureBind = errors.New("refusing to send a password over an unencrypted connection")

// simpleBind refuses to send a password over a connection that is not encrypted.
func simpleBind(conn *goldap.Conn, user, password string) error {
	if _, ok := conn.TLSConnectionState(); !ok {
		return errInsecureBind
	}
	return conn.Bind(user, password)
}

// dnsFromDN turns DC=corp,DC=example,DC=test into corp.example.test.
func dnsFromDN(dn string) string {
	parsed, err := goldap.ParseDN(dn)
	if err != nil {
		return ""
	}
	var labels []string
	for _, rdn := range parsed.RDNs {
		for _, a := range rdn.Attributes {
			if strings.EqualFold(a.Type, "DC") {
				labels = append(labels, a.Value)
			}
		}
	}
	return strings.ToLower(strings.Join(labels, "."))
}
