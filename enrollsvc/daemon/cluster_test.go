package daemon_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/enrollment-appliance/aeappliance/enrollsvc/daemon"
	"github.com/enrollment-appliance/aeappliance/enrollsvc/events"
	"github.com/enrollment-appliance/aeappliance/enrollsvc/store"
)

// An instance whose version differs from a live instance's on the same store refuses to serve,
// says why and records it; an instance whose heartbeat is old does not hold the others back.
func TestOtherVersionRefusesToServe(t *testing.T) {
	needSoftHSM(t)
	dir := newDataDir(t, "ecdsa-p256")
	rt := openRuntime(t, dir)
	cs := rt.Store.(store.ClusterStore)
	ctx := context.Background()
	now := time.Now()
	if err := cs.Heartbeat(ctx, store.Instance{Name: "old-one", Version: "0.9", Started: now.Add(-time.Hour), Heartbeat: now.Add(-time.Hour)}); err != nil {
		t.Fatal(err)
	}
	if err := cs.Heartbeat(ctx, store.Instance{Name: "peer", Version: "2.0", Started: now, Heartbeat: now}); err != nil {
		t.Fatal(err)
	}
	err := daemon.Serve(ctx, dir, daemon.ServeOptions{APIListen: "127.0.0.1:0", Version: "1.0"}, rt)
	if err == nil || !strings.Contains(err.Error(), "instance peer runs version 2.0 and this one 1.0") || strings.Contains(err.Error(), "old-one") {
		t.Fatalf("Serve beside a live instance of another version = %v, want refused naming peer", err)
	}
	evs, err := rt.Store.ListEvents(ctx, store.EventFilter{ID: int(events.InstanceRefused)})
	if err != nil || len(evs) != 1 || evs[0].Fields["other"] != "peer" {
		t.Errorf("events = %+v, %v; want one InstanceRefused naming peer", evs, err)
	}
}
