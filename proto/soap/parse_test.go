package soap

import (
	"bytes"
	"encoding/xml"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"github.com/enrollment-appliance/aeappliance/proto/soap/soaptest"
)

const (
	xcepNS  = "http://schemas.microsoft.com/windows/pki/2009/01/enrollmentpolicy"
	wstNS   = "http://docs.oasis-open.org/ws-sx/ws-trust/200512"
	getPol  = "http://schemas.microsoft.com/windows/pki/2009/01/enrollmentpolicy/IPolicy/GetPolicies"
	rstWSTP = "http://schemas.microsoft.com/windows/pki/2009/01/enrollment/RST/wstep"
)

// The captured cepces requests in testdata (real client bytes).
func TestParseCaptures(t *testing.T) {
	tests := []struct {
		file              string
		action, messageID string
		to                string
		body              xml.Name
	}{
		{"001_ADPolicyProvider_CEP_UsernamePassword_service_svc_CEP.xml", getPol,
			"urn:uuid:3c3e6d47-e2bf-49f7-8cab-cc2b70b33fa0",
			"https://localhost:8443/ADPolicyProvider_CEP_UsernamePassword/service.svc/CEP", xml.Name{Space: xcepNS, Local: "GetPolicies"}},
		{"002_MockCA_CES_UsernamePassword_service_svc_CES.xml", rstWSTP,
			"urn:uuid:604c7fc2-a057-4bc8-9cfd-7882e0d69fd7",
			"https://localhost:8443/MockCA_CES_UsernamePassword/service.svc/CES", xml.Name{Space: wstNS, Local: "RequestSecurityToken"}},
		{"003_ADPolicyProvider_CEP_UsernamePassword_service_svc_CEP.xml", getPol,
			"urn:uuid:e505e240-8561-49df-ad99-cf355f72661a",
			"https://localhost:8443/ADPolicyProvider_CEP_UsernamePassword/service.svc/CEP", xml.Name{Space: xcepNS, Local: "GetPolicies"}},
		{"004_MockCA_CES_UsernamePassword_service_svc_CES.xml", rstWSTP,
			"urn:uuid:6914e781-b873-4e1f-b840-99fa509aada6",
			"https://localhost:8443/MockCA_CES_UsernamePassword/service.svc/CES", xml.Name{Space: wstNS, Local: "RequestSecurityToken"}},
	}
	for _, tt := range tests {
		raw := soaptest.ReadCapture(t, filepath.Join("testdata", tt.file))
		env, err := Parse(bytes.NewReader(raw))
		if err != nil {
			t.Errorf("Parse(%s) = %v", tt.file, err)
			continue
		}
		if env.Action != tt.action || env.MessageID != tt.messageID || env.To != tt.to {
			t.Errorf("Parse(%s) = Action %q MessageID %q To %q, want %q %q %q", tt.file, env.Action, env.MessageID, env.To, tt.action, tt.messageID, tt.to)
		}
		want := UsernameToken{Username: "user@example.test", Password: "Secret123", PasswordType: PasswordText}
		if ut := env.UsernameToken; ut == nil || ut.Username != want.Username || ut.Password != want.Password || ut.PasswordType != want.PasswordType || ut.Nonce == "" || ut.Created == "" {
			t.Errorf("Parse(%s).UsernameToken = %+v, want %+v with Nonce and Created", tt.file, ut, want)
		}
		if env.BodyName != tt.body {
			t.Errorf("Parse(%s).BodyName = %v, want %v", tt.file, env.BodyName, tt.body)
		}
		// The body stands alone: the same elements, in the same namespaces, as in the envelope.
		full, err := soaptest.Shape(raw)
		if err != nil {
			t.Fatal(err)
		}
		var inBody []soaptest.Node
		for i, n := range full {
			if n.Name == tt.body {
				for _, m := range full[i:] {
					if m.Depth < n.Depth || (m.Depth == n.Depth && m.Name != n.Name) {
						break
					}
					m.Depth -= n.Depth
					inBody = append(inBody, m)
				}
				break
			}
		}
		got, err := soaptest.Shape(env.Body)
		if err != nil {
			t.Fatalf("Parse(%s).Body does not parse alone: %v\n%s", tt.file, err, env.Body)
		}
		if d := soaptest.Diff(got, inBody, true); d != "" || len(got) == 0 {
			t.Errorf("Parse(%s).Body differs from the captured body: %s\n%s", tt.file, d, env.Body)
		}
	}
}

func TestParseDetails(t *testing.T) {
	// Default namespace, no Type on Password (means PasswordText), digest type, an unqualified
	// child of a qualified element, comments and an XML declaration.
	in := `<?xml version="1.0" encoding="utf-8"?><!-- hi --><Envelope xmlns="` + NS12 + `">
<Header><Action xmlns="` + NSAddressing + `"> urn:x </Action>
<Security xmlns="` + NSSecExt + `"><UsernameToken><Username> bob </Username><Password> p w </Password></UsernameToken></Security></Header>
<Body><!-- c --><x:Op xmlns:x="urn:op" a="1"><inner xmlns="">v</inner><x:q xmlns:xsi="` + NSXSI + `" xsi:nil="true"/></x:Op></Body></Envelope>`
	env, err := Parse(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	if env.Action != "urn:x" || env.UsernameToken.Username != "bob" || env.UsernameToken.Password != " p w " || env.UsernameToken.PasswordType != PasswordText {
		t.Errorf("Parse = %+v %+v", env, env.UsernameToken)
	}
	got, err := soaptest.Shape(env.Body)
	if err != nil {
		t.Fatal(err)
	}
	want := []soaptest.Node{
		{Depth: 0, Name: xml.Name{Space: "urn:op", Local: "Op"}},
		{Depth: 1, Name: xml.Name{Local: "inner"}, Text: "v"},
		{Depth: 1, Name: xml.Name{Space: "urn:op", Local: "q"}, Nil: true},
	}
	if d := soaptest.Diff(got, want, true); d != "" {
		t.Errorf("Body = %s: %s", env.Body, d)
	}
	if s := env.UsernameToken.String(); strings.Contains(s, "p w") {
		t.Errorf("UsernameToken.String() = %q shows the password", s)
	}

	digest := strings.Replace(in, "<Password>", `<Password Type="`+PasswordDigest+`">`, 1)
	if env, err := Parse(strings.NewReader(digest)); err != nil || env.UsernameToken.PasswordType != PasswordDigest {
		t.Errorf("Parse(digest) = %+v, %v", env, err)
	}
}

// envelope wraps header and body XML in a SOAP 1.2 envelope with the usual prefixes.
func envelope(header, body string) string {
	return `<s:Envelope xmlns:s="` + NS12 + `" xmlns:a="` + NSAddressing + `" xmlns:o="` + NSSecExt + `"><s:Header>` +
		header + `</s:Header><s:Body>` + body + `</s:Body></s:Envelope>`
}

const action = `<a:Action s:mustUnderstand="1">urn:x</a:Action>`

func TestParseRefuses(t *testing.T) {
	deep := strings.Repeat("<x>", 1000) + strings.Repeat("</x>", 1000)
	many := strings.Repeat("<x/>", MaxTokens)
	tests := []struct {
		name string
		in   string
		want error
	}{
		{"over the size limit", envelope(action, "<op/>") + strings.Repeat(" ", MaxBody), ErrTooLarge},
		{"empty", "", ErrMalformed},
		{"truncated", envelope(action, "<op/>")[:60], ErrMalformed},
		{"mismatched tags", envelope(action, "<op></po>"), ErrMalformed},
		{"not XML", "hello", ErrMalformed},
		{"undefined entity", envelope(action, "<op>&nbsp;</op>"), ErrMalformed},
		{"DOCTYPE with external entity", `<?xml version="1.0"?><!DOCTYPE s:Envelope [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>` + envelope(action, "<op>&xxe;</op>"), ErrDirective},
		{"DOCTYPE billion laughs", `<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;">]>` + envelope(action, "<op>&lol2;</op>"), ErrDirective},
		{"DOCTYPE after the root", envelope(action, "<op/>") + `<!DOCTYPE x>`, ErrDirective},
		{"processing instruction", envelope(action, "<op><?php x?></op>"), ErrMalformed},
		{"non-UTF-8 encoding", `<?xml version="1.0" encoding="ISO-8859-1"?>` + envelope(action, "<op/>"), ErrMalformed},
		{"1000-deep nesting", envelope(action, deep), ErrLimit},
		{"too many tokens", envelope(action, "<op>"+many+"</op>"), ErrLimit},
		{"SOAP 1.1 namespace", `<s:Envelope xmlns:s="` + NS11 + `"><s:Header/><s:Body><op/></s:Body></s:Envelope>`, ErrEnvelope},
		{"not an envelope", `<Envelope><Body/></Envelope>`, ErrEnvelope},
		{"unknown element in Envelope", strings.Replace(envelope(action, "<op/>"), "<s:Body>", "<s:Other/><s:Body>", 1), ErrEnvelope},
		{"missing Action", envelope(`<a:MessageID>urn:m</a:MessageID>`, "<op/>"), ErrNoAction},
		{"empty Action", envelope(`<a:Action> </a:Action>`, "<op/>"), ErrNoAction},
		{"Action in the wrong namespace", envelope(`<Action>urn:x</Action>`, "<op/>"), ErrNoAction},
		{"two Actions", envelope(action+action, "<op/>"), ErrHeader},
		{"Action with an element inside", envelope(`<a:Action><b/></a:Action>`, "<op/>"), ErrHeader},
		{"two Body children", envelope(action, "<op/><op2/>"), ErrBody},
		{"two Body elements", strings.Replace(envelope(action, "<op/>"), "</s:Envelope>", "<s:Body><op/></s:Body></s:Envelope>", 1), ErrBody},
		{"Header after Body", strings.Replace(envelope(action, "<op/>"), "</s:Envelope>", "<s:Header/></s:Envelope>", 1), ErrHeader},
		{"empty Body", envelope(action, ""), ErrBody},
		{"text in Body", envelope(action, "hello<op/>"), ErrBody},
		{"no Body", `<s:Envelope xmlns:s="` + NS12 + `" xmlns:a="` + NSAddressing + `"><s:Header>` + action + `</s:Header></s:Envelope>`, ErrBody},
		{"second root", envelope(action, "<op/>") + "<more/>", ErrMalformed},
		{"UsernameToken without Password", envelope(action+`<o:Security><o:UsernameToken><o:Username>u</o:Username></o:UsernameToken></o:Security>`, "<op/>"), ErrHeader},
		{"unknown Password Type", envelope(action+`<o:Security><o:UsernameToken><o:Username>u</o:Username><o:Password Type="urn:x">p</o:Password></o:UsernameToken></o:Security>`, "<op/>"), ErrHeader},
		{"two UsernameTokens", envelope(action+`<o:Security><o:UsernameToken><o:Username>u</o:Username><o:Password>p</o:Password></o:UsernameToken><o:UsernameToken><o:Username>v</o:Username><o:Password>p</o:Password></o:UsernameToken></o:Security>`, "<op/>"), ErrHeader},
	}
	for _, tt := range tests {
		env, err := Parse(strings.NewReader(tt.in))
		if !errors.Is(err, tt.want) {
			t.Errorf("Parse(%s) = %+v, %v; want error %v", tt.name, env, err, tt.want)
			continue
		}
		t.Logf("Parse(%s): %v", tt.name, err)
	}
}

// A body cut short by the server's http.MaxBytesReader is too large, not malformed.
func TestParseMaxBytesReader(t *testing.T) {
	in := envelope(action, "<op/>") + strings.Repeat(" ", 100)
	body := http.MaxBytesReader(httptest.NewRecorder(), io.NopCloser(strings.NewReader(in)), 64)
	if _, err := Parse(body); !errors.Is(err, ErrTooLarge) {
		t.Errorf("Parse(MaxBytesReader) = %v, want ErrTooLarge", err)
	}
}

// No error message repeats the password, whatever is wrong around it.
func TestParseErrorsHidePassword(t *testing.T) {
	const pw = "Zq7SECRETpw"
	ut := func(password string) string {
		return action + `<o:Security><o:UsernameToken><o:Username>u</o:Username><o:Password>` + password + `</o:Password></o:UsernameToken></o:Security>`
	}
	inputs := []string{
		envelope(ut(pw+"&"+pw+";"), "<op/>"),
		envelope(ut(pw+"&"+pw), "<op/>"),
		envelope(ut(pw+"<"+pw), "<op/>"),
		envelope(ut(pw+"</o:Username>"), "<op/>"),
		envelope(ut(pw+"\x00"), "<op/>"),
		envelope(ut(pw+"]]>"), "<op/>"),
		envelope(ut(pw), "<op/>")[:strings.Index(envelope(ut(pw), ""), pw)+5],
		envelope(ut(pw), "<op/><op/>"),
		envelope(ut(pw), strings.Repeat("<x>", 100)),
		`<s:Envelope xmlns:s="` + NS11 + `">` + ut(pw) + `</s:Envelope>`,
	}
	for _, in := range inputs {
		_, err := Parse(strings.NewReader(in))
		if err == nil {
			t.Errorf("Parse(%q) succeeded", in)
			continue
		}
		if strings.Contains(err.Error(), pw[:5]) || strings.Contains(err.Error(), pw[5:]) {
			t.Errorf("Parse(%q) = %v: the error shows the password", in, err)
		}
	}
}
