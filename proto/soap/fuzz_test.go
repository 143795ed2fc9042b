package soap

import (
	"bytes"
	"encoding/xml"
	"os"
	"path/filepath"
	"testing"

	"github.com/enrollment-appliance/aeappliance/proto/soap/soaptest"
)

// FuzzParse feeds client bytes to Parse, seeded with the captured messages. It may refuse them
// but must not panic, and what it accepts must have an Action and a Body that stands alone.
func FuzzParse(f *testing.F) {
	files, _ := filepath.Glob("testdata/*.xml")
	for _, file := range files {
		b, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(soaptest.StripCapture(b))
	}
	f.Add([]byte(envelope(action, `<op xmlns="urn:op"><a b="c">d</a><e xmlns=""/></op>`)))
	f.Add([]byte(`<!DOCTYPE x [<!ENTITY a "b">]>` + envelope(action, "<op>&a;</op>")))
	f.Fuzz(func(t *testing.T, data []byte) {
		env, err := Parse(bytes.NewReader(data))
		if err != nil {
			return
		}
		if env.Action == "" || len(env.Body) == 0 {
			t.Fatalf("Parse accepted %q without Action or Body: %+v", data, env)
		}
		d := xml.NewDecoder(bytes.NewReader(env.Body))
		for {
			tok, err := d.Token()
			if err != nil {
				t.Fatalf("Body %q of accepted %q does not parse alone: %v", env.Body, data, err)
			}
			if se, ok := tok.(xml.StartElement); ok {
				if se.Name != env.BodyName {
					t.Fatalf("Body starts with %v, BodyName is %v", se.Name, env.BodyName)
				}
				break
			}
		}
	})
}
