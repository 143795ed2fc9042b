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
	"sync/atomic"
	"testing"
	"time"

	"github.com/enrollment-appliance/aeappliance/enrollsvc"
	"github.com/enrollment-appliance/aeappliance/enrollsvc/events"
	"github.com/enrollment-appliance/aeappliance/enrollsvc/issue"
	"github.com/enrollment-appliance/aeappliance/enrollsvc/store"
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

func newFixture(t *testing.T) *fixture {
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
	return &fixture{svc: enrollsvc.New(st, iss, events.NewRecorder(st, log, nil), log), store: st, signer: fs}
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
	res, err := f.svc.IssueApproved(context.Background(), order(t), enrollsvc.Meta{Requester: "r", Account: "a", Template: "T"})
	if err != nil {
		t.Fatal(err)
	}
	r, err := f.store.GetRequest(context.Background(), res.RequestID)
	if err != nil || r.State != store.RequestIssued || r.Serial != issue.SerialString(res.Certificate.SerialNumber) {
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
	_, err := f.svc.IssueApproved(context.Background(), o, enrollsvc.Meta{Account: "a"})
	var se *enrollsvc.Error
	if !errors.As(err, &se) || se.Kind != enrollsvc.KindRefused || se.RequestID == 0 || !errors.Is(err, issue.ErrLint) {
		t.Fatalf("IssueApproved = %v, want a refusal naming its request", err)
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
	_, err := f.svc.IssueApproved(context.Background(), order(t), enrollsvc.Meta{Account: "a"})
	if enrollsvc.KindOf(err) != enrollsvc.KindUnavailable || !errors.Is(err, errHSMDown) {
		t.Fatalf("IssueApproved with the HSM down = %v, want KindUnavailable wrapping the HSM error", err)
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
	if _, err := f.svc.IssueApproved(context.Background(), order(t), enrollsvc.Meta{Account: "a"}); err != nil {
		t.Errorf("IssueApproved after the HSM came back = %v", err)
	}
}

func TestStoreDownFailsClearly(t *testing.T) {
	f := newFixture(t)
	f.store.Close()
	_, err := f.svc.IssueApproved(context.Background(), order(t), enrollsvc.Meta{Account: "a"})
	if enrollsvc.KindOf(err) != enrollsvc.KindInternal || !errors.Is(err, store.ErrClosed) {
		t.Errorf("IssueApproved with the store closed = %v, want KindInternal wrapping store.ErrClosed", err)
	}
}
