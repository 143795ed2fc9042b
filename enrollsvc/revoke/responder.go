package revoke

import (
	"bytes"
	"context"
	"crypto"
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/enrollment-appliance/aeappliance/proto/certutil"
	"golang.org/x/crypto/cryptobyte"
	casn1 "golang.org/x/crypto/cryptobyte/asn1"
	"golang.org/x/crypto/ocsp"
)

// ResponderOptions configure a Responder.
type ResponderOptions struct {
	CA *x509.Certificate
	// Signer is the CA key, or the key of Cert.
	Signer crypto.Signer
	// Cert is a delegated responder certificate issued by CA with the id-kp-OCSPSigning extended
	// key usage (and, as RFC 6960 4.2.2.2.1 advises, id-pkix-ocsp-nocheck); nil when the CA key
	// signs. It is sent with every answer.
	Cert   *x509.Certificate
	Source Source
	// Validity is nextUpdate - thisUpdate of every answer and the HTTP cache lifetime (default
	// one hour): how long a cached "good" may outlive a revocation.
	Validity time.Duration
	Now      func() time.Time // default time.Now
	Log      *slog.Logger     // default slog.Default()
}

// Responder answers OCSP requests (RFC 6960) about the certificates of one CA in the profile of
// RFC 5019: from pre-signed responses, so that a flood of requests costs no signature. The first
// request about a certificate (per CertID form) has its answer signed once and kept; it is signed
// again when half its validity has passed (at the next request after that) and as soon as the
// certificate is revoked (Revoked). It is safe for concurrent use.
type Responder struct {
	o           ResponderOptions
	alg         sigAlg
	responderID []byte                    // [2] EXPLICIT KeyHash
	certs       []byte                    // [0] EXPLICIT SEQUENCE OF Certificate, or nil
	issuer      map[crypto.Hash][2][]byte // issuerNameHash and issuerKeyHash per CertID hash

	mu       sync.Mutex
	cache    map[string]*presigned    // by the CertID's DER, as requested
	inflight map[string]chan struct{} // CertIDs being signed: others wait for that signature
}

// presigned is a signed answer kept for the requests about one CertID.
type presigned struct {
	a         answer
	serial    string    // certutil.SerialString, for Revoked
	refreshAt time.Time // sign again at the first request after this
}

// maxPresigned bounds the kept answers: a CertID is kept only for a certificate the CA issued, in
// at most eight forms (four hashes, parameters or not), so only a CA with more than 128k
// certificates asked about in every form reaches it; then an arbitrary answer is dropped.
const maxPresigned = 1 << 20

// DefaultOCSPValidity is the default ResponderOptions.Validity.
const DefaultOCSPValidity = time.Hour

// NewResponder checks o and prepares what every answer repeats.
func NewResponder(o ResponderOptions) (*Responder, error) {
	switch {
	case o.CA == nil:
		return nil, errors.New("revoke: ResponderOptions.CA is required")
	case o.Signer == nil:
		return nil, errors.New("revoke: ResponderOptions.Signer is required")
	case o.Source == nil:
		return nil, errors.New("revoke: ResponderOptions.Source is required")
	case o.Validity < 0:
		return nil, errors.New("revoke: ResponderOptions.Validity must not be negative")
	}
	if o.Validity == 0 {
		o.Validity = DefaultOCSPValidity
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	r := &Responder{o: o, issuer: map[crypto.Hash][2][]byte{}, cache: map[string]*presigned{}, inflight: map[string]chan struct{}{}}
	signerCert := o.CA
	if o.Cert != nil {
		if err := checkDelegate(o.Cert, o.CA, o.Now()); err != nil {
			return nil, fmt.Errorf("revoke: ResponderOptions.Cert: %w", err)
		}
		signerCert = o.Cert
		var b cryptobyte.Builder
		b.AddASN1(casn1.Tag(0).Constructed().ContextSpecific(), func(b *cryptobyte.Builder) {
			b.AddASN1(casn1.SEQUENCE, func(b *cryptobyte.Builder) { b.AddBytes(o.Cert.Raw) })
		})
		r.certs = b.BytesOrPanic()
	}
	if !certutil.PublicKeysEqual(signerCert.PublicKey, o.Signer.Public()) {
		return nil, errors.New("revoke: ResponderOptions.Signer does not match the key of the signing certificate")
	}
	var err error
	if r.alg, err = sigAlgFor(o.Signer.Public()); err != nil {
		return nil, fmt.Errorf("revoke: responder key: %w", err)
	}
	kh, err := keyHash(signerCert.RawSubjectPublicKeyInfo, crypto.SHA1)
	if err != nil {
		return nil, fmt.Errorf("revoke: responder key: %w", err)
	}
	var b cryptobyte.Builder
	b.AddASN1(casn1.Tag(2).Constructed().ContextSpecific(), func(b *cryptobyte.Builder) { b.AddASN1OctetString(kh) })
	r.responderID = b.BytesOrPanic()
	for _, h := range certIDHashes {
		name := h.New()
		name.Write(o.CA.RawSubject)
		key, err := keyHash(o.CA.RawSubjectPublicKeyInfo, h)
		if err != nil {
			return nil, fmt.Errorf("revoke: CA key: %w", err)
		}
		r.issuer[h] = [2][]byte{name.Sum(nil), key}
	}
	return r, nil
}

// checkDelegate checks a delegated responder certificate (RFC 6960 4.2.2.2).
func checkDelegate(c, ca *x509.Certificate, now time.Time) error {
	if err := c.CheckSignatureFrom(ca); err != nil || !bytes.Equal(c.RawIssuer, ca.RawSubject) {
		return fmt.Errorf("not issued by the CA: %v", err)
	}
	if !slices.Contains(c.ExtKeyUsage, x509.ExtKeyUsageOCSPSigning) {
		return errors.New("no id-kp-OCSPSigning extended key usage")
	}
	if now.Before(c.NotBefore) || now.After(c.NotAfter) {
		return fmt.Errorf("not valid at %s", now.UTC().Format(time.RFC3339))
	}
	return nil
}

// answer is an OCSPResponse and what the HTTP layer needs to know about it.
type answer struct {
	der                    []byte
	status                 ocsp.ResponseStatus
	thisUpdate, nextUpdate time.Time // successful answers only
}

// errorAnswer is an unsigned OCSPResponse with an error status and no responseBytes.
func errorAnswer(s ocsp.ResponseStatus) answer {
	return answer{der: []byte{0x30, 0x03, byte(casn1.ENUM), 0x01, byte(s)}, status: s}
}

var oidOCSPBasic = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 48, 1, 1}

// Respond answers a DER OCSPRequest with a DER OCSPResponse, in the profile of RFC 5019: a
// request names one certificate (RFC 5019 section 2.1.1), answered good or revoked (time and,
// unless unspecified, reason) from a pre-signed response. A nonce is checked but not echoed:
// pre-signed answers cannot carry one (RFC 5019 section 2.1, which lets responders ignore it). A
// serial the CA never issued gets the unsigned unauthorized answer RFC 5019 section 2.2.3 gives
// for certificates without a pre-produced response, so that asking about random serials costs no
// signature either. A request that does not parse, names several certificates, or has a nonce
// outside 1..32 octets gets malformedRequest; one with a CertID naming another issuer (or hashed
// with an algorithm other than SHA-1, SHA-256, SHA-384, SHA-512) gets unauthorized. Neither is
// an error. When the Source or the key fails, the response is internalError and the error says
// why; the response is always usable.
func (r *Responder) Respond(ctx context.Context, der []byte) ([]byte, error) {
	a, err := r.answer(ctx, der)
	return a.der, err
}

func (r *Responder) answer(ctx context.Context, der []byte) (answer, error) {
	req, err := parseRequest(der)
	if err != nil {
		return errorAnswer(ocsp.Malformed), nil
	}
	for _, id := range req.certIDs {
		h, ok := r.issuer[id.hash]
		if !ok || !bytes.Equal(id.nameHash, h[0]) || !bytes.Equal(id.keyHash, h[1]) {
			return errorAnswer(ocsp.Unauthorized), nil
		}
	}
	if len(req.certIDs) != 1 {
		return errorAnswer(ocsp.Malformed), nil
	}
	return r.presignedAnswer(ctx, req.certIDs[0])
}

// presignedAnswer is the kept answer for id, signed first if there is none or it is due.
func (r *Responder) presignedAnswer(ctx context.Context, id certID) (answer, error) {
	key := string(id.raw)
	for {
		r.mu.Lock()
		if p := r.cache[key]; p != nil && r.o.Now().Before(p.refreshAt) {
			r.mu.Unlock()
			return p.a, nil
		}
		wait, busy := r.inflight[key]
		if !busy {
			r.inflight[key] = make(chan struct{})
			r.mu.Unlock()
			break
		}
		r.mu.Unlock()
		select {
		case <-wait:
		case <-ctx.Done():
			return errorAnswer(ocsp.TryLater), ctx.Err()
		}
	}
	defer func() {
		r.mu.Lock()
		close(r.inflight[key])
		delete(r.inflight, key)
		r.mu.Unlock()
	}()
	if id.serial.Sign() <= 0 || id.serial.BitLen() > 8*maxSerialOctets { // never ours
		return errorAnswer(ocsp.Unauthorized), nil
	}
	st, _, err := r.o.Source.CertStatus(ctx, id.serial)
	if err != nil {
		return errorAnswer(ocsp.InternalError), fmt.Errorf("revoke: OCSP: status of serial %s: %w", certutil.SerialString(id.serial), err)
	}
	if st == Unknown {
		return errorAnswer(ocsp.Unauthorized), nil
	}
	a, err := r.sign(ctx, id)
	if err != nil {
		return a, err
	}
	r.mu.Lock()
	if len(r.cache) >= maxPresigned {
		for k := range r.cache {
			delete(r.cache, k)
			break
		}
	}
	r.cache[key] = &presigned{a: a, serial: certutil.SerialString(id.serial), refreshAt: a.thisUpdate.Add(r.o.Validity / 2)}
	r.mu.Unlock()
	return a, nil
}

// Revoked drops the kept answers about serial: the next request gets one signed anew, which says
// revoked. The service calls it once the revocation is stored, before the revocation returns.
func (r *Responder) Revoked(serial string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for k, p := range r.cache {
		if p.serial == serial {
			delete(r.cache, k)
		}
	}
}

// sign makes the signed answer about id (RFC 6960 4.2.1), without a nonce.
func (r *Responder) sign(ctx context.Context, id certID) (answer, error) {
	fail := func(err error) (answer, error) {
		return errorAnswer(ocsp.InternalError), fmt.Errorf("revoke: OCSP: %w", err)
	}
	now := r.o.Now().UTC().Truncate(time.Second)
	a := answer{status: ocsp.Success, thisUpdate: now, nextUpdate: now.Add(r.o.Validity)}
	var b cryptobyte.Builder
	b.AddASN1(casn1.SEQUENCE, func(b *cryptobyte.Builder) { // ResponseData
		b.AddBytes(r.responderID)
		b.AddBytes(appendGeneralizedTime(nil, now)) // producedAt
		b.AddASN1(casn1.SEQUENCE, func(b *cryptobyte.Builder) {
			if err := r.single(ctx, b, id, a.thisUpdate, a.nextUpdate); err != nil {
				b.SetError(err)
			}
		})
	})
	tbs, err := b.Bytes()
	if err != nil {
		return fail(err)
	}
	sig, err := sign(ctx, r.o.Signer, r.alg, false, tbs)
	if err != nil {
		return fail(fmt.Errorf("signing: %w", err))
	}
	b = cryptobyte.Builder{}
	b.AddASN1(casn1.SEQUENCE, func(b *cryptobyte.Builder) { // OCSPResponse
		b.AddASN1Enum(int64(ocsp.Success))
		b.AddASN1(casn1.Tag(0).Constructed().ContextSpecific(), func(b *cryptobyte.Builder) {
			b.AddASN1(casn1.SEQUENCE, func(b *cryptobyte.Builder) { // ResponseBytes
				b.AddASN1ObjectIdentifier(oidOCSPBasic)
				b.AddASN1(casn1.OCTET_STRING, func(b *cryptobyte.Builder) {
					b.AddASN1(casn1.SEQUENCE, func(b *cryptobyte.Builder) { // BasicOCSPResponse
						b.AddBytes(tbs)
						b.AddBytes(r.alg.algID)
						b.AddASN1BitString(sig)
						b.AddBytes(r.certs)
					})
				})
			})
		})
	})
	if a.der, err = b.Bytes(); err != nil {
		return fail(err)
	}
	return a, nil
}

// single writes the SingleResponse for id.
func (r *Responder) single(ctx context.Context, b *cryptobyte.Builder, id certID, thisUpdate, nextUpdate time.Time) error {
	st, e := Unknown, Entry{}
	if id.serial.Sign() > 0 && id.serial.BitLen() <= 8*maxSerialOctets { // else never ours
		var err error
		if st, e, err = r.o.Source.CertStatus(ctx, id.serial); err != nil {
			return fmt.Errorf("status of serial %s: %w", certutil.SerialString(id.serial), err)
		}
	}
	if st == Revoked {
		e.Serial = id.serial
		if err := e.check(); err != nil {
			return err
		}
	}
	b.AddASN1(casn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddBytes(id.raw)
		switch st {
		case Good:
			b.AddASN1(casn1.Tag(0).ContextSpecific(), func(*cryptobyte.Builder) {}) // [0] IMPLICIT NULL
		case Revoked:
			b.AddASN1(casn1.Tag(1).Constructed().ContextSpecific(), func(b *cryptobyte.Builder) { // RevokedInfo
				b.AddBytes(appendGeneralizedTime(nil, e.RevokedAt))
				if e.Reason != 0 {
					b.AddASN1(casn1.Tag(0).Constructed().ContextSpecific(), func(b *cryptobyte.Builder) { b.AddASN1Enum(int64(e.Reason)) })
				}
			})
		default:
			b.AddASN1(casn1.Tag(2).ContextSpecific(), func(*cryptobyte.Builder) {}) // [2] IMPLICIT UnknownInfo (NULL)
		}
		b.AddBytes(appendGeneralizedTime(nil, thisUpdate))
		b.AddASN1(casn1.Tag(0).Constructed().ContextSpecific(), func(b *cryptobyte.Builder) {
			b.AddBytes(appendGeneralizedTime(nil, nextUpdate))
		})
	})
	return nil
}
