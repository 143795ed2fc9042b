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
	"slices"
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
	// Recorded is when the source recorded the revocation, which decides whether a delta CRL
	// lists it (CRLOptions.Since); zero means RevokedAt, for a source that dates a revocation
	// when it records it (enrollsvc's store). It is not encoded.
	Recorded time.Time
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
	// entered with a RevokedAt in the past must still be found by a later since (and says so
	// in Entry.Recorded, which BuildCRLs uses to pick a delta's entries). fn does not
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

	carryOff int    // where the entries start in DER (finish)
	carry    *carry // a full CRL BuildCRLs built: what the next one carries over
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
	b, err := newCRLBuild(o)
	if err != nil {
		return nil, err
	}
	n := 0
	err = src.EachRevoked(ctx, o.Since, func(e Entry) error {
		if n%4096 == 0 {
			if err := ctx.Err(); err != nil {
				return err
			}
		}
		n++
		_, _, _, err := b.add(e)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("revoke: listing revoked certificates: %w", err)
	}
	return b.finish(ctx, start)
}

// BuildCRLs builds a full CRL and a delta CRL on it from one walk of src (RFC 5280 5.2.4): every
// revocation goes into the full CRL, and those recorded at or after delta.Since (Entry.Recorded)
// into the delta too. The delta's entries are not encoded twice: its parts are the stretches of
// the full CRL's encoded entries it shares, so the pair costs one walk and one encoding, then a
// digest, a signature and a copy each. full must be a full CRL and delta a delta CRL whose
// BaseNumber is full's Number. The delta is nil when the full CRL is made and the delta fails
// (deltaErr says why); err is for the full CRL, in which case neither is returned.
//
// With prev, a full CRL BuildCRLs built before in this process, the walk does not start at the
// beginning: when prev's walk came in order of recording (as enrollsvc's store lists), prev's
// entries recorded before its newest less CarryMargin are carried over as they are, encoded, and
// the walk lists the rest again, so the result is the CRL a walk from the beginning makes, byte
// for byte. This relies on revocation being final (Source): an entry, once listed, never
// changes or goes. When prev cannot be used (its walk was out of order, the clock stepped back
// past the margin) the walk starts at the beginning.
func BuildCRLs(ctx context.Context, src Source, full, delta CRLOptions, prev *CRL) (fc, dc *CRL, deltaErr, err error) {
	start := time.Now()
	if full.BaseNumber != nil || delta.BaseNumber == nil || delta.BaseNumber.Cmp(full.Number) != 0 || !full.Since.IsZero() {
		return nil, nil, nil, errors.New("revoke: BuildCRLs needs a full CRL of every revocation and a delta CRL on it")
	}
	if prev != nil && (prev.carry == nil || prev.IsDelta()) {
		return nil, nil, nil, errors.New("revoke: BuildCRLs carries over only a full CRL it built itself")
	}
	fb, err := newCRLBuild(full)
	if err != nil {
		return nil, nil, nil, err
	}
	db, err := newCRLBuild(delta)
	if err != nil {
		return nil, nil, nil, err
	}
	c := &carry{ordered: true, walked: full.ThisUpdate}
	var since time.Time // the walk's: zero for every revocation
	if cp, ok := prev.carryPoint(delta.Since); ok {
		pc := prev.carry
		c.walked, c.upTo, c.last = pc.walked, pc.upTo, cp.t
		for _, k := range pc.points {
			if !k.t.Before(cp.t) {
				break
			}
			c.points = append(c.points, k)
		}
		since = cp.t
		// prev's entries before the point, capacity cut so that nothing is appended into prev.DER.
		if cp.off > 0 {
			off := prev.carryOff
			fb.entries.bufs = append(fb.entries.bufs, prev.DER[off:off+cp.off:off+cp.off])
		}
		fb.n, fb.bytes = cp.n, cp.off
	}
	n := 0
	err = src.EachRevoked(ctx, since, func(e Entry) error {
		if n%4096 == 0 {
			if err := ctx.Err(); err != nil {
				return err
			}
		}
		n++
		recorded := e.Recorded
		if recorded.IsZero() {
			recorded = e.RevokedAt
		}
		c.note(recorded, fb.bytes, fb.n)
		enc, chunk, off, err := fb.add(e)
		if err != nil {
			return err
		}
		if !recorded.Before(delta.Since) {
			db.share(enc, chunk, off)
		}
		return nil
	})
	if err != nil {
		return nil, nil, nil, fmt.Errorf("revoke: listing revoked certificates: %w", err)
	}
	walked := time.Since(start)
	fc, err = fb.finish(ctx, start)
	if err != nil {
		return nil, nil, nil, err
	}
	fc.carry = c
	dc, deltaErr = db.finish(ctx, time.Now().Add(-walked)) // the delta's Took counts the shared walk
	return fc, dc, deltaErr, nil
}

// CarryMargin: a full CRL built on a previous one (BuildCRLs with prev) lists again, from the
// store, the previous one's revocations recorded since its newest less this margin. The margin
// covers revocations committed after the previous walk with a time before its newest
// (transactions in flight), small clock steps and, with a clustered store, instances whose clocks
// differ by less than it (as DeltaMargin does for delta CRLs; Kerberos already needs them within
// five minutes). A revocation dated further back than the margin when it is recorded is listed
// by the next walk from the beginning (FullWalkEvery).
const CarryMargin = DeltaMargin

// carryEvery spaces the points where a later build may start its walk (carry.points).
const carryEvery = time.Second

// carry is what a full CRL built by BuildCRLs keeps for the next one built on it.
type carry struct {
	// points are where a walk may start again: the entries before each point were recorded
	// before its time, those from it on at or after it. One per carryEvery of recording time
	// at most, the older ones dropped once past the margin (one before it is kept).
	points  []carryPoint
	upTo    time.Time // the newest revocation listed (by Entry.Recorded)
	last    time.Time // the previous entry's (note)
	ordered bool      // the walk came in order of recording
	walked  time.Time // the thisUpdate of the CRL whose walk from the beginning the chain of carried CRLs started with
}

// carryPoint: n entries (off octets) come before the first recorded at or after t.
type carryPoint struct {
	t      time.Time
	off, n int
}

// note records the next entry, recorded at t, to be encoded at off (octets into the entries) as
// the entry after n others.
func (c *carry) note(t time.Time, off, n int) {
	if t.Before(c.last) {
		c.ordered = false
	}
	c.last = t
	if t.After(c.upTo) {
		c.upTo = t
	}
	if k := len(c.points); k == 0 || !t.Before(c.points[k-1].t.Add(carryEvery)) {
		c.points = append(c.points, carryPoint{t: t, off: off, n: n})
	}
	if len(c.points) > 4096 { // keep one point before the margin
		cut := c.upTo.Add(-CarryMargin)
		i := 0
		for i+1 < len(c.points) && !c.points[i+1].t.After(cut) {
			i++
		}
		c.points = slices.Delete(c.points, 0, i)
	}
}

// carryPoint returns where a build on c (nil: none) starts its walk: the last point at or before
// c's newest revocation less CarryMargin, and before deltaSince too (the new delta's entries all
// come from the walk). ok is false when a walk must start at the beginning.
func (c *CRL) carryPoint(deltaSince time.Time) (carryPoint, bool) {
	if c == nil || c.carry == nil || !c.carry.ordered {
		return carryPoint{}, false
	}
	cut := c.carry.upTo.Add(-CarryMargin)
	if deltaSince.Before(cut) {
		cut = deltaSince
	}
	var cp carryPoint
	ok := false
	for _, p := range c.carry.points {
		if p.t.After(cut) {
			break
		}
		cp, ok = p, true
	}
	return cp, ok
}

// Walked is the thisUpdate of the CRL whose walk over every revocation this full CRL's entries go
// back to: its own, or the first of the chain it was carried over from (BuildCRLs with prev).
// Zero for a CRL this process did not build.
func (c *CRL) Walked() time.Time {
	if c.carry == nil {
		return time.Time{}
	}
	return c.carry.walked
}

// crlBuild is one CRL being built: the fixed parts, then the encoded entries as parts (chunks
// of its own, or stretches of another build's chunks), then the extensions.
type crlBuild struct {
	o       CRLOptions
	alg     sigAlg
	prefix  []byte // version, signature, issuer, thisUpdate, nextUpdate
	exts    []byte
	entries chunks
	n       int // entries
	bytes   int // their encodings' octets
	scratch [maxSerialOctets + 1]byte
	// sharedChunk and sharedEnd are where the last shared entry (share) ended in the other
	// build's chunks.
	sharedChunk, sharedEnd int
}

func newCRLBuild(o CRLOptions) (*crlBuild, error) {
	if err := o.check(); err != nil {
		return nil, fmt.Errorf("revoke: %w", err)
	}
	alg, err := sigAlgFor(o.Signer.Public())
	if err != nil {
		return nil, fmt.Errorf("revoke: CA key: %w", err)
	}
	b := &crlBuild{o: o, alg: alg, sharedChunk: -1}
	b.prefix = []byte{0x02, 0x01, 0x01}
	b.prefix = append(b.prefix, alg.algID...)
	b.prefix = append(b.prefix, o.CA.RawSubject...)
	b.prefix = appendTime(b.prefix, o.ThisUpdate)
	b.prefix = appendTime(b.prefix, o.NextUpdate)
	if b.exts, err = crlExtensions(&o); err != nil {
		return nil, fmt.Errorf("revoke: %w", err)
	}
	return b, nil
}

// add encodes e into b's chunks and returns its encoding, which stays where it is (a chunk never
// grows past its capacity), with the chunk's index and the encoding's offset in it.
func (b *crlBuild) add(e Entry) (enc []byte, chunk, off int, err error) {
	if e.Reason == 8 && b.o.BaseNumber == nil {
		return nil, 0, 0, fmt.Errorf("serial %s: removeFromCRL belongs in delta CRLs only", certutil.SerialString(e.Serial))
	}
	cur := b.entries.room()
	off = len(*cur)
	if *cur, err = appendEntry(*cur, e, b.scratch[:]); err != nil {
		return nil, 0, 0, err
	}
	b.n++
	b.bytes += len(*cur) - off
	return (*cur)[off:], len(b.entries.bufs) - 1, off, nil
}

// share lists an entry another build encoded, as add returned it: when it directly follows the
// previous shared one in the same chunk the last part grows over it, else it starts a part.
func (b *crlBuild) share(enc []byte, chunk, off int) {
	b.n++
	if k := len(b.entries.bufs); k > 0 && chunk == b.sharedChunk && off == b.sharedEnd {
		last := b.entries.bufs[k-1]
		b.entries.bufs[k-1] = last[:len(last)+len(enc)]
	} else {
		b.entries.bufs = append(b.entries.bufs, enc)
	}
	b.sharedChunk, b.sharedEnd = chunk, off+len(enc)
}

// finish signs the CRL: the TBSCertList is hashed from its parts, the CA key signs the digest,
// the signature is verified (signDigest) and the parts are copied once into the DER.
func (b *crlBuild) finish(ctx context.Context, start time.Time) (*CRL, error) {
	o, alg := &b.o, b.alg
	// revokedCertificates is left out when empty (RFC 5280 5.1.2.6).
	var revHdr []byte
	if size := b.entries.size(); size > 0 {
		revHdr = appendHeader(nil, 0x30, size)
	}
	tbs := [][]byte{nil, b.prefix, revHdr}
	tbs = append(append(tbs, b.entries.bufs...), b.exts)
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
	entOff := len(der) + len(tbs[0]) + len(tbs[1]) + len(tbs[2])
	for _, p := range tbs {
		der = append(der, p...)
	}
	der = append(der, alg.algID...)
	der = appendHeader(der, byte(casn1.BIT_STRING), sigLen)
	der = append(append(der, 0), sig...)
	b.entries.bufs = nil

	c := &CRL{DER: der, Number: new(big.Int).Set(o.Number),
		ThisUpdate: o.ThisUpdate.UTC().Truncate(time.Second), NextUpdate: o.NextUpdate.UTC().Truncate(time.Second),
		Entries: b.n, carryOff: entOff}
	if o.BaseNumber != nil {
		c.BaseNumber = new(big.Int).Set(o.BaseNumber)
	}
	if !o.NextPublish.IsZero() {
		c.NextPublish = o.NextPublish.UTC().Truncate(time.Second)
	}
	c.Took = time.Since(start)
	return c, nil
}

// chunks holds the encoded entries: growing one slice would copy them over and over. A build
// that shares another's entries (share) holds stretches of that build's chunks instead.
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
