package policy

import (
	"crypto/x509"
	"fmt"
	"strings"

	"github.com/enrollment-appliance/aeappliance/enrollsvc/issue"
	"github.com/enrollment-appliance/aeappliance/ldap/secdesc"
)

// Explain is a multi-line, human explanation of d: what `aectl explain` prints per template.
func (d Decision) Explain() string {
	var b strings.Builder
	name := d.Template
	if name == "" {
		name = "(no template)"
	}
	verdict := map[Outcome]string{Issue: "would be ISSUED", Pend: "would PEND for approval", Refuse: "REFUSED"}[d.Outcome]
	fmt.Fprintf(&b, "Template %s: %s\n", name, verdict)
	fmt.Fprintf(&b, "  Read:        %s\n", d.explainVerdict(d.Access.Read))
	fmt.Fprintf(&b, "  Enroll:      %s\n", d.explainVerdict(d.Access.Enroll))
	auto := d.explainVerdict(d.Access.Autoenroll)
	if d.Access.Autoenroll.Allowed && !d.MayAutoenroll {
		auto += " (but the template cannot be autoenrolled; see below)"
	}
	fmt.Fprintf(&b, "  Autoenroll:  %s\n", auto)
	subject := d.Subject
	if subject == "" {
		subject = "(empty)"
	}
	fmt.Fprintf(&b, "  Subject:     %s\n", subject)
	sans := "(none)"
	if len(d.SANs) > 0 {
		sans = strings.Join(d.SANs, ", ")
	}
	fmt.Fprintf(&b, "  SANs:        %s\n", sans)
	if d.Outcome != Refuse {
		o := d.Order
		fmt.Fprintf(&b, "  Validity:    %s\n", formatPeriod(o.Validity))
		fmt.Fprintf(&b, "  Key usage:   %s\n", keyUsageString(o.KeyUsage))
		var ekus []string
		for _, e := range o.ExtKeyUsage {
			ekus = append(ekus, extKeyUsageName(e))
		}
		for _, e := range o.UnknownEKUs {
			ekus = append(ekus, oidName(e))
		}
		if len(ekus) > 0 {
			fmt.Fprintf(&b, "  EKUs:        %s\n", strings.Join(ekus, ", "))
		}
		for _, e := range o.ExtraExtensions {
			crit := ""
			if e.Critical {
				crit = " (critical)"
			}
			fmt.Fprintf(&b, "  Extension:   %s%s\n", oidName(e.Id), crit)
		}
		if o.PublicKey != nil {
			fmt.Fprintf(&b, "  Key:         %s\n", issue.DescribeKey(o.PublicKey))
		}
		if d.Publish {
			fmt.Fprintf(&b, "  Publish:     to the account's userCertificate\n")
		}
	}
	if len(d.Refusals) > 0 {
		b.WriteString("  Refused because:\n")
		for _, r := range d.Refusals {
			fmt.Fprintf(&b, "    - %s\n", r)
		}
	}
	b.WriteString("  Reasons:\n")
	for _, r := range d.Reasons {
		fmt.Fprintf(&b, "    - %s\n", r)
	}
	return b.String()
}

func (d Decision) explainVerdict(v secdesc.Verdict) string {
	yes := "no"
	if v.Allowed {
		yes = "yes"
	}
	if v.Reason == "" {
		return yes
	}
	return yes + ": " + d.why(v)
}

func keyUsageString(ku x509.KeyUsage) string {
	s := KeyUsageNames(ku)
	if len(s) == 0 {
		return "(none)"
	}
	return strings.Join(s, ", ")
}

func extKeyUsageName(e x509.ExtKeyUsage) string {
	for oid, k := range knownEKUs {
		if k == e {
			if n, ok := oidNames[oid]; ok {
				return n + " (" + oid + ")"
			}
			return oid
		}
	}
	return fmt.Sprintf("EKU %d", int(e))
}
