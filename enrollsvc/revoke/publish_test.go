package revoke

import (
	"context"
	"crypto/x509"
	"errors"
	"math/big"
	"sync"
	"testing"
	"time"
)

// notes collects what Notify was told.
type notes struct {
	mu   sync.Mutex
	got  []string
	errs int
}

func (n *notes) notify(_ context.Context, delta bool, c *CRL, err error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if err != nil {
		n.errs++
		return
	}
	kind := "full"
	if delta {
		kind = "delta"
	}
	n.got = append(n.got, kind+" "+c.Number.String())
}

func newTestPublisher(t *testing.T, f *crlFixture, numbers NumberStore, clock *fakeClock, n *notes) *Publisher {
	t.Helper()
	o := PublisherOptions{CA: f.ca, Signer: f.key, Now: clock.Now, DeltaURLs: []string{"http://pki.example.test/crl/CA+.crl"}}
	if n != nil {
		o.Notify = n.notify
	}
	p, err := NewPublisher(f.src, numbers, o, quiet)
	if err != nil {
		t.Fatalf("NewPublisher: %v", err)
	}
	return p
}

func TestPublisherNumbers(t *testing.T) {
	f := newCRLFixture(t, "p256")
	clock := &fakeClock{t: epoch}
	numbers := &memNumbers{}
	n := &notes{}
	p := newTestPublisher(t, f, numbers, clock, n)
	var seen []int64
	for i := 0; i < 2; i++ {
		full, delta, err := p.Publish(context.Background())
		if err != nil {
			t.Fatalf("Publish: %v", err)
		}
		if p.Full() != full || p.Delta() != delta {
			t.Errorf("Full(), Delta() are not what Publish returned")
		}
		if delta.BaseNumber.Cmp(full.Number) != 0 {
			t.Errorf("delta base = %v, want the full CRL's number %v", delta.BaseNumber, full.Number)
		}
		seen = append(seen, full.Number.Int64(), delta.Number.Int64())
		clock.Add(time.Hour)
	}
	d, err := p.PublishDelta(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	seen = append(seen, d.Number.Int64())
	// A new Publisher (a restart) on the same NumberStore goes on from there.
	p2 := newTestPublisher(t, f, numbers, clock, nil)
	full, delta, err := p2.Publish(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	seen = append(seen, full.Number.Int64(), delta.Number.Int64())
	for i := 1; i < len(seen); i++ {
		if seen[i] <= seen[i-1] {
			t.Errorf("CRL numbers %v do not strictly increase", seen)
			break
		}
	}
	if got, want := n.got, []string{"full 1", "delta 2", "full 3", "delta 4", "delta 5"}; len(got) != len(want) || got[4] != want[4] || got[0] != want[0] {
		t.Errorf("Notify saw %v, want %v", got, want)
	}
	// A store that hands out an old number is refused, and the CRLs stay as they were.
	numbers.next = func() (*big.Int, error) { return new(big.Int).Set(delta.Number), nil }
	if _, err := p2.PublishDelta(context.Background()); err == nil {
		t.Errorf("PublishDelta with a CRL number going backwards = nil error")
	}
	numbers.next = func() (*big.Int, error) { return nil, errStore }
	if _, _, err := p2.Publish(context.Background()); !errors.Is(err, errStore) {
		t.Errorf("Publish with a failing NumberStore = %v, want %v", err, errStore)
	}
	if p2.Full() != full || p2.Delta() != delta {
		t.Errorf("a failed publication replaced the CRLs served")
	}
}

func TestPublisherDelta(t *testing.T) {
	f := newCRLFixture(t, "rsa")
	clock := &fakeClock{t: epoch}
	p := newTestPublisher(t, f, &memNumbers{}, clock, nil)
	// Revocations recorded up to DeltaMargin before the full CRL are repeated in the delta.
	inMargin := Entry{Serial: big.NewInt(0xaa), RevokedAt: epoch.Add(-DeltaMargin / 2), Reason: 3}
	f.src.revoke(inMargin, inMargin.RevokedAt)
	full, delta, err := p.Publish(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if full.Entries != 5 || delta.Entries != 1 {
		t.Errorf("full CRL has %d entries and delta %d, want 5 and the 1 recorded since thisUpdate - DeltaMargin", full.Entries, delta.Entries)
	}
	now := clock.Add(3 * time.Hour)
	late := Entry{Serial: big.NewInt(0xbeef), RevokedAt: now.Add(-2 * time.Hour), Reason: 9} // recorded now, dated earlier
	f.src.revoke(late, now)
	d, err := p.PublishDelta(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	rl, err := x509.ParseRevocationList(d.DER)
	if err != nil {
		t.Fatal(err)
	}
	if err := rl.CheckSignatureFrom(f.ca); err != nil {
		t.Errorf("delta signature: %v", err)
	}
	checkEntries(t, rl, []Entry{late, inMargin})
	if d.BaseNumber.Cmp(full.Number) != 0 || !d.ThisUpdate.Equal(now) || !d.NextUpdate.Equal(now.Add(24*time.Hour)) || !d.NextPublish.Equal(now.Add(12*time.Hour)) {
		t.Errorf("delta base %v, %v to %v, next publish %v; want %v, %v to %v, %v", d.BaseNumber, d.ThisUpdate, d.NextUpdate, d.NextPublish,
			full.Number, now, now.Add(24*time.Hour), now.Add(12*time.Hour))
	}
	if p.Full() != full {
		t.Errorf("PublishDelta replaced the full CRL")
	}
	if !full.NextUpdate.Equal(epoch.Add(7*24*time.Hour)) || !full.NextPublish.Equal(epoch.Add(84*time.Hour)) {
		t.Errorf("full CRL: nextUpdate %v, next publish %v; want 7 days and 3.5 days on", full.NextUpdate, full.NextPublish)
	}
	// The next full CRL lists everything, and its delta starts afresh.
	clock.Add(time.Hour)
	full2, delta2, err := p.Publish(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if full2.Entries != 6 || delta2.Entries != 0 {
		t.Errorf("second full has %d entries and its delta %d, want 6 and 0", full2.Entries, delta2.Entries)
	}
}

// TestRunSchedule drives Run with the fake clock: Run asks for a timer, the test moves the
// clock and fires it.
func TestRunSchedule(t *testing.T) {
	f := newCRLFixture(t, "p256")
	clock := &fakeClock{t: epoch}
	n := &notes{}
	p := newTestPublisher(t, f, &memNumbers{}, clock, n)
	waits, fire := make(chan time.Duration), make(chan time.Time)
	ctx, cancel := context.WithCancel(context.Background())
	p.after = func(d time.Duration) <-chan time.Time {
		select {
		case waits <- d:
		case <-ctx.Done():
		}
		return fire
	}
	done := make(chan struct{})
	go func() { p.Run(ctx); close(done) }()

	// step checks the wait Run asks for and what is served, runs then (Run is idle), moves the
	// clock and fires the timer.
	step := func(want time.Duration, fullNumber, deltaNumber int64, then func()) {
		t.Helper()
		if d := <-waits; d != want {
			t.Fatalf("Run waits %v, want %v", d, want)
		}
		if p.Full().Number.Int64() != fullNumber || p.Delta().Number.Int64() != deltaNumber {
			t.Fatalf("serving full %v and delta %v, want %d and %d", p.Full().Number, p.Delta().Number, fullNumber, deltaNumber)
		}
		if then != nil {
			then()
		}
		fire <- clock.Add(want)
	}
	step(12*time.Hour, 1, 2, nil) // published at once; the delta is due first
	for i := int64(0); i < 6; i++ {
		step(12*time.Hour, 1, 3+i, nil) // a delta every 12 hours, up to 72 hours
	}
	// At 84 hours (FullInterval) both. Then the store fails: the delta due at 96 hours is tried
	// again a minute later, and the CRLs already out are served meanwhile.
	step(12*time.Hour, 9, 10, func() { f.src.fail(errStore) })
	step(retryAfter, 9, 10, func() { f.src.fail(nil) })
	step(12*time.Hour, 9, 12, nil) // number 11 went to the failed try
	// A revocation asks for a delta at once; Run then waits a full delta interval from it.
	if d := <-waits; d != 12*time.Hour {
		t.Fatalf("Run waits %v, want 12h", d)
	}
	clock.Add(time.Hour)
	p.RequestDelta()
	step(12*time.Hour, 9, 14, nil) // then the delta due 12 hours after it is 15
	// A requested delta that fails is tried again a minute later, due or not.
	if d := <-waits; d != 12*time.Hour {
		t.Fatalf("Run waits %v, want 12h", d)
	}
	clock.Add(time.Hour)
	f.src.fail(errStore)
	p.RequestDelta()
	step(retryAfter, 9, 15, func() { f.src.fail(nil) }) // the scheduled delta 15 is still served
	step(12*time.Hour, 9, 17, nil)                      // 16 went to the failed try
	cancel()
	<-done
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.errs != 2 {
		t.Errorf("Notify saw %d failures, want 2", n.errs)
	}
}

func TestNewPublisherRefuses(t *testing.T) {
	f := newCRLFixture(t, "p256")
	other := keyFor(t, "p256")
	for _, tc := range []struct {
		name string
		o    PublisherOptions
	}{
		{"no CA", PublisherOptions{Signer: f.key}},
		{"other key", PublisherOptions{CA: f.ca, Signer: other}},
		{"interval not below validity", PublisherOptions{CA: f.ca, Signer: f.key, FullValidity: time.Hour, FullInterval: time.Hour}},
		{"negative delta interval", PublisherOptions{CA: f.ca, Signer: f.key, DeltaInterval: -time.Hour}},
	} {
		if _, err := NewPublisher(f.src, &memNumbers{}, tc.o, nil); err == nil {
			t.Errorf("NewPublisher(%s) = nil error, want one", tc.name)
		}
	}
	if _, err := NewPublisher(nil, &memNumbers{}, PublisherOptions{CA: f.ca, Signer: f.key}, nil); err == nil {
		t.Errorf("NewPublisher without a Source = nil error")
	}
}
