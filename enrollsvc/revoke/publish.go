package revoke

import (
	"context"
	"crypto"
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"sync"
	"sync/atomic"
	"time"

	"github.com/enrollment-appliance/aeappliance/proto/certutil"
)

// NumberStore hands out CRL numbers (enrollsvc/store implements it).
type NumberStore interface {
	// NextCRLNumber returns a CRL number greater than every number it handed out before, and
	// keeps it durably, so that numbers keep increasing across restarts. Full and delta CRLs
	// draw from the same sequence (RFC 5280 5.2.3).
	NextCRLNumber(ctx context.Context) (*big.Int, error)
}

// PublisherOptions configure a Publisher. The defaults follow AD CS: a full CRL valid one week,
// published twice as often (so a fresh one is out half-way through the life of the last, the
// rest being overlap), and a delta CRL valid one day, published every 12 hours.
type PublisherOptions struct {
	CA     *x509.Certificate
	Signer crypto.Signer // the CA key
	// FullValidity is nextUpdate - thisUpdate of full CRLs (default 7 days); FullInterval is
	// how often one is published (default half of FullValidity). Likewise for delta CRLs
	// (defaults 1 day and 12 hours). Each interval must be shorter than its validity.
	FullValidity, FullInterval   time.Duration
	DeltaValidity, DeltaInterval time.Duration
	// DeltaURLs are where the delta CRL is served, named in every full CRL's FreshestCRL
	// extension. Empty: no FreshestCRL (clients then do not look for deltas).
	DeltaURLs []string
	Now       func() time.Time // default time.Now
	// Notify, when set, is called after every attempt to publish a CRL, with the CRL or with
	// the error; the daemon records audit events with it.
	Notify func(ctx context.Context, delta bool, c *CRL, err error)
	// Shared, when set, makes this one of several publishers of the CA sharing a store: only
	// the one that leads builds and signs CRLs (and saves them); the others serve the newest
	// ones it saved.
	Shared SharedCRLs
}

// SharedCRLs is the store of several instances of one CA, as their publishers use it.
type SharedCRLs interface {
	// Lead reports whether this publisher builds the CRLs (at most one at a time does).
	Lead(ctx context.Context) (bool, error)
	// Save keeps a CRL this publisher signed for the others.
	Save(ctx context.Context, c *CRL) error
	// Latest returns the DER of the newest full and delta CRL numbered above afterFull and
	// afterDelta (nil when there is none newer).
	Latest(ctx context.Context, afterFull, afterDelta *big.Int) (full, delta []byte, err error)
}

// Defaults of PublisherOptions and the delta margin.
const (
	DefaultFullValidity  = 7 * 24 * time.Hour
	DefaultDeltaValidity = 24 * time.Hour
	// DeltaMargin: a delta CRL lists the revocations recorded since its base's thisUpdate less
	// this margin, which covers revocations committed while the base was being read and small
	// clock steps. Listing a revocation in both base and delta is harmless.
	DeltaMargin = 10 * time.Minute
	// FullWalkEvery: a full CRL carries over the entries of the previous one (BuildCRLs) unless
	// the walk over every revocation they go back to is older than this; then it walks them all.
	FullWalkEvery = 24 * time.Hour
	// retryAfter is how long Run waits after a failed publication before trying again.
	retryAfter = time.Minute
	// FollowEvery is how often Run looks for newer CRLs while another instance publishes (Shared).
	FollowEvery = time.Second
)

// Publisher builds the CRLs of one CA and holds the latest full and delta CRL in memory for the
// Handler. It is safe for concurrent use; publications are serialised.
type Publisher struct {
	src     Source
	numbers NumberStore
	o       PublisherOptions
	log     *slog.Logger
	// after is time.After; tests drive Run with a fake clock through it.
	after func(time.Duration) <-chan time.Time
	kick  chan struct{} // RequestDelta to Run

	mu        sync.Mutex // held while publishing
	last      *big.Int   // the last CRL number used, to catch a NumberStore going backwards
	built     *CRL       // the last full CRL this publisher built, for the next to carry over (nil after a failure or when following)
	cur       atomic.Pointer[published]
	following atomic.Bool // Shared: another instance published last time we asked
}

type published struct{ full, delta *CRL }

// NewPublisher checks o and applies the defaults. Nothing is published until Publish or Run.
func NewPublisher(src Source, numbers NumberStore, o PublisherOptions, log *slog.Logger) (*Publisher, error) {
	switch {
	case src == nil || numbers == nil:
		return nil, errors.New("revoke: NewPublisher needs a Source and a NumberStore")
	case o.CA == nil || o.Signer == nil:
		return nil, errors.New("revoke: PublisherOptions.CA and Signer are required")
	case !certutil.PublicKeysEqual(o.CA.PublicKey, o.Signer.Public()):
		return nil, errors.New("revoke: PublisherOptions.Signer does not match the key of PublisherOptions.CA")
	}
	if _, err := sigAlgFor(o.Signer.Public()); err != nil {
		return nil, fmt.Errorf("revoke: CA key: %w", err)
	}
	if o.FullValidity == 0 {
		o.FullValidity = DefaultFullValidity
	}
	if o.FullInterval == 0 {
		o.FullInterval = o.FullValidity / 2
	}
	if o.DeltaValidity == 0 {
		o.DeltaValidity = DefaultDeltaValidity
	}
	if o.DeltaInterval == 0 {
		o.DeltaInterval = o.DeltaValidity / 2
	}
	if o.FullInterval <= 0 || o.FullInterval >= o.FullValidity {
		return nil, errors.New("revoke: PublisherOptions.FullInterval must be positive and shorter than FullValidity")
	}
	if o.DeltaInterval <= 0 || o.DeltaInterval >= o.DeltaValidity {
		return nil, errors.New("revoke: PublisherOptions.DeltaInterval must be positive and shorter than DeltaValidity")
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if log == nil {
		log = slog.Default()
	}
	return &Publisher{src: src, numbers: numbers, o: o, log: log, after: time.After, kick: make(chan struct{}, 1)}, nil
}

// CA is the certificate of the CA whose CRLs p publishes.
func (p *Publisher) CA() *x509.Certificate { return p.o.CA }

// Full returns the current full CRL, nil before the first publication. It must not be modified.
func (p *Publisher) Full() *CRL {
	if c := p.cur.Load(); c != nil {
		return c.full
	}
	return nil
}

// Delta returns the current delta CRL, nil before the first publication. It must not be
// modified.
func (p *Publisher) Delta() *CRL {
	if c := p.cur.Load(); c != nil {
		return c.delta
	}
	return nil
}

// Publish builds and signs a new full CRL and a delta CRL on it, each with the next CRL number,
// from one walk of the revocations (BuildCRLs), and serves them from then on. When the full CRL
// fails the current CRLs stay; when only the delta fails the new full CRL is served with the
// previous delta until the next try.
func (p *Publisher) Publish(ctx context.Context) (full, delta *CRL, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if lead, err := p.lead(ctx); err != nil || !lead {
		if err != nil {
			return nil, nil, err
		}
		return p.adopt(ctx)
	}
	now := p.o.Now().UTC().Truncate(time.Second)
	fo, err := p.options(ctx, nil, now)
	if err != nil {
		return nil, nil, p.done(ctx, false, nil, err)
	}
	do, err := p.options(ctx, &CRL{Number: fo.Number, ThisUpdate: now}, now)
	if err != nil {
		return nil, nil, p.done(ctx, false, nil, err)
	}
	// The last full CRL this publisher built carries over (BuildCRLs) unless its chain goes back
	// to a walk from the beginning more than FullWalkEvery ago.
	var prev *CRL
	if c := p.built; c != nil && now.Sub(c.Walked()) < FullWalkEvery {
		prev = c
	}
	p.built = nil
	full, delta, deltaErr, err := BuildCRLs(ctx, p.src, fo, do, prev)
	if err = p.done(ctx, false, full, err); err != nil {
		return nil, nil, err
	}
	p.built = full
	old := p.cur.Load()
	next := &published{full: full}
	if old != nil {
		next.delta = old.delta
	}
	p.cur.Store(next)
	if err = p.done(ctx, true, delta, deltaErr); err != nil {
		return full, nil, err
	}
	p.cur.Store(&published{full: full, delta: delta})
	return full, delta, nil
}

// PublishDelta builds and signs a new delta CRL on the current full CRL (use it to publish a
// revocation at once). Before the first full CRL it publishes both and returns the delta.
func (p *Publisher) PublishDelta(ctx context.Context) (*CRL, error) {
	if p.Full() == nil {
		_, d, err := p.Publish(ctx)
		return d, err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if lead, err := p.lead(ctx); err != nil || !lead {
		if err != nil {
			return nil, err
		}
		_, d, err := p.adopt(ctx)
		return d, err
	}
	cur := p.cur.Load()
	delta, err := p.build(ctx, cur.full)
	if err != nil {
		return nil, err
	}
	p.cur.Store(&published{full: cur.full, delta: delta})
	return delta, nil
}

// build makes a full CRL (base nil) or a delta CRL on base. p.mu is held.
func (p *Publisher) build(ctx context.Context, base *CRL) (*CRL, error) {
	o, err := p.options(ctx, base, p.o.Now().UTC().Truncate(time.Second))
	var c *CRL
	if err == nil {
		c, err = BuildCRL(ctx, p.src, o)
	}
	return c, p.done(ctx, base != nil, c, err)
}

// options are the next full CRL's (base nil) or delta CRL's on base, made at now, with the next
// CRL number from the store. p.mu is held.
func (p *Publisher) options(ctx context.Context, base *CRL, now time.Time) (CRLOptions, error) {
	number, err := p.numbers.NextCRLNumber(ctx)
	if err != nil {
		return CRLOptions{}, fmt.Errorf("next CRL number: %w", err)
	}
	if number == nil || p.last != nil && number.Cmp(p.last) <= 0 {
		return CRLOptions{}, fmt.Errorf("the store's next CRL number %v is not above the last one, %v", number, p.last)
	}
	p.last = new(big.Int).Set(number)
	o := CRLOptions{CA: p.o.CA, Signer: p.o.Signer, Number: number, ThisUpdate: now,
		NextUpdate: now.Add(p.o.FullValidity), NextPublish: now.Add(p.o.FullInterval), FreshestCRL: p.o.DeltaURLs}
	if base != nil {
		o.NextUpdate, o.NextPublish, o.FreshestCRL = now.Add(p.o.DeltaValidity), now.Add(p.o.DeltaInterval), nil
		o.BaseNumber, o.Since = base.Number, base.ThisUpdate.Add(-DeltaMargin)
	}
	return o, nil
}

// done finishes one CRL's publication: a CRL made is kept for the other instances (Shared); then
// the outcome is logged and notified. It returns the error, if any, wrapped with the CRL's kind.
func (p *Publisher) done(ctx context.Context, delta bool, c *CRL, err error) error {
	kind := "full"
	if delta {
		kind = "delta"
	}
	if err == nil && p.o.Shared != nil {
		if err = p.o.Shared.Save(ctx, c); err != nil {
			err = fmt.Errorf("keeping it for the other instances: %w", err)
		}
	}
	if err != nil {
		err = fmt.Errorf("revoke: publishing the %s CRL: %w", kind, err)
		p.log.Error("CRL not published", "kind", kind, "error", err)
		c = nil
	} else {
		p.log.Info("CRL published", "kind", kind, "number", c.Number.String(), "entries", c.Entries,
			"bytes", len(c.DER), "took", c.Took, "next_update", c.NextUpdate)
	}
	if p.o.Notify != nil {
		p.o.Notify(ctx, delta, c, err)
	}
	return err
}

// lead reports whether this publisher builds CRLs: always, unless it shares a store with others.
func (p *Publisher) lead(ctx context.Context) (bool, error) {
	if p.o.Shared == nil {
		return true, nil
	}
	lead, err := p.o.Shared.Lead(ctx)
	if err != nil {
		return false, fmt.Errorf("revoke: which instance publishes CRLs: %w", err)
	}
	p.following.Store(!lead)
	return lead, nil
}

// Refresh serves the newest CRLs another instance published, when this one does not publish
// (Shared); it does nothing otherwise. p.mu is taken.
func (p *Publisher) Refresh(ctx context.Context) error {
	if p.o.Shared == nil {
		return nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if lead, err := p.lead(ctx); err != nil || lead {
		return err
	}
	_, _, err := p.adopt(ctx)
	return err
}

// adopt takes the newest CRLs from the shared store: each must be the CA's (its signature is
// checked, so that whoever can write the database cannot make an instance serve a CRL the CA did
// not sign) and newer than the one served. p.mu is held.
func (p *Publisher) adopt(ctx context.Context) (full, delta *CRL, err error) {
	p.built = nil // when this instance leads again it walks from the beginning
	cur := p.cur.Load()
	var haveFull, haveDelta *big.Int
	if cur != nil && cur.full != nil {
		haveFull = cur.full.Number
	}
	if cur != nil && cur.delta != nil {
		haveDelta = cur.delta.Number
	}
	fd, dd, err := p.o.Shared.Latest(ctx, haveFull, haveDelta)
	if err != nil {
		return nil, nil, fmt.Errorf("revoke: the CRLs of the publishing instance: %w", err)
	}
	next := &published{}
	if cur != nil {
		*next = *cur
	}
	if fd != nil {
		if next.full, err = p.parseCRL(fd, false); err != nil {
			return nil, nil, err
		}
	}
	if dd != nil {
		if next.delta, err = p.parseCRL(dd, true); err != nil {
			return nil, nil, err
		}
	}
	for _, c := range []*CRL{next.full, next.delta} {
		if c != nil && (p.last == nil || c.Number.Cmp(p.last) > 0) {
			p.last = new(big.Int).Set(c.Number)
		}
	}
	p.cur.Store(next)
	return next.full, next.delta, nil
}

// parseCRL reads a CRL another instance published and checks it is the CA's, of the kind wanted.
func (p *Publisher) parseCRL(der []byte, delta bool) (*CRL, error) {
	rl, err := x509.ParseRevocationList(der)
	if err != nil {
		return nil, fmt.Errorf("revoke: a stored CRL: %w", err)
	}
	if err := rl.CheckSignatureFrom(p.o.CA); err != nil {
		return nil, fmt.Errorf("revoke: a stored CRL is not signed by the CA: %w", err)
	}
	c := &CRL{DER: der, Number: rl.Number, ThisUpdate: rl.ThisUpdate, NextUpdate: rl.NextUpdate, Entries: len(rl.RevokedCertificateEntries)}
	for _, e := range rl.Extensions {
		if e.Id.Equal(oidDeltaCRL) {
			c.BaseNumber = new(big.Int)
			if _, err := asn1.Unmarshal(e.Value, &c.BaseNumber); err != nil {
				return nil, fmt.Errorf("revoke: a stored delta CRL's base number: %w", err)
			}
		}
	}
	if c.Number == nil || c.IsDelta() != delta {
		return nil, fmt.Errorf("revoke: a stored CRL (number %v) is not the %s CRL it was stored as", c.Number, map[bool]string{false: "full", true: "delta"}[delta])
	}
	return c, nil
}

// Run publishes at once if nothing is published yet, then again whenever a CRL reaches the
// end of its interval (a full CRL with a delta on it, or a delta alone) or RequestDelta asks,
// until ctx ends. A failed publication is logged (and notified) and tried again a minute later;
// the CRLs already published keep being served meanwhile.
func (p *Publisher) Run(ctx context.Context) {
	asked := false
	for {
		var err error
		switch full, delta := p.due(p.o.Now()); {
		case full:
			_, _, err = p.Publish(ctx)
		case delta || asked:
			_, err = p.PublishDelta(ctx)
		case p.following.Load():
			err = p.Refresh(ctx)
		}
		if err == nil {
			asked = false // a requested delta that failed is tried again with the retry
		}
		wait := p.nextDue().Sub(p.o.Now())
		switch {
		case err != nil:
			wait = retryAfter
		case p.following.Load():
			wait = FollowEvery // another instance publishes: serve its newest, take over if it stops
		}
		select {
		case <-ctx.Done():
			return
		case <-p.after(wait):
		case <-p.kick:
			asked = true
		}
	}
}

// RequestDelta asks Run to publish a delta CRL now (for instance after a revocation) and returns
// at once. Requests made while one is pending are merged.
func (p *Publisher) RequestDelta() {
	select {
	case p.kick <- struct{}{}:
	default:
	}
}

// due says whether a full CRL or a delta CRL is to be published at now.
func (p *Publisher) due(now time.Time) (full, delta bool) {
	c := p.cur.Load()
	if c == nil || c.full == nil || !now.Before(c.full.ThisUpdate.Add(p.o.FullInterval)) {
		return true, true
	}
	return false, c.delta == nil || c.delta.BaseNumber.Cmp(c.full.Number) != 0 ||
		!now.Before(c.delta.ThisUpdate.Add(p.o.DeltaInterval))
}

// nextDue is when the next publication is due (now, if one is due already).
func (p *Publisher) nextDue() time.Time {
	c := p.cur.Load()
	if c == nil || c.full == nil || c.delta == nil || c.delta.BaseNumber.Cmp(c.full.Number) != 0 {
		return p.o.Now()
	}
	t := c.full.ThisUpdate.Add(p.o.FullInterval)
	if d := c.delta.ThisUpdate.Add(p.o.DeltaInterval); d.Before(t) {
		return d
	}
	return t
}
