package issue

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
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
	lintKey, err := newLintKey(cfg.Signer.Public())
	if err != nil {
		return nil, err
	}
	lintParent := *cfg.CACert
	lintParent.PublicKey = lintKey.Public()
	l, err := newLinter()
	if err != nil {
		return nil, err
	}
	return &Issuer{cfg: cfg, linter: l, lintKey: lintKey, lintParent: &lintParent}, nil
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

// newLintKey makes the throwaway software key the lint copy is signed with. It only has to
// produce the same signature algorithm as the CA key: the TBSCertificate does not contain the
// issuer's public key. For RSA a 1024-bit key does that at a quarter of the cost; for ECDSA the
// curve decides the hash, so the same curve is used.
func newLintKey(caPub crypto.PublicKey) (crypto.Signer, error) {
	switch pub := caPub.(type) {
	case *ecdsa.PublicKey:
		return ecdsa.GenerateKey(pub.Curve, rand.Reader)
	case *rsa.PublicKey:
		return rsa.GenerateKey(rand.Reader, 1024)
	}
	return nil, fmt.Errorf("issue: unsupported CA key type %T (want RSA or ECDSA)", caPub)
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
	p, err := i.prepare(tmpl, i.lintParent, o.PublicKey)
	if err != nil {
		return nil, err
	}
	return p, nil
}

// prepare signs tmpl with the lint key under lintParent, lints the result and keeps its TBS.
func (i *Issuer) prepare(tmpl, lintParent *x509.Certificate, pub crypto.PublicKey) (*Prepared, error) {
	der, err := x509.CreateCertificate(rand.Reader, tmpl, lintParent, pub, i.lintKey)
	if err != nil {
		return nil, fmt.Errorf("issue: building certificate: %w", err)
	}
	var raw rawCertificate
	if rest, err := asn1.Unmarshal(der, &raw); err != nil || len(rest) != 0 {
		return nil, fmt.Errorf("issue: re-reading built certificate: %v", err)
	}
	warnings, err := i.linter.lint(der, i.cfg.CACert)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("issue: re-reading built certificate: %w", err)
	}
	h, err := hashFor(cert.SignatureAlgorithm)
	if err != nil {
		return nil, err
	}
	return &Prepared{
		tbs: raw.TBS.FullBytes, sigAlg: raw.SigAlg, hash: h, serial: tmpl.SerialNumber,
		subject: FormatName(cert.RawSubject), notBefore: cert.NotBefore, notAfter: cert.NotAfter, warnings: warnings,
	}, nil
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
