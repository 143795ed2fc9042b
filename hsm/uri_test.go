package hsm

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestParseURI(t *testing.T) {
	tests := []struct {
		in    string
		want  URI
		canon string
	}{
		{"pkcs11:", URI{}, "pkcs11:"},
		{"pkcs11:token=My%20CA;object=ca-key;id=%01%02;type=private",
			URI{Token: "My CA", Object: "ca-key", ID: []byte{1, 2}, Type: "private"},
			"pkcs11:token=My%20CA;object=ca-key;id=%01%02;type=private"},
		{"pkcs11:type=private;id=%01;object=ca;serial=12bf3cd0a00f9adb;token=CA?pin-source=/run/pin&module-path=/usr/lib/softhsm/libsofthsm2.so",
			URI{Token: "CA", Serial: "12bf3cd0a00f9adb", Object: "ca", ID: []byte{1}, Type: "private",
				ModulePath: "/usr/lib/softhsm/libsofthsm2.so", PINSource: "/run/pin"},
			"pkcs11:token=CA;serial=12bf3cd0a00f9adb;object=ca;id=%01;type=private?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=/run/pin"},
		{"PKCS11:object=a", URI{Object: "a"}, "pkcs11:object=a"},
		{"pkcs11:object=a%3bb;id=abc", URI{Object: "a;b", ID: []byte("abc")}, "pkcs11:object=a%3Bb;id=%61%62%63"},
		{"pkcs11:object=x&y:z", URI{Object: "x&y:z"}, "pkcs11:object=x%26y%3Az"},
		{"pkcs11:manufacturer=SoftHSM%20project;model=x;x-vendor=1;object=k", URI{Object: "k"}, "pkcs11:object=k"},
		{"pkcs11:id=;token=", URI{}, "pkcs11:"},
		{"pkcs11:object=k?module-name=softhsm2&x=1", URI{Object: "k"}, "pkcs11:object=k"},
		{"pkcs11:object=%E2%82%AC", URI{Object: "€"}, "pkcs11:object=%E2%82%AC"},
	}
	for _, tt := range tests {
		got, err := ParseURI(tt.in)
		if err != nil {
			t.Errorf("ParseURI(%q) error: %v", tt.in, err)
			continue
		}
		if !reflect.DeepEqual(got, tt.want) {
			t.Errorf("ParseURI(%q) = %#v, want %#v", tt.in, got, tt.want)
		}
		if s := got.String(); s != tt.canon {
			t.Errorf("ParseURI(%q).String() = %q, want %q", tt.in, s, tt.canon)
		}
		back, err := ParseURI(got.String())
		if err != nil || !reflect.DeepEqual(back, got) {
			t.Errorf("ParseURI(%q) = %#v, %v; want %#v", got.String(), back, err, got)
		}
	}
}

func TestParseURIInvalid(t *testing.T) {
	tests := []struct{ in, why string }{
		{"", "start with"},
		{"pkcs11", "start with"},
		{"pkcs1:object=a", "start with"},
		{"file:object=a", "start with"},
		{"pkcs11:object", "name=value"},
		{"pkcs11:=a", "name=value"},
		{"pkcs11:object=a;", "name=value"},
		{"pkcs11:;object=a", "name=value"},
		{"pkcs11:object=a;object=b", "repeats"},
		{"pkcs11:id=%01;id=%02", "repeats"},
		{"pkcs11:object=a%", "truncated"},
		{"pkcs11:object=a%4", "truncated"},
		{"pkcs11:object=a%zz", "malformed"},
		{"pkcs11:object=a b", "percent-encoded"},
		{"pkcs11:object=a/b", "percent-encoded"},
		{"pkcs11:object=ä", "percent-encoded"},
		{"pkcs11:type=secret", "type"},
		{"pkcs11:type=", "type"},
		{"pkcs11:slot-id=1", "slot-id"},
		{"pkcs11:object=a?pin-value=1234", "pin-value"},
		{"pkcs11:object=a?pin-source=a&pin-source=b", "repeats"},
		{"pkcs11:object=a?pin-source", "name=value"},
		{"pkcs11:object=a?module-path=/x y", "percent-encoded"},
		{"pkcs11:object=a#frag", "fragment"},
		{"pkcs11:ob<ject=a", "name"},
		{"pkcs11:object=" + strings.Repeat("a", maxURILen), "longer"},
	}
	for _, tt := range tests {
		u, err := ParseURI(tt.in)
		if err == nil {
			t.Errorf("ParseURI(%q) = %#v, want error (%s)", tt.in, u, tt.why)
			continue
		}
		if !strings.Contains(err.Error(), tt.why) {
			t.Errorf("ParseURI(%q) error = %q, want it to mention %q", tt.in, err, tt.why)
		}
	}
	// A refused pin-value is never echoed.
	if _, err := ParseURI("pkcs11:object=a?pin-value=s3cr3t-PIN"); err == nil || strings.Contains(err.Error(), "s3cr3t") {
		t.Errorf("ParseURI with pin-value: error %v, want one without the PIN", err)
	}
}

func FuzzParseURI(f *testing.F) {
	for _, s := range []string{
		"pkcs11:",
		"pkcs11:token=My%20CA;object=ca-key;id=%01%02;type=private",
		"pkcs11:token=CA;serial=1;object=ca;id=%01;type=cert?module-path=/usr/lib/x.so&pin-source=file:/run/pin",
		"pkcs11:object=a%3bb&c;id=abc?x=%2F",
		"pkcs11:object=a;object=b",
		"pkcs11:object=%zz",
		"pkcs11:id=;token=?",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		u, err := ParseURI(s)
		if err != nil {
			return
		}
		out := u.String()
		back, err := ParseURI(out)
		if err != nil {
			t.Fatalf("ParseURI(%q) ok, but its String() %q does not parse: %v", s, out, err)
		}
		if !uriEqual(u, back) {
			t.Fatalf("ParseURI(%q) = %#v; String() %q parses to %#v", s, u, out, back)
		}
		if back.String() != out {
			t.Fatalf("String() not canonical: %q then %q", out, back.String())
		}
	})
}

func uriEqual(a, b URI) bool {
	return a.Token == b.Token && a.Serial == b.Serial && a.Object == b.Object && bytes.Equal(a.ID, b.ID) &&
		a.Type == b.Type && a.ModulePath == b.ModulePath && a.PINSource == b.PINSource
}

func TestParseKeyType(t *testing.T) {
	for _, kt := range KeyTypes() {
		got, err := ParseKeyType(strings.ToUpper(string(kt)))
		if err != nil || got != kt {
			t.Errorf("ParseKeyType(%q) = %q, %v, want %q", strings.ToUpper(string(kt)), got, err, kt)
		}
	}
	_, err := ParseKeyType("ed25519")
	if err == nil {
		t.Fatal("ParseKeyType(ed25519) succeeded")
	}
	for _, kt := range KeyTypes() {
		if !strings.Contains(err.Error(), string(kt)) {
			t.Errorf("ParseKeyType(ed25519) error %q does not name %s", err, kt)
		}
	}
	if n := len(KeyTypes()); n != 5 {
		t.Errorf("len(KeyTypes()) = %d, want 5", n)
	}
}

func TestReadPIN(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	tests := []struct {
		file, env string
		want      string
		wantErr   string
	}{
		{file: write("lf", "1234\n"), want: "1234"},
		{file: write("crlf", "1234\r\n"), want: "1234"},
		{file: write("plain", "12 34"), want: "12 34"},
		{file: write("empty", "\n"), wantErr: "empty"},
		{file: write("two", "1234\n\n"), wantErr: "newline"},
		{file: filepath.Join(dir, "missing"), wantErr: "missing"},
		{env: "HSM_TEST_PIN", want: "env-pin-5678"},
		{env: "HSM_TEST_PIN_UNSET", wantErr: "HSM_TEST_PIN_UNSET"},
		{wantErr: "no PIN source"},
	}
	t.Setenv("HSM_TEST_PIN", "env-pin-5678")
	for _, tt := range tests {
		got, err := ReadPIN(tt.file, tt.env)
		switch {
		case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
			t.Errorf("ReadPIN(%q, %q) = %q, %v, want error with %q", tt.file, tt.env, got, err, tt.wantErr)
		case tt.wantErr == "" && (err != nil || got != tt.want):
			t.Errorf("ReadPIN(%q, %q) = %q, %v, want %q", tt.file, tt.env, got, err, tt.want)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "big"), bytes.Repeat([]byte("7"), maxPINFile+1), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadPIN(filepath.Join(dir, "big"), ""); err == nil || strings.Contains(err.Error(), "7777") {
		t.Errorf("ReadPIN(big) error = %v, want a size error without the content", err)
	}
}

func TestConfigValidation(t *testing.T) {
	module := filepath.Join(t.TempDir(), "module.so")
	if err := os.WriteFile(module, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	ok := Config{ModulePath: module, TokenLabel: "CA", PIN: "secret-pin-1"}
	tests := []struct {
		mod     func(*Config)
		wantErr string
	}{
		{func(c *Config) { c.ModulePath = "" }, "ModulePath"},
		{func(c *Config) { c.ModulePath = "/nonexistent/lib.so" }, "/nonexistent/lib.so"},
		{func(c *Config) { c.TokenLabel = "" }, "TokenLabel"},
		{func(c *Config) { c.TokenLabel = strings.Repeat("x", 33) }, "TokenLabel"},
		{func(c *Config) { c.PIN = "" }, "PIN"},
		{func(c *Config) { c.Sessions = -1 }, "Sessions"},
		{func(c *Config) { c.PoolWaitTimeout = -1 }, "PoolWaitTimeout"},
		{func(c *Config) { c.SignTimeout = -1 }, "SignTimeout"},
	}
	for i, tt := range tests {
		c := ok
		tt.mod(&c)
		_, err := c.withDefaults()
		if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
			t.Errorf("case %d: withDefaults() error = %v, want one naming %q", i, err, tt.wantErr)
		}
		if err != nil && strings.Contains(err.Error(), "secret-pin-1") {
			t.Errorf("case %d: error %q contains the PIN", i, err)
		}
	}
	c, err := ok.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	if c.Sessions != DefaultSessions || c.PoolWaitTimeout != DefaultPoolWaitTimeout ||
		c.SignTimeout != DefaultSignTimeout || c.HealthInterval != DefaultHealthInterval || c.Logger == nil {
		t.Errorf("withDefaults() = %v, want defaults filled in", c)
	}
	if _, err := (Config{ModulePath: "/nonexistent/lib.so", TokenLabel: "x", PIN: "y"}).withDefaults(); !errors.Is(err, ErrModule) {
		t.Errorf("missing module: error %v does not wrap ErrModule", err)
	}

	var buf bytes.Buffer
	slog.New(slog.NewTextHandler(&buf, nil)).Info("cfg", "config", ok)
	for _, s := range []string{fmt.Sprint(ok), fmt.Sprintf("%+v", ok), fmt.Sprintf("%#v", ok), buf.String()} {
		if strings.Contains(s, "secret-pin-1") {
			t.Errorf("formatted Config shows the PIN: %s", s)
		}
	}
}
