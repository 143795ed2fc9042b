package ratelimit

import (
	"sync"
	"time"
)

// FailureOptions configure a Failures counter.
type FailureOptions struct {
	Max    int           // failures after which a key is locked out
	Window time.Duration // how long failures count
	// Sliding: the window runs from the latest failure, as Active Directory counts bad
	// passwords (badPwdCount restarts when the previous failure is older than the
	// lockoutObservationWindow, MS-ADTS 3.1.1.5.5.1.2); otherwise it runs from the first.
	Sliding  bool
	Capacity int              // keys held at most; default DefaultCapacity
	Now      func() time.Time // default time.Now
}

// Failures counts failures per key (failed authentications of one client address, wrong
// passwords for one account) and locks a key out once it has Max of them in the window. A key
// dropped from a full table starts again from no failures, so a table must be large enough
// for the keys an attacker cannot choose freely (accounts that exist), or separate from
// those he can.
type Failures struct {
	mu   sync.Mutex
	opt  FailureOptions
	keys *table[*failures]
}

type failures struct {
	count       int
	first, last time.Time
	refused     reporter
}

// NewFailures returns a Failures counter. Max below 1 locks every key out at once.
func NewFailures(o FailureOptions) *Failures {
	var report time.Duration = 1
	defaults(&o.Capacity, &report, &o.Now)
	return &Failures{opt: o, keys: newTable[*failures](o.Capacity)}
}

// SetPolicy changes Max and Window (the domain's lockout policy was read again).
func (f *Failures) SetPolicy(max int, window time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.opt.Max, f.opt.Window = max, window
}

// current is the entry of key with its expired failures forgotten, or nil.
func (f *Failures) current(key string, now time.Time) *failures {
	e, ok := f.keys.lookup(key)
	if !ok {
		return nil
	}
	from := e.first
	if f.opt.Sliding {
		from = e.last
	}
	if e.count > 0 && now.Sub(from) >= f.opt.Window {
		e.count = 0
	}
	return e
}

// until is when the lockout of e ends.
func (f *Failures) until(e *failures) time.Time {
	if f.opt.Sliding {
		return e.last.Add(f.opt.Window)
	}
	return e.first.Add(f.opt.Window)
}

// Check says whether key may try (again). A refusal is reported once per lockout window.
func (f *Failures) Check(key string) Decision {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.check(key)
}

func (f *Failures) check(key string) Decision {
	now := f.opt.Now()
	e := f.current(key, now)
	count := 0
	if e != nil {
		count = e.count
	}
	if count < f.opt.Max {
		return Decision{Allowed: true}
	}
	if e == nil { // Max < 1: locked without a failure
		e = f.keys.get(key, func() *failures { return &failures{} })
		e.first, e.last = now, now
	}
	d := Decision{RetryAfter: f.until(e).Sub(now)}
	d.Report, d.Suppressed = e.refused.refuse(now, d.RetryAfter)
	return d
}

// Fail counts a failure of key and returns how many it has in the window.
func (f *Failures) Fail(key string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.fail(key)
}

func (f *Failures) fail(key string) int {
	now := f.opt.Now()
	e := f.current(key, now)
	if e == nil {
		e = f.keys.get(key, func() *failures { return &failures{} })
	} else {
		f.keys.get(key, nil) // most recently used
	}
	if e.count == 0 {
		e.first = now
		e.refused = reporter{}
	}
	e.count++
	e.last = now
	return e.count
}

// Reset forgets the failures of key (it authenticated).
func (f *Failures) Reset(key string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.keys.remove(key)
}

// Len is the number of keys held.
func (f *Failures) Len() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.keys.len()
}

// Attempt is Check and, when allowed, Fail in one step: the attempt counts as a failure until
// Forgive or Reset, so that attempts made in parallel cannot all pass the check before any
// of them is counted.
func (f *Failures) Attempt(key string) Decision {
	f.mu.Lock()
	defer f.mu.Unlock()
	if d := f.check(key); !d.Allowed {
		return d
	}
	f.fail(key)
	return Decision{Allowed: true}
}

// Forgive takes back one failure of key (an Attempt that turned out not to be one).
func (f *Failures) Forgive(key string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if e := f.current(key, f.opt.Now()); e != nil && e.count > 0 {
		e.count--
	}
}
