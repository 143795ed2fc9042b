package policy

import (
	"crypto/x509"
	"testing"
)

func TestConsistentKeyUsage(t *testing.T) {
	ds, ke, ka, nr := x509.KeyUsageDigitalSignature, x509.KeyUsageKeyEncipherment, x509.KeyUsageKeyAgreement, x509.KeyUsageContentCommitment
	for _, tc := range []struct {
		name          string
		ku            x509.KeyUsage
		ekus          []x509.ExtKeyUsage
		kept, dropped x509.KeyUsage
	}{
		{"client auth drops keyEncipherment", ds | ke, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, ds, ke},
		{"server auth keeps it", ds | ke, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, ds | ke, 0},
		{"client auth + e-mail keeps it", ds | ke, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageEmailProtection}, ds | ke, 0},
		{"code signing keeps only digitalSignature", ds | nr | ka, []x509.ExtKeyUsage{x509.ExtKeyUsageCodeSigning}, ds, nr | ka},
		{"an EKU outside the table leaves it alone", ds | ke, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageIPSECUser}, ds | ke, 0},
		{"no EKUs", ds | ke, nil, ds | ke, 0},
	} {
		kept, dropped := consistentKeyUsage(tc.ku, tc.ekus)
		if kept != tc.kept || dropped != tc.dropped {
			t.Errorf("consistentKeyUsage(%s) = %v, %v; want %v, %v", tc.name, KeyUsageNames(kept), KeyUsageNames(dropped), KeyUsageNames(tc.kept), KeyUsageNames(tc.dropped))
		}
	}
}
