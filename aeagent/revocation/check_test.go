package revocation

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

const (
	keyCompromise        = 1
	cessationOfOperation = 5
)

func TestCheck(t *testing.T) {
	revoked := map[int64]int{revokedSerial: keyCompromise}
	tests := []struct {
		name   string
		setup  func(p *pki)
		cert   func(p *pki) *x509.Certificate // nil: the leaf revokedSerial
		maxCRL int64
		want   Status
		reason int    // when Revoked
		source string // path of the source that answers, when not Unknown
		errHas []string
		errIs  error
	}{
		{name: "good via OCSP", want: Good, source: "ocsp /ocsp",
			cert:  func(p *pki) *x509.Certificate { return p.leaf(goodSerial) },
			setup: func(p *pki) { p.serve("/ocsp", p.ocsp(ocspAnswer{revoked: revoked})) }},
		{name: "revoked via OCSP", want: Revoked, reason: keyCompromise, source: "ocsp /ocsp",
			setup: func(p *pki) { p.serve("/ocsp", p.ocsp(ocspAnswer{revoked: revoked})) }},
		{name: "OCSP down, revoked via CRL", want: Revoked, reason: keyCompromise, source: "crl /int.crl",
			setup: func(p *pki) {
				p.serve("/ocsp", status(http.StatusServiceUnavailable))
				p.serve("/int.crl", p.crl(crlSpec{revoked: revoked}))
			}},
		{name: "OCSP and CRL down", want: Unknown, errHas: []string{"ocsp {srv}/ocsp: ", "crl {srv}/int.crl: ", "503"},
			setup: func(p *pki) {
				p.serve("/ocsp", status(http.StatusServiceUnavailable))
				p.serve("/int.crl", status(http.StatusServiceUnavailable))
			}},
		{name: "OCSP refuses connections, good via CRL", want: Good, source: "crl /int.crl",
			cert: func(p *pki) *x509.Certificate {
				return p.leaf(goodSerial, func(c *x509.Certificate) { c.OCSPServer = []string{closedURL(t)} })
			},
			setup: func(p *pki) { p.serve("/int.crl", p.crl(crlSpec{revoked: revoked})) }},
		{name: "second OCSP URL answers", want: Revoked, reason: keyCompromise, source: "ocsp /ocsp2",
			cert: func(p *pki) *x509.Certificate {
				return p.leaf(revokedSerial, func(c *x509.Certificate) { c.OCSPServer = []string{p.url("/ocsp"), p.url("/ocsp2")} })
			},
			setup: func(p *pki) {
				p.serve("/ocsp", status(http.StatusNotFound))
				p.serve("/ocsp2", p.ocsp(ocspAnswer{revoked: revoked}))
				p.serve("/int.crl", status(http.StatusServiceUnavailable))
			}},

		// Forged or unusable OCSP answers claim good; the CRL has the truth.
		{name: "OCSP signed by a wrong key", want: Revoked, reason: keyCompromise, source: "crl /int.crl",
			setup: func(p *pki) {
				p.serve("/ocsp", p.ocsp(ocspAnswer{signer: p.caWithKey("Test Issuing CA", 3, newKey(t), p.root, nil)}))
				p.serve("/int.crl", p.crl(crlSpec{revoked: revoked}))
			}},
		{name: "OCSP by a delegated responder without OCSPSigning", want: Revoked, reason: keyCompromise, source: "crl /int.crl",
			setup: func(p *pki) {
				p.serve("/ocsp", p.ocsp(ocspAnswer{signer: p.responder(p.inter, false), embed: true}))
				p.serve("/int.crl", p.crl(crlSpec{revoked: revoked}))
			}},
		{name: "OCSP by a responder another CA delegated", want: Revoked, reason: keyCompromise, source: "crl /int.crl",
			setup: func(p *pki) {
				p.serve("/ocsp", p.ocsp(ocspAnswer{signer: p.responder(p.root, true), embed: true}))
				p.serve("/int.crl", p.crl(crlSpec{revoked: revoked}))
			}},
		{name: "OCSP by a responder of a CA of another name with the same key", want: Revoked, reason: keyCompromise, source: "crl /int.crl",
			setup: func(p *pki) {
				alias := p.caWithKey("Other CA", 3, p.inter.key, p.root, nil)
				p.serve("/ocsp", p.ocsp(ocspAnswer{signer: p.responder(alias, true), embed: true}))
				p.serve("/int.crl", p.crl(crlSpec{revoked: revoked}))
			}},
		{name: "OCSP by a responder of another CA of the same name", want: Revoked, reason: keyCompromise, source: "crl /int.crl",
			setup: func(p *pki) {
				twin := p.caWithKey("Test Issuing CA", 3, newKey(t), p.root, nil)
				p.serve("/ocsp", p.ocsp(ocspAnswer{signer: p.responder(twin, true), embed: true}))
				p.serve("/int.crl", p.crl(crlSpec{revoked: revoked}))
			}},
		{name: "OCSP by an expired delegated responder", want: Revoked, reason: keyCompromise, source: "crl /int.crl",
			setup: func(p *pki) {
				p.serve("/ocsp", p.ocsp(ocspAnswer{signer: p.responder(p.inter, true), embed: true}))
				p.serve("/int.crl", p.crl(crlSpec{revoked: revoked}))
				p.clock.advance(6 * 365 * 24 * time.Hour)
			}},
		{name: "OCSP by a delegated responder whose certificate is missing", want: Revoked, reason: keyCompromise, source: "crl /int.crl",
			setup: func(p *pki) {
				p.serve("/ocsp", p.ocsp(ocspAnswer{signer: p.responder(p.inter, true)}))
				p.serve("/int.crl", p.crl(crlSpec{revoked: revoked}))
			}},
		{name: "OCSP about the same serial of another issuer", want: Revoked, reason: keyCompromise, source: "crl /int.crl",
			setup: func(p *pki) {
				p.serve("/ocsp", p.ocsp(ocspAnswer{about: p.root.cert}))
				p.serve("/int.crl", p.crl(crlSpec{revoked: revoked}))
			}},
		{name: "OCSP by a properly delegated responder", want: Revoked, reason: keyCompromise, source: "ocsp /ocsp",
			setup: func(p *pki) {
				p.serve("/ocsp", p.ocsp(ocspAnswer{signer: p.responder(p.inter, true), embed: true, revoked: revoked}))
				p.serve("/int.crl", status(http.StatusServiceUnavailable))
			}},
		{name: "OCSP embedding the issuer's certificate", want: Good, source: "ocsp /ocsp",
			cert:  func(p *pki) *x509.Certificate { return p.leaf(goodSerial) },
			setup: func(p *pki) { p.serve("/ocsp", p.ocsp(ocspAnswer{embed: true})) }},
		{name: "OCSP status unknown", want: Revoked, reason: keyCompromise, source: "crl /int.crl",
			setup: func(p *pki) {
				p.serve("/ocsp", p.ocsp(ocspAnswer{unknown: true}))
				p.serve("/int.crl", p.crl(crlSpec{revoked: revoked}))
			}},
		{name: "OCSP tryLater", want: Unknown, errHas: []string{"ocsp {srv}/ocsp: ", "try later", "crl {srv}/int.crl: "},
			setup: func(p *pki) { p.serve("/ocsp", body([]byte{0x30, 0x03, 0x0A, 0x01, 0x03})) }},
		{name: "OCSP from the future", want: Unknown, errHas: []string{"from the future"},
			setup: func(p *pki) { p.serve("/ocsp", p.ocsp(ocspAnswer{thisUpdate: 10 * time.Minute})) }},
		{name: "OCSP within the clock skew", want: Good, source: "ocsp /ocsp",
			cert:  func(p *pki) *x509.Certificate { return p.leaf(goodSerial) },
			setup: func(p *pki) { p.serve("/ocsp", p.ocsp(ocspAnswer{thisUpdate: 4 * time.Minute})) }},
		{name: "OCSP stale", want: Unknown, errHas: []string{"ocsp {srv}/ocsp: ", "stale"},
			setup: func(p *pki) {
				p.serve("/ocsp", p.ocsp(ocspAnswer{thisUpdate: -48 * time.Hour, nextUpdate: -time.Minute}))
			}},
		{name: "OCSP garbage", want: Unknown, errHas: []string{"ocsp {srv}/ocsp: parsing the OCSP response"},
			setup: func(p *pki) { p.serve("/ocsp", body([]byte("<html>hello</html>"))) }},

		// CRL only.
		{name: "CRL signed by another CA of the same name", want: Unknown, errHas: []string{"crl {srv}/int.crl: verifying the CRL signature"},
			cert: func(p *pki) *x509.Certificate { return p.leaf(revokedSerial, noOCSP) },
			setup: func(p *pki) {
				p.serve("/int.crl", p.crl(crlSpec{signer: p.caWithKey("Test Issuing CA", 3, newKey(t), p.root, nil), revoked: revoked}))
			}},
		{name: "CRL of another issuer name", want: Unknown, errHas: []string{"the CRL is issued by \"CN=Other CA\""},
			cert: func(p *pki) *x509.Certificate { return p.leaf(revokedSerial, noOCSP) },
			setup: func(p *pki) {
				p.serve("/int.crl", p.crl(crlSpec{signer: p.caWithKey("Other CA", 3, p.inter.key, p.root, nil), revoked: revoked}))
			}},
		{name: "CRL stale", want: Unknown, errHas: []string{"stale"},
			cert: func(p *pki) *x509.Certificate { return p.leaf(revokedSerial, noOCSP) },
			setup: func(p *pki) {
				p.serve("/int.crl", p.crl(crlSpec{revoked: revoked, thisUpdate: -25 * time.Hour, nextUpdate: -time.Hour}))
			}},
		{name: "CRL from the future", want: Unknown, errHas: []string{"from the future"},
			cert:  func(p *pki) *x509.Certificate { return p.leaf(revokedSerial, noOCSP) },
			setup: func(p *pki) { p.serve("/int.crl", p.crl(crlSpec{revoked: revoked, thisUpdate: time.Hour})) }},
		{name: "CRL larger than MaxCRL", want: Unknown, maxCRL: 100, errHas: []string{"crl {srv}/int.crl: ", "too large"},
			cert:  func(p *pki) *x509.Certificate { return p.leaf(revokedSerial, noOCSP) },
			setup: func(p *pki) { p.serve("/int.crl", p.crl(crlSpec{revoked: revoked})) }},
		{name: "CRL larger than MaxCRL, length not announced", want: Unknown, maxCRL: 100, errHas: []string{"too large: more than 100 bytes"},
			cert: func(p *pki) *x509.Certificate { return p.leaf(revokedSerial, noOCSP) },
			setup: func(p *pki) {
				p.serve("/int.crl", func(w http.ResponseWriter, r *http.Request) {
					w.(http.Flusher).Flush() // chunked: no Content-Length
					w.Write(p.makeCRL(crlSpec{revoked: revoked}, p.clock.now()))
				})
			}},
		{name: "CRL garbage", want: Unknown, errHas: []string{"parsing the CRL"},
			cert:  func(p *pki) *x509.Certificate { return p.leaf(revokedSerial, noOCSP) },
			setup: func(p *pki) { p.serve("/int.crl", body([]byte("\x30\x82garbage"))) }},
		{name: "CRL in PEM", want: Revoked, reason: keyCompromise, source: "crl /int.crl",
			cert:  func(p *pki) *x509.Certificate { return p.leaf(revokedSerial, noOCSP) },
			setup: func(p *pki) { p.serve("/int.crl", p.crl(crlSpec{revoked: revoked, pem: true})) }},
		{name: "CRL in PEM of another type", want: Unknown, errHas: []string{"without an X509 CRL block"},
			cert: func(p *pki) *x509.Certificate { return p.leaf(revokedSerial, noOCSP) },
			setup: func(p *pki) {
				p.serve("/int.crl", body([]byte("-----BEGIN CERTIFICATE-----\nMAA=\n-----END CERTIFICATE-----\n")))
			}},
		{name: "CRL not listing the certificate", want: Good, source: "crl /int.crl",
			cert:  func(p *pki) *x509.Certificate { return p.leaf(goodSerial, noOCSP) },
			setup: func(p *pki) { p.serve("/int.crl", p.crl(crlSpec{revoked: revoked})) }},
		{name: "delta CRL", want: Unknown, errHas: []string{"delta CRL"},
			cert: func(p *pki) *x509.Certificate { return p.leaf(goodSerial, noOCSP) },
			setup: func(p *pki) {
				delta := pkix.Extension{Id: oidDeltaCRL, Critical: true, Value: []byte{2, 1, 1}}
				p.serve("/int.crl", p.crl(crlSpec{extensions: []pkix.Extension{delta}}))
			}},
		{name: "CRL with an unknown critical extension", want: Unknown, errHas: []string{"critical extension 1.2.3.4"},
			cert: func(p *pki) *x509.Certificate { return p.leaf(goodSerial, noOCSP) },
			setup: func(p *pki) {
				ext := pkix.Extension{Id: []int{1, 2, 3, 4}, Critical: true, Value: []byte{5, 0}}
				p.serve("/int.crl", p.crl(crlSpec{extensions: []pkix.Extension{ext}}))
			}},
		{name: "CRL entry with an unknown critical extension", want: Unknown, errHas: []string{"entry", "critical extension 1.2.3.4"},
			cert: func(p *pki) *x509.Certificate { return p.leaf(revokedSerial, noOCSP) },
			setup: func(p *pki) {
				ext := pkix.Extension{Id: []int{1, 2, 3, 4}, Critical: true, Value: []byte{5, 0}}
				p.serve("/int.crl", p.crl(crlSpec{revoked: revoked, entryExt: []pkix.Extension{ext}}))
			}},
		{name: "CRL for CA certificates only", want: Unknown, errHas: []string{"only CA certificates"},
			cert: func(p *pki) *x509.Certificate { return p.leaf(goodSerial, noOCSP) },
			setup: func(p *pki) {
				p.serve("/int.crl", p.crl(crlSpec{extensions: []pkix.Extension{idpExtension(t, true)}}))
			}},
		{name: "CRL of the certificate's distribution point", want: Revoked, reason: keyCompromise, source: "crl /int.crl",
			cert: func(p *pki) *x509.Certificate { return p.leaf(revokedSerial, noOCSP) },
			setup: func(p *pki) {
				idp := idpExtension(t, false, "ldap:///CN=Test%20Issuing%20CA", p.url("/int.crl"))
				p.serve("/int.crl", p.crl(crlSpec{revoked: revoked, extensions: []pkix.Extension{idp}}))
			}},
		{name: "CRL of another distribution point", want: Unknown, errHas: []string{"distribution point"},
			cert: func(p *pki) *x509.Certificate { return p.leaf(revokedSerial, noOCSP) },
			setup: func(p *pki) {
				idp := idpExtension(t, false, p.url("/int-partition2.crl"))
				p.serve("/int.crl", p.crl(crlSpec{extensions: []pkix.Extension{idp}}))
			}},
		{name: "CRL redirected", want: Revoked, reason: keyCompromise, source: "crl /int.crl",
			cert: func(p *pki) *x509.Certificate { return p.leaf(revokedSerial, noOCSP) },
			setup: func(p *pki) {
				p.serve("/int.crl", func(w http.ResponseWriter, r *http.Request) {
					http.Redirect(w, r, "/moved.crl", http.StatusFound)
				})
				p.serve("/moved.crl", p.crl(crlSpec{revoked: revoked}))
			}},
		{name: "CRL redirected to ldap", want: Unknown, errHas: []string{"refusing a redirect to a ldap URL"},
			cert: func(p *pki) *x509.Certificate { return p.leaf(revokedSerial, noOCSP) },
			setup: func(p *pki) {
				p.serve("/int.crl", func(w http.ResponseWriter, r *http.Request) {
					http.Redirect(w, r, "ldap://dc.example.test/CN=CRL", http.StatusFound)
				})
			}},

		// What the certificate names.
		{name: "no URLs", want: Unknown, errIs: ErrNoSource, errHas: []string{"names no http OCSP responder or CRL distribution point"},
			cert: func(p *pki) *x509.Certificate {
				return p.leaf(revokedSerial, func(c *x509.Certificate) { c.OCSPServer, c.CRLDistributionPoints = nil, nil })
			}},
		{name: "only ldap", want: Unknown, errIs: ErrNoSource, errHas: []string{"crl ldap:///CN=Test%20Issuing%20CA?certificateRevocationList: skipped"},
			cert: func(p *pki) *x509.Certificate {
				return p.leaf(revokedSerial, func(c *x509.Certificate) {
					c.OCSPServer = nil
					c.CRLDistributionPoints = []string{"ldap:///CN=Test%20Issuing%20CA?certificateRevocationList"}
				})
			}},
		{name: "ldap skipped, then http", want: Revoked, reason: keyCompromise, source: "crl /int.crl",
			cert: func(p *pki) *x509.Certificate {
				return p.leaf(revokedSerial, func(c *x509.Certificate) {
					c.OCSPServer = nil
					c.CRLDistributionPoints = []string{"ldap:///CN=Test%20Issuing%20CA", p.url("/int.crl")}
				})
			},
			setup: func(p *pki) { p.serve("/int.crl", p.crl(crlSpec{revoked: revoked})) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := newPKI(t)
			cert := p.leaf(revokedSerial)
			if tt.cert != nil {
				cert = tt.cert(p)
			}
			if tt.setup != nil {
				tt.setup(p)
			}
			c := &Checker{Now: p.clock.now, MaxCRL: tt.maxCRL}
			got := c.Check(context.Background(), cert, p.inter.cert)
			checkResult(t, p, got, tt.want, tt.reason, tt.source, tt.errIs, tt.errHas)
		})
	}
}

// checkResult compares a Result with what is wanted; source is the source's kind and path.
func checkResult(t *testing.T, p *pki, got Result, want Status, reason int, source string, errIs error, errHas []string) {
	t.Helper()
	if got.Status != want {
		t.Fatalf("Check(...) = %v (err %v), want %v", got.Status, got.Err, want)
	}
	wantReason, wantSource, wantAt := NoReason, "", time.Time{}
	if want == Revoked {
		wantReason, wantAt = reason, revokedAt
	}
	if want != Unknown {
		kind, path, _ := strings.Cut(source, " ")
		wantSource = kind + " " + p.url(path)
		if got.Err != nil {
			t.Errorf("Check(...).Err = %v, want nil", got.Err)
		}
	}
	if got.Reason != wantReason || !got.RevokedAt.Equal(wantAt) || got.Source != wantSource {
		t.Errorf("Check(...) = reason %s at %v from %q, want reason %s at %v from %q",
			ReasonName(got.Reason), got.RevokedAt, got.Source, ReasonName(wantReason), wantAt, wantSource)
	}
	if want == Unknown && got.Err == nil {
		t.Errorf("Check(...).Err = nil, want an error")
	}
	if errIs != nil && !errors.Is(got.Err, errIs) {
		t.Errorf("Check(...).Err = %v, want one that is %v", got.Err, errIs)
	}
	for _, s := range errHas {
		s = strings.ReplaceAll(s, "{srv}", p.srv.URL)
		if got.Err == nil || !strings.Contains(strings.ToLower(got.Err.Error()), strings.ToLower(s)) {
			t.Errorf("Check(...).Err = %v, want it to contain %q", got.Err, s)
		}
	}
}

// closedURL is an http URL where nothing listens.
func closedURL(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return "http://" + addr + "/ocsp"
}

func TestCheckWrongIssuer(t *testing.T) {
	p := newPKI(t)
	p.serve("/ocsp", p.ocsp(ocspAnswer{}))
	got := (&Checker{Now: p.clock.now}).Check(context.Background(), p.leaf(goodSerial), p.root.cert)
	if got.Status != Unknown || got.Err == nil || !strings.Contains(got.Err.Error(), "issued") {
		t.Errorf("Check(leaf, root) = %v (%v), want unknown with an error saying the root did not issue the leaf", got.Status, got.Err)
	}
	if n := p.hitCount("/ocsp"); n != 0 {
		t.Errorf("Check(leaf, root) asked the responder %d times, want 0", n)
	}
}

// A responder that never answers costs no more than ctx allows.
func TestCheckHangingResponder(t *testing.T) {
	p := newPKI(t)
	stop := make(chan struct{})
	t.Cleanup(func() { close(stop) }) // before the server closes: it waits for its handlers
	hang := func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-stop:
		}
	}
	p.serve("/ocsp", hang)
	p.serve("/int.crl", hang)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	got := (&Checker{Now: p.clock.now}).Check(ctx, p.leaf(goodSerial), p.inter.cert)
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("Check(...) took %v with a 200ms deadline", took)
	}
	if got.Status != Unknown || !errors.Is(got.Err, context.DeadlineExceeded) {
		t.Errorf("Check(...) = %v (%v), want unknown with context.DeadlineExceeded", got.Status, got.Err)
	}
	for _, u := range []string{p.url("/ocsp"), p.url("/int.crl")} {
		if got.Err == nil || !strings.Contains(got.Err.Error(), u) {
			t.Errorf("Check(...).Err = %v, want it to name %s", got.Err, u)
		}
	}
}

func TestReasonName(t *testing.T) {
	tests := []struct {
		code int
		want string
	}{{0, "unspecified"}, {1, "keyCompromise"}, {2, "cACompromise"}, {3, "affiliationChanged"}, {4, "superseded"},
		{5, "cessationOfOperation"}, {6, "certificateHold"}, {7, "reason 7"}, {8, "removeFromCRL"},
		{9, "privilegeWithdrawn"}, {10, "aACompromise"}, {11, "reason 11"}, {NoReason, "none"}, {-2, "reason -2"}}
	for _, tt := range tests {
		if got := ReasonName(tt.code); got != tt.want {
			t.Errorf("ReasonName(%d) = %q, want %q", tt.code, got, tt.want)
		}
	}
	for s, want := range map[Status]string{Unknown: "unknown", Good: "good", Revoked: "revoked", 9: "Status(9)"} {
		if got := s.String(); got != want {
			t.Errorf("Status(%d).String() = %q, want %q", int(s), got, want)
		}
	}
}

// A legacy certificate signed with SHA-1, which crypto/x509 no longer verifies, is still checked.
func TestCheckSHA1Certificate(t *testing.T) {
	p := newPKI(t)
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	legacy := p.caWithKey("Legacy CA", 4, key, p.root, nil)
	leaf := p.sign(&x509.Certificate{SerialNumber: big.NewInt(revokedSerial), SignatureAlgorithm: x509.SHA1WithRSA,
		CRLDistributionPoints: []string{p.url("/legacy.crl")}}, newKey(t), legacy)
	p.serve("/legacy.crl", p.crl(crlSpec{signer: legacy, revoked: map[int64]int{revokedSerial: keyCompromise}}))
	got := (&Checker{Now: p.clock.now}).Check(context.Background(), leaf, legacy.cert)
	checkResult(t, p, got, Revoked, keyCompromise, "crl /legacy.crl", nil, nil)
}
