package plan

import (
	"fmt"
	"strings"
	"time"
)

// Template flag bits (AD CS values, MS-CRTD), as the policy server reports them.
const (
	// EnrollmentAutoEnrollment is CT_FLAG_AUTO_ENROLLMENT in the enrollment flags. Decide does
	// not require it: the Autoenroll permission decides, as the issue and MS-XCEP's
	// permission/autoEnroll element say.
	EnrollmentAutoEnrollment uint32 = 0x20
	// EnrollmentUserInteractionRequired keeps a template off the requirements list.
	EnrollmentUserInteractionRequired uint32 = 0x100
	// EnrollmentRemoveInvalidCertificate is REMOVE_INVALID_CERTIFICATE_FROM_PERSONAL_STORE.
	EnrollmentRemoveInvalidCertificate uint32 = 0x400
	// EnrollmentSkipAutoRenewal: the certificate is not renewed, only replaced once expired.
	EnrollmentSkipAutoRenewal uint32 = 0x40000

	// NameEnrolleeSuppliesSubject in the subject name flags keeps a template off the list.
	NameEnrolleeSuppliesSubject uint32 = 0x1

	// PrivateKeyRequireSameKeyRenewal in the private key flags (after masking
	// PrivateKeyVersionMask): a renewal reuses the old key.
	PrivateKeyRequireSameKeyRenewal uint32 = 0x80
	// PrivateKeyVersionMask covers the minimum client and server version fields.
	PrivateKeyVersionMask uint32 = 0x000F0000 | 0x0F000000

	// GeneralMachineType in the general flags marks a machine (computer) template.
	GeneralMachineType uint32 = 0x40
)

// PendingExpiry is how long a request may wait for approval before it is dropped.
const PendingExpiry = 60 * 24 * time.Hour

// Template is a certificate template as the policy server describes it (MS-XCEP GetPolicies).
type Template struct {
	Name          string // commonName, the key everything else refers to
	OID           string
	MajorRevision int
	MinorRevision int
	Validity      time.Duration
	RenewalPeriod time.Duration // how long before NotAfter renewal may start
	Autoenroll    bool          // the caller has Autoenroll permission
	Enroll        bool          // the caller has Enroll permission

	EnrollmentFlags  uint32
	SubjectNameFlags uint32
	PrivateKeyFlags  uint32
	GeneralFlags     uint32

	Supersedes     []string // names of the templates this one replaces
	MinimalKeySize int
}

// Machine reports whether the template is for computers rather than users.
func (t Template) Machine() bool { return t.GeneralFlags&GeneralMachineType != 0 }

// SameKeyRenewal reports whether a renewal must keep the old key.
func (t Template) SameKeyRenewal() bool {
	return t.PrivateKeyFlags&^PrivateKeyVersionMask&PrivateKeyRequireSameKeyRenewal != 0
}

// Held is a certificate in the agent's store.
type Held struct {
	Template      string    `json:"template"`                 // from the certificate's template extension
	TemplateMajor int       `json:"template_major,omitempty"` // 0: unknown (a v1 template extension carries no revision)
	TemplateMinor int       `json:"template_minor,omitempty"`
	NotBefore     time.Time `json:"not_before"`
	NotAfter      time.Time `json:"not_after"`
	Serial        string    `json:"serial"`
	HasKey        bool      `json:"has_key"`            // the private key is present
	Revoked       bool      `json:"revoked,omitempty"`  // the caller checked CRL or OCSP
	Archived      bool      `json:"archived,omitempty"` // already in archive/: ignored
}

// Pending is a request waiting for approval.
type Pending struct {
	Template  string    `json:"template"`
	RequestID string    `json:"request_id"`
	Submitted time.Time `json:"submitted"`
}

// Input is everything one pass looks at. Now is the only clock.
type Input struct {
	Now       time.Time
	Machine   bool // machine context; false: user context
	Templates []Template
	Store     []Held
	Pending   []Pending
}

// Kind says what an action does. The order of the constants is the order within a template.
type Kind int

// The kinds of action, in the order they are carried out for one template.
const (
	DropPending     Kind = iota // forget a request pending longer than PendingExpiry
	RetrievePending             // ask for a pending request; install it if issued
	Remove                      // delete an invalid certificate now
	Enroll                      // new request for a template not held
	Reenroll                    // new request (new key) replacing a held certificate
	Renew                       // renewal request signed with the held certificate's key
	Archive                     // move a certificate to archive/
	Keep                        // nothing to do; Why says until when
)

var kindNames = [...]string{"drop-pending", "retrieve-pending", "remove", "enroll", "reenroll", "renew", "archive", "keep"}

func (k Kind) String() string {
	if k >= 0 && int(k) < len(kindNames) {
		return kindNames[k]
	}
	return fmt.Sprintf("Kind(%d)", int(k))
}

// MarshalText makes kinds readable in `--json` output.
func (k Kind) MarshalText() ([]byte, error) { return []byte(k.String()), nil }

// UnmarshalText reads what MarshalText wrote.
func (k *Kind) UnmarshalText(b []byte) error {
	for i, n := range kindNames {
		if n == string(b) {
			*k = Kind(i)
			return nil
		}
	}
	return fmt.Errorf("plan: unknown action kind %q", b)
}

// Installs reports whether the kind can put a new certificate into the store.
func (k Kind) Installs() bool {
	return k == RetrievePending || k == Enroll || k == Reenroll || k == Renew
}

// Action is one step of a pass.
type Action struct {
	Kind     Kind     `json:"kind"`
	Template string   `json:"template"`
	Cert     *Held    `json:"cert,omitempty"`     // the certificate concerned, if any (a copy)
	Request  *Pending `json:"request,omitempty"`  // the pending request concerned, if any (a copy)
	SameKey  bool     `json:"same_key,omitempty"` // Renew only: sign the new request with the old key and keep it
	// After names the template whose install action in this plan must succeed (and install a
	// certificate) before this action runs; empty: no precondition.
	After string `json:"after,omitempty"`
	Why   string `json:"why"`
}

// String is a short form for logs and test messages; Why is left out.
func (a Action) String() string {
	var b strings.Builder
	b.WriteString(a.Kind.String())
	b.WriteString(" ")
	b.WriteString(quoteName(a.Template))
	if a.Cert != nil {
		fmt.Fprintf(&b, " serial=%s", a.Cert.Serial)
	}
	if a.Request != nil {
		fmt.Fprintf(&b, " request=%s", a.Request.RequestID)
	}
	if a.SameKey {
		b.WriteString(" same-key")
	}
	if a.After != "" {
		fmt.Fprintf(&b, " after=%s", quoteName(a.After))
	}
	return b.String()
}

// Reason is a note about a template as a whole (why it is not requested, for example).
type Reason struct {
	Template string `json:"template"`
	Text     string `json:"text"`
}

func (r Reason) String() string { return quoteName(r.Template) + ": " + r.Text }

// Plan is what one pass does, in order, with the notes that explain it.
type Plan struct {
	Actions []Action `json:"actions"`
	Reasons []Reason `json:"reasons"`
}

// String prints the plan for an admin: one line per action with its reason, then the notes.
func (p Plan) String() string {
	var b strings.Builder
	for _, a := range p.Actions {
		fmt.Fprintf(&b, "%s\n    %s\n", a, a.Why)
	}
	for _, r := range p.Reasons {
		fmt.Fprintf(&b, "note %s\n", r)
	}
	return b.String()
}

// NextRenewal is when a certificate becomes due for renewal under its template: the later of
// NotBefore + 80% of its lifetime and NotAfter − the template's renewal period. A renewal period
// longer than 20% of the lifetime therefore waits for the 80% mark.
func NextRenewal(h Held, t Template) time.Time {
	mark, start := renewalMarks(h, t)
	if mark.After(start) {
		return mark
	}
	return start
}

// renewalMarks returns the 80% mark and the start of the renewal period.
func renewalMarks(h Held, t Template) (mark, start time.Time) {
	life := h.NotAfter.Sub(h.NotBefore) // saturates instead of overflowing
	if life < 0 {
		life = 0
	}
	// 80% = life − life/5: exact for whole days of a 365-day year, and no overflow.
	mark = h.NotBefore.Add(life - life/5)
	period := t.RenewalPeriod
	if period < 0 {
		period = 0
	}
	start = h.NotAfter.Add(-period)
	return mark, start
}

func quoteName(s string) string {
	if s == "" || strings.ContainsAny(s, " \t\n\"") {
		return fmt.Sprintf("%q", s)
	}
	return s
}

// date prints a time for people: the day alone at midnight UTC, else day and time in UTC.
func date(t time.Time) string {
	t = t.UTC()
	if t.Hour() == 0 && t.Minute() == 0 && t.Second() == 0 && t.Nanosecond() == 0 {
		return t.Format("2006-01-02")
	}
	return t.Format("2006-01-02 15:04:05 UTC")
}

// period prints a duration in weeks or days when it is a whole number of them.
func period(d time.Duration) string {
	const day = 24 * time.Hour
	switch {
	case d > 0 && d%(7*day) == 0:
		return plural(int64(d/(7*day)), "week")
	case d > 0 && d%day == 0:
		return plural(int64(d/day), "day")
	case d == 0:
		return "0 days"
	}
	return d.String()
}

func plural(n int64, unit string) string {
	if n == 1 {
		return "1 " + unit
	}
	return fmt.Sprintf("%d %ss", n, unit)
}
