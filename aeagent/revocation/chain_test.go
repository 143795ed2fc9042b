package revocation

import (
	"context"
	"crypto/x509"
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestCheckChain(t *testing.T) {
	leafRevoked := map[int64]int{revokedSerial: keyCompromise}
	interRevoked := map[int64]int{interSerial: cessationOfOperation}
	tests := []struct {
		name      string
		leaf      int64                                                    // serial of the leaf
		chain     func(p *pki, leaf *x509.Certificate) []*x509.Certificate // nil: leaf, intermediate, root
		leafCRL   map[int64]int                                            // nil: /int.crl is down
		rootCRL   map[int64]int                                            // nil: /root.crl is down
		wantIndex int
		want      Status
		reason    int
		source    string
		errHas    []string
	}{
		{name: "all good", leaf: goodSerial, leafCRL: leafRevoked, rootCRL: leafRevoked, wantIndex: -1, want: Good},
		{name: "revoked intermediate, good leaf", leaf: goodSerial, leafCRL: leafRevoked, rootCRL: interRevoked,
			wantIndex: 1, want: Revoked, reason: cessationOfOperation, source: "crl /root.crl"},
		{name: "revoked intermediate, leaf unknown", leaf: goodSerial, rootCRL: interRevoked,
			wantIndex: 1, want: Revoked, reason: cessationOfOperation, source: "crl /root.crl"},
		{name: "revoked leaf and intermediate", leaf: revokedSerial, leafCRL: leafRevoked, rootCRL: interRevoked,
			wantIndex: 0, want: Revoked, reason: keyCompromise, source: "crl /int.crl"},
		{name: "root CRL down", leaf: goodSerial, leafCRL: leafRevoked,
			wantIndex: 1, want: Unknown, errHas: []string{"crl {srv}/root.crl"}},
		{name: "leaf unknown", leaf: goodSerial, rootCRL: leafRevoked,
			wantIndex: 0, want: Unknown, errHas: []string{"crl {srv}/int.crl"}},
		{name: "root missing", leaf: goodSerial, leafCRL: leafRevoked, rootCRL: leafRevoked,
			chain: func(p *pki, leaf *x509.Certificate) []*x509.Certificate {
				return []*x509.Certificate{leaf, p.inter.cert}
			},
			wantIndex: 1, want: Unknown, errHas: []string{"its issuer is not in the chain"}},
		{name: "root only", rootCRL: leafRevoked,
			chain:     func(p *pki, leaf *x509.Certificate) []*x509.Certificate { return []*x509.Certificate{p.root.cert} },
			wantIndex: -1, want: Good},
		{name: "empty", chain: func(*pki, *x509.Certificate) []*x509.Certificate { return nil },
			wantIndex: -1, want: Unknown, errHas: []string{"empty"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := newPKI(t)
			leaf := p.leaf(tt.leaf, noOCSP)
			chain := []*x509.Certificate{leaf, p.inter.cert, p.root.cert}
			if tt.chain != nil {
				chain = tt.chain(p, leaf)
			}
			for path, revoked := range map[string]map[int64]int{"/int.crl": tt.leafCRL, "/root.crl": tt.rootCRL} {
				signer := p.inter
				if path == "/root.crl" {
					signer = p.root
				}
				if revoked == nil {
					p.serve(path, status(http.StatusServiceUnavailable))
				} else {
					p.serve(path, p.crl(crlSpec{signer: signer, revoked: revoked}))
				}
			}
			i, got := (&Checker{Now: p.clock.now}).CheckChain(context.Background(), chain)
			if i != tt.wantIndex {
				t.Errorf("CheckChain(...) = %d, %v (%v), want index %d", i, got.Status, got.Err, tt.wantIndex)
			}
			if tt.wantIndex < 0 && tt.want == Good {
				// The Good of a whole chain has no source.
				if got != (Result{Status: Good, Reason: NoReason}) {
					t.Errorf("CheckChain(...) = %d, %+v, want -1, good without source", i, got)
				}
				return
			}
			checkResult(t, p, got, tt.want, tt.reason, tt.source, nil, tt.errHas)
		})
	}
}

// A CRL is fetched once and reused for other certificates until its nextUpdate.
func TestCRLCache(t *testing.T) {
	p := newPKI(t)
	p.serve("/int.crl", p.crl(crlSpec{revoked: map[int64]int{revokedSerial: keyCompromise}}))
	good, revoked := p.leaf(goodSerial, noOCSP), p.leaf(revokedSerial, noOCSP)
	c := &Checker{Now: p.clock.now}
	steps := []struct {
		advance time.Duration
		cert    *x509.Certificate
		want    Status
		fetches int // how many times /int.crl was fetched after the step
	}{
		{0, good, Good, 1},
		{0, revoked, Revoked, 1},
		{23 * time.Hour, revoked, Revoked, 1}, // nextUpdate is 24 h after the first fetch
		{time.Hour, good, Good, 2},            // exactly at nextUpdate: fetched again
		{time.Hour, revoked, Revoked, 2},
	}
	for i, s := range steps {
		p.clock.advance(s.advance)
		got := c.Check(context.Background(), s.cert, p.inter.cert)
		if got.Status != s.want {
			t.Errorf("step %d: Check(serial %s) = %v (%v), want %v", i, s.cert.SerialNumber, got.Status, got.Err, s.want)
		}
		if n := p.hitCount("/int.crl"); n != s.fetches {
			t.Errorf("step %d: Check(serial %s) fetched the CRL %d times in all, want %d", i, s.cert.SerialNumber, n, s.fetches)
		}
	}

	// A cached CRL is not reused for a certificate of another issuer, even with the same URL.
	other := p.caWithKey("Test Issuing CA", 3, newKey(t), p.root, nil)
	p.serve("/int.crl", p.crl(crlSpec{signer: other}))
	leaf := p.sign(&x509.Certificate{SerialNumber: revoked.SerialNumber, CRLDistributionPoints: revoked.CRLDistributionPoints},
		newKey(t), other)
	if got := c.Check(context.Background(), leaf, other.cert); got.Status != Good || p.hitCount("/int.crl") != 3 {
		t.Errorf("Check(same serial, other issuer) = %v (%v) after %d fetches, want good after 3",
			got.Status, got.Err, p.hitCount("/int.crl"))
	}
}

func TestSourceErrors(t *testing.T) {
	p := newPKI(t)
	leaf := p.leaf(goodSerial, func(c *x509.Certificate) {
		c.OCSPServer = []string{"ldap://dc/ocsp", p.url("/ocsp")}
	})
	got := (&Checker{Now: p.clock.now}).Check(context.Background(), leaf, p.inter.cert)
	want := []string{"ocsp ldap://dc/ocsp: skipped", "ocsp " + p.url("/ocsp") + ": ", "crl " + p.url("/int.crl") + ": "}
	msg := ""
	if got.Err != nil {
		msg = got.Err.Error()
	}
	parts := strings.Split(msg, "; ")
	if got.Status != Unknown || len(parts) != len(want) {
		t.Fatalf("Check(...) = %v (%q), want unknown with %d errors", got.Status, msg, len(want))
	}
	for i := range want {
		if !strings.HasPrefix(parts[i], want[i]) {
			t.Errorf("Check(...).Err part %d = %q, want it to begin with %q", i, parts[i], want[i])
		}
	}
}
