package metrics

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// value is the counter vector c's value for the label values given, in its labels' order.
func value(t *testing.T, c prometheus.Collector, labels ...string) float64 {
	t.Helper()
	vec, ok := c.(*prometheus.CounterVec)
	if !ok {
		t.Fatalf("%T is not a counter vector", c)
	}
	var m dto.Metric
	if err := vec.WithLabelValues(labels...).Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

// series counts the series c has.
func series(c prometheus.Collector) int {
	ch := make(chan prometheus.Metric, 1024)
	c.Collect(ch)
	close(ch)
	return len(ch)
}

// Outcomes count by protocol, template and result; a template name becomes a label value only
// once a request for it was issued or held, and at most maxTemplates of them: a client cannot
// grow the series by sending names.
func TestOutcomeLabels(t *testing.T) {
	m := New("1.0", "a")
	ctx := WithProtocol(context.Background(), ProtocolSCEP)
	m.Outcome(ctx, "Made-Up-By-A-Client", ResultRefused, false)
	m.Outcome(ctx, "Machine", ResultIssued, true)
	m.Outcome(ctx, "Machine", ResultRefused, false) // a known name stays itself
	m.Outcome(context.Background(), "Machine", ResultFailed, true)
	for _, c := range []struct {
		labels []string
		want   float64
	}{
		{[]string{ProtocolSCEP, "other", ResultRefused}, 1},
		{[]string{ProtocolSCEP, "Machine", ResultIssued}, 1},
		{[]string{ProtocolSCEP, "Machine", ResultRefused}, 1},
		{[]string{"other", "Machine", ResultFailed}, 1},
	} {
		if got := value(t, m.requests, c.labels...); got != c.want {
			t.Errorf("requests_total%v = %v, want %v", c.labels, got, c.want)
		}
	}
	if got := value(t, m.issued, ProtocolSCEP, "Machine"); got != 1 {
		t.Errorf("certificates_issued_total{scep,Machine} = %v, want 1", got)
	}
	if n := series(m.requests); n != 4 {
		t.Errorf("%d request series, want 4", n)
	}
	for i := range maxTemplates + 50 {
		m.Outcome(ctx, fmt.Sprintf("T%d", i), ResultIssued, true)
	}
	if n := len(m.templates); n != maxTemplates {
		t.Errorf("%d template label values, want at most %d", n, maxTemplates)
	}
	if got := value(t, m.issued, ProtocolSCEP, "other"); got != 51 {
		t.Errorf("issuances beyond the template bound under other = %v, want 51", got)
	}
	var nilM *Metrics
	nilM.Outcome(ctx, "x", ResultIssued, true) // a service without metrics
	nilM.HSMOp("sign", time.Millisecond, nil)
}

// Instrument marks the protocol for the handler and times the request.
func TestInstrument(t *testing.T) {
	m := New("1.0", "")
	seen := ""
	h := m.Instrument(ProtocolOCSP, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { seen = Protocol(r.Context()) }))
	h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodGet, "/ocsp", nil))
	if seen != ProtocolOCSP {
		t.Errorf("protocol in the handler = %q", seen)
	}
	if n := series(m.latency); n != 1 {
		t.Errorf("%d latency series, want 1", n)
	}
}

// The HSM buckets resolve what an HSM takes: from a fast token's signature well under a
// millisecond to a slow or queued network HSM's seconds, each bucket double the one before.
func TestHSMBuckets(t *testing.T) {
	if first, last := HSMBuckets[0], HSMBuckets[len(HSMBuckets)-1]; first > 0.0005 || last < 2 {
		t.Errorf("HSM buckets span %v s to %v s; want at most 0.5 ms to at least 2 s", first, last)
	}
	for i := 1; i < len(HSMBuckets); i++ {
		if r := HSMBuckets[i] / HSMBuckets[i-1]; r > 2.01 {
			t.Errorf("bucket %v follows %v: too coarse to tell latencies apart", HSMBuckets[i], HSMBuckets[i-1])
		}
	}
}

// Summary reads back what the instruments counted, with the signature quantiles at the upper
// bound of the nearest-rank sample's bucket.
func TestSummary(t *testing.T) {
	m := New("1.0", "")
	ctx := WithProtocol(context.Background(), ProtocolAPI)
	m.Outcome(ctx, "server", ResultIssued, true)
	m.Outcome(ctx, "server", ResultIssued, true)
	m.Outcome(ctx, "server", ResultRefused, false)
	m.Outcome(ctx, "server", ResultFailed, true)
	if s := m.Summary(); s.HSMSignP50 != 0 || s.HSMSignP99 != 0 {
		t.Errorf("quantiles before any signature: %+v", s)
	}
	// 98 fast signatures (1 ms: the 1 ms bucket), 2 slow (100 ms: the 128 ms bucket), 1 failed decryption.
	for range 98 {
		m.HSMOp("sign", time.Millisecond, nil)
	}
	m.HSMOp("sign", 100*time.Millisecond, nil)
	m.HSMOp("sign", 100*time.Millisecond, errors.New("CKR_DEVICE_ERROR"))
	m.HSMOp("decrypt", time.Millisecond, errors.New("CKR_DEVICE_ERROR"))
	s := m.Summary()
	if s.Issued != 2 || s.Refused != 1 || s.Failed != 1 || s.HSMErrors != 2 {
		t.Errorf("summary %+v", s)
	}
	if s.HSMSignP50 != 0.001 || s.HSMSignP99 != 0.128 {
		t.Errorf("sign p50 %v p99 %v; want 0.001 and 0.128 (the 99th of 100 is a slow one)", s.HSMSignP50, s.HSMSignP99)
	}
	// The median of three is the second: 1 ms, 100 ms, 100 ms -> the 128 ms bucket.
	m3 := New("1.0", "")
	for _, d := range []time.Duration{time.Millisecond, 100 * time.Millisecond, 100 * time.Millisecond} {
		m3.HSMOp("sign", d, nil)
	}
	if p50 := m3.Summary().HSMSignP50; p50 != 0.128 {
		t.Errorf("median of 1, 100, 100 ms in bucket %v, want 0.128", p50)
	}
	var out strings.Builder
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	out.WriteString(rec.Body.String())
	for _, want := range []string{`aeappliance_build_info{slot="",version="1.0"} 1`, `aeappliance_hsm_errors_total{operation="sign"} 1`,
		`aeappliance_hsm_operation_duration_seconds_bucket{operation="sign",le="0.001"} 98`} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}
