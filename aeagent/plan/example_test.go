package plan_test

import (
	"fmt"
	"time"

	"github.com/enrollment-appliance/aeappliance/aeagent/plan"
)

// A host holds a Workstation certificate 42 days before it expires, a Web certificate whose
// template's major revision was raised, and a certificate of OldVPN, which VPN now supersedes.
// A Wi-Fi request has waited for approval for 10 days.
func Example() {
	day := 24 * time.Hour
	year := 365 * day
	issued := time.Date(2025, 12, 1, 0, 0, 0, 0, time.UTC)
	now := issued.Add(year - 42*day)

	in := plan.Input{
		Now:     now,
		Machine: true,
		Templates: []plan.Template{
			{Name: "Workstation", MajorRevision: 100, Validity: year, RenewalPeriod: 6 * 7 * day,
				Autoenroll: true, Enroll: true, GeneralFlags: plan.GeneralMachineType},
			{Name: "Web", MajorRevision: 101, Validity: year, RenewalPeriod: 6 * 7 * day,
				Autoenroll: true, Enroll: true, GeneralFlags: plan.GeneralMachineType,
				PrivateKeyFlags: plan.PrivateKeyRequireSameKeyRenewal},
			{Name: "VPN", MajorRevision: 100, Validity: year, RenewalPeriod: 6 * 7 * day,
				Autoenroll: true, Enroll: true, GeneralFlags: plan.GeneralMachineType, Supersedes: []string{"OldVPN"}},
			{Name: "WiFi", MajorRevision: 100, Validity: year, RenewalPeriod: 6 * 7 * day,
				Autoenroll: true, Enroll: true, GeneralFlags: plan.GeneralMachineType},
			{Name: "Admin", MajorRevision: 100, Validity: year, Enroll: true, GeneralFlags: plan.GeneralMachineType},
		},
		Store: []plan.Held{
			{Template: "Workstation", TemplateMajor: 100, NotBefore: issued, NotAfter: issued.Add(year), Serial: "1a", HasKey: true},
			{Template: "Web", TemplateMajor: 100, NotBefore: now.Add(-30 * day), NotAfter: now.Add(year - 30*day), Serial: "2b", HasKey: true},
			{Template: "OldVPN", TemplateMajor: 100, NotBefore: issued, NotAfter: issued.Add(2 * year), Serial: "3c", HasKey: true},
		},
		Pending: []plan.Pending{{Template: "WiFi", RequestID: "4711", Submitted: now.Add(-10 * day)}},
	}
	fmt.Print(plan.Decide(in))
	fmt.Println("Workstation renews from", plan.NextRenewal(in.Store[0], in.Templates[0]).Format(time.DateOnly))
	// Output:
	// enroll VPN
	//     enroll: VPN supersedes OldVPN, which is held
	// archive OldVPN serial=3c after=VPN
	//     archive once VPN is installed: VPN supersedes OldVPN
	// reenroll Web serial=2b
	//     reenroll: the template's major revision was raised from 100 to 101 (a new request with a new key, not a renewal)
	// archive Web serial=2b after=Web
	//     archive once Web is installed: the new Web certificate replaces it
	// retrieve-pending WiFi request=4711
	//     retrieve: request 4711 submitted 2026-10-10 waits for approval; it is dropped after 2026-12-09, and the template is not requested again meanwhile
	// renew Workstation serial=1a
	//     renew: 80% of the lifetime (2026-09-19) has passed and the renewal period (6 weeks before 2026-12-01) has begun; signed with the old key, a new key
	// archive Workstation serial=1a after=Workstation
	//     archive once Workstation is installed: the new Workstation certificate replaces it
	// note Admin: not on the requirements list: no Autoenroll permission
	// note WiFi: a request is pending: not requested again in this pass
	// Workstation renews from 2026-10-20
}
