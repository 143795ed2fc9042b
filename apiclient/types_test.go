package apiclient_test

import (
	"strings"
	"testing"
	"time"

	"github.com/enrollment-appliance/aeappliance/apiclient"
)

// The status lines an operator reads first say what the store counted, and say plainly when it
// could not count.
func TestOpsRows(t *testing.T) {
	text := func(st apiclient.Status) string {
		var b strings.Builder
		for _, r := range st.OpsRows() {
			b.WriteString(r[0] + ": " + r[1] + "\n")
		}
		return b.String()
	}
	st := apiclient.Status{Backup: apiclient.BackupInfo{Last: time.Now().Add(-time.Hour), By: "schedule", Bytes: 4096},
		Activity: apiclient.Activity{IssuedToday: 12, Pending: 3, Issued: 5, Refused: 1, Failed: 2, HSMSignP50: 0.001,
			HSMSignP99: 0.004, HSMSessions: "1/8"}}
	got := text(st)
	for _, want := range []string{"Today: 12 issued since 00:00 UTC (every instance); 3 pending approval",
		"Since start: 5 issued, 1 refused, 2 failed", "Last backup: ", "by schedule", "p50 <= 1ms, p99 <= 4ms", "sessions 1/8"} {
		if !strings.Contains(got, want) {
			t.Errorf("status lacks %q:\n%s", want, got)
		}
	}
	st = apiclient.Status{Activity: apiclient.Activity{IssuedToday: -1, Pending: -1}}
	if got := text(st); !strings.Contains(got, "Today: unknown") || !strings.Contains(got, "Last backup: never") {
		t.Errorf("status without store figures or backups:\n%s", got)
	}
}
