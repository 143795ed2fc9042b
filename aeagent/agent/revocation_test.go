package agent

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"io"
	"log/slog"
	"math/big"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/enrollment-appliance/aeappliance/aeagent/revocation"
	"github.com/enrollment-appliance/aeappliance/aeagent/store"
	"github.com/enrollment-appliance/aeappliance/aeagent/wsclient"
	"github.com/enrollment-appliance/aeappliance/enrollsvc/daemon/daemontest"
	"github.com/enrollment-appliance/aeappliance/ldap/ldaptest"
)

// crlServer serves one CRL over plain HTTP on loopback, as a CDP does.
type crlServer struct {
	mu  sync.Mutex
	der []byte
	srv *httptest.Server
}

func newCRLServer(t *testing.T) *crlServer {
	c := &crlServer{}
	c.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c.mu.Lock()
		defer c.mu.Unlock()
		w.Header().Set("Content-Type", "application/pkix-crl")
		w.Write(c.der)
	}))
	t.Cleanup(c.srv.Close)
	return c
}

func (c *crlServer) URL() string { return c.srv.URL + "/crl/test.crl" }

func (c *crlServer) set(der []byte) { c.mu.Lock(); c.der = der; c.mu.Unlock() }

// A certificate the CA revoked is re-enrolled: its CRL (signed by the CA key in the HSM, served at
// the CDP URL the CA wrote into the certificate) lists it.
func TestRevokedCertificateReplaced(t *testing.T) {
	crls := newCRLServer(t)
	dc := ldaptest.StartDC(t)
	s := dc.Seed(t)
	srv := daemontest.Start(t, dc, s, daemontest.Options{CAName: "Revocation Test CA", CRLURLs: []string{crls.URL()}})
	w := &world{dc: dc, s: s, srv: srv}
	rt := srv.Runtime
	number := int64(0)
	publish := func(revoked ...*big.Int) {
		t.Helper()
		number++
		var entries []x509.RevocationListEntry
		for _, sn := range revoked {
			entries = append(entries, x509.RevocationListEntry{SerialNumber: sn, RevocationTime: time.Now().Add(-time.Minute),
				ReasonCode: 1})
		}
		der, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{Number: big.NewInt(number),
			ThisUpdate: time.Now().Add(-time.Minute), NextUpdate: time.Now().Add(24 * time.Hour),
			RevokedCertificateEntries: entries}, rt.CACert, rt.Key)
		if err != nil {
			t.Fatalf("signing the CRL with the CA key: %v", err)
		}
		crls.set(der)
	}
	publish()

	clk := &clock{t: time.Now()}
	dir := filepath.Join(t.TempDir(), "alice")
	pulse(t, w.userAgent(t, s.Alice, dir, clk))
	old := current(t, dir)["AEUserV2"]
	if old.Certificate == nil || len(old.Certificate.CRLDistributionPoints) != 1 || old.Certificate.CRLDistributionPoints[0] != crls.URL() {
		t.Fatalf("issued certificate's CDP = %v, want %s", old.Certificate, crls.URL())
	}
	if rep := pulse(t, w.userAgent(t, s.Alice, dir, clk)); rep.Changed {
		t.Errorf("pulse with a CRL that does not list the certificate: %v, want nothing", kinds(rep))
	}

	publish(old.Certificate.SerialNumber)
	// A new agent, as a new `aeagent pulse` process: it has no cached CRL.
	rep := pulse(t, w.userAgent(t, s.Alice, dir, clk))
	if got := kinds(rep); got["AEUserV2"] != "reenroll archive " {
		t.Errorf("pulse after revocation: %v, want reenroll (new key) and archive", got)
	}
	for _, o := range rep.Outcomes {
		if o.Action.Cert != nil && o.Action.Cert.Serial == serialOf(old.Certificate) && !o.Action.Cert.Revoked {
			t.Errorf("action %v does not see the certificate as revoked", o.Action)
		}
	}
	now := current(t, dir)["AEUserV2"]
	if now.Certificate == nil || now.Certificate.SerialNumber.Cmp(old.Certificate.SerialNumber) == 0 {
		t.Fatal("the revoked certificate was not replaced")
	}
}

// A policy whose CA was revoked by its parent is refused, and so is a held certificate under such
// a CA: nothing is requested, nothing in the store changes (checkCAs and heldOf run before any
// action of a pass).
func TestRevokedCA(t *testing.T) {
	ctx := context.Background()
	crls := newCRLServer(t)
	root, rootKey := testCA(t, "Test Root", nil, nil, "")
	sub, subKey := testCA(t, "Test Issuing CA", root, rootKey, crls.URL())
	leaf, _ := testCA(t, "leaf", sub, subKey, "")
	revoke := func(sn ...*big.Int) {
		var entries []x509.RevocationListEntry
		for _, n := range sn {
			entries = append(entries, x509.RevocationListEntry{SerialNumber: n, RevocationTime: time.Now().Add(-time.Hour), ReasonCode: 2})
		}
		der, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{Number: big.NewInt(int64(len(sn) + 1)),
			ThisUpdate: time.Now().Add(-time.Hour), NextUpdate: time.Now().Add(time.Hour), RevokedCertificateEntries: entries}, root, rootKey)
		if err != nil {
			t.Fatal(err)
		}
		crls.set(der)
	}
	roots := x509.NewCertPool()
	roots.AddCert(root)
	for _, revoked := range []bool{false, true} {
		if revoked {
			revoke(sub.SerialNumber)
		} else {
			revoke()
		}
		a := &Agent{roots: roots, rev: &revocation.Checker{}, log: quietLog()}
		p := &pass{a: a, now: time.Now(), pol: &wsclient.Policies{CAs: []wsclient.CA{{Ref: 1, Certificate: sub}}}}
		err := p.checkCAs(ctx)
		if revoked != (err != nil) || (err != nil && !strings.Contains(err.Error(), `"CN=Test Issuing CA" was revoked`)) {
			t.Errorf("checkCAs with the issuing CA revoked=%v: %v", revoked, err)
		}
		_, err = p.heldOf(ctx, storeCert(leaf, sub))
		if revoked != (err != nil) || (err != nil && !strings.Contains(err.Error(), "cACompromise")) {
			t.Errorf("heldOf a certificate under a CA revoked=%v: %v", revoked, err)
		}
	}
}

// testCA makes a certificate for cn: a CA unless cn is "leaf", self-signed without a parent,
// with crlURL as its CDP when given.
func testCA(t *testing.T, cn string, parent *x509.Certificate, parentKey crypto.Signer, crlURL string) (*x509.Certificate, crypto.Signer) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	sn, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{SerialNumber: sn, Subject: pkix.Name{CommonName: cn}, NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(24 * time.Hour), BasicConstraintsValid: true, IsCA: cn != "leaf",
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature}
	if crlURL != "" {
		tmpl.CRLDistributionPoints = []string{crlURL}
	}
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, key.Public(), parentKey)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c, key
}

func storeCert(c *x509.Certificate, chain ...*x509.Certificate) store.Cert {
	return store.Cert{Template: "T", Certificate: c, Chain: chain}
}

func quietLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }
