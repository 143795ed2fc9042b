package cmc

import (
	"bytes"
	"encoding/asn1"
	"errors"
	"fmt"
	"reflect"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/enrollment-appliance/aeappliance/proto/cms"
)

// Object identifiers used by this package.
var (
	oidPKIData     = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 12, 2}
	oidPKIResponse = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 12, 3}

	// CMC controls (RFC 5272 section 6, id-cmc = 1.3.6.1.5.5.7.7).
	oidCMCStatusInfo     = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 7, 1}
	oidCMCIdentification = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 7, 2}
	oidCMCTransactionID  = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 7, 5}
	oidCMCSenderNonce    = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 7, 6}
	oidCMCRegInfo        = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 7, 18}
	// szOID_CMC_ADD_ATTRIBUTES: Windows' CmcAddAttributes control (request attributes for a body part).
	oidCMCAddAttributes = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 311, 10, 10, 1}

	// Request attributes (MS-WCCE 2.2.2.7).
	oidRenewalCertificate = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 311, 13, 1}
	oidNameValuePair      = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 311, 13, 2, 1}
)

// CMCFailInfo values (RFC 5272 section 6.1.4) used in errors and failure responses.
const (
	FailBadAlg          = 0
	FailBadMessageCheck = 1
	FailBadRequest      = 2
	FailBadTime         = 3
	FailBadCertID       = 4
	FailUnsupportedExt  = 5
	FailBadIdentity     = 7
	FailPOPFailed       = 9
	FailInternalCAError = 11
	FailTryLater        = 12
)

// Error is what ParseRequest returns for a request it refuses: FailInfo is the CMCFailInfo a CMC failure
// response would carry (FailBadRequest for malformed or unsupported structure, FailBadMessageCheck for a
// signature or digest that does not verify, FailBadAlg for an algorithm we do not accept).
type Error struct {
	FailInfo int
	Msg      string
}

func (e *Error) Error() string { return "cmc: " + e.Msg }

func errf(failInfo int, format string, args ...any) error {
	return &Error{FailInfo: failInfo, Msg: fmt.Sprintf(format, args...)}
}

func badRequest(format string, args ...any) error { return errf(FailBadRequest, format, args...) }

// FailInfoOf returns the CMCFailInfo carried by err (an *Error, or a *cms.Error, whose kinds are CMCFailInfo
// values), or FailBadRequest.
func FailInfoOf(err error) int {
	var e *Error
	var c *cms.Error
	switch {
	case errors.As(err, &e):
		return e.FailInfo
	case errors.As(err, &c):
		return int(c.Kind)
	}
	return FailBadRequest
}

// derUnmarshal parses b into v and insists on DER: no trailing bytes, and nothing in b that encoding/asn1
// would skip (it accepts extra elements at the end of a SEQUENCE). The check re-encodes v and compares, so v
// must only hold types that re-encode exactly: integers, OIDs, []byte, untagged or IMPLICIT-tagged RawValues,
// pkix.AlgorithmIdentifier. SETs are kept as RawValues so that their order is never rewritten.
func derUnmarshal(b []byte, v any, what string) error {
	rest, err := asn1.Unmarshal(b, v)
	if err != nil {
		return badRequest("%s: %v", what, err)
	}
	if len(rest) != 0 {
		return badRequest("%s: %d bytes of trailing data", what, len(rest))
	}
	again, err := asn1.Marshal(reflect.ValueOf(v).Elem().Interface())
	if err != nil || !bytes.Equal(again, b) {
		return badRequest("%s: not DER (unexpected or non-canonical fields)", what)
	}
	return nil
}

// elements splits the contents of a constructed value (a SEQUENCE OF or SET OF) into its elements.
func elements(content []byte, what string) ([]asn1.RawValue, error) {
	var out []asn1.RawValue
	for len(content) > 0 {
		var v asn1.RawValue
		rest, err := asn1.Unmarshal(content, &v)
		if err != nil {
			return nil, badRequest("%s: %v", what, err)
		}
		out = append(out, v)
		content = rest
	}
	return out, nil
}

// isUniversal reports whether v is a universal-class value with the given tag and constructedness.
func isUniversal(v asn1.RawValue, tag int, compound bool) bool {
	return v.Class == asn1.ClassUniversal && v.Tag == tag && v.IsCompound == compound
}

// decodeString decodes the string types Windows and other clients use in name-value pairs.
func decodeString(v asn1.RawValue) (string, error) {
	if v.Class != asn1.ClassUniversal || v.IsCompound {
		return "", errors.New("not a string")
	}
	switch v.Tag {
	case asn1.TagBMPString:
		if len(v.Bytes)%2 != 0 {
			return "", errors.New("odd-length BMPString")
		}
		u := make([]uint16, len(v.Bytes)/2)
		for i := range u {
			u[i] = uint16(v.Bytes[2*i])<<8 | uint16(v.Bytes[2*i+1])
		}
		// A trailing NUL is common in Windows BMPStrings; drop it.
		if n := len(u); n > 0 && u[n-1] == 0 {
			u = u[:n-1]
		}
		return string(utf16.Decode(u)), nil
	case asn1.TagUTF8String, asn1.TagPrintableString, asn1.TagIA5String:
		if !utf8.Valid(v.Bytes) {
			return "", errors.New("invalid UTF-8")
		}
		return string(v.Bytes), nil
	}
	return "", fmt.Errorf("unsupported string tag %d", v.Tag)
}
