package main

import (
	"database/sql"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/enrollment-appliance/aeappliance/apiclient"
	"github.com/enrollment-appliance/aeappliance/config"
	"github.com/enrollment-appliance/aeappliance/proto/auditlog"
	_ "modernc.org/sqlite"
)

// TestEventsVerify: `aectl events verify` passes on the trail the service wrote, and after one
// event is edited in the store (past its triggers, as someone with the disk could) it fails,
// naming that event. Newest events removed from the store leave a chain that is whole by itself;
// an anchor (the seq and hash the remote syslog server received) catches it.
func TestEventsVerify(t *testing.T) {
	dir := initDir(t)
	s := startServe(t, dir)
	csrFile := filepath.Join(t.TempDir(), "req.csr")
	os.WriteFile(csrFile, []byte(newCSR(t, "verify.example.com")), 0o600)
	var res struct{ Serial string }
	aectlJSON(t, dir, &res, "issue", "--csr", csrFile, "--profile", "server")

	var ok auditlog.Result
	aectlJSON(t, dir, &ok, "events", "verify")
	if ok.Broken != nil || ok.Events < 3 || ok.Unchained != 0 {
		t.Fatalf("verify of an untouched trail = %+v; want every event chained and whole", ok)
	}
	out, _, err := runBin(t, "aectl", "--data", dir, "events", "verify")
	if err != nil || !strings.Contains(out, "every chain is whole") {
		t.Fatalf("aectl events verify = %q, %v", out, err)
	}

	// Anchors: the newest event as a copy outside the store holds it passes; a wrong hash does not.
	var newest []apiclient.Event
	aectlJSON(t, dir, &newest, "events", "--newest", "--limit", "1")
	anchor := fmt.Sprintf("%d:%s", newest[0].Seq, newest[0].Hash)
	out, errOut, err := runBin(t, "aectl", "--data", dir, "events", "verify", "--anchor", anchor)
	if err != nil || !strings.Contains(strings.Join(strings.Fields(out), " "), "Anchors found: 1 of 1") {
		t.Fatalf("verify with the newest event as anchor = %q %q, %v", out, errOut, err)
	}
	wrong := fmt.Sprintf("%d:%s", newest[0].Seq, strings.Repeat("0", 64))
	if out, _, err := runBin(t, "aectl", "--data", dir, "events", "verify", "--anchor", wrong); err == nil || !strings.Contains(out, "not the anchor's") {
		t.Errorf("verify with a wrong anchor = %q, %v; want a failure", out, err)
	}
	if _, _, err := runBin(t, "aectl", "--data", dir, "events", "verify", "--anchor", "12:zz"); err == nil {
		t.Error("a malformed anchor was taken")
	}

	stop := func(s *server) {
		t.Helper()
		s.cmd.Process.Signal(os.Interrupt)
		select {
		case <-s.done:
		case <-time.After(20 * time.Second):
			t.Fatal("serve did not stop")
		}
	}
	stop(s)
	db, err := sql.Open("sqlite", filepath.Join(dir, config.StoreFile))
	if err != nil {
		t.Fatal(err)
	}
	// The newest events removed (past the store's trigger) and the chain's head set back to the
	// last one left, as someone who can write the store would: the chain the service continues
	// from there is whole, and only the anchor shows what was cut.
	if _, err := db.Exec("DELETE FROM events WHERE seq >= ?", newest[0].Seq-1); err == nil || !strings.Contains(err.Error(), "never") {
		t.Fatalf("a DELETE of events: %v; want refused by the store's trigger", err)
	}
	if _, err := db.Exec("DROP TRIGGER events_no_delete"); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec("DELETE FROM events WHERE seq >= ?", newest[0].Seq-1); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`UPDATE event_chains SET
		n = (SELECT n FROM events WHERE seq = (SELECT max(seq) FROM events)),
		hash = (SELECT hash FROM events WHERE seq = (SELECT max(seq) FROM events))`); err != nil {
		t.Fatal(err)
	}
	db.Close()
	s = startServe(t, dir)
	if out, errOut, err := runBin(t, "aectl", "--data", dir, "events", "verify"); err != nil {
		t.Fatalf("verify without anchors after the newest events were removed = %q %q, %v; a chain alone cannot show it", out, errOut, err)
	}
	out, _, err = runBin(t, "aectl", "--data", dir, "events", "verify", "--anchor", anchor)
	if want := fmt.Sprintf("anchored event seq %d is missing", newest[0].Seq); err == nil || !strings.Contains(out, want) {
		t.Errorf("verify with the anchor after the newest events were removed = %q, %v; want %q", out, err, want)
	}
	stop(s)

	// The issuance event, edited to name another serial.
	db, err = sql.Open("sqlite", filepath.Join(dir, config.StoreFile))
	if err != nil {
		t.Fatal(err)
	}
	var seq int64
	if err := db.QueryRow("SELECT seq FROM events WHERE id = 2101 ORDER BY seq DESC LIMIT 1").Scan(&seq); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec("UPDATE events SET message = 'x' WHERE seq = ?", seq); err == nil || !strings.Contains(err.Error(), "never changed") {
		t.Fatalf("an UPDATE of an event: %v; want refused by the store's trigger", err)
	}
	if _, err := db.Exec("DROP TRIGGER events_no_update"); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`UPDATE events SET fields = json_set(fields, '$.serial', 'feedface') WHERE seq = ?`, seq); err != nil {
		t.Fatal(err)
	}
	db.Close()

	startServe(t, dir)
	out, _, err = runBin(t, "aectl", "--data", dir, "--json", "events", "verify")
	var broken auditlog.Result
	if err == nil || json.Unmarshal([]byte(out), &broken) != nil || broken.Broken == nil || broken.Broken.Seq != seq {
		t.Fatalf("verify after editing event seq %d = %q, %v; want a failure naming seq %d", seq, out, err, seq)
	}
	out, errOut, _ = runBin(t, "aectl", "--data", dir, "events", "verify")
	if want := fmt.Sprintf("BROKEN at seq %d", seq); !strings.Contains(out, want) || !strings.Contains(errOut, "does not verify") {
		t.Errorf("aectl events verify printed %q / %q; want %q and an error", out, errOut, want)
	}
}
