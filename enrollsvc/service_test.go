package enrollsvc_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/enrollment-appliance/aeappliance/enrollsvc"
	"github.com/enrollment-appliance/aeappliance/enrollsvc/events"
	"github.com/enrollment-appliance/aeappliance/enrollsvc/issue"
	"github.com/enrollment-appliance/aeappliance/enrollsvc/store"
	"github.com/enrollment-appliance/aeappliance/proto/certutil"
)

// flakySigner is a CA key whose HSM can be switched off.
type flakySigner struct {
	crypto.Signer
	down atomic.Bool
}

var errHSMDown = errors.New("CKR_DEVICE_REMOVED")

func (f *flakySigner) Sign(r io.Reader, d []byte, o crypto.SignerOpts) ([]byte, error) {
	if f.down.Load() {
		return nil, errHSMDown
	}
	return f.Signer.Sign(r, d, o)
}

type fixture struct {
	svc    *enrollsvc.Service
	store  *store.SQLite
	signer *flakySigner
}

func newFixture(t *testing.T) *fixture { return newFixtureAt(t, nil) }

func newFixtureAt(t *testing.T, now func() time.Time) *fixture {
	t.Helper()
	log := slog.New(slog.NewJSONHandler(io.Discard, nil))
	st, err := store.Open(context.Background(), filepath.Join(t.TempDir(), "s.db"), log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	fs := &flakySigner{Signer: key}
	ca, err := issue.SelfSigned(context.Background(), fs, issue.RootOrder{Subject: pkix.Name{CommonName: "Core Test CA"}, Validity: 365 * 24 * time.Hour}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	iss, err := issue.New(issue.Config{CACert: ca, Signer: fs})
	if err != nil {
		t.Fatal(err)
	}
	return &fixture{svc: enrollsvc.New(st, iss, events.NewRecorder(st, log, now), log), store: st, signer: fs}
}

func order(t *testing.T) issue.Order {
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	return issue.Order{Subject: pkix.Name{CommonName: "a.example.test"}, DNSNames: []string{"a.example.test"},
		PublicKey: k.Public(), Validity: 24 * time.Hour, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
}

func (f *fixture) count(t *testing.T) int64 {
	n, err := f.store.CountCertificates(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func (f *fixture) eventCount(t *testing.T, id events.ID) int {
	evs, err := f.store.ListEvents(context.Background(), store.EventFilter{ID: int(id), Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	return len(evs)
}

func TestIssueRecordsRequestCertificateAndEvents(t *testing.T) {
	f := newFixture(t)
	res, err := f.svc.IssueOrder(context.Background(), order(t), enrollsvc.Meta{Requester: "r", Account: "a", Template: "T"})
	if err != nil {
		t.Fatal(err)
	}
	r, err := f.store.GetRequest(context.Background(), res.RequestID)
	if err != nil || r.State != store.RequestIssued || r.Serial != certutil.SerialString(res.Certificate.SerialNumber) {
		t.Errorf("request = %+v, %v; want issued with the certificate's serial", r, err)
	}
	if f.count(t) != 1 || f.eventCount(t, events.SigningStarted) != 1 || f.eventCount(t, events.CertificateIssued) != 1 {
		t.Error("want one certificate, one 2100 and one 2101 event")
	}
}

func TestLintRefusalIsRecordedAndSignsNothing(t *testing.T) {
	f := newFixture(t)
	o := order(t)
	o.KeyUsage |= x509.KeyUsageCertSign // an end entity may not sign certificates
	_, err := f.svc.IssueOrder(context.Background(), o, enrollsvc.Meta{Account: "a"})
	var se *enrollsvc.Error
	if !errors.As(err, &se) || se.Kind != enrollsvc.KindRefused || se.RequestID == 0 || !errors.Is(err, issue.ErrLint) {
		t.Fatalf("IssueOrder = %v, want a refusal naming its request", err)
	}
	r, _ := f.store.GetRequest(context.Background(), se.RequestID)
	if r.State != store.RequestFailed || r.Reason == "" {
		t.Errorf("request = %+v, want failed with the lint findings as reason", r)
	}
	if f.count(t) != 0 || f.eventCount(t, events.SigningStarted) != 0 || f.eventCount(t, events.LintRefused) != 1 {
		t.Error("a lint refusal must store no certificate, write no 2100 event and one 2103 event")
	}
}

func TestHSMDownFailsClearlyAndStoresNothing(t *testing.T) {
	f := newFixture(t)
	f.signer.down.Store(true)
	_, err := f.svc.IssueOrder(context.Background(), order(t), enrollsvc.Meta{Account: "a"})
	if enrollsvc.KindOf(err) != enrollsvc.KindUnavailable || !errors.Is(err, errHSMDown) {
		t.Fatalf("IssueOrder with the HSM down = %v, want KindUnavailable wrapping the HSM error", err)
	}
	var se *enrollsvc.Error
	errors.As(err, &se)
	r, _ := f.store.GetRequest(context.Background(), se.RequestID)
	if r.State != store.RequestFailed {
		t.Errorf("request state = %s, want failed", r.State)
	}
	if f.count(t) != 0 || f.eventCount(t, events.SigningFailed) != 1 {
		t.Error("want no certificate and one 2102 event")
	}
	// The HSM comes back: issuance works again without a restart.
	f.signer.down.Store(false)
	if _, err := f.svc.IssueOrder(context.Background(), order(t), enrollsvc.Meta{Account: "a"}); err != nil {
		t.Errorf("IssueOrder after the HSM came back = %v", err)
	}
}

func TestStoreDownFailsClearly(t *testing.T) {
	f := newFixture(t)
	f.store.Close()
	_, err := f.svc.IssueOrder(context.Background(), order(t), enrollsvc.Meta{Account: "a"})
	if enrollsvc.KindOf(err) != enrollsvc.KindInternal || !errors.Is(err, store.ErrClosed) {
		t.Errorf("IssueOrder with the store closed = %v, want KindInternal wrapping store.ErrClosed", err)
	}
}

// fakePublisher is the directory's userCertificate attribute.
type fakePublisher struct{ published map[string][][]byte }

func (f *fakePublisher) PublishCertificate(_ context.Context, dn string, der []byte) error {
	if f.published == nil {
		f.published = map[string][][]byte{}
	}
	f.published[dn] = append(f.published[dn], der)
	return nil
}

func TestHoldApproveIssuesExactlyWhatWasHeld(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	o := order(t)
	sid := pkix.Extension{Id: []int{1, 3, 6, 1, 4, 1, 311, 25, 2}, Value: []byte{0x30, 0x00}}
	o.ExtraExtensions = []pkix.Extension{sid}
	id, err := f.svc.Hold(ctx, o, enrollsvc.Held{Subject: "CN=a.example.test", SANs: []string{"DNS:a.example.test"}, Publish: true, AccountDN: "CN=a,DC=corp"},
		enrollsvc.Meta{Requester: "alice", Account: "alice", Template: "PendUser", CSR: []byte{1}})
	if err != nil {
		t.Fatal(err)
	}
	h, err := f.svc.HeldOf(ctx, id)
	if err != nil || h.Subject != "CN=a.example.test" || len(h.SANs) != 1 {
		t.Fatalf("HeldOf = %+v, %v", h, err)
	}
	if f.count(t) != 0 {
		t.Fatal("a held request issued a certificate")
	}
	pub := &fakePublisher{}
	res, err := f.svc.Approve(ctx, id, "admin", pub)
	if err != nil {
		t.Fatalf("Approve: %v", err)
	}
	c := res.Certificate
	if res.RequestID != id || c.Subject.CommonName != "a.example.test" || len(c.DNSNames) != 1 {
		t.Errorf("approved certificate = %v %v (request %d), want the held subject and SANs of request %d", c.Subject, c.DNSNames, res.RequestID, id)
	}
	found := false
	for _, e := range c.Extensions {
		found = found || e.Id.Equal(sid.Id)
	}
	if !found {
		t.Error("the held extension is missing from the approved certificate")
	}
	r, _ := f.store.GetRequest(ctx, id)
	if r.State != store.RequestIssued || r.Serial != certutil.SerialString(c.SerialNumber) {
		t.Errorf("request after approval = %+v, want issued with the serial", r)
	}
	if len(pub.published["CN=a,DC=corp"]) != 1 {
		t.Error("the approved certificate was not published although the template says so")
	}
	if _, err := f.svc.Approve(ctx, id, "admin", pub); enrollsvc.KindOf(err) != enrollsvc.KindConflict {
		t.Errorf("second Approve = %v, want a conflict", err)
	}
	if err := f.svc.Deny(ctx, id, "too late", "admin"); enrollsvc.KindOf(err) != enrollsvc.KindConflict {
		t.Errorf("Deny of an issued request = %v, want a conflict", err)
	}
}

func TestDenyAndExpiry(t *testing.T) {
	now := time.Now()
	f := newFixtureAt(t, func() time.Time { return now })
	ctx := context.Background()
	hold := func() int64 {
		id, err := f.svc.Hold(ctx, order(t), enrollsvc.Held{Subject: "CN=x"}, enrollsvc.Meta{Account: "x", Template: "PendUser"})
		if err != nil {
			t.Fatal(err)
		}
		return id
	}
	a, b, c := hold(), hold(), hold()
	if err := f.svc.Deny(ctx, a, "", "admin"); enrollsvc.KindOf(err) != enrollsvc.KindBadRequest {
		t.Errorf("Deny without a reason = %v, want a bad request", err)
	}
	if err := f.svc.Deny(ctx, a, "not for this device", "admin"); err != nil {
		t.Fatal(err)
	}
	if r, _ := f.store.GetRequest(ctx, a); r.State != store.RequestDenied || r.Reason != "not for this device" {
		t.Errorf("denied request = %+v", r)
	}
	if _, err := f.svc.Approve(ctx, 9999, "admin", nil); enrollsvc.KindOf(err) != enrollsvc.KindNotFound {
		t.Errorf("Approve(unknown) = %v, want not found", err)
	}

	now = now.Add(enrollsvc.PendingLifetime + time.Hour)
	if _, err := f.svc.Approve(ctx, b, "admin", nil); enrollsvc.KindOf(err) != enrollsvc.KindConflict {
		t.Errorf("Approve after 61 days = %v, want a conflict (expired)", err)
	}
	n, err := f.svc.ExpirePending(ctx)
	if err != nil || n != 1 { // b was expired by the Approve attempt; c by this sweep
		t.Errorf("ExpirePending = %d, %v; want 1", n, err)
	}
	for _, id := range []int64{b, c} {
		if r, _ := f.store.GetRequest(ctx, id); r.State != store.RequestDenied {
			t.Errorf("request %d after 61 days = %s, want denied (expired)", id, r.State)
		}
	}
	if f.count(t) != 0 {
		t.Error("denied or expired requests issued certificates")
	}
}

func TestRenewRefusals(t *testing.T) {
	now := time.Now()
	f := newFixtureAt(t, func() time.Time { return now })
	ctx := context.Background()
	res, err := f.svc.IssueOrder(ctx, order(t), enrollsvc.Meta{Account: "alice", Template: "AEUser"})
	if err != nil {
		t.Fatal(err)
	}
	old := res.Certificate
	foreign := newFixture(t) // another CA
	fres, err := foreign.svc.IssueOrder(ctx, order(t), enrollsvc.Meta{Account: "alice", Template: "AEUser"})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		rr   enrollsvc.RenewRequest
		at   time.Time
		want string
	}{
		{"another CA's certificate", enrollsvc.RenewRequest{OldCert: fres.Certificate}, now, "not issued by this CA"},
		{"another template", enrollsvc.RenewRequest{OldCert: old, Template: "WebServer"}, now, "keeps the template"},
		{"expired", enrollsvc.RenewRequest{OldCert: old}, old.NotAfter.Add(time.Minute), "expired"},
	} {
		now = tc.at
		r, err := f.svc.Renew(ctx, tc.rr)
		if err != nil || r.Status != enrollsvc.StatusDenied || !strings.Contains(strings.Join(r.Reasons, " "), tc.want) {
			t.Errorf("Renew(%s) = %+v, %v; want denied mentioning %q", tc.name, r, err, tc.want)
		}
	}
	if n := f.count(t); n != 1 {
		t.Errorf("certificates after refused renewals = %d, want 1", n)
	}

	// Revoked: neither renewed nor accepted as a client certificate.
	now = time.Now()
	if acct, _, err := f.svc.CertificateAccount(ctx, old); err != nil || acct != "alice" {
		t.Fatalf("CertificateAccount(valid) = %q, %v; want alice", acct, err)
	}
	if err := f.store.RevokeCertificate(ctx, certutil.SerialString(old.SerialNumber), 1, now, store.Event{ID: 2200, Category: "Admin", Level: "warning", Message: "revoked"}); err != nil {
		t.Fatal(err)
	}
	r, err := f.svc.Renew(ctx, enrollsvc.RenewRequest{OldCert: old})
	if err != nil || r.Status != enrollsvc.StatusDenied || !strings.Contains(strings.Join(r.Reasons, " "), "revoked") {
		t.Errorf("Renew(revoked) = %+v, %v; want denied: revoked", r, err)
	}
	if _, _, err := f.svc.CertificateAccount(ctx, old); err == nil || !strings.Contains(err.Error(), "revoked") {
		t.Errorf("CertificateAccount(revoked) = %v, want refused: revoked", err)
	}
	if _, _, err := f.svc.CertificateAccount(ctx, fres.Certificate); err == nil {
		t.Error("CertificateAccount(another CA's certificate) succeeded")
	}
}

// Approval passes the gate again: a held order whose key the gate refuses (here one that
// breaks the template's key rules) is not signed; the request fails with the approval and the
// refusal recorded in the same transaction.
func TestApproveRechecksTheKey(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	o := order(t) // a P-256 key
	o.Key = issue.KeyRules{Algorithm: "ECDSA_P384", MinBits: 384}
	id, err := f.svc.Hold(ctx, o, enrollsvc.Held{Subject: "CN=a.example.test"}, enrollsvc.Meta{Account: "a", Template: "PendUser"})
	if err != nil {
		t.Fatal(err)
	}
	_, err = f.svc.Approve(ctx, id, "admin", nil)
	if enrollsvc.KindOf(err) != enrollsvc.KindRefused || !errors.Is(err, issue.ErrKeyRefused) || !strings.Contains(err.Error(), "ECDSA_P384") {
		t.Fatalf("Approve = %v, want the key refused for the template's ECDSA_P384 rule", err)
	}
	r, _ := f.store.GetRequest(ctx, id)
	if r.State != store.RequestFailed || !strings.Contains(r.Reason, "key refused") {
		t.Errorf("request = %+v, want failed with the key's reason", r)
	}
	if f.count(t) != 0 || f.eventCount(t, events.SigningStarted) != 0 || f.eventCount(t, events.KeyRefused) != 1 ||
		f.eventCount(t, events.RequestApproved) != 1 {
		t.Error("want no certificate, no 2100 event, one 2104 and one 2002 event")
	}
}
