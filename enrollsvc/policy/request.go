package policy

import (
	"crypto"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
)

// Request is a parsed PKCS#10 request: what the client asks for. Policy decides what of it,
// if anything, reaches the certificate.
type Request struct {
	CSR       *x509.CertificateRequest // nil when the request was built by hand (tests, tools)
	PublicKey crypto.PublicKey

	Subject            pkix.RDNSequence // the requested subject (often empty from Windows clients)
	SANs               []GeneralName    // every requested subjectAltName entry
	SID                string           // SID text in a requested SID extension (1.3.6.1.4.1.311.25.2)
	HasSIDExtension    bool
	EKUs               []asn1.ObjectIdentifier
	BasicConstraintsCA bool
	Extensions         []pkix.Extension // every requested extension, raw

	// The template the request names, from the v2 template extension (OID and revision), the
	// v1 template-name extension, or the CertificateTemplate name-value pair attribute.
	TemplateName  string
	TemplateOID   asn1.ObjectIdentifier
	TemplateMajor int
	TemplateMinor int

	// ClientID is the RequestClientInfo client id (1.3.6.1.4.1.311.21.20), -1 when absent.
	ClientID int
	// Autoenroll is true when the client says it is the autoenrollment engine (client id 2 or 6).
	Autoenroll bool
}

// OIDs of request extensions and attributes.
var (
	oidExtSAN            = asn1.ObjectIdentifier{2, 5, 29, 17}
	oidExtBasicConstr    = asn1.ObjectIdentifier{2, 5, 29, 19}
	oidExtKeyUsage       = asn1.ObjectIdentifier{2, 5, 29, 15}
	oidExtEKU            = asn1.ObjectIdentifier{2, 5, 29, 37}
	oidExtCertPolicies   = asn1.ObjectIdentifier{2, 5, 29, 32}
	oidExtSKI            = asn1.ObjectIdentifier{2, 5, 29, 14}
	oidExtAKI            = asn1.ObjectIdentifier{2, 5, 29, 35}
	oidExtCDP            = asn1.ObjectIdentifier{2, 5, 29, 31}
	oidExtAIA            = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 1, 1}
	oidExtSID            = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 311, 25, 2}
	oidExtTemplateV2     = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 311, 21, 7}
	oidExtTemplateV1     = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 311, 20, 2}
	oidExtAppPolicies    = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 311, 21, 10}
	oidExtOCSPNoCheck    = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 48, 1, 5}
	oidAttrNameValuePair = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 311, 13, 2, 1}
	oidAttrClientInfo    = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 311, 21, 20}
)

// maxRequestSize bounds what ParseRequest reads; Windows requests are a few KiB.
const maxRequestSize = 64 << 10

// ParseRequest parses a DER PKCS#10 request, checks its signature (proof of possession) and
// extracts what it asks for.
func ParseRequest(csrDER []byte) (Request, error) {
	if len(csrDER) > maxRequestSize {
		return Request{}, fmt.Errorf("policy: request of %d bytes is too large", len(csrDER))
	}
	csr, err := x509.ParseCertificateRequest(csrDER)
	if err != nil {
		return Request{}, fmt.Errorf("policy: parsing request: %w", err)
	}
	if err := csr.CheckSignature(); err != nil {
		return Request{}, fmt.Errorf("policy: request signature does not verify: %w", err)
	}
	r := Request{CSR: csr, PublicKey: csr.PublicKey, Extensions: csr.Extensions, ClientID: -1}
	if rest, err := asn1.Unmarshal(csr.RawSubject, &r.Subject); err != nil || len(rest) > 0 {
		return Request{}, errors.New("policy: request subject does not parse")
	}
	seen := map[string]bool{}
	for _, e := range csr.Extensions {
		if seen[e.Id.String()] {
			return Request{}, fmt.Errorf("policy: request repeats extension %s", e.Id)
		}
		seen[e.Id.String()] = true
		if err := r.readExtension(e); err != nil {
			return Request{}, fmt.Errorf("policy: request extension %s: %w", e.Id, err)
		}
	}
	if err := r.readAttributes(csr.RawTBSCertificateRequest); err != nil {
		return Request{}, fmt.Errorf("policy: request attributes: %w", err)
	}
	return r, nil
}

func (r *Request) readExtension(e pkix.Extension) error {
	switch {
	case e.Id.Equal(oidExtSAN):
		names, err := parseGeneralNames(e.Value)
		if err != nil {
			return err
		}
		r.SANs = names
	case e.Id.Equal(oidExtSID):
		names, err := parseGeneralNames(e.Value)
		if err != nil {
			return err
		}
		r.HasSIDExtension = true
		for _, n := range names {
			if n.Kind == "SID" {
				r.SID = n.Value
			}
		}
	case e.Id.Equal(oidExtEKU):
		if rest, err := asn1.Unmarshal(e.Value, &r.EKUs); err != nil || len(rest) > 0 {
			return errors.New("bad extended key usage")
		}
	case e.Id.Equal(oidExtBasicConstr):
		var bc struct {
			IsCA       bool `asn1:"optional"`
			MaxPathLen int  `asn1:"optional,default:-1"`
		}
		if rest, err := asn1.Unmarshal(e.Value, &bc); err != nil || len(rest) > 0 {
			return errors.New("bad basic constraints")
		}
		r.BasicConstraintsCA = bc.IsCA
	case e.Id.Equal(oidExtTemplateV2):
		var tmpl struct {
			OID   asn1.ObjectIdentifier
			Major int `asn1:"optional"`
			Minor int `asn1:"optional"`
		}
		if rest, err := asn1.Unmarshal(e.Value, &tmpl); err != nil || len(rest) > 0 {
			return errors.New("bad certificate template information")
		}
		r.TemplateOID, r.TemplateMajor, r.TemplateMinor = tmpl.OID, tmpl.Major, tmpl.Minor
	case e.Id.Equal(oidExtTemplateV1):
		name, err := decodeDirectoryString(e.Value)
		if err != nil {
			return err
		}
		return r.setTemplateName(name)
	}
	return nil
}

func (r *Request) setTemplateName(name string) error {
	name = strings.TrimSpace(name)
	if name == "" {
		return nil
	}
	if r.TemplateName != "" && !strings.EqualFold(r.TemplateName, name) {
		return fmt.Errorf("names two templates, %q and %q", r.TemplateName, name)
	}
	r.TemplateName = name
	return nil
}

// decodeDirectoryString reads a BMPString or UTF8String (the v1 template name).
func decodeDirectoryString(der []byte) (string, error) {
	var v asn1.RawValue
	if rest, err := asn1.Unmarshal(der, &v); err != nil || len(rest) > 0 || v.Class != asn1.ClassUniversal {
		return "", errors.New("not a string")
	}
	switch v.Tag {
	case asn1.TagBMPString:
		return decodeBMP(v.Bytes)
	case asn1.TagUTF8String, asn1.TagPrintableString, asn1.TagIA5String:
		if !utf8.Valid(v.Bytes) {
			return "", errors.New("not UTF-8")
		}
		return string(v.Bytes), nil
	}
	return "", fmt.Errorf("string of tag %d, want BMPString or UTF8String", v.Tag)
}

// readAttributes reads the attributes of the CertificationRequestInfo that Go's parser does
// not expose: the enrollment name-value pairs and the client information.
func (r *Request) readAttributes(tbsDER []byte) error {
	var tbs struct {
		Version       int
		Subject       asn1.RawValue
		PublicKey     asn1.RawValue
		RawAttributes []asn1.RawValue `asn1:"tag:0"`
	}
	if _, err := asn1.Unmarshal(tbsDER, &tbs); err != nil {
		return err
	}
	for _, raw := range tbs.RawAttributes {
		var attr struct {
			Type   asn1.ObjectIdentifier
			Values []asn1.RawValue `asn1:"set"`
		}
		if rest, err := asn1.Unmarshal(raw.FullBytes, &attr); err != nil || len(rest) > 0 {
			return errors.New("bad attribute")
		}
		for _, v := range attr.Values {
			switch {
			case attr.Type.Equal(oidAttrNameValuePair):
				var pair struct{ Name, Value asn1.RawValue }
				if rest, err := asn1.Unmarshal(v.FullBytes, &pair); err != nil || len(rest) > 0 {
					return errors.New("bad enrollment name-value pair")
				}
				name, err1 := decodeDirectoryString(pair.Name.FullBytes)
				value, err2 := decodeDirectoryString(pair.Value.FullBytes)
				if err1 != nil || err2 != nil {
					return errors.New("bad enrollment name-value pair")
				}
				if strings.EqualFold(name, "CertificateTemplate") {
					if err := r.setTemplateName(value); err != nil {
						return err
					}
				}
			case attr.Type.Equal(oidAttrClientInfo):
				// SEQUENCE { INTEGER clientId, then machine, user and process names }
				var seq asn1.RawValue
				var id int
				if _, err := asn1.Unmarshal(v.FullBytes, &seq); err != nil || seq.Tag != asn1.TagSequence {
					return errors.New("bad client information")
				}
				if _, err := asn1.Unmarshal(seq.Bytes, &id); err != nil {
					return errors.New("bad client information")
				}
				r.ClientID = id
				r.Autoenroll = id == 2 || id == 6 // ClientIdAutoEnroll2003, ClientIdAutoEnroll
			}
		}
	}
	return nil
}

// CertificateSID returns the SID in a certificate's SID security extension (KB5014754,
// 1.3.6.1.4.1.311.25.2), and whether it has one.
func CertificateSID(c *x509.Certificate) (string, bool, error) {
	for _, e := range c.Extensions {
		if !e.Id.Equal(oidExtSID) {
			continue
		}
		names, err := parseGeneralNames(e.Value)
		if err != nil {
			return "", true, fmt.Errorf("the SID extension: %w", err)
		}
		for _, n := range names {
			if n.Kind == "SID" {
				return n.Value, true, nil
			}
		}
		return "", true, errors.New("the SID extension holds no SID")
	}
	return "", false, nil
}
