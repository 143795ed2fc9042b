package scep

import (
	"crypto"
	"slices"

	scepmsg "github.com/enrollment-appliance/aeappliance/proto/scep"

	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/enrollment-appliance/aeappliance/proto/scep/sceptest"
	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// GetCACaps lists DES3 only for a profile that allows DES; GetCACert returns the RA's signing and
// encryption certificates and the CA's.
func TestGetCACapsAndCACert(t *testing.T) {
	p := sceptest.NewPKI(t, true)
	srv := server(t, testConfig(p, newBackend(p)), "")
	legacy := newBackend(p)
	legacy.allowDES = true
	legacySrv := server(t, testConfig(p, legacy), "")
	noDES := slices.DeleteFunc(slices.Clone(DefaultCaps), func(c string) bool { return c == "DES3" })
	for _, path := range []string{"/scep/devices", "/scep/devices/pkiclient.exe"} {
		resp, body := httpDo(t, "GET", srv.URL+path+"?operation=GetCACaps", nil)
		if resp.StatusCode != http.StatusOK || string(body) != strings.Join(noDES, "\n")+"\n" {
			t.Errorf("GetCACaps %s = %d %q, want no DES3", path, resp.StatusCode, body)
		}
		resp, body = httpDo(t, "GET", legacySrv.URL+path+"?operation=GetCACaps", nil)
		if resp.StatusCode != http.StatusOK || string(body) != strings.Join(DefaultCaps, "\n")+"\n" {
			t.Errorf("GetCACaps %s of a profile allowing DES = %d %q", path, resp.StatusCode, body)
		}
		resp, body = httpDo(t, "GET", srv.URL+path+"?operation=GetCACert&message=0", nil)
		if ct := resp.Header.Get("Content-Type"); resp.StatusCode != http.StatusOK || ct != "application/x-x509-ca-ra-cert" {
			t.Fatalf("GetCACert %s = %d %q", path, resp.StatusCode, ct)
		}
		certs := sceptest.CertsOnly(t, body)
		if len(certs) != 3 || !certs[0].Equal(p.RASignCert) || !certs[1].Equal(p.RAEncryptCert) || !certs[2].Equal(p.CACert) {
			t.Errorf("GetCACert %s returned %d certificates, want the RA's signing and encryption ones then the CA's", path, len(certs))
		}
		_, body = httpDo(t, "GET", srv.URL+path+"?operation=GetCACert&message="+RAOnly, nil)
		if certs := sceptest.CertsOnly(t, body); len(certs) != 2 || !certs[0].Equal(p.RASignCert) || !certs[1].Equal(p.RAEncryptCert) {
			t.Errorf("GetCACert %s for %s returned %d certificates, want the RA's two", path, RAOnly, len(certs))
		}
	}
}

func TestNewHandlerRefusesBadConfig(t *testing.T) {
	p := sceptest.NewPKI(t, false)
	other := sceptest.NewPKI(t, true)
	b := newBackend(p)
	good := testConfig(p, b)
	with := func(f func(c *Config)) Config {
		c := good
		f(&c)
		return c
	}
	// One key for both, and a certificate with both usages: what the RA had before its keys were split.
	combined := p.IssueRA(t, "RA signing and decrypting", x509.KeyUsageDigitalSignature|x509.KeyUsageKeyEncipherment, p.RAEncryptKey)
	sameKey := p.IssueRA(t, "RA signing with the decryption key", x509.KeyUsageDigitalSignature, p.RAEncryptKey)
	for name, cfg := range map[string]Config{
		"no backend":                 with(func(c *Config) { c.Backend = nil }),
		"no signer":                  with(func(c *Config) { c.Signer = RASigner{} }),
		"no decrypter":               with(func(c *Config) { c.Decrypter = RADecrypter{} }),
		"signer of another CA":       with(func(c *Config) { c.Signer = RASigner{other.RASignCert, other.RASignKey} }),
		"decrypter of another CA":    with(func(c *Config) { c.Decrypter = RADecrypter{other.RAEncryptCert, other.RAEncryptKey} }),
		"key of another signer":      with(func(c *Config) { c.Signer.Key = sceptest.RSAKey(t, 2) }),
		"key of another decrypter":   with(func(c *Config) { c.Decrypter.Key = sceptest.RSAKey(t, 2) }),
		"signer is the CA":           with(func(c *Config) { c.Signer.Cert = p.CACert }),
		"decrypter is the CA":        with(func(c *Config) { c.Decrypter.Cert = p.CACert }),
		"certificates swapped":       with(func(c *Config) { c.Signer.Cert, c.Decrypter.Cert = p.RAEncryptCert, p.RASignCert }),
		"signer may also encrypt":    with(func(c *Config) { c.Signer = RASigner{combined, p.RAEncryptKey} }),
		"decrypter may also sign":    with(func(c *Config) { c.Decrypter = RADecrypter{combined, p.RAEncryptKey} }),
		"one key signs and decrypts": with(func(c *Config) { c.Signer = RASigner{sameKey, p.RAEncryptKey} }),
		"short rejection key":        with(func(c *Config) { c.RejectionKey = c.RejectionKey[:31] }),
		"unknown cap":                with(func(c *Config) { c.Caps = []string{"DES"} }),
	} {
		if _, err := NewHandler(cfg); err == nil {
			t.Errorf("NewHandler(%s) = nil error", name)
		}
	}
}

func TestEnrollOwnClient(t *testing.T) {
	p := sceptest.NewPKI(t, true) // an ECDSA CA: only the RA needs RSA
	srv := server(t, testConfig(p, newBackend(p)), "")
	q := sceptest.NewRequester(t, 3, "device-1")
	for _, get := range []bool{false, true} {
		rep, certs := exchange(t, q, p, srv.URL, "devices", PKCSReq, "tx-enroll+/=", sceptest.NewCSR(t, q.Key, "device-1", sceptest.Challenge), get)
		if rep.PKIStatus != Success || len(certs) != 2 {
			t.Fatalf("GET %t: CertRep status %d with %d certificates, want SUCCESS with 2", get, rep.PKIStatus, len(certs))
		}
		if err := p.Verifies(certs[0]); err != nil || certs[0].Subject.CommonName != "device-1" || !certs[1].Equal(p.CACert) {
			t.Errorf("issued %v (verify: %v), then %v", certs[0].Subject, err, certs[1].Subject)
		}
	}
	for _, challenge := range []string{"wrong", ""} {
		rep, _ := exchange(t, q, p, srv.URL, "devices", PKCSReq, "tx-1", sceptest.NewCSR(t, q.Key, "device-1", challenge), false)
		if rep.PKIStatus != Failure || rep.FailInfo != BadRequest {
			t.Errorf("challenge %q: CertRep %d/%d, want FAILURE badRequest", challenge, rep.PKIStatus, rep.FailInfo)
		}
	}
}

func TestPendingThenCertPoll(t *testing.T) {
	p := sceptest.NewPKI(t, false)
	b := newBackend(p)
	srv := server(t, testConfig(p, b), "")
	q := sceptest.NewRequester(t, 3, "device-2")
	csr := sceptest.NewCSR(t, q.Key, "device-2", sceptest.Challenge)
	if rep, _ := exchange(t, q, p, srv.URL, "pending", PKCSReq, "tx-pending", csr, false); rep.PKIStatus != Pending {
		t.Fatalf("PKCSReq on the pending profile: status %d, want PENDING", rep.PKIStatus)
	}
	var iasB cryptobyte.Builder
	iasB.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddBytes(p.CACert.RawSubject)
		b.AddBytes(mustCSR(t, csr).RawSubject)
	})
	ias := iasB.BytesOrPanic()
	if rep, _ := exchange(t, q, p, srv.URL, "pending", scepmsg.CertPoll, "tx-pending", ias, true); rep.PKIStatus != Pending {
		t.Errorf("CertPoll before approval: status %d, want PENDING", rep.PKIStatus)
	}
	b.approve("tx-pending")
	if rep, _ := exchange(t, q, p, srv.URL, "pending", scepmsg.CertPoll, "tx-other", ias, true); rep.PKIStatus != Failure || rep.FailInfo != BadCertID {
		t.Errorf("CertPoll of an unknown transaction: %d/%d, want FAILURE badCertId", rep.PKIStatus, rep.FailInfo)
	}
	rep, certs := exchange(t, q, p, srv.URL, "pending", scepmsg.CertPoll, "tx-pending", ias, true)
	if rep.PKIStatus != Success || len(certs) == 0 || p.Verifies(certs[0]) != nil || !q.Key.PublicKey.Equal(certs[0].PublicKey) {
		t.Fatalf("CertPoll after approval: status %d, %d certificates", rep.PKIStatus, len(certs))
	}
	if _, polls := b.calls(); polls != 3 {
		t.Errorf("backend polled %d times, want 3", polls)
	}
}

func TestRenewalOwnClient(t *testing.T) {
	p := sceptest.NewPKI(t, false)
	b := newBackend(p)
	srv := server(t, testConfig(p, b), "")
	q := sceptest.NewRequester(t, 3, "device-3")
	old := b.issue(mustCSR(t, sceptest.NewCSR(t, q.Key, "device-3", ""))).Cert
	renewer := sceptest.Requester{Key: q.Key, Cert: old}
	newKey := sceptest.RSAKey(t, 4)
	for _, c := range []struct {
		typ       int
		challenge string
	}{
		{RenewalReq, ""},              // a RenewalReq needs no challenge
		{PKCSReq, sceptest.Challenge}, // certmonger's rekey: a PKCSReq signed with the certificate it holds
	} {
		rep, certs := exchange(t, renewer, p, srv.URL, "devices", c.typ, "tx-renew", sceptest.NewCSR(t, newKey, "device-3", c.challenge), false)
		if rep.PKIStatus != Success || len(certs) == 0 || !newKey.PublicKey.Equal(certs[0].PublicKey) || !b.lastSignerCert().Equal(old) {
			t.Fatalf("type %d signed by the old certificate: status %d/%d, %d certificates", c.typ, rep.PKIStatus, rep.FailInfo, len(certs))
		}
	}
	// A self-signed "old certificate" is not one of ours: the backend refuses.
	if rep, _ := exchange(t, q, p, srv.URL, "devices", RenewalReq, "tx-renew-2", sceptest.NewCSR(t, newKey, "device-3", ""), false); rep.PKIStatus != Failure {
		t.Errorf("RenewalReq signed with a foreign certificate: status %d, want FAILURE", rep.PKIStatus)
	}
}

func mustCSR(t *testing.T, der []byte) *x509.CertificateRequest {
	t.Helper()
	c, err := x509.ParseCertificateRequest(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestRefusals sends broken requests: each gets a clean HTTP error or a FAILURE CertRep, and the backend is
// never asked.
func TestRefusals(t *testing.T) {
	p := sceptest.NewPKI(t, false)
	other := sceptest.NewPKI(t, false)
	b := newBackend(p)
	cfg := testConfig(p, b)
	cfg.Now = func() time.Time { return time.Now().AddDate(1, 0, 0) } // our own messages carry no signingTime
	srv := server(t, cfg, "")

	q := sceptest.NewRequester(t, 3, "device-4")
	goodCSR := sceptest.NewCSR(t, q.Key, "device-4", sceptest.Challenge)
	_, good := q.Message(t, PKCSReq, "tx-x", goodCSR, p.RAEncryptCert)

	badCSR := bytes.Clone(goodCSR)
	badCSR[len(badCSR)-1] ^= 1
	msg := func(q sceptest.Requester, typ int, content []byte, ra *x509.Certificate) []byte {
		_, der := q.Message(t, typ, "tx-x", content, ra)
		return der
	}
	// wrongKey is signed with a key that is not its certificate's: its SignerInfo signature, the last bytes of
	// the message, is replaced by another key's (package cms refuses to write such a message).
	wrongKey := msg(q, PKCSReq, goodCSR, p.RAEncryptCert)
	wrongSig, err := rsa.SignPKCS1v15(rand.Reader, sceptest.RSAKey(t, 4), crypto.SHA256, make([]byte, 32))
	if err != nil {
		t.Fatal(err)
	}
	copy(wrongKey[len(wrongKey)-len(wrongSig):], wrongSig)
	type want struct {
		code     int
		failInfo int // when code is 200
	}
	for name, c := range map[string]struct {
		method, path, query string
		body                []byte
		want                want
	}{
		"not DER":                 {"POST", "/scep/devices", "PKIOperation", []byte("0garbage"), want{400, 0}},
		"truncated":               {"POST", "/scep/devices", "PKIOperation", good[:len(good)/2], want{400, 0}},
		"trailing data":           {"POST", "/scep/devices", "PKIOperation", append(bytes.Clone(good), 0), want{400, 0}},
		"not base64":              {"POST", "/scep/devices", "PKIOperation", []byte("!!!"), want{400, 0}},
		"empty body":              {"POST", "/scep/devices", "PKIOperation", nil, want{400, 0}},
		"oversized body":          {"POST", "/scep/devices", "PKIOperation", bytes.Repeat([]byte{0x30}, 200<<10), want{413, 0}},
		"oversized DER":           {"POST", "/scep/devices", "PKIOperation", append([]byte{0x30}, make([]byte, scepmsg.MaxMessageSize)...), want{413, 0}},
		"oversized GET":           {"GET", "/scep/devices", "PKIOperation&message=" + strings.Repeat("A", 100<<10), nil, want{413, 0}},
		"GET without message":     {"GET", "/scep/devices", "PKIOperation", nil, want{400, 0}},
		"unknown operation":       {"GET", "/scep/devices", "GetNextCACert", nil, want{400, 0}},
		"unknown profile":         {"GET", "/scep/nobody", "GetCACaps", nil, want{404, 0}},
		"unknown profile PKIOp":   {"POST", "/scep/nobody", "PKIOperation", good, want{404, 0}},
		"no profile":              {"GET", "/scep/", "GetCACaps", nil, want{404, 0}},
		"nested path":             {"GET", "/scep/devices/x/y", "GetCACaps", nil, want{404, 0}},
		"other path":              {"GET", "/cgi-bin/pkiclient.exe", "GetCACaps", nil, want{404, 0}},
		"PUT":                     {"PUT", "/scep/devices", "PKIOperation", good, want{405, 0}},
		"POST GetCACert":          {"POST", "/scep/devices", "GetCACert", nil, want{405, 0}},
		"CSR signature":           {"POST", "/scep/devices", "PKIOperation", msg(q, PKCSReq, badCSR, p.RAEncryptCert), want{200, BadMessageCheck}},
		"CSR is not a CSR":        {"POST", "/scep/devices", "PKIOperation", msg(q, PKCSReq, []byte{0x30, 0}, p.RAEncryptCert), want{200, BadMessageCheck}}, // as if it did not decrypt
		"signer key mismatch":     {"POST", "/scep/devices", "PKIOperation", wrongKey, want{200, BadMessageCheck}},
		"envelope for another RA": {"POST", "/scep/devices", "PKIOperation", msg(q, PKCSReq, goodCSR, other.RAEncryptCert), want{200, BadMessageCheck}},
		"envelope for RA signing": {"POST", "/scep/devices", "PKIOperation", msg(q, PKCSReq, goodCSR, p.RASignCert), want{200, BadMessageCheck}},
		"no envelope":             {"POST", "/scep/devices", "PKIOperation", msg(q, PKCSReq, nil, p.RAEncryptCert), want{200, BadRequest}},
		"GetCRL":                  {"POST", "/scep/devices", "PKIOperation", msg(q, scepmsg.GetCRL, goodCSR, p.RAEncryptCert), want{200, BadRequest}},
		"CertRep from a client":   {"POST", "/scep/devices", "PKIOperation", msg(q, scepmsg.CertRep, goodCSR, p.RAEncryptCert), want{200, BadRequest}},
		"CertPoll of garbage":     {"POST", "/scep/devices", "PKIOperation", msg(q, scepmsg.CertPoll, []byte{0x30, 0}, p.RAEncryptCert), want{200, BadMessageCheck}},
		"CertPoll of a CSR":       {"POST", "/scep/devices", "PKIOperation", msg(q, scepmsg.CertPoll, goodCSR, p.RAEncryptCert), want{200, BadMessageCheck}},
		"RenewalReq not a CSR":    {"POST", "/scep/devices", "PKIOperation", msg(q, RenewalReq, []byte("x"), p.RAEncryptCert), want{200, BadMessageCheck}},
		"signingTime a year ago":  {"POST", "/scep/devices", "PKIOperation", readCaptured(t, "certmonger-01.der"), want{200, BadTime}},
	} {
		t.Run(name, func(t *testing.T) {
			resp, body := httpDo(t, c.method, srv.URL+c.path+"?operation="+c.query, c.body)
			if resp.StatusCode != c.want.code {
				t.Fatalf("status %d (%s), want %d", resp.StatusCode, body, c.want.code)
			}
			if c.want.code == http.StatusOK {
				rep, err := scepmsg.ParsePKIMessage(body)
				if err != nil {
					t.Fatal(err)
				}
				if rep.PKIStatus != Failure || rep.FailInfo != c.want.failInfo || rep.TransactionID == "" {
					t.Errorf("CertRep %d/%d for %q, want FAILURE/%d", rep.PKIStatus, rep.FailInfo, rep.TransactionID, c.want.failInfo)
				}
			}
		})
	}
	if enrolls, polls := b.calls(); enrolls != 0 || polls != 0 {
		t.Errorf("backend called %d+%d times for refused messages", enrolls, polls)
	}
}

func TestBackendErrorsAreFailures(t *testing.T) {
	p := sceptest.NewPKI(t, false)
	b := newBackend(p)
	srv := server(t, testConfig(p, b), "")
	q := sceptest.NewRequester(t, 3, "device-5")
	for _, c := range []struct {
		name   string
		fail   error
		result *Result
	}{
		{"error", errors.New("database is down at 10.1.2.3"), nil},
		{"success without certificate", nil, &Result{Status: Success}},
		{"unknown status", nil, &Result{Status: 7}},
		{"unknown failInfo", nil, &Result{Status: Failure, FailInfo: 99}},
	} {
		b.mu.Lock()
		b.fail, b.result = c.fail, c.result
		b.mu.Unlock()
		req, der := q.Message(t, PKCSReq, "tx-5", sceptest.NewCSR(t, q.Key, "device-5", sceptest.Challenge), p.RAEncryptCert)
		_, body := pkiOperation(t, srv.URL, "devices", der, false)
		if rep, _ := certRep(t, q, p, req, body); rep.PKIStatus != Failure || rep.FailInfo != BadRequest {
			t.Errorf("%s: CertRep %d/%d, want FAILURE badRequest", c.name, rep.PKIStatus, rep.FailInfo)
		}
		if bytes.Contains(body, []byte("10.1.2.3")) {
			t.Errorf("%s: the reply leaks the backend's error", c.name)
		}
	}
}
