package issue

import (
	"crypto/rand"
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

// smallFactor agrees with trial division by big.Int on 2048-bit numbers with a planted small
// factor, without one, and of every length from one octet up (its word packing).
func TestSmallFactorAgrees(t *testing.T) {
	want := func(n *big.Int) uint64 {
		var r big.Int
		for _, c := range primeChunks {
			for _, p := range c.primes {
				if r.Mod(n, new(big.Int).SetUint64(p)).Sign() == 0 && n.Cmp(new(big.Int).SetUint64(p)) != 0 {
					return p
				}
			}
		}
		return 0
	}
	planted := []int64{2, 3, 9973, 7919, 1009}
	for i := range 200 {
		n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), uint(8+i*10)))
		if err != nil {
			t.Fatal(err)
		}
		n.SetBit(n, 0, 1).SetBit(n, 7+i*10, 1) // odd, of its full length
		if i%3 == 0 {
			n.Mul(n, big.NewInt(planted[i%len(planted)]))
		}
		if i%7 == 0 {
			n.Mul(n, big.NewInt(10007*10009))
		}
		if got, w := smallFactor(n), want(n); got != w {
			t.Fatalf("smallFactor(%x) = %d, trial division says %d", n, got, w)
		}
	}
}

func BenchmarkSmallFactor(b *testing.B) {
	p, _ := rand.Prime(rand.Reader, 1024)
	q, _ := rand.Prime(rand.Reader, 1024)
	n := new(big.Int).Mul(p, q)
	for b.Loop() {
		if smallFactor(n) != 0 {
			b.Fatal("a factor")
		}
	}
}
