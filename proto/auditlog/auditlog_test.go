package auditlog

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"strings"
	"testing"
	"time"
)

func rec(n int64, prev []byte, msg string) Record {
	return Record{Instance: "a", N: n, Prev: prev, ID: 2101, Category: "Operational", Level: "info",
		Time: time.Date(2026, 12, 6, 8, 0, 0, 123456000, time.UTC), Message: msg,
		Fields: map[string]any{"serial": "1f", "request_id": json.Number("18446744073709551615")}}
}

// The hash is a fixed function of the encoding: a change to it would break every stored trail,
// so this vector must only change with a new domain string (v2). It was computed independently
// (Python's hashlib over the encoding described in Hash).
func TestHashVector(t *testing.T) {
	h, err := Hash(rec(1, Zero(), "certificate issued"))
	if err != nil {
		t.Fatal(err)
	}
	const want = "ce3a38e630adadd0e2b52fbfc0785009be8ca7913fb411855391a4ae6955facf"
	if got := hex.EncodeToString(h); got != want {
		t.Fatalf("hash = %s, want %s", got, want)
	}
	// Every field is covered.
	base := rec(1, Zero(), "certificate issued")
	variants := []func(r *Record){
		func(r *Record) { r.Instance = "b" },
		func(r *Record) { r.N = 2 },
		func(r *Record) { r.Prev = bytes.Repeat([]byte{1}, HashSize) },
		func(r *Record) { r.ID = 2102 },
		func(r *Record) { r.Category = "Admin" },
		func(r *Record) { r.Level = "warning" },
		func(r *Record) { r.Time = r.Time.Add(time.Microsecond) },
		func(r *Record) { r.Message = "certificate issued." },
		func(r *Record) { r.Fields = map[string]any{"serial": "1f"} },
		func(r *Record) { r.Fields = nil },
		func(r *Record) { r.Fields = map[string]any{} },
	}
	seen := map[string]bool{hex.EncodeToString(h): true}
	for i, f := range variants {
		r := base
		f(&r)
		h2, err := Hash(r)
		if err != nil {
			t.Fatal(err)
		}
		if seen[hex.EncodeToString(h2)] {
			t.Errorf("variant %d hashes like another record", i)
		}
		seen[hex.EncodeToString(h2)] = true
	}
	// Field encoding cannot shift bytes between strings: ("ab","c") and ("a","bc").
	r1, r2 := base, base
	r1.Category, r1.Level = "ab", "c"
	r2.Category, r2.Level = "a", "bc"
	h1, _ := Hash(r1)
	h2, _ := Hash(r2)
	if bytes.Equal(h1, h2) {
		t.Error("length prefixes do not separate adjacent strings")
	}
}

// What a reader decodes from the canonical text (numbers as json.Number) and encodes again is
// the same text, however the writer held the values.
func TestCanonicalFieldsRoundTrip(t *testing.T) {
	in := map[string]any{"big": uint64(1) << 63, "f": 0.1, "html": "<&>", "s": struct {
		Z int `json:"z"`
		A int `json:"a"`
	}{1, 2}, "l": []any{1, "x", nil}, "u": "\u2028é"}
	c1, err := CanonicalFields(in)
	if err != nil {
		t.Fatal(err)
	}
	d := json.NewDecoder(bytes.NewReader(c1))
	d.UseNumber()
	var back map[string]any
	if err := d.Decode(&back); err != nil {
		t.Fatal(err)
	}
	c2, err := CanonicalFields(back)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(c1, c2) {
		t.Fatalf("canonical fields do not round-trip:\n%s\n%s", c1, c2)
	}
	if !strings.Contains(string(c1), `"s":{"a":2,"z":1}`) {
		t.Errorf("nested objects are not in key order: %s", c1)
	}
}

func TestVerifier(t *testing.T) {
	chain := func(n int) []Record {
		var out []Record
		prev := Zero()
		for i := 1; i <= n; i++ {
			r := rec(int64(i), prev, "event")
			r.Seq = int64(10 + i)
			h, _ := Hash(r)
			r.Hash = h
			prev = h
			out = append(out, r)
		}
		return out
	}
	v := NewVerifier()
	// Events from before the trail was chained come first and are counted, not covered.
	if err := v.Add(Record{Seq: 1}); err != nil {
		t.Fatal(err)
	}
	for _, r := range chain(5) {
		if err := v.Add(r); err != nil {
			t.Fatal(err)
		}
	}
	res := v.Result()
	if res.Broken != nil || res.Events != 5 || res.Unchained != 1 || len(res.Chains) != 1 || res.Chains[0].LastSeq != 15 {
		t.Fatalf("result %+v", res)
	}
	if err := v.Add(Record{Seq: 20}); err == nil || !strings.Contains(err.Error(), "no hash") {
		t.Errorf("an unchained event after the chain began: %v", err)
	}
	if err := v.Add(chain(1)[0]); err == nil || err != v.Result().Broken {
		t.Error("a verifier keeps its first break")
	}

	c := chain(3)
	v = NewVerifier()
	v.Add(c[0])
	if err := v.Add(c[2]); err == nil || !strings.Contains(err.Error(), "#2 to #2") {
		t.Errorf("a missing event: %v", err)
	}
	c = chain(2)
	c[0].Prev = bytes.Repeat([]byte{9}, HashSize)
	if err := NewVerifier().Add(c[0]); err == nil || !strings.Contains(err.Error(), "link to nothing") {
		t.Errorf("a first event that links somewhere: %v", err)
	}
	c = chain(2)
	v = NewVerifier()
	v.Add(c[1])
	if err := v.Result().Broken; err == nil || !strings.Contains(err.Error(), "#1 to #1") {
		t.Errorf("a chain whose first event was removed: %v", err)
	}
}

// Anchors (hashes kept outside the store, as the remote syslog server received them) catch what
// a chain alone cannot: a trail whose newest events were removed, and one rewritten from some
// event on with every hash recomputed.
func TestAnchors(t *testing.T) {
	chain := func(n int, msg string) []Record {
		var out []Record
		prev := Zero()
		for i := 1; i <= n; i++ {
			r := rec(int64(i), prev, "event")
			if i >= 3 { // events #1 and #2 are the same in every chain made here
				r.Message = msg
			}
			r.Seq = int64(10 + i)
			r.Hash, _ = Hash(r)
			prev = r.Hash
			out = append(out, r)
		}
		return out
	}
	orig := chain(5, "event")
	run := func(recs []Record, anchors ...Record) Result {
		t.Helper()
		v := NewVerifier()
		for _, a := range anchors {
			if err := v.Anchor(a.Seq, a.Hash); err != nil {
				t.Fatal(err)
			}
		}
		for _, r := range recs {
			if v.Add(r) != nil {
				break
			}
		}
		v.End()
		return v.Result()
	}
	if res := run(orig, orig[1], orig[4]); res.Broken != nil || res.Anchors != 2 {
		t.Fatalf("the trail the anchors were taken from: %+v", res)
	}
	// The newest two events removed: the chain alone is whole, the anchor is not reached.
	if res := run(orig[:3]); res.Broken != nil {
		t.Fatalf("a cut chain without anchors: %+v (a chain alone cannot show it)", res)
	}
	res := run(orig[:3], orig[4])
	if res.Broken == nil || res.Broken.Seq != 15 || !strings.Contains(res.Broken.Reason, "ends at seq 13") {
		t.Errorf("a cut chain with an anchor at seq 15: %+v", res.Broken)
	}
	// Rewritten from #3 on with every hash recomputed: whole by itself, caught at the anchor.
	forged := chain(5, "forged")
	if res := run(forged); res.Broken != nil {
		t.Fatalf("the forged chain should verify by itself: %+v", res.Broken)
	}
	res = run(forged, orig[1], orig[3])
	if res.Broken == nil || res.Broken.Seq != 14 || !strings.Contains(res.Broken.Reason, "not the anchor's") {
		t.Errorf("a rewritten chain with an anchor at seq 14: %+v", res.Broken)
	}
	// The anchored event removed from the middle, the chain renumbered around it by a forger.
	gap := []Record{orig[0], orig[1], orig[3], orig[4]}
	res = run(gap, orig[2])
	if res.Broken == nil || !strings.Contains(res.Broken.Reason, "seq 13 is missing") {
		t.Errorf("a removed anchored event: %+v", res.Broken)
	}

	v := NewVerifier()
	if v.Anchor(0, orig[0].Hash) == nil || v.Anchor(1, []byte{1}) == nil {
		t.Error("a malformed anchor was taken")
	}
	v.Anchor(11, orig[0].Hash)
	if v.Anchor(11, orig[1].Hash) == nil {
		t.Error("two different hashes for one seq were taken")
	}
	seq, h, err := ParseAnchor("14:" + hex.EncodeToString(orig[3].Hash))
	if err != nil || seq != 14 || !bytes.Equal(h, orig[3].Hash) {
		t.Errorf("ParseAnchor = %d %x %v", seq, h, err)
	}
	for _, bad := range []string{"", "14", "x:00", "0:" + hex.EncodeToString(orig[3].Hash), "14:abcd", "14:" + strings.Repeat("g", 64)} {
		if _, _, err := ParseAnchor(bad); err == nil {
			t.Errorf("ParseAnchor(%q) passed", bad)
		}
	}
}
