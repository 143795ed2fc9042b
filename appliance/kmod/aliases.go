package kmod

import (
	"bufio"
	"fmt"
	"os"
	"sort"
	"strings"
)

// AliasPath is where the image keeps the device aliases and dependencies of the modules
// in ListPath: the list's path with ".alias" added (see AliasPathFor).
const AliasPath = ListPath + ".alias"

// AliasPathFor is the alias file that goes with the module list at list.
func AliasPathFor(list string) string { return list + ".alias" }

// Aliases is what an alias file says about the modules of a list. The file is text, one
// statement a line; blank lines and lines starting with # are ignored, fields are
// separated by single spaces, module names are the kernel's (underscores, no ".ko"):
//
//	alias PATTERN MODULE    load MODULE for a device whose modalias matches PATTERN
//	always MODULE           load MODULE at every boot (it has no device alias)
//	dep MODULE DEP...       load DEP... before MODULE (modinfo depends= and soft pre-deps)
//	post MODULE MOD...      whenever MODULE is loaded, load MOD... too
//
// PATTERN is a shell glob as modinfo prints it (pci:v00008086d000010D3sv*sd*bc*sc*i*),
// matched as fnmatch(3) does ("*", "?", "[...]", "\\" quotes the next character); it is
// everything between the first and the last space of its line. The image builder writes
// the lines sorted, so that the file is the same for the same kernel and module list;
// readers do not depend on the order. Loading always follows the module list's order,
// which puts dependencies first.
type Aliases struct {
	Patterns []Alias             // device alias patterns
	Always   []string            // modules loaded at every boot
	Deps     map[string][]string // module -> modules it needs loaded first
	Post     map[string][]string // module -> modules loaded along with it
}

// Alias is one device alias pattern and the module that provides it.
type Alias struct {
	Pattern string
	Module  string
}

// ReadAliases reads an alias file.
func ReadAliases(path string) (Aliases, error) {
	f, err := os.Open(path)
	if err != nil {
		return Aliases{}, fmt.Errorf("kmod: %w", err)
	}
	defer f.Close()
	a := Aliases{Deps: map[string][]string{}, Post: map[string][]string{}}
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		if err := a.parseLine(sc.Text()); err != nil {
			return Aliases{}, fmt.Errorf("kmod: %s:%d: %w", path, n, err)
		}
	}
	if err := sc.Err(); err != nil {
		return Aliases{}, fmt.Errorf("kmod: reading %s: %w", path, err)
	}
	return a, nil
}

// parseLine adds one line of an alias file to a.
func (a *Aliases) parseLine(l string) error {
	if l == "" || strings.HasPrefix(l, "#") {
		return nil
	}
	kind, rest, _ := strings.Cut(l, " ")
	f := strings.Split(rest, " ")
	for _, m := range f {
		if m == "" && kind != "alias" {
			return fmt.Errorf("empty field in %q", l)
		}
	}
	switch kind {
	case "alias":
		i := strings.LastIndexByte(rest, ' ')
		if i <= 0 || i == len(rest)-1 {
			return fmt.Errorf("want \"alias PATTERN MODULE\", have %q", l)
		}
		a.Patterns = append(a.Patterns, Alias{Pattern: rest[:i], Module: rest[i+1:]})
	case "always":
		if len(f) != 1 {
			return fmt.Errorf("want \"always MODULE\", have %q", l)
		}
		a.Always = append(a.Always, f[0])
	case "dep", "post":
		if len(f) < 2 {
			return fmt.Errorf("want \"%s MODULE MODULE...\", have %q", kind, l)
		}
		if kind == "dep" {
			a.Deps[f[0]] = append(a.Deps[f[0]], f[1:]...)
		} else {
			a.Post[f[0]] = append(a.Post[f[0]], f[1:]...)
		}
	default:
		return fmt.Errorf("unknown statement %q", kind)
	}
	return nil
}

// matcher finds the modules whose patterns match a modalias. Patterns are indexed by
// their literal beginning (up to the first special character): a modalias can only
// match the patterns whose beginning it starts with, so each modalias is compared with a
// few patterns rather than the thousands (ahci alone has 300) of the image.
type matcher struct {
	byPrefix map[string][]Alias
	lens     []int // the distinct lengths of the keys of byPrefix
}

func newMatcher(patterns []Alias) *matcher {
	m := &matcher{byPrefix: map[string][]Alias{}}
	for _, p := range patterns {
		pre := p.Pattern[:literalPrefix(p.Pattern)]
		if _, ok := m.byPrefix[pre]; !ok {
			m.lens = append(m.lens, len(pre))
		}
		m.byPrefix[pre] = append(m.byPrefix[pre], p)
	}
	sort.Ints(m.lens)
	m.lens = compactInts(m.lens)
	return m
}

// modules calls add with the module of every pattern modalias matches.
func (m *matcher) modules(modalias string, add func(module string)) {
	for _, n := range m.lens {
		if n > len(modalias) {
			break
		}
		for _, p := range m.byPrefix[modalias[:n]] {
			if match(p.Pattern, modalias) {
				add(p.Module)
			}
		}
	}
}

func compactInts(s []int) []int {
	var out []int
	for i, v := range s {
		if i == 0 || v != s[i-1] {
			out = append(out, v)
		}
	}
	return out
}

// literalPrefix is the length of the beginning of pattern that holds no special
// character.
func literalPrefix(pattern string) int {
	if i := strings.IndexAny(pattern, `*?[\`); i >= 0 {
		return i
	}
	return len(pattern)
}

// match reports whether name matches the shell pattern as fnmatch(3) without flags does:
// "*" matches any string ("/" included), "?" any one byte, "[...]" one byte of a set
// ("!" or "^" first negates it, "a-z" is a range, "]" first is literal; an unclosed "["
// is literal), and "\\" makes the next character literal. Modaliases are ASCII.
func match(pattern, name string) bool {
	px, nx := 0, 0
	starPx, starNx := -1, -1 // where to go back to after a mismatch: the last "*"
	for px < len(pattern) || nx < len(name) {
		if px < len(pattern) {
			if pattern[px] == '*' {
				starPx, starNx = px, nx+1
				px++
				continue
			}
			if nx < len(name) {
				if w, ok := matchOne(pattern[px:], name[nx]); ok {
					px += w
					nx++
					continue
				}
			}
		}
		if starPx >= 0 && starNx <= len(name) {
			px, nx = starPx+1, starNx
			starNx++
			continue
		}
		return false
	}
	return true
}

// matchOne matches c against the token at the start of p (not "*"), returning the
// token's length and whether c matches it.
func matchOne(p string, c byte) (int, bool) {
	switch p[0] {
	case '?':
		return 1, true
	case '\\':
		if len(p) > 1 {
			return 2, p[1] == c
		}
		return 1, c == '\\'
	case '[':
		if w, ok, valid := matchClass(p, c); valid {
			return w, ok
		}
		return 1, c == '['
	}
	return 1, p[0] == c
}

// matchClass matches c against the bracket expression at the start of p; valid is false
// when the expression is not closed.
func matchClass(p string, c byte) (width int, ok, valid bool) {
	i := 1
	negate := i < len(p) && (p[i] == '!' || p[i] == '^')
	if negate {
		i++
	}
	in := false
	for first := true; i < len(p); first = false {
		if p[i] == ']' && !first {
			return i + 1, in != negate, true
		}
		lo, n := classChar(p[i:])
		i += n
		hi := lo
		if i+1 < len(p) && p[i] == '-' && p[i+1] != ']' {
			hi, n = classChar(p[i+1:])
			i += 1 + n
		}
		if lo <= c && c <= hi {
			in = true
		}
	}
	return 0, false, false
}

// classChar is the character at the start of a bracket expression's remainder p, with
// "\\" quoting the next one, and how many bytes it takes.
func classChar(p string) (byte, int) {
	if p[0] == '\\' && len(p) > 1 {
		return p[1], 2
	}
	return p[0], 1
}
