package wsclient

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/enrollment-appliance/aeappliance/proto/soap/soaptest"
)

// FuzzReply feeds reply bodies to the reply parsers: they return values or errors, never panic.
func FuzzReply(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join("testdata", "*.response.xml"))
	for _, name := range files {
		b, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(soaptest.StripCapture(b))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := parseResponse(data)
		if err != nil {
			return
		}
		_ = httpError("https://h/x", 500, r, nil, data)
		if r.Body.GetPolicies != nil {
			_, _ = r.Body.GetPolicies.policies()
		}
		_, _ = r.result()
	})
}
