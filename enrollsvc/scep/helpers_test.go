package scep

import (
	scepmsg "github.com/enrollment-appliance/aeappliance/proto/scep"

	"bytes"
	"context"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/enrollment-appliance/aeappliance/proto/scep/sceptest"
)

// -capture makes the interop tests use the fixed PKI in testdata (creating it when missing) and save every
// PKIOperation message the real clients send into testdata/captured, for the replay and fuzz tests.
var capture = flag.Bool("capture", false, "save real client requests into testdata/captured")

// pkiFor is a fresh PKI, or the fixed one with -capture.
func pkiFor(t testing.TB) *testPKI {
	if *capture {
		return fixedPKI(t)
	}
	return sceptest.NewPKI(t, false)
}

// testdata is the codec's testdata: the fixed PKI and the messages captured from the real clients.
var testdata = filepath.Join("..", "..", "proto", "scep", "testdata")

// testPKI is a software CA and an RA certificate it issued.
type testPKI = sceptest.PKI

// fixedPKI is the PKI in testdata that the captured client messages are encrypted to; with -capture it is
// created when missing.
func fixedPKI(t testing.TB) *testPKI {
	return sceptest.FixedPKI(t, filepath.Join(testdata, "pki"), *capture)
}

// readCaptured returns a client message saved by the interop tests with -capture.
func readCaptured(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(testdata, "captured", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func capturedFiles(t testing.TB) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(testdata, "captured", "*.der"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no captured messages in %s/captured: %v", testdata, err)
	}
	return files
}

// testBackend is a test double of the enrollment core: profiles "devices" (issues at once when the
// challenge is sceptest.Challenge) and "pending" (pends until approve); renewals must be signed with a
// certificate this CA issued.
type testBackend struct {
	pki *testPKI
	// allowDES: its profiles accept DES and 3DES envelopes (scepclient 2.1.0 always uses DES).
	allowDES bool

	mu       sync.Mutex
	enrolls  int
	polls    int
	pending  map[string]*x509.CertificateRequest // by transactionID
	approved map[string]bool
	fail     error // returned by Enroll and Poll when set
	result   *Result
	// lastSigner signed the last request that was issued.
	lastSigner *x509.Certificate
}

func newBackend(p *testPKI) *testBackend {
	return &testBackend{pki: p, pending: map[string]*x509.CertificateRequest{}, approved: map[string]bool{}}
}

func (b *testBackend) Profile(_ context.Context, name string) (Profile, bool, error) {
	return Profile{AllowDES: b.allowDES}, name == "devices" || name == "pending", nil
}

func (b *testBackend) calls() (enrolls, polls int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.enrolls, b.polls
}

func (b *testBackend) lastSignerCert() *x509.Certificate {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.lastSigner
}

func (b *testBackend) approve(txID string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.approved[txID] = true
}

func (b *testBackend) Enroll(_ context.Context, r Request) (Result, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.enrolls++
	switch {
	case b.fail != nil:
		return Result{}, b.fail
	case b.result != nil:
		return *b.result, nil
	case r.MessageType == RenewalReq:
		if r.Signer.CheckSignatureFrom(b.pki.CACert) != nil {
			return Result{Status: Failure, FailInfo: BadRequest}, nil
		}
	case r.Challenge != sceptest.Challenge:
		return Result{Status: Failure, FailInfo: BadRequest}, nil
	case r.Profile == "pending" && !b.approved[r.TransactionID]:
		// A PKCSReq sent again with the same transactionID (scepclient and certmonger poll this way) is
		// answered like a CertPoll.
		b.pending[r.TransactionID] = r.CSR
		return Result{Status: Pending}, nil
	}
	b.lastSigner = r.Signer
	return b.issue(r.CSR), nil
}

func (b *testBackend) Poll(_ context.Context, r PollRequest) (Result, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.polls++
	csr := b.pending[r.TransactionID]
	switch {
	case b.fail != nil:
		return Result{}, b.fail
	case csr == nil || !bytes.Equal(r.Subject, csr.RawSubject) || !bytes.Equal(r.Issuer, b.pki.CACert.RawSubject):
		return Result{Status: Failure, FailInfo: BadCertID}, nil
	case !b.approved[r.TransactionID]:
		return Result{Status: Pending}, nil
	}
	return b.issue(csr), nil
}

func (b *testBackend) issue(csr *x509.CertificateRequest) Result {
	now := time.Now()
	tmpl := &x509.Certificate{SerialNumber: new(big.Int).SetUint64(uint64(now.UnixNano())), Subject: csr.Subject,
		NotBefore: now.Add(-time.Minute), NotAfter: now.Add(24 * time.Hour), DNSNames: csr.DNSNames,
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, b.pki.CACert, csr.PublicKey, b.pki.CAKey)
	if err != nil {
		return Result{Status: Failure, FailInfo: BadRequest}
	}
	c, _ := x509.ParseCertificate(der)
	return Result{Status: Success, Cert: c, Chain: []*x509.Certificate{b.pki.CACert}}
}

// server serves NewHandler(cfg) on loopback; with -capture it saves PKIOperation messages into
// testdata/captured under prefix.
func server(t testing.TB, cfg Config, prefix string) *httptest.Server {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(testLog{t}, nil))
	}
	h, err := NewHandler(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var n int
	var mu sync.Mutex
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if *capture && prefix != "" && r.URL.Query().Get("operation") == "PKIOperation" {
			der, _, err := readMessage(w, r)
			if err == nil {
				mu.Lock()
				n++
				name := filepath.Join(testdata, "captured", fmt.Sprintf("%s-%02d.der", prefix, n))
				mu.Unlock()
				_ = os.MkdirAll(filepath.Dir(name), 0o755)
				_ = os.WriteFile(name, der, 0o644)
				if r.Method == http.MethodPost {
					r.Body = io.NopCloser(bytes.NewReader(der))
				}
			}
		}
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv
}

// testLog writes the handler's log lines into the test's log.
type testLog struct{ t testing.TB }

func (l testLog) Write(b []byte) (int, error) {
	l.t.Log(strings.TrimSpace(string(b)))
	return len(b), nil
}

// testRejectionKey is the implicit rejection's secret of the tests' handlers.
var testRejectionKey = bytes.Repeat([]byte{0x5a}, 32)

func testConfig(p *testPKI, b Backend) Config {
	return Config{CACert: p.CACert, Signer: RASigner{p.RASignCert, p.RASignKey},
		Decrypter: RADecrypter{p.RAEncryptCert, p.RAEncryptKey}, Backend: b, RejectionKey: testRejectionKey}
}

// httpDo sends a request and returns the response with its body read.
func httpDo(t testing.TB, method, url string, body []byte) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, b
}

// pkiOperation posts der (or GETs it when get) and returns the HTTP status and body.
func pkiOperation(t testing.TB, base, profile string, der []byte, get bool) (int, []byte) {
	t.Helper()
	u := base + "/scep/" + profile + "?operation=PKIOperation"
	method, body := http.MethodPost, der
	if get {
		method, body, u = http.MethodGet, nil, u+"&message="+url.QueryEscape(base64.StdEncoding.EncodeToString(der))
	}
	resp, body := httpDo(t, method, u, body)
	if resp.StatusCode == http.StatusOK && resp.Header.Get("Content-Type") != contentTypeMessage {
		t.Errorf("PKIOperation Content-Type = %q, want %q", resp.Header.Get("Content-Type"), contentTypeMessage)
	}
	return resp.StatusCode, body
}

// exchange sends a pkiMessage of type typ with content encrypted to the RA, and returns the CertRep (checked
// by certRep) with the certificates of a SUCCESS.
func exchange(t testing.TB, q sceptest.Requester, p *testPKI, base, profile string, typ int, txID string, content []byte, get bool) (*scepmsg.PKIMessage, []*x509.Certificate) {
	t.Helper()
	req, der := q.Message(t, typ, txID, content, p.RAEncryptCert)
	code, body := pkiOperation(t, base, profile, der, get)
	if code != http.StatusOK {
		t.Fatalf("PKIOperation = %d %s", code, body)
	}
	return certRep(t, q, p, req, body)
}

// certRep checks a CertRep answering req (signed by the RA, CA included, nonces and transactionID) and
// returns it with the certificates of a SUCCESS, decrypted with q's key.
func certRep(t testing.TB, q sceptest.Requester, p *testPKI, req *scepmsg.PKIMessage, der []byte) (*scepmsg.PKIMessage, []*x509.Certificate) {
	t.Helper()
	rep, err := scepmsg.ParsePKIMessage(der)
	if err != nil {
		t.Fatalf("ParsePKIMessage(CertRep) = %v", err)
	}
	switch {
	case rep.MessageType != scepmsg.CertRep:
		t.Errorf("messageType = %d, want %d", rep.MessageType, scepmsg.CertRep)
	case rep.TransactionID != req.TransactionID:
		t.Errorf("transactionID = %q, want %q", rep.TransactionID, req.TransactionID)
	case !bytes.Equal(rep.RecipientNonce, req.SenderNonce) || bytes.Equal(rep.SenderNonce, req.SenderNonce):
		t.Errorf("recipientNonce %x / senderNonce %x, request's senderNonce %x", rep.RecipientNonce, rep.SenderNonce, req.SenderNonce)
	case !rep.Signer.Equal(p.RASignCert):
		t.Errorf("CertRep signed by %v, want the RA", rep.Signer.Subject)
	case len(rep.Certificates) != 2 || !rep.Certificates[1].Equal(p.CACert):
		t.Errorf("CertRep carries %d certificates, want the RA's and the CA's", len(rep.Certificates))
	}
	if rep.PKIStatus != Success {
		if rep.Envelope != nil {
			t.Errorf("a %d CertRep has content", rep.PKIStatus)
		}
		return rep, nil
	}
	content, err := rep.Decrypt(q.Cert, q.Key)
	if err != nil {
		t.Fatalf("decrypting the CertRep: %v", err)
	}
	return rep, sceptest.CertsOnly(t, content)
}
