package ldap

import (
	"context"
	"strings"

	goldap "github.com/go-ldap/ldap/v3"
)

// Entry is one directory object: its DN and its attributes, names lower-cased, values as sent (binary-safe).
type Entry struct {
	DN    string
	Attrs map[string][][]byte
}

// Get returns the first value of the attribute as a string, or "".
func (e Entry) Get(name string) string {
	if v := e.Attrs[strings.ToLower(name)]; len(v) > 0 {
		return string(v[0])
	}
	return ""
}

// GetAll returns every value of the attribute as strings.
func (e Entry) GetAll(name string) []string {
	raw := e.Attrs[strings.ToLower(name)]
	if len(raw) == 0 {
		return nil
	}
	out := make([]string, len(raw))
	for i, v := range raw {
		out[i] = string(v)
	}
	return out
}

// Raw returns the attribute's values as bytes (for binary attributes such as objectSid).
func (e Entry) Raw(name string) [][]byte { return e.Attrs[strings.ToLower(name)] }

// Has reports whether the attribute has at least one value.
func (e Entry) Has(name string) bool { return len(e.Attrs[strings.ToLower(name)]) > 0 }

func entryFrom(e *goldap.Entry) Entry {
	out := Entry{DN: e.DN, Attrs: make(map[string][][]byte, len(e.Attributes))}
	for _, a := range e.Attributes {
		name := strings.ToLower(a.Name)
		out.Attrs[name] = append(out.Attrs[name], a.ByteValues...)
	}
	return out
}

type searchSpec struct {
	base     string
	scope    int
	filter   string
	attrs    []string
	controls []goldap.Control
	paged    bool // Simple Paged Results, PageSize entries per round trip
}

// sdFlagsControl asks for owner, group and DACL of nTSecurityDescriptor (SD_FLAGS = 7; not the SACL, which
// needs privileges a service account lacks). Value: SEQUENCE { INTEGER 7 }.
var sdFlagsControl = &goldap.ControlString{ControlType: goldap.ControlTypeMicrosoftSDFlags, Criticality: true,
	ControlValue: "\x30\x03\x02\x01\x07"}

// search runs a search, page by page if spec.paged. The first page may be retried once on a fresh connection;
// later pages go to the first page's connection (the paging cookie belongs to it) and may not be retried,
// so a break mid-search fails the call.
func (c *Client) search(ctx context.Context, op string, spec searchSpec) ([]Entry, error) {
	var out []Entry
	var cookie []byte
	var pinned *goldap.Conn // the connection of the first page, which the cookie belongs to
	for page := 0; ; page++ {
		controls := spec.controls
		if spec.paged {
			controls = append(append([]goldap.Control(nil), spec.controls...),
				&goldap.ControlPaging{PagingSize: PageSize, Cookie: cookie})
		}
		req := goldap.NewSearchRequest(spec.base, spec.scope, goldap.NeverDerefAliases, 0,
			int(c.cfg.Timeout.Seconds()), false, spec.filter, spec.attrs, controls)
		var res *goldap.SearchResult
		err := c.doOn(ctx, op, page == 0, pinned, func(conn *goldap.Conn) error {
			var err error
			pinned = conn
			res, err = conn.Search(req)
			return err
		})
		if err != nil {
			return nil, err
		}
		for _, e := range res.Entries {
			out = append(out, entryFrom(e))
		}
		if !spec.paged {
			return out, nil
		}
		ctl, _ := goldap.FindControl(res.Controls, goldap.ControlTypePaging).(*goldap.ControlPaging)
		if ctl == nil || len(ctl.Cookie) == 0 {
			return out, nil
		}
		cookie = ctl.Cookie
	}
}
