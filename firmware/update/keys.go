package update

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
)

const (
	privateKeyType = "PRIVATE KEY" // PKCS#8
	publicKeyType  = "PUBLIC KEY"  // PKIX SubjectPublicKeyInfo
)

// GenerateKey makes a new signing key pair.
func GenerateKey() (ed25519.PublicKey, ed25519.PrivateKey, error) {
	return ed25519.GenerateKey(rand.Reader)
}

// KeyID names a public key: the hex of the first 8 bytes of the SHA-256 of its 32 raw
// bytes. Bundles name the key that signed them, so that an appliance trusting several
// keys (during a key rollover) can say which one a bundle wants.
func KeyID(k ed25519.PublicKey) string {
	sum := sha256.Sum256(k)
	return hex.EncodeToString(sum[:8])
}

// WritePrivateKey writes k to path as a PEM "PRIVATE KEY" (PKCS#8) block, readable only by
// its owner. It refuses to overwrite an existing file: a signing key is not replaced by
// accident.
func WritePrivateKey(path string, k ed25519.PrivateKey) (err error) {
	if len(k) != ed25519.PrivateKeySize {
		return fmt.Errorf("update: private key has %d bytes, want %d", len(k), ed25519.PrivateKeySize)
	}
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return fmt.Errorf("update: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("update: private key: %w", err)
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(path)
		}
	}()
	if err := pem.Encode(f, &pem.Block{Type: privateKeyType, Bytes: der}); err != nil {
		return fmt.Errorf("update: private key %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("update: private key %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("update: private key %s: %w", path, err)
	}
	return nil
}

// ReadPrivateKey reads a key written by WritePrivateKey: one PEM "PRIVATE KEY" block
// holding a PKCS#8 Ed25519 key, and nothing else.
func ReadPrivateKey(path string) (ed25519.PrivateKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("update: private key: %w", err)
	}
	blocks, err := decodePEM(b)
	if err != nil {
		return nil, fmt.Errorf("update: private key %s: %w", path, err)
	}
	if len(blocks) != 1 || blocks[0].Type != privateKeyType {
		return nil, fmt.Errorf("update: private key %s: want one PEM %q block", path, privateKeyType)
	}
	k, err := x509.ParsePKCS8PrivateKey(blocks[0].Bytes)
	if err != nil {
		return nil, fmt.Errorf("update: private key %s: %w", path, err)
	}
	ek, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("update: private key %s: a %T, not an Ed25519 key", path, k)
	}
	return ek, nil
}

// MarshalPublicKey encodes k as a PEM "PUBLIC KEY" (PKIX) block: the form the appliance
// keeps its trusted keys in. It returns nil if k is not an Ed25519 public key.
func MarshalPublicKey(k ed25519.PublicKey) []byte {
	if len(k) != ed25519.PublicKeySize {
		return nil
	}
	der, err := x509.MarshalPKIXPublicKey(k)
	if err != nil {
		return nil // cannot happen for a 32-byte Ed25519 key
	}
	return pem.EncodeToMemory(&pem.Block{Type: publicKeyType, Bytes: der})
}

// ParsePublicKeys reads one or more PEM "PUBLIC KEY" blocks, each an Ed25519 key. Anything
// else (no block, another block type or key type, PEM headers, text around the blocks
// other than white space) is an error: a trust file that does not say exactly what it
// means is refused rather than half used.
func ParsePublicKeys(pemBytes []byte) ([]ed25519.PublicKey, error) {
	blocks, err := decodePEM(pemBytes)
	if err != nil {
		return nil, fmt.Errorf("update: public keys: %w", err)
	}
	if len(blocks) == 0 {
		return nil, errors.New("update: public keys: no PEM block")
	}
	var keys []ed25519.PublicKey
	for i, b := range blocks {
		if b.Type != publicKeyType {
			return nil, fmt.Errorf("update: public keys: block %d is a %q, want %q", i+1, b.Type, publicKeyType)
		}
		k, err := x509.ParsePKIXPublicKey(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("update: public keys: block %d: %w", i+1, err)
		}
		ek, ok := k.(ed25519.PublicKey)
		if !ok {
			return nil, fmt.Errorf("update: public keys: block %d is a %T, not an Ed25519 key", i+1, k)
		}
		keys = append(keys, ek)
	}
	return keys, nil
}

// decodePEM splits b into PEM blocks, refusing anything between or around them but white
// space (pem.Decode alone skips text before a block) and blocks with headers.
func decodePEM(b []byte) ([]*pem.Block, error) {
	var blocks []*pem.Block
	for {
		b = bytes.TrimLeft(b, " \t\r\n")
		if len(b) == 0 {
			return blocks, nil
		}
		if !bytes.HasPrefix(b, []byte("-----BEGIN ")) {
			return nil, fmt.Errorf("not PEM: %q", preview(b))
		}
		blk, rest := pem.Decode(b)
		if blk == nil {
			return nil, fmt.Errorf("malformed PEM block: %q", preview(b))
		}
		if len(blk.Headers) != 0 {
			return nil, fmt.Errorf("PEM block %q has headers", blk.Type)
		}
		blocks = append(blocks, blk)
		b = rest
	}
}

func preview(b []byte) []byte {
	if len(b) > 32 {
		return b[:32]
	}
	return b
}
