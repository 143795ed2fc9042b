package cmc

import (
	"bytes"
	"crypto/x509/pkix"
	"encoding/asn1"
	"math/big"
	"slices"
	"testing"

	"github.com/enrollment-appliance/aeappliance/proto/cms"
)

// The tests' own encoding of CMS (RFC 5652) with encoding/asn1, independent of package cms: to craft requests
// the package must refuse, and to read its responses without trusting the code that wrote them.

var (
	oidData            = cms.OIDData
	oidSignedData      = cms.OIDSignedData
	oidContentType     = cms.OIDContentType
	oidMessageDigest   = cms.OIDMessageDigest
	oidSHA1            = asn1.ObjectIdentifier{1, 3, 14, 3, 2, 26}
	oidSHA256          = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 2, 1}
	oidRSAEncryption   = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 1}
	oidECDSAWithSHA1   = asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 1}
	oidECDSAWithSHA256 = asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 2}
)

type contentInfo struct {
	ContentType asn1.ObjectIdentifier
	Content     asn1.RawValue `asn1:"tag:0"`
}

type signedData struct {
	Version          int
	DigestAlgorithms asn1.RawValue
	EncapContentInfo struct {
		EContentType asn1.ObjectIdentifier
		EContent     asn1.RawValue `asn1:"optional,tag:0"`
	}
	Certificates asn1.RawValue `asn1:"optional,tag:0"`
	CRLs         asn1.RawValue `asn1:"optional,tag:1"`
	SignerInfos  asn1.RawValue
}

type signerInfo struct {
	Version            int
	SID                asn1.RawValue
	DigestAlgorithm    pkix.AlgorithmIdentifier
	SignedAttrs        asn1.RawValue `asn1:"optional,tag:0"`
	SignatureAlgorithm pkix.AlgorithmIdentifier
	Signature          []byte
	UnsignedAttrs      asn1.RawValue `asn1:"optional,tag:1"`
}

type issuerAndSerial struct {
	Issuer asn1.RawValue
	Serial *big.Int
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

func set(content []byte) asn1.RawValue {
	return asn1.RawValue{Class: asn1.ClassUniversal, Tag: asn1.TagSet, IsCompound: true, Bytes: content}
}

func tagged(tag int, content []byte) asn1.RawValue {
	return asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: tag, IsCompound: true, Bytes: content}
}

// signedAttributes returns the contents of the DER SET OF Attribute holding contentType and digest.
func signedAttributes(t testing.TB, eContentType asn1.ObjectIdentifier, digest []byte) []byte {
	var encoded [][]byte
	for _, a := range []struct {
		oid   asn1.ObjectIdentifier
		value any
	}{{oidContentType, eContentType}, {oidMessageDigest, digest}} {
		encoded = append(encoded, mustMarshal(t, struct {
			Type   asn1.ObjectIdentifier
			Values asn1.RawValue
		}{a.oid, set(mustMarshal(t, a.value))}))
	}
	slices.SortFunc(encoded, bytes.Compare)
	return bytes.Join(encoded, nil)
}
