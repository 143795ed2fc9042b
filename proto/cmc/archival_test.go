package cmc

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"math/big"
	"testing"
	"time"

	"github.com/enrollment-appliance/aeappliance/proto/cms"
)

var archivalKeys = map[string]*rsa.PrivateKey{}

func rsaKeyNamed(t testing.TB, name string) *rsa.PrivateKey {
	t.Helper()
	if k, ok := archivalKeys[name]; ok {
		return k
	}
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	archivalKeys[name] = k
	return k
}

// exchangeCert is a CA exchange certificate for key (RSA, keyEncipherment).
func exchangeCert(t testing.TB, key *rsa.PrivateKey) *x509.Certificate {
	t.Helper()
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "Test CA-Xchg"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(7 * 24 * time.Hour), KeyUsage: x509.KeyUsageKeyEncipherment}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return c
}

func rsaCSR(t testing.TB, key crypto.Signer) []byte {
	t.Helper()
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "alice"}}, key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// TestKeyBlob: an RSA key written as a private key BLOB has MS-WCCE 2.2.2.9.1's header and size
// and reads back as the same key; a blob that is cut, has another header, or whose values do not
// belong together is refused.
func TestKeyBlob(t *testing.T) {
	key := rsaKeyNamed(t, "client")
	blob, err := MarshalKeyBlob(key)
	if err != nil {
		t.Fatal(err)
	}
	want := []byte{0x07, 0x02, 0, 0, 0x00, 0xA4, 0, 0, 'R', 'S', 'A', '2', 0x00, 0x08, 0, 0, 0x01, 0x00, 0x01, 0x00}
	if !bytes.Equal(blob[:20], want) || len(blob) != 1172 {
		t.Fatalf("blob header % x, %d bytes; want % x and 1172 bytes", blob[:20], len(blob), want)
	}
	if n := new(big.Int).SetBytes(reverse(blob[20 : 20+256])); n.Cmp(key.N) != 0 {
		t.Error("the modulus is not written little-endian after the header")
	}
	got, err := ParseKeyBlob(blob)
	if err != nil || !got.Equal(key) {
		t.Fatalf("ParseKeyBlob = %v, %v; want the key", got != nil, err)
	}
	other, _ := MarshalKeyBlob(rsaKeyNamed(t, "other"))
	for name, b := range map[string][]byte{
		"empty":       nil,
		"cut":         blob[:len(blob)-1],
		"longer":      append(bytes.Clone(blob), 0),
		"public blob": append([]byte{0x06}, blob[1:]...),
		"RSA1 magic":  patch(blob, 8, 0x31415352),
		"ECDH blob":   patch(blob, 0, 0x324B4345),
		"odd bits":    patch(blob, 12, 2047),
		"even e":      patch(blob, 16, 65536),
		"another d":   append(bytes.Clone(blob[:len(blob)-256]), other[len(other)-256:]...),
		"another p":   append(append(bytes.Clone(blob[:276]), other[276:404]...), blob[404:]...),
		"another dp":  append(append(bytes.Clone(blob[:532]), other[532:660]...), blob[660:]...),
	} {
		if _, err := ParseKeyBlob(b); err == nil || FailInfoOf(err) != FailBadRequest {
			t.Errorf("%s: %v, want a bad request", name, err)
		}
	}
	if _, err := MarshalKeyBlob(&rsa.PrivateKey{PublicKey: key.PublicKey, D: key.D, Primes: append(key.Primes, big.NewInt(3))}); err == nil {
		t.Error("a three-prime key was written")
	}
}

func reverse(b []byte) []byte {
	out := bytes.Clone(b)
	for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
		out[i], out[j] = out[j], out[i]
	}
	return out
}

func patch(b []byte, off int, v uint32) []byte {
	out := bytes.Clone(b)
	binary.LittleEndian.PutUint32(out[off:], v)
	return out
}

// TestArchivalRequest: a key archival request (EncryptKey, SignArchival) reads back as a CMC
// request signed by its own key with the envelope as ArchivedKey and its SHA-256 as the key
// hash; the envelope opens with the exchange key and holds the request's key. Anything that
// unbinds the envelope from the signature is refused.
func TestArchivalRequest(t *testing.T) {
	xkey, key := rsaKeyNamed(t, "exchange"), rsaKeyNamed(t, "client")
	xcert := exchangeCert(t, xkey)
	csr := rsaCSR(t, key)
	env, err := EncryptKey(key, xcert)
	if err != nil {
		t.Fatal(err)
	}
	der, err := SignArchival(csr, key, env)
	if err != nil {
		t.Fatal(err)
	}
	r, err := ParseRequest(der)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(env)
	if r.Kind != CMC || !r.SignerIsRequestKey || r.BodyPartID != 1 || !bytes.Equal(r.ArchivedKey, env) ||
		r.KeyHash != crypto.SHA256 || !bytes.Equal(r.EncryptedKeyHash, sum[:]) || !bytes.Equal(r.CSR, csr) {
		t.Fatalf("ParseRequest = kind %v signer-is-key %v body %d hash %v", r.Kind, r.SignerIsRequestKey, r.BodyPartID, r.KeyHash)
	}
	ed, err := cms.ParseEnvelopedData(r.ArchivedKey)
	if err != nil {
		t.Fatal(err)
	}
	blob, err := ed.Decrypt(xcert, xkey, cms.DecryptOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got, err := ParseKeyBlob(blob); err != nil || !got.Equal(key) {
		t.Fatalf("the envelope holds another key: %v", err)
	}

	// Re-sign the same PKIData with other unsigned attributes, or around a bare PKCS#10.
	sd, err := cms.ParseSignedData(der)
	if err != nil {
		t.Fatal(err)
	}
	otherEnv, _ := EncryptKey(rsaKeyNamed(t, "other"), xcert)
	resign := func(contentType []int, content []byte, unsigned []cms.Attribute, signer crypto.Signer) []byte {
		t.Helper()
		b, err := cms.NewSignedData(cms.SignOptions{ContentType: contentType, Content: content, Signer: signer,
			SignerKeyID: keyID(mustSPKI(signer.Public())), UnsignedAttributes: unsigned})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	archived := func(v ...[]byte) []cms.Attribute { return []cms.Attribute{{Type: oidArchivedKey, Values: v}} }
	for name, tc := range map[string]struct {
		der      []byte
		failInfo int
	}{
		"another envelope than the hash names": {resign(oidPKIData, sd.Content, archived(otherEnv), key), FailBadMessageCheck},
		"a key hash without an archived key":   {resign(oidPKIData, sd.Content, nil, key), FailBadRequest},
		"two archived keys":                    {resign(oidPKIData, sd.Content, archived(env, env), key), FailBadRequest},
		"an archived key that is no envelope":  {resign(oidPKIData, sd.Content, archived(csr), key), FailBadRequest},
		"an archived key with a bare PKCS#10":  {resign(cms.OIDData, csr, archived(env), key), FailBadRequest},
	} {
		if _, err := ParseRequest(tc.der); err == nil || FailInfoOf(err) != tc.failInfo {
			t.Errorf("%s: %v, want failInfo %d", name, err, tc.failInfo)
		}
	}
	// Without the key hash control the archived key is unbound.
	unbound := resign(oidPKIData, pkiDataT(t, 1, csr), archived(env), key)
	if _, err := ParseRequest(unbound); err == nil {
		t.Error("an archived key without a signed key hash was accepted")
	}
	// The hash as a bare control (not inside CmcAddAttributes), under SHA-1 (MS-WCCE <128>).
	h1 := crypto.SHA1.New()
	h1.Write(env)
	bare := resign(oidPKIData, pkiDataT(t, 1, csr, control(t, 2, oidEncryptedKeyHash, mustMarshal(t, h1.Sum(nil)))), archived(env), key)
	if r, err := ParseRequest(bare); err != nil || r.KeyHash != crypto.SHA1 || !bytes.Equal(r.ArchivedKey, env) {
		t.Errorf("bare SHA-1 key hash control: %v", err)
	}
	if _, err := SignArchival(csr, rsaKeyNamed(t, "other"), env); err == nil {
		t.Error("SignArchival signed with another key than the request's")
	}
}

// TestArchivalResponse: the full response to an archival request carries the key hash (and the
// issued certificate's hash) in a CmcAddAttributes control that ResponseKeyHash finds; an
// ordinary full response carries none.
func TestArchivalResponse(t *testing.T) {
	ca := newTestCA(t)
	issued := ca.issue(t, rsaKeyNamed(t, "client").Public(), "alice", 9)
	hash := bytes.Repeat([]byte{0xAB}, 32)
	der, err := FullPKIResponseArchived(issued, []*x509.Certificate{ca.cert}, 1, ca.key, ca.cert, hash)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := ResponseKeyHash(der); err != nil || !bytes.Equal(got, hash) {
		t.Fatalf("ResponseKeyHash = %x, %v", got, err)
	}
	sd, err := cms.ParseSignedData(der)
	if err != nil || sd.SignerInfos[0].Verify(ca.key.Public(), sd.ContentType, sd.Content) != nil {
		t.Fatalf("the archival response is not signed by the CA: %v", err)
	}
	plain, err := FullPKIResponse(issued, []*x509.Certificate{ca.cert}, 1, ca.key, ca.cert)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := ResponseKeyHash(plain); err != nil || got != nil {
		t.Errorf("ordinary response: key hash %x, %v", got, err)
	}
	if _, err := FullPKIResponseArchived(issued, nil, 1, ca.key, ca.cert, nil); err == nil {
		t.Error("an archival response without a key hash was built")
	}
}

// FuzzParseKeyBlob: a key blob from a client never panics the parser, and what it accepts is a
// valid key that writes back to the same bytes.
func FuzzParseKeyBlob(f *testing.F) {
	blob, err := MarshalKeyBlob(rsaKeyNamed(f, "client"))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(blob)
	f.Add(blob[:20])
	f.Add(patch(blob, 12, 1024))
	f.Fuzz(func(t *testing.T, b []byte) {
		k, err := ParseKeyBlob(b)
		if err != nil {
			return
		}
		if k.Validate() != nil {
			t.Fatal("accepted an invalid key")
		}
		again, err := MarshalKeyBlob(k)
		if err != nil || !bytes.Equal(again[20:], b[20:]) {
			t.Fatalf("accepted blob does not write back: %v", err)
		}
	})
}
