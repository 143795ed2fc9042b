package main

import (
	"context"
	"encoding/pem"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/enrollment-appliance/aeappliance/apiclient"
	"github.com/enrollment-appliance/aeappliance/internal/freeport"
)

// freePort returns a loopback port nobody listens on (for addresses that must be known before
// the service starts, as the URLs written into certificates are).
// It comes from outside the kernel's ephemeral range (freeport), where another test's listener on
// port 0 cannot take it before the service binds it.
func freePort(t *testing.T) string {
	t.Helper()
	p, err := freeport.Port()
	if err != nil {
		t.Fatal(err)
	}
	return strconv.Itoa(p)
}

// httpGet fetches a URL of the plain-HTTP listener.
func httpGet(t *testing.T, url string) []byte {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s = %d %s", url, resp.StatusCode, b)
	}
	return b
}

// Revocation through the real binaries: aectl revoke, then openssl ocsp against the OCSP
// responder and openssl verify -crl_check against the CRL at the CDP URL written into the
// certificates, both served by enrollsvc over plain HTTP and signed by the CA key in SoftHSM.
func TestRevocationOCSPAndCRL(t *testing.T) {
	port := freePort(t)
	base := "http://127.0.0.1:" + port
	dir := initDir(t, "--http-url", base, "--http-listen", "127.0.0.1:"+port)
	startServe(t, dir)
	tmp := t.TempDir()
	caFile := filepath.Join(dir, "ca.pem")

	issueTo := func(name string) (serial, path string) {
		csr := filepath.Join(tmp, name+".csr")
		os.WriteFile(csr, []byte(newCSR(t, name+".example.test")), 0o600)
		var res apiclient.IssueResponse
		aectlJSON(t, dir, &res, "issue", "--csr", csr, "--profile", "server")
		path = filepath.Join(tmp, name+".pem")
		os.WriteFile(path, []byte(res.Certificate), 0o600)
		return res.Serial, path
	}
	badSerial, bad := issueTo("bad")
	goodSerial, good := issueTo("good")
	text, err := exec.Command("openssl", "x509", "-in", bad, "-noout", "-text").CombinedOutput()
	if err != nil || !strings.Contains(string(text), base+"/crl/E2E-Root-CA.crl") || !strings.Contains(string(text), "OCSP - URI:"+base+"/ocsp") ||
		!strings.Contains(string(text), "CA Issuers - URI:"+base+"/aia/E2E-Root-CA.crt") {
		t.Fatalf("issued certificate lacks the CDP/AIA URLs of %s: %v\n%s", base, err, text)
	}

	var revoked apiclient.Certificate
	aectlJSON(t, dir, &revoked, "revoke", badSerial, "--reason", "keyCompromise")
	if revoked.Status != "revoked" || revoked.RevocationReason != 1 {
		t.Errorf("aectl revoke = %+v, want revoked for keyCompromise", revoked)
	}
	if _, errOut, err := runBin(t, "aectl", "--data", dir, "revoke", badSerial, "--reason", "superseded"); err == nil || !strings.Contains(errOut, "already revoked") {
		t.Errorf("revoking twice: %v %s, want a conflict", err, errOut)
	}
	if _, errOut, err := runBin(t, "aectl", "--data", dir, "revoke", goodSerial, "--reason", "certificateHold"); err == nil || !strings.Contains(errOut, "certificateHold is not offered") {
		t.Errorf("revoking on hold: %v %s, want a clear refusal", err, errOut)
	}
	if _, _, err := runBin(t, "aectl", "--data", dir, "revoke", "1234abcd", "--reason", "superseded"); err == nil {
		t.Error("revoking an unknown serial succeeded")
	}

	ocsp := func(cert string) string {
		out, err := exec.Command("openssl", "ocsp", "-issuer", caFile, "-cert", cert, "-url", base+"/ocsp",
			"-CAfile", caFile, "-resp_text").CombinedOutput()
		if err != nil {
			t.Fatalf("openssl ocsp %s: %v\n%s", cert, err, out)
		}
		return string(out)
	}
	if out := ocsp(bad); !strings.Contains(out, "Response verify OK") || !strings.Contains(out, bad+": revoked") ||
		!strings.Contains(out, "Reason: keyCompromise") {
		t.Errorf("openssl ocsp of the revoked certificate:\n%s", out)
	}
	if out := ocsp(good); !strings.Contains(out, "Response verify OK") || !strings.Contains(out, good+": good") {
		t.Errorf("openssl ocsp of the good certificate:\n%s", out)
	}

	var info apiclient.CRLInfo
	aectlJSON(t, dir, &info, "crl", "publish")
	if info.Entries != 1 || info.Number <= 0 || info.DeltaNumber <= info.Number {
		t.Errorf("aectl crl publish = %+v, want one entry and growing numbers", info)
	}
	var again apiclient.CRLInfo
	aectlJSON(t, dir, &again, "crl", "publish")
	if again.Number <= info.DeltaNumber {
		t.Errorf("CRL number %d after %d: numbers must grow", again.Number, info.DeltaNumber)
	}
	crlPEM := filepath.Join(tmp, "crl.pem")
	der := httpGet(t, base+"/crl/E2E-Root-CA.crl")
	os.WriteFile(crlPEM, pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: der}), 0o600)
	verify := func(cert string) (string, error) {
		out, err := exec.Command("openssl", "verify", "-crl_check", "-CAfile", caFile, "-CRLfile", crlPEM, cert).CombinedOutput()
		return string(out), err
	}
	if out, err := verify(bad); err == nil || !strings.Contains(out, "certificate revoked") {
		t.Errorf("openssl verify -crl_check of the revoked certificate: %v\n%s", err, out)
	}
	if out, err := verify(good); err != nil {
		t.Errorf("openssl verify -crl_check of the good certificate: %v\n%s", err, out)
	}
	if delta := httpGet(t, base+"/crl/E2E-Root-CA+.crl"); len(delta) == 0 {
		t.Error("no delta CRL")
	}
	if aia := httpGet(t, base+"/aia/E2E-Root-CA.crt"); !strings.Contains(string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: aia})), "BEGIN") {
		t.Error("no CA certificate at the AIA URL")
	}

	var evs []apiclient.Event
	aectlJSON(t, dir, &evs, "events", "--id", "2200")
	if len(evs) != 1 || evs[0].Fields["serial"] != badSerial || evs[0].Fields["reason"] != "keyCompromise" {
		t.Errorf("revocation events = %+v, want one naming %s and keyCompromise", evs, badSerial)
	}
	cl, err := apiclient.DialDataDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if c, err := cl.Certificate(context.Background(), goodSerial); err != nil || c.Status != "valid" {
		t.Errorf("the good certificate = %+v, %v; want valid", c, err)
	}
}
