package wsclient

// Against the real enrollment web services, in-process: a Samba AD DC seeded with the sample
// directory (ldaptest), a data directory made by provisioning.Init with the CA key in SoftHSM, and
// daemon.Serve. No mocks.

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"io"
	"log/slog"
	"math/big"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/enrollment-appliance/aeappliance/enrollsvc/daemon"
	"github.com/enrollment-appliance/aeappliance/enrollsvc/daemon/daemontest"
	"github.com/enrollment-appliance/aeappliance/ldap/ldaptest"
	"github.com/enrollment-appliance/aeappliance/proto/cmc"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

const caName = "WS Test CA"

// templateCSR is a PKCS#10 for a new RSA-2048 key naming its template with the v2 template
// extension (1.3.6.1.4.1.311.21.7: SEQUENCE {OID, major, minor}), as Windows sends.
func templateCSR(t *testing.T, oid string) ([]byte, *rsa.PrivateKey) {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	var o asn1.ObjectIdentifier
	for _, p := range strings.Split(oid, ".") {
		n, err := strconv.Atoi(p)
		if err != nil {
			t.Fatalf("template OID %q: %v", oid, err)
		}
		o = append(o, n)
	}
	ext, err := asn1.Marshal(struct {
		OID          asn1.ObjectIdentifier
		Major, Minor int
	}{o, 100, 0})
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "ignored"},
		ExtraExtensions: []pkix.Extension{{Id: asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 311, 21, 7}, Value: ext}}}, k)
	if err != nil {
		t.Fatal(err)
	}
	return der, k
}

// startServer serves the real enrollment web services against dc (daemontest) and returns the
// runtime (for approving requests), the HTTPS base URL and the CA pool.
func startServer(t *testing.T, dc *ldaptest.DC, s *ldaptest.Sample, o daemontest.Options) (*daemon.Runtime, string, *x509.CertPool) {
	t.Helper()
	o.CAName = caName
	srv := daemontest.Start(t, dc, s, o)
	return srv.Runtime, srv.Base, srv.Roots
}

func TestAgainstEnrollmentWebServices(t *testing.T) {
	dc := ldaptest.StartDC(t)
	s := dc.Seed(t)
	rt, base, roots := startServer(t, dc, s, daemontest.Options{})
	ctx := context.Background()
	cep := base + "/ADPolicyProvider_CEP_UsernamePassword/service.svc/CEP"
	cesPassword := base + "/" + url.PathEscape(caName) + "_CES_UsernamePassword/service.svc/CES"
	cesCertificate := base + "/" + url.PathEscape(caName) + "_CES_Certificate/service.svc/CES"

	alice, err := New(cep, PasswordAuth{Username: s.Alice.UPN, Password: s.Alice.Password}, roots)
	if err != nil {
		t.Fatal(err)
	}
	bob, err := New(cep, PasswordAuth{Username: s.Bob.UPN, Password: s.Bob.Password}, roots)
	if err != nil {
		t.Fatal(err)
	}
	var caCert *x509.Certificate
	var pol *Policies

	t.Run("GetPolicies as alice", func(t *testing.T) {
		p, err := alice.GetPolicies(ctx, nil)
		if err != nil {
			t.Fatalf("GetPolicies: %v", err)
		}
		got := map[string]bool{}
		for _, tp := range p.Templates {
			got[tp.Name] = tp.Autoenroll
			if !tp.Enroll || tp.Validity != 365*24*time.Hour || tp.OID != s.Templates[tp.Name].OID || len(tp.CARefs) != 1 {
				t.Errorf("template %+v: want enroll, one year, OID %s, one CA", tp, s.Templates[tp.Name].OID)
			}
		}
		want := map[string]bool{"AEUser": true, "AEUserV2": true, "PendUser": false, "SuppliesSubject": false}
		if len(got) != len(want) {
			t.Errorf("alice's templates = %v, want %v", got, want)
		}
		for name, auto := range want {
			if a, ok := got[name]; !ok || a != auto {
				t.Errorf("template %s: present %v autoenroll %v, want autoenroll %v", name, ok, a, auto)
			}
		}
		if p.NextUpdateHours != 8 || p.NotChanged || len(p.CAs) != 1 || p.CAs[0].Certificate == nil {
			t.Fatalf("policies = %+v, want 8 hours, changed, one CA", p)
		}
		caCert = p.CAs[0].Certificate
		ae, _ := p.Template("AEUser")
		if u, err := p.EnrollmentURL(ae, AuthUsername); err != nil || u != cesPassword {
			t.Errorf("EnrollmentURL(AEUser, 4) = %q, %v, want %s", u, err, cesPassword)
		}
		if u, err := p.EnrollmentURL(ae, AuthCertificate); err != nil || u != cesCertificate {
			t.Errorf("EnrollmentURL(AEUser, 8) = %q, %v, want %s", u, err, cesCertificate)
		}
		pol = p

		future := time.Now().Add(time.Hour)
		if p, err := alice.GetPolicies(ctx, &future); err != nil || !p.NotChanged || len(p.Templates) != 0 {
			t.Errorf("GetPolicies(lastUpdate = in an hour) = %+v, %v, want NotChanged", p, err)
		}
	})
	if pol == nil {
		t.Fatal("no policy: the other steps need it")
	}
	aeUser, _ := pol.Template("AEUser")
	ces, err := pol.EnrollmentURL(aeUser, AuthUsername)
	if err != nil {
		t.Fatal(err)
	}
	verify := func(t *testing.T, res *Result) {
		t.Helper()
		inter := x509.NewCertPool()
		for _, c := range res.Chain {
			inter.AddCert(c)
		}
		roots := x509.NewCertPool()
		roots.AddCert(caCert)
		if _, err := res.Certificate.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter,
			KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
			t.Errorf("issued certificate does not chain to the CA: %v", err)
		}
		if len(res.Chain) == 0 || !res.Chain[0].Equal(caCert) {
			t.Errorf("chain = %v, want the CA certificate", res.Chain)
		}
	}
	var aliceCert *x509.Certificate
	var aliceKey *rsa.PrivateKey

	t.Run("Issue AEUser as alice: issued", func(t *testing.T) {
		csr, key := templateCSR(t, aeUser.OID)
		res, err := alice.Issue(ctx, ces, csr, nil)
		if err != nil {
			t.Fatalf("Issue: %v", err)
		}
		if res.Status != StatusIssued || res.RequestID <= 0 || res.Certificate == nil {
			t.Fatalf("Issue = %+v, want issued", res)
		}
		if len(res.Certificate.EmailAddresses) != 1 || res.Certificate.EmailAddresses[0] != s.Alice.Mail {
			t.Errorf("certificate names %v %v, want alice (%s)", res.Certificate.Subject, res.Certificate.EmailAddresses, s.Alice.Mail)
		}
		verify(t, res)
		aliceCert, aliceKey = res.Certificate, key
	})

	t.Run("PendUser: pending, approved, retrieved", func(t *testing.T) {
		pend, ok := pol.Template("PendUser")
		if !ok {
			t.Fatal("no PendUser template")
		}
		csr, _ := templateCSR(t, pend.OID)
		res, err := alice.Issue(ctx, ces, csr, nil)
		if err != nil || res.Status != StatusPending || res.RequestID <= 0 {
			t.Fatalf("Issue PendUser = %+v, %v, want pending with a request ID", res, err)
		}
		if res.ReferenceURI != ces {
			t.Errorf("pending reference = %q, want %s", res.ReferenceURI, ces)
		}
		if r, err := alice.QueryTokenStatus(ctx, ces, res.RequestID); err != nil || r.Status != StatusPending || r.RequestID != res.RequestID {
			t.Errorf("QueryTokenStatus while pending = %+v, %v", r, err)
		}
		if _, err := rt.Service.ApproveRequest(ctx, res.RequestID, "test"); err != nil {
			t.Fatalf("ApproveRequest(%d): %v", res.RequestID, err)
		}
		r, err := alice.QueryTokenStatus(ctx, ces, res.RequestID)
		if err != nil || r.Status != StatusIssued || r.Certificate == nil || r.RequestID != res.RequestID {
			t.Fatalf("QueryTokenStatus after approval = %+v, %v, want issued", r, err)
		}
		verify(t, r)
	})

	t.Run("Issue AEUser as bob: denied by Denied-Group", func(t *testing.T) {
		csr, _ := templateCSR(t, aeUser.OID)
		res, err := bob.Issue(ctx, ces, csr, nil)
		if err != nil {
			t.Fatalf("Issue as bob = %v, want a denial result, not an error", err)
		}
		if res.Status != StatusDenied || !strings.Contains(res.Reason, "Denied-Group") || res.ErrorCode == 0 || res.Certificate != nil {
			t.Errorf("bob's Issue = %+v, want denied naming Denied-Group with an error code", res)
		}
	})

	t.Run("wrong password: authentication error", func(t *testing.T) {
		c, err := New(cep, PasswordAuth{Username: s.Alice.UPN, Password: "Wrong-Passw0rd!"}, roots)
		if err != nil {
			t.Fatal(err)
		}
		_, err = c.GetPolicies(ctx, nil)
		if !errors.Is(err, ErrAuthentication) || !strings.Contains(err.Error(), "authentication failed") || strings.Contains(err.Error(), "Wrong-Passw0rd!") {
			t.Errorf("GetPolicies with a wrong password = %v, want ErrAuthentication", err)
		}
		csr, _ := templateCSR(t, aeUser.OID)
		if res, err := c.Issue(ctx, ces, csr, nil); !errors.Is(err, ErrAuthentication) {
			t.Errorf("Issue with a wrong password = %+v, %v, want ErrAuthentication", res, err)
		}
	})

	t.Run("untrusted server: TLS error", func(t *testing.T) {
		c, err := New(cep, PasswordAuth{Username: s.Alice.UPN, Password: s.Alice.Password}, x509.NewCertPool())
		if err != nil {
			t.Fatal(err)
		}
		var e *Error
		if _, err := c.GetPolicies(ctx, nil); err == nil || errors.As(err, &e) {
			t.Errorf("GetPolicies from an untrusted server = %v, want a TLS error", err)
		}
	})

	if aliceCert == nil {
		t.Fatal("no certificate for alice: the renewal steps need it")
	}

	t.Run("renewal over the UsernamePassword endpoint", func(t *testing.T) {
		csr, _ := templateCSR(t, aeUser.OID)
		token, err := cmc.SignRenewal(csr, aliceCert, aliceKey)
		if err != nil {
			t.Fatal(err)
		}
		res, err := alice.Issue(ctx, ces, token, nil)
		if err != nil || res.Status != StatusIssued {
			t.Fatalf("renewal = %+v, %v, want issued", res, err)
		}
		if string(res.Certificate.RawSubject) != string(aliceCert.RawSubject) || res.Certificate.SerialNumber.Cmp(aliceCert.SerialNumber) == 0 {
			t.Errorf("renewed certificate %v #%x, want a new one for %v", res.Certificate.Subject, res.Certificate.SerialNumber, aliceCert.Subject)
		}
		verify(t, res)
	})

	t.Run("client certificate: GetPolicies and renewal", func(t *testing.T) {
		cc, err := New(base+"/ADPolicyProvider_CEP_Certificate/service.svc/CEP",
			CertificateAuth{Certificate: tls.Certificate{Certificate: [][]byte{aliceCert.Raw}, PrivateKey: aliceKey, Leaf: aliceCert}}, roots)
		if err != nil {
			t.Fatal(err)
		}
		p, err := cc.GetPolicies(ctx, nil)
		if err != nil || len(p.Templates) != 4 {
			t.Fatalf("GetPolicies with alice's certificate = %+v, %v, want her 4 templates", p, err)
		}
		ae, _ := p.Template("AEUser")
		certCES, err := p.EnrollmentURL(ae, AuthCertificate)
		if err != nil {
			t.Fatal(err)
		}
		csr, _ := templateCSR(t, ae.OID)
		token, err := cmc.SignRenewal(csr, aliceCert, aliceKey)
		if err != nil {
			t.Fatal(err)
		}
		res, err := cc.Issue(ctx, certCES, token, nil)
		if err != nil || res.Status != StatusIssued {
			t.Fatalf("renewal over the certificate endpoint = %+v, %v, want issued", res, err)
		}
		verify(t, res)
		// A new request (no renewal) is refused there: renewals only.
		res, err = cc.Issue(ctx, certCES, csr, nil)
		if err != nil || res.Status != StatusDenied || !strings.Contains(res.Reason, "renewals only") {
			t.Errorf("new request over the certificate endpoint = %+v, %v, want denied: renewals only", res, err)
		}
	})
}

// TestKeyExchangeToken: the enrollment service answers MS-WSTEP's Key Exchange Token request
// with the CA exchange certificate (CN "<CA>-Xchg", RSA, keyEncipherment only, the CA Exchange
// EKU, a week), the same one each time; a client that trusts another CA refuses it.
func TestKeyExchangeToken(t *testing.T) {
	dc := ldaptest.StartDC(t)
	s := dc.Seed(t)
	rt, base, roots := startServer(t, dc, s, daemontest.Options{})
	ctx := context.Background()
	cep := base + "/ADPolicyProvider_CEP_UsernamePassword/service.svc/CEP"
	ces := base + "/" + url.PathEscape(caName) + "_CES_UsernamePassword/service.svc/CES"
	alice, err := New(cep, PasswordAuth{Username: s.Alice.UPN, Password: s.Alice.Password}, roots)
	if err != nil {
		t.Fatal(err)
	}
	x, err := alice.KeyExchangeCertificate(ctx, ces, rt.CACert)
	if err != nil {
		t.Fatalf("KeyExchangeCertificate: %v", err)
	}
	if x.Subject.CommonName != caName+"-Xchg" || x.KeyUsage != x509.KeyUsageKeyEncipherment ||
		x.NotAfter.Sub(x.NotBefore) > 8*24*time.Hour || len(x.ExtKeyUsage) != 0 {
		t.Errorf("exchange certificate: CN %q, key usage %v, %s, EKU %v", x.Subject.CommonName, x.KeyUsage, x.NotAfter.Sub(x.NotBefore), x.ExtKeyUsage)
	}
	again, err := alice.KeyExchangeCertificate(ctx, ces, rt.CACert)
	if err != nil || !again.Equal(x) {
		t.Errorf("a second Key Exchange Token request: %v (the same certificate: %v)", err, err == nil && again.Equal(x))
	}
	other := selfSignedCA(t)
	if _, err := alice.KeyExchangeCertificate(ctx, ces, other); err == nil || !strings.Contains(err.Error(), "not issued by the CA") {
		t.Errorf("an exchange certificate checked against another CA: %v", err)
	}
}

func selfSignedCA(t *testing.T) *x509.Certificate {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "Another CA"}, IsCA: true,
		BasicConstraintsValid: true, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, k.Public(), k)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return c
}
