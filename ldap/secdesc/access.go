package secdesc

import "fmt"

// Right is a permission on a certificate template.
type Right int

// Template rights.
const (
	Read Right = iota
	Enroll
	Autoenroll
)

func (r Right) String() string {
	switch r {
	case Read:
		return "Read"
	case Enroll:
		return "Enroll"
	case Autoenroll:
		return "Autoenroll"
	}
	return fmt.Sprintf("Right(%d)", int(r))
}

// Verdict is the answer for one right, with what decided it.
type Verdict struct {
	Allowed bool
	Reason  string
	ACE     int // index in the DACL of the deciding ACE, -1 if none
	SID     SID // that ACE's trustee
}

// Access is the answer for the three template rights.
type Access struct {
	Read, Enroll, Autoenroll Verdict
}

// covers reports whether ace concerns right r (whether it allows or denies it).
func covers(a ACE, r Right) bool {
	switch a.Type {
	case AccessAllowed, AccessDenied, AccessAllowedObject, AccessDeniedObject:
	default:
		return false
	}
	if r == Read {
		// Read means reading the whole object: a property-set object ACE does not grant it.
		return a.ObjectType == nil && a.Mask&(RightReadProperty|RightGenericRead|RightGenericAll) != 0
	}
	if a.Mask&(RightControlAccess|RightGenericAll) == 0 {
		return false
	}
	if a.ObjectType == nil { // all extended rights
		return true
	}
	want := EnrollGUID
	if r == Autoenroll {
		want = AutoenrollGUID
	}
	return *a.ObjectType == want
}

func isDeny(a ACE) bool { return a.Type == AccessDenied || a.Type == AccessDeniedObject }

// Check decides Read, Enroll and Autoenroll for a token holding sids (the account's objectSid,
// its transitive groups, S-1-5-11 and S-1-1-0). ACEs are taken in canonical order (explicit
// deny, explicit allow, inherited deny, inherited allow) and the first that concerns a right and
// names a SID of the token decides it, so a deny on any of the account's groups wins over an
// allow at the same level. A nil DACL allows everything; no matching ACE means denied.
func (sd *SD) Check(sids []SID) Access {
	return Access{Read: sd.check(sids, Read), Enroll: sd.check(sids, Enroll), Autoenroll: sd.check(sids, Autoenroll)}
}

func (sd *SD) check(sids []SID, r Right) Verdict {
	if sd == nil {
		return Verdict{ACE: -1, Reason: "no security descriptor"}
	}
	if sd.DACL == nil {
		return Verdict{Allowed: true, ACE: -1, Reason: "the template has no DACL, which grants everyone full access"}
	}
	inToken := func(s SID) bool {
		for _, t := range sids {
			if t.Equal(s) {
				return true
			}
		}
		return false
	}
	for pass := range 4 {
		inherited, deny := pass >= 2, pass%2 == 0
		for i, a := range sd.DACL.ACEs {
			if a.Flags&InheritOnly != 0 || (a.Flags&Inherited != 0) != inherited || isDeny(a) != deny {
				continue
			}
			if !covers(a, r) || !inToken(a.SID) {
				continue
			}
			verb := "allowed"
			if deny {
				verb = "denied"
			}
			return Verdict{Allowed: !deny, ACE: i, SID: a.SID,
				Reason: fmt.Sprintf("%s by ACE %d (%s)", verb, i, describe(a, r))}
		}
	}
	return Verdict{ACE: -1, Reason: fmt.Sprintf("no ACE grants %s to the account or any of its groups", r)}
}

func describe(a ACE, r Right) string {
	kind := "allow"
	if isDeny(a) {
		kind = "deny"
	}
	what := r.String()
	switch {
	case a.Mask&RightGenericAll != 0 || a.Mask&FullControl == FullControl:
		what = "Full Control"
	case r != Read && a.ObjectType == nil:
		what = "all extended rights"
	}
	inh := ""
	if a.Flags&Inherited != 0 {
		inh = ", inherited"
	}
	return fmt.Sprintf("%s %s to %s%s", kind, what, a.SID, inh)
}

// Describe is a one-line description of ACE i of the DACL, for explanations.
func (sd *SD) Describe(i int) string {
	if sd == nil || sd.DACL == nil || i < 0 || i >= len(sd.DACL.ACEs) {
		return ""
	}
	a := sd.DACL.ACEs[i]
	for _, r := range []Right{Enroll, Autoenroll, Read} {
		if covers(a, r) {
			return describe(a, r)
		}
	}
	return fmt.Sprintf("type 0x%02x mask 0x%08x to %s", a.Type, a.Mask, a.SID)
}
