package release

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestHSMRoundTrip(t *testing.T) {
	p := filepath.Join(t.TempDir(), "hsm.json")
	want := HSM{Module: "/usr/lib/pkcs11/libsofthsm2.so", SoftHSM: true}
	b := want.Marshal()
	if got := string(b); got != "{\n  \"module\": \"/usr/lib/pkcs11/libsofthsm2.so\",\n  \"softhsm\": true\n}\n" {
		t.Errorf("Marshal = %q", got)
	}
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := ReadHSM(p)
	if err != nil || got != want {
		t.Errorf("ReadHSM = %+v, %v; want %+v", got, err, want)
	}
	// A vendor module: softhsm is false and still written.
	if s := string(HSM{Module: "/usr/lib/pkcs11/libvendor.so"}.Marshal()); !strings.Contains(s, `"softhsm": false`) {
		t.Errorf("Marshal(vendor) = %s", s)
	}
}

func TestReadHSMErrors(t *testing.T) {
	dir := t.TempDir()
	for name, content := range map[string]string{"empty.json": `{"softhsm": true}`, "bad.json": `{`} {
		p := filepath.Join(dir, name)
		os.WriteFile(p, []byte(content), 0o644)
		if _, err := ReadHSM(p); err == nil || !strings.Contains(err.Error(), p) {
			t.Errorf("ReadHSM(%s) = %v, want an error naming the file", content, err)
		}
	}
	if _, err := ReadHSM(filepath.Join(dir, "missing.json")); err == nil {
		t.Error("ReadHSM(missing) = nil error")
	}
}

func TestReleaseDebugField(t *testing.T) {
	if s := string(Release{Version: "v1"}.Marshal()); strings.Contains(s, "debug") {
		t.Errorf("release build marshals a debug field:\n%s", s)
	}
	if s := string(Release{Version: "v1-debug", Debug: true}.Marshal()); !strings.Contains(s, `"debug": true`) {
		t.Errorf("debug build lacks \"debug\": true:\n%s", s)
	}
}
