package xcep

import (
	"bytes"
	"encoding/base64"
	"encoding/xml"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/enrollment-appliance/aeappliance/proto/soap"
	"github.com/enrollment-appliance/aeappliance/proto/soap/soaptest"
)

var captures = []string{
	"testdata/001_ADPolicyProvider_CEP_UsernamePassword_service_svc_CEP",
	"testdata/003_ADPolicyProvider_CEP_UsernamePassword_service_svc_CEP",
}

func TestParseRequestCaptures(t *testing.T) {
	for _, c := range captures {
		env, err := soap.Parse(bytes.NewReader(soaptest.ReadCapture(t, c+".xml")))
		if err != nil {
			t.Fatalf("soap.Parse(%s) = %v", c, err)
		}
		if env.UsernameToken == nil || env.UsernameToken.Username != "user@example.test" || env.UsernameToken.Password != "Secret123" {
			t.Errorf("soap.Parse(%s).UsernameToken = %v", c, env.UsernameToken)
		}
		r, err := ParseRequest(env)
		if err != nil {
			t.Fatalf("ParseRequest(%s) = %v", c, err)
		}
		// cepces sends every field as nil.
		if r.LastUpdate != nil || r.PreferredLanguage != "" || r.PolicyOIDs != nil || r.ClientVersion != nil || r.ServerVersion != nil {
			t.Errorf("ParseRequest(%s) = %+v, want all nil", c, r)
		}
	}
}

// request builds a GetPolicies envelope around the given body element.
func request(action, body string) string {
	return `<s:Envelope xmlns:s="` + soap.NS12 + `" xmlns:a="` + soap.NSAddressing + `"><s:Header><a:Action>` + action +
		`</a:Action><a:MessageID>urn:uuid:1</a:MessageID></s:Header><s:Body>` + body + `</s:Body></s:Envelope>`
}

func TestParseRequest(t *testing.T) {
	const full = `<GetPolicies xmlns="` + Namespace + `" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
<client><lastUpdate>2026-11-20T10:00:00.5Z</lastUpdate><preferredLanguage>en-US</preferredLanguage></client>
<requestFilter><policyOIDs><oid>1.2.3</oid><oid> 1.2.4 </oid></policyOIDs><clientVersion>6</clientVersion><serverVersion xsi:nil="true"/></requestFilter>
</GetPolicies>`
	env, err := soap.Parse(strings.NewReader(request(GetPoliciesAction, full)))
	if err != nil {
		t.Fatal(err)
	}
	r, err := ParseRequest(env)
	if err != nil {
		t.Fatal(err)
	}
	want := time.Date(2026, 11, 20, 10, 0, 0, 5e8, time.UTC)
	if r.LastUpdate == nil || !r.LastUpdate.Equal(want) || r.PreferredLanguage != "en-US" ||
		strings.Join(r.PolicyOIDs, ",") != "1.2.3,1.2.4" || r.ClientVersion == nil || *r.ClientVersion != 6 || r.ServerVersion != nil {
		t.Errorf("ParseRequest = %+v", r)
	}

	// A lastUpdate without a time zone is UTC; a nil requestFilter means no filter.
	env, err = soap.Parse(strings.NewReader(request(GetPoliciesAction, `<x:GetPolicies xmlns:x="`+Namespace+`" xmlns:i="http://www.w3.org/2001/XMLSchema-instance"><x:client><x:lastUpdate>2026-11-20T10:00:00</x:lastUpdate></x:client><x:requestFilter i:nil="true"/></x:GetPolicies>`)))
	if err != nil {
		t.Fatal(err)
	}
	if r, err := ParseRequest(env); err != nil || r.LastUpdate == nil || !r.LastUpdate.Equal(time.Date(2026, 11, 20, 10, 0, 0, 0, time.UTC)) {
		t.Errorf("ParseRequest(no time zone) = %+v, %v", r, err)
	}
}

func TestParseRequestRefuses(t *testing.T) {
	gp := func(inner string) string { return `<GetPolicies xmlns="` + Namespace + `">` + inner + `</GetPolicies>` }
	tests := []struct {
		name, in string
	}{
		{"wrong action", request("http://schemas.microsoft.com/windows/pki/2009/01/enrollment/RST/wstep", gp("<client/>"))},
		{"response action", request(GetPoliciesResponseAction, gp("<client/>"))},
		{"wrong body element", request(GetPoliciesAction, `<GetPolicy xmlns="`+Namespace+`"><client/></GetPolicy>`)},
		{"wrong body namespace", request(GetPoliciesAction, `<GetPolicies xmlns="urn:other"><client/></GetPolicies>`)},
		{"no client", request(GetPoliciesAction, gp(""))},
		{"nil client", request(GetPoliciesAction, gp(`<client xmlns:i="http://www.w3.org/2001/XMLSchema-instance" i:nil="true"/>`))},
		{"two clients", request(GetPoliciesAction, gp("<client/><client/>"))},
		{"bad lastUpdate", request(GetPoliciesAction, gp("<client><lastUpdate>yesterday</lastUpdate></client>"))},
		{"bad clientVersion", request(GetPoliciesAction, gp("<client/><requestFilter><clientVersion>six</clientVersion></requestFilter>"))},
		{"clientVersion overflows", request(GetPoliciesAction, gp("<client/><requestFilter><clientVersion>99999999999</clientVersion></requestFilter>"))},
		{"two filters", request(GetPoliciesAction, gp("<client/><requestFilter/><requestFilter/>"))},
		{"too many OIDs", request(GetPoliciesAction, gp("<client/><requestFilter><policyOIDs>"+strings.Repeat("<oid>1.2</oid>", maxPolicyOIDs+1)+"</policyOIDs></requestFilter>"))},
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

// capturedResponse is the Response the captured 001 and 003 replies carry.
func capturedResponse(t *testing.T) Response {
	t.Helper()
	cert, err := base64.StdEncoding.DecodeString(captureText(t, captures[0]+".response.xml", "certificate"))
	if err != nil {
		t.Fatal(err)
	}
	return Response{
		PolicyID:           "{00000000-1111-2222-3333-444444444444}",
		PolicyFriendlyName: "Mock Policy",
		NextUpdateHours:    8,
		Policies: []Policy{{
			PolicyOIDReference: 1, CAReferences: []int{0},
			CommonName: "LabMachine", SchemaVersion: 2,
			ValidityPeriodSeconds: 31536000, RenewalPeriodSeconds: 3628800,
			Enroll: true, AutoEnroll: true,
			MinimalKeyLength: 2048, KeySpec: 1,
			MajorRevision: 100, MinorRevision: 2,
			SubjectNameFlags: 134217728, EnrollmentFlags: 32, GeneralFlags: 64,
		}},
		CAs: []CA{{
			URIs:        []CAURI{{ClientAuthentication: AuthUsername, URI: "https://localhost:8443/MockCA_CES_UsernamePassword/service.svc/CES", Priority: 1}},
			Certificate: cert, EnrollPermission: true, ReferenceID: 0,
		}},
		OIDs: []OID{{Value: "1.3.6.1.4.1.311.21.8.1111.2222.3333.4444.5555.66.7.8", Group: GroupEnrollment, ReferenceID: 1, DefaultName: "LabMachine"}},
	}
}

func captureText(t *testing.T, file, local string) string {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	nodes, err := soaptest.Shape(b)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes {
		if n.Name.Local == local {
			return n.Text
		}
	}
	t.Fatalf("%s has no <%s>", file, local)
	return ""
}

// The reply to each captured request has the structure and the values of the reply cepces
// accepted.
func TestMarshalMatchesCaptures(t *testing.T) {
	for _, c := range captures {
		raw, err := os.ReadFile(c + ".response.xml")
		if err != nil {
			t.Fatal(err)
		}
		want, err := soaptest.Shape(raw)
		if err != nil {
			t.Fatal(err)
		}
		env, err := soap.Parse(bytes.NewReader(soaptest.ReadCapture(t, c+".xml")))
		if err != nil {
			t.Fatal(err)
		}
		out := soap.Reply(GetPoliciesResponseAction, env.MessageID, capturedResponse(t).Marshal(), time.Now(), false)
		got, err := soaptest.Shape(out)
		if err != nil {
			t.Fatalf("reply does not parse: %v\n%s", err, out)
		}
		if d := soaptest.Diff(got, want, true); d != "" {
			t.Errorf("reply to %s differs from the capture: %s\n%s", c, d, out)
		}
	}
}

// Every element of the schema, filled in, comes out in the order of MS-XCEP 6.2.
func TestMarshalSchemaOrder(t *testing.T) {
	one, two := 1, 2
	r := Response{
		PolicyID: "id", PolicyFriendlyName: "n", NextUpdateHours: 8,
		Policies: []Policy{{
			PolicyOIDReference: 1, CAReferences: []int{0, 1},
			CommonName: "T", SchemaVersion: 4, ValidityPeriodSeconds: 1, RenewalPeriodSeconds: 1, Enroll: true,
			MinimalKeyLength: 256, KeySpec: 2, KeyUsageProperty: &two, Permissions: "D:(A;;GA;;;SY)", AlgorithmOIDReference: &one,
			CryptoProviders:           []string{"Microsoft Software Key Storage Provider"},
			SupersededPolicies:        []string{"Old"},
			HashAlgorithmOIDReference: &two,
			RARequirements:            &RARequirements{Signatures: 1, EKUReferences: []int{3}, PolicyReferences: []int{4}},
			KeyArchivalAttributes:     &KeyArchival{SymmetricAlgorithmOIDReference: 5, SymmetricAlgorithmKeyLength: 256},
			Extensions:                []Extension{{OIDReference: 6, Critical: true, Value: []byte{0x30, 0}}, {OIDReference: 7}},
		}},
		CAs:  []CA{{URIs: []CAURI{{ClientAuthentication: AuthKerberos, URI: "https://a/", Priority: 1}, {ClientAuthentication: AuthCertificate, URI: "https://b/", Priority: 2, RenewalOnly: true}}, Certificate: []byte{0x30}, ReferenceID: 0}},
		OIDs: []OID{{Value: "1.2", Group: GroupHashAlgorithm, ReferenceID: 2}},
	}
	got, err := soaptest.Shape(r.Marshal())
	if err != nil {
		t.Fatalf("%v\n%s", err, r.Marshal())
	}
	want := `GetPoliciesResponse
 response
  policyID policyFriendlyName nextUpdateHours policiesNotChanged~
  policies
   policy
    policyOIDReference
    cAs
     cAReference cAReference
    attributes
     commonName policySchema
     certificateValidity
      validityPeriodSeconds renewalPeriodSeconds
     permission
      enroll autoEnroll
     privateKeyAttributes
      minimalKeyLength keySpec keyUsageProperty permissions algorithmOIDReference
      cryptoProviders
       provider
     revision
      majorRevision minorRevision
     supersededPolicies
      commonName
     privateKeyFlags subjectNameFlags enrollmentFlags generalFlags hashAlgorithmOIDReference
     rARequirements
      rASignatures
      rAEKUs
       oIDReference
      rAPolicies
       oIDReference
     keyArchivalAttributes
      symmetricAlgorithmOIDReference symmetricAlgorithmKeyLength
     extensions
      extension
       oIDReference critical value
      extension
       oIDReference critical value~
 cAs
  cA
   uris
    cAURI
     clientAuthentication uri priority renewalOnly
    cAURI
     clientAuthentication uri priority renewalOnly
   certificate enrollPermission cAReferenceID
 oIDs
  oID
   value group oIDReferenceID defaultName~`
	if d := soaptest.Diff(got, outline(want), false); d != "" {
		t.Errorf("Marshal order: %s\n%s", d, r.Marshal())
	}

	// Nothing set: every nillable element is nil.
	got, _ = soaptest.Shape(Response{PolicyID: "id", PoliciesNotChanged: true, Policies: r.Policies}.Marshal())
	want = `GetPoliciesResponse
 response
  policyID policyFriendlyName~ nextUpdateHours~ policiesNotChanged policies~
 cAs~ oIDs~`
	if d := soaptest.Diff(got, outline(want), false); d != "" {
		t.Errorf("Marshal(empty) = %s", d)
	}
}

// outline turns an indented list of names (a trailing ~ marks xsi:nil) into nodes in the
// MS-XCEP namespace.
func outline(s string) []soaptest.Node {
	var nodes []soaptest.Node
	for _, line := range strings.Split(s, "\n") {
		depth := len(line) - len(strings.TrimLeft(line, " "))
		for _, f := range strings.Fields(line) {
			n := soaptest.Node{Depth: depth, Name: xml.Name{Space: Namespace, Local: strings.TrimSuffix(f, "~")}, Nil: strings.HasSuffix(f, "~")}
			nodes = append(nodes, n)
		}
	}
	return nodes
}

func TestMarshalEscapes(t *testing.T) {
	out := Response{PolicyID: `<&">`, PolicyFriendlyName: "a]]>b"}.Marshal()
	var v struct {
		Response struct {
			PolicyID string `xml:"policyID"`
			Name     string `xml:"policyFriendlyName"`
		} `xml:"response"`
	}
	if err := xml.Unmarshal(out, &v); err != nil || v.Response.PolicyID != `<&">` || v.Response.Name != "a]]>b" {
		t.Errorf("Marshal = %s: %+v, %v", out, v, err)
	}
}

// FuzzParseRequest feeds client bytes through soap.Parse and ParseRequest, and also straight
// to ParseRequest as a body. Neither may panic.
func FuzzParseRequest(f *testing.F) {
	for _, c := range captures {
		b, err := os.ReadFile(c + ".xml")
		if err != nil {
			f.Fatal(err)
		}
		f.Add(soaptest.StripCapture(b))
	}
	f.Add([]byte(request(GetPoliciesAction, `<GetPolicies xmlns="`+Namespace+`"><client><lastUpdate>2026-11-20T10:00:00Z</lastUpdate></client><requestFilter><policyOIDs><oid>1.2</oid></policyOIDs><clientVersion>1</clientVersion></requestFilter></GetPolicies>`)))
	f.Fuzz(func(t *testing.T, data []byte) {
		if env, err := soap.Parse(bytes.NewReader(data)); err == nil {
			_, _ = ParseRequest(env)
		}
		_, _ = ParseRequest(&soap.Envelope{Action: GetPoliciesAction, BodyName: xml.Name{Space: Namespace, Local: "GetPolicies"}, Body: data})
	})
}

func TestCapturesPresent(t *testing.T) {
	files, _ := filepath.Glob("testdata/*.xml")
	if len(files) != 4 {
		t.Errorf("testdata holds %d captures, want 4", len(files))
	}
}
