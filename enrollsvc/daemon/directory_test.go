package daemon_test

// The issue's "must hold" list, against a real Samba AD DC seeded with the sample domain of
// ldap/ldaptest (read sample.go there as the specification of who may get what).

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/enrollment-appliance/aeappliance/config"
	"github.com/enrollment-appliance/aeappliance/enrollsvc"
	"github.com/enrollment-appliance/aeappliance/enrollsvc/daemon"
	"github.com/enrollment-appliance/aeappliance/enrollsvc/issue"
	"github.com/enrollment-appliance/aeappliance/enrollsvc/policy"
	"github.com/enrollment-appliance/aeappliance/ldap"
	"github.com/enrollment-appliance/aeappliance/ldap/ldaptest"
	"github.com/enrollment-appliance/aeappliance/provisioning/ceremony"
)

var (
	oidSAN         = asn1.ObjectIdentifier{2, 5, 29, 17}
	oidSIDExt      = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 311, 25, 2}
	oidTemplateV2  = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 311, 21, 7}
	oidBasicConstr = asn1.ObjectIdentifier{2, 5, 29, 19}
)

type dirFixture struct {
	dc  *ldaptest.DC
	s   *ldaptest.Sample
	dir string
	rt  *daemon.Runtime
}

// newDirFixture starts a DC, seeds it, runs the real init with the directory settings and opens
// the runtime.
func newDirFixture(t testing.TB, cacheTTL string) *dirFixture {
	t.Helper()
	f := initDirFixture(t, cacheTTL)
	f.rt = openRuntime(t, f.dir)
	return f
}

// initDirFixture is newDirFixture without opening the runtime (rt is nil).
func initDirFixture(t testing.TB, cacheTTL string) *dirFixture {
	t.Helper()
	dc := ldaptest.StartDC(t)
	s := dc.Seed(t)
	pw := filepath.Join(t.TempDir(), "pw")
	if err := os.WriteFile(pw, []byte(s.SvcEnroll.Password+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	needSoftHSM(t)
	t.Setenv("SOFTHSM2_CONF", "")
	dir := filepath.Join(t.TempDir(), "var")
	_, err := ceremony.Init(context.Background(), ceremony.InitOptions{Dir: dir, CAName: "Appliance Test CA",
		KeyType: "ecdsa-p256", Logger: quiet, Directory: &ceremony.DirectoryOptions{URL: dc.URL, CAFile: dc.CAFile,
			BindUser: s.SvcEnroll.UPN, PasswordFile: pw, CACN: ldaptest.CACN}})
	if err != nil {
		t.Fatalf("Init with a directory: %v", err)
	}
	c, err := config.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	c.Directory.CacheTTL = cacheTTL
	// Appliance-side settings for AEUserV2 (which only erin's test uses): extra subject
	// attributes and a private extension filled from a directory attribute.
	c.Templates = map[string]config.TemplateSettings{"AEUserV2": {ExtraSubject: []string{"title", "ou"},
		CustomExtensions: []config.CustomExtension{{OID: "1.3.6.1.4.1.55555.1.1", Attribute: "department", Encoding: "utf8string"}}}}
	if err := c.Write(dir); err != nil {
		t.Fatal(err)
	}
	return &dirFixture{dc: dc, s: s, dir: dir}
}

// rsaCSR makes a PKCS#10 with an RSA-2048 key (the sample templates want at least 2048 bits)
// and whatever extensions a client wants to smuggle in.
func rsaCSR(t *testing.T, subject pkix.Name, exts ...pkix.Extension) []byte {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: subject, ExtraExtensions: exts}, k)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func ext(c *x509.Certificate, oid asn1.ObjectIdentifier) []byte {
	for _, e := range c.Extensions {
		if e.Id.Equal(oid) {
			return e.Value
		}
	}
	return nil
}

func orderExt(d policy.Decision, oid asn1.ObjectIdentifier) []byte {
	for _, e := range d.Order.ExtraExtensions {
		if e.Id.Equal(oid) {
			return e.Value
		}
	}
	return nil
}

func (f *dirFixture) explain(t *testing.T, account, template string) policy.Decision {
	t.Helper()
	ex, err := f.rt.Service.Explain(context.Background(), account, template)
	if err != nil {
		t.Fatalf("Explain(%s, %s): %v", account, template, err)
	}
	if len(ex.Decisions) != 1 {
		t.Fatalf("Explain(%s, %s) = %+v, want one decision", account, template, ex)
	}
	return ex.Decisions[0]
}

func (f *dirFixture) enroll(t *testing.T, account, template string, csr []byte) *enrollsvc.EnrollResult {
	t.Helper()
	res, err := f.rt.Service.Enroll(context.Background(), enrollsvc.EnrollRequest{Template: template, Account: account, Requester: account, CSR: csr})
	if err != nil {
		t.Fatalf("Enroll(%s, %s): %v", account, template, err)
	}
	return res
}

func TestDirectoryPolicyMustHold(t *testing.T) {
	f := newDirFixture(t, "")
	ctx := context.Background()

	t.Run("nested group member gets exactly what explain said, published", func(t *testing.T) {
		d := f.explain(t, "alice", "AEUser")
		if !d.Access.Read.Allowed || !d.Access.Enroll.Allowed || !d.Access.Autoenroll.Allowed || d.Outcome != policy.Issue {
			t.Fatalf("explain alice/AEUser = %+v, want read, enroll and autoenroll allowed", d.Access)
		}
		res := f.enroll(t, "alice", "AEUser", rsaCSR(t, pkix.Name{}))
		if res.Status != enrollsvc.StatusIssued {
			t.Fatalf("Enroll = %s %v, want issued", res.Status, res.Reasons)
		}
		c := res.Certificate
		want, err := asn1.Marshal(d.Order.Subject.ToRDNSequence())
		if d.Order.RawSubject != nil {
			want = d.Order.RawSubject
		}
		if err != nil || !bytes.Equal(c.RawSubject, want) || issue.FormatName(c.RawSubject) != d.Subject {
			t.Errorf("subject = %q, explain said %q", issue.FormatName(c.RawSubject), d.Subject)
		}
		for _, oid := range []asn1.ObjectIdentifier{oidSAN, oidSIDExt, oidTemplateV2} {
			if got, want := ext(c, oid), orderExt(d, oid); want == nil || !bytes.Equal(got, want) {
				t.Errorf("extension %v = %x, explain said %x", oid, got, want)
			}
		}
		if !strings.Contains(string(ext(c, oidSIDExt)), f.s.Alice.SID.String()) {
			t.Errorf("SID extension %q lacks alice's SID %s", ext(c, oidSIDExt), f.s.Alice.SID)
		}
		// The directory shows the certificate in alice's userCertificate.
		if !f.userCertificateHas(t, "alice", c.Raw) {
			t.Error("the certificate is not in alice's userCertificate although AEUser has PUBLISH_TO_DS")
		}
	})

	t.Run("deny on a group wins", func(t *testing.T) {
		res := f.enroll(t, "bob", "AEUser", rsaCSR(t, pkix.Name{}))
		if res.Status != enrollsvc.StatusDenied || !strings.Contains(strings.Join(res.Reasons, " "), "denied by ACE") ||
			!strings.Contains(strings.Join(res.Reasons, " "), "Denied-Group ("+f.s.DeniedGroup.SID.String()+")") {
			t.Errorf("bob/AEUser = %s %v, want denied by the deny ACE, naming Denied-Group", res.Status, res.Reasons)
		}
	})

	t.Run("Enroll without Read is refused", func(t *testing.T) {
		d := f.explain(t, "dave", "NoReadTemplate")
		if d.Access.Read.Allowed || !d.Access.Enroll.Allowed || d.Outcome != policy.Refuse {
			t.Errorf("dave/NoReadTemplate = %+v %v, want Enroll but no Read, refused", d.Access, d.Outcome)
		}
		res := f.enroll(t, "dave", "NoReadTemplate", rsaCSR(t, pkix.Name{}))
		if res.Status != enrollsvc.StatusDenied || !strings.Contains(strings.Join(res.Reasons, " "), "Read") {
			t.Errorf("dave/NoReadTemplate = %s %v, want denied for lack of Read", res.Status, res.Reasons)
		}
	})

	t.Run("Autoenroll is reported apart from Enroll", func(t *testing.T) {
		d := f.explain(t, "carol", "AEUser")
		if !d.Access.Read.Allowed || d.Access.Enroll.Allowed || d.Access.Autoenroll.Allowed {
			t.Errorf("carol/AEUser = %+v, want Read only", d.Access)
		}
		d = f.explain(t, "bob", "AEUser")
		if d.Access.Enroll.Allowed || !d.Access.Autoenroll.Allowed {
			t.Errorf("bob/AEUser = %+v, want Enroll denied but Autoenroll allowed (reported separately)", d.Access)
		}
		d = f.explain(t, "deep50", "AEUser")
		if !d.Access.Enroll.Allowed {
			t.Errorf("deep50/AEUser = %+v, want Enroll through 51 levels of nesting", d.Access)
		}
	})

	t.Run("smuggled UPN, DNS name, SID and CA flag never reach the certificate", func(t *testing.T) {
		san := mustMarshal(t, []asn1.RawValue{
			otherName(t, asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 311, 20, 2, 3}, mustMarshal(t, asn1.RawValue{Tag: asn1.TagUTF8String, Bytes: []byte(f.s.Bob.UPN)})),
			{Class: asn1.ClassContextSpecific, Tag: 2, Bytes: []byte("evil.example.test")},
		})
		sid := mustMarshal(t, []asn1.RawValue{otherName(t, asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 311, 25, 2, 1}, mustMarshal(t, []byte(f.s.Bob.SID.String())))})
		bc := mustMarshal(t, struct{ CA bool }{true})
		csr := rsaCSR(t, pkix.Name{CommonName: "Bob Baker"}, pkix.Extension{Id: oidSAN, Value: san},
			pkix.Extension{Id: oidSIDExt, Value: sid}, pkix.Extension{Id: oidBasicConstr, Critical: true, Value: bc})
		res := f.enroll(t, "alice", "AEUser", csr)
		if res.Status == enrollsvc.StatusDenied {
			if len(res.Reasons) == 0 {
				t.Error("refused without a reason")
			}
			return
		}
		c := res.Certificate
		all := string(c.Raw)
		for _, bad := range []string{f.s.Bob.UPN, "evil.example.test", f.s.Bob.SID.String(), "Bob Baker"} {
			if strings.Contains(all, bad) {
				t.Errorf("the certificate contains the smuggled %q", bad)
			}
		}
		if c.IsCA {
			t.Error("the certificate is a CA certificate")
		}
		if !strings.Contains(string(ext(c, oidSIDExt)), f.s.Alice.SID.String()) {
			t.Error("the SID extension is not alice's")
		}
	})

	t.Run("pending, then approved as held", func(t *testing.T) {
		res := f.enroll(t, "alice", "PendUser", rsaCSR(t, pkix.Name{}))
		if res.Status != enrollsvc.StatusPending || res.RequestID == 0 {
			t.Fatalf("alice/PendUser = %s %v, want pending", res.Status, res.Reasons)
		}
		held, err := f.rt.Service.HeldOf(ctx, res.RequestID)
		if err != nil {
			t.Fatal(err)
		}
		iss, err := f.rt.Service.ApproveRequest(ctx, res.RequestID, "test")
		if err != nil {
			t.Fatalf("Approve: %v", err)
		}
		if got := issue.FormatName(iss.Certificate.RawSubject); got != held.Subject {
			t.Errorf("approved subject %q, held %q", got, held.Subject)
		}
	})

	t.Run("policies: exactly what the caller may read and enroll", func(t *testing.T) {
		names := func(account string) map[string]bool {
			set, err := f.rt.Service.Policies(ctx, account)
			if err != nil {
				t.Fatalf("Policies(%s): %v", account, err)
			}
			out := map[string]bool{}
			for _, tp := range set.Templates {
				out[tp.Template.Name] = tp.Autoenroll
			}
			if set.Changed.IsZero() {
				t.Errorf("Policies(%s).Changed is zero, want the templates' whenChanged", account)
			}
			return out
		}
		alice := names("alice")
		for tmpl, auto := range map[string]bool{"AEUser": true, "AEUserV2": true, "PendUser": false, "SuppliesSubject": false} {
			if got, ok := alice[tmpl]; !ok || got != auto {
				t.Errorf("alice's policies: %s present=%v autoenroll=%v, want present with autoenroll=%v", tmpl, ok, got, auto)
			}
		}
		for _, tmpl := range []string{"AEMachine", "NoReadTemplate", "NotOffered"} {
			if _, ok := alice[tmpl]; ok {
				t.Errorf("alice's policies include %s", tmpl)
			}
		}
		if _, ok := names("dave")["NoReadTemplate"]; ok {
			t.Error("dave's policies include NoReadTemplate, which he may not read")
		}
		if _, ok := names("bob")["AEUser"]; ok {
			t.Error("bob's policies include AEUser, whose Enroll his group is denied")
		}
		if ws1 := names("WS1$"); len(ws1) != 1 || !ws1["AEMachine"] {
			t.Errorf("WS1$'s policies = %v, want AEMachine with autoenroll", ws1)
		}
	})

	t.Run("poll: pending, issued; never another account's", func(t *testing.T) {
		res := f.enroll(t, "alice", "PendUser", rsaCSR(t, pkix.Name{}))
		p, err := f.rt.Service.Poll(ctx, res.RequestID, "alice")
		if err != nil || p.Status != enrollsvc.StatusPending {
			t.Fatalf("Poll(pending) = %+v, %v", p, err)
		}
		if _, err := f.rt.Service.Poll(ctx, res.RequestID, "bob"); enrollsvc.KindOf(err) != enrollsvc.KindNotFound {
			t.Errorf("bob polling alice's request = %v, want not found", err)
		}
		iss, err := f.rt.Service.ApproveRequest(ctx, res.RequestID, "test")
		if err != nil {
			t.Fatal(err)
		}
		p, err = f.rt.Service.Poll(ctx, res.RequestID, f.s.Alice.UPN)
		if err != nil || p.Status != enrollsvc.StatusIssued || !bytes.Equal(p.Certificate.Raw, iss.Certificate.Raw) {
			t.Errorf("Poll(approved) = %+v, %v; want the issued certificate", p, err)
		}
	})

	t.Run("template not offered, unknown account", func(t *testing.T) {
		for _, tc := range []struct{ account, template, want string }{
			{"alice", "NotOffered", "not offered"},
			{"nobody-here", "AEUser", "nobody-here"},
		} {
			res := f.enroll(t, tc.account, tc.template, rsaCSR(t, pkix.Name{}))
			if res.Status != enrollsvc.StatusDenied || !strings.Contains(strings.Join(res.Reasons, " "), tc.want) {
				t.Errorf("%s/%s = %s %v, want denied mentioning %q", tc.account, tc.template, res.Status, res.Reasons, tc.want)
			}
		}
	})

	t.Run("template settings: extra subject attributes and a custom extension", func(t *testing.T) {
		res := f.enroll(t, "erin", "AEUserV2", rsaCSR(t, pkix.Name{}))
		if res.Status != enrollsvc.StatusIssued {
			t.Fatalf("erin/AEUserV2 = %s %v, want issued", res.Status, res.Reasons)
		}
		c := res.Certificate
		var ous []string
		for _, n := range c.Subject.Names {
			if n.Type.Equal(asn1.ObjectIdentifier{2, 5, 4, 11}) {
				ous = append(ous, n.Value.(string))
			}
		}
		subject := issue.FormatName(c.RawSubject)
		if !strings.Contains(subject, "title=Network Engineer") || !slices.Contains(ous, "Datacenter") || !slices.Contains(ous, "PKI Team") {
			t.Errorf("erin's subject = %s (OUs %v), want title and both ou values", subject, ous)
		}
		var dept string
		if v := ext(c, asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 55555, 1, 1}); v == nil {
			t.Error("the custom extension is missing")
		} else if _, err := asn1.UnmarshalWithParams(v, &dept, "utf8"); err != nil || dept != "Infrastructure" {
			t.Errorf("custom extension = %x (%q, %v), want UTF8String Infrastructure", v, dept, err)
		}
		// alice has no department: the custom extension cannot be filled, so policy refuses.
		res = f.enroll(t, "alice", "AEUserV2", rsaCSR(t, pkix.Name{}))
		if res.Status != enrollsvc.StatusDenied || !strings.Contains(strings.Join(res.Reasons, " "), "department") {
			t.Errorf("alice/AEUserV2 = %s %v, want refused naming the missing department", res.Status, res.Reasons)
		}
	})

	t.Run("computer gets its DNS name", func(t *testing.T) {
		res := f.enroll(t, "WS1$", "AEMachine", rsaCSR(t, pkix.Name{}))
		if res.Status != enrollsvc.StatusIssued {
			t.Fatalf("WS1$/AEMachine = %s %v, want issued", res.Status, res.Reasons)
		}
		if c := res.Certificate; c.Subject.CommonName != "ws1.corp.example.test" || len(c.DNSNames) != 1 || c.DNSNames[0] != "ws1.corp.example.test" {
			t.Errorf("WS1$ certificate = %v %v, want CN and DNS ws1.corp.example.test", c.Subject, c.DNSNames)
		}
	})
}

func (f *dirFixture) userCertificateHas(t *testing.T, name string, der []byte) bool {
	t.Helper()
	c, err := ldap.Dial(context.Background(), ldap.Config{URL: f.dc.URL, CAFile: f.dc.CAFile, BindUser: f.dc.AdminUser,
		Password: f.dc.AdminPassword, CacheTTL: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	a, err := c.Account(context.Background(), name, "userCertificate")
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range a.Raw("userCertificate") {
		if bytes.Equal(v, der) {
			return true
		}
	}
	return false
}

func otherName(t *testing.T, oid asn1.ObjectIdentifier, value []byte) asn1.RawValue {
	body := append(mustMarshal(t, oid), mustMarshal(t, asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 0, IsCompound: true, Bytes: value})...)
	return asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 0, IsCompound: true, Bytes: body}
}

func mustMarshal(t *testing.T, v any) []byte {
	t.Helper()
	b, err := asn1.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// The directory down: a clear refusal, no certificate from permissions older than the cache
// TTL; and back to work by itself when the DC returns.
func TestDirectoryDownAndBack(t *testing.T) {
	f := newDirFixture(t, "1s")
	ctx := context.Background()
	if res := f.enroll(t, "alice", "AEUser", rsaCSR(t, pkix.Name{})); res.Status != enrollsvc.StatusIssued {
		t.Fatalf("before: %s %v", res.Status, res.Reasons)
	}
	f.dc.Stop(t)
	time.Sleep(1500 * time.Millisecond) // past the cache TTL
	_, err := f.rt.Service.Enroll(ctx, enrollsvc.EnrollRequest{Template: "AEUser", Account: "alice", CSR: rsaCSR(t, pkix.Name{})})
	if enrollsvc.KindOf(err) != enrollsvc.KindUnavailable || !strings.Contains(err.Error(), "directory") {
		t.Fatalf("Enroll with the DC down = %v, want KindUnavailable naming the directory", err)
	}
	st := f.rt.Status(ctx, "", "test")
	if st.Directory.OK || st.Directory.Error == "" || st.Healthy {
		t.Errorf("status with the DC down = %+v, want the directory unreachable with a reason", st.Directory)
	}
	f.dc.Start(t)
	deadline := time.Now().Add(30 * time.Second)
	for {
		res, err := f.rt.Service.Enroll(ctx, enrollsvc.EnrollRequest{Template: "AEUser", Account: "alice", CSR: rsaCSR(t, pkix.Name{})})
		if err == nil && res.Status == enrollsvc.StatusIssued {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no recovery 30 s after the DC came back: %v %+v", err, res)
		}
		time.Sleep(500 * time.Millisecond)
	}
	if st := f.rt.Status(ctx, "", "test"); !st.Directory.OK {
		t.Errorf("status after recovery = %+v, want the directory OK", st.Directory)
	}
}

// Policy decisions for an account 51 group levels deep, as explain makes them: directory reads
// (enrollment service, template with its security descriptor, account with tokenGroups, ACE
// trustee names) plus Decide. Warm: everything from the cache, which must cost no LDAP round
// trip; cold: the cache is emptied before every decision.
func BenchmarkPolicyDecision(b *testing.B) {
	f := newDirFixture(b, "")
	ctx := context.Background()
	decide := func(b *testing.B) {
		ex, err := f.rt.Service.Explain(ctx, "deep50", "AEUser")
		if err != nil || len(ex.Decisions) != 1 || !ex.Decisions[0].Access.Enroll.Allowed {
			b.Fatalf("Explain(deep50, AEUser) = %+v, %v; want Enroll allowed", ex, err)
		}
	}
	for _, tc := range []struct {
		name string
		cold bool
	}{{"warm", false}, {"cold", true}} {
		b.Run(tc.name, func(b *testing.B) {
			decide(b) // connect and fill the cache
			before, _ := f.rt.DirectoryStats()
			for b.Loop() {
				if tc.cold {
					f.rt.InvalidateDirectoryCache()
				}
				decide(b)
			}
			after, _ := f.rt.DirectoryStats()
			rt := float64(after.RoundTrips-before.RoundTrips) / float64(b.N)
			b.ReportMetric(rt, "ldap-roundtrips/op")
			if !tc.cold && rt != 0 {
				b.Errorf("warm decisions made %.2f LDAP round trips each, want 0", rt)
			}
		})
	}
}
