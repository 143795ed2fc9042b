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

	a := Instance{Name: "a", Version: "1.0", Addresses: []string{"https://a:9443"}, Started: epoch, Heartbeat: epoch.Add(time.Second),
		EnrollURLs: []string{"https://a.corp.example.test"}}
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

// CRLs are kept by kind and number; the newest of each kind is served.
func TestSavedCRLs(t *testing.T) { eachStore(t, testSavedCRLs) }

func testSavedCRLs(t *testing.T, s Store) {
	ctx := context.Background()
	cs := s.(CRLStore)
	if f, d, err := cs.LatestCRLs(ctx, 0, 0); f != nil || d != nil || err != nil {
		t.Fatalf("LatestCRLs of a new store = %v, %v, %v", f, d, err)
	}
	crl := func(delta bool, n int64) StoredCRL {
		return StoredCRL{Delta: delta, Number: n, ThisUpdate: epoch, NextUpdate: epoch.Add(time.Hour), DER: []byte{0x30, byte(n)}}
	}
	for _, c := range []StoredCRL{crl(false, 1), crl(true, 2), crl(false, 3), crl(true, 4)} {
		if err := cs.SaveCRL(ctx, c); err != nil {
			t.Fatal(err)
		}
	}
	if err := cs.SaveCRL(ctx, crl(false, 3)); !errors.Is(err, ErrConflict) {
		t.Errorf("saving full CRL 3 again = %v, want ErrConflict", err)
	}
	if err := cs.SaveCRL(ctx, StoredCRL{Number: 9}); err == nil {
		t.Error("SaveCRL without times or DER succeeded")
	}
	f, d, err := cs.LatestCRLs(ctx, 0, 0)
	if err != nil || f == nil || d == nil || f.Number != 3 || d.Number != 4 || !d.Delta || f.Delta ||
		string(f.DER) != string([]byte{0x30, 3}) || !f.ThisUpdate.Equal(epoch) {
		t.Errorf("LatestCRLs = %+v, %+v, %v; want full 3 and delta 4", f, d, err)
	}
	if f, d, err := cs.LatestCRLs(ctx, 3, 2); err != nil || f != nil || d == nil || d.Number != 4 {
		t.Errorf("LatestCRLs(after full 3, delta 2) = %+v, %+v, %v; want only delta 4", f, d, err)
	}
	if lead, err := cs.LeadCRLs(ctx); err != nil || !lead {
		t.Errorf("LeadCRLs of the only instance = %v, %v", lead, err)
	}
}
