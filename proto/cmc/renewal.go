package cmc

import (
	"crypto"
	"crypto/x509"
	"errors"

	"github.com/enrollment-appliance/aeappliance/proto/cms"
)

// SignRenewal builds a renewal request as Windows and aeagent send it: a CMS SignedData around
// csr (DER PKCS#10 for the new key), signed with oldKey, the key of oldCert, the certificate being
// renewed, which is included. ParseRequest reads it back as a Renewal with OldCert = oldCert.
func SignRenewal(csr []byte, oldCert *x509.Certificate, oldKey crypto.Signer) ([]byte, error) {
	if oldCert == nil || oldKey == nil {
		return nil, errors.New("cmc: a renewal needs the old certificate and its key")
	}
	if _, err := x509.ParseCertificateRequest(csr); err != nil {
		return nil, badRequest("renewal: the new request is not a PKCS#10: %v", err)
	}
	return cms.NewSignedData(cms.SignOptions{Content: csr, Certificates: []*x509.Certificate{oldCert}, Signer: oldKey, SignerCert: oldCert})
}
