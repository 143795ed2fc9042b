package store

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
)

// Directory names of DIR that are not templates.
const (
	archiveDir    = "archive"
	pendingDir    = "pending"
	lockFile      = ".lock"
	stagingPrefix = ".staging-"
	jsonSuffix    = ".json"
)

// plainByte reports whether c may stand for itself in a directory name.
func plainByte(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
		c == '.' || c == '_' || c == '-'
}

// encodeName turns a template name into the name of its directory (see the package comment).
func encodeName(name string) (string, error) {
	if name == "" {
		return "", errors.New("empty template name")
	}
	if !utf8.ValidString(name) {
		return "", fmt.Errorf("template name %q is not valid UTF-8", name)
	}
	reserved := name == archiveDir || name == pendingDir
	jsonDot := -1
	if strings.HasSuffix(name, jsonSuffix) {
		jsonDot = len(name) - len(jsonSuffix)
	}
	var b strings.Builder
	for i := 0; i < len(name); i++ {
		c := name[i]
		escape := !plainByte(c) || i == 0 && (c == '.' || reserved) || i == jsonDot
		if escape {
			fmt.Fprintf(&b, "%%%02X", c)
		} else {
			b.WriteByte(c)
		}
	}
	return b.String(), nil
}

// decodeName reverses encodeName. It accepts only what encodeName writes, so that no two
// directories stand for the same template.
func decodeName(dir string) (string, bool) {
	if !strings.Contains(dir, "%") {
		// The common case, and the only one for names such as ".lock" or "archive".
		enc, err := encodeName(dir)
		return dir, err == nil && enc == dir
	}
	b := make([]byte, 0, len(dir))
	for i := 0; i < len(dir); i++ {
		if dir[i] != '%' {
			b = append(b, dir[i])
			continue
		}
		if i+2 >= len(dir) {
			return "", false
		}
		hi, ok1 := unhex(dir[i+1])
		lo, ok2 := unhex(dir[i+2])
		if !ok1 || !ok2 {
			return "", false
		}
		b = append(b, hi<<4|lo)
		i += 2
	}
	name := string(b)
	enc, err := encodeName(name)
	return name, err == nil && enc == dir
}

// unhex reads an upper-case hex digit (encodeName writes no other).
func unhex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}
