package agent

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf16"

	"github.com/enrollment-appliance/aeappliance/aeagent/wsclient"
)

// Template extensions of issued certificates and of requests (MS-WCCE 2.2.2.7.7).
var (
	oidTemplateV2 = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 311, 21, 7} // SEQUENCE { OID, major, minor }
	oidTemplateV1 = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 311, 20, 2} // BMPString name
)

// Key sizes the agent generates: at least the template's minimum, never less than 2048 bits.
const (
	minRSABits = 2048
	maxRSABits = 16384
)

// newKey makes a key for template t in this process; the private key never leaves the host.
// The policy server describes RSA templates (no algorithmOIDReference): the key is RSA of the
// template's minimal key length, or 2048 bits when it asks for less.
func newKey(t wsclient.Template) (crypto.Signer, error) {
	bits := max(t.MinimalKeySize, minRSABits)
	if bits > maxRSABits {
		return nil, fmt.Errorf("template %s asks for a %d-bit key, more than the %d bits the agent generates", t.Name, bits, maxRSABits)
	}
	k, err := rsa.GenerateKey(rand.Reader, bits)
	if err != nil {
		return nil, fmt.Errorf("generating a %d-bit RSA key: %w", bits, err)
	}
	return k, nil
}

// NewRequest is a PKCS#10 for key naming template t as Windows does: the template information
// extension (OID and revision) for schema 2 and later, the template name extension for schema 1.
// The subject is only a hint: the CA builds the real one from the directory.
func NewRequest(t wsclient.Template, key crypto.Signer, cn string) ([]byte, error) {
	var ext pkix.Extension
	if t.SchemaVersion >= 2 && t.OID != "" {
		oid, err := parseOID(t.OID)
		if err != nil {
			return nil, fmt.Errorf("template %s: OID %q: %w", t.Name, t.OID, err)
		}
		v, err := asn1.Marshal(struct {
			OID          asn1.ObjectIdentifier
			Major, Minor int
		}{oid, t.MajorRevision, t.MinorRevision})
		if err != nil {
			return nil, err
		}
		ext = pkix.Extension{Id: oidTemplateV2, Value: v}
	} else {
		u := utf16.Encode([]rune(t.Name))
		b := make([]byte, 0, 2*len(u))
		for _, c := range u {
			b = append(b, byte(c>>8), byte(c))
		}
		v, err := asn1.Marshal(asn1.RawValue{Class: asn1.ClassUniversal, Tag: asn1.TagBMPString, Bytes: b})
		if err != nil {
			return nil, err
		}
		ext = pkix.Extension{Id: oidTemplateV1, Value: v}
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject: pkix.Name{CommonName: cn}, ExtraExtensions: []pkix.Extension{ext}}, key)
	if err != nil {
		return nil, fmt.Errorf("building the request for %s: %w", t.Name, err)
	}
	return der, nil
}

func parseOID(s string) (asn1.ObjectIdentifier, error) {
	var oid asn1.ObjectIdentifier
	for _, p := range strings.Split(s, ".") {
		n, err := strconv.Atoi(p)
		if err != nil || n < 0 {
			return nil, errors.New("not a dotted OID")
		}
		oid = append(oid, n)
	}
	if len(oid) < 2 {
		return nil, errors.New("too short")
	}
	return oid, nil
}

// templateInfo reads the template a certificate was issued under: the OID and revision of the
// template information extension, or the name of the schema-1 template name extension.
func templateInfo(c *x509.Certificate) (oid, name string, major, minor int) {
	for _, e := range c.Extensions {
		switch {
		case e.Id.Equal(oidTemplateV2):
			var v struct {
				OID          asn1.ObjectIdentifier
				Major, Minor int `asn1:"optional"`
			}
			if rest, err := asn1.Unmarshal(e.Value, &v); err == nil && len(rest) == 0 {
				oid, major, minor = v.OID.String(), v.Major, v.Minor
			}
		case e.Id.Equal(oidTemplateV1):
			var raw asn1.RawValue
			if rest, err := asn1.Unmarshal(e.Value, &raw); err == nil && len(rest) == 0 {
				name = decodeName(raw)
			}
		}
	}
	return oid, name, major, minor
}

// decodeName reads a DirectoryString-like value: BMPString (what AD CS writes) or a byte string.
func decodeName(v asn1.RawValue) string {
	if v.Tag != asn1.TagBMPString {
		return string(v.Bytes)
	}
	if len(v.Bytes)%2 != 0 {
		return ""
	}
	u := make([]uint16, len(v.Bytes)/2)
	for i := range u {
		u[i] = uint16(v.Bytes[2*i])<<8 | uint16(v.Bytes[2*i+1])
	}
	return string(utf16.Decode(u))
}

// hasClientAuth reports whether c may authenticate a TLS client.
func hasClientAuth(c *x509.Certificate) bool {
	if len(c.ExtKeyUsage) == 0 && len(c.UnknownExtKeyUsage) == 0 {
		return true
	}
	for _, u := range c.ExtKeyUsage {
		if u == x509.ExtKeyUsageClientAuth || u == x509.ExtKeyUsageAny {
			return true
		}
	}
	return false
}
