package soap

import (
	"bytes"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
)

// Limits on a request. Callers limit the HTTP body to MaxBody as well; Parse refuses more anyway.
const (
	MaxBody   = 1 << 20 // bytes
	MaxDepth  = 64      // element nesting, the Envelope being depth 1
	MaxTokens = 20000   // XML tokens (tags, text runs, comments) in the whole document
)

// Namespaces and URIs of the messages.
const (
	NS12         = "http://www.w3.org/2003/05/soap-envelope"
	NS11         = "http://schemas.xmlsoap.org/soap/envelope/"
	NSAddressing = "http://www.w3.org/2005/08/addressing"
	NSSecExt     = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"
	NSUtility    = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd"
	NSXSI        = "http://www.w3.org/2001/XMLSchema-instance"

	// PasswordText and PasswordDigest are the UsernameToken profile's Password Type URIs.
	PasswordText   = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-username-token-profile-1.0#PasswordText"
	PasswordDigest = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-username-token-profile-1.0#PasswordDigest"
)

// Errors of Parse. Every error Parse returns wraps exactly one of them (test with errors.Is);
// all mean the client sent a bad message (a SOAP Sender fault).
var (
	ErrTooLarge  = errors.New("soap: request body too large")
	ErrMalformed = errors.New("soap: malformed XML")
	ErrDirective = errors.New("soap: DOCTYPE, entity declarations and other <!...> directives are refused")
	ErrLimit     = errors.New("soap: document too deep or too long")
	ErrEnvelope  = errors.New("soap: not a SOAP 1.2 envelope")
	ErrHeader    = errors.New("soap: bad header")
	ErrBody      = errors.New("soap: bad Body")
	ErrNoAction  = errors.New("soap: missing WS-Addressing Action header")
)

// Envelope is a parsed SOAP 1.2 request.
type Envelope struct {
	Action, MessageID, To string
	UsernameToken         *UsernameToken // WS-Security header, if present
	// Body is the single child element of soap:Body, re-encoded with its namespaces declared on
	// itself (prefixes and comments are not kept), so it can be decoded on its own.
	Body     []byte
	BodyName xml.Name // that element's name: namespace URI and local name
}

// UsernameToken is a WS-Security UsernameToken. PasswordType is PasswordText (also when the
// client omits the Type attribute, as the profile says) or PasswordDigest; Nonce (base64, as
// sent) and Created are needed only to check a digest. String never shows the password.
type UsernameToken struct {
	Username, Password, PasswordType string
	Nonce, Created                   string
}

// String names the user without the password, so that logging a token by mistake is harmless.
func (u *UsernameToken) String() string {
	if u == nil {
		return "<no UsernameToken>"
	}
	return fmt.Sprintf("UsernameToken{%q, password redacted}", u.Username)
}

// Parse reads one SOAP 1.2 envelope from r (at most MaxBody bytes) and checks it; see the
// package documentation for what it refuses.
func Parse(r io.Reader) (*Envelope, error) {
	data, err := io.ReadAll(io.LimitReader(r, MaxBody+1))
	var tooLarge *http.MaxBytesError
	if errors.As(err, &tooLarge) {
		// The caller's http.MaxBytesReader stopped the body first.
		return nil, fmt.Errorf("%w: more than %d bytes", ErrTooLarge, tooLarge.Limit)
	}
	if err != nil {
		return nil, fmt.Errorf("soap: reading request body: %w", err)
	}
	if len(data) > MaxBody {
		return nil, fmt.Errorf("%w: more than %d bytes", ErrTooLarge, MaxBody)
	}
	return parse(data)
}

func parse(data []byte) (*Envelope, error) {
	d := xml.NewDecoder(bytes.NewReader(data))
	d.Strict = true // only the five predefined entities; undefined ones are errors
	tr := &tokenReader{d: d}

	root, err := tr.rootElement()
	if err != nil {
		return nil, err
	}
	switch {
	case root.Name.Space == NS11 && root.Name.Local == "Envelope":
		return nil, fmt.Errorf("%w: SOAP 1.1 envelope (namespace %s); this service speaks SOAP 1.2 (%s)", ErrEnvelope, NS11, NS12)
	case root.Name.Space != NS12 || root.Name.Local != "Envelope":
		return nil, fmt.Errorf("%w: root element is %s", ErrEnvelope, fmtName(root.Name))
	}

	env := &Envelope{}
	var seenHeader, seenBody bool
	for done := false; !done; {
		tok, err := tr.next()
		if err != nil {
			return nil, tr.eof(err, "Envelope")
		}
		switch t := tok.(type) {
		case xml.StartElement:
			switch {
			case t.Name.Space == NS12 && t.Name.Local == "Header" && !seenHeader && !seenBody:
				seenHeader = true
				if err := tr.header(env); err != nil {
					return nil, err
				}
			case t.Name.Space == NS12 && t.Name.Local == "Body" && !seenBody:
				seenBody = true
				if err := tr.body(env); err != nil {
					return nil, err
				}
			case t.Name.Space == NS12 && t.Name.Local == "Body":
				return nil, fmt.Errorf("%w: more than one Body element", ErrBody)
			case t.Name.Space == NS12 && t.Name.Local == "Header":
				return nil, fmt.Errorf("%w: Header must come once, before Body", ErrHeader)
			default:
				return nil, fmt.Errorf("%w: unexpected element %s in Envelope", ErrEnvelope, fmtName(t.Name))
			}
		case xml.EndElement:
			done = true
		case xml.CharData:
			if !isSpace(t) {
				return nil, fmt.Errorf("%w: text directly inside Envelope", ErrEnvelope)
			}
		}
	}
	if err := tr.trailer(); err != nil {
		return nil, err
	}
	if !seenBody {
		return nil, fmt.Errorf("%w: no Body element", ErrBody)
	}
	if env.Action == "" {
		return nil, ErrNoAction
	}
	return env, nil
}

// tokenReader wraps the decoder with the limits and keeps the contents of wsse:Security out of
// error messages.
type tokenReader struct {
	d      *xml.Decoder
	depth  int
	tokens int
	secret bool // inside wsse:Security: a syntax error message could quote the password
}

func (t *tokenReader) next() (xml.Token, error) {
	tok, err := t.d.Token()
	if err != nil {
		if err == io.EOF {
			return nil, err
		}
		var se *xml.SyntaxError
		switch {
		case t.secret && errors.As(err, &se):
			return nil, fmt.Errorf("%w: line %d, inside the wsse:Security header", ErrMalformed, se.Line)
		case t.secret:
			return nil, fmt.Errorf("%w: inside the wsse:Security header", ErrMalformed)
		case errors.As(err, &se):
			return nil, fmt.Errorf("%w: line %d: %s", ErrMalformed, se.Line, se.Msg)
		}
		if strings.Contains(err.Error(), "CharsetReader") {
			return nil, fmt.Errorf("%w: only UTF-8 is accepted (%v)", ErrMalformed, err)
		}
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	t.tokens++
	if t.tokens > MaxTokens {
		return nil, fmt.Errorf("%w: more than %d XML tokens", ErrLimit, MaxTokens)
	}
	switch v := tok.(type) {
	case xml.StartElement:
		t.depth++
		if t.depth > MaxDepth {
			return nil, fmt.Errorf("%w: elements nested deeper than %d", ErrLimit, MaxDepth)
		}
	case xml.EndElement:
		t.depth--
	case xml.Directive:
		return nil, ErrDirective
	case xml.ProcInst:
		// The decoder has already refused an XML declaration that is not first or names an
		// encoding other than UTF-8; any other processing instruction has no business here.
		if v.Target != "xml" {
			return nil, fmt.Errorf("%w: processing instruction <?%s?> refused", ErrMalformed, v.Target)
		}
	}
	return xml.CopyToken(tok), nil
}

// eof turns an end of input inside element name into a clear error.
func (t *tokenReader) eof(err error, name string) error {
	if err == io.EOF {
		return fmt.Errorf("%w: document ends inside %s", ErrMalformed, name)
	}
	return err
}

// rootElement skips the prolog (XML declaration, comments, white space) and returns the root.
func (t *tokenReader) rootElement() (xml.StartElement, error) {
	for {
		tok, err := t.next()
		if err == io.EOF {
			return xml.StartElement{}, fmt.Errorf("%w: empty document", ErrMalformed)
		}
		if err != nil {
			return xml.StartElement{}, err
		}
		switch v := tok.(type) {
		case xml.StartElement:
			return v, nil
		case xml.CharData:
			if !isSpace(v) {
				return xml.StartElement{}, fmt.Errorf("%w: text before the root element", ErrMalformed)
			}
		}
	}
}

// trailer allows only white space and comments after the root element.
func (t *tokenReader) trailer() error {
	for {
		tok, err := t.next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		switch v := tok.(type) {
		case xml.StartElement:
			return fmt.Errorf("%w: a second root element %s after the Envelope", ErrMalformed, fmtName(v.Name))
		case xml.CharData:
			if !isSpace(v) {
				return fmt.Errorf("%w: text after the Envelope", ErrMalformed)
			}
		}
	}
}

// skip consumes the rest of the element whose start tag was just read.
func (t *tokenReader) skip() error {
	for depth := 1; depth > 0; {
		tok, err := t.next()
		if err != nil {
			return t.eof(err, "an element")
		}
		switch tok.(type) {
		case xml.StartElement:
			depth++
		case xml.EndElement:
			depth--
		}
	}
	return nil
}

// text reads the text content of the element whose start tag was just read; child elements are
// an error.
func (t *tokenReader) text(name string) (string, error) {
	var b strings.Builder
	for {
		tok, err := t.next()
		if err != nil {
			return "", t.eof(err, name)
		}
		switch v := tok.(type) {
		case xml.CharData:
			b.Write(v)
		case xml.StartElement:
			return "", fmt.Errorf("%w: %s must hold text only, found element %s", ErrHeader, name, fmtName(v.Name))
		case xml.EndElement:
			return b.String(), nil
		}
	}
}

// header reads soap:Header: the WS-Addressing headers and wsse:Security. Other headers are
// skipped.
func (t *tokenReader) header(env *Envelope) error {
	seen := map[string]bool{}
	for {
		tok, err := t.next()
		if err != nil {
			return t.eof(err, "Header")
		}
		switch v := tok.(type) {
		case xml.EndElement:
			return nil
		case xml.CharData:
			if !isSpace(v) {
				return fmt.Errorf("%w: text directly inside Header", ErrHeader)
			}
		case xml.StartElement:
			key := v.Name.Space + " " + v.Name.Local
			var dst *string
			switch {
			case v.Name.Space == NSAddressing && v.Name.Local == "Action":
				dst = &env.Action
			case v.Name.Space == NSAddressing && v.Name.Local == "MessageID":
				dst = &env.MessageID
			case v.Name.Space == NSAddressing && v.Name.Local == "To":
				dst = &env.To
			case v.Name.Space == NSSecExt && v.Name.Local == "Security":
				if seen[key] {
					return fmt.Errorf("%w: more than one wsse:Security header", ErrHeader)
				}
				seen[key] = true
				if err := t.security(env); err != nil {
					return err
				}
				continue
			default:
				if err := t.skip(); err != nil {
					return err
				}
				continue
			}
			if seen[key] {
				return fmt.Errorf("%w: more than one %s header", ErrHeader, v.Name.Local)
			}
			seen[key] = true
			s, err := t.text(v.Name.Local)
			if err != nil {
				return err
			}
			*dst = strings.TrimSpace(s)
		}
	}
}

// security reads wsse:Security and the UsernameToken in it. Other tokens (Timestamp,
// BinarySecurityToken, signatures) are skipped.
func (t *tokenReader) security(env *Envelope) error {
	t.secret = true
	defer func() { t.secret = false }()
	for {
		tok, err := t.next()
		if err != nil {
			return t.eof(err, "wsse:Security")
		}
		switch v := tok.(type) {
		case xml.EndElement:
			return nil
		case xml.StartElement:
			if v.Name.Space != NSSecExt || v.Name.Local != "UsernameToken" {
				if err := t.skip(); err != nil {
					return err
				}
				continue
			}
			if env.UsernameToken != nil {
				return fmt.Errorf("%w: more than one UsernameToken", ErrHeader)
			}
			ut, err := t.usernameToken()
			if err != nil {
				return err
			}
			env.UsernameToken = ut
		}
	}
}

func (t *tokenReader) usernameToken() (*UsernameToken, error) {
	ut := &UsernameToken{}
	var haveUser, havePassword bool
	for {
		tok, err := t.next()
		if err != nil {
			return nil, t.eof(err, "UsernameToken")
		}
		switch v := tok.(type) {
		case xml.EndElement:
			if !haveUser {
				return nil, fmt.Errorf("%w: UsernameToken without Username", ErrHeader)
			}
			if !havePassword {
				return nil, fmt.Errorf("%w: UsernameToken without Password", ErrHeader)
			}
			return ut, nil
		case xml.StartElement:
			var dst *string
			switch {
			case v.Name.Space == NSSecExt && v.Name.Local == "Username" && !haveUser:
				haveUser, dst = true, &ut.Username
			case v.Name.Space == NSSecExt && v.Name.Local == "Password" && !havePassword:
				havePassword, dst = true, &ut.Password
				ut.PasswordType = PasswordText // the profile's default when Type is absent
				for _, a := range v.Attr {
					if a.Name.Local == "Type" && (a.Name.Space == "" || a.Name.Space == NSSecExt) {
						ut.PasswordType = strings.TrimSpace(a.Value)
					}
				}
				if ut.PasswordType != PasswordText && ut.PasswordType != PasswordDigest {
					return nil, fmt.Errorf("%w: unknown Password Type %q", ErrHeader, ut.PasswordType)
				}
			case v.Name.Space == NSSecExt && (v.Name.Local == "Username" || v.Name.Local == "Password"):
				return nil, fmt.Errorf("%w: more than one %s in UsernameToken", ErrHeader, v.Name.Local)
			case v.Name.Space == NSSecExt && v.Name.Local == "Nonce":
				dst = &ut.Nonce
			case v.Name.Space == NSUtility && v.Name.Local == "Created":
				dst = &ut.Created
			default:
				if err := t.skip(); err != nil {
					return nil, err
				}
				continue
			}
			s, err := t.text(v.Name.Local)
			if err != nil {
				return nil, err
			}
			if dst == &ut.Password {
				*dst = s // a password is taken exactly as sent
			} else {
				*dst = strings.TrimSpace(s)
			}
		}
	}
}

// body reads soap:Body, which must hold exactly one element, and re-encodes that element.
func (t *tokenReader) body(env *Envelope) error {
	found := false
	for {
		tok, err := t.next()
		if err != nil {
			return t.eof(err, "Body")
		}
		switch v := tok.(type) {
		case xml.EndElement:
			if !found {
				return fmt.Errorf("%w: Body is empty", ErrBody)
			}
			return nil
		case xml.CharData:
			if !isSpace(v) {
				return fmt.Errorf("%w: text directly inside Body", ErrBody)
			}
		case xml.StartElement:
			if found {
				return fmt.Errorf("%w: more than one child element (%s after %s)", ErrBody, fmtName(v.Name), fmtName(env.BodyName))
			}
			found = true
			env.BodyName = v.Name
			raw, err := t.reencode(v)
			if err != nil {
				return err
			}
			env.Body = raw
		}
	}
}

// reencode writes the element whose start tag is start, and everything in it, with every
// namespace declared where it is used, so the result stands alone.
func (t *tokenReader) reencode(start xml.StartElement) ([]byte, error) {
	var buf bytes.Buffer
	enc := xml.NewEncoder(&buf)
	spaces := []string{""} // namespace of each open element, and "" for the outside
	for depth := 0; ; {
		var tok xml.Token
		if depth == 0 {
			tok = start
		} else {
			var err error
			if tok, err = t.next(); err != nil {
				return nil, t.eof(err, fmtName(start.Name))
			}
		}
		switch v := tok.(type) {
		case xml.StartElement:
			out := xml.StartElement{Name: v.Name}
			for _, a := range v.Attr {
				if a.Name.Space == "xmlns" || (a.Name.Space == "" && a.Name.Local == "xmlns") {
					continue // the encoder declares what it uses
				}
				out.Attr = append(out.Attr, a)
			}
			if v.Name.Space == "" && spaces[len(spaces)-1] != "" {
				// An unqualified child of a qualified parent: undeclare the default namespace.
				out.Attr = append(out.Attr, xml.Attr{Name: xml.Name{Local: "xmlns"}})
			}
			spaces = append(spaces, v.Name.Space)
			depth++
			tok = out
		case xml.EndElement:
			spaces = spaces[:len(spaces)-1]
			depth--
		case xml.Comment:
			continue
		}
		if err := enc.EncodeToken(tok); err != nil {
			return nil, fmt.Errorf("%w: re-encoding Body: %v", ErrBody, err)
		}
		if depth == 0 {
			break
		}
	}
	if err := enc.Flush(); err != nil {
		return nil, fmt.Errorf("%w: re-encoding Body: %v", ErrBody, err)
	}
	return buf.Bytes(), nil
}

func isSpace(b []byte) bool {
	return len(bytes.TrimLeft(b, " \t\r\n")) == 0
}

func fmtName(n xml.Name) string {
	if n.Space == "" {
		return "<" + n.Local + ">"
	}
	return "<" + n.Local + "> in namespace " + n.Space
}
