package issue

import (
	"math/big"
	"testing"
)

func TestSmallFactor(t *testing.T) {
	tests := []struct {
		n    int64
		want uint64
	}{{2 * 3, 2}, {9973 * 10007, 9973}, {10007 * 10009, 0}, {7, 0}, {1, 0}}
	for _, tc := range tests {
		if got := smallFactor(big.NewInt(tc.n)); got != tc.want {
			t.Errorf("smallFactor(%d) = %d, want %d", tc.n, got, tc.want)
		}
	}
	n := 0
	for _, c := range primeChunks {
		n += len(c.primes)
	}
	if n != 1229 {
		t.Errorf("primes below 10,000 = %d, want 1229", n)
	}
}
