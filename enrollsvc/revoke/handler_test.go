package revoke

import (
	"bytes"
	"context"
	"crypto"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ocsp"
)

// TestOCSPOpenSSL asks the real handler with `openssl ocsp`, which posts the request and verifies
// the answer (signature, signer, CertID, nonce, times) against the CA file.
func TestOCSPOpenSSL(t *testing.T) {
	for _, kind := range []string{"p256", "rsa"} {
		t.Run(kind, func(t *testing.T) {
			f := newOCSPFixture(t, kind)
			dir := t.TempDir()
			caPEM := writePEM(t, dir, "ca.pem", "CERTIFICATE", f.ca.Raw)
			leafKey := keyFor(t, "p256")
			leaf := func(serial *big.Int) string {
				return writePEM(t, dir, serial.Text(16)+".pem", "CERTIFICATE", newLeaf(t, f.ca, f.key, serial, leafKey.Public(), false).Raw)
			}
			// openssl checks thisUpdate and nextUpdate against its own clock.
			r, err := NewResponder(ResponderOptions{CA: f.ca, Signer: f.key, Source: f.src})
			if err != nil {
				t.Fatal(err)
			}
			dkey := keyFor(t, "p256")
			delegated, err := NewResponder(ResponderOptions{CA: f.ca, Signer: dkey, Source: f.src,
				Cert: newLeaf(t, f.ca, f.key, big.NewInt(0xd0), dkey.Public(), true)})
			if err != nil {
				t.Fatal(err)
			}
			srv := httptest.NewServer(Handler(nil, r, "OCSP Test CA"))
			defer srv.Close()
			dsrv := httptest.NewServer(Handler(nil, delegated, "OCSP Test CA"))
			defer dsrv.Close()
			otherKey := keyFor(t, "p256")
			other := newCA(t, otherKey, "Another CA")
			otherPEM := writePEM(t, dir, "other.pem", "CERTIFICATE", other.Raw)
			otherLeaf := writePEM(t, dir, "otherleaf.pem", "CERTIFICATE", newLeaf(t, other, otherKey, goodSerial, leafKey.Public(), false).Raw)

			for _, tc := range []struct {
				name, url, issuer, cert string
				nonce                   bool
				want                    []string
			}{
				{"good", srv.URL + "/ocsp", caPEM, leaf(goodSerial), false, []string{": good", "Response verify OK"}},
				// Pre-signed answers carry no nonce (RFC 5019 2.1): openssl warns and accepts them.
				{"good with nonce", srv.URL + "/ocsp", caPEM, leaf(goodSerial), true, []string{": good", "Response verify OK", "WARNING: no nonce in response"}},
				{"revoked with nonce", srv.URL + "/ocsp", caPEM, leaf(revokedSerial), true,
					[]string{": revoked", "Reason: keyCompromise", "Revocation Time: " + revokedAt.Format("Jan _2 15:04:05 2006 GMT"), "Response verify OK"}},
				// RFC 5019 2.2.3: no pre-produced response.
				{"never issued", srv.URL + "/ocsp", caPEM, leaf(big.NewInt(0xabc)), false, []string{"Responder Error: unauthorized (6)"}},
				{"another CA", srv.URL + "/ocsp", otherPEM, otherLeaf, true, []string{"Responder Error: unauthorized (6)"}},
				{"delegated responder", dsrv.URL + "/ocsp", caPEM, leaf(revokedSerial), true,
					[]string{": revoked", "Response verify OK", "OCSP No Check", "OCSP Signing"}},
			} {
				args := []string{"ocsp", "-issuer", tc.issuer, "-cert", tc.cert, "-url", tc.url, "-CAfile", caPEM, "-resp_text"}
				if tc.nonce {
					args = append(args, "-nonce")
				} else {
					args = append(args, "-no_nonce")
				}
				out, _ := openssl(t, args...)
				wantIn(t, tc.name+": openssl ocsp", out, tc.want...)
				for _, bad := range []string{"Nonce Verify error", "Response Verify Failure", "OCSP Nonce:"} {
					if strings.Contains(out, bad) {
						t.Errorf("%s: openssl ocsp says %q:\n%s", tc.name, bad, out)
					}
				}
			}
		})
	}
}

func get(t *testing.T, u string) (*http.Response, []byte) {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, body
}

func TestOCSPGet(t *testing.T) {
	f := newOCSPFixture(t, "p256")
	srv := httptest.NewServer(Handler(nil, f.r, "OCSP Test CA"))
	defer srv.Close()
	// A serial whose request in base64 holds "//" and '+', which ServeMux would mangle and
	// clients send escaped or not.
	request := func(serial *big.Int) []byte {
		return must(ocsp.CreateRequest(&x509.Certificate{SerialNumber: serial}, f.ca, &ocsp.RequestOptions{Hash: crypto.SHA256}))
	}
	tricky := new(big.Int).SetBytes([]byte{0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0}) // 0xff octets make "//"
	for i := 0; ; i++ {
		if b := base64.StdEncoding.EncodeToString(request(tricky)); strings.Contains(b, "//") && strings.Contains(b, "+") {
			break
		}
		if i == 1<<16 {
			t.Fatal("found no serial whose request holds both // and +")
		}
		tricky.Add(tricky, big.NewInt(1))
	}
	for _, serial := range []*big.Int{revokedSerial, tricky} {
		f.src.revoke(Entry{Serial: serial, RevokedAt: revokedAt, Reason: 1}, revokedAt)
		b64 := base64.StdEncoding.EncodeToString(request(serial))
		// Escaped, as sent, without padding, and with '+' turned into a space on the way.
		for _, path := range []string{url.PathEscape(b64), b64, strings.TrimRight(b64, "="), strings.ReplaceAll(b64, "+", "%20")} {
			resp, body := get(t, srv.URL+"/ocsp/"+path)
			if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/ocsp-response" {
				t.Fatalf("GET /ocsp/%s = %s %q", path, resp.Status, resp.Header.Get("Content-Type"))
			}
			r, err := ocsp.ParseResponse(body, f.ca)
			if err != nil || r.Status != ocsp.Revoked || r.SerialNumber.Cmp(serial) != 0 {
				t.Fatalf("GET /ocsp/%s: %v, want revoked %x", path, err, serial)
			}
			if got := resp.Header.Get("Cache-Control"); got != "max-age=3600, public, no-transform, must-revalidate" {
				t.Errorf("Cache-Control = %q, want max-age=3600 (to nextUpdate)", got)
			}
			if got, want := resp.Header.Get("Expires"), epoch.Add(time.Hour).Format(http.TimeFormat); got != want {
				t.Errorf("Expires = %q, want %q", got, want)
			}
		}
	}
	resp, body := get(t, srv.URL+"/ocsp/not*base64")
	var re ocsp.ResponseError
	if _, err := ocsp.ParseResponse(body, f.ca); resp.StatusCode != http.StatusOK || !errors.As(err, &re) || re.Status != ocsp.Malformed ||
		resp.Header.Get("Cache-Control") != "no-store" {
		t.Errorf("GET of bad base64 = %s %v cache %q, want 200 malformedRequest no-store", resp.Status, err, resp.Header.Get("Cache-Control"))
	}
}

func TestOCSPHTTPErrors(t *testing.T) {
	f := newOCSPFixture(t, "p256")
	srv := httptest.NewServer(Handler(nil, f.r, "OCSP Test CA"))
	defer srv.Close()
	post := func(body io.Reader, size int64) (*http.Response, []byte) {
		req, err := http.NewRequest(http.MethodPost, srv.URL+"/ocsp", body)
		if err != nil {
			t.Fatal(err)
		}
		req.ContentLength = size // -1: chunked, no length announced
		req.Header.Set("Content-Type", "application/ocsp-request")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, b
	}
	resp, body := post(strings.NewReader("garbage"), 7)
	var re ocsp.ResponseError
	if _, err := ocsp.ParseResponse(body, f.ca); resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/ocsp-response" ||
		!errors.As(err, &re) || re.Status != ocsp.Malformed {
		t.Errorf("POST garbage = %s %q %v, want 200 application/ocsp-response malformedRequest", resp.Status, resp.Header.Get("Content-Type"), err)
	}
	big := bytes.Repeat([]byte{0x30}, maxOCSPRequest+1)
	if resp, _ := post(bytes.NewReader(big), int64(len(big))); resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Errorf("POST of %d octets = %s, want 413", len(big), resp.Status)
	}
	if resp, _ := post(io.MultiReader(bytes.NewReader(big)), -1); resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Errorf("chunked POST of %d octets = %s, want 413", len(big), resp.Status)
	}
	good := must(ocsp.CreateRequest(&x509.Certificate{SerialNumber: goodSerial}, f.ca, nil))
	if resp, body := post(bytes.NewReader(good), -1); resp.StatusCode != http.StatusOK {
		t.Errorf("chunked POST of a good request = %s", resp.Status)
	} else if r, err := ocsp.ParseResponse(body, f.ca); err != nil || r.Status != ocsp.Good {
		t.Errorf("chunked POST of a good request: %v", err)
	}
	for _, tc := range []struct {
		method, path string
		want         int
	}{
		{http.MethodGet, "/ocsp", http.StatusMethodNotAllowed},
		{http.MethodPut, "/ocsp", http.StatusMethodNotAllowed},
		{http.MethodPost, "/ocsp/abc", http.StatusMethodNotAllowed},
		{http.MethodGet, "/crl/OCSP-Test-CA.crl", http.StatusNotFound}, // no Publisher
		{http.MethodGet, "/aia/OCSP-Test-CA.crt", http.StatusOK},
		{http.MethodGet, "/elsewhere", http.StatusNotFound},
	} {
		req, _ := http.NewRequest(tc.method, srv.URL+tc.path, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.want {
			t.Errorf("%s %s = %s, want %d", tc.method, tc.path, resp.Status, tc.want)
		}
	}
}

func TestHandlerCRL(t *testing.T) {
	f := newCRLFixture(t, "p256")
	clock := &fakeClock{t: epoch}
	p, err := NewPublisher(f.src, &memNumbers{}, PublisherOptions{CA: f.ca, Signer: f.key, Now: clock.Now}, quiet)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(Handler(p, nil, "Revoke Test CA p256"))
	defer srv.Close()
	if resp, _ := get(t, srv.URL+"/crl/Revoke-Test-CA-p256.crl"); resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("GET before publishing = %s, want 503", resp.Status)
	}
	if _, _, err := p.Publish(context.Background()); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		path, ctype string
		want        []byte
	}{
		{"/crl/Revoke-Test-CA-p256.crl", "application/pkix-crl", p.Full().DER},
		{"/crl/Revoke-Test-CA-p256+.crl", "application/pkix-crl", p.Delta().DER},
		{"/crl/Revoke-Test-CA-p256%2B.crl", "application/pkix-crl", p.Delta().DER},
		{"/aia/Revoke-Test-CA-p256.crt", "application/pkix-cert", f.ca.Raw},
	} {
		resp, body := get(t, srv.URL+tc.path)
		if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != tc.ctype || !bytes.Equal(body, tc.want) {
			t.Errorf("GET %s = %s %q %d octets, want 200 %q %d octets", tc.path, resp.Status, resp.Header.Get("Content-Type"), len(body), tc.ctype, len(tc.want))
		}
	}
	resp, _ := get(t, srv.URL+"/crl/Revoke-Test-CA-p256.crl")
	if got := resp.Header.Get("Cache-Control"); got != "public, max-age=3600" {
		t.Errorf("CRL Cache-Control = %q, want public, max-age=3600", got)
	}
	if got, want := resp.Header.Get("Last-Modified"), epoch.Format(http.TimeFormat); got != want {
		t.Errorf("CRL Last-Modified = %q, want %q", got, want)
	}
	req, _ := http.NewRequest(http.MethodGet, srv.URL+"/crl/Revoke-Test-CA-p256.crl", nil)
	req.Header.Set("If-None-Match", resp.Header.Get("ETag"))
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != http.StatusNotModified {
		t.Errorf("conditional GET = %v %v, want 304", resp.Status, err)
	}
	for _, path := range []string{"/crl/Other.crl", "/ocsp", "/crl/Revoke-Test-CA-p256.crl/x"} {
		if resp, _ := get(t, srv.URL+path); resp.StatusCode != http.StatusNotFound {
			t.Errorf("GET %s = %s, want 404", path, resp.Status)
		}
	}
}

func TestFileName(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"Development Root CA", "Development-Root-CA"},
		{"  Corp / Issuing CA #2 ", "Corp-Issuing-CA-2"},
		{"a+b.c_d", "a-b-c_d"},
		{"Zürich CA", "Z-rich-CA"},
		{"", "ca"},
		{"../..", "ca"},
	} {
		if got := FileName(tc.in); got != tc.want {
			t.Errorf("FileName(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}
