package revocation

import (
	"bytes"
	"crypto/x509"
	"math/big"
	"net/http/httptest"
	"slices"
	"testing"

	"golang.org/x/crypto/cryptobyte"
	casn1 "golang.org/x/crypto/cryptobyte/asn1"
	"golang.org/x/crypto/ocsp"
)

// The package's own parsers read bytes from the network: the issuing distribution point of a
// CRL and the CertIDs of an OCSP response. (The rest is parsed by crypto/x509 and x/crypto/ocsp.)

func FuzzParseIDP(f *testing.F) {
	f.Add(idpExtension(f, false, "http://pki.example.test/int.crl", "ldap:///CN=x").Value)
	f.Add(idpExtension(f, true).Value)
	f.Add([]byte{0x30, 0x03, 0x84, 0x01, 0xff})                   // indirectCRL
	f.Add([]byte{0x30, 0x04, 0x83, 0x02, 0x07, 0x80})             // onlySomeReasons
	f.Add([]byte{0x30, 0x06, 0xa0, 0x04, 0xa1, 0x02, 0x31, 0x00}) // nameRelativeToCRLIssuer
	f.Fuzz(func(t *testing.T, der []byte) {
		p, err := parseIDP(der)
		if err != nil {
			return
		}
		if len(p.uris) > 0 && !p.named {
			t.Errorf("parseIDP(%x) = URIs %q without a distribution point", der, p.uris)
		}
		ca := &x509.Certificate{IsCA: true, CRLDistributionPoints: p.uris}
		ee := &x509.Certificate{CRLDistributionPoints: p.uris}
		if p.covers(ca) == nil && p.covers(ee) == nil && (p.onlyCA || p.onlyUser || p.indirect || p.onlyAttr || p.onlySomeReason) {
			t.Errorf("parseIDP(%x) = %+v covers every certificate", der, p)
		}
	})
}

func FuzzCertIDs(f *testing.F) {
	tbs := ocspTBS(f)
	f.Add(tbs)
	f.Add(byKey(f, tbs))
	f.Add([]byte{0x30, 0x00})
	f.Fuzz(func(t *testing.T, der []byte) {
		ids, err := certIDs(der)
		if err != nil {
			return
		}
		for _, id := range ids {
			if id.serial == nil {
				t.Errorf("certIDs(%x) = a CertID without serial number", der)
			}
		}
	})
}

func TestCertIDs(t *testing.T) {
	tbs := ocspTBS(t)
	for name, der := range map[string][]byte{"byName": tbs, "byKey": byKey(t, tbs)} {
		ids, err := certIDs(der)
		if err != nil || len(ids) != 1 || ids[0].serial.Cmp(big.NewInt(goodSerial)) != 0 || len(ids[0].nameHash) != 20 || len(ids[0].keyHash) != 20 {
			t.Errorf("certIDs(%s response) = %+v, %v, want one CertID with SHA-1 hashes and serial %d", name, ids, err, goodSerial)
		}
	}
	for _, der := range [][]byte{nil, {0x30, 0x00}, append(slices.Clone(tbs), 0), tbs[:len(tbs)-1]} {
		if ids, err := certIDs(der); err == nil {
			t.Errorf("certIDs(%x) = %+v, want an error", der, ids)
		}
	}
}

// ocspTBS is the ResponseData of a real response about goodSerial.
func ocspTBS(t testing.TB) []byte {
	p := newPKI(t)
	w := httptest.NewRecorder()
	req, err := ocsp.CreateRequest(p.leaf(goodSerial), p.inter.cert, nil)
	if err != nil {
		t.Fatal(err)
	}
	r := httptest.NewRequest("POST", "/ocsp", bytes.NewReader(req))
	r.Header.Set("Content-Type", "application/ocsp-request")
	p.ocsp(ocspAnswer{})(w, r)
	resp, err := ocsp.ParseResponse(w.Body.Bytes(), p.inter.cert)
	if err != nil {
		t.Fatal(err)
	}
	return resp.TBSResponseData
}

// byKey replaces the byName ResponderID of a ResponseData with a byKey one.
func byKey(t testing.TB, tbs []byte) []byte {
	in := cryptobyte.String(tbs)
	var data cryptobyte.String
	if !in.ReadASN1(&data, casn1.SEQUENCE) || !data.SkipASN1(casn1.Tag(1).Constructed().ContextSpecific()) {
		t.Fatal("not a ResponseData with a byName responder ID")
	}
	var b cryptobyte.Builder
	b.AddASN1(casn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddASN1(casn1.Tag(2).Constructed().ContextSpecific(), func(b *cryptobyte.Builder) {
			b.AddASN1OctetString(make([]byte, 20))
		})
		b.AddBytes(data)
	})
	return b.BytesOrPanic()
}
