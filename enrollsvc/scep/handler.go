package scep

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/enrollment-appliance/aeappliance/proto/cms"
	scepmsg "github.com/enrollment-appliance/aeappliance/proto/scep"
)

// Request is a PKCSReq or RenewalReq whose signatures (the message's and the PKCS#10's) have been checked.
type Request struct {
	Profile       string // from the URL: /scep/<profile>
	MessageType   int    // PKCSReq or RenewalReq
	TransactionID string
	CSR           *x509.CertificateRequest // signature checked
	CSRDER        []byte
	Challenge     string // challengePassword attribute of the CSR ("" when none)
	// Signer is the certificate of the key that signed the message, which the CertRep is encrypted to; only its
	// signature over this message has been checked. For a first PKCSReq it is self-signed with the CSR's key.
	// certmonger's resubmit and rekey send a PKCSReq signed with the certificate it holds (the rekey's CSR has
	// a new key), and a RenewalReq is signed with the certificate being renewed: before treating Signer as an
	// identity, the backend checks that this CA issued it and that it is valid and unrevoked.
	Signer *x509.Certificate
}

// PollRequest is a CertPoll (GetCertInitial): the requester asks again about a pending transaction.
type PollRequest struct {
	Profile       string
	TransactionID string
	// Issuer and Subject are the DER X.501 Names of the IssuerAndSubject, exactly as sent (each checked to be a
	// Name): compare them with bytes.Equal to the CA certificate's RawSubject and the pending CSR's RawSubject.
	Issuer, Subject []byte
	// Signer is the message signer's certificate; it should hold the key of the pending request.
	Signer *x509.Certificate
}

// Result is the backend's answer, written as a CertRep.
type Result = scepmsg.Result

// The message types, pkiStatus and failInfo values (RFC 8894 section 3.2.1) that a Backend sees and answers.
const (
	RenewalReq = scepmsg.RenewalReq
	PKCSReq    = scepmsg.PKCSReq

	Success = scepmsg.Success
	Failure = scepmsg.Failure
	Pending = scepmsg.Pending

	BadAlg          = scepmsg.BadAlg
	BadMessageCheck = scepmsg.BadMessageCheck
	BadRequest      = scepmsg.BadRequest
	BadTime         = scepmsg.BadTime
	BadCertID       = scepmsg.BadCertID
)

// Profile is what the edge needs to know of a SCEP profile before it decrypts a request.
type Profile struct {
	// AllowDES accepts request envelopes encrypted with single DES or 3DES (legacy devices); GetCACaps
	// then lists DES3. Otherwise such a request is answered FAILURE badAlg.
	AllowDES bool
}

// Backend is what the SCEP edge needs of the enrollment core.
type Backend interface {
	// Profile reports whether name is a SCEP profile, and how it is served; an unknown one is
	// answered 404.
	Profile(ctx context.Context, name string) (p Profile, ok bool, err error)
	// Enroll answers a PKCSReq or RenewalReq. Replays are its business (it sees TransactionID). An error is
	// logged and answered FAILURE badRequest; its text never reaches the client.
	Enroll(ctx context.Context, r Request) (Result, error)
	// Poll answers a CertPoll about a pending transaction, like Enroll.
	Poll(ctx context.Context, r PollRequest) (Result, error)
}

// RASigner is the RA's signing certificate and key: they sign every CertRep.
type RASigner struct {
	Cert *x509.Certificate // issued by Config.CACert, RSA, keyUsage digitalSignature and not keyEncipherment
	Key  crypto.Signer     // the key of Cert; it need not be able to decrypt (in an HSM it cannot)
}

// RADecrypter is the RA's encryption certificate and key: clients encrypt their requests to the
// certificate, and the key opens them.
type RADecrypter struct {
	Cert *x509.Certificate // issued by Config.CACert, RSA, keyUsage keyEncipherment and not digitalSignature
	Key  crypto.Decrypter  // the key of Cert; it need not be able to sign (in an HSM it cannot)
}

// Config wires the handler.
type Config struct {
	CACert *x509.Certificate
	// The RA has two keys (RFC 8894 §3.5.1): Signer signs the replies and Decrypter opens the
	// requests. GetCACert returns both certificates, and clients tell them apart by keyUsage (RFC
	// 8894 §3.5.1); a key that decrypts attacker-chosen ciphertexts never signs.
	Signer    RASigner
	Decrypter RADecrypter
	Backend   Backend
	Logger    *slog.Logger // nil: slog.Default()
	// Caps are the GetCACaps capabilities; nil means DefaultCaps. Only those in DefaultCaps may be listed.
	// DES3 is listed only for profiles that allow DES (Profile.AllowDES). Replies are AES-256-CBC
	// regardless.
	Caps []string
	// RejectionKey is the per-appliance secret of the decryption's implicit rejection
	// (cms.DecryptOptions.RejectionKey): every failure to decrypt a request gets one failInfo, and the
	// same encrypted block sent twice gets the same answer. Required.
	RejectionKey []byte
	Now          func() time.Time // nil: time.Now
}

// RAOnly is the CA-IDENT (the message parameter of GetCACert, which RFC 8894 §4.2.1 leaves to the
// server) that asks for the RA's two certificates without the CA's. It is for clients that encrypt
// their request to every certificate of GetCACert and fail on a CA key that is not RSA: scepclient
// 2.1.0 (micromdm) does so unless given -ca-fingerprint, and with -ca-fingerprint it both encrypts
// to and verifies the reply with the one certificate it pins, which cannot work with separate
// signing and decryption keys. Such a client is run with -cacert-message=ra-only instead.
const RAOnly = "ra-only"

// DefaultCaps are the capabilities this package supports. certmonger uses AES and SHA-256 when listed.
var DefaultCaps = []string{"POSTPKIOperation", "SHA-256", "SHA-512", "AES", "DES3", "SCEPStandard", "Renewal"}

// maxClockSkew bounds the distance between a request's signingTime and ours.
const maxClockSkew = 24 * time.Hour

// Content types (RFC 8894 4).
const (
	contentTypeCAs     = "application/x-x509-ca-ra-cert"
	contentTypeMessage = "application/x-pki-message"
)

type handler struct {
	cfg       Config
	caps      []byte // GetCACaps reply for profiles that allow DES
	capsNoDES []byte // and for the others
	caCert    []byte // GetCACert reply: the RA's signing and encryption certificates and the CA's, certs-only
	raCerts   []byte // GetCACert reply for CA-IDENT RAOnly: the RA's two certificates, certs-only
}

// NewHandler validates cfg and returns the SCEP handler. It serves, for each profile the backend knows,
// GET /scep/<profile>?operation=GetCACaps, GetCACert, and PKIOperation&message=<base64>, and POST
// /scep/<profile>?operation=PKIOperation with the DER message as body; the same with /pkiclient.exe appended.
func NewHandler(cfg Config) (http.Handler, error) {
	switch {
	case cfg.CACert == nil || cfg.Signer.Cert == nil || cfg.Signer.Key == nil || cfg.Decrypter.Cert == nil ||
		cfg.Decrypter.Key == nil || cfg.Backend == nil:
		return nil, errors.New("scep: Config needs CACert, Signer, Decrypter and Backend")
	case len(cfg.RejectionKey) < 32:
		return nil, errors.New("scep: Config.RejectionKey needs at least 32 bytes")
	}
	if err := checkRA("Signer", cfg.Signer.Cert, cfg.Signer.Key.Public(), cfg.CACert, x509.KeyUsageDigitalSignature); err != nil {
		return nil, err
	}
	if err := checkRA("Decrypter", cfg.Decrypter.Cert, cfg.Decrypter.Key.Public(), cfg.CACert, x509.KeyUsageKeyEncipherment); err != nil {
		return nil, err
	}
	if cfg.Signer.Cert.PublicKey.(*rsa.PublicKey).Equal(cfg.Decrypter.Cert.PublicKey) {
		return nil, errors.New("scep: Config.Signer and Config.Decrypter have the same key: the RA needs one key to sign and another to decrypt")
	}
	if cfg.Caps == nil {
		cfg.Caps = DefaultCaps
	}
	for _, c := range cfg.Caps {
		if !slices.Contains(DefaultCaps, c) {
			return nil, fmt.Errorf("scep: Config.Caps: %q is not supported", c)
		}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	// Both RA certificates, then the CA's (RFC 8894 §4.2.1.2).
	cas, err := scepmsg.CertsOnly(cfg.Signer.Cert, cfg.Decrypter.Cert, cfg.CACert)
	if err != nil {
		return nil, err
	}
	ras, err := scepmsg.CertsOnly(cfg.Signer.Cert, cfg.Decrypter.Cert)
	if err != nil {
		return nil, err
	}
	noDES := slices.DeleteFunc(slices.Clone(cfg.Caps), func(c string) bool { return c == "DES3" })
	return &handler{cfg: cfg, caps: []byte(strings.Join(cfg.Caps, "\n") + "\n"),
		capsNoDES: []byte(strings.Join(noDES, "\n") + "\n"), caCert: cas, raCerts: ras}, nil
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rest, ok := strings.CutPrefix(r.URL.Path, "/scep/")
	profile := strings.TrimSuffix(rest, "/pkiclient.exe")
	if !ok || profile == "" || strings.Contains(profile, "/") {
		http.NotFound(w, r)
		return
	}
	op := r.URL.Query().Get("operation")
	if r.Method != http.MethodGet && (r.Method != http.MethodPost || op != "PKIOperation") {
		w.Header().Set("Allow", "GET, POST")
		http.Error(w, "SCEP takes GET, and POST for PKIOperation", http.StatusMethodNotAllowed)
		return
	}
	p, known, err := h.cfg.Backend.Profile(r.Context(), profile)
	if err != nil {
		h.cfg.Logger.ErrorContext(r.Context(), "scep: profile lookup failed", "profile", profile, "error", err)
		http.Error(w, "service unavailable; try again later", http.StatusServiceUnavailable)
		return
	}
	if !known {
		http.NotFound(w, r)
		return
	}
	switch op {
	case "GetCACaps":
		w.Header().Set("Content-Type", "text/plain")
		if p.AllowDES {
			_, _ = w.Write(h.caps)
		} else {
			_, _ = w.Write(h.capsNoDES)
		}
	case "GetCACert":
		w.Header().Set("Content-Type", contentTypeCAs)
		if r.URL.Query().Get("message") == RAOnly {
			_, _ = w.Write(h.raCerts)
		} else {
			_, _ = w.Write(h.caCert)
		}
	case "PKIOperation":
		h.pkiOperation(w, r, profile, p)
	default:
		http.Error(w, "unknown operation: use GetCACaps, GetCACert or PKIOperation", http.StatusBadRequest)
	}
}

// pkiOperation answers a PKIOperation with a CertRep, or with an HTTP error when the message is too broken
// to answer (no readable transactionID and senderNonce).
func (h *handler) pkiOperation(w http.ResponseWriter, r *http.Request, profile string, p Profile) {
	der, code, err := readMessage(w, r)
	if err != nil {
		h.cfg.Logger.WarnContext(r.Context(), "scep: message refused", "profile", profile, "remote", r.RemoteAddr, "error", err)
		http.Error(w, err.Error(), code)
		return
	}
	msg, err := scepmsg.ParsePKIMessage(der)
	var res Result
	switch {
	case msg == nil:
		h.cfg.Logger.WarnContext(r.Context(), "scep: message refused", "profile", profile, "remote", r.RemoteAddr, "error", err)
		http.Error(w, "malformed SCEP message", http.StatusBadRequest)
		return
	case err != nil:
		res = h.refuse(r, profile, msg, err)
	default:
		res = h.answer(r, profile, p, msg)
	}
	rep, err := scepmsg.NewCertRep(msg, res, h.cfg.Signer.Cert, h.cfg.Signer.Key, h.cfg.CACert)
	if err != nil {
		h.cfg.Logger.ErrorContext(r.Context(), "scep: writing the CertRep failed", "profile", profile,
			"transactionID", msg.TransactionID, "error", err)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	h.cfg.Logger.InfoContext(r.Context(), "scep: answered", "profile", profile, "transactionID", msg.TransactionID,
		"messageType", msg.MessageType, "pkiStatus", res.Status, "failInfo", res.FailInfo)
	w.Header().Set("Content-Type", contentTypeMessage)
	_, _ = w.Write(rep)
}

// answer checks a verified message, decrypts it and asks the backend.
func (h *handler) answer(r *http.Request, profile string, p Profile, msg *scepmsg.PKIMessage) Result {
	ctx := r.Context()
	if t := msg.SigningTime; !t.IsZero() && (t.Before(h.cfg.Now().Add(-maxClockSkew)) || t.After(h.cfg.Now().Add(maxClockSkew))) {
		return h.refuse(r, profile, msg, &scepmsg.Error{FailInfo: BadTime, Msg: fmt.Sprintf("signingTime %v is more than %v from ours", t, maxClockSkew)})
	}
	if msg.MessageType != PKCSReq && msg.MessageType != RenewalReq && msg.MessageType != scepmsg.CertPoll {
		return h.refuse(r, profile, msg, &scepmsg.Error{FailInfo: BadRequest, Msg: fmt.Sprintf("messageType %d is not served", msg.MessageType)})
	}
	// Only the recipient info for the encryption certificate is opened (a client may encrypt to
	// every certificate of GetCACert); an envelope only for the signing certificate, or anyone
	// else, is badMessageCheck.
	content, err := msg.DecryptWith(h.cfg.Decrypter.Cert, h.cfg.Decrypter.Key, cms.DecryptOptions{AllowDES: p.AllowDES, RejectionKey: h.cfg.RejectionKey})
	if err != nil {
		return h.refuse(r, profile, msg, err)
	}
	// Content that does not parse is, to the sender, one more way of not decrypting: implicit
	// rejection turns a bad key into garbage content, so its failure must look like a bad padding's
	// (one failInfo, badMessageCheck), or the parse errors would be the padding oracle again.
	var res Result
	if msg.MessageType == scepmsg.CertPoll {
		issuer, subject, err := scepmsg.ParseIssuerAndSubject(content)
		if err != nil {
			return h.refuse(r, profile, msg, undecryptable(err))
		}
		res, err = h.cfg.Backend.Poll(ctx, PollRequest{Profile: profile, TransactionID: msg.TransactionID,
			Issuer: issuer, Subject: subject, Signer: msg.Signer})
		if err != nil {
			return h.refuse(r, profile, msg, &scepmsg.Error{FailInfo: BadRequest, Msg: "backend: " + err.Error()})
		}
	} else {
		csr, challenge, err := scepmsg.ParseCSR(content)
		if err != nil {
			return h.refuse(r, profile, msg, undecryptable(err))
		}
		res, err = h.cfg.Backend.Enroll(ctx, Request{Profile: profile, MessageType: msg.MessageType,
			TransactionID: msg.TransactionID, CSR: csr, CSRDER: csr.Raw, Challenge: challenge, Signer: msg.Signer})
		if err != nil {
			return h.refuse(r, profile, msg, &scepmsg.Error{FailInfo: BadRequest, Msg: "backend: " + err.Error()})
		}
	}
	switch {
	case res.Status == Success && res.Cert != nil, res.Status == Pending,
		res.Status == Failure && res.FailInfo >= BadAlg && res.FailInfo <= BadCertID:
		return res
	}
	return h.refuse(r, profile, msg, fmt.Errorf("backend: invalid result (status %d, failInfo %d, certificate %t)",
		res.Status, res.FailInfo, res.Cert != nil))
}

// checkRA checks an RA certificate of Config (field name): issued by ca, for pub, an RSA key,
// with keyUsage want and not the other of digitalSignature and keyEncipherment, so that a
// client choosing by keyUsage (RFC 8894 §3.5.1) cannot mistake one for the other.
func checkRA(name string, cert *x509.Certificate, pub crypto.PublicKey, ca *x509.Certificate, want x509.KeyUsage) error {
	const both = x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment
	switch k, ok := cert.PublicKey.(*rsa.PublicKey); {
	case cert.CheckSignatureFrom(ca) != nil:
		return fmt.Errorf("scep: Config.%s.Cert is not issued by Config.CACert", name)
	case cert.KeyUsage&both != want:
		return fmt.Errorf("scep: Config.%s.Cert has keyUsage %#x; it needs %#x and not %#x", name, cert.KeyUsage, want, both&^want)
	case !ok || !k.Equal(pub):
		return fmt.Errorf("scep: Config.%s.Key is not the RSA key of Config.%s.Cert", name, name)
	}
	return nil
}

// undecryptable is the error of decrypted content that does not parse: badMessageCheck, as for
// every decryption failure (cms.Decrypt's).
func undecryptable(err error) error {
	return &scepmsg.Error{FailInfo: BadMessageCheck, Msg: "the decrypted content does not parse: " + err.Error()}
}

// refuse logs why a message is refused and returns the FAILURE to answer it with.
func (h *handler) refuse(r *http.Request, profile string, msg *scepmsg.PKIMessage, err error) Result {
	h.cfg.Logger.WarnContext(r.Context(), "scep: request refused", "profile", profile, "remote", r.RemoteAddr,
		"transactionID", msg.TransactionID, "messageType", msg.MessageType, "error", err)
	return Result{Status: Failure, FailInfo: scepmsg.FailInfoOf(err)}
}

// readMessage returns the DER pkiMessage of a PKIOperation: the base64 message parameter of a GET, or the body
// of a POST (DER, or base64 as some clients send it), with an HTTP status for its errors.
func readMessage(w http.ResponseWriter, r *http.Request) ([]byte, int, error) {
	maxEncoded := base64.StdEncoding.EncodedLen(scepmsg.MaxMessageSize) + 4096 // room for line breaks
	var raw []byte
	if r.Method == http.MethodGet {
		m := r.URL.Query().Get("message")
		if m == "" {
			return nil, http.StatusBadRequest, errors.New("PKIOperation over GET needs a message parameter")
		}
		if len(m) > maxEncoded {
			return nil, http.StatusRequestEntityTooLarge, fmt.Errorf("message over %d bytes", scepmsg.MaxMessageSize)
		}
		// A '+' that the client did not percent-encode arrives as a space.
		raw = []byte(strings.ReplaceAll(m, " ", "+"))
	} else {
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, int64(maxEncoded)))
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return nil, http.StatusRequestEntityTooLarge, fmt.Errorf("message over %d bytes", scepmsg.MaxMessageSize)
		}
		if err != nil {
			return nil, http.StatusBadRequest, fmt.Errorf("reading the body: %w", err)
		}
		if len(body) > 0 && body[0] == 0x30 { // a DER SEQUENCE
			if len(body) > scepmsg.MaxMessageSize {
				return nil, http.StatusRequestEntityTooLarge, fmt.Errorf("message over %d bytes", scepmsg.MaxMessageSize)
			}
			return body, 0, nil
		}
		raw = body
	}
	raw = bytes.Map(func(c rune) rune {
		if c == '\r' || c == '\n' || c == '\t' || c == ' ' {
			return -1
		}
		return c
	}, raw)
	der := make([]byte, base64.StdEncoding.DecodedLen(len(raw)))
	n, err := base64.StdEncoding.Decode(der, raw)
	if err != nil {
		return nil, http.StatusBadRequest, errors.New("the message is neither DER nor base64")
	}
	if n > scepmsg.MaxMessageSize {
		return nil, http.StatusRequestEntityTooLarge, fmt.Errorf("message over %d bytes", scepmsg.MaxMessageSize)
	}
	return der[:n], 0, nil
}
