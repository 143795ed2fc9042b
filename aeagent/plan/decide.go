package plan

import (
	"cmp"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"
)

// Decide works out one autoenrollment pass. It is pure: no I/O, no clock but in.Now, and the same
// input gives the same plan. It never panics, whatever the input.
func Decide(in Input) Plan {
	d := newDecider(in)
	d.pending()
	for _, name := range d.requirements {
		d.requirement(name)
	}
	d.others()
	return d.finish()
}

type decider struct {
	now        time.Time
	machine    bool
	tmpl       map[string]Template        // first template of each name
	sup        map[string]map[string]bool // sup[a][b]: a supersedes b, directly or through a chain
	ineligible map[string]string          // template name → why it is not on the list
	// requirements is the requirements list after superseded templates were dropped, sorted.
	requirements []string
	isReq        map[string]bool
	held         map[string][]Held // non-archived certificates by template, newest first
	heldNames    []string
	blocked      map[string]bool // templates with a pending request still being retrieved
	installs     map[string]bool // templates with an install action in this plan
	pendingIn    []Pending
	actions      []Action
	reasons      []Reason
}

func newDecider(in Input) *decider {
	d := &decider{
		now:        in.Now,
		machine:    in.Machine,
		tmpl:       map[string]Template{},
		sup:        map[string]map[string]bool{},
		ineligible: map[string]string{},
		isReq:      map[string]bool{},
		held:       map[string][]Held{},
		blocked:    map[string]bool{},
		installs:   map[string]bool{},
	}
	for _, t := range in.Templates {
		if t.Name == "" {
			d.note("", "a template without a name is ignored")
			continue
		}
		if _, dup := d.tmpl[t.Name]; dup {
			d.note(t.Name, "the policy lists this template twice; the first one is used")
			continue
		}
		t.Supersedes = slices.Clone(t.Supersedes)
		d.tmpl[t.Name] = t
	}
	for name := range d.tmpl {
		d.sup[name] = d.closure(name)
	}

	// Step 1: the requirements list.
	var eligible []string
	for _, name := range slices.Sorted(maps.Keys(d.tmpl)) {
		t := d.tmpl[name]
		if why := d.whyNotEligible(t); why != "" {
			d.ineligible[name] = why
			d.note(name, "not on the requirements list: "+why)
			continue
		}
		eligible = append(eligible, name)
	}
	for _, name := range eligible {
		if by := d.dominatedBy(name, eligible); by != "" {
			d.note(name, fmt.Sprintf("not requested: %s supersedes it and is requested instead", by))
			continue
		}
		d.requirements = append(d.requirements, name)
		d.isReq[name] = true
	}

	for _, h := range in.Store {
		if h.Archived {
			continue
		}
		if _, seen := d.held[h.Template]; !seen {
			d.heldNames = append(d.heldNames, h.Template)
		}
		d.held[h.Template] = append(d.held[h.Template], h)
	}
	slices.Sort(d.heldNames)
	for _, hs := range d.held {
		slices.SortStableFunc(hs, func(a, b Held) int {
			if c := b.NotAfter.Compare(a.NotAfter); c != 0 {
				return c
			}
			return cmp.Compare(a.Serial, b.Serial)
		})
	}

	d.pendingIn = slices.Clone(in.Pending)
	return d
}

// closure lists every template name reachable from name through Supersedes lists. It contains
// name itself only if the lists form a cycle back to it.
func (d *decider) closure(name string) map[string]bool {
	seen := map[string]bool{}
	stack := slices.Clone(d.tmpl[name].Supersedes)
	for len(stack) > 0 {
		n := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if seen[n] {
			continue
		}
		seen[n] = true
		stack = append(stack, d.tmpl[n].Supersedes...)
	}
	return seen
}

// replaces reports whether a supersedes b and not the other way round.
func (d *decider) replaces(a, b string) bool {
	return a != b && d.sup[a][b] && !d.sup[b][a]
}

// mutual reports whether a and b supersede each other (a misconfiguration: treated as equals).
func (d *decider) mutual(a, b string) bool {
	return a != b && d.sup[a][b] && d.sup[b][a]
}

func (d *decider) whyNotEligible(t Template) string {
	var why []string
	if !t.Enroll {
		why = append(why, "no Enroll permission")
	}
	if !t.Autoenroll {
		why = append(why, "no Autoenroll permission")
	}
	if t.EnrollmentFlags&EnrollmentUserInteractionRequired != 0 {
		why = append(why, "USER_INTERACTION_REQUIRED")
	}
	if t.SubjectNameFlags&NameEnrolleeSuppliesSubject != 0 {
		why = append(why, "ENROLLEE_SUPPLIES_SUBJECT (never autoenrolled)")
	}
	switch {
	case t.Machine() && !d.machine:
		why = append(why, "machine template in user context")
	case !t.Machine() && d.machine:
		why = append(why, "user template in machine context")
	}
	return strings.Join(why, ", ")
}

// dominatedBy names the smallest eligible template that takes name's place, if any: one that
// replaces it, or, among templates that supersede each other, the one with the smallest name.
func (d *decider) dominatedBy(name string, eligible []string) string {
	for _, s := range eligible {
		if d.replaces(s, name) || (d.mutual(s, name) && s < name) {
			return s
		}
	}
	return ""
}

func (d *decider) note(template, text string) {
	d.reasons = append(d.reasons, Reason{Template: template, Text: text})
}

func (d *decider) add(a Action) {
	if a.Kind.Installs() {
		d.installs[a.Template] = true
	}
	d.actions = append(d.actions, a)
}

func (d *decider) expired(h Held) bool { return d.now.After(h.NotAfter) }

// valid reports whether h can meet a requirement.
func (d *decider) valid(h Held) bool { return h.HasKey && !h.Revoked && !d.expired(h) }

// defect says why h is not valid, or "" if it is.
func (d *decider) defect(h Held) string {
	switch {
	case h.Revoked:
		return "was revoked"
	case d.expired(h):
		return "expired on " + date(h.NotAfter)
	case !h.HasKey:
		return "has lost its private key"
	}
	return ""
}

// removable reports whether h is invalid (expired or revoked) under a template that says such
// certificates leave the store.
func (d *decider) removable(h Held) bool {
	t, ok := d.tmpl[h.Template]
	return ok && (h.Revoked || d.expired(h)) && t.EnrollmentFlags&EnrollmentRemoveInvalidCertificate != 0
}

func (d *decider) remove(h Held) {
	d.add(Action{Kind: Remove, Template: h.Template, Cert: ptr(h),
		Why: fmt.Sprintf("remove: the certificate %s and the template sets REMOVE_INVALID_CERTIFICATE_FROM_PERSONAL_STORE", d.defect(h))})
}

// replaceAfter archives h once the template after has installed its replacement; an invalid
// certificate whose template says so is removed at once instead.
func (d *decider) replaceAfter(h Held, after, why string) {
	if d.removable(h) {
		d.remove(h)
		return
	}
	d.add(Action{Kind: Archive, Template: h.Template, Cert: ptr(h), After: after,
		Why: fmt.Sprintf("archive once %s is installed: %s", quoteName(after), why)})
}

// Step 3: pending requests.
func (d *decider) pending() {
	ps := d.pendingIn
	slices.SortStableFunc(ps, func(a, b Pending) int {
		return cmp.Or(cmp.Compare(a.Template, b.Template), cmp.Compare(a.RequestID, b.RequestID),
			a.Submitted.Compare(b.Submitted))
	})
	for _, p := range ps {
		age := d.now.Sub(p.Submitted)
		if age > PendingExpiry {
			d.add(Action{Kind: DropPending, Template: p.Template, Request: ptr(p),
				Why: fmt.Sprintf("drop: request %s has been pending since %s, longer than %s", p.RequestID, date(p.Submitted), period(PendingExpiry))})
			continue
		}
		d.blocked[p.Template] = true
		d.add(Action{Kind: RetrievePending, Template: p.Template, Request: ptr(p),
			Why: fmt.Sprintf("retrieve: request %s submitted %s waits for approval; it is dropped after %s, and the template is not requested again meanwhile",
				p.RequestID, date(p.Submitted), date(p.Submitted.Add(PendingExpiry)))})
	}
}

// requirement plans one template of the requirements list (steps 2, 4, 5, 6).
func (d *decider) requirement(name string) {
	t := d.tmpl[name]
	certs := d.held[name]

	if d.blocked[name] {
		d.note(name, "a request is pending: not requested again in this pass")
		for _, h := range certs {
			d.replaceAfter(h, name, "the pending request replaces it")
		}
		d.archiveSuperseded(name)
		return
	}

	cur := slices.IndexFunc(certs, d.valid)
	if cur < 0 {
		d.unmet(t, certs)
		return
	}
	current := certs[cur]

	kind, why := d.judge(current, t)
	if kind == Keep {
		for i, h := range certs {
			switch {
			case i == cur:
				d.add(Action{Kind: Keep, Template: name, Cert: ptr(h), Why: why})
			case d.removable(h):
				d.remove(h)
			case d.valid(h):
				d.add(Action{Kind: Keep, Template: name, Cert: ptr(h),
					Why: fmt.Sprintf("keep: an older certificate; the agent manages the newest (serial %s)", current.Serial)})
			default:
				d.add(Action{Kind: Keep, Template: name, Cert: ptr(h),
					Why: fmt.Sprintf("keep: this certificate %s, but serial %s meets the requirement", d.defect(h), current.Serial)})
			}
		}
		d.archiveSuperseded(name)
		return
	}
	d.add(Action{Kind: kind, Template: name, Cert: ptr(current), SameKey: kind == Renew && t.SameKeyRenewal(), Why: why})
	for _, h := range certs {
		d.replaceAfter(h, name, fmt.Sprintf("the new %s certificate replaces it", quoteName(name)))
	}
	d.archiveSuperseded(name)
}

// judge decides about a valid certificate of a template on the list: Reenroll, Renew or Keep.
func (d *decider) judge(h Held, t Template) (Kind, string) {
	if h.TemplateMajor != 0 && h.TemplateMajor < t.MajorRevision {
		return Reenroll, fmt.Sprintf("reenroll: the template's major revision was raised from %d to %d (a new request with a new key, not a renewal)",
			h.TemplateMajor, t.MajorRevision)
	}
	var rev string
	switch {
	case h.TemplateMajor > t.MajorRevision:
		rev = fmt.Sprintf("; issued under major revision %d, newer than the policy's %d: nothing forced", h.TemplateMajor, t.MajorRevision)
	case h.TemplateMajor != 0 && h.TemplateMinor != t.MinorRevision:
		rev = fmt.Sprintf("; minor revision %d.%d → %d.%d does not force re-enrollment", h.TemplateMajor, h.TemplateMinor, t.MajorRevision, t.MinorRevision)
	}

	mark, start := renewalMarks(h, t)
	next := NextRenewal(h, t)
	rule := fmt.Sprintf("80%% of the lifetime (%s) and the renewal period (%s before %s, from %s)",
		date(mark), period(max(t.RenewalPeriod, 0)), date(h.NotAfter), date(start))
	if d.now.Before(next) {
		which := "the renewal period begins later than the 80% mark"
		if mark.After(start) {
			which = "the renewal period is longer than 20% of the lifetime, so the 80% mark decides"
		}
		if t.EnrollmentFlags&EnrollmentSkipAutoRenewal != 0 {
			return Keep, fmt.Sprintf("keep: valid until %s; the template sets SKIP_AUTO_RENEWAL, so it is replaced only once it expires%s",
				date(h.NotAfter), rev)
		}
		return Keep, fmt.Sprintf("keep: renews on %s, the later of %s; %s%s", date(next), rule, which, rev)
	}
	if t.EnrollmentFlags&EnrollmentSkipAutoRenewal != 0 {
		return Keep, fmt.Sprintf("keep: renewal would be due since %s but the template sets SKIP_AUTO_RENEWAL; a new certificate is requested once this one expires on %s%s",
			date(next), date(h.NotAfter), rev)
	}
	key := "a new key"
	if t.SameKeyRenewal() {
		key = "the same key (REQUIRE_SAME_KEY_RENEWAL)"
	}
	return Renew, fmt.Sprintf("renew: 80%% of the lifetime (%s) has passed and the renewal period (%s before %s) has begun; signed with the old key, %s%s",
		date(mark), period(max(t.RenewalPeriod, 0)), date(h.NotAfter), key, rev)
}

// unmet plans a template of the list with no valid certificate of its own.
func (d *decider) unmet(t Template, certs []Held) {
	name := t.Name
	// Met by a valid certificate of a template that supersedes this one?
	for _, s := range d.heldNames {
		if s == name || !d.sup[s][name] {
			continue
		}
		for _, h := range d.held[s] {
			if !d.valid(h) {
				continue
			}
			d.note(name, fmt.Sprintf("requirement met by the %s certificate (serial %s), whose template supersedes it", quoteName(s), h.Serial))
			for _, c := range certs {
				if d.removable(c) {
					d.remove(c)
					continue
				}
				d.add(Action{Kind: Keep, Template: name, Cert: ptr(c),
					Why: fmt.Sprintf("keep: this certificate %s, but the %s certificate (serial %s) meets the requirement", d.defect(c), quoteName(s), h.Serial)})
			}
			d.archiveSuperseded(name)
			return
		}
	}

	if len(certs) == 0 {
		why := fmt.Sprintf("enroll: no valid certificate of %s is held", quoteName(name))
		if old := d.supersededHeld(name); len(old) > 0 {
			why = fmt.Sprintf("enroll: %s supersedes %s, which is held", quoteName(name), strings.Join(old, ", "))
		}
		d.add(Action{Kind: Enroll, Template: name, Why: why})
	} else {
		h := certs[0]
		d.add(Action{Kind: Reenroll, Template: name, Cert: ptr(h),
			Why: fmt.Sprintf("reenroll: the certificate %s and cannot be renewed; a new request with a new key", d.defect(h))})
		for _, c := range certs {
			if d.removable(c) {
				d.remove(c)
				continue
			}
			d.add(Action{Kind: Archive, Template: name, Cert: ptr(c), After: name,
				Why: fmt.Sprintf("archive once %s is installed: kept until then although it %s", quoteName(name), d.defect(c))})
		}
	}
	d.archiveSuperseded(name)
}

// supersededHeld lists held templates that name replaces.
func (d *decider) supersededHeld(name string) []string {
	var out []string
	for _, y := range d.heldNames {
		if d.replaces(name, y) {
			out = append(out, quoteName(y))
		}
	}
	return out
}

// archiveSuperseded archives every held certificate whose template name replaces, and that no
// smaller template of the list replaces too (step 4): after name's install action if there is
// one, else at once, since name's requirement is met.
func (d *decider) archiveSuperseded(name string) {
	for _, y := range d.heldNames {
		if d.isReq[y] || d.replacer(y) != name {
			continue
		}
		for _, h := range d.held[y] {
			why := fmt.Sprintf("%s supersedes %s", quoteName(name), quoteName(y))
			switch {
			case d.installs[name]:
				d.replaceAfter(h, name, why)
			case d.removable(h):
				d.remove(h)
			default:
				d.add(Action{Kind: Archive, Template: y, Cert: ptr(h),
					Why: fmt.Sprintf("archive: %s and its requirement is already met", why)})
			}
		}
	}
}

// replacer is the smallest template of the list that replaces y, or "".
func (d *decider) replacer(y string) string {
	for _, r := range d.requirements {
		if d.replaces(r, y) {
			return r
		}
	}
	return ""
}

// others explains held certificates that no template of the list manages.
func (d *decider) others() {
	for _, y := range d.heldNames {
		if d.isReq[y] || d.replacer(y) != "" {
			continue
		}
		for _, h := range d.held[y] {
			var why string
			_, known := d.tmpl[y]
			switch {
			case y == "":
				why = "keep: not managed: the certificate names no template"
			case d.equal(y) != "":
				why = fmt.Sprintf("keep: %s and %s supersede each other; %s is managed in its place", quoteName(y), quoteName(d.equal(y)), quoteName(d.equal(y)))
			case !known:
				why = fmt.Sprintf("keep: not managed: the policy does not offer %s", quoteName(y))
			case d.ineligible[y] != "":
				why = "keep: not managed: " + d.ineligible[y]
			default:
				why = fmt.Sprintf("keep: not managed: %s is not on the requirements list", quoteName(y))
			}
			d.add(Action{Kind: Keep, Template: y, Cert: ptr(h), Why: why})
		}
	}
}

// equal names a template of the list that supersedes y while y supersedes it, or "".
func (d *decider) equal(y string) string {
	for _, r := range d.requirements {
		if d.mutual(r, y) {
			return r
		}
	}
	return ""
}

func (d *decider) finish() Plan {
	anchor := func(a Action) string {
		if a.After != "" {
			return a.After
		}
		return a.Template
	}
	slices.SortStableFunc(d.actions, func(a, b Action) int {
		return cmp.Or(
			cmp.Compare(anchor(a), anchor(b)),
			cmp.Compare(a.Kind, b.Kind),
			cmp.Compare(a.Template, b.Template),
			cmp.Compare(serial(a), serial(b)),
			cmp.Compare(requestID(a), requestID(b)),
		)
	})
	slices.SortStableFunc(d.reasons, func(a, b Reason) int { return cmp.Compare(a.Template, b.Template) })
	return Plan{Actions: d.actions, Reasons: d.reasons}
}

func serial(a Action) string {
	if a.Cert == nil {
		return ""
	}
	return a.Cert.Serial
}

func requestID(a Action) string {
	if a.Request == nil {
		return ""
	}
	return a.Request.RequestID
}

func ptr[T any](v T) *T { return &v }
