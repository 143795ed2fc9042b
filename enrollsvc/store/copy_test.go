package store

import (
	"context"
	"crypto/sha256"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/enrollment-appliance/aeappliance/enrollsvc/store/pgtest"
)

// A single appliance's SQLite history moves into PostgreSQL whole: requests (IDs kept, decisions,
// CSRs), certificates (revoked ones too), events (sequence kept, fields), SCEP profiles, challenges
// and transactions, the CA record, the CRLs and the CRL number; the counts are checked, the
// instances go on from there (new IDs and CRL numbers above the old), and a database that is not
// empty is refused.
func TestCopySQLiteToPostgres(t *testing.T) {
	ctx := context.Background()
	src, _ := openTest(t)
	var reqIDs []int64
	h := sha256.Sum256([]byte("one-time"))
	for i := range 5 {
		var tx *SCEPTransaction // the second request came with a SCEP transaction
		if i == 1 {
			tx = &SCEPTransaction{Profile: "mdm", TransactionID: "tx1", BodySHA256: h[:], Created: epoch}
		}
		id, err := src.CreateRequest(ctx, Request{State: RequestPending, Template: "T", Requester: "r", Account: "alice",
			CSR: []byte{0x30, byte(i)}, Submitted: epoch, Updated: epoch, Decision: []byte(`{"outcome":"pend"}`), SCEP: tx}, ev(2001, "pending"))
		if err != nil {
			t.Fatal(err)
		}
		reqIDs = append(reqIDs, id)
	}
	var serials []string
	for range 7 {
		serials = append(serials, issue(t, src, Certificate{Template: "T", Account: "alice", Subject: "CN=alice",
			NotBefore: epoch, NotAfter: epoch.Add(time.Hour), Status: CertValid, IssuedAt: epoch}).Serial)
	}
	if err := src.RevokeCertificate(ctx, serials[0], 1, epoch.Add(time.Minute), ev(2200, "revoked")); err != nil {
		t.Fatal(err)
	}
	if err := src.AddSCEPProfile(ctx, SCEPProfile{Name: "mdm", Template: "T", Account: "alice", AccountSID: "S-1-5-21-1-2-3-1105",
		Mode: SCEPOneTime, Created: epoch, AllowDES: true}, ev(3010, "profile")); err != nil {
		t.Fatal(err)
	}
	if err := src.AddSCEPChallenge(ctx, SCEPChallenge{SHA256: h[:], Profile: "mdm", Created: epoch, Expires: epoch.Add(time.Hour)}, ev(3011, "c")); err != nil {
		t.Fatal(err)
	}
	if err := src.InitCluster(ctx, Cluster{CACert: []byte{0x30, 1}, KeyURI: "pkcs11:object=ca", Settings: []byte(`{}`), Created: epoch}, ev(3050, "ca")); err != nil {
		t.Fatal(err)
	}
	var crl int64
	for range 3 {
		n, err := src.NextCRLNumber(ctx)
		if err != nil {
			t.Fatal(err)
		}
		crl = n
	}
	if err := src.SaveCRL(ctx, StoredCRL{Number: crl, ThisUpdate: epoch, NextUpdate: epoch.Add(time.Hour), DER: []byte{0x30, 9}}); err != nil {
		t.Fatal(err)
	}

	db := pgtest.Shared(t).NewDatabase(t)
	dst := openPG(t, db)
	counts, err := src.CopyTo(ctx, dst)
	if err != nil {
		t.Fatal(err)
	}
	if counts.Rows["requests"] != 5 || counts.Rows["certificates"] != 7 || counts.Rows["serials"] != 7 || counts.CRLNumber != crl ||
		counts.Rows["events"] < 20 || counts.Rows["crls"] != 1 || counts.Rows["cluster"] != 1 {
		t.Errorf("counts = %+v", counts)
	}
	// What the PostgreSQL store answers is what the SQLite store answered.
	for _, id := range reqIDs {
		a, errA := src.GetRequest(ctx, id)
		b, errB := dst.GetRequest(ctx, id)
		if errA != nil || errB != nil || !reflect.DeepEqual(a, b) {
			t.Errorf("request %d: SQLite %+v (%v), PostgreSQL %+v (%v)", id, a, errA, b, errB)
		}
	}
	for _, serial := range serials {
		a, _ := src.GetCertificate(ctx, serial)
		b, err := dst.GetCertificate(ctx, serial)
		if err != nil || !reflect.DeepEqual(a, b) {
			t.Errorf("certificate %s: SQLite %+v, PostgreSQL %+v (%v)", serial, a, b, err)
		}
	}
	evA, _ := src.ListEvents(ctx, EventFilter{Limit: 1000})
	evB, err := dst.ListEvents(ctx, EventFilter{Limit: 1000})
	if err != nil || !reflect.DeepEqual(evA, evB) {
		t.Errorf("events differ: %d in SQLite, %d in PostgreSQL (%v)", len(evA), len(evB), err)
	}
	p, err := dst.GetSCEPProfile(ctx, "mdm")
	if err != nil || !p.AllowDES || p.AccountSID != "S-1-5-21-1-2-3-1105" {
		t.Errorf("SCEP profile after the move = %+v, %v", p, err)
	}
	if c, err := dst.UseSCEPChallenge(ctx, "mdm", h[:], epoch.Add(time.Minute)); err != nil || c.Profile != "mdm" {
		t.Errorf("the moved one-time challenge = %+v, %v; want usable once", c, err)
	}
	if tx, err := dst.GetSCEPTransaction(ctx, "mdm", "tx1"); err != nil || tx.RequestID != reqIDs[1] {
		t.Errorf("the moved SCEP transaction = %+v, %v", tx, err)
	}
	// The PostgreSQL instances go on above the moved IDs and numbers.
	id, err := dst.CreateRequest(ctx, Request{State: RequestDenied, Template: "T", Requester: "r", Account: "bob",
		Submitted: epoch, Updated: epoch}, ev(2005, "refused"))
	if err != nil || id <= reqIDs[len(reqIDs)-1] {
		t.Errorf("a new request after the move got ID %d (%v), want one above %d", id, err, reqIDs[len(reqIDs)-1])
	}
	if n, err := dst.NextCRLNumber(ctx); err != nil || n <= crl {
		t.Errorf("the next CRL number after the move = %d (%v), want above %d", n, err, crl)
	}
	if seq, err := dst.AppendEvent(ctx, ev(1000, "started")); err != nil || seq <= evA[len(evA)-1].Seq {
		t.Errorf("a new event after the move got seq %d (%v), want one above %d", seq, err, evA[len(evA)-1].Seq)
	}
	// Again into the same database: refused, nothing added.
	if _, err := src.CopyTo(ctx, dst); err == nil || !strings.Contains(err.Error(), "must be empty") {
		t.Errorf("a second move into the same database = %v, want refused", err)
	}
}
