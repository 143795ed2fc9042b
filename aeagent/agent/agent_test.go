package agent

// End to end against a real Samba AD DC seeded with the sample domain (ldaptest) and the real
// enrollment service (daemontest: provisioning.Init, SoftHSM, daemon.Serve). The agent's decision
// clock is injected; the server keeps the real one.

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	goldap "github.com/go-ldap/ldap/v3"

	"github.com/enrollment-appliance/aeappliance/aeagent/plan"
	"github.com/enrollment-appliance/aeappliance/aeagent/store"
	"github.com/enrollment-appliance/aeappliance/aeagent/wsclient"
	"github.com/enrollment-appliance/aeappliance/enrollsvc/daemon/daemontest"
	enstore "github.com/enrollment-appliance/aeappliance/enrollsvc/store"
	"github.com/enrollment-appliance/aeappliance/ldap/ldaptest"
)

// clock is the agent's injected clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time  { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Set(t time.Time) { c.mu.Lock(); c.t = t; c.mu.Unlock() }

type world struct {
	dc  *ldaptest.DC
	s   *ldaptest.Sample
	srv *daemontest.Server
}

// cacheTTL is the server's directory cache in these tests: template changes show after it.
const cacheTTL = 500 * time.Millisecond

func startWorld(t *testing.T) *world {
	t.Helper()
	dc := ldaptest.StartDC(t)
	s := dc.Seed(t)
	srv := daemontest.Start(t, dc, s, daemontest.Options{CAName: "Agent Test CA", CacheTTL: cacheTTL.String()})
	return &world{dc: dc, s: s, srv: srv}
}

// userAgent is an agent for a sample user with password authentication and its own store.
func (w *world) userAgent(t *testing.T, p ldaptest.Principal, dir string, c *clock) *Agent {
	t.Helper()
	pw := filepath.Join(t.TempDir(), "password")
	if err := os.WriteFile(pw, []byte(p.Password+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	a, err := New(Config{Server: w.srv.CEP("UsernamePassword"), Auth: AuthPassword, User: p.UPN, PasswordFile: pw,
		CAFile: w.srv.CAFile, Store: dir, Context: ContextUser}, Options{Now: c.Now})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return a
}

// setTemplate replaces one attribute of a sample template and waits until the server's cache
// has let go of the old value; the old value is put back when the test ends.
func (w *world) setTemplate(t *testing.T, cn, attr string, value []byte) {
	t.Helper()
	conn := w.dc.Admin(t)
	dn := "CN=" + cn + "," + ldaptest.TemplatesDN
	res, err := conn.Search(goldap.NewSearchRequest(dn, goldap.ScopeBaseObject, goldap.NeverDerefAliases, 0, 0, false,
		"(objectClass=*)", []string{attr}, nil))
	if err != nil || len(res.Entries) != 1 {
		t.Fatalf("reading %s of %s: %v", attr, cn, err)
	}
	old := res.Entries[0].GetRawAttributeValue(attr)
	replace := func(v []byte) error {
		m := goldap.NewModifyRequest(dn, nil)
		m.Replace(attr, []string{string(v)})
		return w.dc.Admin(t).Modify(m)
	}
	if err := replace(value); err != nil {
		t.Fatalf("setting %s of %s: %v", attr, cn, err)
	}
	t.Cleanup(func() {
		if err := replace(old); err != nil {
			t.Errorf("restoring %s of %s: %v", attr, cn, err)
		}
		time.Sleep(2 * cacheTTL)
	})
	time.Sleep(2 * cacheTTL)
}

// overlap encodes a renewal period as pKIOverlapPeriod: negative 100 ns units, little endian.
func overlap(d time.Duration) []byte {
	b := make([]byte, 8)
	binary.LittleEndian.PutUint64(b, uint64(-int64(d/100)))
	return b
}

// snapshot is every file under dir but the agent's own state files (policy cache, last pass):
// path → mode and contents.
func snapshot(t *testing.T, dir string) map[string]string {
	t.Helper()
	m := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		if rel == policyFile || rel == lastFile || rel == ".lock" {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		v := info.Mode().String()
		if !d.IsDir() {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			v += " " + string(b)
		}
		m[rel] = v
		return nil
	})
	if err != nil {
		t.Fatalf("snapshot of %s: %v", dir, err)
	}
	return m
}

func sameSnapshot(t *testing.T, what string, before, after map[string]string) {
	t.Helper()
	for k, v := range before {
		if after[k] != v {
			t.Errorf("%s: %s changed or disappeared", what, k)
		}
	}
	for k := range after {
		if _, ok := before[k]; !ok {
			t.Errorf("%s: %s appeared", what, k)
		}
	}
}

// current opens the store and returns its certificates by template.
func current(t *testing.T, dir string) map[string]store.Cert {
	t.Helper()
	st, err := store.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	cs, err := st.Current()
	if err != nil {
		t.Fatalf("Current: %v", err)
	}
	m := map[string]store.Cert{}
	for _, c := range cs {
		m[c.Template] = c
	}
	return m
}

func archived(t *testing.T, dir string) []store.Cert {
	t.Helper()
	st, err := store.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	cs, err := st.Archived()
	if err != nil {
		t.Fatalf("Archived: %v", err)
	}
	return cs
}

func kinds(rep *Report) map[string]string {
	m := map[string]string{}
	for _, o := range rep.Outcomes {
		if o.Action.Kind != plan.Keep {
			m[o.Action.Template] += o.Action.Kind.String() + " "
		}
	}
	return m
}

func pulse(t *testing.T, a *Agent) *Report {
	t.Helper()
	rep, err := a.Pulse(context.Background())
	if err != nil {
		t.Fatalf("Pulse: %v\noutcomes: %+v", err, rep.Outcomes)
	}
	return rep
}

func TestAutoenrollment(t *testing.T) {
	w := startWorld(t)
	ctx := context.Background()
	aliceDir := filepath.Join(t.TempDir(), "alice")
	clk := &clock{t: time.Now()}
	alice := w.userAgent(t, w.s.Alice, aliceDir, clk)

	t.Run("first pulse enrolls exactly the autoenroll templates; a second changes nothing", func(t *testing.T) {
		rep := pulse(t, alice)
		if got := kinds(rep); len(got) != 1 || got["AEUserV2"] != "enroll " {
			t.Errorf("first pulse did %v, want only enroll AEUserV2 (AEUser is superseded by it; PendUser and SuppliesSubject are Enroll only)", got)
		}
		certs := current(t, aliceDir)
		c, ok := certs["AEUserV2"]
		if len(certs) != 1 || !ok || c.Key == nil {
			t.Fatalf("store holds %v, want one AEUserV2 certificate with its key", certs)
		}
		if len(c.Certificate.EmailAddresses) != 1 || c.Certificate.EmailAddresses[0] != w.s.Alice.Mail {
			t.Errorf("certificate names %v, want alice's mail", c.Certificate.EmailAddresses)
		}
		if _, err := c.Certificate.Verify(x509Opts(w)); err != nil {
			t.Errorf("installed certificate does not verify against the CA: %v", err)
		}
		before := snapshot(t, aliceDir)
		rep = pulse(t, alice)
		if rep.Changed || len(kinds(rep)) != 0 {
			t.Errorf("second pulse changed %v, want nothing", kinds(rep))
		}
		sameSnapshot(t, "second pulse", before, snapshot(t, aliceDir))
	})

	t.Run("1 year / 6 weeks renews 42 days before expiry, signed with the old key", func(t *testing.T) {
		old := current(t, aliceDir)["AEUserV2"]
		if old.Certificate == nil {
			t.Fatal("no AEUserV2 certificate to renew")
		}
		due := old.Certificate.NotAfter.Add(-42 * 24 * time.Hour)
		clk.Set(due.Add(-time.Minute))
		before := snapshot(t, aliceDir)
		if rep := pulse(t, alice); rep.Changed {
			t.Errorf("a minute before the renewal period: %v, want nothing", kinds(rep))
		}
		sameSnapshot(t, "pulse before the renewal period", before, snapshot(t, aliceDir))

		clk.Set(due)
		rep := pulse(t, alice)
		if got := kinds(rep); got["AEUserV2"] != "renew archive " {
			t.Errorf("at the start of the renewal period: %v, want renew and archive of AEUserV2", got)
		}
		renewed := checkRenewed(t, w, aliceDir, old)
		if renewed.Key.Public().(*rsa.PublicKey).Equal(old.Key.Public()) {
			t.Error("the renewal kept the key, but the template does not require the same key")
		}
	})

	t.Run("1 year / 120 days waits for the 80% mark", func(t *testing.T) {
		w.setTemplate(t, "AEUserV2", "pKIOverlapPeriod", overlap(120*24*time.Hour))
		old := current(t, aliceDir)["AEUserV2"]
		nb, na := old.Certificate.NotBefore, old.Certificate.NotAfter
		life := na.Sub(nb)
		clk.Set(nb.Add(life * 79 / 100))
		p, err := alice.Plan(ctx, time.Time{})
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(p.String(), "the renewal period is longer than 20% of the lifetime, so the 80% mark decides") {
			t.Errorf("plan at 79%% does not explain the 80%% mark:\n%s", p)
		}
		if rep := pulse(t, alice); rep.Changed {
			t.Errorf("at 79%% of the lifetime: %v, want nothing", kinds(rep))
		}
		clk.Set(nb.Add(life - life/5))
		if got := kinds(pulse(t, alice)); got["AEUserV2"] != "renew archive " {
			t.Errorf("at 80%% of the lifetime: %v, want renew", got)
		}
		checkRenewed(t, w, aliceDir, old)
	})

	t.Run("a raised major revision re-enrolls with a new key", func(t *testing.T) {
		clk.Set(time.Now())
		old := current(t, aliceDir)["AEUserV2"]
		w.setTemplate(t, "AEUserV2", "revision", []byte("101"))
		rep := pulse(t, alice)
		if got := kinds(rep); got["AEUserV2"] != "reenroll archive " {
			t.Errorf("after the major revision bump: %v, want reenroll and archive", got)
		}
		now := current(t, aliceDir)["AEUserV2"]
		if _, _, major, _ := templateInfo(now.Certificate); major != 101 {
			t.Errorf("new certificate has template major revision %d, want 101", major)
		}
		if now.Certificate.SerialNumber.Cmp(old.Certificate.SerialNumber) == 0 || now.Key.Public().(*rsa.PublicKey).Equal(old.Key.Public()) {
			t.Error("re-enrollment kept the certificate or the key")
		}
		if !slices.ContainsFunc(archived(t, aliceDir), func(c store.Cert) bool { return c.Certificate.Equal(old.Certificate) }) {
			t.Error("the replaced certificate is not in the archive")
		}
	})

	t.Run("supersede: a holder of AEUser enrolls for AEUserV2 and archives AEUser", func(t *testing.T) {
		clk.Set(time.Now())
		dir := filepath.Join(t.TempDir(), "erin")
		installAEUser(t, w, w.s.Erin, dir)
		erin := w.userAgent(t, w.s.Erin, dir, clk)
		rep := pulse(t, erin)
		if got := kinds(rep); len(got) != 2 || got["AEUserV2"] != "enroll " || got["AEUser"] != "archive " {
			t.Errorf("pulse of an AEUser holder: %v, want enroll AEUserV2 and archive AEUser", got)
		}
		if i := slices.IndexFunc(rep.Outcomes, func(o Outcome) bool { return o.Action.Kind == plan.Archive }); i < 0 ||
			rep.Outcomes[i].Action.After != "AEUserV2" || rep.Outcomes[i].Result == "" || rep.Outcomes[i-1].Action.Kind != plan.Enroll {
			t.Errorf("outcomes %+v: want the archive right after the AEUserV2 enrollment it waited for", rep.Outcomes)
		}
		certs := current(t, dir)
		if _, ok := certs["AEUserV2"]; !ok || len(certs) != 1 {
			t.Errorf("store holds %v, want AEUserV2 only", certs)
		}
		if a := archived(t, dir); len(a) != 1 || a[0].Template != "AEUser" {
			t.Errorf("archive = %v, want the AEUser certificate", a)
		}
	})

	t.Run("pending: a request id, installed on the pulse after approval", func(t *testing.T) {
		clk.Set(time.Now())
		w.setTemplate(t, "AEUserV2", "msPKI-Enrollment-Flag", []byte(strconv.Itoa(ldaptest.EnrollAuto|ldaptest.EnrollPublishToDS|ldaptest.EnrollPendAll)))
		dir := filepath.Join(t.TempDir(), "dave")
		dave := w.userAgent(t, w.s.Dave, dir, clk)
		pulse(t, dave)
		st, err := dave.Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(st.Pending) != 1 || st.Pending[0].Template != "AEUserV2" || st.Pending[0].RequestID <= 0 || len(st.Certificates) != 0 {
			t.Fatalf("status after a pending request = %+v, want one pending AEUserV2 request and no certificate", st)
		}
		id := st.Pending[0].RequestID
		if rep := pulse(t, dave); kinds(rep)["AEUserV2"] != "retrieve-pending " || countRequests(t, w, "dave") != 1 {
			t.Errorf("pulse while pending: %v, %d requests at the CA; want a retrieval and no new request", kinds(rep), countRequests(t, w, "dave"))
		}
		if _, err := w.srv.Runtime.Service.ApproveRequest(ctx, id, "test"); err != nil {
			t.Fatalf("ApproveRequest(%d): %v", id, err)
		}
		pulse(t, dave)
		if c, ok := current(t, dir)["AEUserV2"]; !ok || c.Key == nil {
			t.Error("the approved certificate was not installed with the request's key")
		}
		if st, _ := dave.Status(ctx); len(st.Pending) != 0 {
			t.Errorf("pending after installation = %+v, want none", st.Pending)
		}
	})

	t.Run("certificate authentication renews over the certificate endpoints", func(t *testing.T) {
		old := current(t, aliceDir)["AEUserV2"]
		a, err := New(Config{Server: w.srv.CEP("Certificate"), Auth: AuthCertificate, CAFile: w.srv.CAFile, Store: aliceDir,
			Context: ContextUser}, Options{Now: clk.Now})
		if err != nil {
			t.Fatal(err)
		}
		clk.Set(old.Certificate.NotAfter.Add(-7 * 24 * time.Hour))
		if got := kinds(pulse(t, a)); got["AEUserV2"] != "renew archive " {
			t.Errorf("renewal with certificate authentication: %v, want renew", got)
		}
		checkRenewed(t, w, aliceDir, old)

		empty, err := New(Config{Server: w.srv.CEP("Certificate"), Auth: AuthCertificate, CAFile: w.srv.CAFile,
			Store: filepath.Join(t.TempDir(), "empty"), Context: ContextUser}, Options{Now: clk.Now})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := empty.Pulse(ctx); err == nil || !strings.Contains(err.Error(), "enroll first with kerberos or password") {
			t.Errorf("certificate authentication with an empty store = %v, want a clear refusal", err)
		}
	})

	t.Run("failures leave the store untouched and say why", func(t *testing.T) {
		clk.Set(time.Now())
		before := snapshot(t, aliceDir)
		down, err := New(Config{Server: "https://localhost:1/ADPolicyProvider_CEP_UsernamePassword/service.svc/CEP", Auth: AuthPassword,
			User: w.s.Alice.UPN, PasswordFile: alice.cfg.PasswordFile, CAFile: w.srv.CAFile, Store: aliceDir, Context: ContextUser}, Options{Now: clk.Now})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := down.Pulse(ctx); err == nil || !strings.Contains(err.Error(), "fetching the policy") {
			t.Errorf("pulse with the policy server down = %v, want an error about fetching the policy", err)
		}
		sameSnapshot(t, "policy server down", before, snapshot(t, aliceDir))

		// A corrupt store: a certificate file that is not one.
		cert := filepath.Join(aliceDir, "AEUserV2", "cert.pem")
		good, _ := os.ReadFile(cert)
		os.WriteFile(cert, []byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"), 0o644)
		corrupt := snapshot(t, aliceDir)
		clk.Set(time.Now().Add(400 * 24 * time.Hour)) // everything would be due
		if _, err := alice.Pulse(ctx); !errors.Is(err, store.ErrCorrupt) {
			t.Errorf("pulse on a corrupt store = %v, want ErrCorrupt", err)
		}
		sameSnapshot(t, "corrupt store", corrupt, snapshot(t, aliceDir))
		os.WriteFile(cert, good, 0o644)
	})

	t.Run("a full disk leaves the store untouched", func(t *testing.T) {
		if os.Geteuid() != 0 {
			if os.Getenv("CI") == "true" {
				t.Fatal("this test mounts a tmpfs and needs root on CI")
			}
			t.Skip("needs root to mount a tmpfs")
		}
		mnt := t.TempDir()
		if err := syscall.Mount("tmpfs", mnt, "tmpfs", 0, "size=256k,mode=0700"); err != nil {
			t.Fatalf("mounting a tmpfs: %v", err)
		}
		t.Cleanup(func() { syscall.Unmount(mnt, syscall.MNT_DETACH) })
		if out, err := exec.Command("cp", "-a", aliceDir+"/.", mnt).CombinedOutput(); err != nil {
			t.Fatalf("copying the store: %v %s", err, out)
		}
		f, err := os.Create(filepath.Join(mnt, "filler"))
		if err != nil {
			t.Fatal(err)
		}
		for _, err = f.Write(make([]byte, 4096)); err == nil; _, err = f.Write(make([]byte, 4096)) {
		}
		f.Close()
		if !errors.Is(err, syscall.ENOSPC) {
			t.Fatalf("filling the tmpfs: %v", err)
		}
		before := snapshot(t, mnt)
		c := current(t, mnt)["AEUserV2"]
		full, err := New(Config{Server: w.srv.CEP("UsernamePassword"), Auth: AuthPassword, User: w.s.Alice.UPN,
			PasswordFile: alice.cfg.PasswordFile, CAFile: w.srv.CAFile, Store: mnt, Context: ContextUser}, Options{Now: clk.Now})
		if err != nil {
			t.Fatal(err)
		}
		clk.Set(c.Certificate.NotAfter.Add(-24 * time.Hour)) // due for renewal
		if _, err := full.Pulse(ctx); !errors.Is(err, syscall.ENOSPC) {
			t.Errorf("pulse on a full disk = %v, want ENOSPC", err)
		}
		sameSnapshot(t, "full disk", before, snapshot(t, mnt))
	})
}

// checkRenewed checks that the template's certificate in dir replaced old through a renewal
// (the CA recorded the request as a renewal, i.e. signed with old's key) and old is archived.
func checkRenewed(t *testing.T, w *world, dir string, old store.Cert) store.Cert {
	t.Helper()
	now := current(t, dir)[old.Template]
	if now.Certificate == nil || now.Certificate.SerialNumber.Cmp(old.Certificate.SerialNumber) == 0 {
		t.Fatalf("no new %s certificate installed", old.Template)
	}
	if !slices.ContainsFunc(archived(t, dir), func(c store.Cert) bool { return c.Certificate.Equal(old.Certificate) }) {
		t.Error("the renewed certificate is not in the archive")
	}
	reqs, err := w.srv.Runtime.Store.ListRequests(context.Background(), enstore.RequestFilter{Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	serial := serialOf(now.Certificate)
	i := slices.IndexFunc(reqs, func(r enstore.Request) bool { return r.Serial == serial })
	if i < 0 || !strings.HasPrefix(reqs[i].Requester, "renewal by ") {
		t.Errorf("the CA's request for %s = %+v, want a renewal (signed with the old key)", serial, reqs)
	}
	return now
}

func countRequests(t *testing.T, w *world, account string) int {
	t.Helper()
	reqs, err := w.srv.Runtime.Store.ListRequests(context.Background(), enstore.RequestFilter{Account: account, Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	return len(reqs)
}

// installAEUser gets an AEUser certificate for p straight from the enrollment service and puts
// it in a store at dir, as an earlier agent (or an admin) would have.
func installAEUser(t *testing.T, w *world, p ldaptest.Principal, dir string) {
	t.Helper()
	c, err := wsclient.New(w.srv.CEP("UsernamePassword"), wsclient.PasswordAuth{Username: p.UPN, Password: p.Password}, w.srv.Roots)
	if err != nil {
		t.Fatal(err)
	}
	pol, err := c.GetPolicies(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	tmpl, ok := pol.Template("AEUser")
	if !ok {
		t.Fatal("AEUser is not offered")
	}
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := NewRequest(tmpl, key, p.Name)
	if err != nil {
		t.Fatal(err)
	}
	url, _ := pol.EnrollmentURL(tmpl, wsclient.AuthUsername)
	res, err := c.Issue(context.Background(), url, csr, nil)
	if err != nil || res.Status != wsclient.StatusIssued {
		t.Fatalf("Issue AEUser for %s = %+v, %v", p.Name, res, err)
	}
	st, err := store.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if _, err := st.Install("AEUser", res.Certificate, res.Chain, key); err != nil {
		t.Fatal(err)
	}
}

func x509Opts(w *world) x509.VerifyOptions {
	return x509.VerifyOptions{Roots: w.srv.Roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}
}
