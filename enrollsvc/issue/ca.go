package issue

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"time"
)

// RootOrder describes a self-signed CA certificate.
type RootOrder struct {
	Subject  pkix.Name
	Validity time.Duration
	// MaxPathLen limits the CA certificates below this one; -1 means no limit.
	MaxPathLen int
}

// SelfSigned makes a self-signed CA certificate for signer's key (in the HSM), linted the same
// way as every other certificate before the key signs it.
func SelfSigned(ctx context.Context, signer crypto.Signer, o RootOrder, now time.Time) (*x509.Certificate, error) {
	if signer == nil {
		return nil, errors.New("issue: SelfSigned needs a signer")
	}
	if o.Subject.CommonName == "" {
		return nil, errors.New("issue: the CA certificate needs a common name")
	}
	if o.Validity <= 0 {
		return nil, errors.New("issue: the CA certificate needs a positive validity")
	}
	serial, err := newSerial(rand.Reader)
	if err != nil {
		return nil, err
	}
	ski, err := subjectKeyID(signer.Public())
	if err != nil {
		return nil, fmt.Errorf("issue: %w", err)
	}
	nb := now.UTC().Truncate(time.Second).Add(-time.Hour)
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               o.Subject,
		NotBefore:             nb,
		NotAfter:              nb.Add(o.Validity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLen:            o.MaxPathLen,
		MaxPathLenZero:        o.MaxPathLen == 0,
		SubjectKeyId:          ski,
		AuthorityKeyId:        ski,
	}
	if o.MaxPathLen < 0 {
		tmpl.MaxPathLen = -1
	}
	alg, algDER, err := caAlgorithm(signer.Public())
	if err != nil {
		return nil, err
	}
	lintKey, err := newLintKey()
	if err != nil {
		return nil, err
	}
	l, err := newLinter()
	if err != nil {
		return nil, err
	}
	lintParent := *tmpl
	lintParent.PublicKey = lintKey.Public()
	i := &Issuer{cfg: Config{CACert: tmpl, Signer: signer, Rand: rand.Reader}, linter: l, lintKey: lintKey, alg: alg, algDER: algDER}
	p, err := i.prepare(tmpl, &lintParent, signer.Public())
	if err != nil {
		return nil, err
	}
	return i.signTBS(ctx, p, signer, nil)
}
