package main

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/enrollment-appliance/aeappliance/apiclient"
	"github.com/enrollment-appliance/aeappliance/config"
)

// needPromtool returns the path of Prometheus's promtool (Debian's prometheus package, make deps).
func needPromtool(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("promtool")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("promtool is required on CI (make deps installs Debian's prometheus): %v", err)
		}
		t.Skipf("promtool not installed (make deps): %v", err)
	}
	return p
}

// scrape reads GET /metrics with aectl and returns every sample: "name{label="v",...}" (labels
// sorted) to its value; a histogram gives its _count and _sum.
func scrape(t *testing.T, dir string) map[string]float64 {
	t.Helper()
	out, errOut, err := runBin(t, "aectl", "--data", dir, "metrics")
	if err != nil {
		t.Fatalf("aectl metrics: %v\n%s", err, errOut)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(out))
	if err != nil {
		t.Fatalf("GET /metrics is not the Prometheus text format: %v", err)
	}
	samples := map[string]float64{}
	for name, f := range fams {
		for _, m := range f.Metric {
			var ls []string
			for _, l := range m.Label {
				ls = append(ls, fmt.Sprintf("%s=%q", l.GetName(), l.GetValue()))
			}
			sort.Strings(ls)
			key := name + "{" + strings.Join(ls, ",") + "}"
			switch {
			case m.Counter != nil:
				samples[key] = m.Counter.GetValue()
			case m.Gauge != nil:
				samples[key] = m.Gauge.GetValue()
			case m.Histogram != nil:
				samples[strings.Replace(key, "{", "_count{", 1)] = float64(m.Histogram.GetSampleCount())
				samples[strings.Replace(key, "{", "_sum{", 1)] = m.Histogram.GetSampleSum()
			}
		}
	}
	return samples
}

// movedExactly checks that, between two scrapes, the series of the request counters moved by
// exactly want (series -> increase) and no other series of those families did.
func movedExactly(t *testing.T, before, after map[string]float64, want map[string]float64) {
	t.Helper()
	for key, v := range after {
		if !strings.HasPrefix(key, "aeappliance_requests_total{") && !strings.HasPrefix(key, "aeappliance_certificates_issued_total{") {
			continue
		}
		if d := v - before[key]; d != want[key] {
			t.Errorf("%s moved by %v, want %v", key, d, want[key])
		}
	}
	for key := range want {
		if _, ok := after[key]; !ok {
			t.Errorf("%s is missing from /metrics", key)
		}
	}
}

// TestMetricsAndReadiness: GET /metrics passes promtool's checks; one certificate issued over
// the management API moves exactly its counters and times one HSM signature; a metrics token,
// once set, is required (the admin token still works) until it is cleared; and /api/v1/ready
// reports each check.
func TestMetricsAndReadiness(t *testing.T) {
	promtool := needPromtool(t)
	dir := initDir(t)
	startServe(t, dir)

	out, _, err := runBin(t, "aectl", "--data", dir, "metrics")
	if err != nil {
		t.Fatal(err)
	}
	check := exec.Command(promtool, "check", "metrics")
	check.Stdin = strings.NewReader(out)
	if res, err := check.CombinedOutput(); err != nil {
		t.Fatalf("promtool check metrics: %v\n%s", err, res)
	}
	for _, name := range []string{"aeappliance_build_info", "aeappliance_hsm_up", "aeappliance_store_up", "aeappliance_ready",
		"aeappliance_pending_requests", "aeappliance_certificates_expiring", "aeappliance_store_size_bytes",
		"aeappliance_hsm_sessions", "aeappliance_ca_certificate_expiry_timestamp_seconds", "go_goroutines"} {
		if !strings.Contains(out, "\n"+name+" ") && !strings.Contains(out, "\n"+name+"{") {
			t.Errorf("/metrics lacks %s", name)
		}
	}

	before := scrape(t, dir)
	csrFile := filepath.Join(t.TempDir(), "req.csr")
	os.WriteFile(csrFile, []byte(newCSR(t, "metrics.example.com")), 0o600)
	var res struct{ Serial string }
	aectlJSON(t, dir, &res, "issue", "--csr", csrFile, "--profile", "server")
	after := scrape(t, dir)
	movedExactly(t, before, after, map[string]float64{
		`aeappliance_requests_total{protocol="api",result="issued",template="admin:server"}`: 1,
		`aeappliance_certificates_issued_total{protocol="api",template="admin:server"}`:      1,
	})
	sign := `aeappliance_hsm_operation_duration_seconds_count{operation="sign"}`
	if after[sign] < before[sign]+1 {
		t.Errorf("%s went from %v to %v; want the issuance's signature counted", sign, before[sign], after[sign])
	}
	// The buckets fit the HSM: every real SoftHSM signature so far fell within the finite
	// buckets (the unit test checks their span and resolution).
	out, _, err = runBin(t, "aectl", "--data", dir, "metrics")
	if err != nil {
		t.Fatal(err)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(strings.NewReader(out))
	if err != nil {
		t.Fatal(err)
	}
	signs := 0
	for _, m := range fams["aeappliance_hsm_operation_duration_seconds"].GetMetric() {
		if m.GetLabel()[0].GetValue() != "sign" {
			continue
		}
		signs++
		h := m.GetHistogram()
		b := h.GetBucket()
		if top := b[len(b)-1]; top.GetCumulativeCount() != h.GetSampleCount() {
			t.Errorf("%d of %d HSM signatures took longer than the largest bucket (%v s)", h.GetSampleCount()-top.GetCumulativeCount(),
				h.GetSampleCount(), top.GetUpperBound())
		}
		t.Logf("HSM signatures: %d, mean %.2f ms", h.GetSampleCount(), 1000*h.GetSampleSum()/float64(h.GetSampleCount()))
	}
	if signs != 1 {
		t.Errorf("%d series of HSM signature latency, want 1", signs)
	}
	if after["aeappliance_hsm_up{}"] != 1 || after["aeappliance_store_up{}"] != 1 || after["aeappliance_ready{}"] != 1 {
		t.Errorf("up gauges: hsm %v store %v ready %v; want 1", after["aeappliance_hsm_up{}"], after["aeappliance_store_up{}"], after["aeappliance_ready{}"])
	}

	// Readiness, as a load balancer sees it.
	var ready apiclient.Ready
	aectlJSON(t, dir, &ready, "ready")
	if !ready.Ready || ready.Checks["hsm"] != "ok" || ready.Checks["store"] != "ok" || ready.Checks["ca"] != "ok" {
		t.Errorf("ready = %+v", ready)
	}

	// The metrics token.
	addr, _ := os.ReadFile(filepath.Join(dir, config.APIAddrFile))
	url := "https://" + strings.TrimSpace(string(addr)) + apiclient.MetricsPath
	caPEM, _ := os.ReadFile(filepath.Join(dir, config.CACertFile))
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	get := func(token string) int {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, url, nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := get(""); code != http.StatusOK {
		t.Fatalf("GET /metrics without a token set = %d, want 200 (open)", code)
	}
	var tok apiclient.MetricsToken
	aectlJSON(t, dir, &tok, "metrics", "token", "new")
	if len(tok.Token) != 64 {
		t.Fatalf("metrics token new = %+v", tok)
	}
	admin, _ := os.ReadFile(filepath.Join(dir, config.APITokenFile))
	for _, c := range []struct {
		token string
		want  int
	}{{"", http.StatusUnauthorized}, {"wrong", http.StatusUnauthorized}, {tok.Token, http.StatusOK},
		{strings.TrimSpace(string(admin)), http.StatusOK}} {
		if code := get(c.token); code != c.want {
			t.Errorf("GET /metrics with token %.8q after setting one = %d, want %d", c.token, code, c.want)
		}
	}
	var evs []apiclient.Event
	aectlJSON(t, dir, &evs, "events", "--id", "3060")
	if len(evs) != 1 || evs[0].Fields["setting"] != "metrics" || bytes.Contains(mustJSON(t, evs), []byte(tok.Token)) {
		t.Errorf("setting events = %+v; want one naming the setting and never the token", evs)
	}
	if out, errOut, err := runBin(t, "aectl", "--data", dir, "metrics", "token", "clear"); err != nil {
		t.Fatalf("metrics token clear: %v\n%s%s", err, out, errOut)
	}
	if code := get(""); code != http.StatusOK {
		t.Errorf("GET /metrics after clearing the token = %d, want 200", code)
	}
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
