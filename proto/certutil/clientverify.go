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
		leaf := *certs[0]
		leaf.UnhandledCriticalExtensions = slices.DeleteFunc(slices.Clone(leaf.UnhandledCriticalExtensions), oidSubjectAltName.Equal)
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
			return fmt.Errorf("tls: client certificate: %w", err)
		}
		return nil
	}
}
