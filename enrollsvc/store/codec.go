// How values are checked and encoded for both databases: times (and how SQLite stores them),
// serials, JSON fields, optional values, and the limits of the filters.

package store

import (
	"bytes"
	"database/sql"
	"encoding/json"
	"fmt"
	"time"
)

// timeLayout is the stored form of a time in SQLite: UTC, fixed width, so that the text sorts as
// the times do (for years 0000 to 9999). It has nine digits of fraction, as files written before
// stores kept microseconds have; the last three are now always zero.
const timeLayout = "2006-01-02T15:04:05.000000000Z"

// encTime returns the form SQLite stores t in, truncated to the microsecond as every store
// keeps it (see Store); the zero time is stored as NULL.
func encTime(t time.Time) (any, error) {
	if t.IsZero() {
		return nil, nil
	}
	u := t.UTC()
	if y := u.Year(); y < 0 || y > 9999 {
		return nil, fmt.Errorf("store: time %v is outside the years 0000-9999", t)
	}
	return u.Truncate(time.Microsecond).Format(timeLayout), nil
}

// decTime reads a stored time back, as UTC; NULL is the zero time.
func decTime(v sql.NullString) (time.Time, error) {
	if !v.Valid {
		return time.Time{}, nil
	}
	if t, ok := parseTimeLayout(v.String); ok {
		return t, nil
	}
	t, err := time.Parse(timeLayout, v.String)
	if err != nil {
		return time.Time{}, fmt.Errorf("store: stored time %q: %w", v.String, err)
	}
	return t.UTC(), nil
}

// parseTimeLayout reads the exact form timeLayout writes, digit by digit (a CRL reads a million);
// ok is false for anything else, which time.Parse then judges.
func parseTimeLayout(s string) (time.Time, bool) {
	// 2006-01-02T15:04:05.000000000Z
	if len(s) != len(timeLayout) || s[4] != '-' || s[7] != '-' || s[10] != 'T' || s[13] != ':' || s[16] != ':' ||
		s[19] != '.' || s[29] != 'Z' {
		return time.Time{}, false
	}
	num := func(from, to int) (int, bool) {
		n := 0
		for i := from; i < to; i++ {
			c := s[i]
			if c < '0' || c > '9' {
				return 0, false
			}
			n = n*10 + int(c-'0')
		}
		return n, true
	}
	var f [7]int
	for i, r := range [7][2]int{{0, 4}, {5, 7}, {8, 10}, {11, 13}, {14, 16}, {17, 19}, {20, 29}} {
		var ok bool
		if f[i], ok = num(r[0], r[1]); !ok {
			return time.Time{}, false
		}
	}
	t := time.Date(f[0], time.Month(f[1]), f[2], f[3], f[4], f[5], f[6], time.UTC)
	// time.Date normalises out-of-range fields (month 13, 31 April): such text is not ours.
	if t.Year() != f[0] || int(t.Month()) != f[1] || t.Day() != f[2] || t.Hour() != f[3] || t.Minute() != f[4] || t.Second() != f[5] {
		return time.Time{}, false
	}
	return t, true
}

// checkTimes refuses times outside the years 0000 to 9999, which not every store keeps.
func checkTimes(ts ...time.Time) error {
	for _, t := range ts {
		if y := t.UTC().Year(); !t.IsZero() && (y < 0 || y > 9999) {
			return fmt.Errorf("store: time %v is outside the years 0000-9999", t)
		}
	}
	return nil
}

// checkSerial accepts only the canonical form of a positive serial of at most 20 octets
// (RFC 5280 section 4.1.2.2), as certutil.SerialString makes it (big.Int.Text(16)), so that one
// number cannot be recorded under two spellings.
func checkSerial(serial string) error {
	ok := serial != "" && len(serial) <= 40 && serial[0] != '0'
	for i := 0; ok && i < len(serial); i++ {
		c := serial[i]
		ok = '0' <= c && c <= '9' || 'a' <= c && c <= 'f'
	}
	if !ok {
		return fmt.Errorf("store: invalid serial %q: want 1 to 40 lower-case hex digits without leading zeros", serial)
	}
	return nil
}

// decFields reads event fields back. Numbers come back as json.Number, which keeps large
// integers exact (float64 would not) and writes itself out unchanged.
func decFields(v sql.NullString) (map[string]any, error) {
	if !v.Valid {
		return nil, nil
	}
	d := json.NewDecoder(bytes.NewReader([]byte(v.String)))
	d.UseNumber()
	var m map[string]any
	if err := d.Decode(&m); err != nil {
		return nil, fmt.Errorf("store: stored event fields: %w", err)
	}
	return m, nil
}

// nullString stores "" as NULL.
func nullString(s string) any {
	if s == "" {
		return nil
	}
	return s
}

// nullInt64 stores 0 as NULL.
func nullInt64(n int64) any {
	if n == 0 {
		return nil
	}
	return n
}

// limit applies a filter's documented default (for 0) and maximum; a negative limit is an error.
func limit(what string, n, def, most int) (int, error) {
	switch {
	case n < 0:
		return 0, fmt.Errorf("store: %s: negative limit %d", what, n)
	case n == 0:
		return def, nil
	case n > most:
		return most, nil
	}
	return n, nil
}
