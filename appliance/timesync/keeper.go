package timesync

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode/utf8"
)

// Defaults of the Keeper's fields.
const (
	DefaultInterval      = 15 * time.Minute
	DefaultStepThreshold = 128 * time.Millisecond // as ntpd's and chrony's makestep
	DefaultTimeout       = 5 * time.Second
)

// retries are the first waits after a failed sync; later ones double, up to the Interval.
var retries = []time.Duration{10 * time.Second, 30 * time.Second, time.Minute}

// Keeper keeps Clock synchronised with the best of Servers. Set its fields, then call
// Run or SyncOnce; do not copy it after that.
type Keeper struct {
	Servers []string // "host", "host:port" or "[v6]:port"
	Clock   Clock    // SystemClock{} when nil
	// Interval between syncs: DefaultInterval when zero. While syncs fail, retries come
	// sooner: 10s, 30s, 1m, 2m, 4m, ... up to Interval.
	Interval time.Duration
	// StepThreshold: offsets larger than this (either way) are stepped, smaller ones
	// slewed. DefaultStepThreshold when zero.
	StepThreshold time.Duration
	Timeout       time.Duration // for one query: DefaultTimeout when zero
	Logger        *slog.Logger  // discards when nil

	mu     sync.Mutex
	status Status
	// refused are the servers that answered kiss-o'-death DENY or RSTR: RFC 5905 7.4
	// says to stop sending to them, so they are not asked again by this Keeper.
	refused map[string]string
}

// Status is what the Keeper has achieved so far.
type Status struct {
	Servers []string
	Synced  bool      // a sync has succeeded (it stays true while later ones fail)
	Last    Result    // the last successful sync
	LastErr error     // why the most recent sync failed; nil if it succeeded
	LastTry time.Time // when the most recent sync ended, by the Keeper's Clock
}

// Status is safe to call while Run runs.
func (k *Keeper) Status() Status {
	k.mu.Lock()
	defer k.mu.Unlock()
	s := k.status
	s.Servers = slices.Clone(k.Servers)
	return s
}

func (k *Keeper) clock() Clock {
	if k.Clock == nil {
		return SystemClock{Log: k.Logger}
	}
	return k.Clock
}

func (k *Keeper) log() *slog.Logger {
	if k.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return k.Logger
}

func orDefault(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d
}

// Run syncs now, then every Interval (sooner while failing) until ctx is done.
// Without servers it only records that and waits for ctx.
func (k *Keeper) Run(ctx context.Context) {
	interval := orDefault(k.Interval, DefaultInterval)
	for failures := 0; ; {
		_, err := k.SyncOnce(ctx)
		if ctx.Err() != nil {
			return
		}
		if errors.Is(err, ErrNoServers) {
			<-ctx.Done()
			return
		}
		wait := interval
		if err != nil {
			wait = retryDelay(failures, interval)
			failures++
		} else {
			failures = 0
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// retryDelay is the wait after the failures+1'th failed sync in a row.
func retryDelay(failures int, interval time.Duration) time.Duration {
	if failures < len(retries) {
		return min(retries[failures], interval)
	}
	d := retries[len(retries)-1]
	for i := len(retries) - 1; i < failures && d < interval; i++ {
		d *= 2
	}
	return min(d, interval)
}

// SyncOnce asks the servers (Best), then steps or slews the Clock by the offset of the
// best answer, and records the outcome for Status.
func (k *Keeper) SyncOnce(ctx context.Context) (Result, error) {
	r, err := k.sync(ctx)
	log := k.log()
	if err != nil {
		log.Warn("clock not synchronised", "err", err)
	}
	now := k.clock().Now()
	k.mu.Lock()
	defer k.mu.Unlock()
	k.status.LastTry = now
	k.status.LastErr = err
	if err == nil {
		k.status.Synced = true
		k.status.Last = r
	}
	return r, err
}

func (k *Keeper) sync(ctx context.Context) (Result, error) {
	if len(k.Servers) == 0 {
		return Result{}, ErrNoServers
	}
	var servers []string
	k.mu.Lock()
	for _, s := range k.Servers {
		if _, ok := k.refused[ServerAddr(s)]; !ok {
			servers = append(servers, s)
		}
	}
	k.mu.Unlock()
	if len(servers) == 0 {
		return Result{}, errors.New("every NTP server refused service (kiss-o'-death)")
	}
	r, errs := Best(ctx, servers, orDefault(k.Timeout, DefaultTimeout))
	log := k.log()
	for _, err := range errs {
		var qe *QueryError
		var kiss *KissError
		if errors.As(err, &qe) && errors.As(err, &kiss) && (kiss.Code == "DENY" || kiss.Code == "RSTR") {
			log.Warn("NTP server refuses service; not asking it again", "server", qe.Server, "code", kiss.Code)
			k.mu.Lock()
			if k.refused == nil {
				k.refused = map[string]string{}
			}
			k.refused[qe.Server] = kiss.Code
			k.mu.Unlock()
		}
	}
	if r.Server == "" {
		return Result{}, errors.Join(errs...)
	}
	for _, err := range errs {
		log.Debug("NTP server failed", "err", err)
	}
	clock := k.clock()
	if abs(r.Offset) > orDefault(k.StepThreshold, DefaultStepThreshold) {
		if err := clock.Step(r.Offset); err != nil {
			return r, err
		}
		log.Info("clock stepped", "server", r.Server, "offset", r.Offset, "stratum", r.Stratum, "rtt", r.RTT)
	} else {
		if err := clock.Slew(r.Offset); err != nil {
			return r, err
		}
		log.Debug("clock slewed", "server", r.Server, "offset", r.Offset, "stratum", r.Stratum, "rtt", r.RTT)
	}
	return r, nil
}

func abs(d time.Duration) time.Duration {
	if d < 0 {
		return -d
	}
	return d
}

// maxLine is the longest String, in characters: one console line with room to spare.
const maxLine = 69

// String is one console line of under 70 characters, e.g.
// "synchronised with 10.0.2.2:123 (stratum 2, offset +1.2ms, 3m ago)".
func (s Status) String() string { return s.StringAt(time.Now()) }

// StringAt is String as seen at now.
func (s Status) StringAt(now time.Time) string {
	switch {
	case len(s.Servers) == 0:
		return ErrNoServers.Error()
	case s.Synced && s.LastErr == nil:
		tail := fmt.Sprintf(" (stratum %d, offset %s, %s)", s.Last.Stratum, fmtOffset(s.Last.Offset), ago(now.Sub(s.Last.At)))
		const head = "synchronised with "
		return head + shorten(s.Last.Server, maxLine-len(head)-len(tail)) + tail
	case s.Synced:
		return shorten(fmt.Sprintf("synchronised %s, now failing: %s", ago(now.Sub(s.Last.At)), oneLine(s.LastErr)), maxLine)
	case s.LastErr != nil:
		return shorten("not synchronised: "+oneLine(s.LastErr), maxLine)
	default:
		return "not synchronised yet"
	}
}

func oneLine(err error) string { return strings.ReplaceAll(err.Error(), "\n", "; ") }

// shorten cuts s to n characters, ending it with "..." when cut.
func shorten(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	r := []rune(s)
	return string(r[:max(n-3, 0)]) + "..."
}

// fmtOffset is a signed, short duration in ASCII: "+350us", "-1.2ms", "+90.0s", "+1h2m3s".
func fmtOffset(d time.Duration) string {
	sign := "+"
	if d < 0 {
		sign, d = "-", -d
	}
	switch {
	case d < time.Millisecond:
		return fmt.Sprintf("%s%dus", sign, d.Microseconds())
	case d < time.Second:
		return fmt.Sprintf("%s%.1fms", sign, float64(d)/float64(time.Millisecond))
	case d < time.Minute:
		return fmt.Sprintf("%s%.1fs", sign, d.Seconds())
	default:
		return sign + d.Round(time.Second).String()
	}
}

// ago is "just now", "45s ago", "3m ago", "5h ago" or "2d ago".
func ago(d time.Duration) string {
	switch {
	case d < time.Second:
		return "just now"
	case d < time.Minute:
		return fmt.Sprintf("%ds ago", int(d/time.Second))
	case d < time.Hour:
		return fmt.Sprintf("%dm ago", int(d/time.Minute))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh ago", int(d/time.Hour))
	default:
		return fmt.Sprintf("%dd ago", int(d/(24*time.Hour)))
	}
}
