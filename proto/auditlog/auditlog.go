// Package auditlog is the format of the audit trail's hash chain, shared by the store that
// writes it and the clients that check it (`aectl events verify`), so that there is one
// definition of what an event's hash covers. It imports nothing of this module.
//
// Each instance of the service keeps its own chain (several instances share one PostgreSQL
// store): its events are numbered 1, 2, 3, ... (N) and each carries Prev, the hash of the event
// before it in the same chain (32 zero bytes for the first), and Hash, SHA-256 over a
// length-prefixed encoding of the chain, N, Prev and every field of the event (Hash). Editing an
// event changes its hash; recomputing that hash breaks the next event's Prev; removing or
// reordering events breaks the numbering. What a chain cannot show by itself is that its newest
// events were cut off, or that the whole chain was rewritten by someone who can write the store:
// the copy of each event's hash that leaves the appliance (remote syslog, backups, a head an
// earlier verification printed) is the anchor for that. Verifier.Anchor takes such copies: the
// event with that sequence number must be there, with that hash.
package auditlog

import (
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
)

// HashSize is the size of Prev and Hash.
const HashSize = sha256.Size

// domain separates this hash from any other SHA-256 use; v1 names this encoding.
const domain = "aeappliance audit event v1\x00"

// TimeLayout is how an event's time enters the hash: UTC, to the microsecond (the stores keep
// times to the microsecond).
const TimeLayout = "2006-01-02T15:04:05.000000Z"

// Record is one event as the chain covers it.
type Record struct {
	Seq      int64  // the store's order; not hashed (instances share it), but reported
	Instance string // the chain
	N        int64  // position in the chain, from 1
	Prev     []byte // Hash of event N-1 of the chain; zeros for N = 1
	Hash     []byte // as stored; nil: an event from before the trail was chained
	ID       int
	Category string
	Level    string
	Time     time.Time
	Message  string
	Fields   map[string]any // nil and empty differ: nil is stored as NULL
}

// CanonicalFields is the one JSON text of an event's fields that the store keeps and the hash
// covers: encoding/json's (keys sorted) of the fields as decoded with numbers kept as written
// (json.Number), so that what a reader decodes that way and encodes again is the same text. nil
// gives nil.
func CanonicalFields(m map[string]any) ([]byte, error) {
	if m == nil {
		return nil, nil
	}
	b, err := json.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("auditlog: event fields: %w", err)
	}
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	var back map[string]any
	if err := d.Decode(&back); err != nil {
		return nil, fmt.Errorf("auditlog: event fields: %w", err)
	}
	if back == nil { // a map that marshals as null cannot happen, but keep NULL and {} apart
		back = map[string]any{}
	}
	return json.Marshal(back)
}

// Hash computes the hash of r from its chain position, Prev and contents (not r.Hash or r.Seq).
// Fields are hashed in their canonical form, so r may hold them as decoded by any reader that
// keeps numbers as json.Number.
func Hash(r Record) ([]byte, error) {
	fields, err := CanonicalFields(r.Fields)
	if err != nil {
		return nil, err
	}
	return HashFields(r, fields)
}

// HashFields is Hash for a writer that holds the fields' canonical text already (CanonicalFields;
// nil for no fields); r.Fields is not read.
func HashFields(r Record, fields []byte) ([]byte, error) {
	if r.N < 1 {
		return nil, fmt.Errorf("auditlog: chain position %d: want 1 or more", r.N)
	}
	if len(r.Prev) != HashSize {
		return nil, fmt.Errorf("auditlog: previous hash of %d bytes: want %d", len(r.Prev), HashSize)
	}
	h := sha256.New()
	h.Write([]byte(domain))
	var num [8]byte
	str := func(s []byte) {
		binary.BigEndian.PutUint64(num[:], uint64(len(s)))
		h.Write(num[:])
		h.Write(s)
	}
	integer := func(v int64) {
		binary.BigEndian.PutUint64(num[:], uint64(v))
		h.Write(num[:])
	}
	str([]byte(r.Instance))
	integer(r.N)
	h.Write(r.Prev)
	integer(int64(r.ID))
	str([]byte(r.Category))
	str([]byte(r.Level))
	str([]byte(r.Time.UTC().Format(TimeLayout)))
	str([]byte(r.Message))
	if fields == nil {
		h.Write([]byte{0})
	} else {
		h.Write([]byte{1})
		str(fields)
	}
	return h.Sum(nil), nil
}

// Zero is Prev of the first event of a chain.
func Zero() []byte { return make([]byte, HashSize) }

// Break is the first broken link a Verifier found.
type Break struct {
	Seq      int64
	Instance string
	N        int64
	Reason   string
}

func (b *Break) Error() string {
	if b.N == 0 { // past the trail's end, or before its chains
		return fmt.Sprintf("audit trail broken at event seq %d: %s", b.Seq, b.Reason)
	}
	return fmt.Sprintf("audit trail broken at event seq %d (chain %q, #%d): %s", b.Seq, b.Instance, b.N, b.Reason)
}

// Chain is what a Verifier saw of one chain.
type Chain struct {
	Instance string `json:"instance"`
	Events   int64  `json:"events"`
	Head     string `json:"head"` // hex hash of its newest event
	LastSeq  int64  `json:"last_seq"`
}

// Verifier checks events given in the store's order (ascending Seq), one at a time.
type Verifier struct {
	chains    map[string]*Chain
	prev      map[string][]byte
	unchained int64 // events from before the trail was chained
	lastSeq   int64
	broken    *Break
	anchors   map[int64][]byte // seq -> the hash a copy kept elsewhere holds
	anchored  int              // anchors matched
}

// NewVerifier returns a Verifier that has seen nothing.
func NewVerifier() *Verifier {
	return &Verifier{chains: map[string]*Chain{}, prev: map[string][]byte{}, anchors: map[int64][]byte{}}
}

// Anchor says that the event with sequence number seq has hash h, as a copy kept outside the
// store says (the remote syslog server received seq="..." hash="..."; an earlier verification
// printed a chain's head). Add fails at that event when its hash differs, or when events go past
// seq without it; End fails when the trail stops before seq. Anchors are given before the first
// Add.
func (v *Verifier) Anchor(seq int64, h []byte) error {
	if seq < 1 || len(h) != HashSize {
		return fmt.Errorf("auditlog: an anchor is a sequence number from 1 and a %d-byte hash", HashSize)
	}
	if old, ok := v.anchors[seq]; ok && !bytes.Equal(old, h) {
		return fmt.Errorf("auditlog: two anchors for seq %d with different hashes", seq)
	}
	v.anchors[seq] = h
	return nil
}

// ParseAnchor reads an anchor written SEQ:HASH (hexadecimal).
func ParseAnchor(s string) (int64, []byte, error) {
	a, b, ok := strings.Cut(s, ":")
	seq, err := strconv.ParseInt(a, 10, 64)
	if !ok || err != nil || seq < 1 {
		return 0, nil, fmt.Errorf("anchor %q: want SEQ:HASH (a sequence number and its event's hash in hex)", s)
	}
	h, err := hex.DecodeString(b)
	if err != nil || len(h) != HashSize {
		return 0, nil, fmt.Errorf("anchor %q: the hash is not %d bytes of hex", s, HashSize)
	}
	return seq, h, nil
}

// Add checks the next event. It returns the first Break (and keeps returning it); events after
// a break are not checked.
func (v *Verifier) Add(r Record) error {
	if v.broken != nil {
		return v.broken
	}
	fail := func(format string, a ...any) error {
		v.broken = &Break{Seq: r.Seq, Instance: r.Instance, N: r.N, Reason: fmt.Sprintf(format, a...)}
		return v.broken
	}
	if r.Seq <= v.lastSeq {
		return fail("out of order: seq %d follows %d", r.Seq, v.lastSeq)
	}
	for seq := range v.anchors {
		if seq > v.lastSeq && seq < r.Seq {
			return fail("anchored event seq %d is missing: it was removed from the store", seq)
		}
	}
	v.lastSeq = r.Seq
	if want, ok := v.anchors[r.Seq]; ok {
		if r.Hash == nil || subtle.ConstantTimeCompare(want, r.Hash) != 1 {
			return fail("its hash is not the anchor's (the copy kept outside the store): the trail was rewritten")
		}
		v.anchored++
	}
	if r.Hash == nil {
		if len(v.chains) > 0 {
			return fail("the event has no hash, but the trail was chained before it: its hash was removed")
		}
		v.unchained++
		return nil
	}
	c := v.chains[r.Instance]
	if c == nil {
		c = &Chain{Instance: r.Instance}
		v.chains[r.Instance] = c
		v.prev[r.Instance] = Zero()
	}
	if r.N != c.Events+1 {
		if r.N > c.Events+1 {
			return fail("events #%d to #%d of this chain are missing (removed from the store)", c.Events+1, r.N-1)
		}
		return fail("chain position %d repeats or goes back (after #%d)", r.N, c.Events)
	}
	if subtle.ConstantTimeCompare(r.Prev, v.prev[r.Instance]) != 1 {
		if c.Events == 0 {
			return fail("the first event of a chain must link to nothing")
		}
		return fail("it does not link to the chain's event before it (seq %d, #%d): that event was changed, or its hash recomputed", c.LastSeq, c.Events)
	}
	h, err := Hash(r)
	if err != nil {
		return fail("%v", err)
	}
	if subtle.ConstantTimeCompare(h, r.Hash) != 1 {
		return fail("its contents do not match its hash: the event was changed after it was recorded")
	}
	c.Events++
	c.LastSeq = r.Seq
	c.Head = hex.EncodeToString(h)
	v.prev[r.Instance] = h
	return nil
}

// End says the trail has no more events: an anchor past its last event means its newest events
// were cut off. It returns the first Break, as Add does.
func (v *Verifier) End() error {
	if v.broken != nil {
		return v.broken
	}
	var missing []int64
	for seq := range v.anchors {
		if seq > v.lastSeq {
			missing = append(missing, seq)
		}
	}
	if len(missing) > 0 {
		slices.Sort(missing)
		v.broken = &Break{Seq: missing[0], Reason: fmt.Sprintf("the trail ends at seq %d, before anchored event seq %d: its newest events were removed",
			v.lastSeq, missing[0])}
	}
	return v.broken
}

// Result summarises what was verified.
type Result struct {
	Events    int64   `json:"events"`    // chained events checked
	Unchained int64   `json:"unchained"` // events from before the trail was chained (not covered)
	Chains    []Chain `json:"chains"`
	Anchors   int     `json:"anchors"` // anchors found with their hashes
	Broken    *Break  `json:"broken,omitempty"`
}

// Result returns the summary so far, chains by instance name.
func (v *Verifier) Result() Result {
	res := Result{Unchained: v.unchained, Broken: v.broken, Anchors: v.anchored}
	for _, c := range v.chains {
		res.Events += c.Events
		res.Chains = append(res.Chains, *c)
	}
	slices.SortFunc(res.Chains, func(a, b Chain) int { return strings.Compare(a.Instance, b.Instance) })
	return res
}
