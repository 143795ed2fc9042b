package cmc

import (
	"crypto"
	"crypto/sha1"
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/enrollment-appliance/aeappliance/proto/cms"
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
	return fullPKIResponse(issued, chain, bodyPartID, signer, signerCert, nil)
}

// FullPKIResponseArchived is FullPKIResponse for a request whose key the CA archived: the
// PKIResponse has a second control (bodyPartID 2), a CmcAddAttributes for the request holding
// szOID_ISSUED_CERT_HASH (the SHA-1 of issued) and szOID_ENCRYPTED_KEY_HASH, encryptedKeyHash as
// the request carried it (MS-WCCE 3.2.1.4.2.1.4.8.2): the client checks that the CA took its key.
func FullPKIResponseArchived(issued *x509.Certificate, chain []*x509.Certificate, bodyPartID int, signer crypto.Signer, signerCert *x509.Certificate, encryptedKeyHash []byte) ([]byte, error) {
	if signer == nil || len(encryptedKeyHash) == 0 {
		return nil, errors.New("cmc: an archival response is signed and carries the encrypted key hash")
	}
	return fullPKIResponse(issued, chain, bodyPartID, signer, signerCert, encryptedKeyHash)
}

func fullPKIResponse(issued *x509.Certificate, chain []*x509.Certificate, bodyPartID int, signer crypto.Signer, signerCert *x509.Certificate, keyHash []byte) ([]byte, error) {
	if issued == nil {
		return nil, errors.New("cmc: no issued certificate")
	}
	id, err := responseBodyPartID(bodyPartID)
	if err != nil {
		return nil, err
	}
	certs := []*x509.Certificate{issued}
	add := func(c *x509.Certificate) {
		if c != nil && !slices.ContainsFunc(certs, c.Equal) {
			certs = append(certs, c)
		}
	}
	for _, c := range chain {
		add(c)
	}
	if signer == nil {
		return cms.NewSignedData(cms.SignOptions{Content: []byte{}, Certificates: certs})
	}
	if signerCert == nil {
		return nil, errors.New("cmc: a signer needs its certificate")
	}
	add(signerCert)
	status, err := asn1.Marshal(cmcStatusInfo{Status: statusSuccess, BodyList: []int64{id}})
	if err != nil {
		return nil, err
	}
	var extra [][]byte
	if keyHash != nil {
		ctrl, err := archivalControl(issued, id, keyHash)
		if err != nil {
			return nil, err
		}
		extra = append(extra, ctrl)
	}
	content, err := pkiResponseWithStatus(status, extra...)
	if err != nil {
		return nil, err
	}
	return cms.NewSignedData(cms.SignOptions{ContentType: oidPKIResponse, Content: content, Certificates: certs,
		Signer: signer, SignerCert: signerCert})
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
	return cms.NewSignedData(cms.SignOptions{ContentType: oidPKIResponse, Content: content})
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

// pkiResponseWithStatus is a PKIResponse whose first control (bodyPartID 1) is status, followed
// by the extra controls (DER TaggedAttributes).
func pkiResponseWithStatus(status []byte, extra ...[]byte) ([]byte, error) {
	values, err := asn1.Marshal(asn1.RawValue{Class: asn1.ClassUniversal, Tag: asn1.TagSet, IsCompound: true, Bytes: status})
	if err != nil {
		return nil, err
	}
	ctrl, err := asn1.Marshal(taggedAttribute{BodyPartID: 1, Type: oidCMCStatusInfo, Values: asn1.RawValue{FullBytes: values}})
	if err != nil {
		return nil, err
	}
	controls := []asn1.RawValue{{FullBytes: ctrl}}
	for _, e := range extra {
		controls = append(controls, asn1.RawValue{FullBytes: e})
	}
	return asn1.Marshal(pkiResponse{Controls: controls, CMS: []asn1.RawValue{}, OtherMsgs: []asn1.RawValue{}})
}

// archivalControl is the CmcAddAttributes control (bodyPartID 2) of an archival response for the
// request bodyPartID: szOID_ISSUED_CERT_HASH and szOID_ENCRYPTED_KEY_HASH.
func archivalControl(issued *x509.Certificate, bodyPartID int64, keyHash []byte) ([]byte, error) {
	certHash := sha1.Sum(issued.Raw)
	c, err1 := asn1.Marshal(certHash[:])
	k, err2 := asn1.Marshal(keyHash)
	if err := errors.Join(err1, err2); err != nil {
		return nil, err
	}
	// 1.3.6.1.4.1.311.21.17 sorts before .21.21.
	return addAttributesControl(2, bodyPartID, cms.Attribute{Type: oidIssuedCertHash, Values: [][]byte{c}},
		cms.Attribute{Type: oidEncryptedKeyHash, Values: [][]byte{k}})
}
