package store

import (
	"context"
	"errors"
	"reflect"
	"testing"
	"time"
)

// The store records one CA: the same one again changes nothing, another is refused; instances
// are upserted by name and listed with what they last said.
func TestClusterAndInstances(t *testing.T) { eachStore(t, testClusterAndInstances) }

func testClusterAndInstances(t *testing.T, s Store) {
	ctx := context.Background()
	cs, ok := s.(ClusterStore)
	if !ok {
		t.Fatalf("%T is not a ClusterStore", s)
	}
	if _, err := cs.GetCluster(ctx); !errors.Is(err, ErrNotFound) {
		t.Errorf("GetCluster before InitCluster = %v, want ErrNotFound", err)
	}
	c := Cluster{CACert: []byte{0x30, 1, 2, 3}, KeyURI: "pkcs11:token=t;object=ca", Settings: []byte(`{"ca_name":"X"}`), Created: epoch}
	for _, bad := range []Cluster{{}, {CACert: c.CACert, KeyURI: c.KeyURI, Settings: []byte("not json"), Created: epoch}} {
		if err := cs.InitCluster(ctx, bad, ev(3000, "ca")); err == nil {
			t.Errorf("InitCluster(%+v) succeeded", bad)
		}
	}
	if err := cs.InitCluster(ctx, c, ev(3000, "ca")); err != nil {
		t.Fatal(err)
	}
	if err := cs.InitCluster(ctx, c, ev(3000, "ca")); err != nil {
		t.Errorf("InitCluster with the same CA again = %v, want nil", err)
	}
	other := c
	other.CACert = []byte{0x30, 9}
	if err := cs.InitCluster(ctx, other, ev(3000, "ca")); !errors.Is(err, ErrConflict) {
		t.Errorf("InitCluster with another CA = %v, want ErrConflict", err)
	}
	got, err := cs.GetCluster(ctx)
	if err != nil || string(got.CACert) != string(c.CACert) || got.KeyURI != c.KeyURI || string(got.Settings) != string(c.Settings) ||
		!got.Created.Equal(epoch) {
		t.Errorf("GetCluster = %+v, %v; want %+v", got, err, c)
	}
	if evs, err := s.ListEvents(ctx, EventFilter{ID: 3000}); err != nil || len(evs) != 1 {
		t.Errorf("events of InitCluster: %d, %v; want one (the first recording)", len(evs), err)
	}

	a := Instance{Name: "a", Version: "1.0", Addresses: []string{"https://a:9443"}, Started: epoch, Heartbeat: epoch.Add(time.Second)}
	b := Instance{Name: "b", Version: "1.0", Addresses: []string{}, Started: epoch, Heartbeat: epoch.Add(2 * time.Second)}
	for _, in := range []Instance{a, b} {
		if err := cs.Heartbeat(ctx, in); err != nil {
			t.Fatal(err)
		}
	}
	a.Heartbeat, a.Version = epoch.Add(time.Minute), "1.1"
	if err := cs.Heartbeat(ctx, a); err != nil {
		t.Fatal(err)
	}
	if err := cs.Heartbeat(ctx, Instance{Name: "c"}); err == nil {
		t.Error("Heartbeat without version and times succeeded")
	}
	list, err := cs.ListInstances(ctx)
	if err != nil || !reflect.DeepEqual(list, []Instance{a, b}) {
		t.Errorf("ListInstances = %+v, %v; want %+v", list, err, []Instance{a, b})
	}
}
