// Package remotelog sends the service's logs to a remote syslog server: RFC 5424 messages over
// TLS (RFC 5425, octet-counting framing), plain TCP (RFC 6587 octet counting) or UDP (RFC 5426),
// one message per datagram. The service sends two streams, each on its own connection: the
// audit events, read from the store in the order of their sequence numbers (so that none is
// skipped or sent out of order, and an outage is caught up), and the operational log, teed from
// the JSON log the service writes to standard error, best effort (a bounded queue; what overflows
// while the server is away is counted and dropped).
//
// Written here rather than taken from a library: the standard library's log/syslog speaks the
// older BSD format without TLS, and the formatter is a few lines of RFC 5424 §6.
package remotelog

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"
)

// Transports.
const (
	TLS = "tls"
	TCP = "tcp"
	UDP = "udp"
)

// Facilities (RFC 5424 §6.2.1) of the two streams.
const (
	FacilityDaemon = 3  // the operational log
	FacilityAudit  = 13 // "log audit": the audit events
)

// Severities (RFC 5424 §6.2.1).
const (
	SevError   = 3
	SevWarning = 4
	SevNotice  = 5
	SevInfo    = 6
	SevDebug   = 7
)

// SDID is the structured-data ID of the audit events' parameters. 32473 is the private
// enterprise number RFC 5612 reserves for documentation and examples; the appliance has none of
// its own.
const SDID = "audit@32473"

// Param is one SD-PARAM.
type Param struct{ Name, Value string }

// Message is one syslog message.
type Message struct {
	Facility, Severity int
	Time               time.Time
	Hostname, AppName  string
	ProcID, MsgID      string
	SDID               string  // "" for none
	Params             []Param // of SDID
	Msg                string
}

// Format encodes m as RFC 5424 §6: <PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID SD MSG.
// Header fields are cut to their maximum lengths and made printable US-ASCII; MSG is UTF-8 with
// a BOM (§6.4).
func Format(m Message) []byte {
	var b strings.Builder
	fmt.Fprintf(&b, "<%d>1 %s %s %s %s %s ", m.Facility*8+m.Severity,
		m.Time.UTC().Format("2006-01-02T15:04:05.000000Z"), header(m.Hostname, 255), header(m.AppName, 48),
		header(m.ProcID, 128), header(m.MsgID, 32))
	if m.SDID == "" {
		b.WriteString("-")
	} else {
		b.WriteString("[" + header(m.SDID, 32))
		for _, p := range m.Params {
			b.WriteString(" " + sdName(p.Name) + `="` + sdValue(p.Value) + `"`)
		}
		b.WriteString("]")
	}
	if m.Msg != "" {
		b.WriteString(" \xEF\xBB\xBF")
		b.WriteString(strings.ToValidUTF8(m.Msg, "\uFFFD"))
	}
	return []byte(b.String())
}

// header is s as a header field: PRINTUSASCII (33-126), at most n characters, "-" when empty.
func header(s string, n int) string {
	out := make([]byte, 0, len(s))
	for i := 0; i < len(s) && len(out) < n; i++ {
		c := s[i]
		if c < 33 || c > 126 {
			c = '_'
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		return "-"
	}
	return string(out)
}

// sdName is an SD-NAME: printable US-ASCII but '=', ' ', ']' and '"', at most 32.
func sdName(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 33 || r > 126 || r == '=' || r == ']' || r == '"' {
			return '_'
		}
		return r
	}, header(s, 32))
}

// sdValue escapes '"', '\' and ']' (RFC 5424 §6.3.3).
func sdValue(s string) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	r := strings.NewReplacer(`\`, `\\`, `"`, `\"`, `]`, `\]`)
	return r.Replace(s)
}

// Config says where to send.
type Config struct {
	Address   string         // host:port
	Transport string         // TLS (default), TCP or UDP
	RootCAs   *x509.CertPool // the server's CA for TLS (nil: the system's)
	// ServerName is the name the server's certificate must carry (default: Address's host).
	ServerName string
	Timeout    time.Duration // for connecting and each write (default 5 s)
}

// Check refuses a configuration that cannot work.
func (c Config) Check() error {
	host, port, err := net.SplitHostPort(c.Address)
	if err != nil || host == "" {
		return fmt.Errorf("remote syslog address %q: want host:port", c.Address)
	}
	if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
		return fmt.Errorf("remote syslog address %q: bad port", c.Address)
	}
	switch c.Transport {
	case "", TLS, TCP, UDP:
	default:
		return fmt.Errorf("remote syslog transport %q: want tls, tcp or udp", c.Transport)
	}
	return nil
}

// Sender sends messages on one connection, connecting again after a failure.
type Sender struct {
	cfg  Config
	mu   sync.Mutex
	conn net.Conn
}

// NewSender returns a Sender for cfg (which must pass Check); it connects on the first Send.
func NewSender(cfg Config) *Sender {
	if cfg.Transport == "" {
		cfg.Transport = TLS
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 5 * time.Second
	}
	return &Sender{cfg: cfg}
}

func (s *Sender) dial(ctx context.Context) (net.Conn, error) {
	d := &net.Dialer{Timeout: s.cfg.Timeout}
	switch s.cfg.Transport {
	case UDP:
		return d.DialContext(ctx, "udp", s.cfg.Address)
	case TCP:
		return d.DialContext(ctx, "tcp", s.cfg.Address)
	}
	name := s.cfg.ServerName
	if name == "" {
		name, _, _ = net.SplitHostPort(s.cfg.Address)
	}
	td := &tls.Dialer{NetDialer: d, Config: &tls.Config{RootCAs: s.cfg.RootCAs, ServerName: name, MinVersion: tls.VersionTLS12}}
	return td.DialContext(ctx, "tcp", s.cfg.Address)
}

// MaxUDP bounds a datagram's message (RFC 5426 §3.2: at least 480, should 2048; IPv4 allows
// up to 65507): longer ones are cut.
const MaxUDP = 8192

// Send writes one formatted message, connecting first if needed. On an error the connection is
// dropped (the next Send connects again) and the error returned: the message may or may not
// have arrived (TCP gives no receipt), so a caller that must not lose it sends it again.
func (s *Sender) Send(ctx context.Context, msg []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conn == nil {
		c, err := s.dial(ctx)
		if err != nil {
			return fmt.Errorf("remote syslog %s (%s): %w", s.cfg.Address, s.cfg.Transport, err)
		}
		s.conn = c
	}
	var frame []byte
	if s.cfg.Transport == UDP {
		frame = msg
		if len(frame) > MaxUDP {
			frame = trimUTF8(frame[:MaxUDP])
		}
	} else {
		frame = append([]byte(strconv.Itoa(len(msg))+" "), msg...) // octet counting, RFC 5425 §4.3
	}
	s.conn.SetWriteDeadline(time.Now().Add(s.cfg.Timeout))
	if _, err := s.conn.Write(frame); err != nil {
		s.conn.Close()
		s.conn = nil
		return fmt.Errorf("remote syslog %s (%s): %w", s.cfg.Address, s.cfg.Transport, err)
	}
	return nil
}

// trimUTF8 drops a partial UTF-8 sequence at the end of b.
func trimUTF8(b []byte) []byte {
	for len(b) > 0 && !utf8.Valid(b) {
		b = b[:len(b)-1]
	}
	return b
}

// Close closes the connection.
func (s *Sender) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conn == nil {
		return nil
	}
	err := s.conn.Close()
	s.conn = nil
	return err
}

// ErrClosed is returned by a stream that was stopped.
var ErrClosed = errors.New("remote syslog: stopped")
