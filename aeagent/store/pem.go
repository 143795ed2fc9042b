package store

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
)

// PEM block types.
const (
	pemCertificate = "CERTIFICATE"
	pemPKCS8       = "PRIVATE KEY"
	pemPKCS1       = "RSA PRIVATE KEY"
	pemSEC1        = "EC PRIVATE KEY"
)

// pemBlocks decodes all PEM blocks of data. Text before a block is allowed (openssl writes some);
// a block that does not decode and anything but white space after the last block are not.
func pemBlocks(data []byte) ([]*pem.Block, error) {
	var blocks []*pem.Block
	rest := data
	for {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		blocks = append(blocks, b)
	}
	if n := bytes.Count(data, []byte("-----BEGIN ")); n != len(blocks) {
		return nil, fmt.Errorf("%d of %d PEM blocks are malformed", n-len(blocks), n)
	}
	if len(bytes.TrimSpace(rest)) != 0 {
		return nil, errors.New("text that is not PEM after the last block")
	}
	return blocks, nil
}

// parseCerts reads PEM certificates; want is how many there must be, or -1 for any number.
func parseCerts(data []byte, want int) ([]*x509.Certificate, error) {
	blocks, err := pemBlocks(data)
	if err != nil {
		return nil, err
	}
	if want >= 0 && len(blocks) != want {
		return nil, fmt.Errorf("%d PEM blocks, want %d", len(blocks), want)
	}
	certs := make([]*x509.Certificate, 0, len(blocks))
	for i, b := range blocks {
		if b.Type != pemCertificate {
			return nil, fmt.Errorf("PEM block %d is %q, want %q", i+1, b.Type, pemCertificate)
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("PEM block %d: %w", i+1, err)
		}
		certs = append(certs, c)
	}
	return certs, nil
}

// encodeCerts writes certificates as PEM.
func encodeCerts(certs ...*x509.Certificate) []byte {
	var b bytes.Buffer
	for _, c := range certs {
		pem.Encode(&b, &pem.Block{Type: pemCertificate, Bytes: c.Raw}) // writing to a Buffer cannot fail
	}
	return b.Bytes()
}

// parseKey reads a PEM private key: PKCS#8, or PKCS#1 and SEC 1 as older tools write them. Its
// errors never quote the key.
func parseKey(data []byte) (crypto.Signer, error) {
	blocks, err := pemBlocks(data)
	if err != nil {
		return nil, err
	}
	if len(blocks) != 1 {
		return nil, fmt.Errorf("%d PEM blocks, want 1", len(blocks))
	}
	b := blocks[0]
	if _, ok := b.Headers["Proc-Type"]; ok {
		return nil, errors.New("an encrypted private key")
	}
	var key any
	switch b.Type {
	case pemPKCS8:
		key, err = x509.ParsePKCS8PrivateKey(b.Bytes)
	case pemPKCS1:
		key, err = x509.ParsePKCS1PrivateKey(b.Bytes)
	case pemSEC1:
		key, err = x509.ParseECPrivateKey(b.Bytes)
	default:
		return nil, fmt.Errorf("PEM block %q, want %q", b.Type, pemPKCS8)
	}
	if err != nil {
		// The parsers' errors do not quote key bytes, but say nothing more than this either.
		return nil, fmt.Errorf("not a %s private key", b.Type)
	}
	signer, ok := key.(crypto.Signer)
	if !ok || checkKeyType(signer) != nil {
		return nil, fmt.Errorf("a %T, want an RSA, ECDSA or Ed25519 private key", key)
	}
	return signer, nil
}

// encodeKey writes a private key as PKCS#8 PEM.
func encodeKey(key crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("encoding the %T: %w", key, err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: pemPKCS8, Bytes: der}), nil
}

// checkKeyType accepts the private keys the store keeps.
func checkKeyType(key crypto.Signer) error {
	switch k := key.(type) {
	case *rsa.PrivateKey:
		if k != nil {
			return nil
		}
	case *ecdsa.PrivateKey:
		if k != nil {
			return nil
		}
	case ed25519.PrivateKey:
		if len(k) == ed25519.PrivateKeySize {
			return nil
		}
	case nil:
		return errors.New("no private key")
	}
	return fmt.Errorf("the private key (%T) is nil, malformed, or not an RSA, ECDSA or Ed25519 key", key)
}

// checkKeyMatches checks that key is the private key of cert.
func checkKeyMatches(cert *x509.Certificate, key crypto.Signer) error {
	pub, ok := cert.PublicKey.(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(key.Public()) {
		return fmt.Errorf("the private key (%T) does not belong to the certificate (serial %x)", key, cert.SerialNumber)
	}
	return nil
}
