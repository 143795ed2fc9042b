package daemon_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/enrollment-appliance/aeappliance/enrollsvc"
	"github.com/enrollment-appliance/aeappliance/enrollsvc/daemon/daemontest"
	"github.com/enrollment-appliance/aeappliance/ldap/ldaptest"
	"github.com/enrollment-appliance/aeappliance/proto/scep"
	"github.com/enrollment-appliance/aeappliance/proto/scep/sceptest"
)

// BenchmarkSCEP: SCEP PKCSReq over HTTP through the running service (the RA's decryption and the
// reply's signature in the HSM, CMS, the directory's policy for the profile's template and
// account, the gate with lint, the durable commit, the audit trail) from N concurrent clients,
// each request from a fresh RSA-2048 key made, with its CSR and its AES-256 envelope, before the
// clock starts. Run it with a fixed count (make bench: -benchtime 256x); every answer must be
// SUCCESS, and after the clock a sample of the certificates is decrypted and checked against the
// request's key.
func BenchmarkSCEP(b *testing.B) {
	dc := ldaptest.StartDC(b)
	s := dc.Seed(b)
	srv := daemontest.Start(b, dc, s, daemontest.Options{HTTP: true})
	ctx := context.Background()
	const challenge = "bench static challenge"
	if _, err := srv.Runtime.Service.AddSCEPProfile(ctx, enrollsvc.SCEPProfileSpec{Name: "bench", Template: "SuppliesSubject",
		Account: "dave", StaticChallenge: challenge}, "bench"); err != nil {
		b.Fatal(err)
	}
	base := srv.HTTPBase + "/scep/bench"
	resp, err := http.Get(base + "?operation=GetCACert")
	if err != nil {
		b.Fatal(err)
	}
	p7, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var ra *x509.Certificate
	for _, c := range sceptest.CertsOnly(b, p7) {
		if c.KeyUsage&x509.KeyUsageKeyEncipherment != 0 {
			ra = c
		}
	}
	if ra == nil {
		b.Fatal("GetCACert names no RA encryption certificate")
	}
	for _, clients := range []int{8, 32} {
		b.Run(fmt.Sprintf("clients=%d", clients), func(b *testing.B) {
			n := b.N
			run := time.Now().UnixNano() // transaction IDs are unique for ever (Go runs a benchmark more than once)
			type request struct {
				key  *rsa.PrivateKey
				cert *x509.Certificate // the self-signed one the request is signed with
				der  []byte
			}
			reqs := make([]request, n)
			var wg sync.WaitGroup
			for w := range 2 { // fresh keys, CSRs and envelopes, before the clock
				wg.Go(func() {
					for i := w; i < n; i += 2 {
						k, err := rsa.GenerateKey(rand.Reader, 2048)
						if err != nil {
							b.Error(err)
							return
						}
						cn := fmt.Sprintf("bench-%d-%d-%d.corp.example.test", run, clients, i)
						q := sceptest.Requester{Key: k, Cert: sceptest.SelfSigned(b, k, cn)}
						_, der := q.Message(b, scep.PKCSReq, fmt.Sprintf("bench-%d-%d-%d", run, clients, i), sceptest.NewCSR(b, k, cn, challenge), ra)
						reqs[i] = request{k, q.Cert, der}
					}
				})
			}
			wg.Wait()
			replies := make([][]byte, n)
			var next atomic.Int64
			b.ResetTimer()
			start := time.Now()
			for range clients {
				wg.Go(func() {
					for {
						i := int(next.Add(1) - 1)
						if i >= n {
							return
						}
						resp, err := http.Post(base+"?operation=PKIOperation", "application/x-pki-message", bytes.NewReader(reqs[i].der))
						if err != nil {
							b.Error(err)
							return
						}
						body, _ := io.ReadAll(resp.Body)
						resp.Body.Close()
						m, err := scep.ParsePKIMessage(body)
						if err != nil || m.MessageType != scep.CertRep || m.PKIStatus != 0 {
							b.Errorf("request %d: HTTP %d, %+v, %v; want SUCCESS", i, resp.StatusCode, m, err)
							return
						}
						replies[i] = m.Envelope
					}
				})
			}
			wg.Wait()
			b.StopTimer()
			b.ReportMetric(float64(n)/time.Since(start).Seconds(), "issuances/s")
			for i := 0; i < n; i += max(1, n/8) { // a sample, checked after the clock
				m := &scep.PKIMessage{Envelope: replies[i]}
				inner, err := m.Decrypt(reqs[i].cert, reqs[i].key)
				if err != nil {
					b.Fatalf("reply %d: %v", i, err)
				}
				certs := sceptest.CertsOnly(b, inner)
				if len(certs) == 0 || !certs[0].PublicKey.(*rsa.PublicKey).Equal(&reqs[i].key.PublicKey) {
					b.Fatalf("reply %d carries no certificate for the request's key", i)
				}
			}
		})
	}
}
