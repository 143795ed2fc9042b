package store

import (
	"strings"
	"testing"
	"unicode/utf8"
)

func TestDecodeName(t *testing.T) {
	for _, tc := range []struct {
		dir  string
		name string // "" for a directory that stands for no template
	}{
		{"Web", "Web"},
		{"My%20Template", "My Template"},
		{"%61rchive", "archive"},
		{"%2Ehidden", ".hidden"},
		{"x%2Ejson", "x.json"},
		{"%C3%9C", "Ü"},
		{"archive", ""},
		{"pending", ""},
		{".lock", ""},
		{".staging-abc", ""},
		{"x.json", ""},
		{"%41", ""},        // 'A' needs no escape
		{"%c3%9c", ""},     // lower-case hex
		{"%FF", ""},        // not UTF-8
		{"%2", ""},         // cut short
		{"%zz", ""},        // not hex
		{"a b", ""},        // space not escaped
		{"%61rchive2", ""}, // not reserved: 'a' needs no escape
		{"", ""},
	} {
		name, ok := decodeName(tc.dir)
		if ok != (tc.name != "") || ok && name != tc.name {
			t.Errorf("decodeName(%q) = %q, %v, want %q", tc.dir, name, ok, tc.name)
		}
	}
}

func FuzzName(f *testing.F) {
	for _, s := range []string{"Web", "My Template", "archive", ".x", "a/b", "x.json", "%41", "Ü", "%2E.json", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		// Every name round-trips through a safe directory name.
		if enc, err := encodeName(s); err == nil {
			if dec, ok := decodeName(enc); !ok || dec != s {
				t.Errorf("decodeName(encodeName(%q) = %q) = %q, %v", s, enc, dec, ok)
			}
			if strings.HasPrefix(enc, ".") || enc == archiveDir || enc == pendingDir || strings.HasSuffix(enc, jsonSuffix) || strings.Trim(enc, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-%") != "" {
				t.Errorf("encodeName(%q) = %q, not a safe directory name", s, enc)
			}
		} else if s != "" && utf8.ValidString(s) {
			t.Errorf("encodeName(%q) = %v", s, err)
		}
		// Every directory stands for at most one name.
		if dec, ok := decodeName(s); ok {
			if enc, err := encodeName(dec); err != nil || enc != s {
				t.Errorf("encodeName(decodeName(%q) = %q) = %q, %v", s, dec, enc, err)
			}
		}
	})
}
