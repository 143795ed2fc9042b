package main

import (
	"encoding/json"
	"encoding/pem"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"filippo.io/age"

	"github.com/enrollment-appliance/aeappliance/apiclient"
	"github.com/enrollment-appliance/aeappliance/config"
)

// TestScheduledBackups: a schedule encrypts to an age recipient, keeps the newest on the
// appliance and pushes each with an HTTPS PUT (its bearer token, the server's CA); what was
// pushed restores with the identity; a push that fails is event 3071 and shows in the status; the
// push token is never shown back.
func TestScheduledBackups(t *testing.T) {
	dir := initDir(t)
	startServe(t, dir)
	tmp := t.TempDir()
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	idFile := filepath.Join(tmp, "identity")
	os.WriteFile(idFile, []byte(id.String()+"\n"), 0o600)

	var mu sync.Mutex
	pushed := map[string][]byte{}
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPut || r.Header.Get("Authorization") != "Bearer push-secret" {
			http.Error(w, "no", http.StatusForbidden)
			return
		}
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		pushed[r.URL.Path] = b
		mu.Unlock()
		w.WriteHeader(http.StatusCreated)
	}))
	defer srv.Close()
	caFile, tokenFile := filepath.Join(tmp, "push-ca.pem"), filepath.Join(tmp, "push-token")
	os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600)
	os.WriteFile(tokenFile, []byte("push-secret\n"), 0o600)

	var st apiclient.BackupScheduleStatus
	aectlJSON(t, dir, &st, "backup", "schedule", "set", "--every", "24h", "--recipient", id.Recipient().String(), "--keep", "2",
		"--push-url", srv.URL+"/backups/", "--push-token-file", tokenFile, "--push-ca-file", caFile)
	if st.Schedule == nil || st.Schedule.PushToken != "" || st.Schedule.Keep != 2 {
		t.Fatalf("schedule = %+v; want it set, without its token", st)
	}
	var runs []string
	for range 3 {
		var run apiclient.BackupRun
		aectlJSON(t, dir, &run, "backup", "schedule", "run")
		runs = append(runs, run.File)
	}
	mu.Lock()
	if len(pushed) != 3 {
		t.Errorf("%d backups pushed, want 3: %v", len(pushed), runs)
	}
	last := pushed["/backups/"+runs[2]]
	mu.Unlock()
	kept, _ := filepath.Glob(filepath.Join(dir, "backups", "backup-*.age"))
	if len(kept) != 2 || filepath.Base(kept[1]) != runs[2] {
		t.Errorf("kept on the appliance: %v; want the newest 2 of %v", kept, runs)
	}
	pushedFile := filepath.Join(tmp, "pushed.age")
	os.WriteFile(pushedFile, last, 0o600)
	restored := filepath.Join(tmp, "restored")
	if o, errOut, err := runBin(t, "enrollsvc", "restore", "--data", restored, "--from", pushedFile, "--identity-file", idFile); err != nil {
		t.Fatalf("restoring the pushed backup with the identity: %v\n%s%s", err, o, errOut)
	}
	if _, err := os.Stat(filepath.Join(restored, "backups")); err == nil {
		t.Error("a backup holds the earlier backups kept on the appliance")
	}
	if _, err := config.Load(restored); err != nil {
		t.Error(err)
	}

	// The push server goes away: the run fails, is recorded, and shows.
	srv.Close()
	if _, errOut, err := runBin(t, "aectl", "--data", dir, "backup", "schedule", "run"); err == nil || !strings.Contains(errOut, "pushing the backup") {
		t.Errorf("a scheduled backup whose push fails: %v %s", err, errOut)
	}
	aectlJSON(t, dir, &st, "backup", "schedule")
	if !strings.Contains(st.LastError, "pushing the backup") {
		t.Errorf("schedule status after a failed push: %+v", st)
	}
	var evs []apiclient.Event
	aectlJSON(t, dir, &evs, "events", "--id", "3071")
	if len(evs) != 1 {
		t.Errorf("backup failure events = %+v, want one", evs)
	}
	var all []apiclient.Event
	aectlJSON(t, dir, &all, "events", "--limit", "1000")
	for _, e := range all {
		if b, _ := json.Marshal(e); strings.Contains(string(b), "push-secret") {
			t.Errorf("event %d holds the push token", e.Seq)
		}
	}
	// A bad schedule is refused.
	if _, _, err := runBin(t, "aectl", "--data", dir, "backup", "schedule", "set", "--every", "1s", "--recipient", id.Recipient().String()); err == nil {
		t.Error("a schedule of every second was accepted")
	}
	if _, _, err := runBin(t, "aectl", "--data", dir, "backup", "schedule", "set", "--push-url", "http://plain/", "--recipient", id.Recipient().String()); err == nil {
		t.Error("a plain-HTTP push URL was accepted")
	}
}
