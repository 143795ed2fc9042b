package daemon_test

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"fmt"
	"github.com/enrollment-appliance/aeappliance/config"
	"math/big"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/enrollment-appliance/aeappliance/enrollsvc"
	"github.com/enrollment-appliance/aeappliance/enrollsvc/store"
	"github.com/enrollment-appliance/aeappliance/proto/certutil"
)

// The core's SCEP rules against the real directory and store: who a certificate is for comes
// from the profile or the challenge, challenges work once and only for their subject, a
// transaction ID is bound to its request.
func TestSCEPRules(t *testing.T) {
	f := newDirFixture(t, "")
	ctx := context.Background()
	svc := f.rt.Service
	certs := func() int {
		t.Helper()
		list, err := f.rt.Store.ListCertificates(ctx, store.CertFilter{Limit: 1000})
		if err != nil {
			t.Fatal(err)
		}
		return len(list)
	}

	for _, bad := range []enrollsvc.SCEPProfileSpec{
		{Name: "x", Template: "SuppliesSubject", Account: "dave", StaticChallenge: "short"},
		{Name: "x", Template: "SuppliesSubject", StaticChallenge: "long enough secret"}, // static needs an account
		{Name: "x", Template: "NoSuchTemplate", Account: "dave", StaticChallenge: "long enough secret"},
		{Name: "x", Template: "SuppliesSubject", Account: "nobody-here", StaticChallenge: "long enough secret"},
		{Name: "bad name!", Template: "SuppliesSubject", OneTime: true},
		{Name: "x", Template: "SuppliesSubject", OneTime: true, StaticChallenge: "long enough secret"},
	} {
		if _, err := svc.AddSCEPProfile(ctx, bad, "test"); enrollsvc.KindOf(err) != enrollsvc.KindBadRequest {
			t.Errorf("AddSCEPProfile(%+v) = %v, want a bad request", bad, err)
		}
	}
	if _, err := svc.AddSCEPProfile(ctx, enrollsvc.SCEPProfileSpec{Name: "static", Template: "SuppliesSubject", Account: "dave",
		StaticChallenge: "long enough secret"}, "test"); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.AddSCEPProfile(ctx, enrollsvc.SCEPProfileSpec{Name: "devices", Template: "SuppliesSubject", OneTime: true}, "test"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := svc.NewSCEPChallenge(ctx, enrollsvc.SCEPChallengeSpec{Profile: "devices"}, "test"); err == nil {
		t.Error("a challenge for a profile without an account, naming none, was made")
	}
	if _, _, err := svc.NewSCEPChallenge(ctx, enrollsvc.SCEPChallengeSpec{Profile: "static", Account: "dave"}, "test"); err == nil {
		t.Error("a one-time challenge was made for a static profile")
	}

	csrA := rsaCSR(t, pkix.Name{CommonName: "router1.corp.example.test"})
	base := certs()
	res, err := svc.SCEPEnroll(ctx, enrollsvc.SCEPRequest{Profile: "static", TransactionID: "tx-1", CSR: csrA, Challenge: "wrong secret"})
	if err != nil || res.Status != enrollsvc.StatusDenied || !strings.Contains(strings.Join(res.Reasons, ";"), "challenge") || res.RequestID != 0 {
		t.Errorf("wrong static challenge = %+v, %v, want denied and not recorded as a request", res, err)
	}
	anonymousFloodIsBounded(t, f)
	res, err = svc.SCEPEnroll(ctx, enrollsvc.SCEPRequest{Profile: "static", TransactionID: "tx-2", CSR: csrA, Challenge: "long enough secret"})
	if err != nil || res.Status != enrollsvc.StatusIssued || res.Certificate.Subject.CommonName != "router1.corp.example.test" {
		t.Fatalf("right static challenge = %+v, %v, want issued for the CSR's subject", res, err)
	}
	first := res.Certificate
	// A retry of the same transaction with the same request: the same certificate, nothing new.
	res, err = svc.SCEPEnroll(ctx, enrollsvc.SCEPRequest{Profile: "static", TransactionID: "tx-2", CSR: csrA, Challenge: "long enough secret"})
	if err != nil || res.Status != enrollsvc.StatusIssued || !res.Certificate.Equal(first) {
		t.Errorf("retry of tx-2 = %+v, %v, want the same certificate", res, err)
	}
	// The same transaction ID with another request: refused.
	res, err = svc.SCEPEnroll(ctx, enrollsvc.SCEPRequest{Profile: "static", TransactionID: "tx-2",
		CSR: rsaCSR(t, pkix.Name{CommonName: "evil"}), Challenge: "long enough secret"})
	if err != nil || res.Status != enrollsvc.StatusDenied || !strings.Contains(strings.Join(res.Reasons, ";"), "used before") {
		t.Errorf("tx-2 with another request = %+v, %v, want denied", res, err)
	}
	if n := certs(); n != base+1 {
		t.Errorf("%d certificates issued, want 1", n-base)
	}
	// The same transaction sent eight times at once (a client retrying while the first is still
	// being signed): one certificate; every answer is that certificate or "pending" (a copy that
	// came while it was being signed), none an error.
	csrB := rsaCSR(t, pkix.Name{CommonName: "router2.corp.example.test"})
	var wg sync.WaitGroup
	answers := make([]*enrollsvc.EnrollResult, 8)
	errs := make([]error, len(answers))
	for i := range answers {
		wg.Go(func() {
			answers[i], errs[i] = svc.SCEPEnroll(ctx, enrollsvc.SCEPRequest{Profile: "static", TransactionID: "tx-burst", CSR: csrB, Challenge: "long enough secret"})
		})
	}
	wg.Wait()
	var issued *x509.Certificate
	for i, res := range answers {
		switch {
		case errs[i] != nil:
			t.Errorf("copy %d of tx-burst: %v", i, errs[i])
		case res.Status == enrollsvc.StatusIssued && (issued == nil || issued.Equal(res.Certificate)):
			issued = res.Certificate
		case res.Status != enrollsvc.StatusPending:
			t.Errorf("copy %d of tx-burst = %+v, want the one certificate or pending", i, res)
		}
	}
	if n := certs(); n != base+2 {
		t.Errorf("tx-burst sent 8 times at once issued %d certificates, want 1", n-base-1)
	}
	// A transaction whose request failed (the HSM or the store did), sent again: a new attempt.
	// One whose issuance was interrupted (recorded, then the service stopped before the
	// certificate's commit) is failed once older than StaleIssuance: a poll says so, a retry is a
	// new attempt. One still being issued is answered "pending".
	txOf := func(id string, csr []byte, ago time.Duration) *store.SCEPTransaction {
		h := sha256.Sum256(csr)
		return &store.SCEPTransaction{Profile: "static", TransactionID: id, BodySHA256: h[:], Created: time.Now().Add(-ago)}
	}
	csrC, csrD, csrE := rsaCSR(t, pkix.Name{CommonName: "router3.corp.example.test"}), rsaCSR(t, pkix.Name{CommonName: "router4.corp.example.test"}),
		rsaCSR(t, pkix.Name{CommonName: "router5.corp.example.test"})
	if _, err := f.rt.Store.CreateRequest(ctx, store.Request{State: store.RequestFailed, Template: "SuppliesSubject",
		Reason: "HSM unavailable", SCEP: txOf("tx-failed", csrC, 0)}); err != nil {
		t.Fatal(err)
	}
	if res, err := svc.SCEPEnroll(ctx, enrollsvc.SCEPRequest{Profile: "static", TransactionID: "tx-failed", CSR: csrC, Challenge: "long enough secret"}); err != nil || res.Status != enrollsvc.StatusIssued {
		t.Errorf("a failed transaction sent again = %+v, %v, want issued", res, err)
	}
	ago := enrollsvc.StaleIssuance + time.Minute
	for _, c := range []struct {
		id  string
		csr []byte
		ago time.Duration
	}{{"tx-interrupted", csrD, ago}, {"tx-in-flight", csrE, 0}} {
		when := time.Now().Add(-c.ago)
		if _, err := f.rt.Store.BeginIssuance(ctx, store.Request{Template: "SuppliesSubject", Account: "dave", Submitted: when, Updated: when,
			SCEP: txOf(c.id, c.csr, c.ago)}, newSerialString(t)); err != nil {
			t.Fatal(err)
		}
	}
	if res, err := svc.SCEPPoll(ctx, "static", "tx-interrupted", nil); err != nil || res.Status != enrollsvc.StatusDenied ||
		!strings.Contains(strings.Join(res.Reasons, ";"), "interrupted") {
		t.Errorf("polling an interrupted issuance = %+v, %v, want denied as interrupted", res, err)
	}
	if res, err := svc.SCEPEnroll(ctx, enrollsvc.SCEPRequest{Profile: "static", TransactionID: "tx-interrupted", CSR: csrD, Challenge: "long enough secret"}); err != nil || res.Status != enrollsvc.StatusIssued {
		t.Errorf("an interrupted transaction sent again = %+v, %v, want issued", res, err)
	}
	if res, err := svc.SCEPEnroll(ctx, enrollsvc.SCEPRequest{Profile: "static", TransactionID: "tx-in-flight", CSR: csrE, Challenge: "long enough secret"}); err != nil || res.Status != enrollsvc.StatusPending {
		t.Errorf("a transaction being issued, sent again = %+v, %v, want pending", res, err)
	}

	ch, exp, err := svc.NewSCEPChallenge(ctx, enrollsvc.SCEPChallengeSpec{Profile: "devices", Account: "dave",
		Subject: "phone1.corp.example.test", TTL: time.Hour}, "test")
	if err != nil || len(ch) < 20 || time.Until(exp) > time.Hour+time.Minute {
		t.Fatalf("NewSCEPChallenge = %q, %v, %v", ch, exp, err)
	}
	other, _, _ := svc.NewSCEPChallenge(ctx, enrollsvc.SCEPChallengeSpec{Profile: "devices", Account: "dave", Subject: "phone2.corp.example.test"}, "test")
	res, err = svc.SCEPEnroll(ctx, enrollsvc.SCEPRequest{Profile: "devices", TransactionID: "tx-3",
		CSR: rsaCSR(t, pkix.Name{CommonName: "phone1.corp.example.test"}), Challenge: other})
	if err != nil || res.Status != enrollsvc.StatusDenied || !strings.Contains(strings.Join(res.Reasons, ";"), "bound to") {
		t.Errorf("a challenge bound to another subject = %+v, %v, want denied", res, err)
	}
	// Bound to phone1: a request that names phone1 and smuggles a second name (the template takes
	// names from the request) is refused, and spends the challenge.
	smuggler, _, _ := svc.NewSCEPChallenge(ctx, enrollsvc.SCEPChallengeSpec{Profile: "devices", Account: "dave", Subject: "phone1.corp.example.test"}, "test")
	for i, extra := range []pkix.Extension{sanExt(t, "phone1.corp.example.test", "dc1.corp.example.test")} {
		res, err = svc.SCEPEnroll(ctx, enrollsvc.SCEPRequest{Profile: "devices", TransactionID: "tx-smuggle-" + strconv.Itoa(i),
			CSR: rsaCSR(t, pkix.Name{CommonName: "phone1.corp.example.test"}, extra), Challenge: smuggler})
		if err != nil || res.Status != enrollsvc.StatusDenied || !strings.Contains(strings.Join(res.Reasons, ";"), "every name in the request") {
			t.Errorf("a challenge bound to phone1 with a second SAN = %+v, %v, want denied", res, err)
		}
	}
	twoCNs := rsaCSR(t, pkix.Name{ExtraNames: []pkix.AttributeTypeAndValue{{Type: []int{2, 5, 4, 3}, Value: "phone1.corp.example.test"},
		{Type: []int{2, 5, 4, 3}, Value: "dc1.corp.example.test"}}})
	third, _, _ := svc.NewSCEPChallenge(ctx, enrollsvc.SCEPChallengeSpec{Profile: "devices", Account: "dave", Subject: "phone1.corp.example.test"}, "test")
	res, err = svc.SCEPEnroll(ctx, enrollsvc.SCEPRequest{Profile: "devices", TransactionID: "tx-two-cns", CSR: twoCNs, Challenge: third})
	if err != nil || res.Status != enrollsvc.StatusDenied {
		t.Errorf("a challenge bound to phone1 with a second common name = %+v, %v, want denied", res, err)
	}
	res, err = svc.SCEPEnroll(ctx, enrollsvc.SCEPRequest{Profile: "devices", TransactionID: "tx-4",
		CSR: rsaCSR(t, pkix.Name{CommonName: "phone1.corp.example.test"}), Challenge: ch})
	if err != nil || res.Status != enrollsvc.StatusIssued {
		t.Fatalf("one-time challenge = %+v, %v, want issued", res, err)
	}
	res, err = svc.SCEPEnroll(ctx, enrollsvc.SCEPRequest{Profile: "devices", TransactionID: "tx-5",
		CSR: rsaCSR(t, pkix.Name{CommonName: "phone1.corp.example.test"}), Challenge: ch})
	if err != nil || res.Status != enrollsvc.StatusDenied || !strings.Contains(strings.Join(res.Reasons, ";"), "used before") {
		t.Errorf("a reused one-time challenge = %+v, %v, want denied", res, err)
	}
	if n := certs(); n != base+5 {
		t.Errorf("%d certificates issued, want 5 (with tx-burst's, tx-failed's and tx-interrupted's)", n-base)
	}
	if _, err := svc.SCEPEnroll(ctx, enrollsvc.SCEPRequest{Profile: "nope", TransactionID: "tx-6", CSR: csrA}); enrollsvc.KindOf(err) != enrollsvc.KindNotFound {
		t.Errorf("unknown profile = %v, want not found", err)
	}
	if _, ok, err := svc.LookupSCEPProfile(ctx, "devices"); !ok || err != nil {
		t.Errorf("LookupSCEPProfile(devices) = %v, %v", ok, err)
	}

	// Renewal: signed with the certificate being renewed, no challenge needed.
	res, err = svc.SCEPEnroll(ctx, enrollsvc.SCEPRequest{Profile: "static", TransactionID: "tx-7",
		CSR: rsaCSR(t, pkix.Name{CommonName: "router1.corp.example.test"}), Renewing: first})
	if err != nil || res.Status != enrollsvc.StatusIssued || res.Certificate.Equal(first) {
		t.Errorf("renewal = %+v, %v, want a new certificate", res, err)
	}
	// Clients that derive the transaction ID from the key (scepclient, certmonger) renew under
	// the ID, and scepclient with the very CSR, of the enrollment: a renewal, not its retry.
	res, err = svc.SCEPEnroll(ctx, enrollsvc.SCEPRequest{Profile: "static", TransactionID: "tx-2", CSR: csrA, Renewing: first})
	if err != nil || res.Status != enrollsvc.StatusIssued || res.Certificate.Equal(first) {
		t.Errorf("renewal under the enrollment's tx-2 = %+v, %v, want a new certificate", res, err)
	}
	if _, err := svc.Revoke(ctx, fmtSerial(first), 4, "test"); err != nil {
		t.Fatal(err)
	}
	res, err = svc.SCEPEnroll(ctx, enrollsvc.SCEPRequest{Profile: "static", TransactionID: "tx-8",
		CSR: rsaCSR(t, pkix.Name{CommonName: "router1.corp.example.test"}), Renewing: first})
	if err != nil || res.Status != enrollsvc.StatusDenied {
		t.Errorf("renewal of a revoked certificate = %+v, %v, want denied", res, err)
	}
}

func fmtSerial(c *x509.Certificate) string { return certutil.SerialString(c.SerialNumber) }

// newSerialString is a random positive 128-bit serial as the store writes serials.
func newSerialString(t *testing.T) string {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		t.Fatal(err)
	}
	return certutil.SerialString(n.Add(n, big.NewInt(1)))
}

// sanExt is a subjectAltName extension of DNS names.
func sanExt(t *testing.T, names ...string) pkix.Extension {
	t.Helper()
	var raw []asn1.RawValue
	for _, n := range names {
		raw = append(raw, asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 2, Bytes: []byte(n)})
	}
	return pkix.Extension{Id: oidSAN, Value: mustMarshal(t, raw)}
}

// 10,000 anonymous PKCSReqs with a wrong challenge, each with 4 KiB of its own, grow the store by a
// bounded amount: no request, no SCEP transaction and no CSR is kept, only one event per profile
// per enrollsvc.SCEPRefusalWindow, whatever the senders send.
func anonymousFloodIsBounded(t *testing.T, f *dirFixture) {
	ctx := context.Background()
	svc := f.rt.Service
	size := func() int64 {
		var n int64
		for _, suffix := range []string{"", "-wal"} {
			if fi, err := os.Stat(filepath.Join(f.dir, config.StoreFile+suffix)); err == nil {
				n += fi.Size()
			}
		}
		return n
	}
	lastSeq := func() int64 {
		evs, err := f.rt.Store.ListEvents(ctx, store.EventFilter{Limit: 1, Newest: true})
		if err != nil || len(evs) != 1 {
			t.Fatalf("ListEvents: %v", err)
		}
		return evs[0].Seq
	}
	requests := func() int {
		rs, err := f.rt.Store.ListRequests(ctx, store.RequestFilter{Limit: 1000})
		if err != nil {
			t.Fatal(err)
		}
		return len(rs)
	}
	sizeBefore, seqBefore, reqsBefore := size(), lastSeq(), requests()
	junk := make([]byte, 4096)
	for i := range 10000 {
		junk[0], junk[1] = byte(i), byte(i>>8)
		res, err := svc.SCEPEnroll(ctx, enrollsvc.SCEPRequest{Profile: "static", TransactionID: fmt.Sprintf("flood-%d", i),
			CSR: junk, Challenge: fmt.Sprintf("guess %d", i)})
		if err != nil || res.Status != enrollsvc.StatusDenied {
			t.Fatalf("flood request %d = %+v, %v; want denied", i, res, err)
		}
	}
	if n := requests(); n != reqsBefore {
		t.Errorf("the flood recorded %d requests, want none", n-reqsBefore)
	}
	if n := lastSeq() - seqBefore; n > 2 {
		t.Errorf("the flood recorded %d events, want at most one per window", n)
	}
	if grew := size() - sizeBefore; grew > 256<<10 {
		t.Errorf("the flood grew the store by %d bytes, want under 256 KiB (it sent %d)", grew, 10000*len(junk))
	}
	if _, err := f.rt.Store.GetSCEPTransaction(ctx, "static", "flood-1"); err == nil {
		t.Error("a refused anonymous transaction was recorded")
	}
}
