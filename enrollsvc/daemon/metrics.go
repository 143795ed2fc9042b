// Metrics and readiness: the registry GET /metrics serves, fed by the audit trail (requests by
// outcome), the HSM (every private-key operation), the directory client's counters, the monitor's
// verdicts and figures read from the store at most once a storeStatsEvery; and the readiness
// verdict GET /api/v1/ready serves, computed by the monitor.

package daemon

import (
	"context"
	"errors"
	"fmt"
	"math/big"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/enrollment-appliance/aeappliance/apiclient"
	"github.com/enrollment-appliance/aeappliance/enrollsvc/events"
	"github.com/enrollment-appliance/aeappliance/enrollsvc/metrics"
	"github.com/enrollment-appliance/aeappliance/enrollsvc/revoke"
	"github.com/enrollment-appliance/aeappliance/enrollsvc/store"
	"github.com/enrollment-appliance/aeappliance/ldap"
)

// ExpiringWithin is the window of aeappliance_certificates_expiring.
const ExpiringWithin = 30 * 24 * time.Hour

// storeStatsEvery bounds how often a scrape makes the store count (pending, expiring, size).
const storeStatsEvery = 30 * time.Second

// outcomes maps the audit events that end a request to the result they count as, and whether the
// event's template may become a label value (the request was issued or held: its template exists).
var outcomes = map[events.ID]struct {
	result  string
	trusted bool
}{
	events.CertificateIssued: {metrics.ResultIssued, true},
	events.RequestPending:    {metrics.ResultPending, true},
	events.RequestDenied:     {metrics.ResultDenied, true},
	events.RequestRefused:    {metrics.ResultRefused, false},
	events.KeyRefused:        {metrics.ResultRefused, false},
	events.LintRefused:       {metrics.ResultRefused, false},
	events.RequestFailed:     {metrics.ResultFailed, false},
	events.SigningFailed:     {metrics.ResultFailed, false},
}

// observeEvent counts an event that ends a request.
func observeEvent(m *metrics.Metrics) func(ctx context.Context, e store.Event) {
	return func(ctx context.Context, e store.Event) {
		o, ok := outcomes[events.ID(e.ID)]
		if !ok {
			return
		}
		t, _ := e.Fields["template"].(string)
		m.Outcome(ctx, t, o.result, o.trusted)
	}
}

// startMetrics builds the service's registry and connects its sources. slot is the firmware
// slot running ("" off the appliance).
func (rt *Runtime) startMetrics(version, slot string) *metrics.Metrics {
	m := metrics.New(version, slot)
	count := observeEvent(m)
	rt.Recorder.SetObserver(func(ctx context.Context, e store.Event) {
		count(ctx, e)
		if rt.audit != nil {
			rt.audit.poke()
		}
	})
	rt.KeyStore.SetObserver(m.HSMOp)
	reg := m.Registry()
	gauge := func(name, help string, f func() float64) {
		reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, f))
	}
	counter := func(name, help string, f func() float64) {
		reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help}, f))
	}
	gauge("aeappliance_hsm_sessions_in_use", "PKCS#11 sessions of the pool an operation holds now.", func() float64 {
		n, _ := rt.KeyStore.Sessions()
		return float64(n)
	})
	gauge("aeappliance_hsm_sessions", "Size of the PKCS#11 session pool.", func() float64 {
		_, n := rt.KeyStore.Sessions()
		return float64(n)
	})
	up := func(name, part string, f func(r *apiclient.Ready) bool) {
		gauge(name, "1 when the last health check found "+part+" working, else 0.", func() float64 {
			if r := rt.ready.Load(); r != nil && f(r) {
				return 1
			}
			return 0
		})
	}
	up("aeappliance_hsm_up", "the HSM", func(r *apiclient.Ready) bool { return r.Checks["hsm"] == apiclient.CheckOK })
	up("aeappliance_store_up", "the store", func(r *apiclient.Ready) bool { return r.Checks["store"] == apiclient.CheckOK })
	up("aeappliance_directory_up", "the directory (1 without one)", func(r *apiclient.Ready) bool {
		c, ok := r.Checks["directory"]
		return !ok || c == apiclient.CheckOK
	})
	up("aeappliance_ready", "everything /api/v1/ready checks", func(r *apiclient.Ready) bool { return r.Ready })
	// The directory client's counters (zero without a connected directory; they restart when it
	// reconnects, which rate() takes as a counter reset).
	dir := func(f func(st ldap.CacheStats) int64) func() float64 {
		return func() float64 {
			st, _ := rt.DirectoryStats()
			return float64(f(st))
		}
	}
	counter("aeappliance_directory_round_trips_total", "LDAP requests sent to the domain controller.",
		dir(func(s ldap.CacheStats) int64 { return s.RoundTrips + s.DialTrips }))
	counter("aeappliance_directory_cache_hits_total", "Directory lookups answered from the cache.",
		dir(func(s ldap.CacheStats) int64 { return s.Hits }))
	counter("aeappliance_directory_cache_misses_total", "Directory lookups the cache could not answer.",
		dir(func(s ldap.CacheStats) int64 { return s.Misses }))
	counter("aeappliance_directory_errors_total", "Directory calls that failed because the domain controller could not be reached or did not answer.",
		dir(func(s ldap.CacheStats) int64 { return s.Failures }))
	gauge("aeappliance_ca_certificate_expiry_timestamp_seconds", "notAfter of the CA certificate.", func() float64 {
		return float64(rt.CACert.NotAfter.Unix())
	})
	gauge("aeappliance_backup_last_success_timestamp_seconds", "When the last backup was written completely (0: never).", func() float64 {
		return float64(rt.lastBackup.Load())
	})
	reg.MustRegister(&crlCollector{rt: rt}, &storeCollector{rt: rt})
	return m
}

var (
	crlAgeDesc = prometheus.NewDesc("aeappliance_crl_age_seconds", "Seconds since thisUpdate of the CRL served, by kind (full, delta).",
		[]string{"kind"}, nil)
	crlNextDesc = prometheus.NewDesc("aeappliance_crl_next_update_seconds", "Seconds until nextUpdate of the CRL served (negative: expired), by kind.",
		[]string{"kind"}, nil)
	crlNumberDesc = prometheus.NewDesc("aeappliance_crl_number", "CRL number of the CRL served, by kind.", []string{"kind"}, nil)
)

// crlCollector reports the CRLs served (nothing without CRL distribution).
type crlCollector struct{ rt *Runtime }

func (c *crlCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- crlAgeDesc
	ch <- crlNextDesc
	ch <- crlNumberDesc
}

func (c *crlCollector) Collect(ch chan<- prometheus.Metric) {
	rv := c.rt.revocation
	if rv == nil || rv.publisher == nil {
		return
	}
	now := time.Now()
	for kind, crl := range servedCRLs(rv) {
		this, next, n, ok := crl.get()
		if !ok {
			continue
		}
		ch <- prometheus.MustNewConstMetric(crlAgeDesc, prometheus.GaugeValue, now.Sub(this).Seconds(), kind)
		ch <- prometheus.MustNewConstMetric(crlNextDesc, prometheus.GaugeValue, next.Sub(now).Seconds(), kind)
		ch <- prometheus.MustNewConstMetric(crlNumberDesc, prometheus.GaugeValue, n, kind)
	}
}

var (
	pendingDesc  = prometheus.NewDesc("aeappliance_pending_requests", "Requests waiting for a certificate manager's approval.", nil, nil)
	expiringDesc = prometheus.NewDesc("aeappliance_certificates_expiring",
		"Valid certificates whose notAfter is within the next 30 days.", nil, nil)
	storeSizeDesc = prometheus.NewDesc("aeappliance_store_size_bytes", "Bytes the store's database takes.", nil, nil)
	storeErrDesc  = prometheus.NewDesc("aeappliance_store_stats_errors_total", "Scrapes whose store figures could not be read.", nil, nil)
)

// storeCollector reports figures counted in the store, recounted at most every storeStatsEvery
// so that scrapes cost the store little.
type storeCollector struct {
	rt   *Runtime
	mu   sync.Mutex
	at   time.Time
	last store.OpsStats
	have bool
	errs float64
}

func (c *storeCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- pendingDesc
	ch <- expiringDesc
	ch <- storeSizeDesc
	ch <- storeErrDesc
}

func (c *storeCollector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if now := time.Now(); now.Sub(c.at) >= storeStatsEvery {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		st, err := opsStats(ctx, c.rt.Store, now)
		cancel()
		if err != nil {
			c.errs++
			c.rt.Log.Warn("metrics: reading store figures", "error", err)
		} else {
			c.last, c.have, c.at = st, true, now
		}
	}
	ch <- prometheus.MustNewConstMetric(storeErrDesc, prometheus.CounterValue, c.errs)
	if !c.have {
		return
	}
	ch <- prometheus.MustNewConstMetric(pendingDesc, prometheus.GaugeValue, float64(c.last.Pending))
	ch <- prometheus.MustNewConstMetric(expiringDesc, prometheus.GaugeValue, float64(c.last.Expiring))
	ch <- prometheus.MustNewConstMetric(storeSizeDesc, prometheus.GaugeValue, float64(c.last.Size))
}

func opsStats(ctx context.Context, s store.Store, now time.Time) (store.OpsStats, error) {
	o, ok := s.(interface {
		OpsStats(context.Context, time.Time, time.Duration) (store.OpsStats, error)
	})
	if !ok {
		return store.OpsStats{}, errors.New("the store keeps no statistics")
	}
	return o.OpsStats(ctx, now, ExpiringWithin)
}

// readiness is what GET /api/v1/ready serves: each part the service needs, checked by the
// monitor (herr: the HSM, derr: the store, dir: the directory).
func (rt *Runtime) readiness(herr, derr error, dir apiclient.DirectoryStatus, now time.Time) *apiclient.Ready {
	r := &apiclient.Ready{Checks: map[string]string{}, Checked: now}
	set := func(name string, err error) {
		if err != nil {
			r.Checks[name] = err.Error()
		} else {
			r.Checks[name] = apiclient.CheckOK
		}
	}
	set("hsm", herr)
	set("store", derr)
	if now.Before(rt.CACert.NotAfter) {
		set("ca", nil)
	} else {
		set("ca", fmt.Errorf("the CA certificate expired at %s", rt.CACert.NotAfter.Format(time.RFC3339)))
	}
	if dir.Configured {
		if dir.OK {
			set("directory", nil)
		} else {
			set("directory", errors.New(dir.Error))
		}
	}
	if rv := rt.revocation; rv != nil && rv.publisher != nil {
		set("crl", crlFresh(rv, now))
	}
	r.Ready = true
	for _, v := range r.Checks {
		if v != apiclient.CheckOK {
			r.Ready = false
		}
	}
	return r
}

// crlFresh says whether the full and delta CRLs served are within their validity.
func crlFresh(rv *revocation, now time.Time) error {
	for _, kind := range []string{"full", "delta"} {
		_, next, _, ok := servedCRLs(rv)[kind].get()
		switch {
		case !ok:
			return fmt.Errorf("no %s CRL published yet", kind)
		case !now.Before(next):
			return fmt.Errorf("the %s CRL expired at %s (nextUpdate)", kind, next.Format(time.RFC3339))
		}
	}
	return nil
}

// Ready is the readiness verdict the API serves (nil before the first check).
func (rt *Runtime) Ready() *apiclient.Ready { return rt.ready.Load() }

// healthy is the health check's verdict: the readiness checks but the CRLs' freshness (a stale
// CRL takes an instance out of a load balancer, but the service still works).
func (rt *Runtime) healthy() bool {
	r := rt.ready.Load()
	if r == nil {
		return false
	}
	for name, v := range r.Checks {
		if name != "crl" && v != apiclient.CheckOK {
			return false
		}
	}
	return true
}

// crlGetter returns the CRL served now (nil before the first).
type crlGetter func() *revoke.CRL

func servedCRLs(rv *revocation) map[string]crlGetter {
	return map[string]crlGetter{"full": rv.publisher.Full, "delta": rv.publisher.Delta}
}

func (g crlGetter) get() (thisUpdate, nextUpdate time.Time, number float64, ok bool) {
	c := g()
	if c == nil {
		return time.Time{}, time.Time{}, 0, false
	}
	n, _ := new(big.Float).SetInt(c.Number).Float64()
	return c.ThisUpdate, c.NextUpdate, n, true
}
