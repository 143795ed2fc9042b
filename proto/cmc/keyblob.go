package cmc

import (
	"crypto/rsa"
	"encoding/binary"
	"errors"
	"fmt"
	"math/big"
	"slices"
)

// The private key a client archives travels as a Microsoft private key BLOB (MS-WCCE 2.2.2.9),
// not PKCS#8. Only the RSA form (2.2.2.9.1) is read and written: the one Windows' CryptoAPI
// writes and AD CS reads (a BCRYPT or ECDH blob is refused with a clear error).
//
// Written here: no library served to this project reads or writes CryptoAPI key blobs, and the
// format is a fixed header followed by seven little-endian integers.

// RSA private key BLOB header (MS-WCCE 2.2.2.9.1).
const (
	blobPrivateKey   = 0x07       // PRIVATEKEYBLOB
	blobVersion      = 0x02       // CUR_BLOB_VERSION
	blobAlgRSAKeyX   = 0x0000A400 // CALG_RSA_KEYX
	blobMagicRSA2    = 0x32415352 // "RSA2"
	blobHeaderLen    = 20
	maxBlobKeyBits   = 16384
	minBlobKeyBits   = 1024
	blobMagicBCrypt  = 0x32415352 // a BCRYPT_RSAPRIVATE_BLOB starts with the same magic (2.2.2.9.2)
	blobMagicECDHMin = 0x324B4345 // "ECK2".."ECK6": ECDH private key BLOBs (2.2.2.9.3)
)

// MarshalKeyBlob writes key as an RSA private key BLOB (MS-WCCE 2.2.2.9.1): the header, then n,
// p, q, dp, dq, qInv and d, little-endian, n and d in bitlen/8 bytes and the others in bitlen/16.
// The key must have two primes of half the modulus size each (what every RSA key generator makes).
func MarshalKeyBlob(key *rsa.PrivateKey) ([]byte, error) {
	if key == nil || len(key.Primes) != 2 {
		return nil, errors.New("cmc: a key blob holds an RSA key of two primes")
	}
	bits := key.N.BitLen()
	if bits < minBlobKeyBits || bits > maxBlobKeyBits || bits%16 != 0 {
		return nil, fmt.Errorf("cmc: a %d-bit RSA key does not fit a key blob", bits)
	}
	if key.E <= 0 || int64(key.E) > 0xFFFFFFFF {
		return nil, errors.New("cmc: the public exponent does not fit a key blob")
	}
	key = &rsa.PrivateKey{PublicKey: key.PublicKey, D: key.D, Primes: key.Primes}
	key.Precompute()
	full, half := bits/8, bits/16
	out := make([]byte, blobHeaderLen, blobHeaderLen+2*full+5*half)
	out[0], out[1] = blobPrivateKey, blobVersion
	binary.LittleEndian.PutUint32(out[4:], blobAlgRSAKeyX)
	binary.LittleEndian.PutUint32(out[8:], blobMagicRSA2)
	binary.LittleEndian.PutUint32(out[12:], uint32(bits))
	binary.LittleEndian.PutUint32(out[16:], uint32(key.E))
	for _, f := range []struct {
		n    *big.Int
		size int
	}{{key.N, full}, {key.Primes[0], half}, {key.Primes[1], half}, {key.Precomputed.Dp, half},
		{key.Precomputed.Dq, half}, {key.Precomputed.Qinv, half}, {key.D, full}} {
		if (f.n.BitLen()+7)/8 > f.size {
			return nil, errors.New("cmc: the key's primes are not of half the modulus size")
		}
		b := f.n.FillBytes(make([]byte, f.size))
		slices.Reverse(b)
		out = append(out, b...)
	}
	return out, nil
}

// ParseKeyBlob reads an RSA private key BLOB (MS-WCCE 2.2.2.9.1) and returns the key, checked:
// n = p·q, d inverts e, and the CRT values sent are the ones the key has. Anything else, another
// blob type or trailing bytes is refused.
func ParseKeyBlob(b []byte) (*rsa.PrivateKey, error) {
	bad := func(format string, a ...any) (*rsa.PrivateKey, error) {
		return nil, badRequest("archived key: "+format, a...)
	}
	if len(b) < blobHeaderLen {
		return bad("%d bytes is too short for a private key BLOB", len(b))
	}
	if m := binary.LittleEndian.Uint32(b); m == blobMagicBCrypt || m >= blobMagicECDHMin && m <= blobMagicECDHMin+4<<24 {
		return bad("a CNG (BCRYPT) key blob is not accepted; send the RSA private key BLOB of MS-WCCE 2.2.2.9.1")
	}
	if b[0] != blobPrivateKey || b[1] != blobVersion || binary.LittleEndian.Uint32(b[4:]) != blobAlgRSAKeyX ||
		binary.LittleEndian.Uint32(b[8:]) != blobMagicRSA2 {
		return bad("not an RSA private key BLOB (type %#x, version %#x, algorithm %#x)", b[0], b[1], binary.LittleEndian.Uint32(b[4:]))
	}
	bits := int(binary.LittleEndian.Uint32(b[12:]))
	e := binary.LittleEndian.Uint32(b[16:])
	if bits < minBlobKeyBits || bits > maxBlobKeyBits || bits%16 != 0 {
		return bad("a %d-bit key is not accepted", bits)
	}
	if e < 3 || e%2 == 0 || e > 1<<31-1 {
		return bad("public exponent %d is not accepted", e)
	}
	full, half := bits/8, bits/16
	if len(b) != blobHeaderLen+2*full+5*half {
		return bad("%d bytes for a %d-bit key, want %d", len(b), bits, blobHeaderLen+2*full+5*half)
	}
	rest := b[blobHeaderLen:]
	next := func(size int) *big.Int {
		v := slices.Clone(rest[:size])
		rest = rest[size:]
		slices.Reverse(v)
		return new(big.Int).SetBytes(v)
	}
	n, p, q := next(full), next(half), next(half)
	dp, dq, qinv, d := next(half), next(half), next(half), next(full)
	if n.BitLen() != bits {
		return bad("the modulus is not of %d bits", bits)
	}
	key := &rsa.PrivateKey{PublicKey: rsa.PublicKey{N: n, E: int(e)}, D: d, Primes: []*big.Int{p, q}}
	if err := key.Validate(); err != nil {
		return bad("the key is not a valid RSA key: %v", err)
	}
	key.Precompute()
	if key.Precomputed.Dp.Cmp(dp) != 0 || key.Precomputed.Dq.Cmp(dq) != 0 || key.Precomputed.Qinv.Cmp(qinv) != 0 {
		return bad("the CRT values do not belong to the key")
	}
	return key, nil
}
