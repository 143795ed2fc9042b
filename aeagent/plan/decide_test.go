package plan

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
)

const (
	day  = 24 * time.Hour
	week = 7 * day
	year = 365 * day
)

// t0 is the NotBefore of most certificates below; the clock is always fixed.
var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// tpl is an autoenrollable user template, 1 year / 6 weeks, revision 100.2, changed by mods.
func tpl(name string, mods ...func(*Template)) Template {
	t := Template{Name: name, OID: "1.3.6.1.4.1.311.21.8.1." + name, MajorRevision: 100, MinorRevision: 2,
		Validity: year, RenewalPeriod: 6 * week, Autoenroll: true, Enroll: true,
		EnrollmentFlags: EnrollmentAutoEnrollment, MinimalKeySize: 2048}
	for _, m := range mods {
		m(&t)
	}
	return t
}

func renewal(p time.Duration) func(*Template) { return func(t *Template) { t.RenewalPeriod = p } }
func eflags(f uint32) func(*Template)         { return func(t *Template) { t.EnrollmentFlags |= f } }
func machine(t *Template)                     { t.GeneralFlags |= GeneralMachineType }
func supersedes(names ...string) func(*Template) {
	return func(t *Template) { t.Supersedes = names }
}

// cert is a 1-year certificate with its key, issued from t0 under revision 100.2.
func cert(template, serial string, mods ...func(*Held)) Held {
	h := Held{Template: template, TemplateMajor: 100, TemplateMinor: 2, NotBefore: t0, NotAfter: t0.Add(year),
		Serial: serial, HasKey: true}
	for _, m := range mods {
		m(&h)
	}
	return h
}

func revoked(h *Held) { h.Revoked = true }
func noKey(h *Held)   { h.HasKey = false }
func archived(h *Held) {
	h.Archived = true
}
func rev(major, minor int) func(*Held) {
	return func(h *Held) { h.TemplateMajor, h.TemplateMinor = major, minor }
}

// at is a fraction of the 1-year lifetime after t0, in thousandths.
func at(permille int64) time.Time { return t0.Add(year / 1000 * time.Duration(permille)) }

func summary(p Plan) []string {
	var s []string
	for _, a := range p.Actions {
		s = append(s, a.String())
	}
	return s
}

func describe(in Input) string {
	var b strings.Builder
	fmt.Fprintf(&b, "now=%s machine=%v", in.Now.Format(time.RFC3339Nano), in.Machine)
	for _, t := range in.Templates {
		fmt.Fprintf(&b, " tpl{%s rev=%d.%d renew=%s enr=%#x sup=%v}", t.Name, t.MajorRevision, t.MinorRevision, t.RenewalPeriod, t.EnrollmentFlags, t.Supersedes)
	}
	for _, h := range in.Store {
		fmt.Fprintf(&b, " held{%s %s rev=%d.%d %s..%s key=%v revoked=%v archived=%v}", h.Template, h.Serial,
			h.TemplateMajor, h.TemplateMinor, h.NotBefore.Format(time.DateOnly), h.NotAfter.Format(time.DateOnly), h.HasKey, h.Revoked, h.Archived)
	}
	for _, p := range in.Pending {
		fmt.Fprintf(&b, " pending{%s %s %s}", p.Template, p.RequestID, p.Submitted.Format(time.RFC3339))
	}
	return b.String()
}

func TestDecide(t *testing.T) {
	user := tpl("User")
	tests := []struct {
		name string
		in   Input
		want []string
	}{
		// Step 1: the requirements list.
		{"nothing held: enroll", Input{Now: t0, Templates: []Template{user}},
			[]string{"enroll User"}},
		{"Enroll permission only: nothing", Input{Now: t0, Templates: []Template{tpl("User", func(t *Template) { t.Autoenroll = false })}},
			nil},
		{"Autoenroll without Enroll: nothing", Input{Now: t0, Templates: []Template{tpl("User", func(t *Template) { t.Enroll = false })}},
			nil},
		{"user interaction required: nothing", Input{Now: t0, Templates: []Template{tpl("User", eflags(EnrollmentUserInteractionRequired))}},
			nil},
		{"enrollee supplies subject: nothing", Input{Now: t0, Templates: []Template{tpl("User", func(t *Template) { t.SubjectNameFlags = NameEnrolleeSuppliesSubject })}},
			nil},
		{"machine template in user context", Input{Now: t0, Templates: []Template{tpl("Machine", machine), user}},
			[]string{"enroll User"}},
		{"machine context takes machine templates only", Input{Now: t0, Machine: true, Templates: []Template{tpl("Machine", machine), user}},
			[]string{"enroll Machine"}},

		// Step 5: the renewal window. 1 year: the 80% mark is day 292 (73 days before NotAfter).
		{"100 days: 79.9% keeps", Input{Now: at(799), Templates: []Template{tpl("User", renewal(100*day))}, Store: []Held{cert("User", "01")}},
			[]string{"keep User serial=01"}},
		{"100 days: 80% - 1ns keeps", Input{Now: at(800).Add(-1), Templates: []Template{tpl("User", renewal(100*day))}, Store: []Held{cert("User", "01")}},
			[]string{"keep User serial=01"}},
		{"100 days: exactly 80% renews", Input{Now: at(800), Templates: []Template{tpl("User", renewal(100*day))}, Store: []Held{cert("User", "01")}},
			[]string{"renew User serial=01", "archive User serial=01 after=User"}},
		{"120 days: waits for the 80% mark", Input{Now: t0.Add(year - 120*day), Templates: []Template{tpl("User", renewal(120*day))}, Store: []Held{cert("User", "01")}},
			[]string{"keep User serial=01"}},
		{"6 weeks: 80% is not enough", Input{Now: at(800), Templates: []Template{user}, Store: []Held{cert("User", "01")}},
			[]string{"keep User serial=01"}},
		{"6 weeks: 42 days - 1ns before expiry keeps", Input{Now: t0.Add(year - 42*day - 1), Templates: []Template{user}, Store: []Held{cert("User", "01")}},
			[]string{"keep User serial=01"}},
		{"6 weeks: 42 days before expiry renews", Input{Now: t0.Add(year - 42*day), Templates: []Template{user}, Store: []Held{cert("User", "01")}},
			[]string{"renew User serial=01", "archive User serial=01 after=User"}},
		{"10 days: at 95% keeps", Input{Now: at(950), Templates: []Template{tpl("User", renewal(10*day))}, Store: []Held{cert("User", "01")}},
			[]string{"keep User serial=01"}},
		{"10 days: NotAfter - 10d renews", Input{Now: t0.Add(year - 10*day), Templates: []Template{tpl("User", renewal(10*day))}, Store: []Held{cert("User", "01")}},
			[]string{"renew User serial=01", "archive User serial=01 after=User"}},
		{"same key renewal with version fields set", Input{Now: t0.Add(year - 10*day),
			Templates: []Template{tpl("User", func(t *Template) { t.PrivateKeyFlags = 0x05040080 })}, Store: []Held{cert("User", "01")}},
			[]string{"renew User serial=01 same-key", "archive User serial=01 after=User"}},
		{"version fields alone do not mean same key", Input{Now: t0.Add(year - 10*day),
			Templates: []Template{tpl("User", func(t *Template) { t.PrivateKeyFlags = 0x0F0F0000 })}, Store: []Held{cert("User", "01")}},
			[]string{"renew User serial=01", "archive User serial=01 after=User"}},
		{"SKIP_AUTO_RENEWAL: due but kept", Input{Now: t0.Add(year - 10*day), Templates: []Template{tpl("User", eflags(EnrollmentSkipAutoRenewal))}, Store: []Held{cert("User", "01")}},
			[]string{"keep User serial=01"}},
		{"SKIP_AUTO_RENEWAL: still valid at NotAfter", Input{Now: t0.Add(year), Templates: []Template{tpl("User", eflags(EnrollmentSkipAutoRenewal))}, Store: []Held{cert("User", "01")}},
			[]string{"keep User serial=01"}},
		{"SKIP_AUTO_RENEWAL: expired is replaced", Input{Now: t0.Add(year + 1), Templates: []Template{tpl("User", eflags(EnrollmentSkipAutoRenewal))}, Store: []Held{cert("User", "01")}},
			[]string{"reenroll User serial=01", "archive User serial=01 after=User"}},

		// Revisions.
		{"major revision raised: reenroll", Input{Now: at(100), Templates: []Template{tpl("User", func(t *Template) { t.MajorRevision = 101 })}, Store: []Held{cert("User", "01")}},
			[]string{"reenroll User serial=01", "archive User serial=01 after=User"}},
		{"major raised with same-key flag: still a new request", Input{Now: at(100),
			Templates: []Template{tpl("User", func(t *Template) { t.MajorRevision = 101; t.PrivateKeyFlags = PrivateKeyRequireSameKeyRenewal })}, Store: []Held{cert("User", "01")}},
			[]string{"reenroll User serial=01", "archive User serial=01 after=User"}},
		{"minor revision raised: nothing", Input{Now: at(100), Templates: []Template{tpl("User", func(t *Template) { t.MinorRevision = 9 })}, Store: []Held{cert("User", "01")}},
			[]string{"keep User serial=01"}},
		{"policy revision lower than the certificate's: nothing", Input{Now: at(100), Templates: []Template{user}, Store: []Held{cert("User", "01", rev(101, 0))}},
			[]string{"keep User serial=01"}},
		{"revision unknown (v1 extension): nothing", Input{Now: at(100), Templates: []Template{user}, Store: []Held{cert("User", "01", rev(0, 0))}},
			[]string{"keep User serial=01"}},

		// Step 2 and 6: invalid certificates.
		{"missing key: reenroll, keep until replaced", Input{Now: at(100), Templates: []Template{user}, Store: []Held{cert("User", "01", noKey)}},
			[]string{"reenroll User serial=01", "archive User serial=01 after=User"}},
		{"missing key is not removed even with REMOVE_INVALID", Input{Now: at(100), Templates: []Template{tpl("User", eflags(EnrollmentRemoveInvalidCertificate))}, Store: []Held{cert("User", "01", noKey)}},
			[]string{"reenroll User serial=01", "archive User serial=01 after=User"}},
		{"revoked: reenroll, keep until replaced", Input{Now: at(100), Templates: []Template{user}, Store: []Held{cert("User", "01", revoked)}},
			[]string{"reenroll User serial=01", "archive User serial=01 after=User"}},
		{"revoked with REMOVE_INVALID: remove", Input{Now: at(100), Templates: []Template{tpl("User", eflags(EnrollmentRemoveInvalidCertificate))}, Store: []Held{cert("User", "01", revoked)}},
			[]string{"remove User serial=01", "reenroll User serial=01"}},
		{"expired: reenroll, keep until replaced", Input{Now: t0.Add(year + day), Templates: []Template{user}, Store: []Held{cert("User", "01")}},
			[]string{"reenroll User serial=01", "archive User serial=01 after=User"}},
		{"expired with REMOVE_INVALID: remove", Input{Now: t0.Add(year + day), Templates: []Template{tpl("User", eflags(EnrollmentRemoveInvalidCertificate))}, Store: []Held{cert("User", "01")}},
			[]string{"remove User serial=01", "reenroll User serial=01"}},
		{"valid newer certificate beside an expired one", Input{Now: t0.Add(year + day), Templates: []Template{tpl("User", eflags(EnrollmentRemoveInvalidCertificate))},
			Store: []Held{cert("User", "01"), cert("User", "02", func(h *Held) { h.NotBefore, h.NotAfter = t0.Add(300*day), t0.Add(665*day) })}},
			[]string{"remove User serial=01", "keep User serial=02"}},
		{"archived certificates count for nothing", Input{Now: at(100), Templates: []Template{user}, Store: []Held{cert("User", "01", archived)}},
			[]string{"enroll User"}},
		{"certificate of a template not offered: kept, not managed", Input{Now: t0.Add(2 * year), Templates: []Template{user}, Store: []Held{cert("Other", "09"), cert("User", "01", func(h *Held) { h.NotBefore, h.NotAfter = t0.Add(2*year-day), t0.Add(3*year) })}},
			[]string{"keep Other serial=09", "keep User serial=01"}},

		// Step 3: pending requests.
		{"pending 59 days: retrieve, no new request", Input{Now: t0.Add(59 * day), Templates: []Template{user}, Pending: []Pending{{"User", "17", t0}}},
			[]string{"retrieve-pending User request=17"}},
		{"pending exactly 60 days: retrieved once more", Input{Now: t0.Add(60 * day), Templates: []Template{user}, Pending: []Pending{{"User", "17", t0}}},
			[]string{"retrieve-pending User request=17"}},
		{"pending 60 days + 1ns: dropped and requested again", Input{Now: t0.Add(60*day + 1), Templates: []Template{user}, Pending: []Pending{{"User", "17", t0}}},
			[]string{"drop-pending User request=17", "enroll User"}},
		{"pending renewal: the expired certificate waits for it", Input{Now: t0.Add(year + day), Templates: []Template{user}, Store: []Held{cert("User", "01")}, Pending: []Pending{{"User", "18", t0.Add(year - 30*day)}}},
			[]string{"retrieve-pending User request=18", "archive User serial=01 after=User"}},
		{"pending for a template no longer offered: still retrieved", Input{Now: t0, Pending: []Pending{{"Gone", "3", t0.Add(-day)}}},
			[]string{"retrieve-pending Gone request=3"}},

		// Step 4: supersede. "Aold" sorts before "Znew": the archive still waits for Znew.
		{"supersede: enroll the new template, archive the old after", Input{Now: at(100), Templates: []Template{tpl("Aold"), tpl("Znew", supersedes("Aold"))}, Store: []Held{cert("Aold", "01")}},
			[]string{"enroll Znew", "archive Aold serial=01 after=Znew"}},
		{"supersede without permission on the old template", Input{Now: at(100), Templates: []Template{tpl("Znew", supersedes("Aold"))}, Store: []Held{cert("Aold", "01")}},
			[]string{"enroll Znew", "archive Aold serial=01 after=Znew"}},
		{"supersede: no Autoenroll on the new template", Input{Now: at(100), Templates: []Template{tpl("Aold"), tpl("Znew", supersedes("Aold"), func(t *Template) { t.Autoenroll = false })}, Store: []Held{cert("Aold", "01")}},
			[]string{"keep Aold serial=01"}},
		{"supersede chain: the newest template only", Input{Now: at(100),
			Templates: []Template{tpl("V1"), tpl("V2", supersedes("V1")), tpl("V3", supersedes("V2"))}, Store: []Held{cert("V1", "01")}},
			[]string{"enroll V3", "archive V1 serial=01 after=V3"}},
		{"supersede chain through a template not offered", Input{Now: at(100),
			Templates: []Template{tpl("V1"), tpl("V3", supersedes("V2"))}, Store: []Held{cert("V1", "01")}},
			[]string{"keep V1 serial=01", "enroll V3"}},
		{"superseded certificate left over beside the new one: archive now", Input{Now: at(100),
			Templates: []Template{tpl("Aold"), tpl("Znew", supersedes("Aold"))}, Store: []Held{cert("Aold", "01"), cert("Znew", "02")}},
			[]string{"archive Aold serial=01", "keep Znew serial=02"}},
		{"expired superseded certificate with REMOVE_INVALID: removed", Input{Now: t0.Add(year + day),
			Templates: []Template{tpl("Aold", eflags(EnrollmentRemoveInvalidCertificate)), tpl("Znew", supersedes("Aold"))}, Store: []Held{cert("Aold", "01")}},
			[]string{"remove Aold serial=01", "enroll Znew"}},
		{"requirement met by a superseding certificate not autoenrolled", Input{Now: at(100),
			Templates: []Template{tpl("Aold"), tpl("Znew", supersedes("Aold"), func(t *Template) { t.Autoenroll = false })}, Store: []Held{cert("Znew", "02")}},
			[]string{"keep Znew serial=02"}},
		{"superseding template pending: archive after retrieval", Input{Now: at(100),
			Templates: []Template{tpl("Aold"), tpl("Znew", supersedes("Aold"))}, Store: []Held{cert("Aold", "01")}, Pending: []Pending{{"Znew", "5", at(90)}}},
			[]string{"retrieve-pending Znew request=5", "archive Aold serial=01 after=Znew"}},
		{"templates that supersede each other: the first name only", Input{Now: at(100),
			Templates: []Template{tpl("B", supersedes("A")), tpl("A", supersedes("B"))}},
			[]string{"enroll A"}},

		// A second pass after success changes nothing.
		{"fresh certificates: nothing to do", Input{Now: t0.Add(time.Hour),
			Templates: []Template{user, tpl("Machine", machine), tpl("Znew", supersedes("Aold"))}, Store: []Held{cert("User", "01"), cert("Znew", "02")}},
			[]string{"keep User serial=01", "keep Znew serial=02"}},
	}
	for _, tc := range tests {
		got := summary(Decide(tc.in))
		if !slices.Equal(got, tc.want) {
			t.Errorf("%s: Decide(%s) = %q, want %q", tc.name, describe(tc.in), got, tc.want)
		}
	}
}

func TestNextRenewal(t *testing.T) {
	h := cert("User", "01")
	tests := []struct {
		renewal time.Duration
		want    time.Time
	}{
		{6 * week, t0.Add(year - 42*day)}, // the 1-year / 6-week case renews 42 days before expiry
		{10 * day, t0.Add(year - 10*day)},
		{73 * day, t0.Add(292 * day)}, // exactly 20%: both marks coincide
		{100 * day, t0.Add(292 * day)},
		{120 * day, t0.Add(292 * day)},
		{0, t0.Add(year)},
		{-day, t0.Add(year)},
	}
	for _, tc := range tests {
		if got := NextRenewal(h, tpl("User", renewal(tc.renewal))); !got.Equal(tc.want) {
			t.Errorf("NextRenewal(1 year, renewal %s) = %s, want %s", tc.renewal, got, tc.want)
		}
	}
	// Broken or extreme validity never panics and stays within the certificate's dates.
	odd := []Held{
		{NotBefore: t0, NotAfter: t0.Add(-day)},
		{NotBefore: time.Time{}, NotAfter: time.Date(9999, 12, 31, 23, 59, 59, 0, time.UTC)},
		{},
	}
	for _, h := range odd {
		got := NextRenewal(h, tpl("X", renewal(time.Duration(-1<<63))))
		if got.Before(h.NotBefore) && got.Before(h.NotAfter) {
			t.Errorf("NextRenewal(%s..%s) = %s, want not before both", h.NotBefore, h.NotAfter, got)
		}
	}
}

// TestWhy checks that the reasons spell the rule out with dates.
func TestWhy(t *testing.T) {
	nb := time.Date(2025, 12, 1, 0, 0, 0, 0, time.UTC)
	h := Held{Template: "User", TemplateMajor: 100, TemplateMinor: 2, NotBefore: nb, NotAfter: nb.Add(year), Serial: "01", HasKey: true}
	tests := []struct {
		now  time.Time
		tpl  Template
		want string
	}{
		{nb.Add(year - 42*day), tpl("User"),
			"renew: 80% of the lifetime (2026-09-19) has passed and the renewal period (6 weeks before 2026-12-01) has begun; signed with the old key, a new key"},
		{nb.Add(100 * day), tpl("User"),
			"keep: renews on 2026-10-20, the later of 80% of the lifetime (2026-09-19) and the renewal period (6 weeks before 2026-12-01, from 2026-10-20); the renewal period begins later than the 80% mark"},
		{nb.Add(100 * day), tpl("User", renewal(100*day)),
			"the renewal period is longer than 20% of the lifetime, so the 80% mark decides"},
		{nb.Add(100 * day), tpl("User", func(t *Template) { t.MinorRevision = 3 }),
			"minor revision 100.2 → 100.3 does not force re-enrollment"},
		{nb.Add(100 * day), tpl("User", func(t *Template) { t.MajorRevision = 101 }),
			"major revision was raised from 100 to 101"},
		{nb.Add(year + day), tpl("User", eflags(EnrollmentRemoveInvalidCertificate)),
			"remove: the certificate expired on 2026-12-01 and the template sets REMOVE_INVALID_CERTIFICATE_FROM_PERSONAL_STORE"},
	}
	for _, tc := range tests {
		in := Input{Now: tc.now, Templates: []Template{tc.tpl}, Store: []Held{h}}
		p := Decide(in)
		if len(p.Actions) == 0 || !strings.Contains(p.Actions[0].Why, tc.want) {
			t.Errorf("Decide(%s) = %v, want a first reason containing %q", describe(in), p, tc.want)
		}
	}
}

func TestReasons(t *testing.T) {
	in := Input{Now: t0, Machine: true, Templates: []Template{
		tpl("Web", func(t *Template) { t.Autoenroll = false }),
		tpl("User"),
		tpl("Host", machine, supersedes("OldHost")),
		tpl("OldHost", machine),
		tpl("Host"),
		{},
	}}
	p := Decide(in)
	want := []string{
		`"": a template without a name is ignored`,
		"Host: the policy lists this template twice; the first one is used",
		"OldHost: not requested: Host supersedes it and is requested instead",
		"User: not on the requirements list: user template in machine context",
		"Web: not on the requirements list: no Autoenroll permission, user template in machine context",
	}
	var got []string
	for _, r := range p.Reasons {
		got = append(got, r.String())
	}
	if !slices.Equal(got, want) {
		t.Errorf("Decide(%s).Reasons = %q, want %q", describe(in), got, want)
	}
	if g := summary(p); !slices.Equal(g, []string{"enroll Host"}) {
		t.Errorf("Decide(%s) = %q, want [enroll Host]", describe(in), g)
	}
}

// TestDecideDoesNotChangeInput: the caller's slices are left as they were.
func TestDecideDoesNotChangeInput(t *testing.T) {
	in := Input{Now: at(900), Templates: []Template{tpl("B", supersedes("A")), tpl("A")},
		Store:   []Held{cert("B", "2"), cert("A", "1")},
		Pending: []Pending{{"B", "9", t0}, {"A", "8", t0}}}
	before := describe(in)
	Decide(in)
	if after := describe(in); after != before {
		t.Errorf("Decide changed its input: %s, was %s", after, before)
	}
}
