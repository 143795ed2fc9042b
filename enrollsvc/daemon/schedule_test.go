package daemon

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"filippo.io/age"

	"github.com/enrollment-appliance/aeappliance/apiclient"
)

// A backup is due when the last complete one (scheduled or not) is older than the schedule's
// period, never while one runs, and not again within the retry pause after a failure.
func TestScheduleDue(t *testing.T) {
	id, _ := age.GenerateX25519Identity()
	s := &scheduler{}
	t0 := time.Date(2026, 12, 6, 8, 0, 0, 0, time.UTC)
	if s.due(t0, time.Time{}) {
		t.Error("due without a schedule")
	}
	if err := s.set(&apiclient.BackupSchedule{Every: "6h", Recipients: []string{id.Recipient().String()}, Keep: 3}); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		now, last time.Time
		want      bool
	}{{t0, time.Time{}, true}, {t0, t0.Add(-5 * time.Hour), false}, {t0, t0.Add(-6 * time.Hour), true}} {
		if got := s.due(c.now, c.last); got != c.want {
			t.Errorf("due(%s, last %s) = %v", c.now, c.last, got)
		}
	}
	s.failedAt = t0
	if s.due(t0.Add(time.Minute), time.Time{}) || !s.due(t0.Add(5*time.Minute), time.Time{}) {
		t.Error("a failure is retried after 5 minutes, not before")
	}
	s.failedAt, s.running = time.Time{}, true
	if s.due(t0, time.Time{}) {
		t.Error("due while a backup runs")
	}
}

func TestCheckSchedule(t *testing.T) {
	id, _ := age.GenerateX25519Identity()
	r := []string{id.Recipient().String()}
	for _, bad := range []apiclient.BackupSchedule{
		{Every: "30s", Recipients: r, Keep: 1}, {Every: "24h", Keep: 1}, {Every: "24h", Recipients: []string{"age1x"}, Keep: 1},
		{Every: "24h", Recipients: r}, {Every: "24h", Recipients: r, PushURL: "http://host/"}, {Every: "24h", Recipients: r, Keep: -1},
		{Every: "24h", Recipients: r, PushURL: "https://host/", PushCAPEM: "nope"},
	} {
		if _, err := checkSchedule(bad); err == nil {
			t.Errorf("%+v passed", bad)
		}
	}
	if _, err := checkSchedule(apiclient.BackupSchedule{Every: "24h", Recipients: r, PushURL: "https://backup.example/ca/"}); err != nil {
		t.Error(err)
	}
}

// prune keeps the newest keep backups and nothing else is touched.
func TestPrune(t *testing.T) {
	dir := t.TempDir()
	names := []string{"backup-a-20261201T000000.000Z.age", "backup-a-20261202T000000.000Z.age", "backup-a-20261203T000000.000Z.age", "other.txt"}
	for _, n := range names {
		os.WriteFile(filepath.Join(dir, n), nil, 0o600)
	}
	if err := prune(dir, 2); err != nil {
		t.Fatal(err)
	}
	left, _ := filepath.Glob(filepath.Join(dir, "*"))
	for i := range left {
		left[i] = filepath.Base(left[i])
	}
	if !slices.Equal(left, names[1:]) {
		t.Errorf("left %v", left)
	}
	if safeName("ca 1/../x") != "ca_1_.._x" || safeName("..") != "appliance" {
		t.Errorf("safeName: %q %q", safeName("ca 1/../x"), safeName(".."))
	}
}
