package cmc

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"encoding/asn1"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/enrollment-appliance/aeappliance/proto/cms"
)

// Kind is the shape of a request.
type Kind int

const (
	// PKCS10 is a bare PKCS#10 (or one wrapped in a SignedData signed by its own key).
	PKCS10 Kind = iota + 1
	// CMC is a SignedData around a CMC PKIData holding one PKCS#10.
	CMC
	// Renewal is a SignedData signed with the key of the certificate being renewed.
	Renewal
	// OnBehalf is a CMC or PKCS#7 request signed by one or more enrollment agents' certificates
	// for the account its RequesterName names (MS-WCCE enroll on behalf of).
	OnBehalf
)

func (k Kind) String() string {
	switch k {
	case PKCS10:
		return "PKCS10"
	case CMC:
		return "CMC"
	case Renewal:
		return "Renewal"
	case OnBehalf:
		return "OnBehalf"
	}
	return "unknown"
}

// MaxSize is the largest token ParseRequest accepts (DER bytes, after base64 decoding).
const MaxSize = 64 << 10

// maxNameValues bounds the request attributes one request may carry.
const maxNameValues = 64

// Request is a parsed, signature-checked enrollment request.
type Request struct {
	Kind Kind
	// CSR is the DER PKCS#10 (the one inside the CMC PKIData or PKCS#7 when wrapped); its signature is verified.
	CSR                []byte
	CertificateRequest *x509.CertificateRequest
	// NameValues are the request attributes (name-value pairs, 1.3.6.1.4.1.311.13.2.1), e.g.
	// "CertificateTemplate", from the PKCS#10 attributes, the CMC regInfo control and Windows' CmcAddAttributes
	// control. Names are kept as sent; use NameValue for the case-insensitive lookup Windows does. A name given
	// twice with different values is refused by ParseRequest.
	NameValues map[string]string
	// BodyPartID is the CMC bodyPartID of the request (to answer in the response); 0 for a bare PKCS#10.
	BodyPartID int
	// OldCert, for a Renewal, is the certificate being renewed: the value of attribute 1.3.6.1.4.1.311.13.1 in
	// the PKCS#10, or else the SignedData signer's certificate. A SignerInfo over the content has been verified
	// with its public key. The caller checks that it was issued by our CA, is neither revoked nor expired, and
	// is of the same template.
	OldCert *x509.Certificate
	// SignerCert is the certificate whose key signed a CMC or PKCS#7 request, when the signer was not the request
	// key (a renewal's old certificate, or an enrollment agent's; the first such signer). SignerIsRequestKey
	// reports that every signer is the request key itself (Windows' ordinary CMC request); a request of Kind CMC
	// with SignerIsRequestKey false is signed by someone else too (enrollment on behalf of others), which the
	// caller must authorize or refuse.
	SignerCert         *x509.Certificate
	SignerIsRequestKey bool
	// ArchivedKey is the private key a key archival request carries (MS-WCCE 3.1.1.4.3.6): the DER
	// ContentInfo EnvelopedData of the szOID_ARCHIVED_KEY_ATTR unsigned attribute, encrypted to the
	// CA exchange certificate, holding an RSA private key BLOB (ParseKeyBlob). ParseRequest has
	// checked that the signed EncryptedKeyHash is its hash under KeyHash; the caller decrypts it and
	// must refuse the request unless it holds the private key of CertificateRequest. Nil otherwise.
	ArchivedKey      []byte
	EncryptedKeyHash []byte
	KeyHash          crypto.Hash
	// RequesterName, for Kind OnBehalf, is the account the request is for, as the agent named it
	// in the "RequesterName" request attribute (e.g. CORP\alice); Agents are the certificates of
	// every signer other than the request key, each signature verified. The caller checks that
	// they are enrollment agents' certificates of its own, and decides.
	RequesterName string
	Agents        []*x509.Certificate
}

// requesterNameAttr is the request attribute naming the account an enrollment agent enrolls for.
const requesterNameAttr = "RequesterName"

// NameValue returns the value of the request attribute name, compared case-insensitively.
func (r *Request) NameValue(name string) (string, bool) {
	for k, v := range r.NameValues {
		if strings.EqualFold(k, name) {
			return v, true
		}
	}
	return "", false
}

// ParseRequest parses the BinarySecurityToken of an RST Issue request (DER, already base64-decoded) and
// verifies every signature in it. It decides the Kind by content, and refuses with an *Error anything it cannot
// fully check: more than MaxSize bytes, BER (indefinite lengths, non-minimal encodings), trailing data, an
// unknown content type, several or non-PKCS#10 requests in one PKIData, nested CMS bodies, and CMC controls
// it does not understand (RFC 5272 controls carry no criticality flag, so every control is treated as critical
// except the informational identification, transactionId and senderNonce).
func ParseRequest(der []byte) (*Request, error) {
	if len(der) > MaxSize {
		return nil, badRequest("request of %d bytes is over the %d-byte limit", len(der), MaxSize)
	}
	var outer asn1.RawValue
	rest, err := asn1.Unmarshal(der, &outer)
	if err != nil {
		return nil, badRequest("not a DER request: %v", err)
	}
	if len(rest) != 0 {
		return nil, badRequest("%d bytes of trailing data after the request", len(rest))
	}
	if !isUniversal(outer, asn1.TagSequence, true) {
		return nil, badRequest("request is not a SEQUENCE")
	}
	var first asn1.RawValue
	if _, err := asn1.Unmarshal(outer.Bytes, &first); err != nil {
		return nil, badRequest("empty or malformed request: %v", err)
	}
	if isUniversal(first, asn1.TagOID, false) {
		return parseSigned(der)
	}
	c, err := parseCSR(der)
	if err != nil {
		return nil, err
	}
	return &Request{Kind: PKCS10, CSR: der, CertificateRequest: c.req, NameValues: c.nameValues}, nil
}

// csrInfo is a verified PKCS#10 and what its attributes say.
type csrInfo struct {
	req        *x509.CertificateRequest
	nameValues map[string]string
	renewal    *x509.Certificate // attribute 1.3.6.1.4.1.311.13.1
}

func parseCSR(der []byte) (*csrInfo, error) {
	req, err := x509.ParseCertificateRequest(der)
	if err != nil {
		return nil, badRequest("PKCS#10: %v", err)
	}
	if err := req.CheckSignature(); err != nil {
		return nil, errf(FailBadMessageCheck, "PKCS#10 signature: %v", err)
	}
	out := &csrInfo{req: req, nameValues: map[string]string{}}
	var tbs struct {
		Version    int
		Subject    asn1.RawValue
		PublicKey  asn1.RawValue
		Attributes asn1.RawValue `asn1:"optional,tag:0"`
	}
	if err := derUnmarshal(req.RawTBSCertificateRequest, &tbs, "PKCS#10 request info"); err != nil {
		return nil, err
	}
	attrs, err := cms.ParseAttributes(tbs.Attributes.Bytes)
	if err != nil {
		return nil, err
	}
	for _, a := range attrs {
		switch {
		case a.Type.Equal(oidNameValuePair):
			for _, v := range a.Values {
				if err := addNameValuePair(out.nameValues, v); err != nil {
					return nil, err
				}
			}
		case a.Type.Equal(oidRenewalCertificate):
			if len(a.Values) != 1 || out.renewal != nil {
				return nil, badRequest("renewal certificate attribute must hold exactly one certificate")
			}
			c, err := x509.ParseCertificate(a.Values[0])
			if err != nil {
				return nil, badRequest("renewal certificate attribute: %v", err)
			}
			out.renewal = c
		}
	}
	return out, nil
}

// addNameValuePair decodes an EnrollmentNameValuePair SEQUENCE { name BMPString, value BMPString }.
func addNameValuePair(m map[string]string, der []byte) error {
	var pair struct{ Name, Value asn1.RawValue }
	if err := derUnmarshal(der, &pair, "name-value pair"); err != nil {
		return err
	}
	name, err1 := decodeString(pair.Name)
	value, err2 := decodeString(pair.Value)
	if err1 != nil || err2 != nil {
		return badRequest("name-value pair is not a pair of strings")
	}
	return addNameValue(m, name, value)
}

// addNameValue records name=value, refusing a name given twice with different values: policy must not read one
// template name while the audit log shows another.
func addNameValue(m map[string]string, name, value string) error {
	if name == "" {
		return badRequest("name-value pair with an empty name")
	}
	for k, v := range m {
		if strings.EqualFold(k, name) {
			if v != value {
				return badRequest("request attribute %q given twice with different values", name)
			}
			return nil
		}
	}
	if len(m) >= maxNameValues {
		return badRequest("more than %d request attributes", maxNameValues)
	}
	m[name] = value
	return nil
}

// parseSigned handles a ContentInfo: CMC, renewal, or a PKCS#10 in a SignedData.
func parseSigned(der []byte) (*Request, error) {
	sd, err := parseSignedData(der)
	if err != nil {
		return nil, err
	}
	if sd.Content == nil {
		return nil, badRequest("SignedData carries no content")
	}
	r := &Request{}
	var c *csrInfo
	switch {
	case sd.ContentType.Equal(oidPKIData):
		if c, err = parsePKIData(sd.Content, r); err != nil {
			return nil, err
		}
	case sd.ContentType.Equal(cms.OIDData):
		// MS-WCCE puts a PKCS#10 here; accept a PKIData too (decided by content: PKIData has four elements).
		if c, err = parseCSR(sd.Content); err != nil {
			var err2 error
			if c, err2 = parsePKIData(sd.Content, r); err2 != nil {
				return nil, badRequest("id-data content is neither a valid PKCS#10 (%v) nor a CMC PKIData (%v)", err, err2)
			}
		}
	default:
		return nil, badRequest("unsupported eContentType %v", sd.ContentType)
	}
	r.CertificateRequest = c.req
	r.CSR = c.req.Raw
	if r.NameValues == nil {
		r.NameValues = map[string]string{}
	}
	for k, v := range c.nameValues {
		if err := addNameValue(r.NameValues, k, v); err != nil {
			return nil, err
		}
	}

	reqKey := requestCandidate(c.req)
	cands := []candidate{reqKey}
	for _, cert := range sd.Certificates {
		cands = append(cands, certCandidate(cert))
	}
	if c.renewal != nil {
		cands = append(cands, certCandidate(c.renewal))
	}
	var signers []candidate
	for i := range sd.SignerInfos {
		s, err := verifySigner(&sd.SignerInfos[i], sd.ContentType, sd.Content, cands)
		if err != nil {
			return nil, fmt.Errorf("signer %d: %w", i+1, err)
		}
		signers = append(signers, s)
		// Name-value pairs a signer signed (how a PKCS#7 request on behalf of another account
		// carries RequesterName) count as the request's.
		for _, a := range sd.SignerInfos[i].SignedAttrs {
			if !a.Type.Equal(oidNameValuePair) {
				continue
			}
			for _, v := range a.Values {
				if err := addNameValuePair(r.NameValues, v); err != nil {
					return nil, err
				}
			}
		}
	}

	isReqKey := func(s candidate) bool { return bytes.Equal(s.spki, reqKey.spki) }
	r.SignerIsRequestKey = true
	for _, s := range signers {
		if !isReqKey(s) {
			r.SignerIsRequestKey = false
			if r.SignerCert == nil {
				r.SignerCert = s.cert
			}
			if s.cert != nil && !slices.ContainsFunc(r.Agents, s.cert.Equal) {
				r.Agents = append(r.Agents, s.cert)
			}
		}
	}
	requester, named := r.NameValue(requesterNameAttr)
	requester = strings.TrimSpace(requester)
	isPKIData := r.BodyPartID != 0
	if err := checkArchivedKey(sd, r, c); err != nil {
		return nil, err
	}

	switch {
	case named && (c.renewal != nil || requester == ""):
		return nil, badRequest("a renewal names no requester, and a RequesterName must not be empty")
	case named && len(r.Agents) == 0:
		return nil, errf(FailBadMessageCheck, "the request names requester %q but is signed by no certificate other than the request key's", requester)
	case named:
		r.Kind, r.RequesterName, r.OldCert = OnBehalf, requester, nil
	case c.renewal != nil:
		// MS-WCCE 3.2.1.4.2.1.4.2: a signer must hold the key of the certificate named in the request. With
		// the same key renewed, that signer is also the request key.
		var ok bool
		for _, s := range signers {
			ok = ok || bytes.Equal(s.spki, c.renewal.RawSubjectPublicKeyInfo)
		}
		if !ok {
			return nil, errf(FailBadMessageCheck, "renewal request is not signed with the key of the certificate being renewed")
		}
		r.Kind, r.OldCert, r.SignerCert = Renewal, c.renewal, c.renewal
	case r.SignerCert != nil && !isPKIData:
		// A PKCS#10 in a PKCS#7 signed by another certificate's key: a renewal that names its old certificate
		// only as the signer.
		r.Kind, r.OldCert = Renewal, r.SignerCert
	case isPKIData:
		r.Kind = CMC
	default:
		r.Kind = PKCS10
	}
	return r, nil
}

// pkiData is RFC 5272 PKIData; each field is a SEQUENCE OF, kept raw.
type pkiData struct {
	Controls, Requests, CMS, OtherMsgs asn1.RawValue
}

type taggedAttribute struct {
	BodyPartID int64
	Type       asn1.ObjectIdentifier
	Values     asn1.RawValue
}

const maxBodyPartID = 4294967295

// parsePKIData parses a PKIData with exactly one PKCS#10 TaggedRequest; it sets r.BodyPartID and the name-value
// pairs the controls carry, and returns the verified PKCS#10.
func parsePKIData(der []byte, r *Request) (*csrInfo, error) {
	var pd pkiData
	if err := derUnmarshal(der, &pd, "PKIData"); err != nil {
		return nil, err
	}
	for _, f := range []asn1.RawValue{pd.Controls, pd.Requests, pd.CMS, pd.OtherMsgs} {
		if !isUniversal(f, asn1.TagSequence, true) {
			return nil, badRequest("PKIData field is not a SEQUENCE OF")
		}
	}
	if len(pd.CMS.Bytes) != 0 || len(pd.OtherMsgs.Bytes) != 0 {
		return nil, badRequest("nested CMS bodies and other messages in PKIData are not supported")
	}
	seen := map[int64]bool{}
	checkID := func(id int64) error {
		if id < 1 || id > maxBodyPartID {
			return badRequest("bodyPartID %d out of range", id)
		}
		if seen[id] {
			return badRequest("bodyPartID %d used twice", id)
		}
		seen[id] = true
		return nil
	}

	reqs, err := elements(pd.Requests.Bytes, "reqSequence")
	if err != nil {
		return nil, err
	}
	if len(reqs) != 1 {
		return nil, badRequest("PKIData holds %d requests, exactly one is accepted", len(reqs))
	}
	if reqs[0].Class != asn1.ClassContextSpecific || reqs[0].Tag != 0 || !reqs[0].IsCompound {
		return nil, badRequest("only a PKCS#10 TaggedRequest (tcr) is accepted, not CRMF or other messages")
	}
	var tcr struct {
		BodyPartID int64
		Request    asn1.RawValue
	}
	// The [0] IMPLICIT TaggedCertificationRequest has the SEQUENCE's contents: re-wrap them to parse.
	wrapped, err := asn1.Marshal(asn1.RawValue{Class: asn1.ClassUniversal, Tag: asn1.TagSequence, IsCompound: true, Bytes: reqs[0].Bytes})
	if err != nil {
		return nil, badRequest("TaggedCertificationRequest: %v", err)
	}
	if err := derUnmarshal(wrapped, &tcr, "TaggedCertificationRequest"); err != nil {
		return nil, err
	}
	if err := checkID(tcr.BodyPartID); err != nil {
		return nil, err
	}
	c, err := parseCSR(tcr.Request.FullBytes)
	if err != nil {
		return nil, err
	}
	r.BodyPartID = int(tcr.BodyPartID)
	if r.NameValues == nil {
		r.NameValues = map[string]string{}
	}

	controls, err := elements(pd.Controls.Bytes, "controlSequence")
	if err != nil {
		return nil, err
	}
	for _, e := range controls {
		var ta taggedAttribute
		if err := derUnmarshal(e.FullBytes, &ta, "TaggedAttribute"); err != nil {
			return nil, err
		}
		if err := checkID(ta.BodyPartID); err != nil {
			return nil, err
		}
		if !isUniversal(ta.Values, asn1.TagSet, true) {
			return nil, badRequest("control %v values are not a SET", ta.Type)
		}
		values, err := elements(ta.Values.Bytes, "control values")
		if err != nil {
			return nil, err
		}
		switch {
		case ta.Type.Equal(oidCMCRegInfo):
			for _, v := range values {
				if err := parseRegInfo(v, r.NameValues); err != nil {
					return nil, err
				}
			}
		case ta.Type.Equal(oidCMCAddAttributes):
			for _, v := range values {
				if err := parseAddAttributes(v, r); err != nil {
					return nil, err
				}
			}
		case ta.Type.Equal(oidEncryptedKeyHash):
			vs := make([][]byte, len(values))
			for i, v := range values {
				vs[i] = v.FullBytes
			}
			if err := setEncryptedKeyHash(r, vs); err != nil {
				return nil, err
			}
		case ta.Type.Equal(oidCMCIdentification), ta.Type.Equal(oidCMCTransactionID), ta.Type.Equal(oidCMCSenderNonce):
			// Informational: the identity comes from authentication, and replies carry no nonces here.
		default:
			return nil, badRequest("unsupported CMC control %v", ta.Type)
		}
	}
	return c, nil
}

// cmcAddAttributes is Windows' CmcAddAttributes control value (wincrypt CMC_ADD_ATTRIBUTES_INFO):
// attributes for the body parts certReferences names.
type cmcAddAttributes struct {
	PKIDataReference int64
	CertReferences   []int64
	Attributes       asn1.RawValue // SET OF Attribute
}

// addAttributesControl is a TaggedAttribute (bodyPartID controlID) holding a CmcAddAttributes
// for body part requestID with attributes, each an OID and one DER value; a DER SET OF is
// ordered by encoding, so the caller passes them in that order.
func addAttributesControl(controlID, requestID int64, attrs ...cms.Attribute) ([]byte, error) {
	var set []byte
	for _, a := range attrs {
		values := make([]asn1.RawValue, len(a.Values))
		for i, v := range a.Values {
			values[i] = asn1.RawValue{FullBytes: v}
		}
		b, err := asn1.Marshal(struct {
			Type   asn1.ObjectIdentifier
			Values []asn1.RawValue `asn1:"set"`
		}{a.Type, values})
		if err != nil {
			return nil, err
		}
		set = append(set, b...)
	}
	aa, err := asn1.Marshal(cmcAddAttributes{0, []int64{requestID}, asn1.RawValue{Class: asn1.ClassUniversal, Tag: asn1.TagSet, IsCompound: true, Bytes: set}})
	if err != nil {
		return nil, err
	}
	values, err := asn1.Marshal(asn1.RawValue{Class: asn1.ClassUniversal, Tag: asn1.TagSet, IsCompound: true, Bytes: aa})
	if err != nil {
		return nil, err
	}
	return asn1.Marshal(taggedAttribute{BodyPartID: controlID, Type: oidCMCAddAttributes, Values: asn1.RawValue{FullBytes: values}})
}

// parseRegInfo decodes a regInfo OCTET STRING: UTF-8 "Name=Value&Name=Value" (MS-WCCE 2.2.2.6.3), with
// percent-escapes decoded where they are well formed.
func parseRegInfo(v asn1.RawValue, m map[string]string) error {
	var s []byte
	if err := derUnmarshal(v.FullBytes, &s, "regInfo"); err != nil {
		return err
	}
	if !utf8.Valid(s) {
		return badRequest("regInfo is not UTF-8")
	}
	for _, pair := range strings.Split(string(s), "&") {
		if pair == "" {
			continue
		}
		name, value, ok := strings.Cut(pair, "=")
		if !ok {
			return badRequest("regInfo entry %q has no '='", pair)
		}
		if err := addNameValue(m, unescape(name), unescape(value)); err != nil {
			return err
		}
	}
	return nil
}

func unescape(s string) string {
	if u, err := url.PathUnescape(s); err == nil && utf8.ValidString(u) {
		return u
	}
	return s
}

// parseAddAttributes decodes Windows' CmcAddAttributes SEQUENCE { pkiDataReference BodyPartID,
// certReferences SEQUENCE OF BodyPartID, attributes SET OF Attribute } and keeps its name-value pairs. The
// attributes must apply to the request (or to the whole PKIData). An encrypted key hash (key
// archival) among them is recorded in r.
func parseAddAttributes(v asn1.RawValue, r *Request) error {
	requestID, m := r.BodyPartID, r.NameValues
	var aa cmcAddAttributes
	if err := derUnmarshal(v.FullBytes, &aa, "CmcAddAttributes"); err != nil {
		return err
	}
	if aa.PKIDataReference != 0 {
		return badRequest("CmcAddAttributes refers to a nested PKIData")
	}
	for _, ref := range aa.CertReferences {
		if ref != int64(requestID) {
			return badRequest("CmcAddAttributes refers to body part %d, not the request", ref)
		}
	}
	if !isUniversal(aa.Attributes, asn1.TagSet, true) {
		return badRequest("CmcAddAttributes attributes are not a SET")
	}
	attrs, err := cms.ParseAttributes(aa.Attributes.Bytes)
	if err != nil {
		return err
	}
	for _, a := range attrs {
		if a.Type.Equal(oidRenewalCertificate) {
			// Only the signed PKCS#10 may name the certificate being renewed.
			return badRequest("renewal certificate given in a CMC control")
		}
		if a.Type.Equal(oidEncryptedKeyHash) {
			if err := setEncryptedKeyHash(r, a.Values); err != nil {
				return err
			}
			continue
		}
		if !a.Type.Equal(oidNameValuePair) {
			continue // client information, OS version, CSP: informational
		}
		for _, v := range a.Values {
			if err := addNameValuePair(m, v); err != nil {
				return err
			}
		}
	}
	return nil
}
