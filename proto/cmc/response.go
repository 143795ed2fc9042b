package cmc

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"fmt"
	"math/big"
	"slices"
	"strings"
)

// CMCStatus values (RFC 5272 section 6.1.1).
const (
	statusSuccess = 0
	statusFailed  = 2
)

// cmcStatusInfo is RFC 5272 CMCStatusInfo (id-cmc-statusInfo), the form Windows reads (CMC_STATUS_INFO).
type cmcStatusInfo struct {
	Status       int
	BodyList     []int64
	StatusString string        `asn1:"optional,utf8"`
	OtherInfo    asn1.RawValue `asn1:"optional"` // failInfo INTEGER or pendInfo SEQUENCE
}

type pkiResponse struct {
	Controls, CMS, OtherMsgs []asn1.RawValue
}

// FullPKIResponse builds the BinarySecurityToken of an MS-WSTEP Issued reply: a ContentInfo SignedData whose
// certificates are the issued certificate followed by chain (and signerCert when not in chain).
//
// With a signer it is a CMC Full PKI Response (RFC 5272 section 4.2), as AD CS returns: eContentType
// id-cct-PKIResponse, a PKIResponse whose only control is a CMCStatusInfo (bodyPartID 1) saying success for
// bodyPartID, signed by signer (the CA key, SHA-256 or the curve's hash) with signed contentType and
// messageDigest, the signer named by signerCert's issuer and serial.
//
// With signer nil it is a certs-only Simple PKI Response (RFC 5272 section 4.1, MS-WCCE 2.2.2.8 "CMS
// certificate chain"): eContentType id-data, an empty eContent, no signers; this is byte-for-byte the shape of
// the captured reply cepces accepted. Use it only to answer a bare PKCS#10 (Request.BodyPartID 0); a CMC or
// renewal request (what Windows sends) expects the signed full response.
//
// A bare PKCS#10 has no bodyPartID; bodyPartID 0 is answered as 1, as for the single request of a PKIData.
func FullPKIResponse(issued *x509.Certificate, chain []*x509.Certificate, bodyPartID int, signer crypto.Signer, signerCert *x509.Certificate) ([]byte, error) {
	if issued == nil {
		return nil, errors.New("cmc: no issued certificate")
	}
	id, err := responseBodyPartID(bodyPartID)
	if err != nil {
		return nil, err
	}
	certs := [][]byte{issued.Raw}
	add := func(c *x509.Certificate) {
		if c != nil && !slices.ContainsFunc(certs, func(b []byte) bool { return bytes.Equal(b, c.Raw) }) {
			certs = append(certs, c.Raw)
		}
	}
	for _, c := range chain {
		add(c)
	}
	if signer == nil {
		return buildSignedData(oidData, []byte{}, certs, nil, nil)
	}
	if signerCert == nil {
		return nil, errors.New("cmc: a signer needs its certificate")
	}
	add(signerCert)
	status, err := asn1.Marshal(cmcStatusInfo{Status: statusSuccess, BodyList: []int64{id}})
	if err != nil {
		return nil, err
	}
	content, err := pkiResponseWithStatus(status)
	if err != nil {
		return nil, err
	}
	return buildSignedData(oidPKIResponse, content, certs, signer, signerCert)
}

// FailureResponse builds a PKIResponse whose CMCStatusInfo says failed, with failInfo (a CMCFailInfo, e.g.
// FailInfoOf(err) for a refused request) and text, for bodyPartID (0 answered as 1), in a ContentInfo SignedData
// with no signer: it is the BinaryResponse of a fault's CertificateEnrollmentWSDetail, which tells the client
// why, and carries no authority. Invalid UTF-8 in text is replaced and text is cut to 1 KiB.
func FailureResponse(bodyPartID int, failInfo int, text string) ([]byte, error) {
	id, err := responseBodyPartID(bodyPartID)
	if err != nil {
		return nil, err
	}
	if failInfo < FailBadAlg || failInfo > 13 { // authDataFail(13) is the last CMCFailInfo
		return nil, fmt.Errorf("cmc: failInfo %d is not a CMCFailInfo", failInfo)
	}
	// The text often quotes client input: keep it valid UTF-8 and short rather than fail the fault.
	text = strings.ToValidUTF8(text, "\uFFFD")
	if len(text) > maxStatusText {
		text = strings.ToValidUTF8(text[:maxStatusText], "")
	}
	fi, err := asn1.Marshal(failInfo)
	if err != nil {
		return nil, err
	}
	status, err := asn1.Marshal(cmcStatusInfo{Status: statusFailed, BodyList: []int64{id}, StatusString: text,
		OtherInfo: asn1.RawValue{FullBytes: fi}})
	if err != nil {
		return nil, fmt.Errorf("cmc: status text: %w", err)
	}
	content, err := pkiResponseWithStatus(status)
	if err != nil {
		return nil, err
	}
	return buildSignedData(oidPKIResponse, content, nil, nil, nil)
}

const maxStatusText = 1024

func responseBodyPartID(id int) (int64, error) {
	if id < 0 || id > maxBodyPartID {
		return 0, fmt.Errorf("cmc: bodyPartID %d out of range", id)
	}
	if id == 0 {
		return 1, nil
	}
	return int64(id), nil
}

func pkiResponseWithStatus(status []byte) ([]byte, error) {
	values, err := asn1.Marshal(asn1.RawValue{Class: asn1.ClassUniversal, Tag: asn1.TagSet, IsCompound: true, Bytes: status})
	if err != nil {
		return nil, err
	}
	ctrl, err := asn1.Marshal(taggedAttribute{BodyPartID: 1, Type: oidCMCStatusInfo, Values: asn1.RawValue{FullBytes: values}})
	if err != nil {
		return nil, err
	}
	return asn1.Marshal(pkiResponse{Controls: []asn1.RawValue{{FullBytes: ctrl}}, CMS: []asn1.RawValue{}, OtherMsgs: []asn1.RawValue{}})
}

// outSignedData is SignedData for encoding; tagged fields are RawValues carrying their own tags.
type outSignedData struct {
	Version          int
	DigestAlgorithms asn1.RawValue
	EncapContentInfo struct {
		EContentType asn1.ObjectIdentifier
		EContent     asn1.RawValue `asn1:"optional"`
	}
	Certificates asn1.RawValue `asn1:"optional"`
	SignerInfos  asn1.RawValue
}

type outSignerInfo struct {
	Version            int
	SID                issuerAndSerial
	DigestAlgorithm    pkix.AlgorithmIdentifier
	SignedAttrs        asn1.RawValue
	SignatureAlgorithm pkix.AlgorithmIdentifier
	Signature          []byte
}

func set(content []byte) asn1.RawValue {
	return asn1.RawValue{Class: asn1.ClassUniversal, Tag: asn1.TagSet, IsCompound: true, Bytes: content}
}

func tagged(tag int, content []byte) asn1.RawValue {
	return asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: tag, IsCompound: true, Bytes: content}
}

// buildSignedData encodes ContentInfo{signedData} around eContent, with certs and, when signer is set, one
// SignerInfo by signer.
func buildSignedData(eContentType asn1.ObjectIdentifier, eContent []byte, certs [][]byte, signer crypto.Signer, signerCert *x509.Certificate) ([]byte, error) {
	var sd outSignedData
	sd.Version = 1
	if !eContentType.Equal(oidData) {
		sd.Version = 3 // RFC 5652 5.1
	}
	sd.EncapContentInfo.EContentType = eContentType
	octets, err := asn1.Marshal(eContent)
	if err != nil {
		return nil, err
	}
	sd.EncapContentInfo.EContent = tagged(0, octets)
	if len(certs) > 0 {
		sd.Certificates = tagged(0, bytes.Join(certs, nil))
	}
	sd.DigestAlgorithms, sd.SignerInfos = set(nil), set(nil)
	if signer != nil {
		si, digestAlg, err := sign(eContentType, eContent, signer, signerCert)
		if err != nil {
			return nil, err
		}
		da, err := asn1.Marshal(digestAlg)
		if err != nil {
			return nil, err
		}
		sd.DigestAlgorithms, sd.SignerInfos = set(da), set(si)
	}
	inner, err := asn1.Marshal(sd)
	if err != nil {
		return nil, err
	}
	return asn1.Marshal(contentInfo{ContentType: oidSignedData, Content: tagged(0, inner)})
}

// sign builds a SignerInfo over eContent with signed contentType and messageDigest.
func sign(eContentType asn1.ObjectIdentifier, eContent []byte, signer crypto.Signer, cert *x509.Certificate) ([]byte, pkix.AlgorithmIdentifier, error) {
	type equaler interface{ Equal(crypto.PublicKey) bool }
	if pub, ok := signer.Public().(equaler); !ok || !pub.Equal(cert.PublicKey) {
		return nil, pkix.AlgorithmIdentifier{}, errors.New("cmc: signer key does not match the signer certificate")
	}
	var hash crypto.Hash
	var sigAlg asn1.ObjectIdentifier
	switch k := signer.Public().(type) {
	case *rsa.PublicKey:
		hash, sigAlg = crypto.SHA256, oidRSAEncryption // what AD CS and OpenSSL write; RFC 5754 allows it
	case *ecdsa.PublicKey:
		switch k.Curve {
		case elliptic.P384():
			hash, sigAlg = crypto.SHA384, oidECDSAWithSHA384
		case elliptic.P521():
			hash, sigAlg = crypto.SHA512, oidECDSAWithSHA512
		default:
			hash, sigAlg = crypto.SHA256, oidECDSAWithSHA256
		}
	case ed25519.PublicKey:
		hash, sigAlg = crypto.SHA512, oidEd25519
	default:
		return nil, pkix.AlgorithmIdentifier{}, fmt.Errorf("cmc: unsupported signer key %T", k)
	}
	digestAlg := pkix.AlgorithmIdentifier{Algorithm: map[crypto.Hash]asn1.ObjectIdentifier{
		crypto.SHA256: oidSHA256, crypto.SHA384: oidSHA384, crypto.SHA512: oidSHA512}[hash]}
	h := hash.New()
	h.Write(eContent)
	attrs, err := signedAttributes(eContentType, h.Sum(nil))
	if err != nil {
		return nil, pkix.AlgorithmIdentifier{}, err
	}
	toSign, err := asn1.Marshal(set(attrs))
	if err != nil {
		return nil, pkix.AlgorithmIdentifier{}, err
	}
	var sig []byte
	if sigAlg.Equal(oidEd25519) {
		sig, err = signer.Sign(rand.Reader, toSign, crypto.Hash(0))
	} else {
		h := hash.New()
		h.Write(toSign)
		sig, err = signer.Sign(rand.Reader, h.Sum(nil), hash)
	}
	if err != nil {
		return nil, pkix.AlgorithmIdentifier{}, fmt.Errorf("cmc: signing the response: %w", err)
	}
	si, err := asn1.Marshal(outSignerInfo{
		Version:            1,
		SID:                issuerAndSerial{Issuer: asn1.RawValue{FullBytes: cert.RawIssuer}, Serial: new(big.Int).Set(cert.SerialNumber)},
		DigestAlgorithm:    digestAlg,
		SignedAttrs:        tagged(0, attrs),
		SignatureAlgorithm: pkix.AlgorithmIdentifier{Algorithm: sigAlg},
		Signature:          sig,
	})
	return si, digestAlg, err
}

// signedAttributes returns the contents of the DER SET OF Attribute holding contentType and messageDigest,
// sorted as DER requires.
func signedAttributes(eContentType asn1.ObjectIdentifier, digest []byte) ([]byte, error) {
	var encoded [][]byte
	for _, a := range []struct {
		oid   asn1.ObjectIdentifier
		value any
	}{{oidContentType, eContentType}, {oidMessageDigest, digest}} {
		v, err := asn1.Marshal(a.value)
		if err != nil {
			return nil, err
		}
		values, err := asn1.Marshal(set(v))
		if err != nil {
			return nil, err
		}
		enc, err := asn1.Marshal(attribute{Type: a.oid, Values: asn1.RawValue{FullBytes: values}})
		if err != nil {
			return nil, err
		}
		encoded = append(encoded, enc)
	}
	slices.SortFunc(encoded, bytes.Compare)
	return bytes.Join(encoded, nil), nil
}
