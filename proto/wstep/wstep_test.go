package wstep

import (
	"bytes"
	"crypto/x509"
	"encoding/asn1"
	"encoding/base64"
	"encoding/xml"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/enrollment-appliance/aeappliance/proto/soap"
	"github.com/enrollment-appliance/aeappliance/proto/soap/soaptest"
)

const (
	pending = "testdata/002_MockCA_CES_UsernamePassword_service_svc_CES"
	issued  = "testdata/004_MockCA_CES_UsernamePassword_service_svc_CES"
)

func parseCapture(t *testing.T, c string) (*soap.Envelope, Request) {
	t.Helper()
	env, err := soap.Parse(bytes.NewReader(soaptest.ReadCapture(t, c+".xml")))
	if err != nil {
		t.Fatalf("soap.Parse(%s) = %v", c, err)
	}
	r, err := ParseRequest(env)
	if err != nil {
		t.Fatalf("ParseRequest(%s) = %v", c, err)
	}
	return env, r
}

func TestParseRequestCaptures(t *testing.T) {
	// 002: an Issue with a PKCS#10 whose base64 has line breaks.
	env, r := parseCapture(t, pending)
	if env.UsernameToken == nil || env.UsernameToken.Username != "user@example.test" || env.UsernameToken.Password != "Secret123" {
		t.Errorf("002 UsernameToken = %v", env.UsernameToken)
	}
	if r.RequestType != Issue || r.ValueType != ValueTypePKCS10 || r.EncodingType != EncodingTypeBase64 || r.RequestID != "" || r.Context != nil {
		t.Errorf("ParseRequest(002) = %+v", r)
	}
	var seq asn1.RawValue
	if rest, err := asn1.Unmarshal(r.Token, &seq); err != nil || len(rest) != 0 || seq.Tag != asn1.TagSequence || r.Token[0] != 0x30 {
		t.Fatalf("002 token is not one DER SEQUENCE: %v, %d bytes left", err, len(rest))
	}
	csr, err := x509.ParseCertificateRequest(r.Token)
	if err != nil || csr.CheckSignature() != nil || csr.Subject.CommonName != "host1.example.test" {
		t.Errorf("002 token: %v %v", csr, err)
	}

	// 004: a QueryTokenStatus with an empty BinarySecurityToken and RequestID 1002.
	_, r = parseCapture(t, issued)
	if r.RequestType != QueryTokenStatus || r.Token != nil || r.RequestID != "1002" {
		t.Errorf("ParseRequest(004) = %+v", r)
	}
}

// rstEnvelope builds a RequestSecurityToken envelope.
func rstEnvelope(action, inner string) string {
	return `<s:Envelope xmlns:s="` + soap.NS12 + `" xmlns:a="` + soap.NSAddressing + `"><s:Header><a:Action>` + action +
		`</a:Action></s:Header><s:Body><t:RequestSecurityToken xmlns:t="` + NSTrust + `" xmlns:o="` + NSSecExt +
		`" xmlns:e="` + NSEnrollment + `" xmlns:ac="http://schemas.xmlsoap.org/ws/2006/12/authorization">` + inner +
		`</t:RequestSecurityToken></s:Body></s:Envelope>`
}

const (
	issueType = `<t:RequestType>` + RequestTypeIssue + `</t:RequestType>`
	token     = `<o:BinarySecurityToken ValueType="` + ValueTypePKCS10 + `" EncodingType="` + EncodingTypeBase64 + `">MAMC
AQA=
</o:BinarySecurityToken>`
)

func TestParseRequestContext(t *testing.T) {
	in := rstEnvelope(IssueAction, `<t:TokenType>`+TokenTypeX509v3+`</t:TokenType>`+issueType+token+
		`<ac:AdditionalContext><ac:ContextItem Name="CertificateTemplate"><ac:Value>Machine</ac:Value></ac:ContextItem>`+
		`<ac:ContextItem Name="ccm"><ac:Value> host1.example.test </ac:Value></ac:ContextItem><ac:ContextItem Name="rmd"/></ac:AdditionalContext>`)
	env, err := soap.Parse(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	r, err := ParseRequest(env)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(r.Token, []byte{0x30, 0x03, 0x02, 0x01, 0x00}) || len(r.Context) != 3 ||
		r.Context["CertificateTemplate"] != "Machine" || r.Context["ccm"] != "host1.example.test" || r.Context["rmd"] != "" {
		t.Errorf("ParseRequest = %+v", r)
	}
}

func TestParseRequestRefuses(t *testing.T) {
	item := func(name string) string {
		return `<ac:ContextItem Name="` + name + `"><ac:Value>v</ac:Value></ac:ContextItem>`
	}
	tests := []struct{ name, in string }{
		{"wrong action", rstEnvelope("http://schemas.microsoft.com/windows/pki/2009/01/enrollmentpolicy/IPolicy/GetPolicies", issueType+token)},
		{"WS-Trust issue action", rstEnvelope("http://docs.oasis-open.org/ws-sx/ws-trust/200512/RST/Issue", issueType+token)},
		{"wrong body element", strings.ReplaceAll(rstEnvelope(IssueAction, issueType+token), "t:RequestSecurityToken", "t:RequestSecurityTokenResponse")},
		{"no RequestType", rstEnvelope(IssueAction, token)},
		{"two RequestTypes", rstEnvelope(IssueAction, issueType+issueType+token)},
		{"unknown RequestType", rstEnvelope(IssueAction, `<t:RequestType>`+NSTrust+`/Validate</t:RequestType>`+token)},
		{"bad base64", rstEnvelope(IssueAction, issueType+`<o:BinarySecurityToken>MAMC*QA=</o:BinarySecurityToken>`)},
		{"truncated base64", rstEnvelope(IssueAction, issueType+`<o:BinarySecurityToken>MAMCAQ</o:BinarySecurityToken>`)},
		{"hex encoding", rstEnvelope(IssueAction, issueType+`<o:BinarySecurityToken EncodingType="urn:hex">300302</o:BinarySecurityToken>`)},
		{"Issue without token", rstEnvelope(IssueAction, issueType)},
		{"Issue with empty token", rstEnvelope(IssueAction, issueType+`<o:BinarySecurityToken> </o:BinarySecurityToken>`)},
		{"two tokens", rstEnvelope(IssueAction, issueType+token+token)},
		{"QueryTokenStatus without RequestID", rstEnvelope(IssueAction, `<t:RequestType>`+RequestTypeQueryTokenStatus+`</t:RequestType>`)},
		{"two RequestIDs", rstEnvelope(IssueAction, `<t:RequestType>`+RequestTypeQueryTokenStatus+`</t:RequestType><e:RequestID>1</e:RequestID><e:RequestID>2</e:RequestID>`)},
		{"duplicate context item", rstEnvelope(IssueAction, issueType+token+`<ac:AdditionalContext>`+item("CertificateTemplate")+item("CertificateTemplate")+`</ac:AdditionalContext>`)},
		{"context item without name", rstEnvelope(IssueAction, issueType+token+`<ac:AdditionalContext>`+item("")+`</ac:AdditionalContext>`)},
		{"too many context items", rstEnvelope(IssueAction, issueType+token+`<ac:AdditionalContext>`+strings.Repeat(item("x"), maxContextItems+1)+`</ac:AdditionalContext>`)},
	}
	for _, tt := range tests {
		env, err := soap.Parse(strings.NewReader(tt.in))
		if err != nil {
			t.Fatalf("soap.Parse(%s) = %v", tt.name, err)
		}
		if r, err := ParseRequest(env); !errors.Is(err, ErrRequest) {
			t.Errorf("ParseRequest(%s) = %+v, %v; want ErrRequest", tt.name, r, err)
		} else {
			t.Logf("ParseRequest(%s): %v", tt.name, err)
		}
	}
	if _, err := ParseRequest(nil); !errors.Is(err, ErrRequest) {
		t.Errorf("ParseRequest(nil) = %v", err)
	}
}

// captured returns the captured reply and the text of its first element named local.
func captured(t *testing.T, c string) ([]soaptest.Node, func(local string) string) {
	t.Helper()
	b, err := os.ReadFile(c + ".response.xml")
	if err != nil {
		t.Fatal(err)
	}
	nodes, err := soaptest.Shape(b)
	if err != nil {
		t.Fatal(err)
	}
	return nodes, func(local string) string {
		for _, n := range nodes {
			if n.Name.Local == local {
				return n.Text
			}
		}
		t.Fatalf("%s has no <%s>", c, local)
		return ""
	}
}

// Replies built with Issued and Pending have the structure and the values of the replies
// cepces accepted.
func TestRepliesMatchCaptures(t *testing.T) {
	b64 := func(s string) []byte {
		b, err := base64.StdEncoding.DecodeString(s)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}

	want, text := captured(t, pending)
	env, _ := parseCapture(t, pending)
	out := soap.Reply(IssueResponseAction, env.MessageID, Pending(1002, "https://localhost:8443/MockCA_CES_UsernamePassword/service.svc/CES"), time.Now(), false)
	if got, err := soaptest.Shape(out); err != nil {
		t.Errorf("Pending reply does not parse: %v\n%s", err, out)
	} else if d := soaptest.Diff(got, want, true); d != "" {
		t.Errorf("Pending reply differs from the capture: %s\n%s", d, out)
	}
	if !strings.Contains(string(out), `<Reference URI="https://localhost:8443/MockCA_CES_UsernamePassword/service.svc/CES"/>`) {
		t.Errorf("Pending reply lacks the Reference URI: %s", out)
	}
	if text("DispositionMessage") != PendingMessage {
		t.Errorf("captured DispositionMessage = %q, want %q", text("DispositionMessage"), PendingMessage)
	}

	want, text = captured(t, issued)
	env, _ = parseCapture(t, issued)
	var cmc, leaf []byte
	for _, n := range want {
		if n.Name.Local == "BinarySecurityToken" && cmc == nil {
			cmc = b64(n.Text)
		} else if n.Name.Local == "BinarySecurityToken" {
			leaf = b64(n.Text)
		}
	}
	if _, err := x509.ParseCertificate(leaf); err != nil {
		t.Fatalf("captured leaf: %v", err)
	}
	out = soap.Reply(IssueResponseAction, env.MessageID, Issued(1002, cmc, leaf), time.Now(), false)
	if got, err := soaptest.Shape(out); err != nil {
		t.Errorf("Issued reply does not parse: %v\n%s", err, out)
	} else if d := soaptest.Diff(got, want, true); d != "" {
		t.Errorf("Issued reply differs from the capture: %s\n%s", d, out)
	}
	// The value types tell the CMC response from the bare leaf, as in the capture.
	for _, vt := range []string{`ValueType="` + ValueTypePKCS7 + `"`, `ValueType="` + TokenTypeX509v3 + `"`, `xml:lang="en-US"`} {
		if !strings.Contains(string(out), vt) {
			t.Errorf("Issued reply lacks %s", vt)
		}
	}
	if text("RequestID") != "1002" {
		t.Errorf("captured RequestID = %q", text("RequestID"))
	}
}

func TestFaultDetail(t *testing.T) {
	n := func(local, text string, isNil bool) soaptest.Node {
		return soaptest.Node{Depth: 1, Name: xml.Name{Space: NSEnrollment, Local: local}, Text: text, Nil: isNil}
	}
	root := soaptest.Node{Name: xml.Name{Space: NSEnrollment, Local: "CertificateEnrollmentWSDetail"}}
	tests := []struct {
		name string
		out  []byte
		want []soaptest.Node
	}{
		{"denied, recorded", FaultDetail(-2146877420, 1003, false, []byte{0x30, 0}), []soaptest.Node{root,
			n("BinaryResponse", "MAA=", false), n("ErrorCode", "-2146877420", false), n("InvalidRequest", "false", false), n("RequestID", "1003", false)}},
		{"invalid, not recorded", FaultDetail(-2146875374, 0, true, nil), []soaptest.Node{root,
			n("BinaryResponse", "", true), n("ErrorCode", "-2146875374", false), n("InvalidRequest", "true", false), n("RequestID", "", true)}},
	}
	for _, tt := range tests {
		got, err := soaptest.Shape(tt.out)
		if err != nil {
			t.Fatalf("FaultDetail(%s): %v\n%s", tt.name, err, tt.out)
		}
		if d := soaptest.Diff(got, tt.want, true); d != "" {
			t.Errorf("FaultDetail(%s) = %s\n%s", tt.name, d, tt.out)
		}
		// It fits in a SOAP fault that parses.
		f := soap.Fault(false, "denied", tt.out, "urn:uuid:1")
		if _, err := soap.Parse(bytes.NewReader(f)); err != nil {
			t.Errorf("fault with detail does not parse: %v\n%s", err, f)
		}
	}
	// The reference URI is escaped.
	if out := Pending(1, `https://h/a?b=1&c="2"`); !strings.Contains(string(out), `URI="https://h/a?b=1&amp;c=&#34;2&#34;"`) {
		t.Errorf("Pending = %s", out)
	}
}

// FuzzParseRequest feeds client bytes through soap.Parse and ParseRequest, and also straight
// to ParseRequest as a body. Neither may panic; an accepted Issue always carries a token.
func FuzzParseRequest(f *testing.F) {
	for _, c := range []string{pending, issued} {
		b, err := os.ReadFile(c + ".xml")
		if err != nil {
			f.Fatal(err)
		}
		f.Add(soaptest.StripCapture(b))
	}
	f.Add([]byte(rstEnvelope(IssueAction, issueType+token+`<ac:AdditionalContext><ac:ContextItem Name="a"><ac:Value>b</ac:Value></ac:ContextItem></ac:AdditionalContext>`)))
	check := func(t *testing.T, r Request, err error) {
		if err == nil && (r.RequestType == Issue || r.RequestType == Renew) && r.Token == nil {
			t.Fatalf("accepted %s without a token", r.RequestType)
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if env, err := soap.Parse(bytes.NewReader(data)); err == nil {
			r, err := ParseRequest(env)
			check(t, r, err)
		}
		r, err := ParseRequest(&soap.Envelope{Action: IssueAction, BodyName: xml.Name{Space: NSTrust, Local: "RequestSecurityToken"}, Body: data})
		check(t, r, err)
	})
}

// TestKeyExchangeToken: MS-WSTEP 4.1.2.1's Key Exchange Token request parses (with its own
// action and RequestKET), KET without RequestKET or under the Issue action is refused, and the
// reply carries the certificate where 4.1.2.2 puts it.
func TestKeyExchangeToken(t *testing.T) {
	ket := `<t:TokenType>` + TokenTypeX509v3 + `</t:TokenType><t:RequestType>` + RequestTypeKET + `</t:RequestType><t:RequestKET/>` +
		`<e:RequestID xsi:nil="true" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"/>`
	parse := func(in string) (Request, error) {
		env, err := soap.Parse(strings.NewReader(in))
		if err != nil {
			t.Fatalf("soap.Parse: %v", err)
		}
		return ParseRequest(env)
	}
	r, err := parse(rstEnvelope(KETAction, ket))
	if err != nil || r.RequestType != KET || r.Token != nil {
		t.Fatalf("ParseRequest(KET) = %+v, %v", r, err)
	}
	for name, in := range map[string]string{
		"KET without RequestKET":     rstEnvelope(KETAction, strings.ReplaceAll(ket, `<t:RequestKET/>`, "")),
		"KET under the Issue action": rstEnvelope(IssueAction, ket),
		"Issue under the KET action": rstEnvelope(KETAction, issueType+token),
	} {
		if _, err := parse(in); !errors.Is(err, ErrRequest) {
			t.Errorf("%s: %v, want ErrRequest", name, err)
		}
	}
	der := []byte{0x30, 0x03, 0x02, 0x01, 0x07}
	var resp struct {
		RSTR []struct {
			TokenType string `xml:"TokenType"`
			Token     struct {
				ValueType string `xml:"ValueType,attr"`
				Value     string `xml:",chardata"`
			} `xml:"RequestedSecurityToken>KeyExchangeToken>BinarySecurityToken"`
			RequestID []string `xml:"RequestID"`
		} `xml:"RequestSecurityTokenResponse"`
	}
	if err := xml.Unmarshal(KeyExchangeToken(der), &resp); err != nil || len(resp.RSTR) != 1 {
		t.Fatalf("KeyExchangeToken reply: %v, %d responses", err, len(resp.RSTR))
	}
	got, _ := base64.StdEncoding.DecodeString(resp.RSTR[0].Token.Value)
	if !bytes.Equal(got, der) || resp.RSTR[0].Token.ValueType != TokenTypeX509v3 || len(resp.RSTR[0].RequestID) != 0 {
		t.Errorf("KeyExchangeToken reply = %+v", resp.RSTR[0])
	}
}
