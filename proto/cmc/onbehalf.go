package cmc

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"fmt"
	"slices"
	"strings"
	"unicode/utf16"

	"github.com/enrollment-appliance/aeappliance/proto/cms"
)

// SignOnBehalf builds a request an enrollment agent makes for another account (MS-WCCE enroll on
// behalf of), as Windows' CMC requests do: a CMC PKIData holding csr (the target's PKCS#10,
// bodyPartID 1) and a CmcAddAttributes control (bodyPartID 2) with the name-value pairs
// "RequesterName" = requester (the target, e.g. CORP\alice) and those in extra, signed by the
// agent's key as agentCert (named by issuer and serial number, and included).
func SignOnBehalf(csr []byte, requester string, extra map[string]string, agentCert *x509.Certificate, agentKey crypto.Signer) ([]byte, error) {
	if _, err := x509.ParseCertificateRequest(csr); err != nil {
		return nil, fmt.Errorf("cmc: the request to sign on behalf of %s: %w", requester, err)
	}
	if strings.TrimSpace(requester) == "" || agentCert == nil || agentKey == nil {
		return nil, errors.New("cmc: a request on behalf of another account needs the requester, the agent's certificate and its key")
	}
	pairs := []cms.Attribute{}
	add := func(name, value string) error {
		v, err := NameValuePair(name, value)
		if err != nil {
			return err
		}
		pairs = append(pairs, cms.Attribute{Type: oidNameValuePair, Values: [][]byte{v}})
		return nil
	}
	if err := add(requesterNameAttr, requester); err != nil {
		return nil, err
	}
	for k, v := range extra {
		if strings.EqualFold(k, requesterNameAttr) {
			return nil, errors.New("cmc: RequesterName is given once, as the requester")
		}
		if err := add(k, v); err != nil {
			return nil, err
		}
	}
	// All pairs are values of one attribute, sorted as a DER SET OF.
	values := make([][]byte, len(pairs))
	for i, p := range pairs {
		values[i] = p.Values[0]
	}
	sortDER(values)
	ctrl, err := addAttributesControl(2, 1, cms.Attribute{Type: oidNameValuePair, Values: values})
	if err != nil {
		return nil, err
	}
	pd, err := newPKIData(csr, ctrl)
	if err != nil {
		return nil, err
	}
	return cms.NewSignedData(cms.SignOptions{ContentType: oidPKIData, Content: pd, Certificates: []*x509.Certificate{agentCert},
		Signer: agentKey, SignerCert: agentCert})
}

// NameValuePair is the DER EnrollmentNameValuePair SEQUENCE { name BMPString, value BMPString }
// (MS-WCCE 2.2.2.7.10, szOID_ENROLLMENT_NAME_VALUE_PAIR).
func NameValuePair(name, value string) ([]byte, error) {
	if name == "" {
		return nil, errors.New("cmc: a name-value pair needs a name")
	}
	bmp := func(s string) asn1.RawValue {
		u := utf16.Encode([]rune(s))
		b := make([]byte, 0, 2*len(u))
		for _, c := range u {
			b = append(b, byte(c>>8), byte(c))
		}
		return asn1.RawValue{Class: asn1.ClassUniversal, Tag: asn1.TagBMPString, Bytes: b}
	}
	return asn1.Marshal(struct{ Name, Value asn1.RawValue }{bmp(name), bmp(value)})
}

// newPKIData is a PKIData holding csr as its one TaggedRequest (bodyPartID 1) and the given controls.
func newPKIData(csr []byte, controls ...[]byte) ([]byte, error) {
	id, err := asn1.Marshal(int64(1))
	if err != nil {
		return nil, err
	}
	tcr, err := asn1.Marshal(asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 0, IsCompound: true, Bytes: append(id, csr...)})
	if err != nil {
		return nil, err
	}
	ctrls := make([]asn1.RawValue, len(controls))
	for i, c := range controls {
		ctrls[i] = asn1.RawValue{FullBytes: c}
	}
	return asn1.Marshal(struct{ Controls, Requests, CMS, OtherMsgs []asn1.RawValue }{
		ctrls, []asn1.RawValue{{FullBytes: tcr}}, []asn1.RawValue{}, []asn1.RawValue{}})
}

// sortDER orders the DER values of a SET OF by their encodings (X.690 11.6).
func sortDER(vs [][]byte) { slices.SortFunc(vs, bytes.Compare) }
