package scep

import (
	"bytes"
	"crypto/x509"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf16"

	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"

	"github.com/enrollment-appliance/aeappliance/enrollsvc/scep/sceptest"
)

// readCaptured returns a client message saved by the interop tests with -capture.
func readCaptured(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "captured", name))
	if err != nil {
		t.Fatalf("%v (go test -run 'Scepclient|Certmonger' ./enrollsvc/scep -args -capture writes it)", err)
	}
	return b
}

func capturedFiles(t testing.TB) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join("testdata", "captured", "*.der"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no captured messages in testdata/captured: %v", err)
	}
	return files
}

// TestCapturedRequests reads every message the real clients sent (testdata/captured, encrypted to the RA of
// testdata/pki): scepclient's PKCSReq and RenewalReq (SHA-1, single DES, a constructed encryptedContent),
// certmonger's PKCSReq and CertPoll (SHA-256, AES-256).
func TestCapturedRequests(t *testing.T) {
	p := fixedPKI(t)
	seen := map[string]map[int]bool{"scepclient": {}, "certmonger": {}}
	for _, f := range capturedFiles(t) {
		client, _, _ := strings.Cut(filepath.Base(f), "-")
		m, err := ParsePKIMessage(readCaptured(t, filepath.Base(f)))
		if err != nil {
			t.Errorf("%s: %v", f, err)
			continue
		}
		seen[client][m.MessageType] = true
		if len(m.SenderNonce) != nonceSize || m.TransactionID == "" || m.SigningTime.IsZero() || m.Signer == nil {
			t.Errorf("%s: header %+v", f, m)
		}
		content, err := m.Decrypt(p.raCert, p.raKey)
		if client == "scepclient" {
			if FailInfoOf(err) != BadAlg {
				t.Errorf("%s: Decrypt = %v, want badAlg for single DES", f, err)
			}
			content, err = m.decrypt(p.raCert, p.raKey, true)
		}
		if err != nil {
			t.Errorf("%s: %v", f, err)
			continue
		}
		switch m.MessageType {
		case PKCSReq, RenewalReq:
			csr, challenge, err := parseCSR(content)
			if err != nil {
				t.Errorf("%s: %v", f, err)
				continue
			}
			// scepclient's RenewalReq reuses its first CSR, challenge included.
			if challenge != testChallenge && challenge != "wrong" {
				t.Errorf("%s: challenge %q", f, challenge)
			}
			if csr.Subject.CommonName == "" {
				t.Errorf("%s: CSR without a common name", f)
			}
		case CertPoll:
			issuer, _, err := parseIssuerAndSubject(content)
			if err != nil || !bytes.Equal(issuer, p.caCert.RawSubject) {
				t.Errorf("%s: IssuerAndSubject: %v", f, err)
			}
		default:
			t.Errorf("%s: messageType %d", f, m.MessageType)
		}
	}
	for client, want := range map[string][]int{"scepclient": {PKCSReq, RenewalReq}, "certmonger": {PKCSReq, CertPoll}} {
		for _, typ := range want {
			if !seen[client][typ] {
				t.Errorf("no captured %s message of type %d", client, typ)
			}
		}
	}
}

// TestReplayCaptured sends the captured messages through the handler, at the time they were signed.
func TestReplayCaptured(t *testing.T) {
	p := fixedPKI(t)
	b := newBackend(p)
	var now atomic.Int64
	cfg := testConfig(p, b)
	cfg.AllowDES = true
	cfg.Now = func() time.Time { return time.Unix(now.Load(), 0) }
	srv := server(t, cfg, "")
	for _, f := range capturedFiles(t) {
		der := readCaptured(t, filepath.Base(f))
		m, err := ParsePKIMessage(der)
		if err != nil {
			t.Fatal(err)
		}
		now.Store(m.SigningTime.Add(time.Minute).Unix())
		code, body := pkiOperation(t, srv.URL, "devices", der, strings.HasPrefix(filepath.Base(f), "certmonger"))
		if code != http.StatusOK {
			t.Fatalf("%s: %d %s", f, code, body)
		}
		rep, err := ParsePKIMessage(body)
		if err != nil || rep.TransactionID != m.TransactionID || !bytes.Equal(rep.RecipientNonce, m.SenderNonce) {
			t.Fatalf("%s: CertRep %v", f, err)
		}
		// The backend decides: a known challenge or one of our certificates issues; an unknown CertPoll fails.
		if rep.PKIStatus != Success && (rep.PKIStatus != Failure || rep.FailInfo != BadRequest && rep.FailInfo != BadCertID) {
			t.Errorf("%s: CertRep %d/%d", f, rep.PKIStatus, rep.FailInfo)
		}
	}
}

// TestOpenSSLInterop checks the CMS both ways with OpenSSL, what certmonger is built on: OpenSSL verifies
// and decrypts a CertRep, and envelopes OpenSSL writes with 3DES and AES-128/192 are read; RSA-OAEP key
// transport is refused as badAlg.
func TestOpenSSLInterop(t *testing.T) {
	openssl := sceptest.NeedTool(t, "openssl")
	p := newPKI(t, false)
	b := newBackend(p)
	srv := server(t, testConfig(p, b), "")
	dir := t.TempDir()
	q := requester{key: rsaKey(t, 3)}
	q.cert = selfSigned(t, q.key, "openssl-device")
	raPEM := sceptest.WritePEM(t, dir, "ra.pem", "CERTIFICATE", p.raCert.Raw)
	caPEM := sceptest.WritePEM(t, dir, "ca.pem", "CERTIFICATE", p.caCert.Raw)
	csr := newCSR(t, q.key, "openssl-device", testChallenge)
	csrFile := filepath.Join(dir, "csr.der")
	if err := os.WriteFile(csrFile, csr, 0o600); err != nil {
		t.Fatal(err)
	}
	run := func(args ...string) {
		t.Helper()
		if out, err := exec.Command(openssl, args...).CombinedOutput(); err != nil {
			t.Fatalf("openssl %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	for _, c := range []struct {
		cipher   string
		keyopt   []string
		failInfo int // -1: issued
	}{
		{"-des3", nil, -1},
		{"-aes128", nil, -1},
		{"-aes192", nil, -1},
		{"-aes256", []string{"-keyopt", "rsa_padding_mode:oaep"}, BadAlg},
	} {
		env := filepath.Join(dir, "env.der")
		run(append([]string{"cms", "-encrypt", "-binary", "-in", csrFile, "-outform", "DER", "-out", env, c.cipher, "-recip", raPEM}, c.keyopt...)...)
		envDER, err := os.ReadFile(env)
		if err != nil {
			t.Fatal(err)
		}
		req, der := q.signed(t, PKCSReq, "tx-openssl", envDER)
		_, body := pkiOperation(t, srv.URL, "devices", der, false)
		rep, certs := q.certRep(t, p, req, body)
		if c.failInfo >= 0 {
			if rep.PKIStatus != Failure || rep.FailInfo != c.failInfo {
				t.Errorf("%s %v: CertRep %d/%d, want FAILURE/%d", c.cipher, c.keyopt, rep.PKIStatus, rep.FailInfo, c.failInfo)
			}
			continue
		}
		if rep.PKIStatus != Success || len(certs) == 0 {
			t.Fatalf("%s: CertRep %d/%d", c.cipher, rep.PKIStatus, rep.FailInfo)
		}

		// OpenSSL reads our CertRep: the RA's signature chains to the CA, and the envelope opens with the
		// requester's key.
		repFile, envOut, certsOut := filepath.Join(dir, "rep.der"), filepath.Join(dir, "envout.der"), filepath.Join(dir, "certs.der")
		if err := os.WriteFile(repFile, body, 0o600); err != nil {
			t.Fatal(err)
		}
		run("cms", "-verify", "-binary", "-inform", "DER", "-in", repFile, "-CAfile", caPEM, "-purpose", "any", "-out", envOut)
		run("cms", "-decrypt", "-binary", "-inform", "DER", "-in", envOut, "-recip", sceptest.WritePEM(t, dir, "q.pem", "CERTIFICATE", q.cert.Raw),
			"-inkey", sceptest.WritePEM(t, dir, "q.key", "RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(q.key)), "-out", certsOut)
		decrypted, err := os.ReadFile(certsOut)
		if err != nil {
			t.Fatal(err)
		}
		if got := certsOnly(t, decrypted); !got[0].Equal(certs[0]) {
			t.Errorf("OpenSSL decrypted another certificate")
		}
	}
}

func TestParseCSRChallenge(t *testing.T) {
	key := rsaKey(t, 3)
	bmp := func(s string) []byte {
		var b []byte
		for _, u := range utf16.Encode([]rune(s)) {
			b = append(b, byte(u>>8), byte(u))
		}
		return b
	}
	for _, c := range []struct {
		name  string
		attrs [][]byte
		want  string // "!" for an error
	}{
		{"none", nil, ""},
		{"printable", [][]byte{challengeAttribute(cbasn1.PrintableString, []byte("abc"))}, "abc"},
		{"UTF-8", [][]byte{challengeAttribute(cbasn1.UTF8String, []byte("pässwörd"))}, "pässwörd"},
		{"BMP", [][]byte{challengeAttribute(cbasn1.Tag(30), bmp("pässwörd"))}, "pässwörd"},
		{"odd BMP", [][]byte{challengeAttribute(cbasn1.Tag(30), []byte{0, 'a', 0})}, "!"},
		{"empty", [][]byte{challengeAttribute(cbasn1.PrintableString, nil)}, "!"},
		{"too long", [][]byte{challengeAttribute(cbasn1.UTF8String, bytes.Repeat([]byte("x"), 256))}, "!"},
		{"invalid UTF-8", [][]byte{challengeAttribute(cbasn1.UTF8String, []byte{0xff})}, "!"},
		{"INTEGER", [][]byte{challengeAttribute(cbasn1.INTEGER, []byte{1})}, "!"},
		{"twice", [][]byte{challengeAttribute(cbasn1.PrintableString, []byte("a")), challengeAttribute(cbasn1.PrintableString, []byte("b"))}, "!"},
	} {
		_, got, err := parseCSR(newCSRWithAttributes(t, key, "x", c.attrs...))
		if err != nil {
			got = "!"
		}
		if got != c.want {
			t.Errorf("parseCSR(%s) = %q, %v; want %q", c.name, got, err, c.want)
		}
	}
}

func TestNewCertRepRefuses(t *testing.T) {
	p := newPKI(t, false)
	req := &PKIMessage{MessageType: PKCSReq, TransactionID: "x", SenderNonce: make([]byte, nonceSize)}
	for _, res := range []Result{{Status: Success}, {Status: 1}, {Status: Failure, FailInfo: 5}, {Status: Failure, FailInfo: -1}} {
		if _, err := NewCertRep(req, res, p.raCert, p.raKey, p.caCert); err == nil {
			t.Errorf("NewCertRep(%+v) = nil error", res)
		}
	}
}

// TestParsePKIMessageTruncated cuts a real message at every length: each is refused, none panics.
func TestParsePKIMessageTruncated(t *testing.T) {
	der := readCaptured(t, "certmonger-01.der")
	for n := range len(der) {
		if _, err := ParsePKIMessage(der[:n]); err == nil {
			t.Fatalf("ParsePKIMessage(first %d bytes) = nil error", n)
		}
	}
}
