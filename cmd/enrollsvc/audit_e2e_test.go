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

	"github.com/enrollment-appliance/aeappliance/config"
	"github.com/enrollment-appliance/aeappliance/proto/auditlog"
	_ "modernc.org/sqlite"
)

// TestEventsVerify: `aectl events verify` passes on the trail the service wrote, and after one
// event is edited in the store (past its triggers, as someone with the disk could) it fails,
// naming that event.
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

	s.cmd.Process.Signal(os.Interrupt)
	select {
	case <-s.done:
	case <-time.After(20 * time.Second):
		t.Fatal("serve did not stop")
	}
	// The issuance event, edited to name another serial.
	db, err := sql.Open("sqlite", filepath.Join(dir, config.StoreFile))
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
	out, errOut, _ := runBin(t, "aectl", "--data", dir, "events", "verify")
	if want := fmt.Sprintf("BROKEN at seq %d", seq); !strings.Contains(out, want) || !strings.Contains(errOut, "does not verify") {
		t.Errorf("aectl events verify printed %q / %q; want %q and an error", out, errOut, want)
	}
}
