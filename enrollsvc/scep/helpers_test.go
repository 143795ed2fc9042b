package scep

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"errors"
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

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"

	"github.com/enrollment-appliance/aeappliance/enrollsvc/scep/sceptest"
)

// -capture makes the interop tests use the fixed PKI in testdata (creating it when missing) and save every
// PKIOperation message the real clients send into testdata/captured, for the replay and fuzz tests.
var capture = flag.Bool("capture", false, "save real client requests into testdata/captured")

const testChallenge = "s3cret-Challenge"

// testPKI is a software CA and an RA certificate it issued.
type testPKI struct {
	caCert *x509.Certificate
	caKey  crypto.Signer
	raCert *x509.Certificate
	raKey  *rsa.PrivateKey
}

var (
	rsaKeysMu sync.Mutex
	rsaKeys   []*rsa.PrivateKey
)

// rsaKey returns a fresh RSA-2048 key; keys are generated once per process in a small pool, since tests only
// need distinct keys, not secret ones.
func rsaKey(t testing.TB, i int) *rsa.PrivateKey {
	t.Helper()
	rsaKeysMu.Lock()
	defer rsaKeysMu.Unlock()
	for len(rsaKeys) <= i {
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			t.Fatal(err)
		}
		rsaKeys = append(rsaKeys, k)
	}
	return rsaKeys[i]
}

func serial(t testing.TB) *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 80))
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func createCert(t testing.TB, tmpl, parent *x509.Certificate, pub crypto.PublicKey, key crypto.Signer) *x509.Certificate {
	t.Helper()
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, key)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// newPKI builds a CA (P-256 when ecCA, else RSA) and an RSA-2048 RA certificate it issued.
func newPKI(t testing.TB, ecCA bool) *testPKI {
	t.Helper()
	var caKey crypto.Signer = rsaKey(t, 0)
	if ecCA {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		caKey = k
	}
	now := time.Now()
	caTmpl := &x509.Certificate{SerialNumber: serial(t), Subject: pkix.Name{CommonName: "SCEP Test CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.AddDate(100, 0, 0), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign}
	ca := createCert(t, caTmpl, caTmpl, caKey.Public(), caKey)
	raKey := rsaKey(t, 1)
	raTmpl := &x509.Certificate{SerialNumber: serial(t), Subject: pkix.Name{CommonName: "SCEP Test RA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.AddDate(100, 0, 0),
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment}
	return &testPKI{caCert: ca, caKey: caKey, raCert: createCert(t, raTmpl, ca, raKey.Public(), caKey), raKey: raKey}
}

// pkiFor is a fresh PKI, or the fixed one with -capture.
func pkiFor(t testing.TB) *testPKI {
	if *capture {
		return fixedPKI(t)
	}
	return newPKI(t, false)
}

// fixedPKI is the PKI in testdata that the captured client messages are encrypted to; with -capture it is
// created when missing.
func fixedPKI(t testing.TB) *testPKI {
	t.Helper()
	dir := filepath.Join("testdata", "pki")
	if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) && *capture {
		p := newPKI(t, false)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		caKey, err := x509.MarshalPKCS8PrivateKey(p.caKey)
		if err != nil {
			t.Fatal(err)
		}
		for name, block := range map[string]*pem.Block{
			"ca.pem": {Type: "CERTIFICATE", Bytes: p.caCert.Raw}, "ca.key": {Type: "PRIVATE KEY", Bytes: caKey},
			"ra.pem": {Type: "CERTIFICATE", Bytes: p.raCert.Raw},
			"ra.key": {Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(p.raKey)},
		} {
			if err := os.WriteFile(filepath.Join(dir, name), pem.EncodeToMemory(block), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	read := func(name string) []byte { return sceptest.ReadPEM(t, filepath.Join(dir, name)).Bytes }
	p := &testPKI{}
	var err error
	if p.caCert, err = x509.ParseCertificate(read("ca.pem")); err != nil {
		t.Fatal(err)
	}
	if p.raCert, err = x509.ParseCertificate(read("ra.pem")); err != nil {
		t.Fatal(err)
	}
	if p.raKey, err = x509.ParsePKCS1PrivateKey(read("ra.key")); err != nil {
		t.Fatal(err)
	}
	k, err := x509.ParsePKCS8PrivateKey(read("ca.key"))
	if err != nil {
		t.Fatal(err)
	}
	p.caKey = k.(crypto.Signer)
	return p
}

// testBackend is a test double of the enrollment core: profiles "devices" (issues at once when the
// challenge is testChallenge) and "pending" (pends until approve); renewals must be signed with a
// certificate this CA issued.
type testBackend struct {
	pki *testPKI

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

func (b *testBackend) Profile(_ context.Context, name string) (bool, error) {
	return name == "devices" || name == "pending", nil
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
		if r.Signer.CheckSignatureFrom(b.pki.caCert) != nil {
			return Result{Status: Failure, FailInfo: BadRequest}, nil
		}
	case r.Challenge != testChallenge:
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
	case csr == nil || !bytes.Equal(r.Subject, csr.RawSubject) || !bytes.Equal(r.Issuer, b.pki.caCert.RawSubject):
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
	der, err := x509.CreateCertificate(rand.Reader, tmpl, b.pki.caCert, csr.PublicKey, b.pki.caKey)
	if err != nil {
		return Result{Status: Failure, FailInfo: BadRequest}
	}
	c, _ := x509.ParseCertificate(der)
	return Result{Status: Success, Cert: c, Chain: []*x509.Certificate{b.pki.caCert}}
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
				name := filepath.Join("testdata", "captured", fmt.Sprintf("%s-%02d.der", prefix, n))
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

func testConfig(p *testPKI, b Backend) Config {
	return Config{CACert: p.caCert, RACert: p.raCert, RAKey: p.raKey, Backend: b}
}

// selfSigned is the certificate a requester signs a PKCSReq with.
func selfSigned(t testing.TB, key crypto.Signer, cn string) *x509.Certificate {
	t.Helper()
	tmpl := &x509.Certificate{SerialNumber: serial(t), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	return createCert(t, tmpl, tmpl, key.Public(), key)
}

// newCSR writes a PKCS#10 for cn with a challengePassword attribute (PrintableString, none when "").
func newCSR(t testing.TB, key crypto.Signer, cn, challenge string) []byte {
	t.Helper()
	if challenge == "" {
		return newCSRWithAttributes(t, key, cn)
	}
	return newCSRWithAttributes(t, key, cn, challengeAttribute(cbasn1.PrintableString, []byte(challenge)))
}

func challengeAttribute(tag cbasn1.Tag, value []byte) []byte {
	return derOf(func(b *cryptobyte.Builder) {
		b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
			b.AddASN1ObjectIdentifier(oidChallengePassword)
			b.AddASN1(cbasn1.SET, func(b *cryptobyte.Builder) {
				b.AddASN1(tag, func(b *cryptobyte.Builder) { b.AddBytes(value) })
			})
		})
	})
}

// newCSRWithAttributes writes a PKCS#10 for cn whose attributes are attrs (DER Attributes), signed by key.
func newCSRWithAttributes(t testing.TB, key crypto.Signer, cn string, attrs ...[]byte) []byte {
	t.Helper()
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: cn}}, key)
	if err != nil {
		t.Fatal(err)
	}
	parsed, _ := x509.ParseCertificateRequest(csr)
	// Rebuild the request info with the attributes, and sign it again.
	tbs := derOf(func(b *cryptobyte.Builder) {
		b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
			b.AddASN1Int64(0)
			b.AddBytes(parsed.RawSubject)
			b.AddBytes(parsed.RawSubjectPublicKeyInfo)
			b.AddASN1(tagExplicit0, func(b *cryptobyte.Builder) { b.AddBytes(bytes.Join(attrs, nil)) })
		})
	})
	sig, err := key.Sign(rand.Reader, hashOf(crypto.SHA256, tbs), crypto.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	return derOf(func(b *cryptobyte.Builder) {
		b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
			b.AddBytes(tbs)
			addAlgorithm(b, digests[1].withRSA, func(b *cryptobyte.Builder) { b.AddASN1NULL() })
			b.AddASN1BitString(sig)
		})
	})
}

// requester is our own SCEP client, built from the message layer.
type requester struct {
	key  *rsa.PrivateKey
	cert *x509.Certificate // the signing certificate: self-signed, or the one being renewed
}

func newRequester(t testing.TB, key int, cn string) requester {
	q := requester{key: rsaKey(t, key)}
	q.cert = selfSigned(t, q.key, cn)
	return q
}

// message writes a pkiMessage of type typ with content encrypted to ra (content nil: no envelope).
func (q requester) message(t testing.TB, typ int, txID string, content []byte, ra *x509.Certificate) (*PKIMessage, []byte) {
	t.Helper()
	env := []byte{}
	if content != nil {
		var err error
		if env, err = encryptEnvelope(content, ra); err != nil {
			t.Fatal(err)
		}
	}
	return q.signed(t, typ, txID, env)
}

// signed writes a pkiMessage of type typ around env, an EnvelopedData made elsewhere.
func (q requester) signed(t testing.TB, typ int, txID string, env []byte) (*PKIMessage, []byte) {
	t.Helper()
	nonce, err := newNonce()
	if err != nil {
		t.Fatal(err)
	}
	m := &PKIMessage{MessageType: typ, TransactionID: txID, SenderNonce: nonce, Signer: q.cert}
	der, err := m.sign(env, q.key, nil)
	if err != nil {
		t.Fatal(err)
	}
	return m, der
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
func (q requester) exchange(t testing.TB, p *testPKI, base, profile string, typ int, txID string, content []byte, get bool) (*PKIMessage, []*x509.Certificate) {
	t.Helper()
	req, der := q.message(t, typ, txID, content, p.raCert)
	code, body := pkiOperation(t, base, profile, der, get)
	if code != http.StatusOK {
		t.Fatalf("PKIOperation = %d %s", code, body)
	}
	return q.certRep(t, p, req, body)
}

// certRep checks a CertRep answering req (signed by the RA, CA included, nonces and transactionID) and
// returns it with the certificates of a SUCCESS, decrypted with q's key.
func (q requester) certRep(t testing.TB, p *testPKI, req *PKIMessage, der []byte) (*PKIMessage, []*x509.Certificate) {
	t.Helper()
	rep, err := ParsePKIMessage(der)
	if err != nil {
		t.Fatalf("ParsePKIMessage(CertRep) = %v", err)
	}
	switch {
	case rep.MessageType != CertRep:
		t.Errorf("messageType = %d, want %d", rep.MessageType, CertRep)
	case rep.TransactionID != req.TransactionID:
		t.Errorf("transactionID = %q, want %q", rep.TransactionID, req.TransactionID)
	case !bytes.Equal(rep.RecipientNonce, req.SenderNonce) || bytes.Equal(rep.SenderNonce, req.SenderNonce):
		t.Errorf("recipientNonce %x / senderNonce %x, request's senderNonce %x", rep.RecipientNonce, rep.SenderNonce, req.SenderNonce)
	case !rep.Signer.Equal(p.raCert):
		t.Errorf("CertRep signed by %v, want the RA", rep.Signer.Subject)
	case len(rep.Certificates) != 2 || !rep.Certificates[1].Equal(p.caCert):
		t.Errorf("CertRep carries %d certificates, want the RA's and the CA's", len(rep.Certificates))
	}
	if rep.PKIStatus != Success {
		if rep.Envelope != nil {
			t.Errorf("a %d CertRep has content", rep.PKIStatus)
		}
		return rep, nil
	}
	content, err := rep.Decrypt(q.cert, q.key)
	if err != nil {
		t.Fatalf("decrypting the CertRep: %v", err)
	}
	return rep, certsOnly(t, content)
}

// certsOnly reads the certificates of a degenerate certs-only SignedData.
func certsOnly(t testing.TB, der []byte) []*x509.Certificate {
	t.Helper()
	body, err := readContentInfo(der, oidSignedData, "certs-only")
	if err != nil {
		t.Fatal(err)
	}
	var sd, certs cryptobyte.String
	var version int64
	if !body.ReadASN1(&sd, cbasn1.SEQUENCE) || !sd.ReadASN1Integer(&version) || !sd.SkipASN1(cbasn1.SET) ||
		!sd.SkipASN1(cbasn1.SEQUENCE) || !sd.ReadASN1(&certs, tagExplicit0) || !sd.ReadASN1(&sd, cbasn1.SET) || len(sd) != 0 {
		t.Fatal("not a certs-only SignedData")
	}
	out, err := x509.ParseCertificates(certs)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// verifies reports whether leaf chains to the CA.
func (p *testPKI) verifies(leaf *x509.Certificate) error {
	roots := x509.NewCertPool()
	roots.AddCert(p.caCert)
	_, err := leaf.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
	return err
}
