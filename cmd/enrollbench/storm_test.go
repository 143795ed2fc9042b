package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"math/big"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/enrollment-appliance/aeappliance/enrollsvc/store"
	"github.com/enrollment-appliance/aeappliance/hsm/softhsm"
	"github.com/enrollment-appliance/aeappliance/proto/certutil"
)

var enrollsvcBin string

func TestMain(m *testing.M) {
	d, err := os.MkdirTemp("", "enrollbench-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if out, err := exec.Command("go", "build", "-o", d+"/", "github.com/enrollment-appliance/aeappliance/cmd/enrollsvc").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "building enrollsvc: %v\n%s", err, out)
		os.Exit(1)
	}
	enrollsvcBin = d + "/enrollsvc"
	code := m.Run()
	os.RemoveAll(d)
	os.Exit(code)
}

// testWriter logs each write of the storm's progress.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// The storm at a small scale, as make bench runs it at 10,000: 200 distinct accounts over MS-WSTEP
// with Kerberos, the same with passwords, and 200 SCEP devices with one-time challenges, against the
// real enrollsvc binary, a Samba DC and SoftHSM. Every client gets a certificate naming its own
// account (or device); the store holds each, no serial twice, each valid under the CA. No figure
// is asserted: make bench reports them.
func TestStormLosesNothing(t *testing.T) {
	if _, err := softhsm.ModulePath(); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("SoftHSM2 is required on CI: %v", err)
		}
		t.Skipf("SoftHSM2 not installed (make deps): %v", err)
	}
	var out bytes.Buffer
	o := stormOptions{clients: 200, concurrency: 32, kinds: []string{kindKerberos, kindPassword, kindSCEP},
		enrollsvc: enrollsvcBin, timeout: 2 * time.Minute, out: &out, progress: testWriter{t}}
	rep, err := storm(context.Background(), o)
	if rep != nil {
		rep.write(&out)
		t.Log("\n" + out.String())
	}
	if err != nil {
		t.Fatal(err)
	}
	if err := rep.problems(); err != nil {
		t.Error(err)
	}
	if len(rep.kinds) != 3 {
		t.Fatalf("%d kinds ran, want 3", len(rep.kinds))
	}
	for _, k := range rep.kinds {
		if len(k.received) != 200 || len(k.errors) != 0 {
			t.Errorf("%s: %d certificates, errors %v; want 200 and none", k.kind, len(k.received), k.errors)
		}
	}
	c := rep.check
	if c.received != 600 || c.lost != 0 || c.duplicates != 0 || c.invalid != 0 || c.undelivered != 0 || c.stored < 600 {
		t.Errorf("store check = %+v, want 600 received, all stored, nothing lost, duplicated, invalid or undelivered", c)
	}
}

// The store check finds what it must: a certificate received but not stored, stored with other
// bytes, received twice, or not issued by the CA; and a stored one of ours nobody received.
func TestStoreCheckFindsLossesAndDuplicates(t *testing.T) {
	ca, caKey := testCA(t, "Storm CA")
	other, otherKey := testCA(t, "Another CA")
	a, b, c, d := issueTest(t, ca, caKey, 1), issueTest(t, ca, caKey, 2), issueTest(t, ca, caKey, 3), issueTest(t, ca, caKey, 4)
	foreign := issueTest(t, other, otherKey, 5)
	stored := func(cs ...*x509.Certificate) []store.Certificate {
		var out []store.Certificate
		for _, c := range cs {
			out = append(out, store.Certificate{Serial: certutil.SerialString(c.SerialNumber), DER: c.Raw, Account: "storm000001"})
		}
		return out
	}
	ours := func(account string) bool { return strings.HasPrefix(account, "storm") }
	if got := checkStore(stored(a, b), ca, []*x509.Certificate{a, b}, ours); got.lost+got.duplicates+got.invalid+got.undelivered != 0 || got.received != 2 {
		t.Errorf("a clean storm: %+v, want nothing found", got)
	}
	s := stored(a, b, d)
	s[1].DER = c.Raw // b's serial with other bytes
	got := checkStore(s, ca, []*x509.Certificate{a, a, b, c, foreign}, ours)
	if got.duplicates != 1 || got.lost != 3 || got.invalid != 1 || got.undelivered != 1 {
		t.Errorf("check = %+v, want 1 duplicate (a), 3 lost (b with other bytes, c, foreign), 1 invalid (foreign), 1 undelivered (d)", got)
	}
}

func testCA(t *testing.T, cn string) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: cn}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, k.Public(), k)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return c, k
}

func issueTest(t *testing.T, ca *x509.Certificate, caKey *ecdsa.PrivateKey, serial int64) *x509.Certificate {
	t.Helper()
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: fmt.Sprint("leaf ", serial)},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, k.Public(), caKey)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return c
}
