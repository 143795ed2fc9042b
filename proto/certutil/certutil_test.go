package certutil

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"math/big"
	"testing"
)

func TestSerialRoundTrip(t *testing.T) {
	x, _ := new(big.Int).SetString("7f3a00c1d2e3f40516", 16)
	if got := SerialString(x); got != "7f3a00c1d2e3f40516" {
		t.Errorf("SerialString(x) = %q, want lower-case hex", got)
	}
	if n, err := ParseSerial(SerialString(x)); err != nil || n.Cmp(x) != 0 {
		t.Errorf("ParseSerial(SerialString(x)) = %v, %v; want x", n, err)
	}
	if n, err := ParseSerial(" 7F:3A:00:C1:D2:E3:F4:05:16 "); err != nil || n.Cmp(x) != 0 {
		t.Errorf("ParseSerial(upper case with colons) = %v, %v; want x", n, err)
	}
	for _, bad := range []string{"", "xyz", "-1", "0"} {
		if _, err := ParseSerial(bad); err == nil {
			t.Errorf("ParseSerial(%q) = nil error, want one", bad)
		}
	}
}

func TestPublicKeysEqual(t *testing.T) {
	a, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	b, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if !PublicKeysEqual(a.Public(), &a.PublicKey) {
		t.Error("PublicKeysEqual(a, a) = false")
	}
	if PublicKeysEqual(a.Public(), b.Public()) || PublicKeysEqual(nil, a.Public()) {
		t.Error("PublicKeysEqual(a, b) = true")
	}
}
