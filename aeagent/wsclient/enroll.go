package wsclient

import (
	"bytes"
	"context"
	"crypto/rsa"
	"crypto/x509"
	"encoding/asn1"
	"encoding/base64"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/enrollment-appliance/aeappliance/proto/certutil"
	"github.com/enrollment-appliance/aeappliance/proto/cmc"
	"github.com/enrollment-appliance/aeappliance/proto/cms"
	"github.com/enrollment-appliance/aeappliance/proto/wstep"
)

// Result statuses.
const (
	StatusIssued  = "issued"
	StatusPending = "pending"
	StatusDenied  = "denied"
)

// Result is the answer to Issue or QueryTokenStatus.
type Result struct {
	Status    string // StatusIssued, StatusPending or StatusDenied
	RequestID int64  // the CA's request number (0 when a refusal recorded none)
	// Certificate is the issued certificate; Chain the other certificates of the reply's CMC or
	// PKCS#7 BinarySecurityToken (the issuing CA and what it chains to). Issued only.
	Certificate *x509.Certificate
	Chain       []*x509.Certificate
	// Disposition is the server's DispositionMessage ("Issued", "Taken Under Submission").
	Disposition string
	// ReferenceURI, for a pending request, is the endpoint to come back to with QueryTokenStatus.
	ReferenceURI string
	// Reason is the fault text of a denial; ErrorCode its HRESULT (CertificateEnrollmentWSDetail),
	// e.g. -2146877422 (0x80094012, CERTSRV_E_TEMPLATE_DENIED).
	Reason    string
	ErrorCode int32
	// EncryptedKeyHash is the szOID_ENCRYPTED_KEY_HASH of the reply's CMC full response: the CA
	// saying which archived key it took (MS-WCCE 3.2.1.4.2.1.4.8.2). Nil when it names none.
	EncryptedKeyHash []byte
}

// Issue sends token, a DER PKCS#10, CMC request or renewal (PKCS#7 signed with the old key, see
// cmc.SignRenewal), to the enrollment service at cesURL. context becomes the request's
// AdditionalContext (e.g. "CertificateTemplate"); it may be nil. An issued certificate must be
// for the public key of the token's request, or Issue fails.
func (c *Client) Issue(ctx context.Context, cesURL string, token []byte, context map[string]string) (*Result, error) {
	req, err := cmc.ParseRequest(token)
	if err != nil {
		return nil, fmt.Errorf("wsclient: the token to send is not a request the service can read: %w", err)
	}
	valueType := wstep.ValueTypePKCS7
	if req.Kind == cmc.PKCS10 {
		valueType = wstep.ValueTypePKCS10
	}
	res, err := c.rst(ctx, cesURL, issueBody(token, valueType, context))
	if err != nil {
		return nil, err
	}
	if res.Status == StatusIssued && req.CertificateRequest != nil && !certutil.PublicKeysEqual(res.Certificate.PublicKey, req.CertificateRequest.PublicKey) {
		return nil, fmt.Errorf("wsclient: %s issued certificate %x for another public key than the request's", cesURL, res.Certificate.SerialNumber)
	}
	return res, nil
}

// QueryTokenStatus asks the enrollment service at cesURL about pending request requestID:
// issued, still pending, or denied.
func (c *Client) QueryTokenStatus(ctx context.Context, cesURL string, requestID int64) (*Result, error) {
	if requestID <= 0 {
		return nil, fmt.Errorf("wsclient: request ID %d is not a positive number", requestID)
	}
	return c.rst(ctx, cesURL, queryBody(requestID))
}

// KeyExchangeCertificate asks the enrollment service at cesURL for the CA exchange certificate
// (MS-WSTEP Key Exchange Token), which a client encrypts the private key it archives to. It
// must be issued by ca (the CA the client enrolls with), be valid now, and carry the CA Exchange
// extended key usage and keyEncipherment with an RSA key; anything else is an error.
func (c *Client) KeyExchangeCertificate(ctx context.Context, cesURL string, ca *x509.Certificate) (*x509.Certificate, error) {
	body := []byte(`<RequestSecurityToken xmlns="` + wstep.NSTrust + `"><TokenType>` + wstep.TokenTypeX509v3 + `</TokenType>` +
		`<RequestType>` + wstep.RequestTypeKET + `</RequestType><RequestKET/></RequestSecurityToken>`)
	r, err := c.call(ctx, cesURL, wstep.KETAction, body)
	if err != nil {
		return nil, err
	}
	if r.Body.Fault != nil {
		return nil, fmt.Errorf("wsclient: %s: no key exchange certificate: %s", cesURL, r.Body.Fault.reason())
	}
	if r.Body.RSTRC == nil || len(r.Body.RSTRC.RSTR) != 1 || r.Body.RSTRC.RSTR[0].Requested.KET == nil {
		return nil, fmt.Errorf("wsclient: %s: the reply carries no key exchange token", cesURL)
	}
	der, err := r.Body.RSTRC.RSTR[0].Requested.KET.decode()
	if err != nil {
		return nil, fmt.Errorf("wsclient: %s: key exchange token: %w", cesURL, err)
	}
	x, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("wsclient: %s: key exchange token: %w", cesURL, err)
	}
	now := c.now()
	_, isRSA := x.PublicKey.(*rsa.PublicKey)
	switch {
	case ca == nil || x.CheckSignatureFrom(ca) != nil:
		return nil, fmt.Errorf("wsclient: %s: the exchange certificate %s is not issued by the CA", cesURL, x.Subject)
	case now.Before(x.NotBefore) || now.After(x.NotAfter):
		return nil, fmt.Errorf("wsclient: %s: the exchange certificate is not valid now (%s to %s)", cesURL, x.NotBefore, x.NotAfter)
	case !isRSA || x.KeyUsage&x509.KeyUsageKeyEncipherment == 0 || !slices.ContainsFunc(x.UnknownExtKeyUsage, func(o asn1.ObjectIdentifier) bool {
		return o.Equal(oidCAExchange)
	}):
		return nil, fmt.Errorf("wsclient: %s: %s is not a CA exchange certificate (RSA, keyEncipherment, EKU %s)", cesURL, x.Subject, oidCAExchange)
	}
	return x, nil
}

// oidCAExchange is szOID_KP_CA_EXCHANGE.
var oidCAExchange = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 311, 21, 5}

// Namespace of AdditionalContext (WS-Federation authorization, MS-WSTEP 2.2.4.5).
const nsAuthorization = "http://docs.oasis-open.org/wsfed/authorization/200706"

// issueBody is the RequestSecurityToken of an Issue, as cepces sends it.
func issueBody(token []byte, valueType string, context map[string]string) []byte {
	var b bytes.Buffer
	b.WriteString(`<RequestSecurityToken xmlns="` + wstep.NSTrust + `"><TokenType>` + wstep.TokenTypeX509v3 + `</TokenType>`)
	b.WriteString(`<RequestType>` + wstep.RequestTypeIssue + `</RequestType>`)
	b.WriteString(`<BinarySecurityToken xmlns="` + wstep.NSSecExt + `" ValueType="` + valueType + `" EncodingType="` + wstep.EncodingTypeBase64 + `">`)
	b.WriteString(base64.StdEncoding.EncodeToString(token))
	b.WriteString(`</BinarySecurityToken>`)
	if len(context) > 0 {
		names := make([]string, 0, len(context))
		for k := range context {
			names = append(names, k)
		}
		sort.Strings(names)
		b.WriteString(`<AdditionalContext xmlns="` + nsAuthorization + `">`)
		for _, k := range names {
			b.WriteString(`<ContextItem Name="`)
			escape(&b, k)
			b.WriteString(`"><Value>`)
			escape(&b, context[k])
			b.WriteString(`</Value></ContextItem>`)
		}
		b.WriteString(`</AdditionalContext>`)
	}
	b.WriteString(`</RequestSecurityToken>`)
	return b.Bytes()
}

// queryBody is the RequestSecurityToken of a QueryTokenStatus.
func queryBody(requestID int64) []byte {
	return []byte(`<RequestSecurityToken xmlns="` + wstep.NSTrust + `"><TokenType>` + wstep.TokenTypeX509v3 + `</TokenType>` +
		`<RequestType>` + wstep.RequestTypeQueryTokenStatus + `</RequestType>` +
		`<RequestID xmlns="` + wstep.NSEnrollment + `">` + strconv.FormatInt(requestID, 10) + `</RequestID></RequestSecurityToken>`)
}

// rst sends a RequestSecurityToken and reads the answer.
func (c *Client) rst(ctx context.Context, cesURL string, body []byte) (*Result, error) {
	r, err := c.call(ctx, cesURL, wstep.IssueAction, body)
	if err != nil {
		return nil, err
	}
	res, err := r.result()
	if err != nil {
		return nil, fmt.Errorf("wsclient: %s: %w", cesURL, err)
	}
	return res, nil
}

// rstrcXML is RequestSecurityTokenResponseCollection, by local names.
type rstrcXML struct {
	RSTR []struct {
		Disposition string `xml:"DispositionMessage"`
		Token       *bst   `xml:"BinarySecurityToken"`
		Requested   struct {
			Token     *bst `xml:"BinarySecurityToken"`
			Reference struct {
				URI string `xml:"URI,attr"`
			} `xml:"SecurityTokenReference>Reference"`
			// KET is the CA exchange certificate of a Key Exchange Token reply (MS-WSTEP 4.1.2.2).
			KET *bst `xml:"KeyExchangeToken>BinarySecurityToken"`
		} `xml:"RequestedSecurityToken"`
		RequestID string `xml:"RequestID"`
	} `xml:"RequestSecurityTokenResponse"`
}

type bst struct {
	ValueType string `xml:"ValueType,attr"`
	Value     string `xml:",chardata"`
}

func (t *bst) decode() ([]byte, error) {
	if t == nil {
		return nil, nil
	}
	return base64.StdEncoding.DecodeString(strings.Join(strings.Fields(t.Value), ""))
}

// result reads a WSTEP reply: a collection with one response, or a refusal fault.
func (r *response) result() (*Result, error) {
	if f := r.Body.Fault; f != nil {
		res := &Result{Status: StatusDenied, Reason: f.reason()}
		if ws := f.Detail.WS; ws != nil {
			res.ErrorCode, res.RequestID = ws.errorCode(), ws.requestID()
		}
		return res, nil
	}
	if r.Body.RSTRC == nil || len(r.Body.RSTRC.RSTR) != 1 {
		return nil, errors.New("the reply holds no single RequestSecurityTokenResponse")
	}
	x := r.Body.RSTRC.RSTR[0]
	res := &Result{Disposition: strings.TrimSpace(x.Disposition)}
	if s := strings.TrimSpace(x.RequestID); s != "" {
		id, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("RequestID %q is not a number", s)
		}
		res.RequestID = id
	}
	leafDER, err := x.Requested.Token.decode()
	if err != nil {
		return nil, fmt.Errorf("RequestedSecurityToken is not base64: %v", err)
	}
	p7, err := x.Token.decode()
	if err != nil {
		return nil, fmt.Errorf("BinarySecurityToken is not base64: %v", err)
	}
	var certs []*x509.Certificate
	if len(p7) > 0 {
		if certs, err = pkcs7Certificates(p7); err != nil {
			return nil, fmt.Errorf("BinarySecurityToken: %v", err)
		}
		if res.EncryptedKeyHash, err = cmc.ResponseKeyHash(p7); err != nil {
			return nil, fmt.Errorf("BinarySecurityToken: %v", err)
		}
	}
	switch {
	case len(leafDER) > 0:
		if res.Certificate, err = x509.ParseCertificate(leafDER); err != nil {
			return nil, fmt.Errorf("issued certificate: %v", err)
		}
	case len(certs) > 0:
		res.Certificate = leafOf(certs)
	default:
		if res.RequestID <= 0 {
			return nil, errors.New("the reply holds neither a certificate nor a RequestID")
		}
		res.Status, res.ReferenceURI = StatusPending, normalizeURL(x.Requested.Reference.URI)
		return res, nil
	}
	res.Status = StatusIssued
	for _, c := range certs {
		if !bytes.Equal(c.Raw, res.Certificate.Raw) {
			res.Chain = append(res.Chain, c)
		}
	}
	return res, nil
}

// leafOf picks the end-entity certificate of a reply without a bare leaf: the first that issued
// none of the others.
func leafOf(certs []*x509.Certificate) *x509.Certificate {
	for _, c := range certs {
		issuer := false
		for _, o := range certs {
			if o != c && bytes.Equal(o.RawIssuer, c.RawSubject) {
				issuer = true
			}
		}
		if !issuer {
			return c
		}
	}
	return certs[0]
}

// pkcs7Certificates reads the certificates of a CMS SignedData ContentInfo (a CMC Full or Simple
// PKI Response) with package cms. The signature, if any, is not checked: the client trusts the TLS
// channel and checks the issued certificate itself.
func pkcs7Certificates(der []byte) ([]*x509.Certificate, error) {
	sd, err := cms.ParseSignedData(der)
	if err != nil {
		return nil, err
	}
	if len(sd.Certificates) == 0 {
		return nil, errors.New("SignedData holds no certificates")
	}
	return sd.Certificates, nil
}

// normalizeURL writes a URL in its escaped form: servers may write the reference of a pending
// request with its path unescaped (a CA name with spaces), which is then not the URL the policy
// advertised. A URL that does not parse is returned trimmed, as sent.
func normalizeURL(s string) string {
	s = strings.TrimSpace(s)
	u, err := url.Parse(s)
	if err != nil {
		return s
	}
	return u.String()
}
