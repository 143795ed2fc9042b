package soap

import (
	"bytes"
	"encoding/xml"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/enrollment-appliance/aeappliance/proto/soap/soaptest"
)

var testNow = time.Date(2026, 11, 23, 8, 16, 42, 123e6, time.UTC)

// A reply around the captured bodies has exactly the structure, and the text, of the captured
// replies that cepces accepted.
func TestReplyMatchesCaptures(t *testing.T) {
	files, err := filepath.Glob("testdata/*.response.xml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no captured responses: %v", err)
	}
	for _, file := range files {
		captured, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		// The captured reply is itself a SOAP 1.2 envelope: take its Action and body from it.
		env, err := Parse(bytes.NewReader(captured))
		if err != nil {
			t.Fatalf("Parse(%s) = %v", file, err)
		}
		want, err := soaptest.Shape(captured)
		if err != nil {
			t.Fatal(err)
		}
		var relatesTo string
		for _, n := range want {
			if n.Name.Local == "RelatesTo" {
				relatesTo = n.Text
			}
		}
		out := Reply(env.Action, relatesTo, env.Body, testNow, false)
		got, err := soaptest.Shape(out)
		if err != nil {
			t.Fatalf("Reply for %s does not parse: %v\n%s", file, err, out)
		}
		if d := soaptest.Diff(got, want, true); d != "" {
			t.Errorf("Reply for %s differs from the capture: %s\n%s", file, d, out)
		}
	}
}

func TestReplyTimestamp(t *testing.T) {
	out := Reply("urn:act", "urn:uuid:1", []byte(`<r xmlns="urn:r"/>`), testNow, true)
	got, err := soaptest.Shape(out)
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	n := func(ns, local, text string, depth int) soaptest.Node {
		return soaptest.Node{Depth: depth, Name: xml.Name{Space: ns, Local: local}, Text: text}
	}
	want := []soaptest.Node{
		n(NS12, "Envelope", "", 0),
		n(NS12, "Header", "", 1),
		n(NSAddressing, "Action", "urn:act", 2),
		n(NSAddressing, "RelatesTo", "urn:uuid:1", 2),
		n(NSSecExt, "Security", "", 2),
		n(NSUtility, "Timestamp", "", 3),
		n(NSUtility, "Created", "2026-11-23T08:16:42.123Z", 4),
		n(NSUtility, "Expires", "2026-11-23T08:21:42.123Z", 4),
		n(NS12, "Body", "", 1),
		n("urn:r", "r", "", 2),
	}
	if d := soaptest.Diff(got, want, true); d != "" {
		t.Errorf("Reply(withTimestamp) = %s\n%s", d, out)
	}
	// A reply without RelatesTo (the request had no MessageID) leaves the header out.
	if out := Reply("urn:act", "", nil, testNow, false); bytes.Contains(out, []byte("RelatesTo")) {
		t.Errorf("Reply without relatesTo = %s", out)
	}
}

func TestFault(t *testing.T) {
	detail := []byte(`<d:Detail xmlns:d="urn:d">x</d:Detail>`)
	tests := []struct {
		name    string
		out     []byte
		code    string
		subcode string
		detail  bool
	}{
		{"receiver", Fault(false, `denied: <"&">`, detail, "urn:uuid:1"), "s:Receiver", "", true},
		{"sender", Fault(true, "bad", nil, "urn:uuid:1"), "s:Sender", "", false},
		{"subcode", FaultWithSubcode(true, xml.Name{Space: NSSecExt, Local: "FailedAuthentication"}, "no", nil, ""), "s:Sender", "sc:FailedAuthentication", false},
	}
	for _, tt := range tests {
		env, err := Parse(bytes.NewReader(tt.out))
		if err != nil {
			t.Errorf("Fault(%s) does not parse: %v\n%s", tt.name, err, tt.out)
			continue
		}
		if env.Action != FaultAction || env.BodyName != (xml.Name{Space: NS12, Local: "Fault"}) {
			t.Errorf("Fault(%s) = Action %q Body %v", tt.name, env.Action, env.BodyName)
		}
		var f struct {
			Code struct {
				Value   string `xml:"Value"`
				Subcode struct {
					Value string `xml:"Value"`
				} `xml:"Subcode"`
			} `xml:"Code"`
			Reason struct {
				Text struct {
					Lang string `xml:"http://www.w3.org/XML/1998/namespace lang,attr"`
					Text string `xml:",chardata"`
				} `xml:"Text"`
			} `xml:"Reason"`
			Detail *struct {
				Inner []byte `xml:",innerxml"`
			} `xml:"Detail"`
		}
		if err := xml.Unmarshal(env.Body, &f); err != nil {
			t.Fatal(err)
		}
		if f.Code.Value != tt.code || f.Code.Subcode.Value != tt.subcode || f.Reason.Text.Lang != "en-US" || (f.Detail != nil) != tt.detail {
			t.Errorf("Fault(%s) = %+v", tt.name, f)
		}
	}
	// Reason text is escaped.
	env, _ := Parse(bytes.NewReader(tests[0].out))
	if !strings.Contains(string(tests[0].out), "denied: &lt;&#34;&amp;&#34;&gt;") || env == nil {
		t.Errorf("Fault reason not escaped: %s", tests[0].out)
	}
}
