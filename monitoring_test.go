package aeappliance_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestMonitoringDocRules: the alert rules docs/monitoring.md gives parse (promtool check rules),
// name only metrics the service exports, and fire: promtool test rules runs the HSM-down and
// CRL-expired alerts on synthetic series.
func TestMonitoringDocRules(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("promtool is required on CI (make deps installs Debian's prometheus): %v", err)
		}
		t.Skipf("promtool not installed (make deps): %v", err)
	}
	doc, err := os.ReadFile("docs/monitoring.md")
	if err != nil {
		t.Fatal(err)
	}
	_, after, ok := strings.Cut(string(doc), "## Alert rules")
	if !ok {
		t.Fatal("docs/monitoring.md has no Alert rules section")
	}
	_, block, ok := strings.Cut(after, "```yaml\n")
	block, _, ok2 := strings.Cut(block, "```")
	if !ok || !ok2 {
		t.Fatal("the Alert rules section has no yaml block")
	}
	dir := t.TempDir()
	rules := filepath.Join(dir, "rules.yml")
	if err := os.WriteFile(rules, []byte(block), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(promtool, "check", "rules", rules).CombinedOutput(); err != nil {
		t.Fatalf("promtool check rules: %v\n%s", err, out)
	}

	// Every metric the rules name is one the service registers.
	var src strings.Builder
	for _, f := range []string{"enrollsvc/metrics/metrics.go", "enrollsvc/daemon/metrics.go"} {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		src.Write(b)
	}
	for _, m := range regexp.MustCompile(`aeappliance_[a-z0-9_]+`).FindAllString(block, -1) {
		name := strings.TrimSuffix(m, "_bucket")
		if !strings.Contains(src.String(), `"`+name+`"`) {
			t.Errorf("the alert rules name %s, which the service does not export", m)
		}
	}

	tests := filepath.Join(dir, "tests.yml")
	os.WriteFile(tests, []byte(`rule_files: [rules.yml]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - series: 'aeappliance_hsm_up{instance="ca1"}'
        values: '1 1 0 0 0 0'
      - series: 'aeappliance_crl_next_update_seconds{instance="ca1",kind="delta"}'
        values: '120 60 0 -60 -120 -180'
    alert_rule_test:
      - eval_time: 5m
        alertname: AEApplianceHSMDown
        exp_alerts:
          - exp_labels: {severity: critical, instance: ca1}
            exp_annotations:
              summary: "ca1: the HSM fails its health check: nothing can be signed (certificates, CRLs, OCSP)"
      - eval_time: 1m
        alertname: AEApplianceHSMDown
        exp_alerts: []
      - eval_time: 3m
        alertname: AEApplianceCRLExpired
        exp_alerts:
          - exp_labels: {severity: critical, instance: ca1, kind: delta}
            exp_annotations:
              summary: "ca1: the delta CRL served is past its nextUpdate: relying parties fail revocation checks"
`), 0o600)
	cmd := exec.Command(promtool, "test", "rules", tests)
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("promtool test rules: %v\n%s", err, out)
	}
}
