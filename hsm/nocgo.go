//go:build !cgo

package hsm

import (
	"context"
	"crypto"
	"fmt"
	"io"
	"time"
)

// This file gives builds without cgo the same API. Nothing can be opened: Open and
// InitToken fail with an error wrapping ErrNoCgo, so a KeyStore or Key never
// exists and their methods only report ErrNoCgo.

// KeyStore is one open token of one PKCS#11 module (unavailable without cgo).
type KeyStore struct{}

// Key is a private key in the token (unavailable without cgo).
type Key struct{}

var _ crypto.Signer = (*Key)(nil)

func errNoCgo(op string) error { return fmt.Errorf("hsm: %s: %w", op, ErrNoCgo) }

// Open fails: this build has no cgo.
func Open(ctx context.Context, cfg Config) (*KeyStore, error) { return nil, errNoCgo("Open") }

// InitToken fails: this build has no cgo.
func InitToken(ctx context.Context, modulePath, label, soPIN, userPIN string) (string, error) {
	return "", errNoCgo("InitToken")
}

// GenerateKey fails: this build has no cgo.
func (k *KeyStore) GenerateKey(ctx context.Context, kt KeyType, label string, id []byte) (*Key, error) {
	return nil, errNoCgo("GenerateKey")
}

// Usage says what a generated private key may do.
type Usage int

// Usages of GenerateKeyFor.
const (
	UsageSign Usage = iota
	UsageDecrypt
)

// GenerateKeyFor fails: this build has no cgo.
func (k *KeyStore) GenerateKeyFor(ctx context.Context, kt KeyType, label string, id []byte, usage Usage) (*Key, error) {
	return nil, errNoCgo("GenerateKeyFor")
}

// Decrypt fails: this build has no cgo.
func (k *Key) Decrypt(rand io.Reader, msg []byte, opts crypto.DecrypterOpts) ([]byte, error) {
	return nil, errNoCgo("Decrypt")
}

// FindKey fails: this build has no cgo.
func (k *KeyStore) FindKey(ctx context.Context, u URI) (*Key, error) { return nil, errNoCgo("FindKey") }

// DestroyKey fails: this build has no cgo.
func (k *KeyStore) DestroyKey(ctx context.Context, u URI) error { return errNoCgo("DestroyKey") }

// KeyAttributes fails: this build has no cgo.
func (k *KeyStore) KeyAttributes(ctx context.Context, u URI) (KeyAttributes, error) {
	return KeyAttributes{}, errNoCgo("KeyAttributes")
}

// Health fails: this build has no cgo.
func (k *KeyStore) Health(ctx context.Context) error { return errNoCgo("Health") }

// TokenInfo is empty: this build has no cgo.
func (k *KeyStore) TokenInfo() TokenInfo { return TokenInfo{} }

// Close does nothing.
func (k *KeyStore) Close() error { return nil }

// Public returns nil: this build has no cgo.
func (k *Key) Public() crypto.PublicKey { return nil }

// Sign fails: this build has no cgo.
func (k *Key) Sign(rand io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	return nil, errNoCgo("Sign")
}

// SignContext fails: this build has no cgo.
func (k *Key) SignContext(ctx context.Context, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	return nil, errNoCgo("Sign")
}

// URI is empty: this build has no cgo.
func (k *Key) URI() URI { return URI{} }

// Type is empty: this build has no cgo.
func (k *Key) Type() KeyType { return "" }

// Observer is told of every private-key operation in the token (none without cgo).
type Observer func(op string, d time.Duration, err error)

// SetObserver does nothing: this build has no cgo.
func (k *KeyStore) SetObserver(f Observer) {}

// Sessions is zero: this build has no cgo.
func (k *KeyStore) Sessions() (inUse, size int) { return 0, 0 }
