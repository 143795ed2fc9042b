package plan

import (
	"encoding/binary"
	"reflect"
	"slices"
	"testing"
	"time"
)

// bytesIn turns fuzz bytes into values; it returns zeros once the bytes run out.
type bytesIn struct{ b []byte }

func (r *bytesIn) byte() byte {
	if len(r.b) == 0 {
		return 0
	}
	c := r.b[0]
	r.b = r.b[1:]
	return c
}

func (r *bytesIn) u32() uint32 {
	var x [4]byte
	for i := range x {
		x[i] = r.byte()
	}
	return binary.LittleEndian.Uint32(x[:])
}

// dur is mostly a plausible period in days, sometimes an extreme value.
func (r *bytesIn) dur() time.Duration {
	switch c := r.byte(); c {
	case 255:
		return time.Duration(-1 << 63)
	case 254:
		return time.Duration(1<<63 - 1)
	default:
		return time.Duration(int(c)-20) * 3 * day
	}
}

func (r *bytesIn) name() string { return []string{"", "A", "B", "C", "D"}[r.byte()%5] }

// input builds a small Input around a fixed base time from fuzz bytes.
func (r *bytesIn) input() Input {
	base := time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC)
	in := Input{Now: base.Add(r.dur()), Machine: r.byte()%2 == 0}
	for range r.byte() % 6 {
		t := Template{Name: r.name(), MajorRevision: int(r.byte() % 4), MinorRevision: int(r.byte() % 4),
			Validity: r.dur(), RenewalPeriod: r.dur(), EnrollmentFlags: r.u32(), SubjectNameFlags: r.u32() & 0xff,
			PrivateKeyFlags: r.u32(), GeneralFlags: r.u32() & 0xff}
		f := r.byte()
		t.Autoenroll, t.Enroll = f&1 != 0, f&2 != 0
		if f&4 == 0 { // mostly autoenrollable, so the interesting paths run
			t.Autoenroll, t.Enroll = true, true
			t.EnrollmentFlags &^= EnrollmentUserInteractionRequired
			t.SubjectNameFlags &^= NameEnrolleeSuppliesSubject
		}
		for range r.byte() % 3 {
			t.Supersedes = append(t.Supersedes, r.name())
		}
		in.Templates = append(in.Templates, t)
	}
	for range r.byte() % 6 {
		f := r.byte()
		nb := base.Add(r.dur())
		in.Store = append(in.Store, Held{Template: r.name(), TemplateMajor: int(r.byte() % 4), TemplateMinor: int(r.byte() % 4),
			NotBefore: nb, NotAfter: nb.Add(r.dur()), Serial: string(rune('0' + r.byte()%10)),
			HasKey: f&1 == 0, Revoked: f&2 != 0, Archived: f&4 != 0})
	}
	for range r.byte() % 4 {
		in.Pending = append(in.Pending, Pending{Template: r.name(), RequestID: string(rune('0' + r.byte()%10)), Submitted: base.Add(r.dur())})
	}
	return in
}

func FuzzDecide(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte{120, 1, 2, 1, 2, 1, 0, 120, 34, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 2, 1, 0, 1, 1, 1, 1, 100, 120, 3})
	f.Add([]byte{200, 0, 5, 1, 1, 1, 130, 14, 32, 4, 0, 0, 0, 0, 0, 0, 0, 128, 0, 0, 0, 0, 0, 0, 0, 2, 2, 2, 0, 2, 4, 1, 5, 22, 40, 7, 2, 3, 9, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		in := (&bytesIn{data}).input()
		p := Decide(in)
		if q := Decide(in); !reflect.DeepEqual(p, q) {
			t.Fatalf("Decide(%s) is not deterministic:\n%v\nthen\n%v", describe(in), p, q)
		}
		checkPlan(t, in, p)
	})
}

// checkPlan checks what must hold for any plan.
func checkPlan(t *testing.T, in Input, p Plan) {
	t.Helper()
	installs := map[string]int{}
	retrieving := map[string]bool{}
	seen := map[string]bool{}
	for i, a := range p.Actions {
		if a.Why == "" {
			t.Errorf("Decide(%s): action %v has no reason", describe(in), a)
		}
		if a.Kind.Installs() {
			if a.Kind == RetrievePending {
				retrieving[a.Template] = true
			} else {
				installs[a.Template]++
			}
		}
		if a.After != "" && !seen[a.After] {
			t.Errorf("Decide(%s) = %v: %v comes before an install action for %s", describe(in), p, a, a.After)
		}
		if a.Kind.Installs() {
			seen[a.Template] = true
		}
		if a.SameKey && a.Kind != Renew {
			t.Errorf("Decide(%s): %v keeps the key but is no renewal", describe(in), a)
		}
		if a.Cert != nil && a.Cert.Archived {
			t.Errorf("Decide(%s): %v acts on an archived certificate", describe(in), a)
		}
		if i > 0 && !ordered(p.Actions[i-1], a) {
			t.Errorf("Decide(%s): %v sorts after %v", describe(in), p.Actions[i-1], a)
		}
	}
	for name, n := range installs {
		if n > 1 || (n == 1 && retrieving[name]) {
			t.Errorf("Decide(%s) = %v: more than one request for %s", describe(in), p, name)
		}
	}
}

func ordered(a, b Action) bool {
	key := func(a Action) []string {
		anchor := a.Template
		if a.After != "" {
			anchor = a.After
		}
		return []string{anchor, string(rune('0' + a.Kind)), a.Template, serial(a), requestID(a)}
	}
	return slices.Compare(key(a), key(b)) <= 0
}
