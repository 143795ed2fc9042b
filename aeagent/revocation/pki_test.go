package revocation

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ocsp"
)

// The test PKI: root → intermediate ("int") → leaves, all with P-256 keys. The intermediate
// names the root's CRL; leaves name the OCSP responder /ocsp and the intermediate's CRL /int.crl
// on one loopback server, whose routes each test sets. CRLs and OCSP responses are made when
// asked, from the fake clock, with x509.CreateRevocationList and ocsp.CreateResponse.

// t0 is the fake clock's start; certificates are valid from a year before to five years after.
var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

const (
	goodSerial    = 100
	revokedSerial = 666
	interSerial   = 2
)

// revokedAt is when revokedSerial was revoked.
var revokedAt = t0.Add(-48 * time.Hour)

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// ca is a certificate and its key.
type ca struct {
	cert *x509.Certificate
	key  crypto.Signer
}

type pki struct {
	t           testing.TB
	srv         *httptest.Server
	clock       *clock
	root, inter *ca

	mu     sync.Mutex
	routes map[string]http.HandlerFunc
	hits   map[string]int
}

func newPKI(t testing.TB) *pki {
	t.Helper()
	p := &pki{t: t, clock: &clock{t: t0}, routes: map[string]http.HandlerFunc{}, hits: map[string]int{}}
	p.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.mu.Lock()
		p.hits[r.URL.Path]++
		h := p.routes[r.URL.Path]
		p.mu.Unlock()
		if h == nil {
			http.NotFound(w, r)
			return
		}
		h(w, r)
	}))
	t.Cleanup(p.srv.Close)
	p.root = p.newCA("Test Root CA", 1, nil, nil)
	p.inter = p.newCA("Test Issuing CA", interSerial, p.root, []string{p.url("/root.crl")})
	return p
}

func (p *pki) url(path string) string { return p.srv.URL + path }

func (p *pki) serve(path string, h http.HandlerFunc) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.routes[path] = h
}

func (p *pki) hitCount(path string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.hits[path]
}

func newKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// sign issues tmpl for key, by parent, or self-signed when parent is nil.
func (p *pki) sign(tmpl *x509.Certificate, key crypto.Signer, parent *ca) *x509.Certificate {
	p.t.Helper()
	tmpl.NotBefore, tmpl.NotAfter = t0.AddDate(-1, 0, 0), t0.AddDate(5, 0, 0)
	parentCert, parentKey := tmpl, key
	if parent != nil {
		parentCert, parentKey = parent.cert, parent.key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parentCert, key.Public(), parentKey)
	if err != nil {
		p.t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		p.t.Fatal(err)
	}
	return cert
}

// newCA makes a CA certificate with a new key, issued by parent or self-signed.
func (p *pki) newCA(name string, serial int64, parent *ca, crls []string) *ca {
	p.t.Helper()
	key := newKey(p.t)
	return p.caWithKey(name, serial, key, parent, crls)
}

func (p *pki) caWithKey(name string, serial int64, key crypto.Signer, parent *ca, crls []string) *ca {
	p.t.Helper()
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: name},
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		CRLDistributionPoints: crls}
	return &ca{cert: p.sign(tmpl, key, parent), key: key}
}

func noOCSP(c *x509.Certificate) { c.OCSPServer = nil }

// leaf is an end-entity certificate issued by the intermediate, naming /ocsp and /int.crl.
func (p *pki) leaf(serial int64, mods ...func(*x509.Certificate)) *x509.Certificate {
	p.t.Helper()
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: "host.example.test"},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		OCSPServer: []string{p.url("/ocsp")}, CRLDistributionPoints: []string{p.url("/int.crl")}}
	for _, m := range mods {
		m(tmpl)
	}
	return p.sign(tmpl, newKey(p.t), p.inter)
}

// responder returns a delegated OCSP responder certificate issued by parent, with the
// OCSPSigning extended key usage when ocspEKU.
func (p *pki) responder(parent *ca, ocspEKU bool, mods ...func(*x509.Certificate)) *ca {
	p.t.Helper()
	eku := x509.ExtKeyUsageClientAuth
	if ocspEKU {
		eku = x509.ExtKeyUsageOCSPSigning
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "Test OCSP Responder"},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{eku}}
	for _, m := range mods {
		m(tmpl)
	}
	key := newKey(p.t)
	return &ca{cert: p.sign(tmpl, key, parent), key: key}
}

func status(code int) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) { http.Error(w, http.StatusText(code), code) }
}

func body(b []byte) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) { w.Write(b) }
}

// ocspAnswer says how an OCSP handler answers. The zero value is a good answer for every serial,
// signed by the intermediate, valid from an hour ago for a day.
type ocspAnswer struct {
	signer     *ca               // signs; nil: the intermediate
	embed      bool              // the signer's certificate is in the response
	about      *x509.Certificate // the issuer named in the CertID; nil: the intermediate
	unknown    bool              // status unknown for every serial
	revoked    map[int64]int     // serial → reason; revoked at revokedAt
	thisUpdate time.Duration     // from now; 0: -1h
	nextUpdate time.Duration     // from now; 0: +24h
}

func (p *pki) ocsp(a ocspAnswer) http.HandlerFunc {
	if a.signer == nil {
		a.signer = p.inter
	}
	if a.about == nil {
		a.about = p.inter.cert
	}
	if a.thisUpdate == 0 {
		a.thisUpdate = -time.Hour
	}
	if a.nextUpdate == 0 {
		a.nextUpdate = 24 * time.Hour
	}
	return func(w http.ResponseWriter, r *http.Request) {
		der, _ := io.ReadAll(r.Body)
		req, err := ocsp.ParseRequest(der)
		if err != nil || r.Method != http.MethodPost || r.Header.Get("Content-Type") != "application/ocsp-request" {
			w.Write(ocsp.MalformedRequestErrorResponse)
			return
		}
		now := p.clock.now()
		tmpl := ocsp.Response{Status: ocsp.Good, SerialNumber: req.SerialNumber,
			ThisUpdate: now.Add(a.thisUpdate), NextUpdate: now.Add(a.nextUpdate)}
		if reason, ok := a.revoked[req.SerialNumber.Int64()]; ok {
			tmpl.Status, tmpl.RevocationReason, tmpl.RevokedAt = ocsp.Revoked, reason, revokedAt
		}
		if a.unknown {
			tmpl.Status = ocsp.Unknown
		}
		if a.embed {
			tmpl.Certificate = a.signer.cert
		}
		resp, err := ocsp.CreateResponse(a.about, a.signer.cert, tmpl, a.signer.key)
		if err != nil {
			p.t.Errorf("ocsp.CreateResponse: %v", err)
			w.Write(ocsp.InternalErrorErrorResponse)
			return
		}
		w.Header().Set("Content-Type", "application/ocsp-response")
		w.Write(resp)
	}
}

// crlSpec says what a CRL handler serves. The zero value is an empty CRL of the intermediate,
// valid from an hour ago for a day.
type crlSpec struct {
	signer     *ca              // nil: the intermediate
	revoked    map[int64]int    // serial → reason; revoked at revokedAt
	thisUpdate time.Duration    // from now; 0: -1h
	nextUpdate time.Duration    // from now; 0: +24h
	extensions []pkix.Extension // added to the CRL
	entryExt   []pkix.Extension // added to every entry
	pem        bool
}

// makeCRL returns the DER (or PEM) CRL of s at now.
func (p *pki) makeCRL(s crlSpec, now time.Time) []byte {
	p.t.Helper()
	if s.signer == nil {
		s.signer = p.inter
	}
	if s.thisUpdate == 0 {
		s.thisUpdate = -time.Hour
	}
	if s.nextUpdate == 0 {
		s.nextUpdate = 24 * time.Hour
	}
	tmpl := &x509.RevocationList{Number: big.NewInt(now.Unix()), ThisUpdate: now.Add(s.thisUpdate),
		NextUpdate: now.Add(s.nextUpdate), ExtraExtensions: s.extensions}
	for serial, reason := range s.revoked {
		tmpl.RevokedCertificateEntries = append(tmpl.RevokedCertificateEntries, x509.RevocationListEntry{
			SerialNumber: big.NewInt(serial), RevocationTime: revokedAt, ReasonCode: reason, ExtraExtensions: s.entryExt})
	}
	der, err := x509.CreateRevocationList(rand.Reader, tmpl, s.signer.cert, s.signer.key)
	if err != nil {
		p.t.Fatal(err)
	}
	if s.pem {
		return append([]byte("\n"), pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: der})...)
	}
	return der
}

func (p *pki) crl(s crlSpec) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet {
			http.Error(w, "GET only", http.StatusMethodNotAllowed)
			return
		}
		w.Write(p.makeCRL(s, p.clock.now()))
	}
}

// idpExtension is an issuing distribution point extension naming uris, for CA certificates
// only when onlyCA.
func idpExtension(t testing.TB, onlyCA bool, uris ...string) pkix.Extension {
	t.Helper()
	type dpName struct {
		FullName []asn1.RawValue `asn1:"optional,tag:0"`
	}
	var v struct {
		DP     dpName `asn1:"optional,tag:0"` // the trick of crypto/x509: [0] in place of the SEQUENCE tag
		OnlyCA bool   `asn1:"optional,tag:2"`
	}
	for _, u := range uris {
		v.DP.FullName = append(v.DP.FullName, asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 6, Bytes: []byte(u)})
	}
	v.OnlyCA = onlyCA
	der, err := asn1.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return pkix.Extension{Id: oidIssuingDP, Critical: true, Value: der}
}
