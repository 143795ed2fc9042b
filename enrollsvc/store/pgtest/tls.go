package pgtest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// writeTLS makes the test CA and the server's certificate, in Dir/tls, owned by postgres (the key
// 0600, as PostgreSQL requires). The client (root) reads the CA certificate there too.
func (s *Server) writeTLS() error {
	var err error
	if s.caKey, s.ca, err = newCA("pgtest CA"); err != nil {
		return err
	}
	srvPEM, srvKeyPEM, err := s.issue(&x509.Certificate{
		Subject:  pkix.Name{CommonName: "localhost"},
		DNSNames: []string{"localhost"},
		// QEMU's user-mode network takes a guest's 10.0.2.2 to the host's loopback: an appliance
		// in a test VM reaches this server there (VMHost), and verifies the name.
		IPAddresses: []net.IP{net.ParseIP(s.Host), net.ParseIP(VMHost)},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	})
	if err != nil {
		return err
	}
	dir := filepath.Join(s.Dir, "tls")
	if err := os.Mkdir(dir, 0o700); err != nil {
		return err
	}
	s.CAFile = filepath.Join(dir, "ca.pem")
	files := map[string][]byte{
		dir:                              nil,
		s.CAFile:                         certPEM(s.ca.Raw),
		filepath.Join(dir, "server.pem"): srvPEM,
		filepath.Join(dir, "server.key"): srvKeyPEM,
	}
	for path, content := range files {
		if content != nil {
			if err := os.WriteFile(path, content, 0o600); err != nil {
				return err
			}
		}
		if err := os.Chown(path, s.uid, s.gid); err != nil {
			return err
		}
	}
	return nil
}

// ClientCert issues a client certificate for role (its common name) from the server's CA and
// writes it and its key to files in a temporary directory of the test.
func (s *Server) ClientCert(t testing.TB, role string) (certFile, keyFile string) {
	t.Helper()
	certPEMBytes, keyPEMBytes, err := s.issue(&x509.Certificate{
		Subject:     pkix.Name{CommonName: role},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
	if err != nil {
		t.Fatalf("pgtest: client certificate: %v", err)
	}
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "client.pem"), filepath.Join(dir, "client.key")
	if err := errors.Join(os.WriteFile(certFile, certPEMBytes, 0o600), os.WriteFile(keyFile, keyPEMBytes, 0o600)); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

// issue signs tmpl for a new P-256 key with the CA and returns both in PEM.
func (s *Server) issue(tmpl *x509.Certificate) (certPEMBytes, keyPEMBytes []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	der, err := sign(tmpl, s.ca, key.Public(), s.caKey)
	if err != nil {
		return nil, nil, err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	return certPEM(der), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), nil
}

// newCA makes a self-signed P-256 CA.
func newCA(cn string) (*ecdsa.PrivateKey, *x509.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		Subject: pkix.Name{CommonName: cn}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := sign(tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, nil, err
	}
	cert, err := x509.ParseCertificate(der)
	return key, cert, err
}

// sign gives tmpl a random serial and a validity from an hour ago to a week ahead, and signs it.
func sign(tmpl, parent *x509.Certificate, pub crypto.PublicKey, key crypto.Signer) ([]byte, error) {
	now := time.Now()
	tmpl.SerialNumber = new(big.Int).SetBytes(randomBytes(16))
	tmpl.NotBefore, tmpl.NotAfter = now.Add(-time.Hour), now.Add(7*24*time.Hour)
	return x509.CreateCertificate(rand.Reader, tmpl, parent, pub, key)
}

// WriteOtherCA writes the certificate of a new CA, which is not the server's and has the same
// name, to path: for tests that must see the server's certificate refused.
func WriteOtherCA(t testing.TB, path string) {
	t.Helper()
	_, ca, err := newCA("pgtest CA")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, certPEM(ca.Raw), 0o644); err != nil {
		t.Fatal(err)
	}
}

func certPEM(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}
