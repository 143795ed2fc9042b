package update

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestPrivateKeyFile(t *testing.T) {
	pub, priv, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "signing.pem")
	if err := WritePrivateKey(path, priv); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("key file mode = %v, want 0600", st.Mode().Perm())
	}
	got, err := ReadPrivateKey(path)
	if err != nil {
		t.Fatal(err)
	}
	if !got.Equal(priv) || !got.Public().(ed25519.PublicKey).Equal(pub) {
		t.Errorf("ReadPrivateKey returned another key")
	}
	before, _ := os.ReadFile(path)
	if !bytes.HasPrefix(before, []byte("-----BEGIN PRIVATE KEY-----\n")) {
		t.Errorf("key file starts %q, want a PEM PRIVATE KEY block", before[:20])
	}

	// A second key is not written over the first.
	_, other, _ := GenerateKey()
	if err := WritePrivateKey(path, other); err == nil {
		t.Errorf("WritePrivateKey over an existing file succeeded")
	}
	if after, _ := os.ReadFile(path); !bytes.Equal(after, before) {
		t.Errorf("WritePrivateKey over an existing file changed it")
	}

	// Files that are not one Ed25519 private key are refused.
	dir := t.TempDir()
	ecKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ecDER, _ := x509.MarshalPKCS8PrivateKey(ecKey)
	for name, content := range map[string][]byte{
		"public":  MarshalPublicKey(pub),
		"ecdsa":   pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: ecDER}),
		"two":     append(append([]byte{}, before...), before...),
		"garbage": []byte("not a key\n"),
		"empty":   nil,
	} {
		p := filepath.Join(dir, name)
		os.WriteFile(p, content, 0o600)
		if _, err := ReadPrivateKey(p); err == nil {
			t.Errorf("ReadPrivateKey(%s) succeeded, want an error", name)
		}
	}
	if _, err := ReadPrivateKey(filepath.Join(dir, "missing")); err == nil {
		t.Errorf("ReadPrivateKey(missing file) succeeded")
	}
}

func TestParsePublicKeys(t *testing.T) {
	pub1, _, _ := GenerateKey()
	pub2, _, _ := GenerateKey()
	two := append(MarshalPublicKey(pub1), MarshalPublicKey(pub2)...)
	keys, err := ParsePublicKeys(append([]byte("\n"), append(two, "\n\n"...)...))
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 2 || !keys[0].Equal(pub1) || !keys[1].Equal(pub2) {
		t.Errorf("ParsePublicKeys(two keys) = %d keys, want pub1 and pub2 in order", len(keys))
	}

	ecKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ecDER, _ := x509.MarshalPKIXPublicKey(&ecKey.PublicKey)
	_, priv, _ := GenerateKey()
	privDER, _ := x509.MarshalPKCS8PrivateKey(priv)
	withHeaders := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Headers: map[string]string{"Comment": "x"}, Bytes: pub1})
	for name, in := range map[string][]byte{
		"empty":            nil,
		"blank":            []byte(" \n"),
		"garbage":          []byte("garbage"),
		"garbage before":   append([]byte("garbage\n"), two...),
		"garbage between":  append(append(MarshalPublicKey(pub1), "garbage\n"...), MarshalPublicKey(pub2)...),
		"garbage after":    append(append([]byte{}, two...), "garbage"...),
		"truncated":        two[:len(two)-10],
		"ecdsa":            pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: ecDER}),
		"private key":      pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: privDER}),
		"raw key bytes":    pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub1}),
		"certificate type": pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte{0x30, 0}}),
		"headers":          withHeaders,
	} {
		if keys, err := ParsePublicKeys(in); err == nil {
			t.Errorf("ParsePublicKeys(%s) = %d keys, want an error", name, len(keys))
		}
	}
}

func TestKeyID(t *testing.T) {
	pub := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{1}, ed25519.SeedSize)).Public().(ed25519.PublicKey)
	// This key is 8a88e3dd...40f6f5c; the first 8 bytes of its SHA-256, worked out apart
	// from this package (python3 hashlib), are fixed here: a change of the algorithm,
	// which would orphan every key ID in the field, fails the test.
	const want = "34750f98bd59fcfc"
	if got := KeyID(pub); got != want {
		t.Errorf("KeyID(seed 0x01...) = %s, want %s", got, want)
	}
	other := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{2}, ed25519.SeedSize)).Public().(ed25519.PublicKey)
	if KeyID(other) == want {
		t.Errorf("KeyID of two keys is the same")
	}
	parsed, err := ParsePublicKeys(MarshalPublicKey(pub))
	if err != nil || len(parsed) != 1 || KeyID(parsed[0]) != want {
		t.Errorf("KeyID after MarshalPublicKey/ParsePublicKeys = %v (%v), want %s", parsed, err, want)
	}
	if len(want) != 16 || strings.ToLower(want) != want {
		t.Errorf("KeyID is not 16 lower-case hex digits")
	}
}
