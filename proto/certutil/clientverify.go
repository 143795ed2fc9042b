package certutil

import (
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"fmt"
	"slices"
)

// oidSubjectAltName is the subjectAltName extension (RFC 5280 4.2.1.6).
var oidSubjectAltName = asn1.ObjectIdentifier{2, 5, 29, 17}

// ClientCertVerifier is a tls.Config.VerifyPeerCertificate (with ClientAuth
// tls.RequestClientCert) that checks a client certificate as tls.VerifyClientCertIfGiven does: no
// certificate passes (the server then asks for another credential); one that is sent must chain to
// roots for client authentication now. The difference: a critical subjectAltName that holds only
// names Go does not parse (the UPN otherName of a Windows logon certificate, whose subject is
// empty, RFC 5280 4.2.1.6) is not counted as an unhandled critical extension. Servers match no
// name in such certificates; they look the certificate up in their store.
func ClientCertVerifier(roots *x509.CertPool) func(raw [][]byte, _ [][]*x509.Certificate) error {
	return func(raw [][]byte, _ [][]*x509.Certificate) error {
		if len(raw) == 0 {
			return nil
		}
		if len(raw) > 8 {
			return errors.New("tls: more than 8 client certificates")
		}
		certs := make([]*x509.Certificate, len(raw))
		for i, b := range raw {
			c, err := x509.ParseCertificate(b)
			if err != nil {
				return fmt.Errorf("tls: client certificate %d: %w", i, err)
			}
			certs[i] = c
		}
		inter := x509.NewCertPool()
		for _, c := range certs[1:] {
			inter.AddCert(c)
		}
		if _, err := VerifyNameless(certs[0], x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
			return fmt.Errorf("tls: client certificate: %w", err)
		}
		return nil
	}
}

// VerifyNameless is c.Verify(opts) for a caller that matches no name in c: a critical
// subjectAltName holding only names Go does not parse (a UPN otherName; RFC 5280 4.2.1.6 makes the
// extension critical when the subject is empty, as in Windows logon certificates) is not counted
// as an unhandled critical extension. opts.DNSName must be empty.
func VerifyNameless(c *x509.Certificate, opts x509.VerifyOptions) ([][]*x509.Certificate, error) {
	if opts.DNSName != "" {
		return nil, errors.New("certutil: VerifyNameless matches no name")
	}
	leaf := *c
	leaf.UnhandledCriticalExtensions = slices.DeleteFunc(slices.Clone(c.UnhandledCriticalExtensions), oidSubjectAltName.Equal)
	return leaf.Verify(opts)
}
