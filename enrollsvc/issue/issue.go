package issue

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/url"
	"time"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"

	"github.com/enrollment-appliance/aeappliance/proto/certutil"
)

// Config is the issuing CA: its certificate, the signer of its key (in the HSM) and the URLs
// every certificate carries.
type Config struct {
	CACert *x509.Certificate
	Signer crypto.Signer // must match CACert's public key
	// CRLURLs go into the CRL distribution points, OCSPURLs and CAIssuerURLs into the
	// authority information access extension of every certificate (unless an order says not to).
	CRLURLs      []string
	OCSPURLs     []string
	CAIssuerURLs []string
	// Backdate moves notBefore into the past to tolerate client clock skew (default 10 minutes,
	// as AD CS does); never before the CA certificate's notBefore.
	Backdate time.Duration
	// Now and Rand may be nil (time.Now, crypto/rand).
	Now  func() time.Time
	Rand io.Reader
}

// Issuer signs certificates under one CA.
type Issuer struct {
	cfg        Config
	linter     *linter
	lintKey    crypto.Signer
	lintParent *x509.Certificate // the CA certificate with the lint key's public key
	alg        x509.SignatureAlgorithm
	algDER     []byte // the CA's signature AlgorithmIdentifier
}

// New validates cfg and prepares the lint key. The CA signer must match the CA certificate.
func New(cfg Config) (*Issuer, error) {
	if cfg.CACert == nil {
		return nil, errors.New("issue: Config.CACert is required")
	}
	if cfg.Signer == nil {
		return nil, errors.New("issue: Config.Signer is required")
	}
	if !certutil.PublicKeysEqual(cfg.CACert.PublicKey, cfg.Signer.Public()) {
		return nil, errors.New("issue: Config.Signer does not match the public key of Config.CACert")
	}
	if !cfg.CACert.IsCA || cfg.CACert.KeyUsage&x509.KeyUsageCertSign == 0 {
		return nil, errors.New("issue: Config.CACert is not a CA certificate with keyCertSign")
	}
	if len(cfg.CACert.SubjectKeyId) == 0 {
		return nil, errors.New("issue: Config.CACert has no subject key identifier")
	}
	for name, list := range map[string][]string{"CRLURLs": cfg.CRLURLs, "OCSPURLs": cfg.OCSPURLs, "CAIssuerURLs": cfg.CAIssuerURLs} {
		for _, u := range list {
			if err := checkURL(u); err != nil {
				return nil, fmt.Errorf("issue: Config.%s: %w", name, err)
			}
		}
	}
	if cfg.Backdate == 0 {
		cfg.Backdate = 10 * time.Minute
	}
	if cfg.Backdate < 0 {
		return nil, errors.New("issue: Config.Backdate must not be negative")
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Rand == nil {
		cfg.Rand = rand.Reader
	}
	alg, algDER, err := caAlgorithm(cfg.Signer.Public())
	if err != nil {
		return nil, err
	}
	lintKey, err := newLintKey()
	if err != nil {
		return nil, err
	}
	lintParent := *cfg.CACert
	lintParent.PublicKey = lintKey.Public()
	l, err := newLinter()
	if err != nil {
		return nil, err
	}
	return &Issuer{cfg: cfg, linter: l, lintKey: lintKey, lintParent: &lintParent, alg: alg, algDER: algDER}, nil
}

// CACert returns the issuing CA certificate.
func (i *Issuer) CACert() *x509.Certificate { return i.cfg.CACert }

func checkURL(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		return fmt.Errorf("bad URL %q: %w", s, err)
	}
	if (u.Scheme != "http" && u.Scheme != "ldap") || u.Host == "" && u.Scheme == "http" {
		return fmt.Errorf("bad URL %q: want an http:// (or ldap://) URL", s)
	}
	return nil
}

// The lint copy. Prepare lints a certificate before the CA key signs it, so it builds a copy
// signed by a throwaway software key (x509.CreateCertificate signs and checks what it signs).
// The copy's signature value is never used; only its TBSCertificate is, which the CA key then
// signs, and which must name the CA's own signature algorithm (RFC 5280 4.1.2.3). The lint key is
// ECDSA P-256 whatever the CA key is, the cheapest signature Go makes and checks (an RSA-1024 lint
// key cost two thirds of an RSA-2048 signature in SoftHSM); when the CA's algorithm is another,
// build puts the CA's AlgorithmIdentifier in the TBSCertificate and the copy in place of the lint
// key's, and the copy keeps the lint key's signature bits.

// lintAlg is the lint key's signature algorithm.
const lintAlg = x509.ECDSAWithSHA256

func newLintKey() (crypto.Signer, error) { return ecdsa.GenerateKey(elliptic.P256(), rand.Reader) }

var (
	oidSHA256WithRSA   = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 11} // RFC 4055 5
	oidECDSAWithSHA256 = asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 2}   // RFC 5758 3.2
	oidECDSAWithSHA384 = asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 3}
	oidECDSAWithSHA512 = asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 4}
)

// caAlgorithm is the signature algorithm a CA key signs certificates with, as Go chooses it for
// the key (SHA-256 with RSA; ECDSA with the hash of the curve's size), and its DER
// AlgorithmIdentifier (RSA's with NULL parameters, RFC 4055 5; ECDSA's without, RFC 5758 3.2).
func caAlgorithm(pub crypto.PublicKey) (x509.SignatureAlgorithm, []byte, error) {
	var alg x509.SignatureAlgorithm
	var ai pkix.AlgorithmIdentifier
	switch k := pub.(type) {
	case *rsa.PublicKey:
		alg, ai = x509.SHA256WithRSA, pkix.AlgorithmIdentifier{Algorithm: oidSHA256WithRSA, Parameters: asn1.NullRawValue}
	case *ecdsa.PublicKey:
		switch k.Curve {
		case elliptic.P256():
			alg, ai = x509.ECDSAWithSHA256, pkix.AlgorithmIdentifier{Algorithm: oidECDSAWithSHA256}
		case elliptic.P384():
			alg, ai = x509.ECDSAWithSHA384, pkix.AlgorithmIdentifier{Algorithm: oidECDSAWithSHA384}
		case elliptic.P521():
			alg, ai = x509.ECDSAWithSHA512, pkix.AlgorithmIdentifier{Algorithm: oidECDSAWithSHA512}
		default:
			return 0, nil, fmt.Errorf("issue: unsupported CA curve %s", k.Curve.Params().Name)
		}
	default:
		return 0, nil, fmt.Errorf("issue: unsupported CA key type %T (want RSA or ECDSA)", pub)
	}
	der, err := asn1.Marshal(ai)
	return alg, der, err
}

// replaceTBSAlgorithm returns tbs (a DER TBSCertificate) with its signature AlgorithmIdentifier,
// the field after the optional version and the serial number, replaced by alg.
func replaceTBSAlgorithm(tbs, alg []byte) ([]byte, error) {
	in := cryptobyte.String(tbs)
	var body, version, serial, old cryptobyte.String
	if !in.ReadASN1(&body, cbasn1.SEQUENCE) || !in.Empty() {
		return nil, errors.New("issue: the built TBSCertificate is not one SEQUENCE")
	}
	versionTag := cbasn1.Tag(0).Constructed().ContextSpecific()
	if body.PeekASN1Tag(versionTag) && !body.ReadASN1Element(&version, versionTag) ||
		!body.ReadASN1Element(&serial, cbasn1.INTEGER) || !body.ReadASN1Element(&old, cbasn1.SEQUENCE) {
		return nil, errors.New("issue: the built TBSCertificate has no signature algorithm where RFC 5280 puts it")
	}
	var b cryptobyte.Builder
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddBytes(version)
		b.AddBytes(serial)
		b.AddBytes(alg)
		b.AddBytes(body)
	})
	return b.Bytes()
}

// Order is what policy approved: who the certificate is for and what it may contain.
type Order struct {
	Subject pkix.Name
	// RawSubject, when set, is the DER subject Name used as it is (Subject is then ignored): it
	// keeps exact string types and RDN order from the directory.
	RawSubject     []byte
	DNSNames       []string
	EmailAddresses []string
	IPAddresses    []net.IP
	URIs           []*url.URL
	PublicKey      crypto.PublicKey
	// Key is what the template or profile asks of PublicKey; Prepare refuses a key that fails
	// it or this CA's floor (KeyProblems).
	Key         KeyRules
	Validity    time.Duration
	KeyUsage    x509.KeyUsage
	ExtKeyUsage []x509.ExtKeyUsage
	UnknownEKUs []asn1.ObjectIdentifier
	// ExtraExtensions are added as they are (template, SID, UPN SAN, application policies).
	ExtraExtensions []pkix.Extension
	// NoRevocationInfo leaves CDP and OCSP out (template flag NOREVOCATIONINFOINISSUEDCERTS).
	NoRevocationInfo bool
}

// Prepared is a linted certificate ready for the CA to sign. Only Prepare makes one.
type Prepared struct {
	tbs       []byte
	sigAlg    asn1.RawValue
	hash      crypto.Hash
	serial    *big.Int
	subject   string
	notBefore time.Time
	notAfter  time.Time
	warnings  []string
}

// Serial is the certificate's serial number as lower-case hex (SerialString).
func (p *Prepared) Serial() string { return certutil.SerialString(p.serial) }

// Subject is the certificate's subject in RFC 2253 form.
func (p *Prepared) Subject() string { return p.subject }

// NotBefore and NotAfter are the certificate's validity.
func (p *Prepared) NotBefore() time.Time { return p.notBefore }

// NotAfter is the end of the certificate's validity.
func (p *Prepared) NotAfter() time.Time { return p.notAfter }

// Warnings are lint findings below error level (for the audit log).
func (p *Prepared) Warnings() []string { return p.warnings }

// newSerial returns a positive serial with 128 random bits (RFC 5280: at most 20 octets; CA/B
// Forum: at least 64 bits of entropy). The top bit of the first octet is clear, so the DER
// encoding never needs a leading zero and is exactly 16 octets, or shorter if the top octets are zero.
func newSerial(r io.Reader) (*big.Int, error) {
	b := make([]byte, 16)
	for {
		if _, err := io.ReadFull(r, b); err != nil {
			return nil, fmt.Errorf("reading random serial: %w", err)
		}
		b[0] &= 0x7f
		n := new(big.Int).SetBytes(b)
		if n.BitLen() > 64 { // never a short, guessable serial
			return n, nil
		}
	}
}

// subjectKeyID is RFC 5280 4.2.1.2 method (1): SHA-1 of the subjectPublicKey BIT STRING.
func subjectKeyID(pub crypto.PublicKey) ([]byte, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("encoding public key: %w", err)
	}
	var spki struct {
		Algorithm pkix.AlgorithmIdentifier
		PublicKey asn1.BitString
	}
	if _, err := asn1.Unmarshal(der, &spki); err != nil {
		return nil, fmt.Errorf("decoding public key: %w", err)
	}
	sum := sha1.Sum(spki.PublicKey.Bytes)
	return sum[:], nil
}

// validity computes notBefore/notAfter for an order, inside the CA certificate's validity.
func (i *Issuer) validity(d time.Duration) (time.Time, time.Time, error) {
	if d <= 0 {
		return time.Time{}, time.Time{}, errors.New("validity must be positive")
	}
	now := i.cfg.Now().UTC().Truncate(time.Second)
	ca := i.cfg.CACert
	if !now.Before(ca.NotAfter) {
		return time.Time{}, time.Time{}, fmt.Errorf("the CA certificate expired at %s", ca.NotAfter.UTC().Format(time.RFC3339))
	}
	if now.Before(ca.NotBefore) {
		return time.Time{}, time.Time{}, fmt.Errorf("the CA certificate is not valid before %s", ca.NotBefore.UTC().Format(time.RFC3339))
	}
	nb := now.Add(-i.cfg.Backdate)
	if nb.Before(ca.NotBefore) {
		nb = ca.NotBefore.UTC()
	}
	na := now.Add(d)
	if na.After(ca.NotAfter) {
		na = ca.NotAfter.UTC()
	}
	return nb, na, nil
}

// Prepare is the issuance gate: it checks the subject's key (KeyProblems under o.Key: type and
// size, exponent, small factors, ROCA, points off the curve, the CA's own key), builds the
// certificate for o and lints it. Only Prepare makes a *Prepared, and Sign signs nothing else,
// so no certificate reaches the CA key without passing both checks. A refused key is a
// *KeyError (errors.Is ErrKeyRefused); a lint failure wraps ErrLint.
func (i *Issuer) Prepare(o Order) (*Prepared, error) {
	b, err := i.Build(o)
	if err != nil {
		return nil, err
	}
	return i.lint(b)
}

// Built is a certificate built for an order and signed with the throwaway lint key, not yet
// linted: what the CA would sign, which Sign never accepts (only a *Prepared).
type Built struct {
	der  []byte // the lint copy: TBS, signature algorithm, the lint key's signature
	tbs  []byte
	alg  asn1.RawValue
	cert *x509.Certificate
	hash crypto.Hash
}

// TBS is the TBSCertificate the CA key would sign; Hash the hash its signature algorithm takes.
func (b *Built) TBS() []byte       { return b.tbs }
func (b *Built) Hash() crypto.Hash { return b.hash }

// Build checks the subject's key and builds the certificate for o (the first half of Prepare;
// enrollbench measures it alone).
func (i *Issuer) Build(o Order) (*Built, error) {
	if problems := KeyProblems(o.PublicKey, o.Key, i.cfg.CACert.PublicKey); len(problems) > 0 {
		return nil, &KeyError{Problems: problems}
	}
	nb, na, err := i.validity(o.Validity)
	if err != nil {
		return nil, fmt.Errorf("issue: %w", err)
	}
	serial, err := newSerial(i.cfg.Rand)
	if err != nil {
		return nil, fmt.Errorf("issue: %w", err)
	}
	ski, err := subjectKeyID(o.PublicKey)
	if err != nil {
		return nil, fmt.Errorf("issue: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               o.Subject,
		RawSubject:            o.RawSubject,
		DNSNames:              o.DNSNames,
		EmailAddresses:        o.EmailAddresses,
		IPAddresses:           o.IPAddresses,
		URIs:                  o.URIs,
		NotBefore:             nb,
		NotAfter:              na,
		KeyUsage:              o.KeyUsage,
		ExtKeyUsage:           o.ExtKeyUsage,
		UnknownExtKeyUsage:    o.UnknownEKUs,
		BasicConstraintsValid: true,
		IsCA:                  false,
		SubjectKeyId:          ski,
		ExtraExtensions:       o.ExtraExtensions,
		IssuingCertificateURL: i.cfg.CAIssuerURLs,
	}
	if !o.NoRevocationInfo {
		tmpl.CRLDistributionPoints = i.cfg.CRLURLs
		tmpl.OCSPServer = i.cfg.OCSPURLs
	}
	return i.build(tmpl, i.lintParent, o.PublicKey)
}

// build signs tmpl with the lint key under lintParent and keeps its TBS, made to name the CA's
// signature algorithm.
func (i *Issuer) build(tmpl, lintParent *x509.Certificate, pub crypto.PublicKey) (*Built, error) {
	t := *tmpl
	t.SignatureAlgorithm = lintAlg
	der, err := x509.CreateCertificate(rand.Reader, &t, lintParent, pub, i.lintKey)
	if err != nil {
		return nil, fmt.Errorf("issue: building certificate: %w", err)
	}
	var raw rawCertificate
	if rest, err := asn1.Unmarshal(der, &raw); err != nil || len(rest) != 0 {
		return nil, fmt.Errorf("issue: re-reading built certificate: %v", err)
	}
	if i.alg != lintAlg {
		tbs, err := replaceTBSAlgorithm(raw.TBS.FullBytes, i.algDER)
		if err != nil {
			return nil, err
		}
		raw.TBS, raw.SigAlg = asn1.RawValue{FullBytes: tbs}, asn1.RawValue{FullBytes: i.algDER}
		if der, err = asn1.Marshal(raw); err != nil {
			return nil, fmt.Errorf("issue: re-encoding built certificate: %w", err)
		}
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("issue: re-reading built certificate: %w", err)
	}
	h, err := hashFor(cert.SignatureAlgorithm)
	if err != nil {
		return nil, err
	}
	return &Built{der: der, tbs: raw.TBS.FullBytes, alg: raw.SigAlg, cert: cert, hash: h}, nil
}

// Lint lints b (the second half of Prepare; enrollbench measures it alone).
func (i *Issuer) Lint(b *Built) error {
	_, err := i.linter.lint(b.der, b.cert, i.cfg.CACert)
	return err
}

// lint lints b and makes it a *Prepared.
func (i *Issuer) lint(b *Built) (*Prepared, error) {
	warnings, err := i.linter.lint(b.der, b.cert, i.cfg.CACert)
	if err != nil {
		return nil, err
	}
	return &Prepared{
		tbs: b.tbs, sigAlg: b.alg, hash: b.hash, serial: b.cert.SerialNumber,
		subject: FormatName(b.cert.RawSubject), notBefore: b.cert.NotBefore, notAfter: b.cert.NotAfter, warnings: warnings,
	}, nil
}

// prepare builds tmpl under lintParent and lints it.
func (i *Issuer) prepare(tmpl, lintParent *x509.Certificate, pub crypto.PublicKey) (*Prepared, error) {
	b, err := i.build(tmpl, lintParent, pub)
	if err != nil {
		return nil, err
	}
	return i.lint(b)
}

type rawCertificate struct {
	TBS    asn1.RawValue
	SigAlg asn1.RawValue
	Sig    asn1.BitString
}

func hashFor(a x509.SignatureAlgorithm) (crypto.Hash, error) {
	switch a {
	case x509.SHA256WithRSA, x509.ECDSAWithSHA256:
		return crypto.SHA256, nil
	case x509.SHA384WithRSA, x509.ECDSAWithSHA384:
		return crypto.SHA384, nil
	case x509.SHA512WithRSA, x509.ECDSAWithSHA512:
		return crypto.SHA512, nil
	}
	return 0, fmt.Errorf("issue: unsupported signature algorithm %v", a)
}

// ContextSigner is a crypto.Signer that can take a deadline (hsm.Key is one).
type ContextSigner interface {
	SignContext(ctx context.Context, digest []byte, opts crypto.SignerOpts) ([]byte, error)
}

// Sign has the CA key sign p and returns the certificate, verified against the CA certificate.
func (i *Issuer) Sign(ctx context.Context, p *Prepared) (*x509.Certificate, error) {
	if p == nil || p.tbs == nil {
		return nil, errors.New("issue: Sign needs a certificate made by Prepare")
	}
	return i.signTBS(ctx, p, i.cfg.Signer, i.cfg.CACert)
}

func (i *Issuer) signTBS(ctx context.Context, p *Prepared, signer crypto.Signer, verifyWith *x509.Certificate) (*x509.Certificate, error) {
	h := p.hash.New()
	h.Write(p.tbs)
	digest := h.Sum(nil)
	var sig []byte
	var err error
	if cs, ok := signer.(ContextSigner); ok {
		sig, err = cs.SignContext(ctx, digest, p.hash)
	} else {
		sig, err = signer.Sign(i.cfg.Rand, digest, p.hash)
	}
	if err != nil {
		return nil, fmt.Errorf("issue: CA signature: %w", err)
	}
	der, err := asn1.Marshal(rawCertificate{TBS: asn1.RawValue{FullBytes: p.tbs}, SigAlg: p.sigAlg,
		Sig: asn1.BitString{Bytes: sig, BitLength: 8 * len(sig)}})
	if err != nil {
		return nil, fmt.Errorf("issue: encoding certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("issue: signed certificate does not parse: %w", err)
	}
	if !bytes.Equal(cert.RawTBSCertificate, p.tbs) {
		return nil, errors.New("issue: signed certificate differs from the linted one")
	}
	if verifyWith == nil {
		verifyWith = cert
	}
	if err := cert.CheckSignatureFrom(verifyWith); err != nil {
		return nil, fmt.Errorf("issue: CA signature does not verify: %w", err)
	}
	return cert, nil
}
