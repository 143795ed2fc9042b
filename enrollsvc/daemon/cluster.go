// Several instances, one CA (a shared PostgreSQL store): each instance registers itself and
// beats a heart every heartbeatEvery; one whose version differs from a live instance's refuses
// to serve, as the Intune Certificate Connector's instances must all run the same version; and
// each one follows revocations made on the others, so that its OCSP answers and CRLs say
// "revoked" within a second of a revocation anywhere.

package daemon

import (
	"context"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/enrollment-appliance/aeappliance/apiclient"
	"github.com/enrollment-appliance/aeappliance/config"
	"github.com/enrollment-appliance/aeappliance/enrollsvc"
	"github.com/enrollment-appliance/aeappliance/enrollsvc/events"
	"github.com/enrollment-appliance/aeappliance/enrollsvc/store"
)

const (
	heartbeatEvery = 5 * time.Second
	// liveFor is how recent a heartbeat must be for its instance to count as running.
	liveFor = 3 * heartbeatEvery
	// revocationPoll is how often an instance on a shared store looks for revocations made by
	// the others; revocationWindow how far back it looks each time (clock differences).
	revocationPoll   = 250 * time.Millisecond
	revocationWindow = 2 * time.Minute
)

// InstanceName is this instance's name among those sharing the store: the configuration's, or
// the host name.
func (rt *Runtime) InstanceName() string { return instanceName(rt.Config) }

func instanceName(cfg *config.Config) string {
	if cfg.Instance != "" {
		return cfg.Instance
	}
	if h, err := os.Hostname(); err == nil && h != "" {
		return h
	}
	return "enrollsvc"
}

// checkVersions refuses to serve when a live instance on the store runs another version.
func (rt *Runtime) checkVersions(ctx context.Context, version string) error {
	cs, ok := rt.Store.(store.ClusterStore)
	if !ok {
		return nil
	}
	list, err := cs.ListInstances(ctx)
	if err != nil {
		return err
	}
	me, now := rt.InstanceName(), time.Now()
	for _, in := range list {
		if in.Name != me && now.Sub(in.Heartbeat) < liveFor && in.Version != version {
			_ = rt.Recorder.Record(ctx, events.InstanceRefused, "", "instance", me, "version", version,
				"other", in.Name, "other_version", in.Version)
			return fmt.Errorf("instance %s runs version %s and this one %s: every instance sharing the store must run the same version; update them alike",
				in.Name, in.Version, version)
		}
	}
	return nil
}

// runCluster beats this instance's heart and, on a shared store, follows the revocations the
// other instances make, until ctx ends.
func (rt *Runtime) runCluster(ctx context.Context, in store.Instance) {
	cs, ok := rt.Store.(store.ClusterStore)
	if !ok {
		return
	}
	beat := func() {
		in.Heartbeat = time.Now()
		if err := cs.Heartbeat(ctx, in); err != nil && ctx.Err() == nil {
			rt.Log.Warn("recording this instance's heartbeat", "error", err)
		}
	}
	beat()
	hb := time.NewTicker(heartbeatEvery)
	defer hb.Stop()
	var poll <-chan time.Time
	if rt.Config.Postgres != nil && rt.revocation != nil && rt.revocation.responder != nil {
		t := time.NewTicker(revocationPoll)
		defer t.Stop()
		poll = t.C
	}
	seen := map[string]time.Time{}
	for {
		select {
		case <-ctx.Done():
			return
		case <-hb.C:
			beat()
		case now := <-poll:
			rt.followRevocations(ctx, now, seen)
		}
	}
}

// followRevocations tells the OCSP responder (and the CRL publisher) of every revocation in the
// store it has not heard of: those made by other instances.
func (rt *Runtime) followRevocations(ctx context.Context, now time.Time, seen map[string]time.Time) {
	var fresh []string
	err := rt.Store.EachRevoked(ctx, now.Add(-revocationWindow), func(e store.RevokedEntry) error {
		if _, ok := seen[e.Serial]; !ok {
			seen[e.Serial] = now
			fresh = append(fresh, e.Serial)
		}
		return nil
	})
	if err != nil {
		if ctx.Err() == nil {
			rt.Log.Warn("reading the revocations of the other instances", "error", err)
		}
		return
	}
	for s, t := range seen {
		if now.Sub(t) > 2*revocationWindow {
			delete(seen, s)
		}
	}
	rv := rt.revocation
	for _, s := range fresh {
		rv.responder.Revoked(s)
	}
	if len(fresh) > 0 {
		select {
		case rv.republish <- struct{}{}:
		default:
		}
	}
}

// peersTTL is how long the list of the other instances' enrollment URLs is kept between policy
// requests.
const peersTTL = 5 * time.Second

// peerEnrollURLs are the enrollment web services of the other live instances sharing the store,
// for the MS-XCEP policy (cached for peersTTL; on a store error, the last list).
func (rt *Runtime) peerEnrollURLs(ctx context.Context) []string {
	cs, ok := rt.Store.(store.ClusterStore)
	if !ok || rt.Config.Postgres == nil {
		return nil
	}
	rt.peers.mu.Lock()
	defer rt.peers.mu.Unlock()
	now := time.Now()
	if now.Sub(rt.peers.at) < peersTTL {
		return rt.peers.urls
	}
	list, err := cs.ListInstances(ctx)
	if err != nil {
		rt.Log.Warn("listing the other instances for the policy", "error", err)
		return rt.peers.urls
	}
	me := rt.InstanceName()
	var urls []string
	for _, in := range list {
		if in.Name != me && now.Sub(in.Heartbeat) < liveFor {
			urls = append(urls, in.EnrollURLs...)
		}
	}
	rt.peers.urls, rt.peers.at = urls, now
	return urls
}

// ClusterStatus is what aectl cluster status shows: the store and every instance on it.
func (rt *Runtime) ClusterStatus(ctx context.Context) (apiclient.Cluster, error) {
	st := apiclient.Cluster{Instance: rt.InstanceName(), Store: "sqlite"}
	if p := rt.Config.Postgres; p != nil {
		st.Store = "postgresql " + p.URL
	}
	st.StoreOK = true
	if err := rt.Store.Ping(ctx); err != nil {
		st.StoreOK, st.StoreError = false, err.Error()
	}
	if pg, ok := rt.Store.(*store.Postgres); ok && st.StoreOK {
		if info, err := pg.ServerInfo(ctx); err == nil {
			st.DatabaseVersion = info.Version
			st.CRLPublisher = strings.TrimPrefix(info.CRLPublisher, "enrollsvc/")
			for _, r := range info.Replicas {
				st.Replicas = append(st.Replicas, fmt.Sprintf("%s %s lag %s", r.Name, r.State, r.ReplayLag.Round(time.Millisecond)))
			}
		} else {
			rt.Log.Warn("asking the database server for the cluster status", "error", err)
		}
	}
	cs, ok := rt.Store.(store.ClusterStore)
	if !ok {
		return st, nil
	}
	list, err := cs.ListInstances(ctx)
	if err != nil {
		return st, &enrollsvc.Error{Kind: enrollsvc.KindUnavailable, Op: "listing the instances", Err: err}
	}
	now := time.Now()
	for _, in := range list {
		st.Instances = append(st.Instances, apiclient.Instance{Name: in.Name, Version: in.Version, Addresses: in.Addresses,
			Started: in.Started, Heartbeat: in.Heartbeat, Live: now.Sub(in.Heartbeat) < liveFor})
	}
	return st, nil
}
