package sceptest

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"math/big"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"

	"github.com/enrollment-appliance/aeappliance/proto/cms"
	"github.com/enrollment-appliance/aeappliance/proto/scep"
)

// PKI is a software CA and the two RSA RA certificates it issued (RFC 8894 §3.5.1), for tests of SCEP servers
// and clients: one signs CertReps, requests are encrypted to the other.
type PKI struct {
	CACert *x509.Certificate
	CAKey  crypto.Signer
	// RASignCert has keyUsage digitalSignature only, RAEncryptCert keyEncipherment only.
	RASignCert    *x509.Certificate
	RASignKey     *rsa.PrivateKey
	RAEncryptCert *x509.Certificate
	RAEncryptKey  *rsa.PrivateKey
}

var (
	rsaKeysMu sync.Mutex
	rsaKeys   []*rsa.PrivateKey
)

// RSAKey returns RSA-2048 key number i; keys are generated once per process in a small pool, since tests only
// need distinct keys, not secret ones.
func RSAKey(t testing.TB, i int) *rsa.PrivateKey {
	t.Helper()
	rsaKeysMu.Lock()
	defer rsaKeysMu.Unlock()
	for len(rsaKeys) <= i {
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			t.Fatal(err)
		}
		rsaKeys = append(rsaKeys, k)
	}
	return rsaKeys[i]
}

func serial(t testing.TB) *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 80))
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func createCert(t testing.TB, tmpl, parent *x509.Certificate, pub crypto.PublicKey, key crypto.Signer) *x509.Certificate {
	t.Helper()
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, key)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// NewPKI builds a CA (P-256 when ecCA, else RSA key 0) and the RA's signing (RSA key 1) and encryption (RSA
// key 5) certificates it issued.
func NewPKI(t testing.TB, ecCA bool) *PKI {
	t.Helper()
	var caKey crypto.Signer = RSAKey(t, 0)
	if ecCA {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		caKey = k
	}
	now := time.Now()
	caTmpl := &x509.Certificate{SerialNumber: serial(t), Subject: pkix.Name{CommonName: "SCEP Test CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.AddDate(100, 0, 0), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign}
	ca := createCert(t, caTmpl, caTmpl, caKey.Public(), caKey)
	p := &PKI{CACert: ca, CAKey: caKey, RASignKey: RSAKey(t, 1), RAEncryptKey: RSAKey(t, 5)}
	p.RASignCert = p.IssueRA(t, "SCEP Test RA (signing)", x509.KeyUsageDigitalSignature, p.RASignKey)
	p.RAEncryptCert = p.IssueRA(t, "SCEP Test RA (encryption)", x509.KeyUsageKeyEncipherment, p.RAEncryptKey)
	return p
}

// IssueRA issues an RA certificate for key with keyUsage ku (tests of wrong ones).
func (p *PKI) IssueRA(t testing.TB, cn string, ku x509.KeyUsage, key crypto.Signer) *x509.Certificate {
	t.Helper()
	tmpl := &x509.Certificate{SerialNumber: serial(t), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().AddDate(100, 0, 0), KeyUsage: ku}
	return createCert(t, tmpl, p.CACert, key.Public(), p.CAKey)
}

// FixedPKI reads the PKI saved in dir (ca.pem, ca.key, ra-sign.pem, ra-sign.key, ra-encrypt.pem,
// ra-encrypt.key), which captured client messages are encrypted to; with create, a missing dir is made with a
// new PKI.
func FixedPKI(t testing.TB, dir string, create bool) *PKI {
	t.Helper()
	if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) && create {
		p := NewPKI(t, false)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		caKey, err := x509.MarshalPKCS8PrivateKey(p.CAKey)
		if err != nil {
			t.Fatal(err)
		}
		for name, block := range map[string]*pem.Block{
			"ca.pem": {Type: "CERTIFICATE", Bytes: p.CACert.Raw}, "ca.key": {Type: "PRIVATE KEY", Bytes: caKey},
			"ra-sign.pem":    {Type: "CERTIFICATE", Bytes: p.RASignCert.Raw},
			"ra-sign.key":    {Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(p.RASignKey)},
			"ra-encrypt.pem": {Type: "CERTIFICATE", Bytes: p.RAEncryptCert.Raw},
			"ra-encrypt.key": {Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(p.RAEncryptKey)},
		} {
			if err := os.WriteFile(filepath.Join(dir, name), pem.EncodeToMemory(block), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	read := func(name string) []byte { return ReadPEM(t, filepath.Join(dir, name)).Bytes }
	p := &PKI{CACert: ReadCert(t, filepath.Join(dir, "ca.pem")),
		RASignCert: ReadCert(t, filepath.Join(dir, "ra-sign.pem")), RASignKey: ReadRSAKey(t, filepath.Join(dir, "ra-sign.key")),
		RAEncryptCert: ReadCert(t, filepath.Join(dir, "ra-encrypt.pem")), RAEncryptKey: ReadRSAKey(t, filepath.Join(dir, "ra-encrypt.key"))}
	k, err := x509.ParsePKCS8PrivateKey(read("ca.key"))
	if err != nil {
		t.Fatal(err)
	}
	p.CAKey = k.(crypto.Signer)
	return p
}

// Verifies reports whether leaf chains to the CA.
func (p *PKI) Verifies(leaf *x509.Certificate) error {
	roots := x509.NewCertPool()
	roots.AddCert(p.CACert)
	_, err := leaf.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
	return err
}

// SelfSigned is the certificate a requester signs a PKCSReq with.
func SelfSigned(t testing.TB, key crypto.Signer, cn string) *x509.Certificate {
	t.Helper()
	tmpl := &x509.Certificate{SerialNumber: serial(t), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	return createCert(t, tmpl, tmpl, key.Public(), key)
}

// NewCSR writes a PKCS#10 for cn with a challengePassword attribute (PrintableString, none when "").
func NewCSR(t testing.TB, key crypto.Signer, cn, challenge string) []byte {
	t.Helper()
	if challenge == "" {
		return NewCSRWithAttributes(t, key, cn)
	}
	return NewCSRWithAttributes(t, key, cn, ChallengeAttribute(cbasn1.PrintableString, []byte(challenge)))
}

func derOf(f cryptobyte.BuilderContinuation) []byte {
	var b cryptobyte.Builder
	f(&b)
	return b.BytesOrPanic()
}

// ChallengeAttribute is a DER challengePassword attribute whose one value has the given tag and content.
func ChallengeAttribute(tag cbasn1.Tag, value []byte) []byte {
	return derOf(func(b *cryptobyte.Builder) {
		b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
			b.AddASN1ObjectIdentifier(asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 7})
			b.AddASN1(cbasn1.SET, func(b *cryptobyte.Builder) {
				b.AddASN1(tag, func(b *cryptobyte.Builder) { b.AddBytes(value) })
			})
		})
	})
}

// NewCSRWithAttributes writes a PKCS#10 for cn whose attributes are attrs (DER Attributes), signed by key (RSA,
// SHA-256).
func NewCSRWithAttributes(t testing.TB, key crypto.Signer, cn string, attrs ...[]byte) []byte {
	t.Helper()
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: cn}}, key)
	if err != nil {
		t.Fatal(err)
	}
	parsed, _ := x509.ParseCertificateRequest(csr)
	// Rebuild the request info with the attributes, and sign it again.
	tbs := derOf(func(b *cryptobyte.Builder) {
		b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
			b.AddASN1Int64(0)
			b.AddBytes(parsed.RawSubject)
			b.AddBytes(parsed.RawSubjectPublicKeyInfo)
			b.AddASN1(cbasn1.Tag(0).ContextSpecific().Constructed(), func(b *cryptobyte.Builder) { b.AddBytes(bytes.Join(attrs, nil)) })
		})
	})
	h := crypto.SHA256.New()
	h.Write(tbs)
	sig, err := key.Sign(rand.Reader, h.Sum(nil), crypto.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	return derOf(func(b *cryptobyte.Builder) {
		b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
			b.AddBytes(tbs)
			b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
				b.AddASN1ObjectIdentifier(asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 11}) // sha256WithRSAEncryption
				b.AddASN1NULL()
			})
			b.AddASN1BitString(sig)
		})
	})
}

// Requester is a SCEP client built from the message codec.
type Requester struct {
	Key  *rsa.PrivateKey
	Cert *x509.Certificate // the signing certificate: self-signed, or the one being renewed
}

// NewRequester is a requester with RSA key number key and a self-signed certificate for cn.
func NewRequester(t testing.TB, key int, cn string) Requester {
	q := Requester{Key: RSAKey(t, key)}
	q.Cert = SelfSigned(t, q.Key, cn)
	return q
}

// Message writes a pkiMessage of type typ with content encrypted (AES-256-CBC) to ra (content nil: no
// envelope).
func (q Requester) Message(t testing.TB, typ int, txID string, content []byte, ra *x509.Certificate) (*scep.PKIMessage, []byte) {
	t.Helper()
	env := []byte{}
	if content != nil {
		var err error
		if env, err = cms.Encrypt(content, ra, cms.AES256CBC); err != nil {
			t.Fatal(err)
		}
	}
	return q.Signed(t, typ, txID, env)
}

// Signed writes a pkiMessage of type typ around env, an EnvelopedData made elsewhere.
func (q Requester) Signed(t testing.TB, typ int, txID string, env []byte) (*scep.PKIMessage, []byte) {
	t.Helper()
	nonce, err := scep.NewNonce()
	if err != nil {
		t.Fatal(err)
	}
	m := &scep.PKIMessage{MessageType: typ, TransactionID: txID, SenderNonce: nonce, Signer: q.Cert}
	der, err := m.Sign(env, q.Key)
	if err != nil {
		t.Fatal(err)
	}
	return m, der
}

// CertsOnly reads the certificates of a degenerate certs-only SignedData (no content, no signer).
func CertsOnly(t testing.TB, der []byte) []*x509.Certificate {
	t.Helper()
	sd, err := cms.ParseSignedData(der)
	if err != nil || sd.Content != nil || len(sd.SignerInfos) != 0 || len(sd.Certificates) == 0 {
		t.Fatalf("not a certs-only SignedData: %v", err)
	}
	return sd.Certificates
}

// Challenge is the challenge password the tests' servers accept, and the captured client messages carry.
const Challenge = "s3cret-Challenge"
