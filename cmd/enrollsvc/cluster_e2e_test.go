package main

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/enrollment-appliance/aeappliance/aeagent/agent"
	"github.com/enrollment-appliance/aeappliance/aeagent/plan"
	"github.com/enrollment-appliance/aeappliance/aeagent/wsclient"
	"github.com/enrollment-appliance/aeappliance/apiclient"
	"github.com/enrollment-appliance/aeappliance/apiclient/apitest"
	"github.com/enrollment-appliance/aeappliance/enrollsvc/store/pgtest"
	"github.com/enrollment-appliance/aeappliance/ldap/ldaptest"
	"github.com/enrollment-appliance/aeappliance/proto/certutil"
)

// Two instances of one CA on one PostgreSQL database (a real server, TLS verified), the second
// made by enrollsvc join with a copy of the first's SoftHSM token: init refuses a database that
// serves another CA, join refuses an HSM without the CA's key; 5,000 issuances spread over both
// from 16 goroutines give 5,000 distinct serials, each stored once; a revocation on A is
// "revoked" in B's OCSP answer (openssl ocsp) within a second and in the CRL B serves; cluster
// status lists both; SIGKILL of A in the middle of a burst loses no certificate a client
// received, B keeps serving, and A comes back.
func TestTwoInstancesOnePostgres(t *testing.T) {
	needSoftHSM(t)
	db := pgtest.Shared(t).NewDatabase(t)
	storeArgs := []string{"--store-url", db.URL, "--store-ca-file", db.CAFile, "--store-password-file", db.PasswordFile}
	portA, portB := freePort(t), freePort(t)
	baseA, baseB := "http://127.0.0.1:"+portA, "http://127.0.0.1:"+portB
	dirA := initDir(t, append(storeArgs, "--http-url", baseA, "--http-listen", "127.0.0.1:"+portA, "--instance", "a")...)
	if cfg, err := os.ReadFile(filepath.Join(dirA, "config.json")); err != nil || strings.Contains(string(cfg), db.Password) ||
		!strings.Contains(string(cfg), `"postgres"`) {
		t.Errorf("A's configuration names no postgres store, or holds the password: %v\n%s", err, cfg)
	}

	// Another CA on the same database: refused, and nothing left behind.
	other := filepath.Join(t.TempDir(), "other")
	if _, errOut, err := runBin(t, "enrollsvc", append([]string{"init", "--data", other, "--ca-name", "Another CA"}, storeArgs...)...); err == nil ||
		!strings.Contains(errOut, "the store serves CN=E2E Root CA") || strings.Contains(errOut, db.Password) {
		t.Errorf("init of another CA on A's database: %v %s, want refused naming A's CA", err, errOut)
	}
	if _, err := os.Stat(other); err == nil {
		t.Error("the refused init left its data directory")
	}
	// join with an HSM that holds another CA's key: refused.
	foreign := initDir(t)
	joinArgs := func(dir, tokenFrom string, extra ...string) []string {
		return append(append([]string{"join", "--data", dir, "--token-from", filepath.Join(tokenFrom, "hsm")}, storeArgs...), extra...)
	}
	refused := filepath.Join(t.TempDir(), "refused")
	if _, errOut, err := runBin(t, "enrollsvc", joinArgs(refused, foreign)...); err == nil || !strings.Contains(errOut, "join never creates one") {
		t.Errorf("join with another CA's token: %v %s, want refused", err, errOut)
	}
	if _, err := os.Stat(refused); err == nil {
		t.Error("the refused join left its data directory")
	}
	dirB := filepath.Join(t.TempDir(), "b")
	if out, errOut, err := runBin(t, "enrollsvc", joinArgs(dirB, dirA, "--http-listen", "127.0.0.1:"+portB, "--instance", "b")...); err != nil ||
		!strings.Contains(out, "CN=E2E Root CA") {
		t.Fatalf("enrollsvc join: %v\n%s%s", err, out, errOut)
	}
	a, _ := startServe(t, dirA), startServe(t, dirB)
	clA, err := apiclient.DialDataDir(dirA)
	if err != nil {
		t.Fatal(err)
	}
	clB, err := apiclient.DialDataDir(dirB)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()

	// 5,000 issuances over both instances from 16 goroutines.
	const total = 5000
	csrs := make([]string, 16)
	for i := range csrs {
		csrs[i] = newCSR(t, fmt.Sprintf("node%d.example.test", i))
	}
	start := time.Now()
	serials := apitest.IssueSpread(t, ctx, []*apiclient.Client{clA, clB}, csrs, "server", total)
	t.Logf("%d issuances over two instances in %s", len(serials), time.Since(start).Round(time.Millisecond))
	if len(serials) != total {
		t.Fatalf("%d distinct serials, want %d", len(serials), total)
	}
	for _, cl := range []*apiclient.Client{clA, clB} {
		// Plus the certificates of the two instances' management APIs.
		if st, err := cl.Status(ctx); err != nil || st.Store.Certificates != total+2 {
			t.Errorf("the store as an instance counts it: %+v, %v; want %d certificates", st.Store, err, total+2)
		}
	}

	// A revocation on A: B's OCSP answer says revoked within a second, and B's CRL lists it.
	var victim string
	for s := range serials {
		victim = s
		break
	}
	tmp := t.TempDir()
	caFile := filepath.Join(dirA, "ca.pem")
	certFile := filepath.Join(tmp, "victim.pem")
	os.WriteFile(certFile, []byte(serials[victim]), 0o600)
	ocspB := func() string {
		out, err := exec.Command("openssl", "ocsp", "-issuer", caFile, "-cert", certFile, "-url", baseB+"/ocsp", "-CAfile", caFile).CombinedOutput()
		if err != nil {
			t.Fatalf("openssl ocsp against B: %v\n%s", err, out)
		}
		return string(out)
	}
	if out := ocspB(); !strings.Contains(out, certFile+": good") {
		t.Fatalf("B's OCSP before the revocation:\n%s", out)
	}
	if _, err := clA.Revoke(ctx, victim, "keyCompromise"); err != nil {
		t.Fatal(err)
	}
	revokedAt := time.Now()
	for {
		out := ocspB()
		if strings.Contains(out, certFile+": revoked") {
			t.Logf("B's OCSP says revoked %s after A revoked", time.Since(revokedAt).Round(time.Millisecond))
			break
		}
		if time.Since(revokedAt) > time.Second {
			t.Fatalf("B's OCSP still does not say revoked a second after A revoked:\n%s", out)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// One instance publishes the CRLs (the store's lock); both serve the newest, and the numbers
	// each serves only grow.
	seen := map[string]int64{}
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		numbers := map[string]int64{}
		listed := true
		for name, base := range map[string]string{"A": baseA, "B": baseB} {
			crl, err := x509.ParseRevocationList(httpGet(t, base+"/crl/E2E-Root-CA.crl"))
			if err != nil {
				t.Fatal(err)
			}
			has := false
			for _, e := range crl.RevokedCertificateEntries {
				has = has || certutil.SerialString(e.SerialNumber) == victim
			}
			listed = listed && has
			numbers[name] = crl.Number.Int64()
			if numbers[name] < seen[name] {
				t.Errorf("%s served CRL %d after CRL %d", name, numbers[name], seen[name])
			}
			seen[name] = numbers[name]
		}
		if listed && numbers["A"] == numbers["B"] {
			t.Logf("A and B serve CRL %d, which lists the revocation", numbers["A"])
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("five seconds after A revoked %s: CRL numbers served %v, both listing it: %v", victim, numbers, listed)
		}
	}

	// Both instances, live, one version.
	var cs apiclient.Cluster
	aectlJSON(t, dirB, &cs, "cluster", "status")
	if !cs.StoreOK || !strings.HasPrefix(cs.Store, "postgresql ") || len(cs.Instances) != 2 || cs.Instance != "b" ||
		!strings.HasPrefix(cs.DatabaseVersion, "15") || (cs.CRLPublisher != "a" && cs.CRLPublisher != "b") {
		t.Fatalf("aectl cluster status = %+v; want both instances, PostgreSQL 15 and the CRL publisher named", cs)
	}
	for _, in := range cs.Instances {
		if !in.Live || in.Version != cs.Instances[0].Version || len(in.Addresses) < 2 {
			t.Errorf("instance %+v: want live, the same version, API and HTTP addresses", in)
		}
	}
	if out, _, err := runBin(t, "aectl", "--data", dirA, "cluster", "status"); err != nil || !strings.Contains(out, "live") {
		t.Errorf("aectl cluster status (text): %v\n%s", err, out)
	}

	// SIGKILL A in the middle of a burst over both: every certificate a client received is in the
	// store, B keeps serving, A comes back.
	var mu sync.Mutex
	var wg sync.WaitGroup
	received := map[string]string{}
	killed := make(chan struct{})
	var once sync.Once
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cl := clA
			if w%2 == 1 {
				cl = clB
			}
			after := 0 // B's issuances after A died
			for {
				select {
				case <-killed:
					if cl == clA || after == 50 {
						return
					}
					after++
				default:
				}
				res, err := cl.Issue(ctx, apiclient.IssueRequest{CSR: csrs[w], Profile: "server"})
				if err != nil {
					if cl != clA {
						t.Errorf("B failed while A was killed: %v", err)
					}
					return // A is gone
				}
				mu.Lock()
				received[res.Serial] = res.Certificate
				got := len(received)
				mu.Unlock()
				if got >= 400 {
					once.Do(func() {
						a.cmd.Process.Signal(syscall.SIGKILL)
						close(killed)
					})
				}
			}
		}()
	}
	select {
	case <-killed:
	case <-time.After(2 * time.Minute):
		t.Fatal("the burst did not reach the kill point in 2 minutes")
	}
	wg.Wait()
	<-a.done
	startServe(t, dirA)
	clA, err = apiclient.DialDataDir(dirA)
	if err != nil {
		t.Fatal(err)
	}
	missing := 0
	for serial, p := range received {
		if _, dup := serials[serial]; dup {
			t.Errorf("serial %s issued twice", serial)
		}
		c, err := clA.Certificate(ctx, serial)
		if err != nil || strings.TrimSpace(c.PEM) != strings.TrimSpace(p) {
			missing++
		}
	}
	if missing > 0 {
		t.Errorf("%d of the %d certificates clients received around the SIGKILL are missing or differ", missing, len(received))
	}
	t.Logf("%d certificates received around A's SIGKILL, all in the store; A restarted", len(received))
}

// PostgreSQL stopped for 10 s under load: requests fail cleanly (503, saying the store is
// unavailable), nothing half-done is left, and service resumes once the database is back, without
// restarting the instance.
func TestPostgresOutageRiddenOut(t *testing.T) {
	needSoftHSM(t)
	pg := pgtest.Shared(t)
	db := pg.NewDatabase(t)
	dir := initDir(t, "--store-url", db.URL, "--store-ca-file", db.CAFile, "--store-password-file", db.PasswordFile)
	startServe(t, dir)
	cl, err := apiclient.DialDataDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	csr := newCSR(t, "outage.example.test")
	var mu sync.Mutex
	issued, failures := map[string]bool{}, map[string]int{}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				res, err := cl.Issue(ctx, apiclient.IssueRequest{CSR: csr, Profile: "server"})
				mu.Lock()
				if err != nil {
					// Counted by kind: a clean failure is a 503 saying the store is unavailable.
					kind := "clean"
					if msg := err.Error(); !strings.Contains(msg, "503") || !strings.Contains(msg, "the database is unavailable") ||
						strings.Contains(msg, db.Password) {
						kind = msg
					}
					failures[kind]++
				} else {
					issued[res.Serial] = true
				}
				mu.Unlock()
				if err != nil {
					time.Sleep(100 * time.Millisecond)
				}
			}
		}()
	}
	time.Sleep(time.Second)
	pg.Stop(t)
	stopped := time.Now()
	time.Sleep(10 * time.Second)
	mu.Lock()
	before := len(issued)
	mu.Unlock()
	pg.Start(t)
	t.Logf("PostgreSQL was down for %s", time.Since(stopped).Round(100*time.Millisecond))
	deadline := time.Now().Add(30 * time.Second)
	for {
		mu.Lock()
		n := len(issued)
		mu.Unlock()
		if n >= before+50 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no service 30 s after PostgreSQL came back: %d issued before, %d now; failures %v", before, n, failures)
		}
		time.Sleep(100 * time.Millisecond)
	}
	close(stop)
	wg.Wait()
	if len(failures) == 0 {
		t.Fatal("no request failed while PostgreSQL was down")
	}
	for msg, n := range failures {
		if msg != "clean" {
			t.Errorf("%d failures while PostgreSQL was down said %q, want 503: the database is unavailable", n, msg)
		}
	}
	for serial := range issued {
		if _, err := cl.Certificate(ctx, serial); err != nil {
			t.Errorf("certificate %s a client received is not in the store: %v", serial, err)
		}
	}
	// Nothing half-done: every request the store says is issued has its certificate.
	reqs, err := cl.Requests(ctx, apiclient.RequestQuery{State: "issued", Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range reqs {
		if _, err := cl.Certificate(ctx, r.Serial); err != nil {
			t.Errorf("request %d is issued but its certificate %s is missing: %v", r.ID, r.Serial, err)
		}
	}
	t.Logf("%d issued; %d clean failures (503) while PostgreSQL was down", len(issued), failures["clean"])
}

// With the directory (Samba) and two instances on one PostgreSQL: alice's request for a
// PEND_ALL_REQUESTS template, held by A, approved on A, is delivered by B's QueryTokenStatus
// (MS-WSTEP), once; join refuses to go without the directory's password. A backup of B taken
// while the request was held restores with the request still pending, and the restored
// appliance issues it on approval, under the same CA.
func TestHeldRequestAcrossInstances(t *testing.T) {
	s, dirA, join := directoryInstance(t)
	if _, errOut, err := join(filepath.Join(t.TempDir(), "nopw"), false); err == nil || !strings.Contains(errOut, "--ldap-password-file") {
		t.Errorf("join of a directory CA without the directory password: %v %s, want refused naming --ldap-password-file", err, errOut)
	}
	dirB := filepath.Join(t.TempDir(), "b")
	if out, errOut, err := join(dirB, true); err != nil {
		t.Fatalf("enrollsvc join: %v\n%s%s", err, out, errOut)
	}
	startServe(t, dirA)
	srvB := startServe(t, dirB)
	ctx := context.Background()
	wsFor := func(dir string) (*wsclient.Client, string) {
		w := newWSClient(t, dir, "E2E Root CA")
		caPEM, _ := os.ReadFile(filepath.Join(dir, "ca.pem"))
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(caPEM)
		c, err := wsclient.New(w.cep, wsclient.PasswordAuth{Username: s.Alice.UPN, Password: s.Alice.Password}, pool)
		if err != nil {
			t.Fatal(err)
		}
		return c, w.ces
	}
	wa, cesA := wsFor(dirA)
	wb, cesB := wsFor(dirB)
	der, _ := pem.Decode(rsaCSRPEM(t))
	held, err := wa.Issue(ctx, cesA, der.Bytes, map[string]string{"CertificateTemplate": "PendUser"})
	if err != nil || held.Status != wsclient.StatusPending || held.RequestID == 0 {
		t.Fatalf("PendUser on A = %+v, %v; want pending", held, err)
	}
	if r, err := wb.QueryTokenStatus(ctx, cesB, held.RequestID); err != nil || r.Status != wsclient.StatusPending {
		t.Errorf("B's QueryTokenStatus before approval = %+v, %v; want pending", r, err)
	}
	tmp := t.TempDir()
	pass, backupFile := filepath.Join(tmp, "pass"), filepath.Join(tmp, "b.backup")
	os.WriteFile(pass, []byte("correct horse battery staple\n"), 0o600)
	if o, errOut, err := runBin(t, "aectl", "--data", dirB, "backup", "--out", backupFile, "--passphrase-file", pass); err != nil {
		t.Fatalf("aectl backup of B while the request is held: %v\n%s%s", err, o, errOut)
	}
	clA, err := apiclient.DialDataDir(dirA)
	if err != nil {
		t.Fatal(err)
	}
	approved, err := clA.Approve(ctx, held.RequestID)
	if err != nil || approved.Status != "issued" {
		t.Fatalf("approve on A = %+v, %v", approved, err)
	}
	got, err := wb.QueryTokenStatus(ctx, cesB, held.RequestID)
	if err != nil || got.Status != wsclient.StatusIssued || got.Certificate == nil ||
		certutil.SerialString(got.Certificate.SerialNumber) != approved.Serial {
		t.Fatalf("B's QueryTokenStatus after approval on A = %+v, %v; want certificate %s", got, err, approved.Serial)
	}
	if again, err := wa.QueryTokenStatus(ctx, cesA, held.RequestID); err != nil || again.Certificate == nil ||
		certutil.SerialString(again.Certificate.SerialNumber) != approved.Serial {
		t.Errorf("A's QueryTokenStatus = %+v, %v; want the same certificate %s (issued once)", again, err, approved.Serial)
	}
	certs, err := clA.Certificates(ctx, apiclient.CertQuery{Account: "alice"})
	if err != nil || len(certs) != 1 {
		t.Errorf("alice's certificates = %d, %v; want the one approved", len(certs), err)
	}

	// The backup taken while the request was held: restored, it is still pending there (the
	// restore is of that moment), and approving it issues under the same CA.
	srvB.cmd.Process.Signal(os.Interrupt)
	<-srvB.done
	restored := filepath.Join(tmp, "restored")
	if o, errOut, err := runBin(t, "enrollsvc", "restore", "--data", restored, "--from", backupFile, "--passphrase-file", pass); err != nil {
		t.Fatalf("enrollsvc restore: %v\n%s%s", err, o, errOut)
	}
	startServe(t, restored)
	clR, err := apiclient.DialDataDir(restored)
	if err != nil {
		t.Fatal(err)
	}
	pending, err := clR.Requests(ctx, apiclient.RequestQuery{State: apiclient.RequestPending, Limit: 100})
	if err != nil || len(pending) != 1 || pending[0].ID != held.RequestID || pending[0].Template != "PendUser" {
		t.Fatalf("pending requests on the restored appliance = %+v, %v; want request %d for PendUser", pending, err, held.RequestID)
	}
	again, err := clR.Approve(ctx, held.RequestID)
	if err != nil || again.Status != "issued" {
		t.Fatalf("approve on the restored appliance = %+v, %v", again, err)
	}
	c, err := clR.Certificate(ctx, again.Serial)
	if err != nil {
		t.Fatal(err)
	}
	if err := chainsTo(t, dirA, c.PEM); err != nil {
		t.Errorf("the certificate the restored appliance issued does not chain to the CA: %v", err)
	}
}

// chainsTo verifies the PEM certificate against the CA certificate of the data directory dir.
func chainsTo(t *testing.T, dir, certPEM string) error {
	t.Helper()
	caPEM, _ := os.ReadFile(filepath.Join(dir, "ca.pem"))
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(caPEM)
	blk, _ := pem.Decode([]byte(certPEM))
	if blk == nil {
		t.Fatalf("no PEM certificate in %q", certPEM)
	}
	cert, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	_, err = cert.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
	return err
}

// Clients fail over: the MS-XCEP policy of A lists the enrollment services of A and of B (every
// live instance), A's with the lower priority numbers; aeagent enrolls at A, and once A is killed
// it renews at B, with the policy it cached (A's policy service is gone too).
func TestAgentFailsOverToAnotherInstance(t *testing.T) {
	s, dirA, join := directoryInstance(t)
	dirB := filepath.Join(t.TempDir(), "b")
	if out, errOut, err := join(dirB, true); err != nil {
		t.Fatalf("enrollsvc join: %v\n%s%s", err, out, errOut)
	}
	startServe(t, dirB)
	a := startServe(t, dirA)
	wsA, wsB := newWSClient(t, dirA, "E2E Root CA"), newWSClient(t, dirB, "E2E Root CA")
	ctx := context.Background()

	// A's policy: A's services first, then B's.
	caPEM, _ := os.ReadFile(filepath.Join(dirA, "ca.pem"))
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	pc, err := wsclient.New(wsA.cep, wsclient.PasswordAuth{Username: s.Alice.UPN, Password: s.Alice.Password}, pool)
	if err != nil {
		t.Fatal(err)
	}
	pol, err := pc.GetPolicies(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	tmpl, ok := pol.Template("AEUserV2")
	if !ok {
		t.Fatal("A's policy offers alice no AEUserV2")
	}
	// Each instance has two names (localhost, 127.0.0.1): A's two come first, then B's.
	var got []string
	prio := map[string]int{}
	for _, u := range pol.EnrollmentURLs(tmpl, wsclient.AuthUsername) {
		got = append(got, fmt.Sprintf("%d %s", u.Priority, u.URI))
		prio[u.URI] = u.Priority
	}
	if len(got) != 4 || got[0] != "1 "+wsA.ces || prio[wsB.ces] <= 2 || prio[strings.Replace(wsA.ces, "localhost", "127.0.0.1", 1)] != 2 {
		t.Fatalf("A's policy lists for alice's password enrollment %q, want A's services at priorities 1 and 2, then B's", got)
	}

	// aeagent for alice, against A's policy service.
	alicePW := filepath.Join(t.TempDir(), "alice-pw")
	os.WriteFile(alicePW, []byte(s.Alice.Password+"\n"), 0o600)
	store := filepath.Join(t.TempDir(), "alice")
	clk := &agentClock{t: time.Now()}
	ag, err := agent.New(agent.Config{Server: wsA.cep, Auth: agent.AuthPassword, User: s.Alice.UPN, PasswordFile: alicePW,
		CAFile: filepath.Join(dirA, "ca.pem"), Store: store, Context: agent.ContextUser}, agent.Options{Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	rep, err := ag.Pulse(ctx)
	if err != nil || !rep.Changed {
		t.Fatalf("the first pulse (both instances up) = %+v, %v", rep, err)
	}
	st, err := ag.Status(ctx)
	if err != nil || len(st.Certificates) != 1 {
		t.Fatalf("alice's store after the first pulse: %+v, %v", st, err)
	}
	first := st.Certificates[0]

	// A dies; at the start of the renewal period the agent renews at B.
	a.cmd.Process.Signal(syscall.SIGKILL)
	<-a.done
	if first.RenewAt.IsZero() {
		t.Fatalf("alice's certificate has no renewal time: %+v", first)
	}
	clk.Set(first.RenewAt)
	rep, err = ag.Pulse(ctx)
	if err != nil {
		t.Fatalf("the pulse with A down: %v (%+v)", err, rep)
	}
	st, err = ag.Status(ctx)
	if err != nil || len(st.Certificates) != 1 || st.Certificates[0].Serial == first.Serial {
		t.Fatalf("alice's store after renewing with A down: %+v, %v; want a new certificate", st, err)
	}
	renewed := false
	for _, o := range rep.Outcomes {
		renewed = renewed || o.Action.Kind == plan.Renew && o.Error == ""
	}
	if !renewed {
		t.Errorf("the pulse with A down did %+v, want a renewal", rep.Outcomes)
	}
	clB, err := apiclient.DialDataDir(dirB)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := clB.Certificate(ctx, st.Certificates[0].Serial); err != nil {
		t.Errorf("the renewed certificate %s is not in the shared store: %v", st.Certificates[0].Serial, err)
	}
}

// agentClock is aeagent's injected decision clock.
type agentClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *agentClock) Now() time.Time  { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *agentClock) Set(t time.Time) { c.mu.Lock(); c.t = t; c.mu.Unlock() }

// directoryInstance makes instance "a" of a CA with the sample Samba domain's policy and a store
// in a new PostgreSQL database; join makes instance "b" of it in dir (with the directory's
// password when withPassword), running enrollsvc join with a copy of a's token.
func directoryInstance(t *testing.T) (s *ldaptest.Sample, dirA string, join func(dir string, withPassword bool) (string, string, error)) {
	t.Helper()
	needSoftHSM(t)
	dc := ldaptest.StartDC(t)
	s = dc.Seed(t)
	db := pgtest.Shared(t).NewDatabase(t)
	storeArgs := []string{"--store-url", db.URL, "--store-ca-file", db.CAFile, "--store-password-file", db.PasswordFile}
	dirA = initDir(t, append(append(directoryFlags(t, dc, s), storeArgs...), "--instance", "a")...)
	pw := filepath.Join(t.TempDir(), "pw")
	if err := os.WriteFile(pw, []byte(s.SvcEnroll.Password), 0o600); err != nil {
		t.Fatal(err)
	}
	join = func(dir string, withPassword bool) (string, string, error) {
		args := append([]string{"join", "--data", dir, "--token-from", filepath.Join(dirA, "hsm"), "--instance", "b"}, storeArgs...)
		if withPassword {
			args = append(args, "--ldap-password-file", pw)
		}
		return runBin(t, "enrollsvc", args...)
	}
	return s, dirA, join
}

// enrollsvc store migrate moves a running single appliance's history into PostgreSQL: refused
// while the service answers; once stopped, every certificate, request, event, revocation and the
// CRL number move and the counts are checked; served from PostgreSQL the service answers as before
// (a revoked certificate is revoked in its OCSP answer, the CRL number goes on growing) and goes on
// issuing; a second move into the same database is refused.
func TestStoreMigrate(t *testing.T) {
	needSoftHSM(t)
	port := freePort(t)
	base := "http://127.0.0.1:" + port
	dir := initDir(t, "--http-url", base, "--http-listen", "127.0.0.1:"+port)
	srv := startServe(t, dir)
	cl, err := apiclient.DialDataDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	csr := newCSR(t, "migrate.example.test")
	var serials []string
	for range 20 {
		res, err := cl.Issue(ctx, apiclient.IssueRequest{CSR: csr, Profile: "server"})
		if err != nil {
			t.Fatal(err)
		}
		serials = append(serials, res.Serial)
	}
	if c, err := cl.Revoke(ctx, serials[3], "keyCompromise"); err != nil || c.Status != "revoked" {
		t.Fatalf("revoke: %+v, %v", c, err)
	}
	revoked, err := cl.Certificate(ctx, serials[3])
	if err != nil {
		t.Fatal(err)
	}
	crl, err := cl.PublishCRL(ctx)
	if err != nil {
		t.Fatal(err)
	}
	before, err := cl.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	evBefore, err := cl.Events(ctx, apiclient.EventQuery{Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}

	db := pgtest.Shared(t).NewDatabase(t)
	args := []string{"store", "migrate", "--from", dir, "--to", db.URL, "--store-ca-file", db.CAFile, "--store-password-file", db.PasswordFile}
	if _, errOut, err := runBin(t, "enrollsvc", args...); err == nil || !strings.Contains(errOut, "the service is running") {
		t.Errorf("store migrate while serving: %v %s, want refused", err, errOut)
	}
	srv.cmd.Process.Signal(syscall.SIGTERM)
	<-srv.done
	out, errOut, err := runBin(t, "enrollsvc", args...)
	if err != nil || !strings.Contains(out, fmt.Sprintf("certificates       %d\n", before.Store.Certificates)) {
		t.Fatalf("store migrate: %v\n%s%s", err, out, errOut)
	}
	t.Logf("%s", out)
	if cfg, err := os.ReadFile(filepath.Join(dir, "config.json")); err != nil || !strings.Contains(string(cfg), `"postgres"`) ||
		strings.Contains(string(cfg), `"store": "enrollsvc.db"`) || strings.Contains(string(cfg), db.Password) {
		t.Errorf("config.json after the move: %v\n%s", err, cfg)
	}

	startServe(t, dir)
	cl, err = apiclient.DialDataDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	after, err := cl.Status(ctx)
	if err != nil || after.Store.Certificates != before.Store.Certificates {
		t.Errorf("certificates after the move: %+v, %v; want %d", after.Store, err, before.Store.Certificates)
	}
	var cs apiclient.Cluster
	aectlJSON(t, dir, &cs, "cluster", "status")
	if !strings.HasPrefix(cs.Store, "postgresql ") || !cs.StoreOK {
		t.Errorf("cluster status after the move = %+v", cs)
	}
	evAfter, err := cl.Events(ctx, apiclient.EventQuery{Limit: 1000})
	if err != nil || len(evAfter) < len(evBefore) {
		t.Fatalf("events after the move: %d (%v), want at least the %d before", len(evAfter), err, len(evBefore))
	}
	for i, e := range evBefore {
		if evAfter[i].Seq != e.Seq || evAfter[i].ID != e.ID || evAfter[i].Message != e.Message {
			t.Errorf("event %d after the move = %+v, want %+v", i, evAfter[i], e)
			break
		}
	}
	certFile := filepath.Join(t.TempDir(), "revoked.pem")
	os.WriteFile(certFile, []byte(revoked.PEM), 0o600)
	caFile := filepath.Join(dir, "ca.pem")
	if out, err := exec.Command("openssl", "ocsp", "-issuer", caFile, "-cert", certFile, "-url", base+"/ocsp", "-CAfile", caFile).CombinedOutput(); err != nil ||
		!strings.Contains(string(out), certFile+": revoked") {
		t.Errorf("OCSP for the certificate revoked before the move: %v\n%s", err, out)
	}
	next, err := cl.PublishCRL(ctx)
	if err != nil || next.Number <= crl.DeltaNumber || next.Entries != 1 {
		t.Errorf("a CRL after the move = %+v, %v; want a number above %d listing the one revocation", next, err, crl.DeltaNumber)
	}
	if res, err := cl.Issue(ctx, apiclient.IssueRequest{CSR: csr, Profile: "server"}); err != nil || res.Serial == "" {
		t.Errorf("issuing after the move: %+v, %v", res, err)
	}
	if _, errOut, err := runBin(t, "enrollsvc", "store", "migrate", "--from", initDir(t), "--to", db.URL, "--store-ca-file", db.CAFile,
		"--store-password-file", db.PasswordFile); err == nil || !strings.Contains(errOut, "must be empty") {
		t.Errorf("a second move into the same database: %v %s, want refused", err, errOut)
	}
}

// A second instance joins with a token bundle, the only way a SoftHSM key reaches another
// appliance: enrollsvc token export seals the token to a passphrase (refused for an appliance with
// its own SQLite store, and recorded in the shared audit trail first); join refuses a wrong
// passphrase or a wrong user PIN and leaves nothing; with both, the joined instance issues
// certificates signed by the same CA key.
func TestJoinWithATokenBundle(t *testing.T) {
	needSoftHSM(t)
	db := pgtest.Shared(t).NewDatabase(t)
	storeArgs := []string{"--store-url", db.URL, "--store-ca-file", db.CAFile, "--store-password-file", db.PasswordFile}
	tmp := t.TempDir()
	export := func(dir, passphrase string) (string, string, error) {
		cmd := exec.Command(filepath.Join(binDir, "enrollsvc"), "token", "export", "--data", dir, "--by", "e2e")
		cmd.Stdin = strings.NewReader(passphrase + "\n")
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		return stdout.String(), stderr.String(), err
	}
	if _, errOut, err := export(initDir(t), "a good long passphrase"); err == nil || !strings.Contains(errOut, "move it to PostgreSQL") {
		t.Errorf("export from an appliance with its own store: %v %s, want refused", err, errOut)
	}
	dirA := initDir(t, append(storeArgs, "--instance", "a")...)
	if _, errOut, err := export(dirA, "short"); err == nil || !strings.Contains(errOut, "at least 12 characters") {
		t.Errorf("export with a short passphrase: %v %s", err, errOut)
	}
	const passphrase = "bundle passphrase for the e2e test"
	bundle, errOut, err := export(dirA, passphrase)
	if err != nil || !strings.HasPrefix(bundle, "-----BEGIN AGE ENCRYPTED FILE-----") {
		t.Fatalf("enrollsvc token export: %v %s\n%.200s", err, errOut, bundle)
	}
	pin, _ := os.ReadFile(filepath.Join(dirA, "hsm", "pin"))
	files := map[string]string{"bundle": bundle, "pass": passphrase + "\n", "wrongpass": "not the bundle passphrase\n",
		"pin": string(pin), "wrongpin": "not-the-pin-1\n"}
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(tmp, name), []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	join := func(dir, pass, pin string) (string, string, error) {
		return runBin(t, "enrollsvc", append([]string{"join", "--data", dir, "--token-bundle", filepath.Join(tmp, "bundle"),
			"--bundle-passphrase-file", filepath.Join(tmp, pass), "--pin-file", filepath.Join(tmp, pin), "--instance", "b"}, storeArgs...)...)
	}
	dirB := filepath.Join(tmp, "b")
	for _, c := range []struct{ pass, pin, want string }{
		{"wrongpass", "pin", "the passphrase does not open this token bundle"},
		{"pass", "wrongpin", "opening the HSM"},
	} {
		if _, errOut, err := join(dirB, c.pass, c.pin); err == nil || !strings.Contains(errOut, c.want) {
			t.Errorf("join with %s and %s: %v %s, want refused: %s", c.pass, c.pin, err, errOut, c.want)
		}
		if _, err := os.Stat(dirB); err == nil {
			t.Errorf("the refused join (%s, %s) left its data directory", c.pass, c.pin)
		}
	}
	if out, errOut, err := join(dirB, "pass", "pin"); err != nil || !strings.Contains(out, "CN=E2E Root CA") {
		t.Fatalf("enrollsvc join --token-bundle: %v\n%s%s", err, out, errOut)
	}
	startServe(t, dirB)
	clB, err := apiclient.DialDataDir(dirB)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	res, err := clB.Issue(ctx, apiclient.IssueRequest{CSR: newCSR(t, "bundle.example.test"), Profile: "server"})
	if err != nil {
		t.Fatal(err)
	}
	if err := chainsTo(t, dirA, res.Certificate); err != nil {
		t.Errorf("the joined instance's certificate does not chain to A's CA: %v", err)
	}
	evs, err := clB.Events(ctx, apiclient.EventQuery{ID: 1104, Limit: 10})
	if err != nil || len(evs) != 1 || evs[0].Fields["by"] != "e2e" || evs[0].Fields["instance"] != "a" {
		t.Errorf("the export's audit event, as B reads the shared trail: %+v, %v; want one by e2e on a", evs, err)
	}
}
