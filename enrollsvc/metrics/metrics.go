// Package metrics is the service's Prometheus instrumentation (github.com/prometheus/client_golang):
// one registry per service, served at GET /metrics in the text exposition format. Names follow
// Prometheus conventions: the aeappliance_ prefix, base units (seconds, bytes), _total for
// counters, and label values from small fixed sets: never a serial, an account or anything else a
// client chooses. A template name is a label only once a request for it was issued or held for
// approval (so it names a template the directory defines); a refused request for a name never seen
// so counts as template "other".
//
// What the audit trail records, the request counters count: Observe is called with every audit
// event the service logs (events.Recorder), and the protocol comes from the request's context
// (WithProtocol, set by Instrument at each edge).
package metrics

import (
	"context"
	"math"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	dto "github.com/prometheus/client_model/go"
)

// Protocols, the values of the protocol label.
const (
	ProtocolWSTEP = "wstep" // MS-WSTEP enrollment (and renewal)
	ProtocolXCEP  = "xcep"  // MS-XCEP policy
	ProtocolSCEP  = "scep"  // RFC 8894
	ProtocolAPI   = "api"   // the management API (admin issuance, approvals)
	ProtocolOCSP  = "ocsp"  // RFC 6960
	ProtocolCRL   = "crl"   // CRL and AIA downloads over HTTP
	ProtocolMDM   = "mdm"   // the MDM connector's PKCS requests (keys made here), worked on in the background
)

// Results, the values of the result label of aeappliance_requests_total.
const (
	ResultIssued  = "issued"
	ResultPending = "pending"
	ResultRefused = "refused" // by directory policy, the key checks or lint
	ResultDenied  = "denied"  // by a certificate manager
	ResultFailed  = "failed"  // the service could not finish it (HSM, store)
)

// maxTemplates bounds the template label's values; beyond it, "other".
const maxTemplates = 200

// HSMBuckets are the latency buckets of HSM operations: 0.25 ms to about 4 s, doubling, which
// covers an RSA-2048 signature in SoftHSM (about 1 ms), a network HSM (several ms) and one that
// queues or hangs.
var HSMBuckets = prometheus.ExponentialBuckets(0.00025, 2, 15)

// RequestBuckets are the latency buckets of a protocol request, 1 ms to 30 s.
var RequestBuckets = []float64{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30}

// Metrics is the service's registry and the instruments the service updates.
type Metrics struct {
	reg *prometheus.Registry

	requests *prometheus.CounterVec   // protocol, template, result
	issued   *prometheus.CounterVec   // protocol, template
	latency  *prometheus.HistogramVec // protocol
	hsm      *prometheus.HistogramVec // operation
	hsmErrs  *prometheus.CounterVec   // operation

	mu        sync.Mutex
	templates map[string]bool
}

// New returns the instruments on a new registry, with the Go runtime and process collectors, and
// build info: version and firmware slot ("" off the appliance).
func New(version, slot string) *Metrics {
	m := &Metrics{reg: prometheus.NewRegistry(), templates: map[string]bool{}}
	m.requests = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "aeappliance_requests_total",
		Help: "Certificate requests finished, by protocol, template and result (issued, pending, refused, denied, failed)."},
		[]string{"protocol", "template", "result"})
	m.issued = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "aeappliance_certificates_issued_total",
		Help: "Certificates issued, by protocol and template."}, []string{"protocol", "template"})
	m.latency = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "aeappliance_request_duration_seconds",
		Help: "Time to answer a protocol request, by protocol.", Buckets: RequestBuckets}, []string{"protocol"})
	m.hsm = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "aeappliance_hsm_operation_duration_seconds",
		Help: "Time of one private-key operation in the HSM (sign, decrypt), failed ones included.", Buckets: HSMBuckets},
		[]string{"operation"})
	m.hsmErrs = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "aeappliance_hsm_errors_total",
		Help: "Private-key operations the HSM failed, by operation."}, []string{"operation"})
	build := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "aeappliance_build_info",
		Help: "The running service: version and firmware slot (empty off the appliance); always 1."}, []string{"version", "slot"})
	build.WithLabelValues(version, slot).Set(1)
	m.reg.MustRegister(m.requests, m.issued, m.latency, m.hsm, m.hsmErrs, build,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	for _, op := range []string{"sign", "decrypt"} { // present from the start, so rate() has a base
		m.hsmErrs.WithLabelValues(op)
	}
	return m
}

// Registry is where the service's other collectors register (Gauge, CounterFunc, Collector).
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Handler serves the registry in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError})
}

type protocolKey struct{}

// WithProtocol marks ctx as a request of protocol p.
func WithProtocol(ctx context.Context, p string) context.Context {
	return context.WithValue(ctx, protocolKey{}, p)
}

// Protocol is the protocol ctx was marked with, "" if none.
func Protocol(ctx context.Context) string {
	p, _ := ctx.Value(protocolKey{}).(string)
	return p
}

// Instrument marks every request to next as protocol p and observes its duration. m may be nil
// (next only marks the protocol).
func (m *Metrics) Instrument(p string, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		next.ServeHTTP(w, r.WithContext(WithProtocol(r.Context(), p)))
		if m != nil {
			m.latency.WithLabelValues(p).Observe(time.Since(start).Seconds())
		}
	})
}

// Observe records that a request of protocol p took d.
func (m *Metrics) Observe(p string, d time.Duration) {
	if m != nil {
		m.latency.WithLabelValues(p).Observe(d.Seconds())
	}
}

// Outcome counts a finished request. A template is remembered as a label value when trusted is
// true (the request was issued or held: the template exists); otherwise only a remembered one is
// used, and "other" stands for the rest.
func (m *Metrics) Outcome(ctx context.Context, template, result string, trusted bool) {
	if m == nil {
		return
	}
	p := Protocol(ctx)
	if p == "" {
		p = "other"
	}
	t := m.templateLabel(template, trusted)
	m.requests.WithLabelValues(p, t, result).Inc()
	if result == ResultIssued {
		m.issued.WithLabelValues(p, t).Inc()
	}
}

func (m *Metrics) templateLabel(t string, trusted bool) string {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.templates[t] {
		return t
	}
	if trusted && t != "" && len(m.templates) < maxTemplates {
		m.templates[t] = true
		return t
	}
	return "other"
}

// HSMOp records one HSM operation of kind op ("sign", "decrypt") that took d and failed when err
// is not nil. m may be nil.
func (m *Metrics) HSMOp(op string, d time.Duration, err error) {
	if m == nil {
		return
	}
	m.hsm.WithLabelValues(op).Observe(d.Seconds())
	if err != nil {
		m.hsmErrs.WithLabelValues(op).Inc()
	}
}

// Summary is what this instance did since it started, read from its instruments.
type Summary struct {
	Issued, Refused, Failed, HSMErrors int64
	// HSMSignP50 and HSMSignP99 are estimated from the histogram's buckets (the upper bound of
	// the bucket the quantile falls in); 0 when nothing was signed.
	HSMSignP50, HSMSignP99 float64
}

// Summary reads the instruments.
func (m *Metrics) Summary() Summary {
	var s Summary
	if m == nil {
		return s
	}
	fams, err := m.reg.Gather()
	if err != nil {
		return s
	}
	label := func(lp []*dto.LabelPair, name string) string {
		for _, l := range lp {
			if l.GetName() == name {
				return l.GetValue()
			}
		}
		return ""
	}
	for _, f := range fams {
		for _, mt := range f.Metric {
			switch f.GetName() {
			case "aeappliance_requests_total":
				v := int64(mt.GetCounter().GetValue())
				switch label(mt.Label, "result") {
				case ResultIssued:
					s.Issued += v
				case ResultRefused:
					s.Refused += v
				case ResultFailed:
					s.Failed += v
				}
			case "aeappliance_hsm_errors_total":
				s.HSMErrors += int64(mt.GetCounter().GetValue())
			case "aeappliance_hsm_operation_duration_seconds":
				if label(mt.Label, "operation") == "sign" {
					s.HSMSignP50, s.HSMSignP99 = quantile(mt.GetHistogram(), 0.5), quantile(mt.GetHistogram(), 0.99)
				}
			}
		}
	}
	return s
}

// quantile is the upper bound of the bucket holding quantile q of h (+Inf: the largest bound):
// the bucket of the nearest-rank sample, the ceil(q*n)-th smallest.
func quantile(h *dto.Histogram, q float64) float64 {
	n := h.GetSampleCount()
	if n == 0 {
		return 0
	}
	rank := uint64(math.Ceil(q * float64(n)))
	if rank == 0 {
		rank = 1
	}
	last := 0.0
	for _, b := range h.GetBucket() {
		last = b.GetUpperBound()
		if b.GetCumulativeCount() >= rank {
			return last
		}
	}
	return last
}
