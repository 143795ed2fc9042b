package revoke

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"io"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ocsp"
)

// crlFixture is a CA with a Source of four revocations: two recorded before `split`, two after.
type crlFixture struct {
	ca      *x509.Certificate
	key     *countingSigner
	src     *memSource
	entries []Entry
	split   time.Time
}

func newCRLFixture(t *testing.T, kind string) *crlFixture {
	key := keyFor(t, kind)
	f := &crlFixture{ca: newCA(t, key, "Revoke Test CA "+kind), key: &countingSigner{Signer: key}, src: newMemSource(), split: epoch.Add(-time.Hour)}
	f.entries = []Entry{
		{Serial: big.NewInt(0x1234), RevokedAt: epoch.Add(-48 * time.Hour), Reason: 1},
		{Serial: new(big.Int).SetBytes(bytes.Repeat([]byte{0xff}, 16)), RevokedAt: epoch.Add(-47 * time.Hour)}, // needs a leading zero octet; unspecified
		{Serial: new(big.Int).SetBytes(bytes.Repeat([]byte{0x7f}, 20)), RevokedAt: epoch.Add(-30 * time.Minute), Reason: 4},
		{Serial: big.NewInt(1), RevokedAt: time.Date(2051, 1, 1, 0, 0, 0, 0, time.UTC), Reason: 5}, // GeneralizedTime
	}
	for i, e := range f.entries {
		recorded := f.split.Add(-time.Minute)
		if i >= 2 {
			recorded = f.split.Add(time.Minute)
		}
		f.src.revoke(e, recorded)
	}
	return f
}

func (f *crlFixture) options(number int64) CRLOptions {
	return CRLOptions{CA: f.ca, Signer: f.key, Number: big.NewInt(number), ThisUpdate: epoch.Add(1500 * time.Millisecond),
		NextUpdate: epoch.Add(7 * 24 * time.Hour), NextPublish: epoch.Add(84 * time.Hour)}
}

// checkEntries compares a parsed CRL's entries with want exactly.
func checkEntries(t *testing.T, rl *x509.RevocationList, want []Entry) {
	t.Helper()
	if len(rl.RevokedCertificateEntries) != len(want) {
		t.Errorf("CRL has %d entries, want %d", len(rl.RevokedCertificateEntries), len(want))
	}
	byserial := map[string]Entry{}
	for _, e := range want {
		byserial[e.Serial.Text(16)] = e
	}
	for _, got := range rl.RevokedCertificateEntries {
		w, ok := byserial[got.SerialNumber.Text(16)]
		if !ok {
			t.Errorf("CRL lists serial %x, which is not revoked", got.SerialNumber)
			continue
		}
		if !got.RevocationTime.Equal(w.RevokedAt) || got.ReasonCode != w.Reason {
			t.Errorf("entry %x = %v reason %d, want %v reason %d", got.SerialNumber, got.RevocationTime, got.ReasonCode, w.RevokedAt, w.Reason)
		}
		if w.Reason == 0 && len(got.Extensions) != 0 {
			t.Errorf("entry %x with reason unspecified has extensions %v, want none", got.SerialNumber, got.Extensions)
		}
	}
}

func findExt(rl *x509.RevocationList, oid asn1.ObjectIdentifier) (critical bool, value []byte, ok bool) {
	for _, e := range rl.Extensions {
		if e.Id.Equal(oid) {
			return e.Critical, e.Value, true
		}
	}
	return false, nil, false
}

func TestBuildCRL(t *testing.T) {
	for _, tc := range []struct {
		kind string
		alg  x509.SignatureAlgorithm
	}{{"p256", x509.ECDSAWithSHA256}, {"p384", x509.ECDSAWithSHA384}, {"rsa", x509.SHA256WithRSA}} {
		t.Run(tc.kind, func(t *testing.T) {
			f := newCRLFixture(t, tc.kind)
			dir := t.TempDir()
			caPEM := writePEM(t, dir, "ca.pem", "CERTIFICATE", f.ca.Raw)

			fullOpts := f.options(7)
			fullOpts.FreshestCRL = []string{"http://pki.example.test/crl/Test+.crl"}
			full, err := BuildCRL(context.Background(), f.src, fullOpts)
			if err != nil {
				t.Fatalf("BuildCRL(full): %v", err)
			}
			if n := f.key.n.Load(); n != 1 {
				t.Errorf("the CA key signed %d times for one CRL, want 1", n)
			}
			deltaOpts := f.options(8)
			deltaOpts.BaseNumber, deltaOpts.Since = big.NewInt(7), f.split
			delta, err := BuildCRL(context.Background(), f.src, deltaOpts)
			if err != nil {
				t.Fatalf("BuildCRL(delta): %v", err)
			}

			for _, c := range []struct {
				name   string
				crl    *CRL
				number int64
				want   []Entry
			}{{"full", full, 7, f.entries}, {"delta", delta, 8, f.entries[2:]}} {
				if c.crl.Entries != len(c.want) || c.crl.Number.Int64() != c.number || !c.crl.ThisUpdate.Equal(epoch.Add(time.Second)) {
					t.Errorf("%s: CRL = %d entries, number %v, thisUpdate %v; want %d, %d, %v", c.name, c.crl.Entries, c.crl.Number, c.crl.ThisUpdate, len(c.want), c.number, epoch.Add(time.Second))
				}
				rl, err := x509.ParseRevocationList(c.crl.DER)
				if err != nil {
					t.Fatalf("%s: ParseRevocationList: %v", c.name, err)
				}
				if err := rl.CheckSignatureFrom(f.ca); err != nil {
					t.Errorf("%s: CheckSignatureFrom(CA) = %v", c.name, err)
				}
				if rl.SignatureAlgorithm != tc.alg {
					t.Errorf("%s: signature algorithm = %v, want %v", c.name, rl.SignatureAlgorithm, tc.alg)
				}
				if !bytes.Equal(rl.RawIssuer, f.ca.RawSubject) || !bytes.Equal(rl.AuthorityKeyId, f.ca.SubjectKeyId) {
					t.Errorf("%s: issuer %q AKI %x, want %q %x", c.name, rl.Issuer, rl.AuthorityKeyId, f.ca.Subject, f.ca.SubjectKeyId)
				}
				if rl.Number.Int64() != c.number || !rl.ThisUpdate.Equal(epoch.Add(time.Second)) || !rl.NextUpdate.Equal(epoch.Add(7*24*time.Hour)) {
					t.Errorf("%s: number %v, %v to %v; want %d, %v to %v", c.name, rl.Number, rl.ThisUpdate, rl.NextUpdate, c.number, epoch.Add(time.Second), epoch.Add(7*24*time.Hour))
				}
				checkEntries(t, rl, c.want)
				crit, val, ok := findExt(rl, oidDeltaCRL)
				if c.name == "delta" && (!ok || !crit || !bytes.Equal(val, []byte{0x02, 0x01, 0x07})) {
					t.Errorf("delta: DeltaCRLIndicator = %v critical %v value %x, want critical base 7", ok, crit, val)
				}
				if c.name == "full" && ok {
					t.Errorf("full: has a DeltaCRLIndicator")
				}
				if _, val, ok := findExt(rl, oidMSNextPublish); !ok || string(val) != "\x17\x0d260305220000Z" {
					t.Errorf("%s: Next CRL Publish = %q, want UTCTime 260305220000Z", c.name, val)
				}

				der := filepath.Join(dir, c.name+".crl")
				if err := os.WriteFile(der, c.crl.DER, 0o600); err != nil {
					t.Fatal(err)
				}
				out, err := openssl(t, "crl", "-inform", "DER", "-in", der, "-noout", "-text", "-CAfile", caPEM)
				if err != nil {
					t.Fatalf("%s: openssl crl: %v\n%s", c.name, err, out)
				}
				wantIn(t, c.name+": openssl crl", out, "verify OK", "Version 2 (0x1)", "X509v3 CRL Number:", "X509v3 Authority Key Identifier:",
					"Superseded", "Cessation Of Operation", "Jan  1 00:00:00 2051 GMT", "7F7F7F7F7F7F7F7F7F7F7F7F7F7F7F7F7F7F7F7F")
				if c.name == "full" {
					wantIn(t, "full: openssl crl", out, "Key Compromise", "FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF", "Freshest CRL:", "URI:http://pki.example.test/crl/Test+.crl")
				} else {
					wantIn(t, "delta: openssl crl", out, "Delta CRL Indicator: critical", "7")
					if strings.Contains(out, "Key Compromise") {
						t.Errorf("delta lists a revocation recorded before its base")
					}
				}
			}
		})
	}
}

func TestBuildCRLEmpty(t *testing.T) {
	key := keyFor(t, "p256")
	ca := newCA(t, key, "Empty CA")
	c, err := BuildCRL(context.Background(), newMemSource(), CRLOptions{CA: ca, Signer: key, Number: big.NewInt(0), ThisUpdate: epoch, NextUpdate: epoch.Add(time.Hour)})
	if err != nil {
		t.Fatalf("BuildCRL: %v", err)
	}
	rl, err := x509.ParseRevocationList(c.DER)
	if err != nil {
		t.Fatalf("ParseRevocationList: %v", err)
	}
	if err := rl.CheckSignatureFrom(ca); err != nil || len(rl.RevokedCertificateEntries) != 0 || rl.Number.Sign() != 0 {
		t.Errorf("empty CRL: signature %v, %d entries, number %v; want nil, 0, 0", err, len(rl.RevokedCertificateEntries), rl.Number)
	}
	// The revokedCertificates field is left out, not sent empty (RFC 5280 5.1.2.6).
	if bytes.Contains(rl.RawTBSRevocationList, []byte{0x30, 0x00}) {
		t.Errorf("TBSCertList contains an empty SEQUENCE: %x", rl.RawTBSRevocationList)
	}
	p := filepath.Join(t.TempDir(), "empty.crl")
	if err := os.WriteFile(p, c.DER, 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := openssl(t, "crl", "-inform", "DER", "-in", p, "-noout", "-text")
	if err != nil {
		t.Fatalf("openssl crl: %v\n%s", err, out)
	}
	wantIn(t, "openssl crl", out, "No Revoked Certificates.")
}

func TestBuildCRLRefuses(t *testing.T) {
	key := keyFor(t, "p256")
	ca := newCA(t, key, "Refusing CA")
	noCRLSign := *ca
	noCRLSign.KeyUsage = x509.KeyUsageCertSign
	good := CRLOptions{CA: ca, Signer: key, Number: big.NewInt(3), ThisUpdate: epoch, NextUpdate: epoch.Add(time.Hour)}
	big21 := new(big.Int).SetBytes(bytes.Repeat([]byte{1}, 21))
	for _, tc := range []struct {
		name  string
		edit  func(*CRLOptions)
		entry *Entry
		src   error
	}{
		{name: "no CA", edit: func(o *CRLOptions) { o.CA = nil }},
		{name: "other key", edit: func(o *CRLOptions) { o.Signer = keyFor(t, "p256") }},
		{name: "no cRLSign", edit: func(o *CRLOptions) { o.CA = &noCRLSign }},
		{name: "no number", edit: func(o *CRLOptions) { o.Number = nil }},
		{name: "negative number", edit: func(o *CRLOptions) { o.Number = big.NewInt(-1) }},
		{name: "21-octet number", edit: func(o *CRLOptions) { o.Number = big21 }},
		{name: "base not below number", edit: func(o *CRLOptions) { o.BaseNumber = big.NewInt(3) }},
		{name: "freshest on a delta", edit: func(o *CRLOptions) { o.BaseNumber, o.FreshestCRL = big.NewInt(2), []string{"http://x/y+.crl"} }},
		{name: "bad freshest URL", edit: func(o *CRLOptions) { o.FreshestCRL = []string{"no scheme"} }},
		{name: "nextUpdate not after thisUpdate", edit: func(o *CRLOptions) { o.NextUpdate = o.ThisUpdate }},
		{name: "zero serial", entry: &Entry{Serial: big.NewInt(0), RevokedAt: epoch}},
		{name: "21-octet serial", entry: &Entry{Serial: big21, RevokedAt: epoch}},
		{name: "reason 7", entry: &Entry{Serial: big.NewInt(5), RevokedAt: epoch, Reason: 7}},
		{name: "removeFromCRL in a full CRL", entry: &Entry{Serial: big.NewInt(5), RevokedAt: epoch, Reason: 8}},
		{name: "no revocation time", entry: &Entry{Serial: big.NewInt(5)}},
		{name: "store fails", src: errStore},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := good
			if tc.edit != nil {
				tc.edit(&o)
			}
			src := newMemSource()
			if tc.entry != nil {
				src.revoke(*tc.entry, epoch)
			}
			src.fail(tc.src)
			c, err := BuildCRL(context.Background(), src, o)
			if err == nil {
				t.Fatalf("BuildCRL = %d octets, want an error", len(c.DER))
			}
			if tc.src != nil && !errors.Is(err, tc.src) {
				t.Errorf("BuildCRL error = %v, want it to wrap %v", err, tc.src)
			}
		})
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	src := newMemSource()
	src.revoke(Entry{Serial: big.NewInt(9), RevokedAt: epoch}, epoch)
	if _, err := BuildCRL(ctx, src, good); !errors.Is(err, context.Canceled) {
		t.Errorf("BuildCRL(cancelled) = %v, want context.Canceled", err)
	}
}

// TestCRLOpenSSLVerify has openssl check certificates against our CRLs: a revoked one fails, a
// good one passes, and one revoked after the full CRL fails only when the delta is used.
func TestCRLOpenSSLVerify(t *testing.T) {
	for _, kind := range []string{"p256", "rsa"} {
		t.Run(kind, func(t *testing.T) {
			key := keyFor(t, kind)
			ca := newCA(t, key, "OpenSSL Verify CA "+kind)
			leafKey := keyFor(t, "p256")
			src := newMemSource()
			goodLeaf := newLeaf(t, ca, key, big.NewInt(0x100), leafKey.Public(), false)
			revoked := newLeaf(t, ca, key, big.NewInt(0x101), leafKey.Public(), false)
			late := newLeaf(t, ca, key, big.NewInt(0x102), leafKey.Public(), false)
			src.issue(goodLeaf.SerialNumber)
			src.revoke(Entry{Serial: revoked.SerialNumber, RevokedAt: epoch.Add(-time.Hour), Reason: 1}, epoch.Add(-time.Hour))
			src.revoke(Entry{Serial: late.SerialNumber, RevokedAt: epoch.Add(time.Hour), Reason: 4}, epoch.Add(time.Hour))
			// Built at real time: openssl checks thisUpdate and nextUpdate against its clock.
			now := time.Now()
			// The full CRL was built before the late revocation was recorded: it lists only the other.
			fullOnly := newMemSource()
			fullOnly.revoke(Entry{Serial: revoked.SerialNumber, RevokedAt: epoch.Add(-time.Hour), Reason: 1}, epoch.Add(-time.Hour))
			full, err := BuildCRL(context.Background(), fullOnly, CRLOptions{CA: ca, Signer: key, Number: big.NewInt(10),
				ThisUpdate: now.Add(-time.Minute), NextUpdate: now.Add(time.Hour), FreshestCRL: []string{"http://pki.example.test/d+.crl"}})
			if err != nil {
				t.Fatal(err)
			}
			delta, err := BuildCRL(context.Background(), src, CRLOptions{CA: ca, Signer: key, Number: big.NewInt(11), BaseNumber: big.NewInt(10),
				Since: epoch, ThisUpdate: now.Add(-time.Minute), NextUpdate: now.Add(time.Hour)})
			if err != nil {
				t.Fatal(err)
			}
			dir := t.TempDir()
			caPEM := writePEM(t, dir, "ca.pem", "CERTIFICATE", ca.Raw)
			fullPEM := writePEM(t, dir, "full.pem", "X509 CRL", full.DER)
			deltaPEM := writePEM(t, dir, "delta.pem", "X509 CRL", delta.DER)
			verify := func(leaf *x509.Certificate, deltas bool) (string, error) {
				args := []string{"verify", "-crl_check", "-CAfile", caPEM, "-CRLfile", fullPEM}
				if deltas {
					args = append(args, "-use_deltas", "-CRLfile", deltaPEM)
				}
				return openssl(t, append(args, writePEM(t, dir, leaf.SerialNumber.Text(16)+".pem", "CERTIFICATE", leaf.Raw))...)
			}
			for _, tc := range []struct {
				name   string
				leaf   *x509.Certificate
				deltas bool
				ok     bool
			}{
				{"good", goodLeaf, false, true},
				{"good with delta", goodLeaf, true, true},
				{"revoked", revoked, false, false},
				{"revoked after the full CRL, full only", late, false, true},
				{"revoked after the full CRL, with delta", late, true, false},
			} {
				out, err := verify(tc.leaf, tc.deltas)
				if tc.ok && (err != nil || !strings.Contains(out, ": OK")) {
					t.Errorf("%s: openssl verify = %v, want OK:\n%s", tc.name, err, out)
				}
				if !tc.ok && (err == nil || !strings.Contains(out, "certificate revoked")) {
					t.Errorf("%s: openssl verify = %v, want certificate revoked:\n%s", tc.name, err, out)
				}
			}
		})
	}
}

// seqSource lists n revocations, made up as it goes (no map: the builder is what is measured).
type seqSource struct{ n int }

func (s seqSource) EachRevoked(ctx context.Context, since time.Time, fn func(Entry) error) error {
	serial := new(big.Int).Lsh(big.NewInt(0x5a), 120)
	step := big.NewInt(7919)
	for i := 0; i < s.n; i++ {
		if i > 0 {
			serial.Add(serial, step)
		}
		if err := fn(Entry{Serial: serial, RevokedAt: epoch.Add(-time.Duration(i) * time.Second), Reason: i % 6}); err != nil {
			return err
		}
	}
	return nil
}

func (seqSource) CertStatus(context.Context, *big.Int) (Status, Entry, error) {
	return Unknown, Entry{}, nil
}

func TestBuildCRL100k(t *testing.T) {
	key := keyFor(t, "p256")
	ca := newCA(t, key, "Big CA")
	start := time.Now()
	c, err := BuildCRL(context.Background(), seqSource{n: 100_000}, CRLOptions{CA: ca, Signer: key, Number: big.NewInt(1), ThisUpdate: epoch, NextUpdate: epoch.Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	built := time.Since(start)
	rl, err := x509.ParseRevocationList(c.DER)
	if err != nil {
		t.Fatalf("ParseRevocationList: %v", err)
	}
	if err := rl.CheckSignatureFrom(ca); err != nil {
		t.Errorf("CheckSignatureFrom = %v", err)
	}
	if len(rl.RevokedCertificateEntries) != 100_000 || c.Entries != 100_000 {
		t.Fatalf("CRL has %d entries (said %d), want 100000", len(rl.RevokedCertificateEntries), c.Entries)
	}
	last := rl.RevokedCertificateEntries[99_999]
	if want := new(big.Int).Add(new(big.Int).Lsh(big.NewInt(0x5a), 120), big.NewInt(99_999*7919)); last.SerialNumber.Cmp(want) != 0 ||
		!last.RevocationTime.Equal(epoch.Add(-99_999*time.Second)) || last.ReasonCode != 99_999%6 {
		t.Errorf("last entry = %x %v %d, want %x %v %d", last.SerialNumber, last.RevocationTime, last.ReasonCode, want, epoch.Add(-99_999*time.Second), 99_999%6)
	}
	t.Logf("100,000 entries: %d octets, built in %v (parsed by crypto/x509 in %v)", len(c.DER), built, time.Since(start)-built)
}

func BenchmarkBuildCRL100k(b *testing.B) {
	var key crypto.Signer = keyFor(b, "p256")
	ca := newCA(b, key, "Bench CA")
	o := CRLOptions{CA: ca, Signer: key, Number: big.NewInt(1), ThisUpdate: epoch, NextUpdate: epoch.Add(time.Hour)}
	var size int
	b.ReportAllocs()
	for b.Loop() {
		c, err := BuildCRL(context.Background(), seqSource{n: 100_000}, o)
		if err != nil {
			b.Fatal(err)
		}
		size = len(c.DER)
	}
	b.ReportMetric(float64(size), "crl-bytes")
	b.ReportMetric(float64(b.N)*100_000/b.Elapsed().Seconds(), "entries/s")
}

// faultySigner corrupts every signature, as a failing HSM might.
type faultySigner struct{ crypto.Signer }

func (f faultySigner) Sign(r io.Reader, d []byte, o crypto.SignerOpts) ([]byte, error) {
	sig, err := f.Signer.Sign(r, d, o)
	if err == nil {
		sig[len(sig)/2] ^= 0x10
	}
	return sig, err
}

// deadlineSigner is an hsm.Key look-alike that records the deadline it was given.
type deadlineSigner struct {
	crypto.Signer
	deadline time.Time
}

func (d *deadlineSigner) SignContext(ctx context.Context, digest []byte, o crypto.SignerOpts) ([]byte, error) {
	d.deadline, _ = ctx.Deadline()
	return d.Signer.Sign(rand.Reader, digest, o)
}

func TestSignatureChecks(t *testing.T) {
	for _, kind := range []string{"p256", "rsa"} {
		key := keyFor(t, kind)
		ca := newCA(t, key, "Faulty CA "+kind)
		o := CRLOptions{CA: ca, Signer: faultySigner{key}, Number: big.NewInt(1), ThisUpdate: epoch, NextUpdate: epoch.Add(time.Hour)}
		if _, err := BuildCRL(context.Background(), newMemSource(), o); err == nil || !strings.Contains(err.Error(), "does not verify") {
			t.Errorf("%s: BuildCRL with a faulty key = %v, want a signature that does not verify", kind, err)
		}
		ds := &deadlineSigner{Signer: key}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		o.Signer = ds
		if _, err := BuildCRL(ctx, newMemSource(), o); err != nil {
			t.Errorf("%s: BuildCRL with SignContext: %v", kind, err)
		}
		if want, _ := ctx.Deadline(); !ds.deadline.Equal(want) {
			t.Errorf("%s: SignContext got deadline %v, want %v", kind, ds.deadline, want)
		}
		cancel()
	}
	// An OCSP answer signed by a faulty RSA key is not sent.
	f := newOCSPFixture(t, "rsa")
	r, err := NewResponder(ResponderOptions{CA: f.ca, Signer: faultySigner{f.key}, Source: f.src, Log: quiet})
	if err != nil {
		t.Fatal(err)
	}
	der, err := r.Respond(context.Background(), must(ocsp.CreateRequest(&x509.Certificate{SerialNumber: goodSerial}, f.ca, nil)))
	if err == nil || !bytes.Equal(der, ocsp.InternalErrorErrorResponse) {
		t.Errorf("Respond with a faulty RSA key = %x, %v; want internalError and an error", der, err)
	}
}

// listSource lists its entries in order; since applies to Recorded (RevokedAt when zero).
type listSource []Entry

func (s listSource) EachRevoked(ctx context.Context, since time.Time, fn func(Entry) error) error {
	for _, e := range s {
		recorded := e.Recorded
		if recorded.IsZero() {
			recorded = e.RevokedAt
		}
		if recorded.Before(since) {
			continue
		}
		if err := fn(e); err != nil {
			return err
		}
	}
	return nil
}

func (listSource) CertStatus(context.Context, *big.Int) (Status, Entry, error) {
	return Unknown, Entry{}, nil
}

// BuildCRLs makes from one walk exactly the CRLs two walks make (RSA PKCS #1 v1.5 signatures are
// deterministic, so the DER must be byte for byte the same), whatever the pattern of the delta's
// entries among the full CRL's: runs of every length, single entries, across the 1 MiB chunks,
// and a revocation recorded late but dated early (Entry.Recorded).
func TestBuildCRLsOneWalk(t *testing.T) {
	key := keyFor(t, "rsa")
	ca := newCA(t, key, "Pair CA")
	since := epoch.Add(-time.Hour)
	var src listSource
	serial := new(big.Int).Lsh(big.NewInt(0x77), 100)
	inDelta := 0
	for i := 0; len(src) < 60_000; i++ {
		run := 1 + i%37 // runs of 1 to 37 entries, in the delta and out of it by turns
		for j := 0; j < run; j++ {
			e := Entry{Serial: new(big.Int).Add(serial, big.NewInt(int64(len(src)))), Reason: len(src) % 7, RevokedAt: since.Add(-time.Duration(len(src)+1) * time.Second)}
			if i%2 == 1 {
				if j%5 == 0 {
					e.Recorded = since.Add(time.Duration(j) * time.Second) // dated before since, recorded after
				} else {
					e.RevokedAt = since.Add(time.Duration(j) * time.Second)
				}
				inDelta++
			}
			src = append(src, e)
		}
	}
	full := CRLOptions{CA: ca, Signer: key, Number: big.NewInt(41), ThisUpdate: epoch, NextUpdate: epoch.Add(24 * time.Hour),
		FreshestCRL: []string{"http://pki.example/ca+.crl"}}
	delta := CRLOptions{CA: ca, Signer: key, Number: big.NewInt(42), BaseNumber: big.NewInt(41), Since: since,
		ThisUpdate: epoch, NextUpdate: epoch.Add(time.Hour)}
	fc, dc, deltaErr, err := BuildCRLs(context.Background(), src, full, delta, nil)
	if err != nil || deltaErr != nil {
		t.Fatalf("BuildCRLs = %v, %v", err, deltaErr)
	}
	wantFull, err := BuildCRL(context.Background(), src, full)
	if err != nil {
		t.Fatal(err)
	}
	wantDelta, err := BuildCRL(context.Background(), src, delta)
	if err != nil {
		t.Fatal(err)
	}
	if fc.Entries != len(src) || dc.Entries != inDelta {
		t.Errorf("BuildCRLs listed %d and %d entries, want %d and %d", fc.Entries, dc.Entries, len(src), inDelta)
	}
	if !bytes.Equal(fc.DER, wantFull.DER) {
		t.Error("the full CRL of one walk differs from BuildCRL's")
	}
	if !bytes.Equal(dc.DER, wantDelta.DER) {
		t.Error("the delta CRL of one walk differs from BuildCRL's")
	}
	rl, err := x509.ParseRevocationList(dc.DER)
	if err != nil {
		t.Fatal(err)
	}
	if err := rl.CheckSignatureFrom(ca); err != nil {
		t.Errorf("delta signature: %v", err)
	}
	if len(rl.RevokedCertificateEntries) != inDelta {
		t.Errorf("the delta lists %d entries, want %d", len(rl.RevokedCertificateEntries), inDelta)
	}

	// Bad pairs are refused before anything is walked.
	for _, tc := range []struct {
		name        string
		full, delta CRLOptions
	}{
		{"delta on another base", full, func() CRLOptions { d := delta; d.BaseNumber = big.NewInt(40); return d }()},
		{"two full CRLs", full, full},
		{"a full CRL with since", func() CRLOptions { f := full; f.Since = since; return f }(), delta},
	} {
		if _, _, _, err := BuildCRLs(context.Background(), failingSource{t}, tc.full, tc.delta, nil); err == nil {
			t.Errorf("%s: BuildCRLs accepted it", tc.name)
		}
	}
}

// failingSource fails the test when walked.
type failingSource struct{ t *testing.T }

func (s failingSource) EachRevoked(context.Context, time.Time, func(Entry) error) error {
	s.t.Error("the source was walked")
	return nil
}

func (failingSource) CertStatus(context.Context, *big.Int) (Status, Entry, error) {
	return Unknown, Entry{}, nil
}

// orderedSource lists its entries in order of recording, as enrollsvc's store does, and notes
// where each walk started and how many entries it listed.
type orderedSource struct {
	mu     sync.Mutex
	list   listSource
	sinces []time.Time
	listed []int
}

func (s *orderedSource) add(es ...Entry) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.list = append(s.list, es...)
	slices.SortStableFunc(s.list, func(a, b Entry) int { return a.RevokedAt.Compare(b.RevokedAt) })
}

func (s *orderedSource) EachRevoked(ctx context.Context, since time.Time, fn func(Entry) error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	err := s.list.EachRevoked(ctx, since, func(e Entry) error { n++; return fn(e) })
	s.sinces, s.listed = append(s.sinces, since), append(s.listed, n)
	return err
}

func (*orderedSource) CertStatus(context.Context, *big.Int) (Status, Entry, error) {
	return Unknown, Entry{}, nil
}

// lastWalk is where the last walk started and how many entries it listed.
func (s *orderedSource) lastWalk() (time.Time, int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sinces[len(s.sinces)-1], s.listed[len(s.listed)-1]
}

// A full CRL built on the previous one (BuildCRLs with prev) walks only the recent revocations
// and is, byte for byte, the CRL a walk from the beginning makes: with revocations recorded
// since, and one committed late with a time before the previous walk's newest (within
// CarryMargin). Its delta is the same as well. A source out of order is walked from the start.
func TestBuildCRLsCarriesOver(t *testing.T) {
	key := keyFor(t, "rsa")
	ca := newCA(t, key, "Carry CA")
	serial := int64(0x1000)
	entry := func(at time.Time) Entry {
		serial++
		return Entry{Serial: big.NewInt(serial), RevokedAt: at, Reason: int(serial % 7)}
	}
	src := &orderedSource{}
	t1 := epoch
	var old []Entry
	for at := t1.Add(-30 * 24 * time.Hour); at.Before(t1.Add(-time.Minute)); at = at.Add(97 * time.Second) {
		old = append(old, entry(at))
	}
	src.add(old...)
	opts := func(number int64, now time.Time) (CRLOptions, CRLOptions) {
		return CRLOptions{CA: ca, Signer: key, Number: big.NewInt(number), ThisUpdate: now, NextUpdate: now.Add(24 * time.Hour)},
			CRLOptions{CA: ca, Signer: key, Number: big.NewInt(number + 1), BaseNumber: big.NewInt(number), Since: now.Add(-DeltaMargin),
				ThisUpdate: now, NextUpdate: now.Add(time.Hour)}
	}
	f1, d1 := opts(1, t1)
	first, _, derr, err := BuildCRLs(context.Background(), src, f1, d1, nil)
	if err != nil || derr != nil {
		t.Fatalf("BuildCRLs = %v, %v", err, derr)
	}
	if since, _ := src.lastWalk(); !since.IsZero() {
		t.Fatalf("the first walk started at %v, want the beginning", since)
	}

	t2 := t1.Add(time.Hour)
	src.add(entry(t1.Add(-3*time.Minute)), entry(t1.Add(-2*time.Minute))) // committed after the first walk, dated before its newest
	for at := t1.Add(time.Second); at.Before(t2); at = at.Add(5 * time.Minute) {
		src.add(entry(at))
	}
	f2, d2 := opts(3, t2)
	carried, carriedDelta, derr, err := BuildCRLs(context.Background(), src, f2, d2, first)
	if err != nil || derr != nil {
		t.Fatalf("BuildCRLs(prev) = %v, %v", err, derr)
	}
	since, listed := src.lastWalk()
	if since.IsZero() || listed > 40 {
		t.Errorf("the walk on the previous CRL started at %v and listed %d entries, want a recent start and a few", since, listed)
	}
	if since.After(t1.Add(-CarryMargin)) {
		t.Errorf("the walk started at %v, after the previous CRL's newest less the margin (%v)", since, t1.Add(-CarryMargin))
	}
	walked, wantDelta, derr, err := BuildCRLs(context.Background(), src, f2, d2, nil)
	if err != nil || derr != nil {
		t.Fatalf("BuildCRLs = %v, %v", err, derr)
	}
	if carried.Entries != len(src.list) || !bytes.Equal(carried.DER, walked.DER) {
		t.Errorf("the carried-over CRL (%d entries) differs from a walk from the beginning (%d entries, %d revoked)", carried.Entries, walked.Entries, len(src.list))
	}
	if !bytes.Equal(carriedDelta.DER, wantDelta.DER) {
		t.Error("the delta built with the carried-over CRL differs")
	}
	if !carried.Walked().Equal(first.Walked()) || first.Walked().IsZero() {
		t.Errorf("Walked() = %v, want the first walk's %v", carried.Walked(), first.Walked())
	}

	// A third on the second (a chain), then a source out of order: walked from the start.
	t3 := t2.Add(time.Hour)
	src.add(entry(t2.Add(time.Minute)))
	f3, d3 := opts(5, t3)
	third, _, _, err := BuildCRLs(context.Background(), src, f3, d3, carried)
	if err != nil {
		t.Fatal(err)
	}
	if want, _, _, _ := BuildCRLs(context.Background(), src, f3, d3, nil); !bytes.Equal(third.DER, want.DER) {
		t.Error("a CRL carried over twice differs from a walk from the beginning")
	}
	shuffled := &orderedSource{list: slices.Clone(src.list)}
	shuffled.list[0], shuffled.list[len(shuffled.list)-1] = shuffled.list[len(shuffled.list)-1], shuffled.list[0]
	unordered, _, _, err := BuildCRLs(context.Background(), shuffled, f3, d3, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := BuildCRLs(context.Background(), shuffled, f3, d3, unordered); err != nil {
		t.Fatal(err)
	}
	if since, listed := shuffled.lastWalk(); !since.IsZero() || listed != len(src.list) {
		t.Errorf("on a CRL whose walk was out of order the walk started at %v and listed %d, want the beginning and all %d", since, listed, len(src.list))
	}
	// A parsed CRL cannot be carried over.
	if _, _, _, err := BuildCRLs(context.Background(), src, f3, d3, &CRL{DER: third.DER, Number: third.Number}); err == nil {
		t.Error("BuildCRLs carried over a CRL it did not build")
	}
}

// The publisher carries its last full CRL over, and walks from the beginning once the chain's
// first walk is FullWalkEvery old.
func TestPublisherWalksFullyEveryDay(t *testing.T) {
	f := newCRLFixture(t, "p256")
	src := &orderedSource{}
	for i := range 50 {
		src.add(Entry{Serial: big.NewInt(int64(0x100 + i)), RevokedAt: epoch.Add(-time.Duration(50-i) * time.Hour)})
	}
	clock := &fakeClock{t: epoch}
	p, err := NewPublisher(src, &memNumbers{}, PublisherOptions{CA: f.ca, Signer: f.key, Now: clock.Now}, quiet)
	if err != nil {
		t.Fatal(err)
	}
	for i, tc := range []struct {
		after     time.Duration
		fromStart bool
	}{{0, true}, {time.Hour, false}, {12 * time.Hour, false}, {12 * time.Hour, true}, {time.Hour, false}} {
		now := clock.Add(tc.after)
		src.add(Entry{Serial: big.NewInt(int64(0x1000 + i)), RevokedAt: now.Add(-time.Minute)})
		full, _, err := p.Publish(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		since, _ := src.lastWalk()
		if since.IsZero() != tc.fromStart {
			t.Errorf("publication %d (at %v): walk from %v, want from the beginning %v", i, now, since, tc.fromStart)
		}
		if full.Entries != len(src.list) {
			t.Errorf("publication %d lists %d entries, want %d", i, full.Entries, len(src.list))
		}
	}
}
