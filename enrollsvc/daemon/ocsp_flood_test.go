package daemon_test

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"

	"golang.org/x/crypto/ocsp"

	"github.com/enrollment-appliance/aeappliance/config"
	"github.com/enrollment-appliance/aeappliance/enrollsvc"
	"github.com/enrollment-appliance/aeappliance/enrollsvc/daemon/daemontest"
	"github.com/enrollment-appliance/aeappliance/ldap/ldaptest"
	"github.com/enrollment-appliance/aeappliance/proto/certutil"
)

// A flood of 10,000 OCSP requests (a good and a revoked certificate, serials never issued, POST and
// GET, with nonces) makes no signature with the CA key in the HSM beyond the one pre-signed answer
// per certificate, and a revocation is answered as soon as the revocation call has returned.
func TestOCSPFloodMakesNoHSMSignatures(t *testing.T) {
	dc := ldaptest.StartDC(t)
	s := dc.Seed(t)
	many := &config.RateLimit{PerMinute: 1_000_000, Burst: 1_000_000} // the flood is about signatures, not the limiter
	srv := daemontest.Start(t, dc, s, daemontest.Options{HTTP: true, Configure: func(c *config.Config) {
		c.Limits = &config.Limits{OCSPPerSource: many}
	}})
	rt := srv.Runtime
	ctx := context.Background()
	good, err := rt.Service.IssueProfile(ctx, leafOrder(t, "good.example.test", enrollsvc.Meta{Requester: "test"}))
	if err != nil {
		t.Fatal(err)
	}
	bad, err := rt.Service.IssueProfile(ctx, leafOrder(t, "bad.example.test", enrollsvc.Meta{Requester: "test"}))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := rt.Service.Revoke(ctx, certutil.SerialString(bad.Certificate.SerialNumber), 1, "test"); err != nil {
		t.Fatal(err)
	}
	hc := &http.Client{}
	ask := func(serial *big.Int, get bool) *ocsp.Response {
		t.Helper()
		req, err := ocsp.CreateRequest(&x509.Certificate{SerialNumber: serial}, rt.CACert, nil)
		if err != nil {
			t.Fatal(err)
		}
		var resp *http.Response
		if get {
			resp, err = hc.Get(srv.HTTPBase + "/ocsp/" + url.PathEscape(base64.StdEncoding.EncodeToString(req)))
		} else {
			resp, err = hc.Post(srv.HTTPBase+"/ocsp", "application/ocsp-request", bytes.NewReader(req))
		}
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		r, err := ocsp.ParseResponseForCert(body, &x509.Certificate{SerialNumber: serial}, rt.CACert)
		if err != nil {
			return nil
		}
		return r
	}
	// Let the CRLs the revocation republishes be signed before counting.
	if _, err := rt.PublishCRL(ctx); err != nil {
		t.Fatal(err)
	}
	before := rt.Key.Signatures()
	for i := range 10000 {
		get := i%2 == 0
		switch i % 3 {
		case 0:
			if r := ask(good.Certificate.SerialNumber, get); r == nil || r.Status != ocsp.Good {
				t.Fatalf("request %d about the good certificate: %+v", i, r)
			}
		case 1:
			if r := ask(bad.Certificate.SerialNumber, get); r == nil || r.Status != ocsp.Revoked {
				t.Fatalf("request %d about the revoked certificate: %+v", i, r)
			}
		default:
			if r := ask(big.NewInt(int64(1_000_000+i)), get); r != nil {
				t.Fatalf("request %d about a serial never issued got a signed answer: %+v", i, r)
			}
		}
	}
	// One pre-signed answer per certificate; background work may add three: the monitor's health
	// check (every 30 s) one, and the republish the revocation scheduled, if it runs after the
	// PublishCRL above, two (the full CRL and the delta CRL).
	if n := rt.Key.Signatures() - before; n > 5 {
		t.Errorf("10,000 OCSP requests made %d HSM signatures, want at most 2 (+3 for background work)", n)
	}
	if _, err := rt.Service.Revoke(ctx, certutil.SerialString(good.Certificate.SerialNumber), 4, "test"); err != nil {
		t.Fatal(err)
	}
	if r := ask(good.Certificate.SerialNumber, true); r == nil || r.Status != ocsp.Revoked {
		t.Errorf("right after its revocation the certificate is answered %+v, want revoked", r)
	}
}

// BenchmarkOCSPOverHTTP: OCSP answers over the running service's plain-HTTP listener (GET, RFC
// 5019), from 32 clients on keep-alive connections, about 1,000 issued certificates (a tenth of
// them revoked) in the real store, their answers pre-signed once with the CA key in the HSM
// before the clock starts. Every answer is checked (good or revoked as the store says, for the
// serial asked); the signatures of every answer are verified before the clock and of a sample
// after it, not on the clock (verifying is the client's cost). It reports answers/s and the HSM
// signatures made while measuring (want 0).
func BenchmarkOCSPOverHTTP(b *testing.B) {
	dc := ldaptest.StartDC(b)
	s := dc.Seed(b)
	many := &config.RateLimit{PerMinute: 1_000_000_000, Burst: 1_000_000_000} // answers/s, not the limiter
	srv := daemontest.Start(b, dc, s, daemontest.Options{HTTP: true, Configure: func(c *config.Config) {
		c.Limits = &config.Limits{OCSPPerSource: many}
	}})
	rt := srv.Runtime
	ctx := context.Background()
	const certs = 1000
	type query struct {
		path    string
		revoked bool
		serial  *big.Int
	}
	queries := make([]query, certs)
	for i := range certs {
		res, err := rt.Service.IssueProfile(ctx, leafOrder(b, fmt.Sprintf("ocsp%d.example.test", i), enrollsvc.Meta{Requester: "bench"}))
		if err != nil {
			b.Fatal(err)
		}
		sn := res.Certificate.SerialNumber
		if i%10 == 0 {
			if _, err := rt.Service.Revoke(ctx, certutil.SerialString(sn), 1, "bench"); err != nil {
				b.Fatal(err)
			}
		}
		req, err := ocsp.CreateRequest(&x509.Certificate{SerialNumber: sn}, rt.CACert, nil)
		if err != nil {
			b.Fatal(err)
		}
		queries[i] = query{srv.HTTPBase + "/ocsp/" + url.PathEscape(base64.StdEncoding.EncodeToString(req)), i%10 == 0, sn}
	}
	tr := &http.Transport{MaxIdleConnsPerHost: 64}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr}
	ask := func(q query, verify bool) error {
		resp, err := hc.Get(q.path)
		if err != nil {
			return err
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			return err
		}
		issuer := rt.CACert
		if !verify {
			issuer = nil // the answers carry no certificate: nothing to verify with
		}
		r, err := ocsp.ParseResponse(body, issuer)
		if err != nil {
			return fmt.Errorf("HTTP %d: %w", resp.StatusCode, err)
		}
		if want := map[bool]int{false: ocsp.Good, true: ocsp.Revoked}[q.revoked]; r.Status != want || r.SerialNumber.Cmp(q.serial) != 0 {
			return fmt.Errorf("serial %x: status %d, want %d", q.serial, r.Status, want)
		}
		return nil
	}
	for _, q := range queries { // pre-sign every answer before the clock
		if err := ask(q, true); err != nil {
			b.Fatal(err)
		}
	}
	before := rt.Key.Signatures()
	var next atomic.Int64
	b.ResetTimer()
	var wg sync.WaitGroup
	for range 32 {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= b.N {
					return
				}
				if err := ask(queries[i%certs], false); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "answers/s")
	signed := rt.Key.Signatures() - before
	b.ReportMetric(float64(signed), "hsm-signatures")
	if signed > 1 { // the monitor's health check (every 30 s) may make one
		b.Errorf("answering pre-signed certificates made %d HSM signatures", signed)
	}
	for i := 0; i < certs; i += 97 {
		if err := ask(queries[i], true); err != nil {
			b.Fatal(err)
		}
	}
}
