package revoke

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"math/big"
	"testing"

	"golang.org/x/crypto/ocsp"
)

// FuzzParseRequest feeds the OCSP request parser arbitrary bytes. It must not panic, what it
// accepts must respect its limits, and where golang.org/x/crypto/ocsp also reads the request
// both must agree on the first CertID.
func FuzzParseRequest(f *testing.F) {
	key := keyFor(f, "p256")
	ca := newCA(f, key, "Fuzz CA")
	for _, h := range []crypto.Hash{crypto.SHA1, crypto.SHA256, crypto.SHA384, crypto.SHA512} {
		f.Add(must(ocsp.CreateRequest(&x509.Certificate{SerialNumber: big.NewInt(0x1234)}, ca, &ocsp.RequestOptions{Hash: h})))
	}
	id := certIDFor(f, ca, new(big.Int).SetBytes(bytes.Repeat([]byte{0xfe}, 20)), crypto.SHA1, oidSHA1)
	f.Add(reqSpec{ids: [][]byte{id}, exts: []ext{nonceExt(16)}}.der())
	f.Add(reqSpec{ids: [][]byte{id, id, id}, exts: []ext{nonceExt(32), {oid: []int{1, 2, 3}, value: []byte{5, 0}}}, signed: true}.der())
	f.Add(reqSpec{ids: [][]byte{id}, exts: []ext{{oid: oidNonce, value: []byte("raw nonce")}}}.der())
	f.Add([]byte{0x30, 0x03, 0x30, 0x01, 0x30})
	f.Fuzz(func(t *testing.T, der []byte) {
		req, err := parseRequest(der)
		if err != nil {
			if req != nil {
				t.Fatalf("parseRequest returned a request and the error %v", err)
			}
			return
		}
		if n := len(req.certIDs); n < 1 || n > maxCertIDs {
			t.Fatalf("parseRequest accepted %d CertIDs", n)
		}
		if req.nonce != nil && (len(req.nonce) < minNonce || len(req.nonce) > maxNonce+2) {
			t.Fatalf("parseRequest accepted a nonce of %d octets", len(req.nonce))
		}
		for _, id := range req.certIDs {
			again, err := parseCertID(id.raw)
			if err != nil || again.serial.Cmp(id.serial) != 0 || !bytes.Equal(again.nameHash, id.nameHash) {
				t.Fatalf("the raw CertID kept does not parse back: %v", err)
			}
		}
		theirs, err := ocsp.ParseRequest(der)
		if err != nil || req.certIDs[0].hash == 0 {
			return
		}
		id := req.certIDs[0]
		if theirs.HashAlgorithm != id.hash || theirs.SerialNumber.Cmp(id.serial) != 0 ||
			!bytes.Equal(theirs.IssuerNameHash, id.nameHash) || !bytes.Equal(theirs.IssuerKeyHash, id.keyHash) {
			t.Fatalf("x/crypto/ocsp reads %v %x %x %x, we read %v %x %x %x", theirs.HashAlgorithm, theirs.SerialNumber, theirs.IssuerNameHash, theirs.IssuerKeyHash,
				id.hash, id.serial, id.nameHash, id.keyHash)
		}
	})
}
