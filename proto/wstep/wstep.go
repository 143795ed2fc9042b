// Package wstep reads and writes the messages of MS-WSTEP, the WS-Trust X.509v3 Token
// Enrollment Extensions that AD CS's CES role speaks: a RequestSecurityToken that carries a
// certificate request (Issue) or asks about a pending one (QueryTokenStatus), and the
// RequestSecurityTokenResponseCollection that answers it, issued or pending, or the
// CertificateEnrollmentWSDetail of a SOAP fault.
//
// ParseRequest reads the body of an envelope from soap.Parse and decodes the
// BinarySecurityToken; it does not look inside it (PKCS#10, CMC or PKCS#7 renewal: the caller
// decides by content, not by ValueType). Issued, Pending and FaultDetail write the reply bodies
// for soap.Reply and soap.Fault in the element order of ARCHITECTURE §6 and the replies cepces
// accepted (testdata).
package wstep

import (
	"bytes"
	"encoding/base64"
	"encoding/xml"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/enrollment-appliance/aeappliance/proto/soap"
)

// Namespaces.
const (
	NSTrust      = "http://docs.oasis-open.org/ws-sx/ws-trust/200512"
	NSEnrollment = "http://schemas.microsoft.com/windows/pki/2009/01/enrollment"
	NSSecExt     = soap.NSSecExt
)

// SOAP actions (MS-WSTEP 3.1.4.2; the response action is the one AD CS and MS-MDE use).
const (
	IssueAction         = "http://schemas.microsoft.com/windows/pki/2009/01/enrollment/RST/wstep"
	IssueResponseAction = "http://schemas.microsoft.com/windows/pki/2009/01/enrollment/RSTRC/wstep"
)

// RequestType values (MS-WSTEP 3.1.4.1.2.7) and the short names ParseRequest returns for them.
const (
	RequestTypeIssue            = "http://docs.oasis-open.org/ws-sx/ws-trust/200512/Issue"
	RequestTypeRenew            = "http://docs.oasis-open.org/ws-sx/ws-trust/200512/Renew"
	RequestTypeQueryTokenStatus = "http://schemas.microsoft.com/windows/pki/2009/01/enrollment/QueryTokenStatus"
	// RequestTypeKET is the Key Exchange Token request type of WS-Trust 1.3 section 10, which
	// MS-WSTEP 3.1.4.1.2.7 uses to ask for the CA exchange certificate (key archival).
	RequestTypeKET = "http://docs.oasis-open.org/ws-sx/ws-trust/200512/KET"
	// requestTypeKETMicrosoft is the same in Microsoft's namespace, which some clients send.
	requestTypeKETMicrosoft = "http://schemas.microsoft.com/windows/pki/2009/01/enrollment/KET"

	Issue            = "Issue"
	Renew            = "Renew"
	QueryTokenStatus = "QueryTokenStatus"
	KET              = "KET" // key exchange token: the CA's key archival certificate
)

var requestTypes = map[string]string{
	RequestTypeIssue:            Issue,
	RequestTypeRenew:            Renew,
	RequestTypeQueryTokenStatus: QueryTokenStatus,
	RequestTypeKET:              KET,
	requestTypeKETMicrosoft:     KET,
}

// The SOAP actions of a Key Exchange Token request and its answer (MS-WSTEP 3.1.4.2, 4.1.2).
const (
	KETAction      = "http://docs.oasis-open.org/ws-sx/ws-trust/200512/RST/KET"
	KETFinalAction = "http://docs.oasis-open.org/ws-sx/ws-trust/200512/RSTR/KETFinal"
)

// Token and value types of the replies.
const (
	TokenTypeX509v3    = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-x509-token-profile-1.0#X509v3"
	ValueTypePKCS7     = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd#PKCS7"
	ValueTypePKCS10    = "http://schemas.microsoft.com/windows/pki/2009/01/enrollment#PKCS10"
	EncodingTypeBase64 = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd#base64binary"
)

// ErrRequest is wrapped by every error of ParseRequest: the client sent a request this
// service cannot answer (a SOAP Sender fault).
var ErrRequest = errors.New("wstep: bad RequestSecurityToken")

// Request is a RequestSecurityToken.
type Request struct {
	RequestType string // Issue, Renew, QueryTokenStatus or KET
	// Token is the decoded BinarySecurityToken: a PKCS#10, a CMC request or a PKCS#7 renewal.
	// It is nil when the element is absent or empty, as in a QueryTokenStatus.
	Token                   []byte
	ValueType, EncodingType string            // as sent; informational
	RequestID               string            // the RequestID element (QueryTokenStatus), trimmed
	Context                 map[string]string // AdditionalContext ContextItem Name → Value, e.g. CertificateTemplate, ccm, rmd
}

// Limits on a request.
const maxContextItems = 64

type rst struct {
	XMLName     xml.Name
	RequestType []string `xml:"RequestType"`
	Token       []struct {
		ValueType    string `xml:"ValueType,attr"`
		EncodingType string `xml:"EncodingType,attr"`
		Value        string `xml:",chardata"`
	} `xml:"BinarySecurityToken"`
	RequestID         []string   `xml:"RequestID"`
	RequestKET        []struct{} `xml:"RequestKET"`
	AdditionalContext []struct {
		Items []struct {
			Name  string   `xml:"Name,attr"`
			Value []string `xml:"Value"`
		} `xml:"ContextItem"`
	} `xml:"AdditionalContext"`
}

// ParseRequest reads a RequestSecurityToken from env, which must carry IssueAction and a
// RequestSecurityToken body element in the WS-Trust 1.3 namespace. An Issue or Renew must carry
// a token and a QueryTokenStatus a RequestID; the token's base64 may contain white space.
func ParseRequest(env *soap.Envelope) (Request, error) {
	if env == nil {
		return Request{}, fmt.Errorf("%w: no envelope", ErrRequest)
	}
	if env.Action != IssueAction && env.Action != KETAction {
		return Request{}, fmt.Errorf("%w: SOAP action %q, want %q or %q", ErrRequest, env.Action, IssueAction, KETAction)
	}
	if env.BodyName != (xml.Name{Space: NSTrust, Local: "RequestSecurityToken"}) {
		return Request{}, fmt.Errorf("%w: body element <%s> in namespace %q, want <RequestSecurityToken> in %s", ErrRequest, env.BodyName.Local, env.BodyName.Space, NSTrust)
	}
	if len(env.Body) > soap.MaxBody {
		return Request{}, fmt.Errorf("%w: body too large", ErrRequest)
	}
	var m rst
	if err := xml.Unmarshal(env.Body, &m); err != nil {
		return Request{}, fmt.Errorf("%w: %v", ErrRequest, err)
	}
	if len(m.RequestType) != 1 {
		return Request{}, fmt.Errorf("%w: want one RequestType, got %d", ErrRequest, len(m.RequestType))
	}
	var r Request
	var ok bool
	if r.RequestType, ok = requestTypes[strings.TrimSpace(m.RequestType[0])]; !ok {
		return Request{}, fmt.Errorf("%w: unknown RequestType %q", ErrRequest, strings.TrimSpace(m.RequestType[0]))
	}
	switch len(m.Token) {
	case 0:
	case 1:
		t := m.Token[0]
		r.ValueType, r.EncodingType = strings.TrimSpace(t.ValueType), strings.TrimSpace(t.EncodingType)
		if r.EncodingType != "" && !strings.HasSuffix(strings.ToLower(r.EncodingType), "#base64binary") {
			return Request{}, fmt.Errorf("%w: BinarySecurityToken EncodingType %q, want base64binary", ErrRequest, r.EncodingType)
		}
		b64 := strings.Map(func(c rune) rune {
			if c == ' ' || c == '\t' || c == '\r' || c == '\n' {
				return -1
			}
			return c
		}, t.Value)
		if b64 != "" {
			der, err := base64.StdEncoding.DecodeString(b64)
			if err != nil {
				return Request{}, fmt.Errorf("%w: BinarySecurityToken is not base64: %v", ErrRequest, err)
			}
			r.Token = der
		}
	default:
		return Request{}, fmt.Errorf("%w: more than one BinarySecurityToken", ErrRequest)
	}
	switch len(m.RequestID) {
	case 0:
	case 1:
		r.RequestID = strings.TrimSpace(m.RequestID[0])
	default:
		return Request{}, fmt.Errorf("%w: more than one RequestID", ErrRequest)
	}
	switch len(m.AdditionalContext) {
	case 0:
	case 1:
		items := m.AdditionalContext[0].Items
		if len(items) > maxContextItems {
			return Request{}, fmt.Errorf("%w: more than %d ContextItems", ErrRequest, maxContextItems)
		}
		r.Context = make(map[string]string, len(items))
		for _, it := range items {
			name := strings.TrimSpace(it.Name)
			if name == "" || len(it.Value) > 1 {
				return Request{}, fmt.Errorf("%w: a ContextItem needs a Name and at most one Value", ErrRequest)
			}
			if _, dup := r.Context[name]; dup {
				// Two values for one name (two CertificateTemplate items, say) would make
				// the request ambiguous: refuse rather than pick one.
				return Request{}, fmt.Errorf("%w: ContextItem %q given twice", ErrRequest, name)
			}
			r.Context[name] = ""
			if len(it.Value) == 1 {
				r.Context[name] = strings.TrimSpace(it.Value[0])
			}
		}
	default:
		return Request{}, fmt.Errorf("%w: more than one AdditionalContext", ErrRequest)
	}
	// A Key Exchange Token request comes with its own action and a RequestKET element
	// (MS-WSTEP 3.1.4.2.2.1: without it, a fault); other requests do not.
	if (env.Action == KETAction) != (r.RequestType == KET) {
		return Request{}, fmt.Errorf("%w: RequestType %s with SOAP action %q", ErrRequest, r.RequestType, env.Action)
	}
	if r.RequestType == KET && len(m.RequestKET) != 1 {
		return Request{}, fmt.Errorf("%w: a Key Exchange Token request without one RequestKET element", ErrRequest)
	}
	switch r.RequestType {
	case Issue, Renew:
		if r.Token == nil {
			return Request{}, fmt.Errorf("%w: %s without a BinarySecurityToken", ErrRequest, r.RequestType)
		}
	case QueryTokenStatus:
		if r.RequestID == "" {
			return Request{}, fmt.Errorf("%w: QueryTokenStatus without a RequestID", ErrRequest)
		}
	}
	return r, nil
}

// Issued is the reply body for an issued certificate, in the order AD CS uses: TokenType,
// DispositionMessage "Issued", BinarySecurityToken (#PKCS7) holding cmcResponse (the CMC full
// PKI response with the chain), RequestedSecurityToken holding the bare X509v3 leaf, RequestID.
func Issued(requestID int64, cmcResponse, leaf []byte) []byte {
	var b bytes.Buffer
	open(&b)
	b.WriteString(`<DispositionMessage xml:lang="en-US" xmlns="` + NSEnrollment + `">Issued</DispositionMessage>`)
	b.WriteString(`<BinarySecurityToken ValueType="` + ValueTypePKCS7 + `" EncodingType="` + EncodingTypeBase64 + `" xmlns="` + NSSecExt + `">`)
	b.WriteString(base64.StdEncoding.EncodeToString(cmcResponse))
	b.WriteString(`</BinarySecurityToken><RequestedSecurityToken>`)
	b.WriteString(`<BinarySecurityToken ValueType="` + TokenTypeX509v3 + `" EncodingType="` + EncodingTypeBase64 + `" xmlns="` + NSSecExt + `">`)
	b.WriteString(base64.StdEncoding.EncodeToString(leaf))
	b.WriteString(`</BinarySecurityToken></RequestedSecurityToken>`)
	closeWithID(&b, requestID)
	return b.Bytes()
}

// KeyExchangeToken is the reply body of a Key Exchange Token request: the CA exchange
// certificate (DER), which clients encrypt the private keys they archive to, as MS-WSTEP 4.1.2.2
// shows it: RequestedSecurityToken/KeyExchangeToken/BinarySecurityToken (#X509v3), no
// DispositionMessage and no RequestID.
func KeyExchangeToken(cert []byte) []byte {
	var b bytes.Buffer
	open(&b)
	b.WriteString(`<RequestedSecurityToken><KeyExchangeToken>`)
	b.WriteString(`<BinarySecurityToken ValueType="` + TokenTypeX509v3 + `" EncodingType="` + EncodingTypeBase64 + `" xmlns="` + NSSecExt + `">`)
	b.WriteString(base64.StdEncoding.EncodeToString(cert))
	b.WriteString(`</BinarySecurityToken></KeyExchangeToken></RequestedSecurityToken>`)
	b.WriteString(`</RequestSecurityTokenResponse></RequestSecurityTokenResponseCollection>`)
	return b.Bytes()
}

// PendingMessage is AD CS's disposition message for a request held for approval.
const PendingMessage = "Taken Under Submission"

// Pending is the reply body for a request held for approval: TokenType, DispositionMessage
// "Taken Under Submission", RequestedSecurityToken/SecurityTokenReference/Reference URI (the
// enrollment endpoint to come back to with QueryTokenStatus) and RequestID.
func Pending(requestID int64, referenceURI string) []byte {
	var b bytes.Buffer
	open(&b)
	b.WriteString(`<DispositionMessage xml:lang="en-US" xmlns="` + NSEnrollment + `">` + PendingMessage + `</DispositionMessage>`)
	b.WriteString(`<RequestedSecurityToken><SecurityTokenReference xmlns="` + NSSecExt + `"><Reference URI="`)
	escape(&b, referenceURI)
	b.WriteString(`"/></SecurityTokenReference></RequestedSecurityToken>`)
	closeWithID(&b, requestID)
	return b.Bytes()
}

func open(b *bytes.Buffer) {
	b.WriteString(`<RequestSecurityTokenResponseCollection xmlns="` + NSTrust + `"><RequestSecurityTokenResponse>`)
	b.WriteString(`<TokenType>` + TokenTypeX509v3 + `</TokenType>`)
}

func closeWithID(b *bytes.Buffer, requestID int64) {
	b.WriteString(`<RequestID xmlns="` + NSEnrollment + `">` + strconv.FormatInt(requestID, 10) + `</RequestID>`)
	b.WriteString(`</RequestSecurityTokenResponse></RequestSecurityTokenResponseCollection>`)
}

// FaultDetail is the CertificateEnrollmentWSDetail for the Detail of a soap.Fault, in schema
// order: BinaryResponse (base64 of binaryResponse, e.g. a CMC response with the failure; nil
// when empty), ErrorCode (an HRESULT such as -2146877420, CERTSRV_E_TEMPLATE_DENIED),
// InvalidRequest, RequestID (nil when requestID is 0 or less: no request was recorded).
func FaultDetail(errorCode int32, requestID int64, invalidRequest bool, binaryResponse []byte) []byte {
	var b bytes.Buffer
	b.WriteString(`<CertificateEnrollmentWSDetail xmlns="` + NSEnrollment + `" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">`)
	if len(binaryResponse) == 0 {
		b.WriteString(`<BinaryResponse xsi:nil="true"/>`)
	} else {
		b.WriteString(`<BinaryResponse>` + base64.StdEncoding.EncodeToString(binaryResponse) + `</BinaryResponse>`)
	}
	b.WriteString(`<ErrorCode>` + strconv.FormatInt(int64(errorCode), 10) + `</ErrorCode>`)
	b.WriteString(`<InvalidRequest>` + strconv.FormatBool(invalidRequest) + `</InvalidRequest>`)
	if requestID <= 0 {
		b.WriteString(`<RequestID xsi:nil="true"/>`)
	} else {
		b.WriteString(`<RequestID>` + strconv.FormatInt(requestID, 10) + `</RequestID>`)
	}
	b.WriteString(`</CertificateEnrollmentWSDetail>`)
	return b.Bytes()
}

func escape(b *bytes.Buffer, s string) {
	_ = xml.EscapeText(b, []byte(s)) // writing to a bytes.Buffer does not fail
}
