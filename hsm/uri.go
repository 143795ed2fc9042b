package hsm

import (
	"errors"
	"fmt"
	"strings"
)

// URI is the subset of an RFC 7512 PKCS#11 URI this package uses, for example
//
//	pkcs11:token=My%20CA;object=ca-key;id=%01%02;type=private?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=/run/pin
//
// Path attributes: token (label), serial, object (CKA_LABEL), id (CKA_ID, bytes),
// type (public, private, cert, secret-key, data). Query attributes: module-path,
// pin-source. Other attributes of RFC 7512 and vendor attributes are ignored, as
// the RFC asks, with two exceptions that are rejected: slot-id (tokens are
// selected by label or serial only, because SoftHSM renumbers slots) and pin-value
// (PINs do not belong in URIs, which end up in configuration and logs; use
// pin-source or Config.PIN).
type URI struct {
	Token      string // token label
	Serial     string // token serial number
	Object     string // object label (CKA_LABEL)
	ID         []byte // object id (CKA_ID); empty is stored as nil
	Type       string // object class: "", "public", "private", "cert", "secret-key", "data"
	ModulePath string // module-path query attribute
	PINSource  string // pin-source query attribute (a file name or file: URI; never the PIN)
}

const (
	uriScheme = "pkcs11:"
	maxURILen = 4096
)

var uriTypes = map[string]bool{"public": true, "private": true, "cert": true, "secret-key": true, "data": true}

// ParseURI parses a PKCS#11 URI strictly: the scheme must be pkcs11, every
// attribute must be name=value, percent escapes must be well formed, characters
// outside RFC 7512's sets must be escaped and no attribute may appear twice.
// Errors name the offending attribute but never echo its value.
func ParseURI(s string) (URI, error) {
	var u URI
	if len(s) > maxURILen {
		return u, fmt.Errorf("hsm: PKCS#11 URI longer than %d bytes", maxURILen)
	}
	if len(s) < len(uriScheme) || !strings.EqualFold(s[:len(uriScheme)], uriScheme) {
		return u, errors.New(`hsm: PKCS#11 URI must start with "pkcs11:"`)
	}
	rest := s[len(uriScheme):]
	path, query, hasQuery := strings.Cut(rest, "?")
	if i := strings.IndexByte(rest, '#'); i >= 0 {
		return u, errors.New("hsm: PKCS#11 URI has a fragment ('#')")
	}

	seen := map[string]bool{}
	if path != "" {
		for _, attr := range strings.Split(path, ";") {
			name, raw, err := splitAttr(attr, "path")
			if err != nil {
				return URI{}, err
			}
			if seen[name] {
				return URI{}, fmt.Errorf("hsm: PKCS#11 URI repeats path attribute %q", name)
			}
			seen[name] = true
			val, err := unescape(raw, isPChar)
			if err != nil {
				return URI{}, fmt.Errorf("hsm: PKCS#11 URI attribute %q: %v", name, err)
			}
			switch name {
			case "token":
				u.Token = val
			case "serial":
				u.Serial = val
			case "object":
				u.Object = val
			case "id":
				if val != "" {
					u.ID = []byte(val)
				}
			case "type":
				if !uriTypes[val] {
					return URI{}, errors.New(`hsm: PKCS#11 URI attribute "type" must be public, private, cert, secret-key or data`)
				}
				u.Type = val
			case "slot-id":
				return URI{}, errors.New(`hsm: PKCS#11 URI attribute "slot-id" is not supported: select the token by token= or serial=`)
			}
		}
	}
	if hasQuery && query != "" {
		qseen := map[string]bool{}
		for _, attr := range strings.Split(query, "&") {
			name, raw, err := splitAttr(attr, "query")
			if err != nil {
				return URI{}, err
			}
			if name == "pin-value" {
				return URI{}, errors.New(`hsm: PKCS#11 URI attribute "pin-value" is refused: PINs do not belong in URIs; use pin-source`)
			}
			if qseen[name] {
				return URI{}, fmt.Errorf("hsm: PKCS#11 URI repeats query attribute %q", name)
			}
			qseen[name] = true
			val, err := unescape(raw, isQChar)
			if err != nil {
				return URI{}, fmt.Errorf("hsm: PKCS#11 URI attribute %q: %v", name, err)
			}
			switch name {
			case "module-path":
				u.ModulePath = val
			case "pin-source":
				u.PINSource = val
			}
		}
	}
	return u, nil
}

// splitAttr splits name=value and checks the name.
func splitAttr(attr, part string) (name, value string, err error) {
	name, value, ok := strings.Cut(attr, "=")
	if !ok || name == "" {
		return "", "", fmt.Errorf("hsm: PKCS#11 URI has a malformed %s attribute (want name=value)", part)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return "", "", fmt.Errorf("hsm: PKCS#11 URI has a malformed %s attribute name", part)
		}
	}
	return name, value, nil
}

func isUnreserved(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
		c == '-' || c == '.' || c == '_' || c == '~'
}

// isResAvail reports RFC 7512 pk11-res-avail.
func isResAvail(c byte) bool { return strings.IndexByte(":[]@!$'()*+,=", c) >= 0 }

// isPChar reports RFC 7512 pk11-pchar (without pct-encoded).
func isPChar(c byte) bool { return isUnreserved(c) || isResAvail(c) || c == '&' }

// isQChar reports RFC 7512 pk11-qchar (without pct-encoded).
func isQChar(c byte) bool {
	return isUnreserved(c) || isResAvail(c) || c == '/' || c == '?' || c == '|'
}

func unhex(c byte) (byte, bool) {
	switch {
	case c >= '0' && c <= '9':
		return c - '0', true
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10, true
	case c >= 'A' && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

func unescape(s string, allowed func(byte) bool) (string, error) {
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '%':
			if i+2 >= len(s) {
				return "", errors.New("truncated percent escape")
			}
			hi, ok1 := unhex(s[i+1])
			lo, ok2 := unhex(s[i+2])
			if !ok1 || !ok2 {
				return "", errors.New("malformed percent escape")
			}
			b.WriteByte(hi<<4 | lo)
			i += 2
		case allowed(c):
			b.WriteByte(c)
		default:
			return "", fmt.Errorf("character %q must be percent-encoded", c)
		}
	}
	return b.String(), nil
}

const hexDigits = "0123456789ABCDEF"

// escape percent-encodes every byte except RFC 3986 unreserved characters and,
// if keepSlash, '/'.
func escape(b *strings.Builder, s string, keepSlash bool) {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if isUnreserved(c) || keepSlash && c == '/' {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('%')
		b.WriteByte(hexDigits[c>>4])
		b.WriteByte(hexDigits[c&15])
	}
}

// String returns the canonical form: path attributes in the order token, serial,
// object, id, type; then module-path and pin-source. id is always fully
// percent-encoded. Empty fields are left out.
func (u URI) String() string {
	var b strings.Builder
	b.WriteString(uriScheme)
	sep := ""
	add := func(name, val string) {
		if val == "" {
			return
		}
		b.WriteString(sep)
		b.WriteString(name)
		b.WriteByte('=')
		sep = ";"
		escape(&b, val, false)
	}
	add("token", u.Token)
	add("serial", u.Serial)
	add("object", u.Object)
	if len(u.ID) > 0 {
		b.WriteString(sep)
		b.WriteString("id=")
		sep = ";"
		for _, c := range u.ID {
			b.WriteByte('%')
			b.WriteByte(hexDigits[c>>4])
			b.WriteByte(hexDigits[c&15])
		}
	}
	add("type", u.Type)
	qsep := "?"
	for _, q := range [...]struct{ name, val string }{{"module-path", u.ModulePath}, {"pin-source", u.PINSource}} {
		if q.val == "" {
			continue
		}
		b.WriteString(qsep)
		b.WriteString(q.name)
		b.WriteByte('=')
		qsep = "&"
		escape(&b, q.val, true)
	}
	return b.String()
}
