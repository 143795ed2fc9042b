package ratelimit

import (
	"fmt"
	"math"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Decision is the answer to one request.
type Decision struct {
	Allowed bool
	// RetryAfter is when a refused request may be tried again (rounded up to whole seconds
	// for the Retry-After header of RFC 9110 §10.2.3 by RetryAfterSeconds).
	RetryAfter time.Duration
	// Report is set on the first refusal of the key in the reporting window: the caller
	// records an audit event for it then, and only then.
	Report bool
	// Suppressed counts the refusals of the key since the last reported one.
	Suppressed int
}

// RetryAfterSeconds is d in whole seconds, rounded up, at least 1: the value of a Retry-After
// header (RFC 9110 §10.2.3).
func RetryAfterSeconds(d time.Duration) string {
	s := int64(math.Ceil(d.Seconds()))
	if s < 1 {
		s = 1
	}
	return fmt.Sprint(s)
}

// Rate is a token bucket: Burst requests at once, refilled at PerSecond.
type Rate struct {
	PerSecond float64
	Burst     int
}

// Options configure a Limiter.
type Options struct {
	Rate     Rate
	Capacity int              // keys held at most; default DefaultCapacity
	Report   time.Duration    // the reporting window; default one minute
	Now      func() time.Time // default time.Now
}

// Limiter limits the rate of requests per key (a client address, an account).
type Limiter struct {
	mu   sync.Mutex
	opt  Options
	keys *table[*bucket]
}

type bucket struct {
	lim     *rate.Limiter
	refused reporter
}

// reporter says which refusals of a key are reported: the first in each window.
type reporter struct {
	until time.Time
	count int
}

func (r *reporter) refuse(now time.Time, window time.Duration) (report bool, suppressed int) {
	if now.Before(r.until) {
		r.count++
		return false, 0
	}
	suppressed, r.count = r.count, 0
	r.until = now.Add(window)
	return true, suppressed
}

func defaults(capacity *int, report *time.Duration, now *func() time.Time) {
	if *capacity <= 0 {
		*capacity = DefaultCapacity
	}
	if *report <= 0 {
		*report = time.Minute
	}
	if *now == nil {
		*now = time.Now
	}
}

// NewLimiter returns a Limiter; it fails on a rate that allows nothing.
func NewLimiter(o Options) (*Limiter, error) {
	if o.Rate.PerSecond <= 0 || o.Rate.Burst < 1 {
		return nil, fmt.Errorf("ratelimit: rate %+v allows nothing (want a positive rate and a burst of at least 1)", o.Rate)
	}
	defaults(&o.Capacity, &o.Report, &o.Now)
	return &Limiter{opt: o, keys: newTable[*bucket](o.Capacity)}, nil
}

// Allow takes one request of key from its bucket.
func (l *Limiter) Allow(key string) Decision {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.opt.Now()
	b := l.keys.get(key, func() *bucket {
		return &bucket{lim: rate.NewLimiter(rate.Limit(l.opt.Rate.PerSecond), l.opt.Rate.Burst)}
	})
	r := b.lim.ReserveN(now, 1)
	if d := r.DelayFrom(now); d > 0 {
		r.CancelAt(now) // a refused request takes no token
		report, n := b.refused.refuse(now, l.opt.Report)
		return Decision{RetryAfter: d, Report: report, Suppressed: n}
	}
	return Decision{Allowed: true}
}

// Len is the number of keys held.
func (l *Limiter) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.keys.len()
}
