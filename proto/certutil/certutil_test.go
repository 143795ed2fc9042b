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

// ParseSerial's fast path and its general path agree: every hex spelling, odd and even lengths,
// leading zeros, both cases, up to 20 octets; and refuse what they must.
func TestParseSerialFastPath(t *testing.T) {
	for _, s := range []string{"1", "a", "F", "10", "abc", "00ff", "7fffffffffffffffffffffffffffffffffffffff", "DeadBeef",
		"0123456789abcdef0123456789ABCDEF01234567"} {
		want, ok := new(big.Int).SetString(s, 16)
		got, err := ParseSerial(s)
		if !ok || err != nil || got.Cmp(want) != 0 {
			t.Errorf("ParseSerial(%q) = %v, %v; want %v", s, got, err, want)
		}
	}
	for _, s := range []string{"", "0", "000", "-1", "0x10", "g1", "1 2"} {
		if n, err := ParseSerial(s); err == nil {
			t.Errorf("ParseSerial(%q) = %v, want an error", s, n)
		}
	}
	if n, err := ParseSerial("01:02"); err != nil || n.Int64() != 0x102 {
		t.Errorf("ParseSerial(01:02) = %v, %v; want 0x102 by the general path", n, err)
	}
}
