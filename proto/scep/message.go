package scep

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"
	"unicode/utf16"
	"unicode/utf8"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"

	"github.com/enrollment-appliance/aeappliance/proto/cms"
)

// messageType values (RFC 8894 3.2.1.2).
const (
	CertRep    = 3
	RenewalReq = 17
	PKCSReq    = 19
	CertPoll   = 20 // GetCertInitial in drafts before RFC 8894
	GetCert    = 21
	GetCRL     = 22
)

// pkiStatus values (RFC 8894 3.2.1.3).
const (
	Success = 0
	Failure = 2
	Pending = 3
)

// failInfo values (RFC 8894 3.2.1.4).
const (
	BadAlg          = 0 // unrecognized or unsupported algorithm
	BadMessageCheck = 1 // integrity check (signature, decryption) failed
	BadRequest      = 2 // transaction not permitted or supported
	BadTime         = 3 // signingTime too far from the server's time
	BadCertID       = 4 // no certificate matches the criteria
)

// MaxMessageSize is the largest pkiMessage accepted, in DER bytes.
const MaxMessageSize = 64 << 10

// SCEP signed attributes (RFC 8894 3.2.1, under id-VeriSign 2.16.840.1.113733.1.9).
var (
	oidMessageType       = asn1.ObjectIdentifier{2, 16, 840, 1, 113733, 1, 9, 2}
	oidPKIStatus         = asn1.ObjectIdentifier{2, 16, 840, 1, 113733, 1, 9, 3}
	oidFailInfo          = asn1.ObjectIdentifier{2, 16, 840, 1, 113733, 1, 9, 4}
	oidSenderNonce       = asn1.ObjectIdentifier{2, 16, 840, 1, 113733, 1, 9, 5}
	oidRecipientNonce    = asn1.ObjectIdentifier{2, 16, 840, 1, 113733, 1, 9, 6}
	oidTransactionID     = asn1.ObjectIdentifier{2, 16, 840, 1, 113733, 1, 9, 7}
	oidChallengePassword = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 7}
)

const (
	// NonceSize is the length of a senderNonce or recipientNonce.
	NonceSize            = 16
	maxTransactionID     = 128
	maxChallengePassword = 255 // ub-challengePassword, RFC 2985
)

// Error is a refusal of a client's message, with the failInfo a CertRep carries for it.
type Error struct {
	FailInfo int
	Msg      string
}

func (e *Error) Error() string { return "scep: " + e.Msg }

func malformed(format string, args ...any) error {
	return &Error{BadRequest, fmt.Sprintf(format, args...)}
}

// FailInfoOf returns the failInfo an error of this package (or of package cms, whose kinds are failInfo
// values) carries, or BadRequest.
func FailInfoOf(err error) int {
	var e *Error
	var c *cms.Error
	switch {
	case errors.As(err, &e):
		return e.FailInfo
	case errors.As(err, &c):
		return int(c.Kind)
	}
	return BadRequest
}

// Result is what a CertRep says (RFC 8894 section 3.3.2): the pkiStatus, with the failInfo of a Failure or the
// issued certificate and its chain of a Success.
type Result struct {
	Status   int // Success, Failure or Pending
	FailInfo int // for Failure: BadAlg ... BadCertID
	Cert     *x509.Certificate
	Chain    []*x509.Certificate // for Success: the issuing CA (and its issuers), in order
}

// PKIMessage is a SCEP pkiMessage: a SignedData whose signed attributes say what it is.
type PKIMessage struct {
	MessageType    int
	TransactionID  string
	SenderNonce    []byte
	RecipientNonce []byte    // CertRep: the request's senderNonce
	PKIStatus      int       // CertRep
	FailInfo       int       // CertRep with PKIStatus Failure
	SigningTime    time.Time // zero when the signer did not say
	// Signer is the certificate whose key signed the message: self-signed for a first PKCSReq, the certificate
	// being renewed for a RenewalReq, the RA's for a CertRep.
	Signer       *x509.Certificate
	Certificates []*x509.Certificate // every certificate the SignedData carries
	// Envelope is the pkcsPKIEnvelope, a ContentInfo EnvelopedData; nil when the content is empty (a CertRep
	// that is not SUCCESS).
	Envelope []byte
}

// ParsePKIMessage reads a DER pkiMessage of at most MaxMessageSize bytes and verifies its one signature with
// the certificate it includes for the signer. It does not open the envelope (see Decrypt) and does not judge
// the signer's certificate: that is the caller's business.
//
// Errors are *Error. When the message is well enough formed to answer (its messageType, transactionID and
// senderNonce were read) but fails later, for instance its signature does not verify, ParsePKIMessage returns
// the message along with the error, so that the caller can answer with a FAILURE CertRep; the message's
// content must then not be used.
func ParsePKIMessage(der []byte) (*PKIMessage, error) {
	if len(der) > MaxMessageSize {
		return nil, malformed("message of %d bytes is over the %d-byte limit", len(der), MaxMessageSize)
	}
	sd, err := cms.ParseSignedData(der)
	if err != nil {
		return nil, err
	}
	if len(sd.SignerInfos) != 1 {
		return nil, malformed("SignedData must have exactly one SignerInfo")
	}
	si := &sd.SignerInfos[0]
	if si.SignedAttrs == nil {
		return nil, malformed("SignerInfo has no signed attributes")
	}
	attrs := attributes{}
	for _, a := range si.SignedAttrs {
		if len(a.Values) != 1 {
			return nil, malformed("signed attribute %v has other than one value", a.Type)
		}
		attrs[a.Type.String()] = a.Values[0]
	}
	m, err := readHeader(attrs)
	if err != nil {
		return nil, err
	}
	signer, err := verify(sd, si)
	if err != nil {
		return m, err
	}
	m.Signer, m.Certificates = signer, sd.Certificates
	if !sd.ContentType.Equal(cms.OIDData) {
		return m, malformed("content type %v is not id-data", sd.ContentType)
	}
	if len(sd.Content) > 0 {
		m.Envelope = sd.Content
	}
	return m, nil
}

// verify checks the one SignerInfo and returns its certificate: an RSA certificate the message includes (SCEP
// encrypts the reply to it), signing attributes that carry contentType and a matching messageDigest.
func verify(sd *cms.SignedData, si *cms.SignerInfo) (*x509.Certificate, error) {
	i := slices.IndexFunc(sd.Certificates, si.SID.Matches)
	if i < 0 {
		return nil, &Error{BadMessageCheck, "the signer's certificate is not in the message"}
	}
	pub, ok := sd.Certificates[i].PublicKey.(*rsa.PublicKey)
	if !ok {
		return nil, &Error{BadAlg, "the signer's key is not RSA (SCEP encrypts replies to it)"}
	}
	return sd.Certificates[i], si.Verify(pub, sd.ContentType, sd.Content)
}

// attributes are signed attributes with one value each, by OID; take removes the one it returns.
type attributes map[string]cryptobyte.String

func (a attributes) take(oid asn1.ObjectIdentifier) (cryptobyte.String, bool) {
	v, ok := a[oid.String()]
	delete(a, oid.String())
	return v, ok
}

// readHeader reads the SCEP signed attributes; senderNonce is required, and the CertRep ones when the type
// is CertRep.
func readHeader(attrs attributes) (*PKIMessage, error) {
	m := &PKIMessage{}
	var err error
	if m.MessageType, err = intAttribute(attrs, oidMessageType, "messageType"); err != nil {
		return nil, err
	}
	if m.TransactionID, err = printableAttribute(attrs, oidTransactionID, "transactionID"); err != nil {
		return nil, err
	}
	if m.TransactionID == "" || len(m.TransactionID) > maxTransactionID {
		return nil, malformed("transactionID must have 1 to %d characters", maxTransactionID)
	}
	if m.SenderNonce, err = nonceAttribute(attrs, oidSenderNonce, "senderNonce"); err != nil {
		return nil, err
	}
	if m.SenderNonce == nil {
		return nil, malformed("senderNonce is required")
	}
	if m.RecipientNonce, err = nonceAttribute(attrs, oidRecipientNonce, "recipientNonce"); err != nil {
		return nil, err
	}
	if v, ok := attrs.take(cms.OIDSigningTime); ok {
		var t time.Time
		ok := v.PeekASN1Tag(cbasn1.UTCTime) && v.ReadASN1UTCTime(&t) ||
			v.PeekASN1Tag(cbasn1.GeneralizedTime) && v.ReadASN1GeneralizedTime(&t)
		if !ok || !v.Empty() {
			return nil, malformed("signingTime is not a UTCTime or GeneralizedTime")
		}
		m.SigningTime = t
	}
	if m.MessageType == CertRep {
		if m.PKIStatus, err = intAttribute(attrs, oidPKIStatus, "pkiStatus"); err != nil {
			return nil, err
		}
		if m.PKIStatus == Failure {
			if m.FailInfo, err = intAttribute(attrs, oidFailInfo, "failInfo"); err != nil {
				return nil, err
			}
		}
	}
	return m, nil
}

func printableAttribute(attrs attributes, oid asn1.ObjectIdentifier, name string) (string, error) {
	v, ok := attrs.take(oid)
	var s cryptobyte.String
	if !ok || !v.ReadASN1(&s, cbasn1.PrintableString) || !v.Empty() {
		return "", malformed("%s is missing or not a PrintableString", name)
	}
	for _, c := range s {
		if !isPrintable(c) {
			return "", malformed("%s has a character a PrintableString cannot hold", name)
		}
	}
	return string(s), nil
}

func isPrintable(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
		c == ' ' || c == '\'' || c == '(' || c == ')' || c == '+' || c == ',' || c == '-' || c == '.' ||
		c == '/' || c == ':' || c == '=' || c == '?'
}

// intAttribute reads messageType, pkiStatus or failInfo: a PrintableString holding a small decimal number.
func intAttribute(attrs attributes, oid asn1.ObjectIdentifier, name string) (int, error) {
	s, err := printableAttribute(attrs, oid, name)
	if err != nil {
		return 0, err
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 || n > 255 || strconv.Itoa(n) != s {
		return 0, malformed("%s %q is not a decimal number", name, s)
	}
	return n, nil
}

// nonceAttribute reads a senderNonce or recipientNonce: an OCTET STRING of 16 bytes (nil when absent).
func nonceAttribute(attrs attributes, oid asn1.ObjectIdentifier, name string) ([]byte, error) {
	v, ok := attrs.take(oid)
	if !ok {
		return nil, nil
	}
	var nonce []byte
	if !v.ReadASN1Bytes(&nonce, cbasn1.OCTET_STRING) || !v.Empty() || len(nonce) != NonceSize {
		return nil, malformed("%s is not an OCTET STRING of %d bytes", name, NonceSize)
	}
	return nonce, nil
}

// Decrypt opens the message's envelope, which must be addressed to recipient (whose RSA key is key), and
// returns its content: the DER PKCS#10 of a PKCSReq or RenewalReq, the IssuerAndSubject of a CertPoll, the
// degenerate certs-only SignedData of a SUCCESS CertRep. It accepts AES-CBC and DES-EDE3-CBC, never single DES.
func (m *PKIMessage) Decrypt(recipient *x509.Certificate, key crypto.Decrypter) ([]byte, error) {
	return m.DecryptWith(recipient, key, cms.DecryptOptions{})
}

// DecryptWith is Decrypt with options (single DES for old clients).
func (m *PKIMessage) DecryptWith(recipient *x509.Certificate, key crypto.Decrypter, opts cms.DecryptOptions) ([]byte, error) {
	if m.Envelope == nil {
		return nil, malformed("the message has no pkcsPKIEnvelope")
	}
	env, err := cms.ParseEnvelopedData(m.Envelope)
	if err != nil {
		return nil, err
	}
	return env.Decrypt(recipient, key, opts)
}

// ParseCSR reads the PKCS#10 of a PKCSReq or RenewalReq, checks its signature, and returns its
// challengePassword attribute ("" when it has none).
func ParseCSR(der []byte) (*x509.CertificateRequest, string, error) {
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		return nil, "", malformed("the content is not a PKCS#10 request: %v", err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, "", &Error{BadMessageCheck, fmt.Sprintf("the PKCS#10 signature does not verify: %v", err)}
	}
	tbs := cryptobyte.String(csr.RawTBSCertificateRequest)
	var attrs cryptobyte.String
	var version int64
	if !tbs.ReadASN1(&tbs, cbasn1.SEQUENCE) || !tbs.ReadASN1Integer(&version) || !tbs.SkipASN1(cbasn1.SEQUENCE) ||
		!tbs.SkipASN1(cbasn1.SEQUENCE) || !tbs.ReadASN1(&attrs, cbasn1.Tag(0).ContextSpecific().Constructed()) || !tbs.Empty() {
		return nil, "", malformed("the PKCS#10 attributes are malformed")
	}
	parsed, err := cms.ParseAttributes(attrs)
	if err != nil {
		return nil, "", malformed("the PKCS#10 attributes: %v", err)
	}
	var challenges []cms.Attribute
	for _, a := range parsed {
		if a.Type.Equal(oidChallengePassword) {
			challenges = append(challenges, a)
		}
	}
	if len(challenges) == 0 {
		return csr, "", nil
	}
	value := cryptobyte.String(challenges[0].Values[0])
	var tag cbasn1.Tag
	if len(challenges) != 1 || len(challenges[0].Values) != 1 || !value.ReadAnyASN1(&value, &tag) {
		return nil, "", malformed("the PKCS#10 must have at most one challengePassword, with one value")
	}
	challenge, err := directoryString(tag, value)
	if err != nil || challenge == "" || utf8.RuneCountInString(challenge) > maxChallengePassword {
		return nil, "", malformed("the challengePassword is not a string of 1 to %d characters", maxChallengePassword)
	}
	return csr, challenge, nil
}

// directoryString decodes the DirectoryString forms clients use for a challengePassword.
func directoryString(tag cbasn1.Tag, b []byte) (string, error) {
	switch tag {
	case cbasn1.PrintableString, cbasn1.UTF8String, cbasn1.IA5String:
		if !utf8.Valid(b) {
			return "", errors.New("invalid UTF-8")
		}
		return string(b), nil
	case cbasn1.Tag(asn1.TagBMPString):
		if len(b)%2 != 0 {
			return "", errors.New("odd-length BMPString")
		}
		u := make([]uint16, len(b)/2)
		for i := range u {
			u[i] = uint16(b[2*i])<<8 | uint16(b[2*i+1])
		}
		return string(utf16.Decode(u)), nil
	}
	return "", fmt.Errorf("unsupported string type %d", tag)
}

// ParseIssuerAndSubject reads the content of a CertPoll: SEQUENCE { issuer Name, subject Name }.
func ParseIssuerAndSubject(der []byte) (issuer, subject []byte, err error) {
	s := cryptobyte.String(der)
	var ias, is, sub cryptobyte.String
	if !s.ReadASN1(&ias, cbasn1.SEQUENCE) || !s.Empty() || !ias.ReadASN1Element(&is, cbasn1.SEQUENCE) ||
		!ias.ReadASN1Element(&sub, cbasn1.SEQUENCE) || !ias.Empty() {
		return nil, nil, malformed("the CertPoll content is not an IssuerAndSubject")
	}
	for _, name := range [][]byte{is, sub} {
		var rdns pkix.RDNSequence
		if rest, err := asn1.Unmarshal(name, &rdns); err != nil || len(rest) != 0 {
			return nil, nil, malformed("the CertPoll issuer or subject is not a Name")
		}
	}
	return is, sub, nil
}

// Sign writes m as a DER pkiMessage: its header as signed attributes (the CertRep ones when m.MessageType is
// CertRep), content (an EnvelopedData, or empty) as the id-data eContent, signed by key, the key of m.Signer,
// with m.Signer and certs included.
func (m *PKIMessage) Sign(content []byte, key crypto.Signer, certs ...*x509.Certificate) ([]byte, error) {
	der := func(tag cbasn1.Tag, v []byte) [][]byte {
		var b cryptobyte.Builder
		b.AddASN1(tag, func(b *cryptobyte.Builder) { b.AddBytes(v) })
		return [][]byte{b.BytesOrPanic()}
	}
	printable := func(s string) [][]byte { return der(cbasn1.PrintableString, []byte(s)) }
	attrs := []cms.Attribute{
		{Type: oidMessageType, Values: printable(strconv.Itoa(m.MessageType))},
		{Type: oidTransactionID, Values: printable(m.TransactionID)},
		{Type: oidSenderNonce, Values: der(cbasn1.OCTET_STRING, m.SenderNonce)},
	}
	if m.RecipientNonce != nil {
		attrs = append(attrs, cms.Attribute{Type: oidRecipientNonce, Values: der(cbasn1.OCTET_STRING, m.RecipientNonce)})
	}
	if m.MessageType == CertRep {
		attrs = append(attrs, cms.Attribute{Type: oidPKIStatus, Values: printable(strconv.Itoa(m.PKIStatus))})
		if m.PKIStatus == Failure {
			attrs = append(attrs, cms.Attribute{Type: oidFailInfo, Values: printable(strconv.Itoa(m.FailInfo))})
		}
	}
	return cms.NewSignedData(cms.SignOptions{Content: content, Certificates: append([]*x509.Certificate{m.Signer}, certs...),
		Signer: key, SignerCert: m.Signer, Attributes: attrs})
}

// CertsOnly writes the degenerate certs-only SignedData of RFC 8894 section 3.4 (no signer, no content): the
// GetCACert reply and the content of a SUCCESS CertRep.
func CertsOnly(certs ...*x509.Certificate) ([]byte, error) {
	return cms.NewSignedData(cms.SignOptions{OmitContent: true, Certificates: certs})
}

// NewNonce returns a fresh senderNonce.
func NewNonce() ([]byte, error) {
	n := make([]byte, NonceSize)
	_, err := rand.Read(n)
	return n, err
}

// NewCertRep writes the CertRep answering req with res: signed by raKey (RSA; SHA-256), the key of raCert,
// which is included along with extra (the CA certificate); messageType 3, pkiStatus, failInfo for a Failure,
// req's transactionID, a fresh senderNonce and req's senderNonce as recipientNonce. For Success the content is
// an EnvelopedData (AES-256-CBC) for req.Signer holding a certs-only SignedData of res.Cert then res.Chain;
// otherwise it is present and empty (ARCHITECTURE §11: certmonger refuses a detached content).
func NewCertRep(req *PKIMessage, res Result, raCert *x509.Certificate, raKey crypto.Signer, extra ...*x509.Certificate) ([]byte, error) {
	nonce, err := NewNonce()
	if err != nil {
		return nil, err
	}
	rep := &PKIMessage{MessageType: CertRep, TransactionID: req.TransactionID, SenderNonce: nonce,
		RecipientNonce: req.SenderNonce, PKIStatus: res.Status, FailInfo: res.FailInfo, Signer: raCert}
	content := []byte{}
	switch res.Status {
	case Success:
		if res.Cert == nil || req.Signer == nil {
			return nil, errors.New("scep: a SUCCESS CertRep needs the issued certificate and the requester's")
		}
		certsOnly, err := CertsOnly(append([]*x509.Certificate{res.Cert}, res.Chain...)...)
		if err != nil {
			return nil, err
		}
		if content, err = cms.Encrypt(certsOnly, req.Signer, cms.AES256CBC); err != nil {
			return nil, err
		}
	case Failure:
		if res.FailInfo < BadAlg || res.FailInfo > BadCertID {
			return nil, fmt.Errorf("scep: failInfo %d is not one of RFC 8894", res.FailInfo)
		}
	case Pending:
	default:
		return nil, fmt.Errorf("scep: pkiStatus %d is not one of RFC 8894", res.Status)
	}
	return rep.Sign(content, raKey, extra...)
}
