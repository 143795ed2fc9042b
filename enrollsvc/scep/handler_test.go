package scep

import (
	"bytes"
	"crypto/x509"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

func TestGetCACapsAndCACert(t *testing.T) {
	p := newPKI(t, true)
	srv := server(t, testConfig(p, newBackend(p)), "")
	for _, path := range []string{"/scep/devices", "/scep/devices/pkiclient.exe"} {
		resp, body := httpDo(t, "GET", srv.URL+path+"?operation=GetCACaps", nil)
		if resp.StatusCode != http.StatusOK || string(body) != strings.Join(DefaultCaps, "\n")+"\n" {
			t.Errorf("GetCACaps %s = %d %q", path, resp.StatusCode, body)
		}
		resp, body = httpDo(t, "GET", srv.URL+path+"?operation=GetCACert&message=0", nil)
		if ct := resp.Header.Get("Content-Type"); resp.StatusCode != http.StatusOK || ct != "application/x-x509-ca-ra-cert" {
			t.Fatalf("GetCACert %s = %d %q", path, resp.StatusCode, ct)
		}
		certs := certsOnly(t, body)
		if len(certs) != 2 || !certs[0].Equal(p.raCert) || !certs[1].Equal(p.caCert) {
			t.Errorf("GetCACert %s returned %d certificates, want the RA's then the CA's", path, len(certs))
		}
	}
}

func TestNewHandlerRefusesBadConfig(t *testing.T) {
	p := newPKI(t, false)
	other := newPKI(t, true)
	b := newBackend(p)
	for name, cfg := range map[string]Config{
		"no backend":        {CACert: p.caCert, RACert: p.raCert, RAKey: p.raKey},
		"RA of another CA":  {CACert: other.caCert, RACert: p.raCert, RAKey: p.raKey, Backend: b},
		"key of another RA": {CACert: p.caCert, RACert: p.raCert, RAKey: rsaKey(t, 2), Backend: b},
		"RA is the CA":      {CACert: p.caCert, RACert: p.caCert, RAKey: p.raKey, Backend: b},
		"unknown cap":       {CACert: p.caCert, RACert: p.raCert, RAKey: p.raKey, Backend: b, Caps: []string{"DES"}},
	} {
		if _, err := NewHandler(cfg); err == nil {
			t.Errorf("NewHandler(%s) = nil error", name)
		}
	}
}

func TestEnrollOwnClient(t *testing.T) {
	p := newPKI(t, true) // an ECDSA CA: only the RA needs RSA
	srv := server(t, testConfig(p, newBackend(p)), "")
	q := newRequester(t, 3, "device-1")
	for _, get := range []bool{false, true} {
		rep, certs := q.exchange(t, p, srv.URL, "devices", PKCSReq, "tx-enroll+/=", newCSR(t, q.key, "device-1", testChallenge), get)
		if rep.PKIStatus != Success || len(certs) != 2 {
			t.Fatalf("GET %t: CertRep status %d with %d certificates, want SUCCESS with 2", get, rep.PKIStatus, len(certs))
		}
		if err := p.verifies(certs[0]); err != nil || certs[0].Subject.CommonName != "device-1" || !certs[1].Equal(p.caCert) {
			t.Errorf("issued %v (verify: %v), then %v", certs[0].Subject, err, certs[1].Subject)
		}
	}
	for _, challenge := range []string{"wrong", ""} {
		rep, _ := q.exchange(t, p, srv.URL, "devices", PKCSReq, "tx-1", newCSR(t, q.key, "device-1", challenge), false)
		if rep.PKIStatus != Failure || rep.FailInfo != BadRequest {
			t.Errorf("challenge %q: CertRep %d/%d, want FAILURE badRequest", challenge, rep.PKIStatus, rep.FailInfo)
		}
	}
}

func TestPendingThenCertPoll(t *testing.T) {
	p := newPKI(t, false)
	b := newBackend(p)
	srv := server(t, testConfig(p, b), "")
	q := newRequester(t, 3, "device-2")
	csr := newCSR(t, q.key, "device-2", testChallenge)
	if rep, _ := q.exchange(t, p, srv.URL, "pending", PKCSReq, "tx-pending", csr, false); rep.PKIStatus != Pending {
		t.Fatalf("PKCSReq on the pending profile: status %d, want PENDING", rep.PKIStatus)
	}
	ias := derOf(func(b *cryptobyte.Builder) {
		b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
			b.AddBytes(p.caCert.RawSubject)
			b.AddBytes(mustCSR(t, csr).RawSubject)
		})
	})
	if rep, _ := q.exchange(t, p, srv.URL, "pending", CertPoll, "tx-pending", ias, true); rep.PKIStatus != Pending {
		t.Errorf("CertPoll before approval: status %d, want PENDING", rep.PKIStatus)
	}
	b.approve("tx-pending")
	if rep, _ := q.exchange(t, p, srv.URL, "pending", CertPoll, "tx-other", ias, true); rep.PKIStatus != Failure || rep.FailInfo != BadCertID {
		t.Errorf("CertPoll of an unknown transaction: %d/%d, want FAILURE badCertId", rep.PKIStatus, rep.FailInfo)
	}
	rep, certs := q.exchange(t, p, srv.URL, "pending", CertPoll, "tx-pending", ias, true)
	if rep.PKIStatus != Success || len(certs) == 0 || p.verifies(certs[0]) != nil || !q.key.PublicKey.Equal(certs[0].PublicKey) {
		t.Fatalf("CertPoll after approval: status %d, %d certificates", rep.PKIStatus, len(certs))
	}
	if _, polls := b.calls(); polls != 3 {
		t.Errorf("backend polled %d times, want 3", polls)
	}
}

func TestRenewalOwnClient(t *testing.T) {
	p := newPKI(t, false)
	b := newBackend(p)
	srv := server(t, testConfig(p, b), "")
	q := newRequester(t, 3, "device-3")
	old := b.issue(mustCSR(t, newCSR(t, q.key, "device-3", ""))).Cert
	renewer := requester{key: q.key, cert: old}
	newKey := rsaKey(t, 4)
	for _, c := range []struct {
		typ       int
		challenge string
	}{
		{RenewalReq, ""},         // a RenewalReq needs no challenge
		{PKCSReq, testChallenge}, // certmonger's rekey: a PKCSReq signed with the certificate it holds
	} {
		rep, certs := renewer.exchange(t, p, srv.URL, "devices", c.typ, "tx-renew", newCSR(t, newKey, "device-3", c.challenge), false)
		if rep.PKIStatus != Success || len(certs) == 0 || !newKey.PublicKey.Equal(certs[0].PublicKey) || !b.lastSignerCert().Equal(old) {
			t.Fatalf("type %d signed by the old certificate: status %d/%d, %d certificates", c.typ, rep.PKIStatus, rep.FailInfo, len(certs))
		}
	}
	// A self-signed "old certificate" is not one of ours: the backend refuses.
	if rep, _ := q.exchange(t, p, srv.URL, "devices", RenewalReq, "tx-renew-2", newCSR(t, newKey, "device-3", ""), false); rep.PKIStatus != Failure {
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
	p := newPKI(t, false)
	other := newPKI(t, false)
	b := newBackend(p)
	cfg := testConfig(p, b)
	cfg.Now = func() time.Time { return time.Now().AddDate(1, 0, 0) } // our own messages carry no signingTime
	srv := server(t, cfg, "")

	q := newRequester(t, 3, "device-4")
	goodCSR := newCSR(t, q.key, "device-4", testChallenge)
	_, good := q.message(t, PKCSReq, "tx-x", goodCSR, p.raCert)

	badCSR := bytes.Clone(goodCSR)
	badCSR[len(badCSR)-1] ^= 1
	wrongKey := requester{key: rsaKey(t, 4), cert: q.cert} // signs with a key that is not its certificate's

	msg := func(q requester, typ int, content []byte, ra *x509.Certificate) []byte {
		_, der := q.message(t, typ, "tx-x", content, ra)
		return der
	}
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
		"oversized DER":           {"POST", "/scep/devices", "PKIOperation", append([]byte{0x30}, make([]byte, MaxMessageSize)...), want{413, 0}},
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
		"CSR signature":           {"POST", "/scep/devices", "PKIOperation", msg(q, PKCSReq, badCSR, p.raCert), want{200, BadMessageCheck}},
		"CSR is not a CSR":        {"POST", "/scep/devices", "PKIOperation", msg(q, PKCSReq, []byte{0x30, 0}, p.raCert), want{200, BadRequest}},
		"signer key mismatch":     {"POST", "/scep/devices", "PKIOperation", msg(wrongKey, PKCSReq, goodCSR, p.raCert), want{200, BadMessageCheck}},
		"envelope for another RA": {"POST", "/scep/devices", "PKIOperation", msg(q, PKCSReq, goodCSR, other.raCert), want{200, BadMessageCheck}},
		"no envelope":             {"POST", "/scep/devices", "PKIOperation", msg(q, PKCSReq, nil, p.raCert), want{200, BadRequest}},
		"GetCRL":                  {"POST", "/scep/devices", "PKIOperation", msg(q, GetCRL, goodCSR, p.raCert), want{200, BadRequest}},
		"CertRep from a client":   {"POST", "/scep/devices", "PKIOperation", msg(q, CertRep, goodCSR, p.raCert), want{200, BadRequest}},
		"CertPoll of garbage":     {"POST", "/scep/devices", "PKIOperation", msg(q, CertPoll, []byte{0x30, 0}, p.raCert), want{200, BadRequest}},
		"CertPoll of a CSR":       {"POST", "/scep/devices", "PKIOperation", msg(q, CertPoll, goodCSR, p.raCert), want{200, BadRequest}},
		"RenewalReq not a CSR":    {"POST", "/scep/devices", "PKIOperation", msg(q, RenewalReq, []byte("x"), p.raCert), want{200, BadRequest}},
		"signingTime a year ago":  {"POST", "/scep/devices", "PKIOperation", readCaptured(t, "certmonger-01.der"), want{200, BadTime}},
	} {
		t.Run(name, func(t *testing.T) {
			resp, body := httpDo(t, c.method, srv.URL+c.path+"?operation="+c.query, c.body)
			if resp.StatusCode != c.want.code {
				t.Fatalf("status %d (%s), want %d", resp.StatusCode, body, c.want.code)
			}
			if c.want.code == http.StatusOK {
				rep, err := ParsePKIMessage(body)
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
	p := newPKI(t, false)
	b := newBackend(p)
	srv := server(t, testConfig(p, b), "")
	q := newRequester(t, 3, "device-5")
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
		req, der := q.message(t, PKCSReq, "tx-5", newCSR(t, q.key, "device-5", testChallenge), p.raCert)
		_, body := pkiOperation(t, srv.URL, "devices", der, false)
		if rep, _ := q.certRep(t, p, req, body); rep.PKIStatus != Failure || rep.FailInfo != BadRequest {
			t.Errorf("%s: CertRep %d/%d, want FAILURE badRequest", c.name, rep.PKIStatus, rep.FailInfo)
		}
		if bytes.Contains(body, []byte("10.1.2.3")) {
			t.Errorf("%s: the reply leaks the backend's error", c.name)
		}
	}
}
