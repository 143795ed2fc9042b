// Package aeappliance_test holds the tests of the module as a whole: the import rules drawn in
// docs/architecture.md.
package aeappliance_test

import (
	"bufio"
	"bytes"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

const module = "github.com/enrollment-appliance/aeappliance/"

// importRule says that the packages matched by From (go list patterns, relative to the module)
// must not depend, directly or not, on any package whose import path starts with one of Deny,
// nor, when Only is set, on any package of this module outside Only.
type importRule struct {
	From []string
	Deny []string
	Only []string
	Why  string
}

var importRules = []importRule{
	{From: []string{"./cmd/aeagent"}, Why: "the Linux client links no server code",
		Deny: []string{"github.com/zmap/zlint", "modernc.org/sqlite", "github.com/jackc/pgx", "github.com/labstack/echo",
			"github.com/go-ldap/ldap", module + "enrollsvc", module + "appliance", module + "firmware", module + "provisioning"}},
	{From: []string{"./cmd/aectl"}, Why: "the admin CLI talks to the API through apiclient",
		Deny: []string{"github.com/zmap/zlint", "modernc.org/sqlite", "github.com/jackc/pgx", "github.com/go-ldap/ldap",
			module + "enrollsvc"}},
	{From: []string{"./cmd/appinit"}, Why: "the image's init runs the service as a separate program",
		Deny: []string{"github.com/zmap/zlint", "modernc.org/sqlite", "github.com/jackc/pgx", "github.com/go-ldap/ldap",
			module + "enrollsvc"}},
	{From: []string{"./enrollsvc/..."}, Why: "the appliance hands the service what it needs through interfaces",
		Deny: []string{module + "appliance", module + "firmware", module + "cmd"}},
	{From: []string{"./proto/..."}, Why: "wire formats are shared by every side and import nothing of ours but each other",
		Only: []string{module + "proto"}},
	{From: []string{"./apiclient/...", "./config/..."}, Why: "the API's client and the data directory's layout link no server code",
		Only: []string{module + "apiclient", module + "config"}},
	{From: []string{"./ratelimit/..."}, Why: "the limiter is a leaf every edge may use",
		Only: []string{module + "ratelimit"}},
	{From: []string{"./internal/freeport"}, Why: "the test port picker is a leaf",
		Only: []string{module + "internal/freeport"}},
}

// deps is `go list -deps` of pattern: every package the matched packages depend on (tests not
// included), with its direct imports.
func deps(t *testing.T, pattern string) (roots []string, imports map[string][]string) {
	t.Helper()
	out, err := exec.Command("go", "list", "-f", "{{.ImportPath}}", pattern).Output()
	if err != nil {
		t.Fatalf("go list %s: %v", pattern, err)
	}
	roots = strings.Fields(string(out))
	out, err = exec.Command("go", "list", "-deps", "-f", "{{.ImportPath}} {{join .Imports \" \"}}", pattern).Output()
	if err != nil {
		t.Fatalf("go list -deps %s: %v", pattern, err)
	}
	imports = map[string][]string{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) > 0 {
			imports[f[0]] = f[1:]
		}
	}
	return roots, imports
}

// chain is the import path from root to a package with prefix deny, or nil.
func chain(root string, imports map[string][]string, deny string) []string {
	prev := map[string]string{root: ""}
	queue := []string{root}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		if p != root && (p == deny || strings.HasPrefix(p, deny+"/") || strings.HasPrefix(p, deny) && strings.HasSuffix(deny, "/")) {
			var path []string
			for q := p; q != ""; q = prev[q] {
				path = append(path, q)
			}
			slices.Reverse(path)
			return path
		}
		for _, i := range imports[p] {
			if _, seen := prev[i]; !seen {
				prev[i] = p
				queue = append(queue, i)
			}
		}
	}
	return nil
}

// The import rules of docs/architecture.md hold.
func TestImportRules(t *testing.T) {
	if testing.Short() {
		t.Skip("go list over the module")
	}
	for _, r := range importRules {
		for _, from := range r.From {
			roots, imports := deps(t, from)
			for _, root := range roots {
				if r.Only != nil {
					for p := range imports {
						if strings.HasPrefix(p, module) && !slices.ContainsFunc(r.Only, func(o string) bool { return p == o || strings.HasPrefix(p, o+"/") }) {
							if c := chain(root, imports, p); c != nil {
								t.Errorf("%s depends on %s (%s): %s", strings.TrimPrefix(root, module), p, r.Why, strings.Join(c, " -> "))
							}
						}
					}
				}
				for _, deny := range r.Deny {
					if strings.HasPrefix(root, deny) {
						continue // a package may use itself
					}
					if c := chain(root, imports, deny); c != nil {
						t.Errorf("%s depends on %s (%s): %s", strings.TrimPrefix(root, module), deny, r.Why, strings.Join(c, " -> "))
					}
				}
			}
		}
	}
}
