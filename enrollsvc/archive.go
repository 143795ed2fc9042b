package enrollsvc

import (
	"context"
	"crypto"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/asn1"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/enrollment-appliance/aeappliance/apiclient"
	"github.com/enrollment-appliance/aeappliance/enrollsvc/events"
	"github.com/enrollment-appliance/aeappliance/enrollsvc/policy"
	"github.com/enrollment-appliance/aeappliance/enrollsvc/store"
	"github.com/enrollment-appliance/aeappliance/proto/certutil"
	"github.com/enrollment-appliance/aeappliance/proto/cmc"
	"github.com/enrollment-appliance/aeappliance/proto/cms"
)

// Key archival and recovery, as AD CS's key recovery agents (KRAs) do it: a key a template
// requires archived is encrypted to every registered agent's certificate and kept; an
// administrator recovers it as an envelope only an agent's private key (kept outside the
// appliance) opens.

// OIDKeyRecoveryAgent is the Key Recovery Agent extended key usage (szOID_KP_KEY_RECOVERY_AGENT)
// an agent's certificate must carry.
var OIDKeyRecoveryAgent = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 311, 21, 6}

// settingKRAs is the setting holding the agents' certificates: {"kras": [kra...]}.
const settingKRAs = "kras"

// KRA is a registered key recovery agent (the API's type: what the setting keeps is what the
// API shows).
type KRA = apiclient.KRA

type kraSetting struct {
	KRAs []KRA `json:"kras"`
}

func (s *Service) settings(op string) (store.SettingsStore, error) {
	ss, ok := s.store.(store.SettingsStore)
	if !ok {
		return nil, &Error{Kind: KindInternal, Op: op, Err: errors.New("the store keeps no settings")}
	}
	return ss, nil
}

// KRAs lists the registered key recovery agents.
func (s *Service) KRAs(ctx context.Context) ([]KRA, error) {
	var ks kraSetting
	found, err := s.readSetting(ctx, "listing the key recovery agents", settingKRAs, &ks)
	if err != nil {
		return nil, err
	}
	if !found {
		return []KRA{}, nil
	}
	return ks.KRAs, nil
}

func (s *Service) putKRAs(ctx context.Context, ks []KRA, ev store.Event, by string) error {
	return s.writeSetting(ctx, "changing the key recovery agents", settingKRAs, kraSetting{KRAs: ks}, ev, by)
}

// readSetting decodes the shared JSON setting name into v; found is false when it was never set.
func (s *Service) readSetting(ctx context.Context, op, name string, v any) (found bool, err error) {
	ss, err := s.settings(op)
	if err != nil {
		return false, err
	}
	st, err := ss.GetSetting(ctx, name)
	if errors.Is(err, store.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if err := json.Unmarshal(st.Value, v); err != nil {
		return false, fmt.Errorf("setting %q: %w", name, err)
	}
	return true, nil
}

// writeSetting stores v as the JSON setting name together with its audit event ev, and logs ev.
func (s *Service) writeSetting(ctx context.Context, op, name string, v any, ev store.Event, by string) error {
	ss, err := s.settings(op)
	if err != nil {
		return err
	}
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	if err := ss.PutSetting(ctx, store.Setting{Name: name, Value: b, Updated: ev.Time, By: by}, ev); err != nil {
		return &Error{Kind: KindOf(err), Op: op, Err: err}
	}
	s.rec.Log(ctx, ev)
	return nil
}

// AddKRA registers a key recovery agent's certificate (PEM): RSA of 2048 bits or more (keys are
// encrypted to it with RSAES-OAEP), valid now, with the Key Recovery Agent extended key usage.
// Its private key stays with the agent, outside the appliance.
func (s *Service) AddKRA(ctx context.Context, certPEM, by string) (KRA, error) {
	op := "adding a key recovery agent"
	bad := func(format string, a ...any) (KRA, error) {
		return KRA{}, &Error{Kind: KindBadRequest, Op: op, Err: fmt.Errorf(format, a...)}
	}
	blk, rest := pem.Decode([]byte(certPEM))
	if blk == nil || blk.Type != "CERTIFICATE" || strings.TrimSpace(string(rest)) != "" {
		return bad("want exactly one PEM CERTIFICATE")
	}
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		return bad("%v", err)
	}
	now := s.rec.Now()
	rk, ok := c.PublicKey.(*rsa.PublicKey)
	switch {
	case !ok || rk.N.BitLen() < 2048:
		return bad("an agent's key is RSA of 2048 bits or more")
	case now.Before(c.NotBefore) || now.After(c.NotAfter):
		return bad("the certificate is not valid now (%s to %s)", c.NotBefore.Format("2006-01-02"), c.NotAfter.Format("2006-01-02"))
	case !slices.ContainsFunc(c.UnknownExtKeyUsage, func(o asn1.ObjectIdentifier) bool { return o.Equal(OIDKeyRecoveryAgent) }):
		return bad("the certificate lacks the Key Recovery Agent extended key usage (%s)", OIDKeyRecoveryAgent)
	}
	ks, err := s.KRAs(ctx)
	if err != nil {
		return KRA{}, err
	}
	sum := sha256.Sum256(c.Raw)
	k := KRA{Thumbprint: hex.EncodeToString(sum[:]), Subject: c.Subject.String(), PEM: string(pem.EncodeToMemory(blk)),
		NotAfter: c.NotAfter.UTC().Format("2006-01-02T15:04:05Z"), Added: now.UTC().Format("2006-01-02T15:04:05Z"), By: by}
	if slices.ContainsFunc(ks, func(o KRA) bool { return o.Thumbprint == k.Thumbprint }) {
		return KRA{}, &Error{Kind: KindConflict, Op: op, Err: errors.New("that agent is registered already")}
	}
	ev := events.New(now, events.KRAAdded, "", "kra", k.Thumbprint, "subject", k.Subject, "by", by)
	return k, s.putKRAs(ctx, append(ks, k), ev, by)
}

// RemoveKRA withdraws an agent: keys archived from now on are not encrypted to it (those
// archived before still are).
func (s *Service) RemoveKRA(ctx context.Context, thumbprint, by string) error {
	ks, err := s.KRAs(ctx)
	if err != nil {
		return err
	}
	i := slices.IndexFunc(ks, func(k KRA) bool { return strings.EqualFold(k.Thumbprint, thumbprint) })
	if i < 0 {
		return &Error{Kind: KindNotFound, Op: "removing a key recovery agent", Err: errors.New("no agent has that thumbprint")}
	}
	ev := events.New(s.rec.Now(), events.KRARemoved, "", "kra", ks[i].Thumbprint, "subject", ks[i].Subject, "by", by)
	return s.putKRAs(ctx, slices.Delete(ks, i, i+1), ev, by)
}

// spkiHash is the hex SHA-256 of a public key's SubjectPublicKeyInfo: what an archived key is
// found by.
func spkiHash(pub crypto.PublicKey) (string, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(der)
	return hex.EncodeToString(sum[:]), nil
}

// archiveKey encrypts key (PKCS#8) to every registered agent that is valid now and keeps it for
// recovery; it returns the archive's hash key, or the reasons it could not be done.
func (s *Service) archiveKey(ctx context.Context, key crypto.Signer, t *policy.Template, meta Meta) (string, []string, error) {
	as, ok := s.store.(store.ArchiveStore)
	if !ok {
		return "", []string{"the template requires key archival, and this store keeps no archived keys"}, nil
	}
	ks, err := s.KRAs(ctx)
	if err != nil {
		return "", nil, err
	}
	now := s.rec.Now()
	var certs []*x509.Certificate
	var thumbs []string
	for _, k := range ks {
		blk, _ := pem.Decode([]byte(k.PEM))
		if blk == nil {
			continue
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil || now.After(c.NotAfter) || now.Before(c.NotBefore) {
			continue
		}
		certs, thumbs = append(certs, c), append(thumbs, k.Thumbprint)
	}
	if len(certs) == 0 {
		return "", []string{"the template requires key archival, and no key recovery agent is registered and valid (aectl kra add)"}, nil
	}
	p8, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return "", nil, err
	}
	env, err := cms.EncryptOAEPTo(p8, certs, cms.AES256CBC)
	clear(p8)
	if err != nil {
		return "", nil, &Error{Kind: KindInternal, Op: "archiving a key", Err: err}
	}
	h, err := spkiHash(key.Public())
	if err != nil {
		return "", nil, err
	}
	ev := events.New(now, events.KeyArchived, "", "spki_sha256", h, "account", meta.Account, "template", t.Name,
		"requester", meta.Requester, "kras", thumbs)
	if err := as.AddArchivedKey(ctx, store.ArchivedKey{SPKISHA256: h, Account: meta.Account, Template: t.Name, Envelope: env,
		KRAs: strings.Join(thumbs, ","), Created: now}, ev); err != nil {
		return "", nil, &Error{Kind: KindOf(err), Op: "archiving a key", Err: err}
	}
	s.rec.Log(ctx, ev)
	return h, nil, nil
}

// ExchangeKey opens what a client encrypted to the CA exchange certificate (MS-WCCE 3.1.1.4.3.6):
// the CA exchange key, in the HSM.
type ExchangeKey interface {
	// OpenArchivedKey decrypts envelope (a DER ContentInfo EnvelopedData addressed to one of the
	// CA exchange certificates) and returns its content; an error says it does not open.
	OpenArchivedKey(ctx context.Context, envelope []byte) ([]byte, error)
}

// WithExchange lets clients archive their keys: x opens what they encrypt to the CA exchange
// certificate.
func (s *Service) WithExchange(x ExchangeKey) { s.exchange = x }

// openArchivedKey opens the private key a client sent for archival and checks that it is the key
// of the request (pub): MS-WCCE 3.2.2.6.2.1.2.2 has the CA refuse any other. A key that does not
// open, is not an RSA private key BLOB, or is not the request's is a refusal (its reason); an
// error means the exchange key could not be used at all.
func (s *Service) openArchivedKey(ctx context.Context, envelope []byte, pub crypto.PublicKey) (crypto.Signer, string, error) {
	if s.exchange == nil {
		return nil, "this CA takes no archived keys: it has no CA exchange key", nil
	}
	blob, err := s.exchange.OpenArchivedKey(ctx, envelope)
	if err != nil {
		return nil, "the archived key does not open with the CA exchange key: " + err.Error(), nil
	}
	defer clear(blob)
	key, err := cmc.ParseKeyBlob(blob)
	if err != nil {
		return nil, err.Error(), nil
	}
	if !certutil.PublicKeysEqual(key.Public(), pub) {
		return nil, "the archived private key is not the key of the request", nil
	}
	return key, "", nil
}

// isArchived reports whether the key whose public half is pub is archived.
func (s *Service) isArchived(ctx context.Context, pub crypto.PublicKey) bool {
	as, ok := s.store.(store.ArchiveStore)
	if !ok {
		return false
	}
	h, err := spkiHash(pub)
	if err != nil {
		return false
	}
	_, err = as.GetArchivedKey(ctx, h)
	return err == nil
}

// dropArchive removes the archive of a key that was not certified after all.
func (s *Service) dropArchive(ctx context.Context, h, why string) {
	as, ok := s.store.(store.ArchiveStore)
	if !ok || h == "" {
		return
	}
	ev := events.New(s.rec.Now(), events.KeyArchiveDropped, "", "spki_sha256", h, "why", why)
	if err := as.DeleteArchivedKey(ctx, h, ev); err != nil {
		s.log.ErrorContext(ctx, "removing the archive of a key that was not certified", "spki_sha256", h, "error", err)
		return
	}
	s.rec.Log(ctx, ev)
}

// RecoverKey returns the archived key of certificate serial: a DER CMS EnvelopedData to the
// key recovery agents' certificates holding the PKCS#8 private key, which only an agent's key
// opens. The recovery is recorded.
func (s *Service) RecoverKey(ctx context.Context, serial, by string) ([]byte, error) {
	op := "recovering the key of " + serial
	as, ok := s.store.(store.ArchiveStore)
	if !ok {
		return nil, &Error{Kind: KindInternal, Op: op, Err: errors.New("the store keeps no archived keys")}
	}
	n, err := certutil.ParseSerial(serial)
	if err != nil {
		return nil, &Error{Kind: KindBadRequest, Op: op, Err: err}
	}
	sc, err := s.store.GetCertificate(ctx, certutil.SerialString(n))
	if err != nil {
		return nil, &Error{Kind: KindOf(err), Op: op, Err: err}
	}
	cert, err := x509.ParseCertificate(sc.DER)
	if err != nil {
		return nil, &Error{Kind: KindInternal, Op: op, Err: err}
	}
	h, err := spkiHash(cert.PublicKey)
	if err != nil {
		return nil, &Error{Kind: KindInternal, Op: op, Err: err}
	}
	k, err := as.GetArchivedKey(ctx, h)
	if errors.Is(err, store.ErrNotFound) {
		return nil, &Error{Kind: KindNotFound, Op: op, Err: errors.New("no key is archived for this certificate")}
	}
	if err != nil {
		return nil, &Error{Kind: KindInternal, Op: op, Err: err}
	}
	if err := s.rec.Record(ctx, events.KeyRecovered, "", "serial", sc.Serial, "account", sc.Account, "template", sc.Template,
		"kras", k.KRAs, "by", by); err != nil {
		return nil, &Error{Kind: KindInternal, Op: op, Err: err}
	}
	return k.Envelope, nil
}
