package events

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/enrollment-appliance/aeappliance/enrollsvc/store"
)

// The ranges are part of the interface: every ID sits in the range of its subsystem, and every
// defined ID has a name, a category and a level.
func TestDefinitions(t *testing.T) {
	ranges := []struct{ lo, hi ID }{{1000, 1299}, {2000, 2299}, {3000, 3099}, {4000, 4599}}
	for _, d := range All() {
		in := false
		for _, r := range ranges {
			in = in || (d.ID >= r.lo && d.ID <= r.hi)
		}
		if !in {
			t.Errorf("event %d is outside every range", d.ID)
		}
		if d.Name == "" || (d.Category != Admin && d.Category != Operational) {
			t.Errorf("event %d = %+v, want a name and category Admin or Operational", d.ID, d)
		}
	}
	// A few IDs monitoring depends on must not move.
	for id, want := range map[ID]int{SigningStarted: 2100, CertificateIssued: 2101, APIAuthFailed: 3001, HSMFailure: 1110,
		APILockout: 3040, RateLimited: 3041, PasswordStopped: 3042} {
		if int(id) != want {
			t.Errorf("event ID = %d, want %d", id, want)
		}
	}
}

type memStore struct {
	events []store.Event
	err    error
}

func (m *memStore) AppendEvent(_ context.Context, e store.Event) (int64, error) {
	if m.err != nil {
		return 0, m.err
	}
	m.events = append(m.events, e)
	return int64(len(m.events)), nil
}

func TestRecorderStoresAndLogsJSON(t *testing.T) {
	var buf bytes.Buffer
	ms := &memStore{}
	now := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
	r := NewRecorder(ms, slog.New(slog.NewJSONHandler(&buf, nil)), func() time.Time { return now })
	if err := r.Record(context.Background(), CertificateIssued, "", "serial", "0a1b"); err != nil {
		t.Fatalf("Record: %v", err)
	}
	if len(ms.events) != 1 || ms.events[0].ID != 2101 || ms.events[0].Category != "Operational" ||
		ms.events[0].Fields["serial"] != "0a1b" || !ms.events[0].Time.Equal(now) {
		t.Fatalf("stored = %+v, want one event 2101 Operational with serial", ms.events)
	}
	var line struct {
		Msg   string `json:"msg"`
		Audit struct {
			EventID  int    `json:"event_id"`
			Category string `json:"category"`
			Seq      int64  `json:"seq"`
			Serial   string `json:"serial"`
		} `json:"audit"`
	}
	if err := json.Unmarshal(buf.Bytes(), &line); err != nil {
		t.Fatalf("log line %q is not JSON: %v", buf.String(), err)
	}
	if line.Audit.EventID != 2101 || line.Audit.Seq != 1 || line.Audit.Serial != "0a1b" || line.Msg != "certificate issued" {
		t.Errorf("log line = %+v, want event 2101 seq 1 serial 0a1b", line)
	}
}

func TestRecorderLogsEvenWhenStoreFails(t *testing.T) {
	var buf bytes.Buffer
	boom := errors.New("disk full")
	r := NewRecorder(&memStore{err: boom}, slog.New(slog.NewJSONHandler(&buf, nil)), nil)
	err := r.Record(context.Background(), HSMFailure, "token gone")
	if !errors.Is(err, boom) {
		t.Errorf("Record error = %v, want it to wrap %v", err, boom)
	}
	if !bytes.Contains(buf.Bytes(), []byte(`"event_id":1110`)) {
		t.Errorf("log = %s, want the event logged although the store failed", buf.String())
	}
}

func TestNewPanicsOnUndefinedID(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Error("New(undefined ID) did not panic")
		}
	}()
	New(time.Now(), ID(9999), "")
}
