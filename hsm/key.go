//go:build cgo

package hsm

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync/atomic"
	"time"

	"github.com/ThalesIgnite/crypto11"
	"github.com/miekg/pkcs11"
	"github.com/thales-e-security/pool"
)

// Key is a private key in the token. It implements crypto.Signer. A Key keeps
// working across reopens of the token: it finds its signer again in each new
// crypto11 context and caches it there.
type Key struct {
	ks    *KeyStore
	id    []byte
	label []byte
	kt    KeyType
	// decryptOnly: the token refuses this key's signatures (CKA_SIGN false, UsageDecrypt), so the
	// health check does not sign with it.
	decryptOnly bool
	pub         crypto.PublicKey
	uri         URI
	ident       string
	// signatures counts the signatures this Key made (Signatures).
	signatures atomic.Uint64
}

var _ crypto.Signer = (*Key)(nil)

// Signatures is how many signatures this Key has made in the token since it was found or
// generated: the number of times the key was used, for monitoring and for tests that must show
// the key signed nothing.
func (k *Key) Signatures() uint64 { return k.signatures.Load() }

// Public returns the public half.
func (k *Key) Public() crypto.PublicKey { return k.pub }

// URI names the key: token label and serial, object label, id, type=private.
func (k *Key) URI() URI {
	u := k.uri
	u.ID = append([]byte(nil), u.ID...)
	return u
}

// Type is the key's type.
func (k *Key) Type() KeyType { return k.kt }

// Sign signs digest in the token with a deadline of Config.SignTimeout. rand is
// ignored: the token makes its own randomness. For RSA, opts may be
// *rsa.PSSOptions (PSSSaltLengthAuto is signed as PSSSaltLengthEqualsHash, which
// every Auto verifier accepts); otherwise PKCS #1 v1.5 is used.
func (k *Key) Sign(_ io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	return k.SignContext(context.Background(), digest, opts)
}

// SignContext is Sign with a context; the deadline is the earlier of ctx's and
// Config.SignTimeout. If the token's sessions died, the token is reopened and the
// signature retried once.
func (k *Key) SignContext(ctx context.Context, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	if opts == nil {
		return nil, errors.New("hsm: Sign: opts is nil")
	}
	if h := opts.HashFunc(); h != 0 && len(digest) != h.Size() {
		return nil, fmt.Errorf("hsm: Sign: digest is %d bytes, %v wants %d", len(digest), h, h.Size())
	}
	if k.kt.rsaBits() > 0 {
		switch h := opts.HashFunc(); h {
		case 0, crypto.SHA1, crypto.SHA224, crypto.SHA256, crypto.SHA384, crypto.SHA512:
		default:
			return nil, fmt.Errorf("hsm: Sign: hash %v is not supported for RSA", h)
		}
		if pss, ok := opts.(*rsa.PSSOptions); ok {
			if pss.Hash == 0 {
				return nil, errors.New("hsm: Sign: RSA-PSS needs a hash")
			}
			if pss.SaltLength == rsa.PSSSaltLengthAuto {
				o := *pss
				o.SaltLength = rsa.PSSSaltLengthEqualsHash
				opts = &o
			}
		}
	}
	var sig []byte
	err := k.ks.do(ctx, func(g *generation) error {
		s, err := k.signerIn(g)
		if err != nil {
			return err
		}
		return k.ks.observed("sign", ctx, func() error {
			var err error
			sig, err = s.Sign(nil, digest, opts)
			if errors.Is(err, pool.ErrTimeout) {
				err = fmt.Errorf("no free PKCS#11 session within %s (Config.PoolWaitTimeout; Config.Sessions is %d): %w",
					k.ks.cfg.PoolWaitTimeout, k.ks.cfg.Sessions, err)
			}
			return err
		})
	})
	if err != nil {
		return nil, fmt.Errorf("hsm: signing with %s: %w", k.uri.Object, err)
	}
	k.signatures.Add(1)
	return sig, nil
}

// Decrypt decrypts msg (RSA PKCS #1 v1.5 key transport, as CMS EnvelopedData uses it) in the
// token, so that Key is a crypto.Decrypter. Only RSA keys generated with GenerateKeyFor and
// UsageDecrypt may decrypt; the token refuses the others. opts must be nil or
// *rsa.PKCS1v15DecryptOptions without SessionKeyLen (a padding oracle guard belongs to the caller).
func (k *Key) Decrypt(_ io.Reader, msg []byte, opts crypto.DecrypterOpts) ([]byte, error) {
	if k.kt.rsaBits() == 0 {
		return nil, fmt.Errorf("hsm: Decrypt: %s is not an RSA key", k.uri.Object)
	}
	if o, ok := opts.(*rsa.PKCS1v15DecryptOptions); opts != nil && (!ok || o.SessionKeyLen != 0) {
		return nil, errors.New("hsm: Decrypt: only PKCS #1 v1.5 without SessionKeyLen is supported")
	}
	var out []byte
	ctx := context.Background()
	err := k.ks.do(ctx, func(g *generation) error {
		s, err := k.signerIn(g)
		if err != nil {
			return err
		}
		d, ok := s.(crypto.Decrypter)
		if !ok {
			return errors.New("the PKCS#11 key cannot decrypt")
		}
		return k.ks.observed("decrypt", ctx, func() error {
			var err error
			out, err = d.Decrypt(nil, msg, nil)
			return err
		})
	})
	if err != nil {
		return nil, fmt.Errorf("hsm: decrypting with %s: %w", k.uri.Object, err)
	}
	return out, nil
}

// Observer is told of every private-key operation in the token: "sign" or "decrypt", how long it
// took (the wait for a free session included) and its error.
type Observer func(op string, d time.Duration, err error)

// SetObserver has f told of every private-key operation of every Key of k from now on.
func (k *KeyStore) SetObserver(f Observer) { k.observer.Store(&f) }

// Sessions are the pool's sessions taken by an operation now, and the pool's size
// (Config.Sessions).
func (k *KeyStore) Sessions() (inUse, size int) { return int(k.inUse.Load()), k.cfg.Sessions }

// observed runs op in the token with the deadline of Config.SignTimeout, counted in Sessions and
// told to the observer.
func (k *KeyStore) observed(op string, ctx context.Context, f func() error) error {
	start := time.Now()
	k.inUse.Add(1)
	err := runCtx(ctx, k.cfg.SignTimeout, f)
	k.inUse.Add(-1)
	if o := k.observer.Load(); o != nil {
		(*o)(op, time.Since(start), err)
	}
	return err
}

// signerIn returns the crypto11 signer of k in generation g, finding it there
// the first time.
func (k *Key) signerIn(g *generation) (crypto11.Signer, error) {
	if s, ok := g.signers.Load(k.ident); ok {
		return s.(crypto11.Signer), nil
	}
	ss, err := g.ctx.FindKeyPairs(k.id, k.label)
	if err != nil {
		return nil, err
	}
	switch len(ss) {
	case 0:
		return nil, fmt.Errorf("hsm: key %s: %w", k.uri, ErrKeyNotFound)
	case 1:
	default:
		return nil, fmt.Errorf("hsm: key %s matches %d key pairs", k.uri, len(ss))
	}
	pub, ok := ss[0].Public().(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(k.pub) {
		return nil, fmt.Errorf("hsm: key %s: the token now holds a different key under this id and label", k.uri)
	}
	actual, _ := g.signers.LoadOrStore(k.ident, ss[0])
	return actual.(crypto11.Signer), nil
}

func keyIdent(id, label []byte) string {
	return hex.EncodeToString(id) + "/" + hex.EncodeToString(label)
}

// keyTypeOf names the key type of a public key.
func keyTypeOf(pub crypto.PublicKey) (KeyType, error) {
	switch p := pub.(type) {
	case *ecdsa.PublicKey:
		switch p.Curve {
		case elliptic.P256():
			return ECDSAP256, nil
		case elliptic.P384():
			return ECDSAP384, nil
		}
		return "", fmt.Errorf("hsm: unsupported curve %s", p.Curve.Params().Name)
	case *rsa.PublicKey:
		switch p.N.BitLen() {
		case 2048:
			return RSA2048, nil
		case 3072:
			return RSA3072, nil
		case 4096:
			return RSA4096, nil
		}
		return "", fmt.Errorf("hsm: unsupported RSA size %d", p.N.BitLen())
	}
	return "", fmt.Errorf("hsm: unsupported public key type %T", pub)
}

// signOpts are options a health-check signature can use for the key type.
func signOpts(KeyType) crypto.SignerOpts { return crypto.SHA256 }

func (k *KeyStore) newKey(g *generation, s crypto11.Signer, id, label []byte, decryptOnly bool) (*Key, error) {
	kt, err := keyTypeOf(s.Public())
	if err != nil {
		return nil, err
	}
	key := &Key{
		ks: k, id: append([]byte(nil), id...), label: append([]byte(nil), label...), kt: kt, pub: s.Public(),
		ident: keyIdent(id, label), decryptOnly: decryptOnly,
		uri: URI{Token: g.info.Label, Serial: g.info.Serial, Object: string(label),
			ID: append([]byte(nil), id...), Type: "private"},
	}
	g.signers.LoadOrStore(key.ident, s)
	k.keysMu.Lock()
	defer k.keysMu.Unlock()
	for _, old := range k.keys {
		if old.ident == key.ident {
			return old, nil // one Key per object: the health check and reopen find it once
		}
	}
	k.keys = append(k.keys, key)
	return key, nil
}

// GenerateKey generates a key pair of type kt in the token, with CKA_LABEL label
// and CKA_ID id on both halves (a random 16-byte id if id is empty). The private
// half is CKA_TOKEN, CKA_PRIVATE, CKA_SENSITIVE, not CKA_EXTRACTABLE, and may only
// sign (not decrypt, unwrap or derive). GenerateKey refuses if any object on the token already has that id or label.
func (k *KeyStore) GenerateKey(ctx context.Context, kt KeyType, label string, id []byte) (*Key, error) {
	return k.GenerateKeyFor(ctx, kt, label, id, UsageSign)
}

// Usage says what a generated private key may do. There is no usage that both signs and
// decrypts: a key that decrypts chosen ciphertexts and also signs lets a padding oracle on the
// decryption forge its signatures (so the SCEP RA has one key of each kind, told apart by keyUsage, RFC 8894 §3.5.1).
type Usage int

// Usages of GenerateKeyFor.
const (
	UsageSign    Usage = iota // sign only: CKA_SIGN, not CKA_DECRYPT (CA keys, the SCEP RA's signing key)
	UsageDecrypt              // RSA only, decrypt only: CKA_DECRYPT, not CKA_SIGN (the SCEP RA's encryption key)
)

// GenerateKeyFor is GenerateKey with the usage of the private key.
func (k *KeyStore) GenerateKeyFor(ctx context.Context, kt KeyType, label string, id []byte, usage Usage) (*Key, error) {
	kt, err := ParseKeyType(string(kt))
	if err != nil {
		return nil, err
	}
	if label == "" {
		return nil, errors.New("hsm: GenerateKey: label is empty")
	}
	if len(id) == 0 {
		id = make([]byte, 16)
		if _, err := rand.Read(id); err != nil {
			return nil, err
		}
	}
	k.genMu.Lock()
	defer k.genMu.Unlock()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var key *Key
	err = k.do(ctx, func(g *generation) error {
		if err := k.refuseExisting(g, id, label); err != nil {
			return err
		}
		pub, priv, err := keyTemplates(kt, id, []byte(label), usage)
		if err != nil {
			return err
		}
		var s crypto11.Signer
		if bits := kt.rsaBits(); bits > 0 {
			s, err = g.ctx.GenerateRSAKeyPairWithAttributes(pub, priv, bits)
		} else {
			curve := elliptic.P256()
			if kt == ECDSAP384 {
				curve = elliptic.P384()
			}
			s, err = g.ctx.GenerateECDSAKeyPairWithAttributes(pub, priv, curve)
		}
		if err != nil {
			return err
		}
		key, err = k.newKey(g, s, id, []byte(label), usage == UsageDecrypt)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("hsm: generating %s key %q: %w", kt, label, err)
	}
	k.log.Info("hsm: key generated", "key", key.uri.String(), "type", string(kt))
	return key, nil
}

func keyTemplates(kt KeyType, id, label []byte, usage Usage) (pub, priv crypto11.AttributeSet, err error) {
	switch {
	case usage != UsageSign && usage != UsageDecrypt:
		return nil, nil, fmt.Errorf("hsm: unknown key usage %d", usage)
	case usage == UsageDecrypt && kt.rsaBits() == 0:
		return nil, nil, fmt.Errorf("hsm: a %s key cannot decrypt: use RSA", kt)
	}
	pub, err = crypto11.NewAttributeSetWithIDAndLabel(id, label)
	if err != nil {
		return nil, nil, err
	}
	priv = pub.Copy()
	set := func(a crypto11.AttributeSet, t crypto11.AttributeType, v any) {
		if err == nil {
			err = a.Set(t, v)
		}
	}
	set(pub, crypto11.CkaToken, true)
	set(pub, crypto11.CkaPrivate, false)
	set(pub, crypto11.CkaVerify, usage == UsageSign)
	set(priv, crypto11.CkaToken, true)
	set(priv, crypto11.CkaPrivate, true)
	set(priv, crypto11.CkaSign, usage == UsageSign)
	set(priv, crypto11.CkaSensitive, true)
	set(priv, crypto11.CkaExtractable, false)
	// Sign only or decrypt only, never both: SoftHSM would otherwise also allow decrypt and
	// unwrap (and derive for EC) with a CA key, and signing with a decryption key.
	set(pub, crypto11.CkaEncrypt, usage == UsageDecrypt)
	set(pub, crypto11.CkaWrap, false)
	set(priv, crypto11.CkaDecrypt, usage == UsageDecrypt)
	set(priv, crypto11.CkaUnwrap, false)
	set(priv, crypto11.CkaSignRecover, false)
	if kt.rsaBits() == 0 {
		set(priv, crypto11.CkaDerive, false)
	}
	return pub, priv, err
}

// refuseExisting fails if any object (of any class) on the token has the id or
// the label.
func (k *KeyStore) refuseExisting(g *generation, id []byte, label string) error {
	sh, err := k.rawSession(g)
	if err != nil {
		return err
	}
	defer k.raw.CloseSession(sh)
	n, err := k.countObjects(sh, []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_ID, id)})
	if err != nil {
		return err
	}
	if n > 0 {
		return fmt.Errorf("hsm: token %q already holds an object with id %x", g.info.Label, id)
	}
	if n, err = k.countObjects(sh, []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_LABEL, label)}); err != nil {
		return err
	}
	if n > 0 {
		return fmt.Errorf("hsm: token %q already holds an object labelled %q", g.info.Label, label)
	}
	return nil
}

func (k *KeyStore) findObjects(sh pkcs11.SessionHandle, tmpl []*pkcs11.Attribute) ([]pkcs11.ObjectHandle, error) {
	if err := k.raw.FindObjectsInit(sh, tmpl); err != nil {
		return nil, err
	}
	var all []pkcs11.ObjectHandle
	for {
		hs, _, err := k.raw.FindObjects(sh, 64)
		if err != nil {
			_ = k.raw.FindObjectsFinal(sh)
			return nil, err
		}
		if len(hs) == 0 {
			break
		}
		all = append(all, hs...)
	}
	return all, k.raw.FindObjectsFinal(sh)
}

func (k *KeyStore) countObjects(sh pkcs11.SessionHandle, tmpl []*pkcs11.Attribute) (int, error) {
	hs, err := k.findObjects(sh, tmpl)
	return len(hs), err
}

// checkURI checks that u can name a private key of this token.
func (k *KeyStore) checkURI(u URI) error {
	info := k.TokenInfo()
	switch {
	case u.Token != "" && u.Token != info.Label:
		return fmt.Errorf("hsm: URI names token %q, but the open token is %q: %w", u.Token, info.Label, ErrTokenNotFound)
	case u.Serial != "" && u.Serial != info.Serial:
		return fmt.Errorf("hsm: URI names token serial %q, but the open token has %q: %w", u.Serial, info.Serial, ErrTokenNotFound)
	case u.Type != "" && u.Type != "private":
		return fmt.Errorf("hsm: URI has type=%s; keys are found by their private half (type=private)", u.Type)
	case len(u.ID) == 0 && u.Object == "":
		return errors.New("hsm: URI names no key: give id= or object=")
	}
	return nil
}

func uriTemplate(u URI) (id, label []byte) {
	if len(u.ID) > 0 {
		id = u.ID
	}
	if u.Object != "" {
		label = []byte(u.Object)
	}
	return id, label
}

// FindKey finds a private key (with its public half, as crypto11 needs) by id
// and/or object label. More than one match is an error; none wraps ErrKeyNotFound.
func (k *KeyStore) FindKey(ctx context.Context, u URI) (*Key, error) {
	if err := k.checkURI(u); err != nil {
		return nil, err
	}
	id, label := uriTemplate(u)
	var key *Key
	err := k.do(ctx, func(g *generation) error {
		ss, err := g.ctx.FindKeyPairs(id, label)
		if err != nil {
			return err
		}
		switch len(ss) {
		case 0: // crypto11 also ignores private keys without CKA_ID
			return fmt.Errorf("hsm: no key pair matches %s: %w", u, ErrKeyNotFound)
		case 1:
		default:
			return fmt.Errorf("hsm: %d key pairs match %s; give both id and object", len(ss), u)
		}
		attrs, err := g.ctx.GetAttributes(ss[0], []crypto11.AttributeType{crypto11.CkaId, crypto11.CkaLabel, crypto11.CkaSign})
		if err != nil {
			return err
		}
		var realID, realLabel []byte
		decryptOnly := false
		if a := attrs[crypto11.CkaSign]; a != nil {
			decryptOnly = len(a.Value) > 0 && a.Value[0] == 0
		}
		if a := attrs[crypto11.CkaId]; a != nil {
			realID = a.Value
		}
		if a := attrs[crypto11.CkaLabel]; a != nil {
			realLabel = a.Value
		}
		key, err = k.newKey(g, ss[0], realID, realLabel, decryptOnly)
		return err
	})
	if err != nil {
		return nil, err
	}
	return key, nil
}

// KeyAttributes asks the token (C_GetAttributeValue on the private key object) for
// the attributes that say whether the key can leave it.
func (k *KeyStore) KeyAttributes(ctx context.Context, u URI) (KeyAttributes, error) {
	var ka KeyAttributes
	if err := k.checkURI(u); err != nil {
		return ka, err
	}
	id, label := uriTemplate(u)
	tmpl := []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_PRIVATE_KEY)}
	if id != nil {
		tmpl = append(tmpl, pkcs11.NewAttribute(pkcs11.CKA_ID, id))
	}
	if label != nil {
		tmpl = append(tmpl, pkcs11.NewAttribute(pkcs11.CKA_LABEL, label))
	}
	err := k.withRawSession(ctx, func(sh pkcs11.SessionHandle) error {
		hs, err := k.findObjects(sh, tmpl)
		if err != nil {
			return err
		}
		switch len(hs) {
		case 0:
			return fmt.Errorf("hsm: no private key matches %s: %w", u, ErrKeyNotFound)
		case 1:
		default:
			return fmt.Errorf("hsm: %d private keys match %s", len(hs), u)
		}
		attrs, err := k.raw.GetAttributeValue(sh, hs[0], []*pkcs11.Attribute{
			pkcs11.NewAttribute(pkcs11.CKA_SENSITIVE, nil),
			pkcs11.NewAttribute(pkcs11.CKA_EXTRACTABLE, nil),
			pkcs11.NewAttribute(pkcs11.CKA_ALWAYS_SENSITIVE, nil),
			pkcs11.NewAttribute(pkcs11.CKA_NEVER_EXTRACTABLE, nil),
			pkcs11.NewAttribute(pkcs11.CKA_PRIVATE, nil),
			pkcs11.NewAttribute(pkcs11.CKA_TOKEN, nil),
			pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, nil),
		})
		if err != nil {
			return err
		}
		for _, a := range attrs {
			b := len(a.Value) > 0 && a.Value[0] != 0
			switch a.Type {
			case pkcs11.CKA_SENSITIVE:
				ka.Sensitive = b
			case pkcs11.CKA_EXTRACTABLE:
				ka.Extractable = b
			case pkcs11.CKA_ALWAYS_SENSITIVE:
				ka.AlwaysSensitive = b
			case pkcs11.CKA_NEVER_EXTRACTABLE:
				ka.NeverExtractable = b
			case pkcs11.CKA_PRIVATE:
				ka.Private = b
			case pkcs11.CKA_TOKEN:
				ka.Token = b
			case pkcs11.CKA_KEY_TYPE:
				ka.KeyType = keyTypeName(a.Value)
			}
		}
		return nil
	})
	return ka, err
}

// DestroyKey destroys the key pair u names in the token (crypto11's Delete: C_DestroyObject on
// both halves). It is for retiring a key for good, such as one whose usage is no longer allowed;
// a Key found or generated for it stops working. None wraps ErrKeyNotFound.
func (k *KeyStore) DestroyKey(ctx context.Context, u URI) error {
	key, err := k.FindKey(ctx, u)
	if err != nil {
		return err
	}
	err = k.do(ctx, func(g *generation) error {
		s, err := key.signerIn(g)
		if err != nil {
			return err
		}
		if err := s.Delete(); err != nil {
			return err
		}
		g.signers.Delete(key.ident)
		return nil
	})
	if err != nil {
		return fmt.Errorf("hsm: destroying %s: %w", u, err)
	}
	k.keysMu.Lock()
	k.keys = slices.DeleteFunc(k.keys, func(c *Key) bool { return c == key })
	k.keysMu.Unlock()
	k.log.Info("hsm: key destroyed", "key", key.uri.String())
	return nil
}

// keyTypeName decodes a CK_KEY_TYPE (a native-endian CK_ULONG).
func keyTypeName(v []byte) string {
	var t uint64
	switch len(v) {
	case 8:
		t = binary.NativeEndian.Uint64(v)
	case 4:
		t = uint64(binary.NativeEndian.Uint32(v))
	default:
		return fmt.Sprintf("undecodable %x", v)
	}
	switch t {
	case pkcs11.CKK_RSA:
		return "RSA"
	case pkcs11.CKK_EC:
		return "EC"
	}
	return fmt.Sprintf("0x%x", t)
}
