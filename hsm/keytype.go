package hsm

import (
	"fmt"
	"strings"
)

// KeyType names the kind of key pair GenerateKey makes.
type KeyType string

// The key types the store can generate and use.
const (
	RSA2048   KeyType = "rsa-2048"
	RSA3072   KeyType = "rsa-3072"
	RSA4096   KeyType = "rsa-4096"
	ECDSAP256 KeyType = "ecdsa-p256"
	ECDSAP384 KeyType = "ecdsa-p384"
)

var keyTypes = []KeyType{RSA2048, RSA3072, RSA4096, ECDSAP256, ECDSAP384}

// KeyTypes returns the supported key types, RSA first.
func KeyTypes() []KeyType {
	return append([]KeyType(nil), keyTypes...)
}

// ParseKeyType parses a key type name such as "ecdsa-p256" (case-insensitive).
func ParseKeyType(s string) (KeyType, error) {
	t := KeyType(strings.ToLower(strings.TrimSpace(s)))
	for _, kt := range keyTypes {
		if t == kt {
			return kt, nil
		}
	}
	names := make([]string, len(keyTypes))
	for i, kt := range keyTypes {
		names[i] = string(kt)
	}
	return "", fmt.Errorf("hsm: unknown key type %q (valid: %s)", s, strings.Join(names, ", "))
}

// String returns the key type's name.
func (t KeyType) String() string { return string(t) }

// rsaBits returns the modulus size for RSA types and 0 for the others.
func (t KeyType) rsaBits() int {
	switch t {
	case RSA2048:
		return 2048
	case RSA3072:
		return 3072
	case RSA4096:
		return 4096
	}
	return 0
}
