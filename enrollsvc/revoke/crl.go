package revoke

import (
	"context"
	"crypto"
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"fmt"
	"math/big"
	"net/url"
	"time"

	"github.com/enrollment-appliance/aeappliance/proto/certutil"
	"golang.org/x/crypto/cryptobyte"
	casn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// Entry is one revoked certificate.
type Entry struct {
	Serial    *big.Int
	RevokedAt time.Time
	// Reason is the RFC 5280 CRLReason: 0 unspecified (left out of CRLs and OCSP answers),
	// 1 keyCompromise, 2 cACompromise, 3 affiliationChanged, 4 superseded,
	// 5 cessationOfOperation, 6 certificateHold, 8 removeFromCRL (delta CRLs only),
	// 9 privilegeWithdrawn, 10 aACompromise.
	Reason int
}

// Status is what the store knows about a serial number.
type Status int

// The statuses of RFC 6960 2.2.
const (
	// Good: issued by this CA and not revoked (expired certificates included).
	Good Status = iota
	// Revoked: issued by this CA and revoked; the Entry says when and why.
	Revoked
	// Unknown: never issued by this CA.
	Unknown
)

func (s Status) String() string {
	switch s {
	case Good:
		return "good"
	case Revoked:
		return "revoked"
	case Unknown:
		return "unknown"
	}
	return fmt.Sprintf("Status(%d)", int(s))
}

// Source is what revoke needs from the store (enrollsvc/store implements it).
type Source interface {
	// EachRevoked calls fn for every revoked certificate of this CA whose revocation was
	// recorded at or after since (the zero time: every one), in any order, and stops at the first
	// error fn returns, returning it. Delta CRLs rely on since meaning "recorded": a revocation
	// entered with a RevokedAt in the past must still be found by a later since. fn does not
	// keep the Entry, so one *big.Int may be reused for every call.
	EachRevoked(ctx context.Context, since time.Time, fn func(Entry) error) error
	// CertStatus says whether serial was issued by this CA and whether it is revoked; for
	// Revoked the Entry has the time and reason. A serial never issued is Unknown, not an error.
	CertStatus(ctx context.Context, serial *big.Int) (Status, Entry, error)
}

// CRLOptions describe one CRL.
type CRLOptions struct {
	CA     *x509.Certificate // the issuer; it must allow cRLSign if it has a key usage
	Signer crypto.Signer     // the CA key
	// Number is the CRLNumber: non-negative, at most 20 octets, from the sequence that full and
	// delta CRLs of this CA share (RFC 5280 5.2.3).
	Number *big.Int
	// ThisUpdate and NextUpdate are encoded in whole seconds (UTC).
	ThisUpdate, NextUpdate time.Time
	// BaseNumber makes a delta CRL: the CRLNumber of its base full CRL, in a critical
	// DeltaCRLIndicator. Nil for a full CRL.
	BaseNumber *big.Int
	// Since lists only revocations recorded at or after it (Source.EachRevoked); zero lists
	// all. A delta CRL sets it to the base's thisUpdate less a margin.
	Since time.Time
	// FreshestCRL (full CRLs only) are the URLs of the delta CRL, put in a non-critical
	// FreshestCRL extension as the fullName of one distribution point.
	FreshestCRL []string
	// NextPublish, when set, goes into the Microsoft "Next CRL Publish" extension
	// (1.3.6.1.4.1.311.21.4), which tells Windows clients when to look for a newer CRL before
	// NextUpdate.
	NextPublish time.Time
}

// CRL is a signed CRL and what it says.
type CRL struct {
	DER                    []byte
	Number                 *big.Int
	BaseNumber             *big.Int // nil for a full CRL
	ThisUpdate, NextUpdate time.Time
	NextPublish            time.Time // zero when not set
	Entries                int
	Took                   time.Duration // building and signing
}

// IsDelta reports whether c is a delta CRL.
func (c *CRL) IsDelta() bool { return c.BaseNumber != nil }

var (
	oidAKI            = asn1.ObjectIdentifier{2, 5, 29, 35}
	oidCRLNumber      = asn1.ObjectIdentifier{2, 5, 29, 20}
	oidDeltaCRL       = asn1.ObjectIdentifier{2, 5, 29, 27}
	oidFreshestCRL    = asn1.ObjectIdentifier{2, 5, 29, 46}
	oidMSNextPublish  = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 311, 21, 4}
	reasonCodeExtHead = []byte{0x30, 0x0c, 0x30, 0x0a, 0x06, 0x03, 0x55, 0x1d, 0x15, 0x04, 0x03, 0x0a, 0x01} // crlEntryExtensions { reasonCode (2.5.29.21) ENUMERATED ... }
)

// maxSerialOctets is RFC 5280 4.1.2.2's limit on serial numbers (and 5.2.3's on CRL numbers).
const maxSerialOctets = 20

func (o *CRLOptions) check() error {
	switch {
	case o.CA == nil:
		return errors.New("CRLOptions.CA is required")
	case o.Signer == nil:
		return errors.New("CRLOptions.Signer is required")
	case !certutil.PublicKeysEqual(o.CA.PublicKey, o.Signer.Public()):
		return errors.New("CRLOptions.Signer does not match the key of CRLOptions.CA")
	case o.CA.KeyUsage != 0 && o.CA.KeyUsage&x509.KeyUsageCRLSign == 0:
		return errors.New("CRLOptions.CA does not allow cRLSign")
	case o.Number == nil || o.Number.Sign() < 0 || o.Number.BitLen() > 8*maxSerialOctets:
		return errors.New("CRLOptions.Number must be a non-negative integer of at most 20 octets")
	case o.BaseNumber != nil && (o.BaseNumber.Sign() < 0 || o.BaseNumber.Cmp(o.Number) >= 0):
		return errors.New("CRLOptions.BaseNumber must be non-negative and below Number")
	case o.BaseNumber != nil && len(o.FreshestCRL) > 0:
		return errors.New("CRLOptions.FreshestCRL is for full CRLs only")
	case !o.NextUpdate.After(o.ThisUpdate):
		return errors.New("CRLOptions.NextUpdate must be after ThisUpdate")
	}
	times := []time.Time{o.ThisUpdate, o.NextUpdate}
	if !o.NextPublish.IsZero() {
		times = append(times, o.NextPublish)
	}
	for _, t := range times {
		if err := checkTime(t); err != nil {
			return fmt.Errorf("CRLOptions: %w", err)
		}
	}
	for _, u := range o.FreshestCRL {
		if p, err := url.Parse(u); err != nil || p.Scheme == "" || !isASCII(u) {
			return fmt.Errorf("CRLOptions.FreshestCRL: bad URL %q", u)
		}
	}
	return nil
}

// BuildCRL builds and signs a version 2 CRL (RFC 5280 5) of the revocations src lists.
//
// The entries are encoded as DER while src iterates, into chunks of up to 1 MiB; nothing holds a
// parsed list of entries. The TBSCertList is hashed from its parts, the CA key signs that one
// digest, and the signature is verified before the parts are copied once into the CRL. Memory
// is about twice the size of the CRL (some 47 octets an entry).
func BuildCRL(ctx context.Context, src Source, o CRLOptions) (*CRL, error) {
	start := time.Now()
	if err := o.check(); err != nil {
		return nil, fmt.Errorf("revoke: %w", err)
	}
	alg, err := sigAlgFor(o.Signer.Public())
	if err != nil {
		return nil, fmt.Errorf("revoke: CA key: %w", err)
	}
	delta := o.BaseNumber != nil
	// version v2, signature, issuer, thisUpdate, nextUpdate
	prefix := []byte{0x02, 0x01, 0x01}
	prefix = append(prefix, alg.algID...)
	prefix = append(prefix, o.CA.RawSubject...)
	prefix = appendTime(prefix, o.ThisUpdate)
	prefix = appendTime(prefix, o.NextUpdate)
	exts, err := crlExtensions(&o)
	if err != nil {
		return nil, fmt.Errorf("revoke: %w", err)
	}

	var entries chunks
	var scratch [maxSerialOctets + 1]byte
	n := 0
	err = src.EachRevoked(ctx, o.Since, func(e Entry) error {
		if n%4096 == 0 {
			if err := ctx.Err(); err != nil {
				return err
			}
		}
		if e.Reason == 8 && !delta {
			return fmt.Errorf("serial %s: removeFromCRL belongs in delta CRLs only", certutil.SerialString(e.Serial))
		}
		var err error
		cur := entries.room()
		*cur, err = appendEntry(*cur, e, scratch[:])
		n++
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("revoke: listing revoked certificates: %w", err)
	}

	// revokedCertificates is left out when empty (RFC 5280 5.1.2.6).
	var revHdr []byte
	if size := entries.size(); size > 0 {
		revHdr = appendHeader(nil, 0x30, size)
	}
	tbs := [][]byte{nil, prefix, revHdr}
	tbs = append(append(tbs, entries.bufs...), exts)
	tbsLen := 0
	for _, p := range tbs[1:] {
		tbsLen += len(p)
	}
	tbs[0] = appendHeader(nil, 0x30, tbsLen)
	h := alg.hash.New()
	for _, p := range tbs {
		h.Write(p)
	}
	sig, err := signDigest(ctx, o.Signer, alg, true, h.Sum(nil))
	if err != nil {
		return nil, fmt.Errorf("revoke: signing the CRL: %w", err)
	}
	sigLen := 1 + len(sig) // the BIT STRING's unused-bits octet, then the signature
	total := len(tbs[0]) + tbsLen + len(alg.algID) + headerLen(sigLen) + sigLen
	der := appendHeader(make([]byte, 0, headerLen(total)+total), 0x30, total)
	for _, p := range tbs {
		der = append(der, p...)
	}
	der = append(der, alg.algID...)
	der = appendHeader(der, byte(casn1.BIT_STRING), sigLen)
	der = append(append(der, 0), sig...)

	c := &CRL{DER: der, Number: new(big.Int).Set(o.Number),
		ThisUpdate: o.ThisUpdate.UTC().Truncate(time.Second), NextUpdate: o.NextUpdate.UTC().Truncate(time.Second),
		Entries: n}
	if delta {
		c.BaseNumber = new(big.Int).Set(o.BaseNumber)
	}
	if !o.NextPublish.IsZero() {
		c.NextPublish = o.NextPublish.UTC().Truncate(time.Second)
	}
	c.Took = time.Since(start)
	return c, nil
}

// chunks holds the encoded entries: growing one slice would copy them over and over.
type chunks struct{ bufs [][]byte }

const (
	maxEntryLen = 2 + 2 + maxSerialOctets + 1 + 17 + 14 // SEQUENCE, INTEGER, GeneralizedTime, reasonCode
	maxChunk    = 1 << 20
)

// room returns the chunk to append the next entry to, with room for one.
func (c *chunks) room() *[]byte {
	if k := len(c.bufs); k > 0 && cap(c.bufs[k-1])-len(c.bufs[k-1]) >= maxEntryLen {
		return &c.bufs[k-1]
	}
	size := 4096 // small CRLs stay small; chunks double up to maxChunk
	if k := len(c.bufs); k > 0 {
		size = min(2*cap(c.bufs[k-1]), maxChunk)
	}
	c.bufs = append(c.bufs, make([]byte, 0, size))
	return &c.bufs[len(c.bufs)-1]
}

func (c *chunks) size() int {
	n := 0
	for _, b := range c.bufs {
		n += len(b)
	}
	return n
}

// check checks what a CRL entry or an OCSP answer needs of e.
func (e Entry) check() error {
	if e.Serial == nil || e.Serial.Sign() <= 0 {
		return fmt.Errorf("serial %v is not a positive integer", e.Serial)
	}
	var err error
	switch {
	case e.Serial.BitLen() > 8*maxSerialOctets:
		err = errors.New("is longer than 20 octets")
	case e.Reason < 0 || e.Reason > 10 || e.Reason == 7:
		err = fmt.Errorf("has %d, which is not an RFC 5280 CRLReason", e.Reason)
	default:
		if err = checkTime(e.RevokedAt); err != nil {
			err = fmt.Errorf("has a revocation %w", err)
		}
	}
	if err != nil {
		return fmt.Errorf("serial %s %w", certutil.SerialString(e.Serial), err)
	}
	return nil
}

// appendEntry appends one revokedCertificates entry: serial, revocationDate and, unless the
// reason is unspecified (RFC 5280 5.3.1 recommends leaving it out then), a reasonCode extension.
func appendEntry(b []byte, e Entry, scratch []byte) ([]byte, error) {
	if err := e.check(); err != nil {
		return b, err
	}
	serial := intBytes(scratch, e.Serial)
	content := 2 + len(serial) + timeLen(e.RevokedAt) // INTEGER (short: at most 21 octets), Time
	if e.Reason != 0 {
		content += len(reasonCodeExtHead) + 1
	}
	b = appendHeader(b, 0x30, content)
	b = appendHeader(b, byte(casn1.INTEGER), len(serial))
	b = append(b, serial...)
	b = appendTime(b, e.RevokedAt)
	if e.Reason != 0 {
		b = append(b, reasonCodeExtHead...)
		b = append(b, byte(e.Reason))
	}
	return b, nil
}

// crlExtensions is the [0] EXPLICIT crlExtensions field: AuthorityKeyIdentifier, CRLNumber,
// then DeltaCRLIndicator (critical) for a delta or FreshestCRL for a full CRL, then Next CRL
// Publish.
func crlExtensions(o *CRLOptions) ([]byte, error) {
	aki := o.CA.SubjectKeyId
	if len(aki) == 0 {
		var err error
		if aki, err = keyHash(o.CA.RawSubjectPublicKeyInfo, crypto.SHA1); err != nil {
			return nil, fmt.Errorf("CA key identifier: %w", err)
		}
	}
	var b cryptobyte.Builder
	b.AddASN1(casn1.Tag(0).Constructed().ContextSpecific(), func(b *cryptobyte.Builder) {
		b.AddASN1(casn1.SEQUENCE, func(b *cryptobyte.Builder) {
			addExtension(b, oidAKI, false, func(b *cryptobyte.Builder) {
				b.AddASN1(casn1.SEQUENCE, func(b *cryptobyte.Builder) {
					b.AddASN1(casn1.Tag(0).ContextSpecific(), func(b *cryptobyte.Builder) { b.AddBytes(aki) })
				})
			})
			addExtension(b, oidCRLNumber, false, func(b *cryptobyte.Builder) { b.AddASN1BigInt(o.Number) })
			if o.BaseNumber != nil {
				addExtension(b, oidDeltaCRL, true, func(b *cryptobyte.Builder) { b.AddASN1BigInt(o.BaseNumber) })
			}
			if len(o.FreshestCRL) > 0 {
				addExtension(b, oidFreshestCRL, false, func(b *cryptobyte.Builder) {
					b.AddASN1(casn1.SEQUENCE, func(b *cryptobyte.Builder) { // CRLDistributionPoints
						b.AddASN1(casn1.SEQUENCE, func(b *cryptobyte.Builder) { // DistributionPoint
							b.AddASN1(casn1.Tag(0).Constructed().ContextSpecific(), func(b *cryptobyte.Builder) { // distributionPoint
								b.AddASN1(casn1.Tag(0).Constructed().ContextSpecific(), func(b *cryptobyte.Builder) { // fullName
									for _, u := range o.FreshestCRL {
										b.AddASN1(casn1.Tag(6).ContextSpecific(), func(b *cryptobyte.Builder) { b.AddBytes([]byte(u)) })
									}
								})
							})
						})
					})
				})
			}
			if !o.NextPublish.IsZero() {
				addExtension(b, oidMSNextPublish, false, func(b *cryptobyte.Builder) { b.AddBytes(appendTime(nil, o.NextPublish)) })
			}
		})
	})
	return b.Bytes()
}

// addExtension adds an Extension whose extnValue is what value writes.
func addExtension(b *cryptobyte.Builder, oid asn1.ObjectIdentifier, critical bool, value cryptobyte.BuilderContinuation) {
	b.AddASN1(casn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddASN1ObjectIdentifier(oid)
		if critical {
			b.AddASN1Boolean(true)
		}
		b.AddASN1(casn1.OCTET_STRING, value)
	})
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}
