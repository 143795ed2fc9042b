// Package timesync keeps the appliance's clock: an SNTPv4 client (RFC 4330, the client
// mode of RFC 5905) measures the offset to the configured NTP servers, and a Keeper steps
// or slews the system clock by it, again and again, and says how it went on one console
// line. Certificates and Kerberos tickets are only as right as this clock.
package timesync

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sort"
	"strings"
	"sync"
	"time"
)

// Result is one measurement against one server.
type Result struct {
	Server  string        // host:port that answered
	Offset  time.Duration // how far the local clock is behind the server: add it to local time
	RTT     time.Duration // round-trip delay, less the server's processing time
	Stratum uint8
	RefID   string // the server's reference: "GPS", "LOCL" for stratum 1, an IPv4 address above
	// At is the local clock (with its monotonic reading) when the reply arrived, before
	// any correction: time.Since(At) stays right across a step.
	At time.Time
}

// KissError is a kiss-o'-death reply (stratum 0): the server refuses to give the time
// and Code says why, e.g. "RATE" (poll less often), "DENY" or "RSTR" (stop asking).
type KissError struct{ Code string }

func (e *KissError) Error() string { return fmt.Sprintf("kiss-o'-death %q", e.Code) }

// ErrNoServers is what Best and the Keeper return when there is nobody to ask.
var ErrNoServers = errors.New("no NTP servers configured")

const (
	packetLen = 48
	ntpPort   = "123"
	// ntpEpochOffset is the seconds from 1900-01-01 (NTP era 0) to 1970-01-01.
	ntpEpochOffset = 2208988800
	modeClient     = 3
	modeServer     = 4
	leapUnsync     = 3
	// maxNegativeDelay is how far below zero a loopback delay may come out from rounding
	// (NTP fractions, clock reads) before it is taken as a bad reply.
	maxNegativeDelay = time.Millisecond
)

// ServerAddr is server as host:port, with NTP's port 123 when server names none.
// It accepts "host", "host:port", "1.2.3.4", "::1", "[::1]" and "[::1]:123".
func ServerAddr(server string) string {
	if _, _, err := net.SplitHostPort(server); err == nil {
		return server
	}
	host := strings.TrimSuffix(strings.TrimPrefix(server, "["), "]")
	return net.JoinHostPort(host, ntpPort)
}

// Query asks one server for the time (one SNTP request, one reply) and checks the reply
// as RFC 4330 asks of a client. The error is a *QueryError, which names the server:
// "ntp 10.0.2.2:123: i/o timeout".
func Query(ctx context.Context, server string, timeout time.Duration) (Result, error) {
	addr := ServerAddr(server)
	r, err := query(ctx, addr, timeout)
	if err != nil {
		return Result{}, &QueryError{Server: addr, Err: err}
	}
	return r, nil
}

// QueryError is why asking Server failed.
type QueryError struct {
	Server string // host:port
	Err    error
}

func (e *QueryError) Error() string { return "ntp " + e.Server + ": " + e.Err.Error() }
func (e *QueryError) Unwrap() error { return e.Err }

func query(ctx context.Context, addr string, timeout time.Duration) (Result, error) {
	if timeout <= 0 {
		timeout = 5 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var d net.Dialer
	// A connected socket: the kernel drops datagrams from any other address and port.
	conn, err := d.DialContext(ctx, "udp", addr)
	if err != nil {
		return Result{}, err
	}
	defer conn.Close()
	deadline, _ := ctx.Deadline()
	if err := conn.SetDeadline(deadline); err != nil {
		return Result{}, err
	}
	// Wake the read when the caller's context ends before the deadline.
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Now()) })
	defer stop()

	// The transmit timestamp is random (as chrony does, and as the NTP data minimization
	// draft recommends): it gives away nothing about the local clock, and a reply must
	// echo it in its originate field, which an off-path attacker cannot guess.
	req := make([]byte, packetLen)
	req[0] = 4<<3 | modeClient // LI 0, version 4, mode 3
	if _, err := rand.Read(req[40:48]); err != nil {
		return Result{}, fmt.Errorf("random transmit timestamp: %w", err)
	}
	nonce := binary.BigEndian.Uint64(req[40:48])

	t1 := time.Now()
	if _, err := conn.Write(req); err != nil {
		return Result{}, netErr(ctx, err)
	}
	buf := make([]byte, 512)
	n, err := conn.Read(buf)
	elapsed := time.Since(t1) // monotonic: a clock step meanwhile does not matter
	if err != nil {
		return Result{}, netErr(ctx, err)
	}
	t4 := t1.Add(elapsed)
	return parseReply(buf[:n], nonce, t1, t4, addr)
}

// netErr drops the socket addresses from a read or write error (the caller names the
// server) and prefers the context's reason when the context ended first.
func netErr(ctx context.Context, err error) error {
	if errors.Is(ctx.Err(), context.Canceled) {
		return ctx.Err()
	}
	var op *net.OpError
	if errors.As(err, &op) {
		err = op.Err
	}
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return os.ErrDeadlineExceeded
	}
	return err
}

// parseReply checks a server's reply to the request with transmit timestamp nonce, sent
// at t1 and answered at t4 (local clock), and computes offset and delay (RFC 5905 8).
func parseReply(p []byte, nonce uint64, t1, t4 time.Time, addr string) (Result, error) {
	if len(p) < packetLen {
		return Result{}, fmt.Errorf("short reply: %d bytes, want %d", len(p), packetLen)
	}
	li, vn, mode := p[0]>>6, (p[0]>>3)&7, p[0]&7
	stratum := p[1]
	if mode != modeServer {
		return Result{}, fmt.Errorf("reply has mode %d, want %d (server)", mode, modeServer)
	}
	if vn != 3 && vn != 4 {
		return Result{}, fmt.Errorf("reply has version %d, want 3 or 4", vn)
	}
	if got := binary.BigEndian.Uint64(p[24:32]); got != nonce {
		return Result{}, fmt.Errorf("reply's originate timestamp %016x does not echo the request's %016x", got, nonce)
	}
	if stratum == 0 {
		return Result{}, &KissError{Code: kissCode(p[12:16])}
	}
	if stratum > 15 {
		return Result{}, fmt.Errorf("server is unsynchronised (stratum %d)", stratum)
	}
	if li == leapUnsync {
		return Result{}, errors.New("server clock is unsynchronised (leap indicator 3)")
	}
	if binary.BigEndian.Uint64(p[40:48]) == 0 {
		return Result{}, errors.New("reply has a zero transmit timestamp")
	}
	t2, t3 := ntpTime(p[32:40]), ntpTime(p[40:48])
	if t3.Before(t2) {
		return Result{}, fmt.Errorf("reply was sent %v before the request was received", t2.Sub(t3))
	}
	offset := (t2.Sub(t1) + t3.Sub(t4)) / 2
	delay := t4.Sub(t1) - t3.Sub(t2)
	if delay < -maxNegativeDelay {
		return Result{}, fmt.Errorf("negative round-trip delay %v", delay)
	}
	delay = max(delay, 0)
	return Result{Server: addr, Offset: offset, RTT: delay, Stratum: stratum, RefID: refID(stratum, p[12:16]), At: t4}, nil
}

// ntpTime converts a 64-bit NTP timestamp. Seconds with the top bit clear are taken to
// be in era 1 (from 2036-02-07), as RFC 4330 3 suggests: this covers 1968 to 2104.
func ntpTime(b []byte) time.Time {
	sec, frac := binary.BigEndian.Uint32(b[0:4]), binary.BigEndian.Uint32(b[4:8])
	s := int64(sec)
	if sec&0x80000000 == 0 {
		s += 1 << 32
	}
	nsec := (int64(frac)*1e9 + 1<<31) >> 32
	return time.Unix(s-ntpEpochOffset, nsec)
}

// putNTPTime writes t as a 64-bit NTP timestamp (the inverse of ntpTime).
func putNTPTime(b []byte, t time.Time) {
	binary.BigEndian.PutUint32(b[0:4], uint32(t.Unix()+ntpEpochOffset))
	binary.BigEndian.PutUint32(b[4:8], uint32((uint64(t.Nanosecond())<<32)/1e9))
}

func kissCode(b []byte) string {
	s := strings.TrimRight(string(b), "\x00 ")
	for _, c := range s {
		if c < 0x20 || c > 0x7e {
			return fmt.Sprintf("%x", b)
		}
	}
	return s
}

func refID(stratum uint8, b []byte) string {
	if stratum == 1 {
		return kissCode(b)
	}
	return netip.AddrFrom4([4]byte(b)).String()
}

// Best asks all servers at once and returns the answer with the lowest round-trip delay,
// with the errors of the servers that failed, in the order of servers. With no answer the
// Result is zero and there is one error per server (ErrNoServers when there is none).
func Best(ctx context.Context, servers []string, timeout time.Duration) (Result, []error) {
	if len(servers) == 0 {
		return Result{}, []error{ErrNoServers}
	}
	results := make([]Result, len(servers))
	errs := make([]error, len(servers))
	var wg sync.WaitGroup
	for i, s := range servers {
		wg.Go(func() { results[i], errs[i] = Query(ctx, s, timeout) })
	}
	wg.Wait()
	var good []Result
	var bad []error
	for i := range servers {
		if errs[i] != nil {
			bad = append(bad, errs[i])
		} else {
			good = append(good, results[i])
		}
	}
	if len(good) == 0 {
		return Result{}, bad
	}
	sort.SliceStable(good, func(i, j int) bool { return good[i].RTT < good[j].RTT })
	return good[0], bad
}
