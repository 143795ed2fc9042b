package revoke

import (
	"context"
	"math/big"
	"strings"
	"sync"
	"testing"
)

// memShared is SharedCRLs in memory: leader names the publisher that leads.
type memShared struct {
	mu       sync.Mutex
	leader   *Publisher
	crls     map[bool][]*CRL // by delta, in the order saved
	injected []byte          // served as the newest full CRL when set
}

type sharedView struct {
	m  *memShared
	me **Publisher
}

func (v sharedView) Lead(context.Context) (bool, error) {
	v.m.mu.Lock()
	defer v.m.mu.Unlock()
	return v.m.leader == *v.me, nil
}

func (v sharedView) Save(_ context.Context, c *CRL) error {
	v.m.mu.Lock()
	defer v.m.mu.Unlock()
	v.m.crls[c.IsDelta()] = append(v.m.crls[c.IsDelta()], c)
	return nil
}

func (v sharedView) Latest(_ context.Context, afterFull, afterDelta *big.Int) (full, delta []byte, err error) {
	v.m.mu.Lock()
	defer v.m.mu.Unlock()
	if v.m.injected != nil {
		return v.m.injected, nil, nil
	}
	newest := func(l []*CRL, after *big.Int) []byte {
		if len(l) == 0 || after != nil && l[len(l)-1].Number.Cmp(after) <= 0 {
			return nil
		}
		return l[len(l)-1].DER
	}
	return newest(v.m.crls[false], afterFull), newest(v.m.crls[true], afterDelta), nil
}

// Two publishers of one CA sharing a store: only the leader builds and signs; the other serves
// the newest CRLs it saved, with the same numbers; when the leader changes, the new one goes on
// with greater numbers; a stored CRL the CA did not sign is refused.
func TestSharedPublishers(t *testing.T) {
	f := newCRLFixture(t, "p256")
	clock := &fakeClock{t: epoch}
	numbers := &memNumbers{}
	m := &memShared{crls: map[bool][]*CRL{}}
	var a, b *Publisher
	mk := func(me **Publisher) *Publisher {
		p, err := NewPublisher(f.src, numbers, PublisherOptions{CA: f.ca, Signer: f.key, Now: clock.Now,
			Shared: sharedView{m, me}}, quiet)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	a, b = mk(&a), mk(&b)
	m.leader = a
	ctx := context.Background()
	fa, da, err := a.Publish(ctx)
	if err != nil || fa == nil || da == nil {
		t.Fatalf("the leader's Publish = %v, %v, %v", fa, da, err)
	}
	fb, db, err := b.Publish(ctx)
	if err != nil || fb == nil || db == nil || fb.Number.Cmp(fa.Number) != 0 || db.Number.Cmp(da.Number) != 0 ||
		string(fb.DER) != string(fa.DER) || db.BaseNumber.Cmp(fa.Number) != 0 {
		t.Fatalf("the follower's Publish = %v, %v, %v; want the leader's CRLs %v and %v", fb, db, err, fa.Number, da.Number)
	}
	if n := len(m.crls[false]) + len(m.crls[true]); n != 2 {
		t.Errorf("%d CRLs saved, want the leader's two", n)
	}
	// The leader changes: b goes on above a's numbers, and a follows b.
	m.leader = b
	fb2, _, err := b.Publish(ctx)
	if err != nil || fb2.Number.Cmp(da.Number) <= 0 {
		t.Fatalf("the new leader's full CRL = %v, %v; want a number above %v", fb2, err, da.Number)
	}
	if err := a.Refresh(ctx); err != nil || a.Full().Number.Cmp(fb2.Number) != 0 {
		t.Errorf("a after Refresh serves %v (%v), want %v", a.Full().Number, err, fb2.Number)
	}
	// A CRL in the store that another key signed is refused, and the served one stays.
	other := newCRLFixture(t, "p256")
	forged, err := BuildCRL(ctx, f.src, CRLOptions{CA: other.ca, Signer: other.key, Number: big.NewInt(1000),
		ThisUpdate: epoch, NextUpdate: epoch.Add(DefaultFullValidity)})
	if err != nil {
		t.Fatal(err)
	}
	m.injected = forged.DER
	if err := a.Refresh(ctx); err == nil || !strings.Contains(err.Error(), "not signed by the CA") || a.Full().Number.Cmp(fb2.Number) != 0 {
		t.Errorf("Refresh with a CRL of another CA in the store = %v, serving %v; want refused, still %v", err, a.Full().Number, fb2.Number)
	}
}
