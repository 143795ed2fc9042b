package store

import (
	"database/sql"
	"testing"
	"time"
)

// decTime's digit-by-digit reading of the stored form agrees with time.Parse, and leaves what is
// not that exact form (or not a real date) to time.Parse, which refuses it.
func TestDecTimeFastPath(t *testing.T) {
	for _, want := range []time.Time{time.Date(2026, 12, 5, 23, 59, 58, 123456000, time.UTC), time.Date(1, 1, 1, 0, 0, 0, 1000, time.UTC),
		time.Date(9999, 12, 31, 23, 59, 59, 0, time.UTC), time.Date(2024, 2, 29, 0, 0, 0, 1000, time.UTC)} {
		enc, err := encTime(want)
		if err != nil {
			t.Fatal(err)
		}
		s := enc.(string)
		fast, ok := parseTimeLayout(s)
		slow, err := time.Parse(timeLayout, s)
		if !ok || err != nil || !fast.Equal(slow) || fast.Location() != time.UTC {
			t.Errorf("%s: fast %v %v, time.Parse %v %v", s, fast, ok, slow, err)
		}
	}
	for _, s := range []string{"2026-13-05T00:00:00.000000000Z", "2025-02-29T00:00:00.000000000Z", "2026-12-05T24:00:00.000000000Z",
		"2026-12-05 00:00:00.000000000Z", "2026-12-05T00:00:00.00000000xZ", "2026-12-05T00:00:00Z"} {
		if _, ok := parseTimeLayout(s); ok {
			t.Errorf("parseTimeLayout(%q) accepted it", s)
		}
		if _, err := decTime(sql.NullString{String: s, Valid: true}); err == nil {
			t.Errorf("decTime(%q) accepted it", s)
		}
	}
}
