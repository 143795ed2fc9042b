package scep_test

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unicode/utf16"

	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"

	"github.com/enrollment-appliance/aeappliance/proto/cms"
	"github.com/enrollment-appliance/aeappliance/proto/scep"
	"github.com/enrollment-appliance/aeappliance/proto/scep/sceptest"
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

// fixedPKI is the PKI in testdata that the captured client messages are encrypted to.
func fixedPKI(t testing.TB) *sceptest.PKI {
	return sceptest.FixedPKI(t, filepath.Join("testdata", "pki"), false)
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
		m, err := scep.ParsePKIMessage(readCaptured(t, filepath.Base(f)))
		if err != nil {
			t.Errorf("%s: %v", f, err)
			continue
		}
		seen[client][m.MessageType] = true
		if len(m.SenderNonce) != scep.NonceSize || m.TransactionID == "" || m.SigningTime.IsZero() || m.Signer == nil {
			t.Errorf("%s: header %+v", f, m)
		}
		content, err := m.Decrypt(p.RAEncryptCert, p.RAEncryptKey)
		if client == "scepclient" {
			if scep.FailInfoOf(err) != scep.BadAlg {
				t.Errorf("%s: Decrypt = %v, want badAlg for single DES", f, err)
			}
			content, err = m.DecryptWith(p.RAEncryptCert, p.RAEncryptKey, cms.DecryptOptions{AllowDES: true})
		}
		if err != nil {
			t.Errorf("%s: %v", f, err)
			continue
		}
		switch m.MessageType {
		case scep.PKCSReq, scep.RenewalReq:
			csr, challenge, err := scep.ParseCSR(content)
			if err != nil {
				t.Errorf("%s: %v", f, err)
				continue
			}
			// scepclient's RenewalReq reuses its first CSR, challenge included.
			if challenge != sceptest.Challenge && challenge != "wrong" {
				t.Errorf("%s: challenge %q", f, challenge)
			}
			if csr.Subject.CommonName == "" {
				t.Errorf("%s: CSR without a common name", f)
			}
		case scep.CertPoll:
			issuer, _, err := scep.ParseIssuerAndSubject(content)
			if err != nil || !bytes.Equal(issuer, p.CACert.RawSubject) {
				t.Errorf("%s: IssuerAndSubject: %v", f, err)
			}
		default:
			t.Errorf("%s: messageType %d", f, m.MessageType)
		}
	}
	for client, want := range map[string][]int{"scepclient": {scep.PKCSReq, scep.RenewalReq}, "certmonger": {scep.PKCSReq, scep.CertPoll}} {
		for _, typ := range want {
			if !seen[client][typ] {
				t.Errorf("no captured %s message of type %d", client, typ)
			}
		}
	}
}

func TestParseCSRChallenge(t *testing.T) {
	key := sceptest.RSAKey(t, 3)
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
		{"printable", [][]byte{sceptest.ChallengeAttribute(cbasn1.PrintableString, []byte("abc"))}, "abc"},
		{"UTF-8", [][]byte{sceptest.ChallengeAttribute(cbasn1.UTF8String, []byte("pässwörd"))}, "pässwörd"},
		{"BMP", [][]byte{sceptest.ChallengeAttribute(cbasn1.Tag(30), bmp("pässwörd"))}, "pässwörd"},
		{"odd BMP", [][]byte{sceptest.ChallengeAttribute(cbasn1.Tag(30), []byte{0, 'a', 0})}, "!"},
		{"empty", [][]byte{sceptest.ChallengeAttribute(cbasn1.PrintableString, nil)}, "!"},
		{"too long", [][]byte{sceptest.ChallengeAttribute(cbasn1.UTF8String, bytes.Repeat([]byte("x"), 256))}, "!"},
		{"invalid UTF-8", [][]byte{sceptest.ChallengeAttribute(cbasn1.UTF8String, []byte{0xff})}, "!"},
		{"INTEGER", [][]byte{sceptest.ChallengeAttribute(cbasn1.INTEGER, []byte{1})}, "!"},
		{"twice", [][]byte{sceptest.ChallengeAttribute(cbasn1.PrintableString, []byte("a")), sceptest.ChallengeAttribute(cbasn1.PrintableString, []byte("b"))}, "!"},
	} {
		_, got, err := scep.ParseCSR(sceptest.NewCSRWithAttributes(t, key, "x", c.attrs...))
		if err != nil {
			got = "!"
		}
		if got != c.want {
			t.Errorf("ParseCSR(%s) = %q, %v; want %q", c.name, got, err, c.want)
		}
	}
}

func TestNewCertRepRefuses(t *testing.T) {
	p := sceptest.NewPKI(t, false)
	req := &scep.PKIMessage{MessageType: scep.PKCSReq, TransactionID: "x", SenderNonce: make([]byte, scep.NonceSize)}
	for _, res := range []scep.Result{{Status: scep.Success}, {Status: 1}, {Status: scep.Failure, FailInfo: 5}, {Status: scep.Failure, FailInfo: -1}} {
		if _, err := scep.NewCertRep(req, res, p.RASignCert, p.RASignKey, p.CACert); err == nil {
			t.Errorf("NewCertRep(%+v) = nil error", res)
		}
	}
}

// TestParsePKIMessageTruncated cuts a real message at every length: each is refused, none panics.
func TestParsePKIMessageTruncated(t *testing.T) {
	der := readCaptured(t, "certmonger-01.der")
	for n := range len(der) {
		if _, err := scep.ParsePKIMessage(der[:n]); err == nil {
			t.Fatalf("ParsePKIMessage(first %d bytes) = nil error", n)
		}
	}
}
