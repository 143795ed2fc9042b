package issue

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"errors"
	"fmt"
	"math/big"
	"math/bits"
	"strings"

	"github.com/titanous/rocacheck"
)

// minRSABits is this CA's floor for RSA keys whatever the template says: AD CS v1 templates
// still allow 1024-bit keys, which no certificate issued today should have.
const minRSABits = 2048

// maxRSABits is the largest RSA key accepted (the largest size AD CS templates offer).
const maxRSABits = 16384

// KeyRules are what a template or profile asks of the subject's key, on top of this CA's own
// floor (RSA 2048..16384 bits with exponent 65537 or another odd exponent above it, ECDSA on
// P-256, P-384 or P-521, never a weak or the CA's own key).
type KeyRules struct {
	// Algorithm is the template's msPKI-Asymmetric-Algorithm ("RSA", "ECDSA_P256", "ECDH_P384",
	// ...) or empty for any.
	Algorithm string
	// MinBits is the template's msPKI-Minimal-Key-Size (0: the CA's floor only).
	MinBits int
}

// ErrKeyRefused is wrapped by the error Prepare returns for an unacceptable subject key.
var ErrKeyRefused = errors.New("the subject's public key is refused")

// KeyError lists every reason a subject key was refused.
type KeyError struct{ Problems []string }

func (e *KeyError) Error() string {
	return "key refused: " + strings.Join(e.Problems, "; ")
}

// Unwrap makes errors.Is(err, ErrKeyRefused) hold.
func (e *KeyError) Unwrap() error { return ErrKeyRefused }

// DescribeKey is a short description of a public key ("RSA 2048", "ECDSA P-256").
func DescribeKey(pub crypto.PublicKey) string {
	switch k := pub.(type) {
	case *rsa.PublicKey:
		if k == nil || k.N == nil {
			return "RSA (empty)"
		}
		return fmt.Sprintf("RSA %d", k.N.BitLen())
	case *ecdsa.PublicKey:
		if k == nil || k.Curve == nil {
			return "ECDSA (empty)"
		}
		return "ECDSA " + k.Curve.Params().Name
	case nil:
		return "none"
	}
	return fmt.Sprintf("%T", pub)
}

// KeyProblems returns every reason pub is unacceptable under rules for a certificate of the CA
// whose key is caKey (empty if none). It is the one key-quality check: policy uses it to
// explain, Prepare to refuse.
func KeyProblems(pub crypto.PublicKey, rules KeyRules, caKey crypto.PublicKey) []string {
	var bad []string
	alg := strings.ToUpper(rules.Algorithm)
	switch k := pub.(type) {
	case *rsa.PublicKey:
		if k == nil || k.N == nil || k.N.Sign() <= 0 {
			return []string{"the RSA public key is empty"}
		}
		if alg != "" && alg != "RSA" {
			bad = append(bad, fmt.Sprintf("the template requires a %s key, the request has RSA", rules.Algorithm))
		}
		bits := k.N.BitLen()
		if bits < rules.MinBits {
			bad = append(bad, fmt.Sprintf("RSA key of %d bits is below the template's minimum of %d", bits, rules.MinBits))
		} else if bits < minRSABits {
			bad = append(bad, fmt.Sprintf("RSA key of %d bits is below this CA's minimum of %d", bits, minRSABits))
		} else if bits > maxRSABits {
			bad = append(bad, fmt.Sprintf("RSA key of %d bits is above this CA's maximum of %d", bits, maxRSABits))
		}
		if k.E != 65537 { // as boulder's goodkey: 3 invites broadcast attacks, others are unusual
			bad = append(bad, fmt.Sprintf("RSA public exponent %d is not 65537, the only one this CA accepts", k.E))
		}
		if p := smallFactor(k.N); p != 0 {
			bad = append(bad, fmt.Sprintf("RSA modulus is divisible by %d", p))
		} else if rocacheck.IsWeak(k) {
			bad = append(bad, "RSA modulus has the structure of ROCA-vulnerable keys (CVE-2017-15361, Infineon)")
		}
	case *ecdsa.PublicKey:
		if k == nil || k.Curve == nil || k.X == nil || k.Y == nil {
			return []string{"the ECDSA public key is empty"}
		}
		name := k.Curve.Params().Name
		switch k.Curve {
		case elliptic.P256(), elliptic.P384(), elliptic.P521():
		default:
			return []string{fmt.Sprintf("ECDSA curve %s is not supported (P-256, P-384, P-521 are)", name)}
		}
		if _, err := k.ECDH(); err != nil {
			bad = append(bad, fmt.Sprintf("the EC public key is not a valid point on %s", name))
		}
		bits := k.Curve.Params().BitSize
		switch {
		case alg == "" || alg == "ECDSA" || alg == "ECDH":
		case (strings.HasPrefix(alg, "ECDSA_P") || strings.HasPrefix(alg, "ECDH_P")) && strings.HasSuffix(alg, fmt.Sprintf("_P%d", bits)):
		default:
			bad = append(bad, fmt.Sprintf("the template requires a %s key, the request has ECDSA %s", rules.Algorithm, name))
		}
		if rules.MinBits >= 256 && bits < rules.MinBits {
			bad = append(bad, fmt.Sprintf("ECDSA %s key of %d bits is below the template's minimum of %d", name, bits, rules.MinBits))
		}
	case nil:
		return []string{"the request has no public key"}
	default:
		return []string{fmt.Sprintf("key type %T is not supported (RSA and ECDSA P-256/P-384/P-521 are)", pub)}
	}
	if eq, ok := pub.(interface{ Equal(crypto.PublicKey) bool }); ok && caKey != nil && eq.Equal(caKey) {
		bad = append(bad, "the request's public key is the CA's own key")
	}
	return bad
}

// primeChunks holds the primes below 10,000 grouped so that each group's product fits in 64
// bits: one big-number reduction per group, then word arithmetic.
var primeChunks = func() []primeChunk {
	const limit = 10000
	sieve := make([]bool, limit)
	var chunks []primeChunk
	var cur primeChunk
	cur.product = 1
	for i := 2; i < limit; i++ {
		if sieve[i] {
			continue
		}
		for j := i * i; j < limit; j += i {
			sieve[j] = true
		}
		p := uint64(i)
		if hi, _ := mul64(cur.product, p); hi != 0 {
			chunks = append(chunks, cur)
			cur = primeChunk{product: 1}
		}
		cur.product *= p
		cur.primes = append(cur.primes, p)
	}
	return append(chunks, cur)
}()

type primeChunk struct {
	product uint64
	primes  []uint64
}

func mul64(a, b uint64) (hi, lo uint64) {
	x := new(big.Int).Mul(new(big.Int).SetUint64(a), new(big.Int).SetUint64(b))
	if x.BitLen() > 64 {
		return 1, 0
	}
	return 0, x.Uint64()
}

// smallFactor returns the smallest prime below 10,000 that divides n (and is not n), or 0. n's
// 64-bit words are reduced modulo each chunk's product with one hardware division per word
// (math/bits.Div64), without allocating: big.Int's Mod computed a whole quotient for each of the
// ~270 chunks, a fifth of a millisecond for a 2048-bit modulus.
func smallFactor(n *big.Int) uint64 {
	b := n.Bytes()
	words := make([]uint64, (len(b)+7)/8)
	for i := range b { // big-endian octets into big-endian words
		j := len(b) - 1 - i // octet's place from the least significant end
		words[len(words)-1-j/8] |= uint64(b[i]) << (8 * (j % 8))
	}
	for _, c := range primeChunks {
		var rem uint64
		for _, w := range words {
			_, rem = bits.Div64(rem, w, c.product)
		}
		for _, p := range c.primes {
			if rem%p == 0 && !(n.IsUint64() && n.Uint64() == p) {
				return p
			}
		}
	}
	return 0
}
