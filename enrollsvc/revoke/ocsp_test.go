package revoke

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"github.com/enrollment-appliance/aeappliance/proto/certutil"
	"math/big"
	"testing"
	"time"

	"golang.org/x/crypto/cryptobyte"
	casn1 "golang.org/x/crypto/cryptobyte/asn1"
	"golang.org/x/crypto/ocsp"
)

var (
	oidSHA1   = asn1.ObjectIdentifier{1, 3, 14, 3, 2, 26}
	oidSHA256 = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 2, 1}
	oidMD5    = asn1.ObjectIdentifier{1, 2, 840, 113549, 2, 5}
)

// certIDFor is a DER CertID for serial under issuer, computed apart from the code under test.
func certIDFor(t testing.TB, issuer *x509.Certificate, serial *big.Int, h crypto.Hash, oid asn1.ObjectIdentifier) []byte {
	t.Helper()
	var spki struct {
		Algorithm pkix.AlgorithmIdentifier
		PublicKey asn1.BitString
	}
	if _, err := asn1.Unmarshal(issuer.RawSubjectPublicKeyInfo, &spki); err != nil {
		t.Fatal(err)
	}
	name, key := h.New(), h.New()
	name.Write(issuer.RawSubject)
	key.Write(spki.PublicKey.Bytes)
	return must(asn1.Marshal(struct {
		Alg               pkix.AlgorithmIdentifier
		NameHash, KeyHash []byte
		Serial            *big.Int
	}{pkix.AlgorithmIdentifier{Algorithm: oid, Parameters: asn1.NullRawValue}, name.Sum(nil), key.Sum(nil), serial}))
}

type ext struct {
	oid      asn1.ObjectIdentifier
	critical bool
	value    []byte
}

// reqSpec describes an OCSPRequest to build by hand.
type reqSpec struct {
	version int64
	ids     [][]byte
	exts    []ext
	signed  bool
}

func (s reqSpec) der() []byte {
	var b cryptobyte.Builder
	b.AddASN1(casn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddASN1(casn1.SEQUENCE, func(b *cryptobyte.Builder) {
			if s.version != 0 {
				b.AddASN1(casn1.Tag(0).Constructed().ContextSpecific(), func(b *cryptobyte.Builder) { b.AddASN1Int64(s.version) })
			}
			b.AddASN1(casn1.SEQUENCE, func(b *cryptobyte.Builder) {
				for _, id := range s.ids {
					b.AddASN1(casn1.SEQUENCE, func(b *cryptobyte.Builder) { b.AddBytes(id) })
				}
			})
			if len(s.exts) > 0 {
				b.AddASN1(casn1.Tag(2).Constructed().ContextSpecific(), func(b *cryptobyte.Builder) {
					b.AddASN1(casn1.SEQUENCE, func(b *cryptobyte.Builder) {
						for _, e := range s.exts {
							addExtension(b, e.oid, e.critical, func(b *cryptobyte.Builder) { b.AddBytes(e.value) })
						}
					})
				})
			}
		})
		if s.signed { // [0] EXPLICIT Signature: contents are not checked
			b.AddASN1(casn1.Tag(0).Constructed().ContextSpecific(), func(b *cryptobyte.Builder) {
				b.AddASN1(casn1.SEQUENCE, func(b *cryptobyte.Builder) {
					b.AddBytes(sigAlgOrPanic().algID)
					b.AddASN1BitString([]byte{1, 2, 3})
				})
			})
		}
	})
	return b.BytesOrPanic()
}

func sigAlgOrPanic() sigAlg { return must(sigAlgFor(rsaKey().Public())) }

// nonceExt is a nonce extension holding n random octets in an OCTET STRING.
func nonceExt(n int) ext {
	v := make([]byte, n)
	_, _ = rand.Read(v)
	return ext{oid: oidNonce, value: must(asn1.Marshal(v))}
}

// responseExtensions returns the responseExtensions of a parsed response.
func responseExtensions(t *testing.T, r *ocsp.Response) []pkix.Extension {
	t.Helper()
	var data struct {
		Version     int `asn1:"optional,default:0,explicit,tag:0"`
		ResponderID asn1.RawValue
		ProducedAt  time.Time `asn1:"generalized"`
		Responses   []asn1.RawValue
		Extensions  []pkix.Extension `asn1:"optional,explicit,tag:1"`
	}
	if rest, err := asn1.Unmarshal(r.TBSResponseData, &data); err != nil || len(rest) != 0 {
		t.Fatalf("ResponseData: %v", err)
	}
	return data.Extensions
}

// ocspFixture is a CA with serial 0x100 good, 0x101 revoked for keyCompromise, 0x102 revoked
// with no reason given, and a Responder on a fake clock.
type ocspFixture struct {
	ca    *x509.Certificate
	key   crypto.Signer
	src   *memSource
	clock *fakeClock
	r     *Responder
}

var (
	goodSerial, revokedSerial, unspecSerial = big.NewInt(0x100), big.NewInt(0x101), big.NewInt(0x102)
	revokedAt                               = epoch.Add(-time.Hour)
)

func newOCSPFixture(t testing.TB, kind string) *ocspFixture {
	t.Helper()
	key := keyFor(t, kind)
	f := &ocspFixture{ca: newCA(t, key, "OCSP Test CA "+kind), key: key, src: newMemSource(), clock: &fakeClock{t: epoch}}
	f.src.issue(goodSerial)
	f.src.revoke(Entry{Serial: revokedSerial, RevokedAt: revokedAt, Reason: 1}, revokedAt)
	f.src.revoke(Entry{Serial: unspecSerial, RevokedAt: revokedAt}, revokedAt)
	r, err := NewResponder(ResponderOptions{CA: f.ca, Signer: key, Source: f.src, Now: f.clock.Now, Log: quiet})
	if err != nil {
		t.Fatalf("NewResponder: %v", err)
	}
	f.r = r
	return f
}

func TestRespond(t *testing.T) {
	f := newOCSPFixture(t, "p256")
	other := newCA(t, keyFor(t, "p256"), "Another CA")
	sameKey := newCA(t, f.key, "Another CA with our key")
	sameName := newCA(t, keyFor(t, "p256"), f.ca.Subject.CommonName)
	id := func(serial *big.Int) []byte { return certIDFor(t, f.ca, serial, crypto.SHA1, oidSHA1) }
	id256 := func(serial *big.Int) []byte { return certIDFor(t, f.ca, serial, crypto.SHA256, oidSHA256) }
	n16, n32 := nonceExt(16), nonceExt(32)
	raw16 := ext{oid: oidNonce, value: bytes.Repeat([]byte{0x42}, 16)}
	many := make([][]byte, 17)
	for i := range many {
		many[i] = id(goodSerial)
	}
	badParams := must(asn1.Marshal(struct {
		Alg               pkix.AlgorithmIdentifier
		NameHash, KeyHash []byte
		Serial            *big.Int
	}{pkix.AlgorithmIdentifier{Algorithm: oidSHA1, Parameters: asn1.RawValue{Tag: asn1.TagInteger, Bytes: []byte{1}}}, nil, nil, goodSerial}))
	type single struct {
		serial *big.Int
		status int
		reason int
	}
	for _, tc := range []struct {
		name    string
		der     []byte
		status  ocsp.ResponseStatus
		singles []single
		nonce   []byte // the extnValue to find in the answer
		hash    crypto.Hash
	}{
		{name: "good SHA-1", der: reqSpec{ids: [][]byte{id(goodSerial)}}.der(), singles: []single{{goodSerial, ocsp.Good, 0}}, hash: crypto.SHA1},
		{name: "good SHA-256", der: reqSpec{ids: [][]byte{id256(goodSerial)}}.der(), singles: []single{{goodSerial, ocsp.Good, 0}}, hash: crypto.SHA256},
		{name: "x/crypto request", der: must(ocsp.CreateRequest(&x509.Certificate{SerialNumber: revokedSerial}, f.ca, nil)), singles: []single{{revokedSerial, ocsp.Revoked, 1}}},
		{name: "revoked keyCompromise", der: reqSpec{ids: [][]byte{id(revokedSerial)}}.der(), singles: []single{{revokedSerial, ocsp.Revoked, 1}}},
		{name: "revoked unspecified", der: reqSpec{ids: [][]byte{id(unspecSerial)}}.der(), singles: []single{{unspecSerial, ocsp.Revoked, 0}}},
		// RFC 5019 2.2.3: no pre-produced response, unauthorized (unsigned: it costs no signature).
		{name: "never issued", der: reqSpec{ids: [][]byte{id(big.NewInt(0x999))}}.der(), status: ocsp.Unauthorized},
		{name: "serial zero", der: reqSpec{ids: [][]byte{id(big.NewInt(0))}}.der(), status: ocsp.Unauthorized},
		// RFC 5019 2.1.1: one certificate per request.
		{name: "three at once", der: reqSpec{ids: [][]byte{id(goodSerial), id256(revokedSerial), id(big.NewInt(7))}}.der(), status: ocsp.Malformed},
		// RFC 5019 2.1: a pre-signed answer carries no nonce; a well-formed one is accepted and ignored.
		{name: "nonce 16", der: reqSpec{ids: [][]byte{id(goodSerial)}, exts: []ext{n16}}.der(), singles: []single{{goodSerial, ocsp.Good, 0}}},
		{name: "nonce 32", der: reqSpec{ids: [][]byte{id(goodSerial)}, exts: []ext{n32}}.der(), singles: []single{{goodSerial, ocsp.Good, 0}}},
		{name: "critical nonce", der: reqSpec{ids: [][]byte{id(goodSerial)}, exts: []ext{{oid: oidNonce, critical: true, value: n16.value}}}.der(),
			singles: []single{{goodSerial, ocsp.Good, 0}}},
		{name: "raw nonce", der: reqSpec{ids: [][]byte{id(goodSerial)}, exts: []ext{raw16}}.der(), singles: []single{{goodSerial, ocsp.Good, 0}}},
		{name: "signed request", der: reqSpec{ids: [][]byte{id(goodSerial)}, signed: true}.der(), singles: []single{{goodSerial, ocsp.Good, 0}}},
		{name: "non-critical unknown extension", der: reqSpec{ids: [][]byte{id(goodSerial)}, exts: []ext{{oid: asn1.ObjectIdentifier{1, 2, 3}, value: []byte{5, 0}}}}.der(),
			singles: []single{{goodSerial, ocsp.Good, 0}}},

		{name: "garbage", der: []byte("GET / HTTP/1.0\r\n\r\n"), status: ocsp.Malformed},
		{name: "empty", der: nil, status: ocsp.Malformed},
		{name: "trailing data", der: append(reqSpec{ids: [][]byte{id(goodSerial)}}.der(), 0), status: ocsp.Malformed},
		{name: "version 2", der: reqSpec{version: 1, ids: [][]byte{id(goodSerial)}}.der(), status: ocsp.Malformed},
		{name: "no CertID", der: reqSpec{}.der(), status: ocsp.Malformed},
		{name: "17 CertIDs", der: reqSpec{ids: many}.der(), status: ocsp.Malformed},
		{name: "hash parameters", der: reqSpec{ids: [][]byte{badParams}}.der(), status: ocsp.Malformed},
		{name: "empty nonce", der: reqSpec{ids: [][]byte{id(goodSerial)}, exts: []ext{nonceExt(0)}}.der(), status: ocsp.Malformed},
		{name: "nonce 33", der: reqSpec{ids: [][]byte{id(goodSerial)}, exts: []ext{nonceExt(33)}}.der(), status: ocsp.Malformed},
		{name: "two nonces", der: reqSpec{ids: [][]byte{id(goodSerial)}, exts: []ext{n16, n32}}.der(), status: ocsp.Malformed},
		{name: "critical unknown extension", der: reqSpec{ids: [][]byte{id(goodSerial)}, exts: []ext{{oid: asn1.ObjectIdentifier{1, 2, 3}, critical: true, value: []byte{5, 0}}}}.der(),
			status: ocsp.Malformed},

		{name: "another CA", der: reqSpec{ids: [][]byte{certIDFor(t, other, goodSerial, crypto.SHA1, oidSHA1)}}.der(), status: ocsp.Unauthorized},
		{name: "another CA among ours", der: reqSpec{ids: [][]byte{id(goodSerial), certIDFor(t, other, goodSerial, crypto.SHA256, oidSHA256)}}.der(), status: ocsp.Unauthorized},
		{name: "another CA with our key", der: reqSpec{ids: [][]byte{certIDFor(t, sameKey, goodSerial, crypto.SHA1, oidSHA1)}}.der(), status: ocsp.Unauthorized},
		{name: "another CA with our name", der: reqSpec{ids: [][]byte{certIDFor(t, sameName, goodSerial, crypto.SHA1, oidSHA1)}}.der(), status: ocsp.Unauthorized},
		{name: "MD5 CertID", der: reqSpec{ids: [][]byte{certIDFor(t, f.ca, goodSerial, crypto.MD5, oidMD5)}}.der(), status: ocsp.Unauthorized},
		{name: "SHA-256 hashes under the SHA-1 OID", der: reqSpec{ids: [][]byte{certIDFor(t, f.ca, goodSerial, crypto.SHA256, oidSHA1)}}.der(), status: ocsp.Unauthorized},
	} {
		t.Run(tc.name, func(t *testing.T) {
			der, err := f.r.Respond(context.Background(), tc.der)
			if err != nil {
				t.Fatalf("Respond: %v", err)
			}
			if tc.status != ocsp.Success {
				var re ocsp.ResponseError
				if _, err := ocsp.ParseResponse(der, f.ca); !errors.As(err, &re) || re.Status != tc.status {
					t.Errorf("Respond = %x (%v), want OCSPResponseStatus %v", der, err, tc.status)
				}
				return
			}
			for _, s := range tc.singles {
				r, err := ocsp.ParseResponseForCert(der, &x509.Certificate{SerialNumber: s.serial}, f.ca)
				if err != nil {
					t.Fatalf("ParseResponseForCert(%x): %v", s.serial, err)
				}
				if err := r.CheckSignatureFrom(f.ca); err != nil {
					t.Errorf("response signature: %v", err)
				}
				if r.Status != s.status || r.SerialNumber.Cmp(s.serial) != 0 {
					t.Errorf("serial %x: status %d, want %d", s.serial, r.Status, s.status)
				}
				if s.status == ocsp.Revoked && (!r.RevokedAt.Equal(revokedAt) || r.RevocationReason != s.reason) {
					t.Errorf("serial %x: revoked at %v for %d, want %v for %d", s.serial, r.RevokedAt, r.RevocationReason, revokedAt, s.reason)
				}
				if s.status == ocsp.Revoked && s.reason == 0 && bytes.Contains(r.TBSResponseData, []byte{0xa0, 0x03, 0x0a, 0x01, 0x00}) {
					t.Errorf("serial %x: revocationReason unspecified is sent, want it left out", s.serial)
				}
				if !r.ThisUpdate.Equal(epoch) || !r.NextUpdate.Equal(epoch.Add(time.Hour)) || !r.ProducedAt.Equal(epoch) {
					t.Errorf("times = %v, %v, produced %v; want %v, %v, %v", r.ThisUpdate, r.NextUpdate, r.ProducedAt, epoch, epoch.Add(time.Hour), epoch)
				}
				if !bytes.Equal(r.ResponderKeyHash, f.ca.SubjectKeyId) || r.Certificate != nil {
					t.Errorf("responder key hash %x, certificate %v; want %x and none", r.ResponderKeyHash, r.Certificate != nil, f.ca.SubjectKeyId)
				}
				if tc.hash != 0 && r.IssuerHash != tc.hash {
					t.Errorf("CertID hash = %v, want %v", r.IssuerHash, tc.hash)
				}
			}
			r, _ := ocsp.ParseResponseForCert(der, &x509.Certificate{SerialNumber: tc.singles[0].serial}, f.ca)
			exts := responseExtensions(t, r)
			switch {
			case tc.nonce == nil && len(exts) != 0:
				t.Errorf("response extensions %v, want none", exts)
			case tc.nonce != nil && (len(exts) != 1 || !exts[0].Id.Equal(oidNonce) || exts[0].Critical || !bytes.Equal(exts[0].Value, tc.nonce)):
				t.Errorf("response extensions %v, want the nonce %x", exts, tc.nonce)
			}
		})
	}
}

func TestRespondStoreFails(t *testing.T) {
	f := newOCSPFixture(t, "p256")
	f.src.fail(errStore)
	der, err := f.r.Respond(context.Background(), reqSpec{ids: [][]byte{certIDFor(t, f.ca, goodSerial, crypto.SHA1, oidSHA1)}}.der())
	if !errors.Is(err, errStore) {
		t.Errorf("Respond error = %v, want %v", err, errStore)
	}
	var re ocsp.ResponseError
	if _, perr := ocsp.ParseResponse(der, f.ca); !errors.As(perr, &re) || re.Status != ocsp.InternalError {
		t.Errorf("Respond = %x (%v), want internalError", der, perr)
	}
	// Serials that cannot be ours are unauthorized (RFC 5019 2.2.3) without asking the store.
	for _, serial := range []*big.Int{big.NewInt(0), big.NewInt(-5), new(big.Int).Lsh(big.NewInt(1), 8*21)} {
		der, err := f.r.Respond(context.Background(), reqSpec{ids: [][]byte{certIDFor(t, f.ca, serial, crypto.SHA1, oidSHA1)}}.der())
		var re ocsp.ResponseError
		if _, perr := ocsp.ParseResponse(der, f.ca); err != nil || !errors.As(perr, &re) || re.Status != ocsp.Unauthorized {
			t.Errorf("Respond(serial %x) with the store down = %v, %v; want unauthorized", serial, err, perr)
		}
	}
}

func TestRespondDelegated(t *testing.T) {
	f := newOCSPFixture(t, "rsa")
	dkey := keyFor(t, "p256")
	dcert := newLeaf(t, f.ca, f.key, big.NewInt(0xd0), dkey.Public(), true)
	r, err := NewResponder(ResponderOptions{CA: f.ca, Signer: dkey, Cert: dcert, Source: f.src, Now: f.clock.Now, Validity: 4 * time.Hour})
	if err != nil {
		t.Fatalf("NewResponder: %v", err)
	}
	der, err := r.Respond(context.Background(), must(ocsp.CreateRequest(&x509.Certificate{SerialNumber: revokedSerial}, f.ca, &ocsp.RequestOptions{Hash: crypto.SHA256})))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := ocsp.ParseResponse(der, f.ca) // verifies the response with dcert, and dcert with the CA
	if err != nil {
		t.Fatalf("ParseResponse: %v", err)
	}
	if resp.Certificate == nil || !bytes.Equal(resp.Certificate.Raw, dcert.Raw) || resp.SignatureAlgorithm != x509.ECDSAWithSHA256 ||
		resp.Status != ocsp.Revoked || !resp.NextUpdate.Equal(epoch.Add(4*time.Hour)) {
		t.Errorf("delegated response: certificate %v, algorithm %v, status %d, nextUpdate %v; want the responder's, ECDSA-SHA256, revoked, %v",
			resp.Certificate != nil, resp.SignatureAlgorithm, resp.Status, resp.NextUpdate, epoch.Add(4*time.Hour))
	}
}

func TestNewResponderRefuses(t *testing.T) {
	f := newOCSPFixture(t, "p256")
	dkey := keyFor(t, "p256")
	noEKU := newLeaf(t, f.ca, f.key, big.NewInt(0xd1), dkey.Public(), false)
	otherKey := keyFor(t, "p256")
	foreign := newLeaf(t, newCA(t, otherKey, "Other"), otherKey, big.NewInt(0xd2), dkey.Public(), true)
	good := newLeaf(t, f.ca, f.key, big.NewInt(0xd3), dkey.Public(), true)
	for _, tc := range []struct {
		name string
		o    ResponderOptions
	}{
		{"no CA", ResponderOptions{Signer: f.key, Source: f.src}},
		{"no signer", ResponderOptions{CA: f.ca, Source: f.src}},
		{"no source", ResponderOptions{CA: f.ca, Signer: f.key}},
		{"other key", ResponderOptions{CA: f.ca, Signer: dkey, Source: f.src}},
		{"delegate without OCSPSigning", ResponderOptions{CA: f.ca, Signer: dkey, Cert: noEKU, Source: f.src}},
		{"delegate of another CA", ResponderOptions{CA: f.ca, Signer: dkey, Cert: foreign, Source: f.src}},
		{"delegate with the CA key", ResponderOptions{CA: f.ca, Signer: f.key, Cert: good, Source: f.src}},
		{"delegate expired", ResponderOptions{CA: f.ca, Signer: dkey, Cert: good, Source: f.src, Now: func() time.Time { return good.NotAfter.Add(time.Hour) }}},
		{"negative validity", ResponderOptions{CA: f.ca, Signer: f.key, Source: f.src, Validity: -time.Second}},
	} {
		if _, err := NewResponder(tc.o); err == nil {
			t.Errorf("NewResponder(%s) = nil error, want one", tc.name)
		}
	}
}

func BenchmarkOCSP(b *testing.B) {
	for _, kind := range []string{"p256", "rsa"} {
		b.Run(kind, func(b *testing.B) {
			f := newOCSPFixture(b, kind)
			req := must(ocsp.CreateRequest(&x509.Certificate{SerialNumber: revokedSerial}, f.ca, nil))
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, err := f.r.Respond(context.Background(), req); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "answers/s")
		})
	}
}

// Answers are pre-signed: many requests about a certificate cost one signature, which is made
// again only after half the validity or once the certificate is revoked; requests about serials
// the CA never issued cost none.
func TestPresignedAnswers(t *testing.T) {
	f := newOCSPFixture(t, "p256")
	key := &countingSigner{Signer: f.key}
	r, err := NewResponder(ResponderOptions{CA: f.ca, Signer: key, Source: f.src, Now: f.clock.Now, Log: quiet})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	ask := func(serial *big.Int) *ocsp.Response {
		t.Helper()
		der, err := r.Respond(ctx, reqSpec{ids: [][]byte{certIDFor(t, f.ca, serial, crypto.SHA1, oidSHA1)}, exts: []ext{nonceExt(16)}}.der())
		if err != nil {
			t.Fatal(err)
		}
		resp, err := ocsp.ParseResponseForCert(der, &x509.Certificate{SerialNumber: serial}, f.ca)
		if err != nil {
			return nil
		}
		return resp
	}
	for i := range 1000 {
		if resp := ask(goodSerial); resp == nil || resp.Status != ocsp.Good {
			t.Fatalf("request %d about the good certificate: %+v", i, resp)
		}
		if resp := ask(big.NewInt(int64(0x10000 + i))); resp != nil {
			t.Fatalf("a serial never issued got a signed answer: %+v", resp)
		}
	}
	if n := key.n.Load(); n != 1 {
		t.Errorf("2,000 requests made %d signatures, want 1 (the good certificate's)", n)
	}
	f.clock.Add(DefaultOCSPValidity/2 - time.Second)
	ask(goodSerial)
	if n := key.n.Load(); n != 1 {
		t.Errorf("before half the validity: %d signatures, want still 1", n)
	}
	f.clock.Add(time.Second)
	if resp := ask(goodSerial); resp == nil || !resp.ThisUpdate.Equal(f.clock.Now().UTC().Truncate(time.Second)) {
		t.Errorf("after half the validity the answer was not signed anew: %+v", resp)
	}
	if n := key.n.Load(); n != 2 {
		t.Errorf("after half the validity: %d signatures, want 2", n)
	}
	// A revocation is answered at once, without waiting for the kept answer's refresh.
	f.src.revoke(Entry{Serial: goodSerial, RevokedAt: f.clock.Now(), Reason: 1}, f.clock.Now())
	r.Revoked(certutil.SerialString(goodSerial))
	if resp := ask(goodSerial); resp == nil || resp.Status != ocsp.Revoked {
		t.Errorf("after Revoked: %+v, want revoked", resp)
	}
}
