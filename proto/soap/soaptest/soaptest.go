// Package soaptest helps the tests of the enrollment web service packages: it reads captured
// client messages and compares the element structure of two XML documents, which is what a
// Windows client depends on (it reads replies by element position).
package soaptest

import (
	"bytes"
	"encoding/xml"
	"fmt"
	"io"
	"os"
	"strings"
	"testing"
)

// ReadCapture reads a captured message from testdata and removes the leading
// "<!-- POST ... -->" comment that records the HTTP request line and headers, leaving the body
// exactly as the client sent it.
func ReadCapture(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return StripCapture(b)
}

// StripCapture removes a leading HTTP-header comment and the white space after it.
func StripCapture(b []byte) []byte {
	t := bytes.TrimLeft(b, " \t\r\n")
	if !bytes.HasPrefix(t, []byte("<!--")) {
		return b
	}
	i := bytes.Index(t, []byte("-->"))
	if i < 0 {
		return b
	}
	return bytes.TrimLeft(t[i+3:], " \t\r\n")
}

// Node is one element of a document, in document order.
type Node struct {
	Depth int
	Name  xml.Name // namespace URI and local name; prefixes are not kept
	Nil   bool     // xsi:nil="true"
	Text  string   // trimmed text of an element without child elements
}

func (n Node) String() string {
	s := fmt.Sprintf("%s{%s}%s", strings.Repeat("  ", n.Depth), n.Name.Space, n.Name.Local)
	if n.Nil {
		s += " xsi:nil"
	}
	return s
}

// Shape lists the elements of doc in order.
func Shape(doc []byte) ([]Node, error) {
	d := xml.NewDecoder(bytes.NewReader(doc))
	var nodes []Node
	var open []int // index in nodes of each open element
	var text []string
	var hasChild []bool
	for {
		tok, err := d.Token()
		if err == io.EOF {
			return nodes, nil
		}
		if err != nil {
			return nil, err
		}
		switch v := tok.(type) {
		case xml.StartElement:
			if len(hasChild) > 0 {
				hasChild[len(hasChild)-1] = true
			}
			n := Node{Depth: len(open), Name: v.Name}
			for _, a := range v.Attr {
				if a.Name.Space == "http://www.w3.org/2001/XMLSchema-instance" && a.Name.Local == "nil" && a.Value == "true" {
					n.Nil = true
				}
			}
			open = append(open, len(nodes))
			nodes = append(nodes, n)
			text = append(text, "")
			hasChild = append(hasChild, false)
		case xml.CharData:
			if len(text) > 0 {
				text[len(text)-1] += string(v)
			}
		case xml.EndElement:
			last := len(open) - 1
			if !hasChild[last] {
				nodes[open[last]].Text = strings.TrimSpace(text[last])
			}
			open, text, hasChild = open[:last], text[:last], hasChild[:last]
		}
	}
}

// Diff compares two shapes and describes the first difference, or returns "" if they are the
// same. withText compares the text of leaf elements too.
func Diff(got, want []Node, withText bool) string {
	for i := 0; i < len(got) || i < len(want); i++ {
		switch {
		case i >= len(got):
			return fmt.Sprintf("element %d: missing, want %v", i, want[i])
		case i >= len(want):
			return fmt.Sprintf("element %d: extra %v", i, got[i])
		}
		g, w := got[i], want[i]
		if g.Depth != w.Depth || g.Name != w.Name || g.Nil != w.Nil {
			return fmt.Sprintf("element %d: got\n%v\nwant\n%v", i, g, w)
		}
		if withText && g.Text != w.Text {
			return fmt.Sprintf("element %d %v: text %q, want %q", i, g, g.Text, w.Text)
		}
	}
	return ""
}
