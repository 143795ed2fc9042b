package daemon

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/enrollment-appliance/aeappliance/apiclient"
	"github.com/enrollment-appliance/aeappliance/config"
	"github.com/enrollment-appliance/aeappliance/enrollsvc"
	"github.com/enrollment-appliance/aeappliance/enrollsvc/events"
	"github.com/enrollment-appliance/aeappliance/enrollsvc/revoke"
	"github.com/enrollment-appliance/aeappliance/enrollsvc/scep"
	"github.com/enrollment-appliance/aeappliance/enrollsvc/store"
	"github.com/enrollment-appliance/aeappliance/hsm"
	"github.com/enrollment-appliance/aeappliance/proto/certutil"
	"github.com/enrollment-appliance/aeappliance/proto/cms"
)

// Files and keys of SCEP in the data directory and the token.
const (
	raValidity   = 2 * 365 * 24 * time.Hour
	raRenewAhead = 60 * 24 * time.Hour
	// combinedRAKeyLabel and combinedRACertFile are the single RA key that both signed and
	// decrypted, and its certificate, of appliances set up before the RA's keys were split:
	// retireCombinedRA takes them away.
	combinedRAKeyLabel = "scep-ra"
	combinedRACertFile = "scep/ra.pem"
)

// raKey is a service key in the token that the CA certifies for the service's own use: the SCEP
// RA's two keys (RFC 8894 section 3.5.1), the MDM connector's import key and the CA exchange key.
// It has a token label, a certificate file, an issuance profile, what the token lets it do, the
// name messages give it and its certificate's subject (under the CA's name).
type raKey struct {
	label, certFile, profile string
	usage                    hsm.Usage
	title                    string
	subject                  func(caName string) pkix.Name
	// validity and renewAhead of its certificate (0: raValidity and raRenewAhead).
	validity, renewAhead time.Duration
}

// scepRASubject is the subject of the SCEP RA's certificate for role ("signing", "encryption").
func scepRASubject(role string) func(string) pkix.Name {
	return func(caName string) pkix.Name {
		return pkix.Name{CommonName: caName + " SCEP RA (" + role + ")", OrganizationalUnit: []string{"SCEP"}}
	}
}

var (
	raSigning = raKey{label: "scep-ra-sign", certFile: "scep/ra-sign.pem", profile: enrollsvc.ProfileSCEPRASign,
		usage: hsm.UsageSign, title: "SCEP RA signing", subject: scepRASubject("signing")}
	raEncryption = raKey{label: "scep-ra-encrypt", certFile: "scep/ra-encrypt.pem", profile: enrollsvc.ProfileSCEPRAEncrypt,
		usage: hsm.UsageDecrypt, title: "SCEP RA encryption", subject: scepRASubject("encryption")}
	// mdmImport is the MDM connector's import key, which uploaded keys are encrypted to.
	mdmImport = raKey{label: "mdm-import", certFile: "mdm/import.pem", profile: enrollsvc.ProfileMDMImport,
		usage: hsm.UsageDecrypt, title: "MDM import", subject: func(caName string) pkix.Name {
			return pkix.Name{CommonName: caName + " MDM import", OrganizationalUnit: []string{"MDM connector"}}
		}}
	// caExchange is the CA exchange key, which clients encrypt the keys they archive to (MS-WCCE
	// 3.1.1.4.3.6); its certificate lives a week, as AD CS's does, and is renewed two days ahead.
	caExchange = raKey{label: "ca-exchange", certFile: "ca-exchange.pem", profile: enrollsvc.ProfileCAExchange,
		usage: hsm.UsageDecrypt, title: "CA exchange", subject: func(caName string) pkix.Name {
			return pkix.Name{CommonName: caName + "-Xchg"} // MS-WCCE 3.2.1.4.3.2.15.1
		}, validity: 7 * 24 * time.Hour, renewAhead: 2 * 24 * time.Hour}
)

// revocationSource is the store seen by the CRL publisher and the OCSP responder.
type revocationSource struct{ st store.Store }

func (s revocationSource) EachRevoked(ctx context.Context, since time.Time, fn func(revoke.Entry) error) error {
	return s.st.EachRevoked(ctx, since, func(e store.RevokedEntry) error {
		n, err := certutil.ParseSerial(e.Serial)
		if err != nil {
			return fmt.Errorf("stored serial: %w", err)
		}
		return fn(revoke.Entry{Serial: n, RevokedAt: e.RevokedAt, Reason: e.Reason})
	})
}

func (s revocationSource) CertStatus(ctx context.Context, serial *big.Int) (revoke.Status, revoke.Entry, error) {
	e := revoke.Entry{Serial: serial}
	if serial.Sign() <= 0 {
		return revoke.Unknown, e, nil
	}
	c, err := s.st.GetCertificate(ctx, certutil.SerialString(serial))
	switch {
	case errors.Is(err, store.ErrNotFound):
		return revoke.Unknown, e, nil
	case err != nil:
		return revoke.Unknown, e, err
	case c.Status == store.CertRevoked:
		e.RevokedAt, e.Reason = c.RevokedAt, c.RevocationReason
		return revoke.Revoked, e, nil
	}
	return revoke.Good, e, nil
}

func (s revocationSource) NextCRLNumber(ctx context.Context) (*big.Int, error) {
	n, err := s.st.NextCRLNumber(ctx)
	if err != nil {
		return nil, err
	}
	return big.NewInt(n), nil
}

// sharedCRLs is the shared store as the CRL publishers of several instances use it: the one
// holding the store's CRL lock publishes, the others serve what it saved.
type sharedCRLs struct{ st store.CRLStore }

func (s sharedCRLs) Lead(ctx context.Context) (bool, error) { return s.st.LeadCRLs(ctx) }

func (s sharedCRLs) Save(ctx context.Context, c *revoke.CRL) error {
	if !c.Number.IsInt64() {
		return fmt.Errorf("CRL number %v is too large to keep", c.Number)
	}
	return s.st.SaveCRL(ctx, store.StoredCRL{Delta: c.IsDelta(), Number: c.Number.Int64(), ThisUpdate: c.ThisUpdate,
		NextUpdate: c.NextUpdate, DER: c.DER})
}

func (s sharedCRLs) Latest(ctx context.Context, afterFull, afterDelta *big.Int) (full, delta []byte, err error) {
	n := func(b *big.Int) int64 {
		if b == nil || !b.IsInt64() {
			return 0
		}
		return b.Int64()
	}
	f, d, err := s.st.LatestCRLs(ctx, n(afterFull), n(afterDelta))
	if err != nil {
		return nil, nil, err
	}
	if f != nil {
		full = f.DER
	}
	if d != nil {
		delta = d.DER
	}
	return full, delta, nil
}

// revocation is the CRL publisher, the OCSP responder and the SCEP handler of a running service.
type revocation struct {
	publisher *revoke.Publisher
	responder *revoke.Responder
	scep      http.Handler // nil without a directory
	republish chan struct{}
}

// startRevocation builds the CRL publisher and OCSP responder (with an http section in the
// configuration) and the SCEP handler (with a directory), and publishes the first CRLs.
func (rt *Runtime) startRevocation(ctx context.Context) error {
	if rt.Config.HTTP == nil && rt.directory == nil {
		return nil
	}
	rv := &revocation{republish: make(chan struct{}, 1)}
	if h := rt.Config.HTTP; h != nil {
		src := revocationSource{rt.Store}
		name := revoke.FileName(rt.Config.CAName)
		var err error
		var shared revoke.SharedCRLs
		if cs, ok := rt.Store.(store.CRLStore); ok && rt.Config.Postgres != nil {
			shared = sharedCRLs{cs}
		}
		rv.publisher, err = revoke.NewPublisher(src, src, revoke.PublisherOptions{CA: rt.CACert, Signer: rt.Key,
			DeltaURLs: []string{h.BaseURL + "/crl/" + name + "+.crl"}, Shared: shared,
			Notify: func(ctx context.Context, delta bool, c *revoke.CRL, err error) {
				if err != nil {
					rt.Log.Error("publishing a CRL failed", "delta", delta, "error", err)
					return
				}
				_ = rt.Recorder.Record(ctx, events.CRLPublished, "", "number", c.Number.String(), "delta", delta,
					"entries", c.Entries, "next_update", c.NextUpdate.Format(time.RFC3339))
			}}, rt.Log)
		if err != nil {
			return fmt.Errorf("CRL publisher: %w", err)
		}
		if _, _, err := rv.publisher.Publish(ctx); err != nil {
			return fmt.Errorf("publishing the first CRLs: %w", err)
		}
		if rv.responder, err = revoke.NewResponder(revoke.ResponderOptions{CA: rt.CACert, Signer: rt.Key, Source: src, Log: rt.Log}); err != nil {
			return fmt.Errorf("OCSP responder: %w", err)
		}
		rt.Service.OnRevoke(func(serial string) {
			rv.responder.Revoked(serial) // before the revocation returns: no kept "good" is served after it
			select {
			case rv.republish <- struct{}{}:
			default:
			}
		})
	}
	if rt.directory != nil {
		signer, decrypter, err := rt.ensureRA(ctx)
		if err != nil {
			return err
		}
		rejection, err := rt.secret(scepRejectionKeyFile)
		if err != nil {
			return fmt.Errorf("SCEP: %w", err)
		}
		rv.scep, err = scep.NewHandler(scep.Config{CACert: rt.CACert, Signer: signer, Decrypter: decrypter,
			Backend: scepBackend{rt.Service}, Logger: rt.Log, RejectionKey: rejection})
		if err != nil {
			return fmt.Errorf("SCEP: %w", err)
		}
	}
	rt.revocation = rv
	return nil
}

// runRevocation republishes CRLs on schedule and after revocations until ctx ends.
func (rt *Runtime) runRevocation(ctx context.Context, wg *sync.WaitGroup) {
	rv := rt.revocation
	if rv == nil || rv.publisher == nil {
		return
	}
	wg.Add(2)
	go func() { defer wg.Done(); rv.publisher.Run(ctx) }()
	go func() {
		defer wg.Done()
		for {
			select {
			case <-ctx.Done():
				return
			case <-rv.republish:
				if _, _, err := rv.publisher.Publish(ctx); err != nil && ctx.Err() == nil {
					rt.Log.Error("publishing CRLs after a revocation", "error", err)
				}
			}
		}
	}()
}

// PublishCRL publishes a new full and delta CRL now (aectl crl publish).
func (rt *Runtime) PublishCRL(ctx context.Context) (apiclient.CRLInfo, error) {
	if rt.revocation == nil || rt.revocation.publisher == nil {
		return apiclient.CRLInfo{}, &enrollsvc.Error{Kind: enrollsvc.KindUnavailable, Op: "publishing CRLs",
			Err: errors.New("no CRL distribution is configured (enrollsvc init --http-url ...)")}
	}
	start := time.Now()
	full, delta, err := rt.revocation.publisher.Publish(ctx)
	if err != nil {
		return apiclient.CRLInfo{}, err
	}
	if full == nil || delta == nil { // another instance publishes, and has not yet
		return apiclient.CRLInfo{}, &enrollsvc.Error{Kind: enrollsvc.KindUnavailable, Op: "publishing CRLs",
			Err: errors.New("another instance of this CA publishes the CRLs and none is published yet")}
	}
	return apiclient.CRLInfo{Number: full.Number.Int64(), ThisUpdate: full.ThisUpdate, NextUpdate: full.NextUpdate,
		Entries: full.Entries, Bytes: len(full.DER), DeltaNumber: delta.Number.Int64(), DeltaEntries: delta.Entries,
		URL:  rt.Config.HTTP.BaseURL + "/crl/" + revoke.FileName(rt.Config.CAName) + ".crl",
		Took: time.Since(start).Round(time.Millisecond).String()}, nil
}

// httpHandler serves CRLs, OCSP and AIA (with an http section) and SCEP (with a directory).
// No http.ServeMux in front of the OCSP handler: a GET request's base64 may hold "//", which a
// ServeMux would redirect to a cleaned path.
// Requests pass the limits (limitedHTTP) first.
func (rt *Runtime) httpHandler(l *limits) http.Handler {
	rv := rt.revocation
	var rev, sc http.Handler = http.NotFoundHandler(), http.NotFoundHandler()
	if rv != nil && rv.publisher != nil {
		rev = revoke.Handler(rv.publisher, rv.responder, rt.Config.CAName)
	}
	if rv != nil && rv.scep != nil {
		sc = rv.scep
	}
	return rt.limitedHTTP(l, sc, rev)
}

// startHTTP serves httpHandler over plain HTTP on bound, when the caller bound it, or else on the
// configured (or override) address.
func (rt *Runtime) startHTTP(ctx context.Context, override string, bound net.Listener) (string, <-chan error, error) {
	if rt.Config.HTTP == nil {
		return "", nil, nil
	}
	listen := rt.Config.HTTP.Listen
	if override != "" {
		listen = override
	}
	l, err := rt.limitsOf()
	if err != nil {
		return "", nil, err
	}
	ln := bound
	if ln == nil {
		if ln, err = net.Listen("tcp", listen); err != nil {
			return "", nil, fmt.Errorf("listening for CRLs, OCSP and SCEP: %w", err)
		}
	}
	srv := &http.Server{Handler: http.MaxBytesHandler(rt.httpHandler(l), 1<<20), ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout: time.Minute, WriteTimeout: 5 * time.Minute, IdleTimeout: 2 * time.Minute}
	done := make(chan error, 1)
	go func() {
		go func() {
			<-ctx.Done()
			sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			defer cancel()
			_ = srv.Shutdown(sctx)
		}()
		err := srv.Serve(ln)
		if errors.Is(err, http.ErrServerClosed) {
			err = nil
		}
		done <- err
	}()
	return ln.Addr().String(), done, nil
}

// scepRejectionKeyFile holds the secret of the SCEP decryption's implicit rejection
// (scep.Config.RejectionKey), made on first use.
const scepRejectionKeyFile = "scep/rejection.key"

// secret reads the 32-byte secret in the data directory's file name, making it on first use
// (mode 0600).
func (rt *Runtime) secret(name string) ([]byte, error) {
	path := config.Path(rt.Dir, name)
	b, err := os.ReadFile(path)
	if err == nil && len(b) == 32 {
		return b, nil
	}
	if err == nil || !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%s: unreadable or not 32 bytes (%v)", path, err)
	}
	b = make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, err
	}
	if err := config.WriteFileAtomic(path, b, 0o600); err != nil {
		return nil, err
	}
	return b, nil
}

// ensureRA returns the SCEP RA's signing and decryption keys with their certificates (RFC 8894
// §2.1): two RSA keys in the token, one that may only sign and one that may only decrypt, so that
// what decrypts the envelopes anyone sends can never sign a CertRep; then it retires the single
// combined key of older appliances.
func (rt *Runtime) ensureRA(ctx context.Context) (scep.RASigner, scep.RADecrypter, error) {
	signCert, signKey, err := rt.ensureRAKey(ctx, raSigning)
	if err != nil {
		return scep.RASigner{}, scep.RADecrypter{}, err
	}
	encCert, encKey, err := rt.ensureRAKey(ctx, raEncryption)
	if err != nil {
		return scep.RASigner{}, scep.RADecrypter{}, err
	}
	if err := rt.retireCombinedRA(ctx); err != nil {
		return scep.RASigner{}, scep.RADecrypter{}, err
	}
	return scep.RASigner{Cert: signCert, Key: signKey}, scep.RADecrypter{Cert: encCert, Key: encKey}, nil
}

// ensureRAKey finds or generates one RA key and returns it with its certificate, which the CA
// issues (again) through the issuance gate when it is missing, not the key's, not issued by the
// CA, without the profile's key usage, or near its end.
func (rt *Runtime) ensureRAKey(ctx context.Context, k raKey) (*x509.Certificate, *hsm.Key, error) {
	u := rt.Key.URI()
	u.Object, u.ID, u.Type = k.label, nil, "private"
	key, err := rt.KeyStore.FindKey(ctx, u)
	if errors.Is(err, hsm.ErrKeyNotFound) {
		key, err = rt.KeyStore.GenerateKeyFor(ctx, hsm.RSA2048, k.label, nil, k.usage)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("the %s key: %w", k.title, err)
	}
	want := x509.KeyUsageDigitalSignature
	if k.usage == hsm.UsageDecrypt {
		want = x509.KeyUsageKeyEncipherment
	}
	path := config.Path(rt.Dir, k.certFile)
	validity, ahead := raValidity, raRenewAhead
	if k.validity > 0 {
		validity, ahead = k.validity, k.renewAhead
	}
	if c, err := readCert(path); err == nil && c.CheckSignatureFrom(rt.CACert) == nil &&
		certutil.PublicKeysEqual(c.PublicKey, key.Public()) && c.KeyUsage == want && time.Until(c.NotAfter) > ahead {
		return c, key, nil
	}
	res, err := rt.Service.IssueProfile(ctx, enrollsvc.ProfileRequest{Profile: k.profile,
		Subject:   k.subject(rt.Config.CAName),
		PublicKey: key.Public(), Validity: validity,
		Meta: enrollsvc.Meta{Requester: "enrollsvc", Account: "enrollsvc-" + k.label}})
	if err != nil {
		return nil, nil, fmt.Errorf("issuing the %s certificate: %w", k.title, err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, nil, err
	}
	out := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: res.Certificate.Raw})
	if err := config.WriteFileAtomic(path, out, 0o644); err != nil {
		return nil, nil, err
	}
	return res.Certificate, key, nil
}

// readCert reads a PEM certificate file.
func readCert(path string) (*x509.Certificate, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "CERTIFICATE" {
		return nil, fmt.Errorf("%s holds no PEM certificate", path)
	}
	return x509.ParseCertificate(blk.Bytes)
}

// retireCombinedRA takes away the single RA key of an appliance set up before the keys were
// split: its certificate is revoked (superseded, so that a CertRep signed with it fails a client
// that checks revocation), the key pair is destroyed in the token (no key that signs and decrypts
// remains) and the certificate file is removed. Each step is skipped when already done, so an
// interrupted start finishes it the next time.
func (rt *Runtime) retireCombinedRA(ctx context.Context) error {
	path := config.Path(rt.Dir, combinedRACertFile)
	if c, err := readCert(path); err == nil && c.CheckSignatureFrom(rt.CACert) == nil {
		serial := certutil.SerialString(c.SerialNumber)
		stored, err := rt.Store.GetCertificate(ctx, serial)
		switch {
		case errors.Is(err, store.ErrNotFound):
			rt.Log.Warn("SCEP: the combined RA certificate is not in the store; not revoked", "serial", serial)
		case err != nil:
			return fmt.Errorf("SCEP: the combined RA certificate: %w", err)
		case stored.Status != store.CertRevoked:
			if _, err := rt.Service.Revoke(ctx, serial, revokeSuperseded, "enrollsvc"); err != nil {
				return fmt.Errorf("SCEP: revoking the combined RA certificate: %w", err)
			}
		}
	}
	u := rt.Key.URI()
	u.Object, u.ID, u.Type = combinedRAKeyLabel, nil, "private"
	switch err := rt.KeyStore.DestroyKey(ctx, u); {
	case err == nil:
		if err := rt.Recorder.Record(ctx, events.HSMKeyDestroyed, "", "key", u.String(),
			"why", "the SCEP RA key that both signed and decrypted is retired; the RA now has separate keys",
			"signing", raSigning.label, "encryption", raEncryption.label); err != nil {
			return fmt.Errorf("SCEP: recording the destruction of the combined RA key: %w", err)
		}
	case !errors.Is(err, hsm.ErrKeyNotFound):
		return fmt.Errorf("SCEP: destroying the combined RA key: %w", err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("SCEP: %w", err)
	}
	return nil
}

// revokeSuperseded is the CRL reason superseded (RFC 5280 §5.3.1).
const revokeSuperseded = 4

// scepBackend answers the SCEP edge with the core.
type scepBackend struct{ s *enrollsvc.Service }

func (b scepBackend) Profile(ctx context.Context, name string) (scep.Profile, bool, error) {
	p, ok, err := b.s.LookupSCEPProfile(ctx, name)
	return scep.Profile{AllowDES: p.AllowDES}, ok, err
}

func (b scepBackend) Enroll(ctx context.Context, r scep.Request) (scep.Result, error) {
	req := enrollsvc.SCEPRequest{Profile: r.Profile, TransactionID: r.TransactionID, CSR: r.CSRDER, Challenge: r.Challenge}
	// A RenewalReq is signed with the certificate being renewed; so is certmonger's PKCSReq when
	// it renews.
	if r.MessageType == scep.RenewalReq || !selfSigned(r.Signer) {
		req.Renewing = r.Signer
	}
	res, err := b.s.SCEPEnroll(ctx, req)
	return b.result(res, err)
}

func (b scepBackend) Poll(ctx context.Context, r scep.PollRequest) (scep.Result, error) {
	var renewing *x509.Certificate
	if !selfSigned(r.Signer) {
		renewing = r.Signer
	}
	res, err := b.s.SCEPPoll(ctx, r.Profile, r.TransactionID, renewing)
	return b.result(res, err)
}

// selfSigned reports whether a message's signer is just the requester's throw-away
// certificate (or missing).
func selfSigned(c *x509.Certificate) bool {
	return c == nil || bytes.Equal(c.RawIssuer, c.RawSubject)
}

func (b scepBackend) result(res *enrollsvc.EnrollResult, err error) (scep.Result, error) {
	switch {
	case enrollsvc.KindOf(err) == enrollsvc.KindNotFound:
		return scep.Result{Status: scep.Failure, FailInfo: scep.BadCertID}, nil
	case enrollsvc.KindOf(err) == enrollsvc.KindBadRequest || enrollsvc.KindOf(err) == enrollsvc.KindRefused:
		return scep.Result{Status: scep.Failure, FailInfo: scep.BadRequest}, nil
	case err != nil:
		return scep.Result{}, err
	}
	switch res.Status {
	case enrollsvc.StatusIssued:
		return scep.Result{Status: scep.Success, Cert: res.Certificate, Chain: []*x509.Certificate{b.s.CACert()}}, nil
	case enrollsvc.StatusPending:
		return scep.Result{Status: scep.Pending}, nil
	}
	return scep.Result{Status: scep.Failure, FailInfo: scep.BadRequest}, nil
}

// exchangeCert is the CA exchange certificate of a running service, renewed when it nears its end,
// and its key in the HSM.
type exchangeCert struct {
	mu   sync.Mutex
	cert *x509.Certificate
	key  *hsm.Key
}

// exchange returns the CA exchange certificate, issuing a new one (for the same key in the HSM)
// two days before the current one ends.
func (rt *Runtime) exchange(ctx context.Context) (*x509.Certificate, error) {
	c, _, err := rt.exchangeKey(ctx)
	return c, err
}

func (rt *Runtime) exchangeKey(ctx context.Context) (*x509.Certificate, *hsm.Key, error) {
	rt.xchg.mu.Lock()
	defer rt.xchg.mu.Unlock()
	if c := rt.xchg.cert; c != nil && time.Until(c.NotAfter) > caExchange.renewAhead {
		return c, rt.xchg.key, nil
	}
	c, k, err := rt.ensureRAKey(ctx, caExchange)
	if err != nil {
		return nil, nil, err
	}
	rt.xchg.cert, rt.xchg.key = c, k
	return c, k, nil
}

// exchangeRejectionKeyFile holds the secret of the implicit rejection when archived keys are
// decrypted (cms.DecryptOptions.RejectionKey), made on first use.
const exchangeRejectionKeyFile = "ca-exchange-rejection.key"

// OpenArchivedKey opens a private key a client archived (enrollsvc.ExchangeKey) with the CA
// exchange key in the HSM. The envelope must be addressed to a CA exchange certificate for that
// key: the current one, or an earlier one this CA issued and recorded (a client may have fetched
// it up to a week ago, MS-WCCE 3.2.1.4.3.2.15). Content encrypted with AES or 3DES (Windows'
// default for archival) is accepted; single DES is not.
func (rt *Runtime) OpenArchivedKey(ctx context.Context, envelope []byte) ([]byte, error) {
	ed, err := cms.ParseEnvelopedData(envelope)
	if err != nil {
		return nil, err
	}
	cur, key, err := rt.exchangeKey(ctx)
	if err != nil {
		return nil, err
	}
	recipient := (*x509.Certificate)(nil)
	for _, r := range ed.Recipients {
		if r.RID.Matches(cur) {
			recipient = cur
			break
		}
		if r.RID.Issuer == nil || !bytes.Equal(r.RID.Issuer, rt.CACert.RawSubject) || r.RID.Serial.Sign() <= 0 {
			continue
		}
		sc, err := rt.Store.GetCertificate(ctx, certutil.SerialString(r.RID.Serial))
		if err != nil {
			continue
		}
		c, err := x509.ParseCertificate(sc.DER)
		if err == nil && c.CheckSignatureFrom(rt.CACert) == nil && certutil.PublicKeysEqual(c.PublicKey, key.Public()) {
			recipient = c
			break
		}
	}
	if recipient == nil {
		return nil, errors.New("the envelope is not addressed to a CA exchange certificate of this CA")
	}
	rejection, err := rt.secret(exchangeRejectionKeyFile)
	if err != nil {
		return nil, err
	}
	return ed.Decrypt(recipient, key, cms.DecryptOptions{Allow3DES: true, RejectionKey: rejection})
}
