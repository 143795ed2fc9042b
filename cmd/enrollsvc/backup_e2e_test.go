package main

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/enrollment-appliance/aeappliance/apiclient"
	"github.com/enrollment-appliance/aeappliance/config"
	"github.com/enrollment-appliance/aeappliance/enrollsvc/store"
	"github.com/enrollment-appliance/aeappliance/enrollsvc/store/pgtest"
)

// TestBackupUnderLoadAndRestore: aectl backup writes an encrypted backup while clients keep
// issuing; a wrong passphrase, a flipped byte or a cut-short file is refused by enrollsvc restore
// and leaves nothing behind; the restored data directory serves the same CA: OCSP says revoked
// for a certificate revoked before the backup, every certificate issued before the backup began
// is there, a new certificate verifies against the same CA certificate, the next CRL number is
// higher than any before the backup, and the audit trail still verifies.
func TestBackupUnderLoadAndRestore(t *testing.T) {
	port := freePort(t)
	base := "http://127.0.0.1:" + port
	dir := initDir(t, "--http-url", base, "--http-listen", "127.0.0.1:"+port)
	// Two requests the snapshot will hold pending: one held for a certificate manager (its
	// decision kept), one an issuance in progress (recorded, no certificate yet: what the
	// snapshot catches when it falls between an issuance's two commits).
	heldID, inProgressID := pendingRequests(t, dir)
	srv := startServe(t, dir)
	tmp := t.TempDir()
	caFile := filepath.Join(tmp, "ca.pem")
	caPEM, _ := os.ReadFile(filepath.Join(dir, config.CACertFile))
	os.WriteFile(caFile, caPEM, 0o600)
	cl, err := apiclient.DialDataDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	issue := func(cn string) apiclient.IssueResponse {
		res, err := cl.Issue(context.Background(), apiclient.IssueRequest{CSR: newCSR(t, cn), Profile: "server"})
		if err != nil {
			t.Errorf("issuing %s: %v", cn, err)
		}
		return res
	}
	revoked := issue("revoked.example.test")
	revokedPEM := filepath.Join(tmp, "revoked.pem")
	os.WriteFile(revokedPEM, []byte(revoked.Certificate), 0o600)
	if _, _, err := runBin(t, "aectl", "--data", dir, "revoke", revoked.Serial, "--reason", "keyCompromise"); err != nil {
		t.Fatal(err)
	}
	var crl apiclient.CRLInfo
	aectlJSON(t, dir, &crl, "crl", "publish")

	// Clients issue while the backup runs.
	var (
		mu        sync.Mutex
		done      []string // serials whose issuance returned before the backup began
		backupAt  time.Time
		stop      = make(chan struct{})
		wg        sync.WaitGroup
		issuedAll int
	)
	loadDay := time.Now().UTC().Format(time.DateOnly)
	for range 3 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				res := issue("load.example.test")
				mu.Lock()
				issuedAll++
				if backupAt.IsZero() && res.Serial != "" {
					done = append(done, res.Serial)
				}
				mu.Unlock()
			}
		})
	}
	time.Sleep(time.Second)
	pass := filepath.Join(tmp, "passphrase")
	os.WriteFile(pass, []byte("correct horse battery staple\n"), 0o600)
	out := filepath.Join(tmp, "ca.backup")
	mu.Lock()
	backupAt = time.Now()
	mu.Unlock()
	if o, errOut, err := runBin(t, "aectl", "--data", dir, "backup", "--out", out, "--passphrase-file", pass); err != nil {
		t.Fatalf("aectl backup: %v\n%s%s", err, o, errOut)
	}
	time.Sleep(500 * time.Millisecond) // issuing goes on after the backup too
	close(stop)
	wg.Wait()
	if len(done) == 0 {
		t.Fatal("no certificate was issued before the backup")
	}
	t.Logf("%d certificates issued by the load, %d before the backup began", issuedAll, len(done))
	var evs []apiclient.Event
	aectlJSON(t, dir, &evs, "events", "--id", "3070")
	if len(evs) != 1 || evs[0].Fields["by"] != "admin-api" {
		t.Errorf("backup events = %+v, want one", evs)
	}
	var st apiclient.Status
	aectlJSON(t, dir, &st, "status")
	if st.Backup.Last.IsZero() || st.Activity.Issued < int64(issuedAll) || st.Activity.Pending < 0 {
		t.Errorf("status after the backup: backup %+v, activity %+v", st.Backup, st.Activity)
	}
	// Issued today counts from the store (every instance, since 00:00 UTC): the load's, unless
	// the UTC day changed while it ran.
	if loadDay == time.Now().UTC().Format(time.DateOnly) && st.Activity.IssuedToday < int64(issuedAll) {
		t.Errorf("status: %d issued today; the load alone issued %d", st.Activity.IssuedToday, issuedAll)
	}
	if _, _, err := runBin(t, "aectl", "--data", dir, "backup", "--out", out, "--passphrase-file", pass); err == nil {
		t.Error("aectl backup over an existing file succeeded")
	}
	srv.cmd.Process.Signal(os.Interrupt)
	<-srv.done

	// Refused, leaving nothing: a wrong passphrase, a flipped byte, a cut-short file.
	wrong := filepath.Join(tmp, "wrong")
	os.WriteFile(wrong, []byte("not the passphrase at all\n"), 0o600)
	good, _ := os.ReadFile(out)
	flipped, cut := filepath.Join(tmp, "flipped.backup"), filepath.Join(tmp, "cut.backup")
	bad := append([]byte(nil), good...)
	bad[len(bad)/2] ^= 0x01
	os.WriteFile(flipped, bad, 0o600)
	os.WriteFile(cut, good[:len(good)-100], 0o600)
	for _, c := range []struct{ file, pass, why string }{{out, wrong, "wrong passphrase"}, {flipped, pass, "flipped byte"}, {cut, pass, "cut short"}} {
		target := filepath.Join(tmp, "refused-"+strings.ReplaceAll(c.why, " ", "-"))
		if o, errOut, err := runBin(t, "enrollsvc", "restore", "--data", target, "--from", c.file, "--passphrase-file", c.pass); err == nil {
			t.Errorf("restore of a backup with a %s succeeded:\n%s", c.why, o)
		} else if !strings.Contains(errOut, "restore:") {
			t.Errorf("restore with a %s: %v %q", c.why, err, errOut)
		}
		if _, err := os.Lstat(target); err == nil {
			t.Errorf("restore with a %s left %s behind", c.why, target)
		}
		if left, _ := filepath.Glob(filepath.Join(tmp, ".refused-*")); len(left) > 0 {
			t.Errorf("restore with a %s left %v behind", c.why, left)
		}
	}

	// Restored, on "another machine": a new data directory.
	newDir := filepath.Join(tmp, "restored")
	if o, errOut, err := runBin(t, "enrollsvc", "restore", "--data", newDir, "--from", out, "--passphrase-file", pass); err != nil {
		t.Fatalf("enrollsvc restore: %v\n%s%s", err, o, errOut)
	}
	startServe(t, newDir)
	restoredCA, _ := os.ReadFile(filepath.Join(newDir, config.CACertFile))
	if string(restoredCA) != string(caPEM) {
		t.Fatal("the restored appliance has another CA certificate")
	}
	ocsp, err := exec.Command("openssl", "ocsp", "-issuer", caFile, "-cert", revokedPEM, "-url", base+"/ocsp", "-CAfile", caFile).CombinedOutput()
	if err != nil || !strings.Contains(string(ocsp), "Response verify OK") || !strings.Contains(string(ocsp), ": revoked") {
		t.Errorf("OCSP of the certificate revoked before the backup, from the restored appliance: %v\n%s", err, ocsp)
	}
	var certs []apiclient.Certificate
	aectlJSON(t, newDir, &certs, "certs", "--limit", "100000")
	have := map[string]bool{}
	for _, c := range certs {
		have[c.Serial] = true
	}
	for _, s := range done {
		if !have[s] {
			t.Errorf("certificate %s, issued before the backup began, is not in the restored store", s)
		}
	}
	newCert := filepath.Join(tmp, "new.pem")
	csr := filepath.Join(tmp, "new.csr")
	os.WriteFile(csr, []byte(newCSR(t, "after-restore.example.test")), 0o600)
	var res apiclient.IssueResponse
	aectlJSON(t, newDir, &res, "issue", "--csr", csr, "--profile", "server")
	os.WriteFile(newCert, []byte(res.Certificate), 0o600)
	if o, err := exec.Command("openssl", "verify", "-CAfile", caFile, newCert).CombinedOutput(); err != nil {
		t.Errorf("a certificate the restored appliance issued does not verify against the same CA: %v\n%s", err, o)
	}
	if have[res.Serial] {
		t.Errorf("the restored appliance reused serial %s", res.Serial)
	}
	var after apiclient.CRLInfo
	aectlJSON(t, newDir, &after, "crl", "publish")
	if after.Number <= crl.DeltaNumber || after.Number <= crl.Number {
		t.Errorf("CRL number %d after the restore; before the backup %d (delta %d): numbers must go on upward", after.Number, crl.Number, crl.DeltaNumber)
	}
	// The held request is still pending; the issuance in progress at the snapshot is failed
	// (nothing on the restored appliance would finish it), with its reason in the trail.
	var held, inProgress apiclient.Request
	aectlJSON(t, newDir, &held, "request", strconv.FormatInt(heldID, 10))
	aectlJSON(t, newDir, &inProgress, "request", strconv.FormatInt(inProgressID, 10))
	if held.State != apiclient.RequestPending || inProgress.State != apiclient.RequestFailed ||
		!strings.Contains(inProgress.Reason, "in progress when the backup's snapshot was taken") {
		t.Errorf("after the restore: held request %+v, in-progress request %+v; want pending and failed", held, inProgress)
	}
	var restoredEv []apiclient.Event
	aectlJSON(t, newDir, &restoredEv, "events", "--id", "3053")
	if len(restoredEv) != 1 {
		t.Errorf("restore events = %+v, want one", restoredEv)
	}
	if o, errOut, err := runBin(t, "aectl", "--data", newDir, "events", "verify"); err != nil {
		t.Errorf("the restored audit trail does not verify: %v\n%s%s", err, o, errOut)
	}

	// The appliance's provisioning step fetches the backup over HTTP and listens on its own
	// addresses, keeping the CA's URLs.
	hs := httptest.NewServer(http.FileServer(http.Dir(tmp)))
	defer hs.Close()
	provision := func(data, from, passphrase string) (string, string, error) {
		cmd := exec.Command(filepath.Join(binDir, "enrollsvc"), "provision", "restore", "--data", data, "--from", from,
			"--api-listen", "127.0.0.1:19443", "--http-listen", "127.0.0.1:18080", "--json")
		cmd.Stdin = strings.NewReader(passphrase + "\n")
		var o, e strings.Builder
		cmd.Stdout, cmd.Stderr = &o, &e
		err := cmd.Run()
		return o.String(), e.String(), err
	}
	appliance := filepath.Join(tmp, "appliance-var")
	if _, errOut, err := provision(appliance, hs.URL+"/ca.backup", "not the passphrase at all"); err == nil {
		t.Error("provision restore with a wrong passphrase succeeded")
	} else if _, serr := os.Lstat(appliance); serr == nil {
		t.Errorf("provision restore with a wrong passphrase left %s (%s)", appliance, errOut)
	}
	o, errOut, err := provision(appliance, hs.URL+"/ca.backup", "correct horse battery staple")
	if err != nil || !strings.Contains(o, "Restored the backup") {
		t.Fatalf("enrollsvc provision restore: %v\n%s%s", err, o, errOut)
	}
	cfg, err := config.Load(appliance)
	if err != nil || cfg.API.Listen != "127.0.0.1:19443" || cfg.HTTP.Listen != "127.0.0.1:18080" || cfg.HTTP.BaseURL != base {
		t.Errorf("restored configuration: %+v %v; want this machine's listeners and the CA's URL %s", cfg, err, base)
	}
	if _, errOut, err := provision(appliance, hs.URL+"/ca.backup", "correct horse battery staple"); err == nil || !strings.Contains(errOut, "holds a provisioning already") {
		t.Errorf("provision restore over a provisioned directory: %v %s", err, errOut)
	}
}

// TestBackupOfAPostgresInstance: an instance on a shared PostgreSQL store backs up the store
// as one consistent snapshot; the backup restores as a single appliance on SQLite that serves
// the same CA with every certificate and revocation, and its CRL numbers go on upward.
func TestBackupOfAPostgresInstance(t *testing.T) {
	db := pgtest.Shared(t).NewDatabase(t)
	dir := initDir(t, "--store-url", db.URL, "--store-ca-file", db.CAFile, "--store-password-file", db.PasswordFile)
	srv := startServe(t, dir)
	tmp := t.TempDir()
	csr := filepath.Join(tmp, "a.csr")
	os.WriteFile(csr, []byte(newCSR(t, "pg.example.test")), 0o600)
	var res apiclient.IssueResponse
	aectlJSON(t, dir, &res, "issue", "--csr", csr, "--profile", "server")
	var revoked apiclient.Certificate
	aectlJSON(t, dir, &revoked, "revoke", res.Serial, "--reason", "superseded")
	pass := filepath.Join(tmp, "pass")
	os.WriteFile(pass, []byte("correct horse battery staple\n"), 0o600)
	out := filepath.Join(tmp, "pg.backup")
	if o, errOut, err := runBin(t, "aectl", "--data", dir, "backup", "--out", out, "--passphrase-file", pass); err != nil {
		t.Fatalf("aectl backup of a PostgreSQL instance: %v\n%s%s", err, o, errOut)
	}
	srv.cmd.Process.Signal(os.Interrupt)
	<-srv.done
	restored := filepath.Join(tmp, "restored")
	o, errOut, err := runBin(t, "enrollsvc", "restore", "--data", restored, "--from", out, "--passphrase-file", pass)
	if err != nil || !strings.Contains(o, "single appliance") {
		t.Fatalf("enrollsvc restore: %v\n%s%s", err, o, errOut)
	}
	cfg, err := config.Load(restored)
	if err != nil || cfg.Postgres != nil || cfg.Store != config.StoreFile {
		t.Fatalf("restored configuration: %+v %v; want the SQLite store", cfg, err)
	}
	startServe(t, restored)
	var c apiclient.Certificate
	aectlJSON(t, restored, &c, "cert", res.Serial)
	if c.Status != "revoked" {
		t.Errorf("the restored certificate: %+v", c)
	}
	if o, errOut, err := runBin(t, "aectl", "--data", restored, "events", "verify"); err != nil {
		t.Errorf("the restored trail: %v\n%s%s", err, o, errOut)
	}
}

// pendingRequests records, in the store of the stopped service at dir, a request held for
// approval (a decision kept) and one issuance in progress (pending without one), as the service
// leaves them; it returns their IDs.
func pendingRequests(t *testing.T, dir string) (held, inProgress int64) {
	t.Helper()
	cfg, err := config.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	st, err := store.Open(ctx, config.Path(dir, cfg.Store), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	csr := []byte("request body")
	if held, err = st.CreateRequest(ctx, store.Request{State: store.RequestPending, Template: "held", Requester: "e2e", Account: "a",
		CSR: csr, Decision: []byte(`{"held":true}`)}); err != nil {
		t.Fatal(err)
	}
	if inProgress, err = st.CreateRequest(ctx, store.Request{State: store.RequestPending, Template: "admin:server", Requester: "e2e",
		Account: "b", CSR: csr}); err != nil {
		t.Fatal(err)
	}
	return held, inProgress
}
