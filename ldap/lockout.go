package ldap

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	goldap "github.com/go-ldap/ldap/v3"

	"github.com/enrollment-appliance/aeappliance/ldap/secdesc"
	"github.com/enrollment-appliance/aeappliance/ratelimit"
)

// LockoutPolicy is the domain's account lockout policy: the lockoutThreshold and
// lockoutObservationWindow attributes of the domain object, the defaultNamingContext (MS-ADA2).
type LockoutPolicy struct {
	Threshold int           // wrong passwords that lock an account out; 0: none ever does
	Window    time.Duration // lockoutObservationWindow: badPwdCount restarts after it passes without a failure
}

// LockoutPolicy reads the domain's lockout policy.
func (c *Client) LockoutPolicy(ctx context.Context) (LockoutPolicy, error) {
	entries, err := c.search(ctx, "read the lockout policy", searchSpec{base: c.RootDSE().DefaultNamingContext,
		scope: goldap.ScopeBaseObject, filter: "(objectClass=*)", attrs: []string{"lockoutThreshold", "lockoutObservationWindow"}})
	if err != nil {
		return LockoutPolicy{}, err
	}
	if len(entries) != 1 {
		return LockoutPolicy{}, fmt.Errorf("ldap: the domain object %s was not found: %w", c.RootDSE().DefaultNamingContext, ErrNotFound)
	}
	return parseLockoutPolicy(entries[0].Get("lockoutThreshold"), entries[0].Get("lockoutObservationWindow"))
}

// parseLockoutPolicy reads the attributes' values: a count, and an interval in 100 ns units,
// stored negative (MS-ADA2 lockoutObservationWindow).
func parseLockoutPolicy(threshold, window string) (LockoutPolicy, error) {
	var p LockoutPolicy
	if threshold != "" {
		n, err := strconv.Atoi(threshold)
		if err != nil || n < 0 {
			return p, fmt.Errorf("ldap: lockoutThreshold %q is not a count", threshold)
		}
		p.Threshold = n
	}
	if window != "" {
		n, err := strconv.ParseInt(window, 10, 64)
		if err != nil {
			return p, fmt.Errorf("ldap: lockoutObservationWindow %q is not an interval", window)
		}
		if n < 0 {
			n = -n
		}
		p.Window = time.Duration(n) * 100
	}
	return p, nil
}

// BindCandidates are the SIDs of every account a simple bind as user may authenticate: for a
// UPN (name@domain), the accounts with that explicit userPrincipalName and the one whose
// sAMAccountName is name (its implicit UPN); for DOMAIN\name, the sAMAccountName. It errs on
// the side of more accounts: a failure is counted against each of them.
func (c *Client) BindCandidates(ctx context.Context, user string) ([]secdesc.SID, error) {
	name, _, upn := strings.Cut(user, "@")
	filter := "(sAMAccountName=" + goldap.EscapeFilter(name) + ")"
	if upn {
		filter = "(|(userPrincipalName=" + goldap.EscapeFilter(user) + ")" + filter + ")"
	} else if _, n, ok := strings.Cut(user, `\`); ok {
		filter = "(sAMAccountName=" + goldap.EscapeFilter(n) + ")"
	}
	entries, err := c.search(ctx, "find the accounts a bind name may mean", searchSpec{base: c.RootDSE().DefaultNamingContext,
		scope: goldap.ScopeWholeSubtree, filter: "(&(objectClass=user)" + filter + ")", attrs: []string{"objectSid"}})
	if err != nil {
		return nil, err
	}
	var sids []secdesc.SID
	for _, e := range entries {
		if sid, err := secdesc.DecodeSID([]byte(e.Get("objectSid"))); err == nil {
			sids = append(sids, sid)
		}
	}
	return sids, nil
}

// PasswordDirectory is what a PasswordGuard needs of the directory (a *Client).
type PasswordDirectory interface {
	Authenticate(ctx context.Context, user, password string) (secdesc.SID, error)
	BindCandidates(ctx context.Context, user string) ([]secdesc.SID, error)
	LockoutPolicy(ctx context.Context) (LockoutPolicy, error)
}

// GuardOptions configure a PasswordGuard.
type GuardOptions struct {
	// Margin: at most Threshold-Margin wrong passwords per account reach the DC in its
	// observation window (at least one, and never Threshold itself).
	Margin int
	// NoLockoutCap wrong passwords per NoLockoutWindow reach the DC where its threshold is 0.
	NoLockoutCap    int
	NoLockoutWindow time.Duration
	Refresh         time.Duration    // how long a policy read is used
	Capacity        int              // accounts and names remembered at most (ratelimit.DefaultCapacity)
	Now             func() time.Time // default time.Now
}

// PasswordGuard checks passwords with an LDAP bind (PasswordDirectory.Authenticate), but stops
// passing wrong ones for an account to the DC before the domain's lockoutThreshold: an
// attacker who guesses online, or who wants the account locked out, gets refused here, without
// a bind, until the domain's own observation window has passed since the last wrong password
// (the way AD restarts badPwdCount). Failures are counted per account SID, against every
// account the typed name may mean (BindCandidates): the name is the attacker's to choose, and
// UPN, implicit UPN and DOMAIN\name spellings of one account must share one count. A name that
// means no account is counted under its normalised spelling, in a table of its own, so a
// flood of invented names cannot push real accounts out of theirs.
type PasswordGuard struct {
	dir  PasswordDirectory
	opt  GuardOptions
	sids *ratelimit.Failures
	name *ratelimit.Failures

	mu      sync.Mutex
	policy  LockoutPolicy
	fetched time.Time
}

// NewPasswordGuard returns a guard in front of dir.
func NewPasswordGuard(dir PasswordDirectory, o GuardOptions) *PasswordGuard {
	if o.Now == nil {
		o.Now = time.Now
	}
	fo := ratelimit.FailureOptions{Sliding: true, Capacity: o.Capacity, Now: o.Now}
	return &PasswordGuard{dir: dir, opt: o, sids: ratelimit.NewFailures(fo), name: ratelimit.NewFailures(fo)}
}

// PasswordsStopped is the error of an attempt refused without a bind.
type PasswordsStopped struct {
	Account   string // the SID, or the normalised name that means no account
	Threshold int    // the domain's; 0: none
	Decision  ratelimit.Decision
}

func (e *PasswordsStopped) Error() string {
	return fmt.Sprintf("ldap: too many wrong passwords for %s: further attempts are refused for %s, before the domain (threshold %d) locks the account out",
		e.Account, ratelimit.RetryAfterSeconds(e.Decision.RetryAfter)+"s", e.Threshold)
}

// Unwrap makes the error an ErrBind: the password was not accepted.
func (e *PasswordsStopped) Unwrap() error { return ErrBind }

// NormaliseBindName is the spelling of a typed bind name that failures are counted under when
// it means no account: the name without its domain, in lower case, so that user@domain,
// USER@DOMAIN and DOMAIN\user share one count however the domain is spelt.
func NormaliseBindName(user string) string {
	user = strings.TrimSpace(user)
	if name, _, ok := strings.Cut(user, "@"); ok {
		user = name
	} else if _, name, ok := strings.Cut(user, `\`); ok {
		user = name
	}
	return strings.ToLower(user)
}

// limits is the count and window for policy p.
func (g *PasswordGuard) limits(p LockoutPolicy) (int, time.Duration) {
	if p.Threshold == 0 {
		return g.opt.NoLockoutCap, g.opt.NoLockoutWindow
	}
	allowed := p.Threshold - g.opt.Margin
	if allowed < 1 {
		allowed = p.Threshold - 1 // one wrong password left to the user; 0 with a threshold of 1
	}
	w := p.Window
	if w <= 0 {
		w = 24 * time.Hour // no window read: count as if failures were remembered for a day
	}
	return allowed, w
}

func (g *PasswordGuard) currentPolicy(ctx context.Context) (LockoutPolicy, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	now := g.opt.Now()
	if !g.fetched.IsZero() && now.Sub(g.fetched) < g.opt.Refresh {
		return g.policy, nil
	}
	p, err := g.dir.LockoutPolicy(ctx)
	if err != nil {
		if !g.fetched.IsZero() {
			return g.policy, nil // the last one read: better than none while the DC is away
		}
		return LockoutPolicy{}, err
	}
	g.policy, g.fetched = p, now
	max, window := g.limits(p)
	g.sids.SetPolicy(max, window)
	g.name.SetPolicy(max, window)
	return p, nil
}

// Authenticate is PasswordDirectory.Authenticate behind the guard. An attempt is counted as a
// failure before the bind (so that parallel guesses cannot overtake the count) and forgiven
// when the password was right or the DC did not answer.
func (g *PasswordGuard) Authenticate(ctx context.Context, user, password string) (secdesc.SID, error) {
	if password == "" || !strings.ContainsAny(user, `@\`) {
		return g.dir.Authenticate(ctx, user, password) // refused without a bind: nothing to count
	}
	p, err := g.currentPolicy(ctx)
	if err != nil {
		return secdesc.SID{}, err
	}
	cands, err := g.dir.BindCandidates(ctx, user)
	if err != nil {
		return secdesc.SID{}, err
	}
	table, keys := g.sids, make([]string, 0, len(cands))
	for _, s := range cands {
		keys = append(keys, s.String())
	}
	if len(keys) == 0 {
		table, keys = g.name, []string{NormaliseBindName(user)}
	}
	for i, k := range keys {
		if d := table.Attempt(k); !d.Allowed {
			for _, done := range keys[:i] {
				table.Forgive(done)
			}
			return secdesc.SID{}, &PasswordsStopped{Account: k, Threshold: p.Threshold, Decision: d}
		}
	}
	sid, err := g.dir.Authenticate(ctx, user, password)
	switch {
	case err == nil:
		for _, k := range keys {
			if k == sid.String() {
				table.Reset(k) // AD sets badPwdCount to 0 on a successful logon
			} else {
				table.Forgive(k)
			}
		}
	case !errors.Is(err, ErrBind): // the DC did not judge the password
		for _, k := range keys {
			table.Forgive(k)
		}
	}
	return sid, err
}
