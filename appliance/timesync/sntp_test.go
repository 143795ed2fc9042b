package timesync

import (
	"context"
	"encoding/binary"
	"errors"
	"net"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// fakeServer is an SNTP server on 127.0.0.1 whose answers the test configures.
type fakeServer struct {
	Addr string

	offset    time.Duration // how far its clock is ahead of ours
	delay     time.Duration // before answering
	stratum   uint8
	li        uint8
	version   uint8
	mode      uint8
	kiss      string // sent as the reference ID with stratum 0
	badOrigin bool
	zeroXmt   bool
	short     bool
	silent    bool

	v6 bool // listen on [::1] instead of 127.0.0.1

	requests atomic.Int32
}

// serve starts s; its fields must be set before and not changed after.
func (s *fakeServer) serve(t *testing.T) *fakeServer {
	t.Helper()
	network, addr := "udp4", "127.0.0.1:0"
	if s.v6 {
		network, addr = "udp6", "[::1]:0"
	}
	conn, err := net.ListenPacket(network, addr)
	if err != nil {
		t.Fatalf("fake NTP server on %s: %v", addr, err)
	}
	t.Cleanup(func() { conn.Close() })
	s.Addr = conn.LocalAddr().String()
	if s.stratum == 0 && s.kiss == "" {
		s.stratum = 2
	}
	if s.version == 0 {
		s.version = 4
	}
	if s.mode == 0 {
		s.mode = modeServer
	}
	go func() {
		buf := make([]byte, 512)
		for {
			n, from, err := conn.ReadFrom(buf)
			if err != nil {
				return
			}
			recv := time.Now().Add(s.offset)
			s.requests.Add(1)
			if s.silent || n < packetLen {
				continue
			}
			time.Sleep(s.delay)
			p := make([]byte, packetLen)
			p[0] = s.li<<6 | s.version<<3 | s.mode
			p[1] = s.stratum
			p[2], p[3] = 6, 0xe9 // poll, precision
			if s.kiss != "" {
				copy(p[12:16], s.kiss)
			} else {
				copy(p[12:16], []byte{10, 0, 2, 2})
			}
			putNTPTime(p[16:24], recv.Add(-time.Minute)) // reference time
			copy(p[24:32], buf[40:48])                   // originate = the request's transmit
			if s.badOrigin {
				p[31] ^= 1
			}
			putNTPTime(p[32:40], recv)
			if !s.zeroXmt {
				putNTPTime(p[40:48], time.Now().Add(s.offset))
			}
			if s.short {
				p = p[:40]
			}
			conn.WriteTo(p, from)
		}
	}()
	return s
}

// deadAddr is a loopback UDP address where nobody listens.
func deadAddr(t *testing.T) string {
	t.Helper()
	c, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a := c.LocalAddr().String()
	c.Close()
	return a
}

const tolerance = 50 * time.Millisecond

func near(got, want time.Duration) bool { return abs(got-want) <= tolerance }

func TestQueryMeasuresOffset(t *testing.T) {
	for _, off := range []time.Duration{90 * time.Second, -3 * time.Second, 0, 20 * time.Millisecond, 30 * 24 * time.Hour} {
		s := (&fakeServer{offset: off, stratum: 3}).serve(t)
		r, err := Query(context.Background(), s.Addr, 2*time.Second)
		if err != nil {
			t.Fatalf("Query(%s) with server offset %v: %v", s.Addr, off, err)
		}
		if !near(r.Offset, off) {
			t.Errorf("Query(%s).Offset = %v, want %v ± %v", s.Addr, r.Offset, off, tolerance)
		}
		if r.RTT < 0 || r.RTT > tolerance {
			t.Errorf("Query(%s).RTT = %v, want between 0 and %v on loopback", s.Addr, r.RTT, tolerance)
		}
		if r.Stratum != 3 || r.RefID != "10.0.2.2" || r.Server != s.Addr {
			t.Errorf("Query(%s) = stratum %d refid %q server %q, want 3, 10.0.2.2, %s", s.Addr, r.Stratum, r.RefID, r.Server, s.Addr)
		}
		if time.Since(r.At) < 0 || time.Since(r.At) > time.Second {
			t.Errorf("Query(%s).At = %v, want about now (%v)", s.Addr, r.At, time.Now())
		}
	}
}

func TestQueryIPv6(t *testing.T) {
	s := (&fakeServer{offset: -2 * time.Second, v6: true}).serve(t)
	if !strings.HasPrefix(s.Addr, "[::1]:") {
		t.Fatalf("fake server address %q, want [::1]:port", s.Addr)
	}
	r, err := Query(context.Background(), s.Addr, 2*time.Second)
	if err != nil || r.Server != s.Addr || !near(r.Offset, -2*time.Second) {
		t.Errorf("Query(%s) = %+v, %v; want offset -2s from %s", s.Addr, r, err, s.Addr)
	}
}

// The delay the server takes to answer is its processing time, not network delay.
func TestQueryRTTExcludesServerTime(t *testing.T) {
	s := (&fakeServer{delay: 200 * time.Millisecond}).serve(t)
	r, err := Query(context.Background(), s.Addr, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if r.RTT > tolerance {
		t.Errorf("Query(%s).RTT = %v with 200ms server processing, want < %v", s.Addr, r.RTT, tolerance)
	}
}

func TestQueryRejects(t *testing.T) {
	for _, tc := range []struct {
		name string
		srv  *fakeServer
		want string
	}{
		{"kiss RATE", &fakeServer{kiss: "RATE"}, `kiss-o'-death "RATE"`},
		{"kiss DENY", &fakeServer{kiss: "DENY"}, `kiss-o'-death "DENY"`},
		{"leap indicator 3", &fakeServer{li: 3}, "unsynchronised (leap indicator 3)"},
		{"stratum 16", &fakeServer{stratum: 16}, "unsynchronised (stratum 16)"},
		{"bad origin", &fakeServer{badOrigin: true}, "originate timestamp"},
		{"client mode", &fakeServer{mode: modeClient}, "mode 3, want 4"},
		{"broadcast mode", &fakeServer{mode: 5}, "mode 5, want 4"},
		{"version 2", &fakeServer{version: 2}, "version 2, want 3 or 4"},
		{"zero transmit", &fakeServer{zeroXmt: true}, "zero transmit timestamp"},
		{"short packet", &fakeServer{short: true}, "short reply: 40 bytes"},
		{"no answer", &fakeServer{silent: true}, "i/o timeout"},
	} {
		s := tc.srv.serve(t)
		_, err := Query(context.Background(), s.Addr, 300*time.Millisecond)
		if err == nil {
			t.Errorf("%s: Query(%s) succeeded, want an error containing %q", tc.name, s.Addr, tc.want)
			continue
		}
		if want := "ntp " + s.Addr + ": "; !strings.HasPrefix(err.Error(), want) {
			t.Errorf("%s: Query error %q does not start with %q", tc.name, err, want)
		}
		if !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: Query error %q does not contain %q", tc.name, err, tc.want)
		}
	}
}

func TestQueryErrorKinds(t *testing.T) {
	s := (&fakeServer{kiss: "RATE"}).serve(t)
	_, err := Query(context.Background(), s.Addr, time.Second)
	var kiss *KissError
	var qe *QueryError
	if !errors.As(err, &kiss) || kiss.Code != "RATE" || !errors.As(err, &qe) || qe.Server != s.Addr {
		t.Errorf("Query(kiss RATE) = %v, want a QueryError for %s wrapping KissError RATE", err, s.Addr)
	}

	s = (&fakeServer{silent: true}).serve(t)
	_, err = Query(context.Background(), s.Addr, 200*time.Millisecond)
	if want := "ntp " + s.Addr + ": i/o timeout"; err == nil || err.Error() != want || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("Query(silent) = %v, want %q wrapping os.ErrDeadlineExceeded", err, want)
	}

	dead := deadAddr(t)
	_, err = Query(context.Background(), dead, time.Second)
	if want := "ntp " + dead + ": "; err == nil || !strings.HasPrefix(err.Error(), want) {
		t.Errorf("Query(closed port) = %v, want an error starting %q", err, want)
	}
}

func TestQueryHonoursContext(t *testing.T) {
	s := (&fakeServer{silent: true}).serve(t)
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(100*time.Millisecond, cancel)
	start := time.Now()
	_, err := Query(ctx, s.Addr, 10*time.Second)
	if !errors.Is(err, context.Canceled) {
		t.Errorf("Query with a cancelled context = %v, want context.Canceled", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("Query took %v after its context was cancelled at 100ms", d)
	}
}

func TestServerAddr(t *testing.T) {
	for in, want := range map[string]string{
		"10.0.2.2":         "10.0.2.2:123",
		"10.0.2.2:1123":    "10.0.2.2:1123",
		"ntp.example.com":  "ntp.example.com:123",
		"ntp.example:4123": "ntp.example:4123",
		"::1":              "[::1]:123",
		"[::1]":            "[::1]:123",
		"[fe80::1]:123":    "[fe80::1]:123",
	} {
		if got := ServerAddr(in); got != want {
			t.Errorf("ServerAddr(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestNTPTime(t *testing.T) {
	b := make([]byte, 8)
	binary.BigEndian.PutUint32(b, ntpEpochOffset)
	if got := ntpTime(b); !got.Equal(time.Unix(0, 0)) {
		t.Errorf("ntpTime(%d s) = %v, want the Unix epoch", uint32(ntpEpochOffset), got.UTC())
	}
	// Era 1 starts when the 32-bit seconds wrap.
	binary.BigEndian.PutUint32(b, 0)
	if got, want := ntpTime(b), time.Date(2036, 2, 7, 6, 28, 16, 0, time.UTC); !got.Equal(want) {
		t.Errorf("ntpTime(0 s) = %v, want %v (era 1)", got.UTC(), want)
	}
	for _, want := range []time.Time{
		time.Date(2026, 5, 1, 12, 0, 0, 123456789, time.UTC),
		time.Date(2040, 1, 1, 0, 0, 0, 999999999, time.UTC),
		time.Date(1970, 1, 1, 0, 0, 1, 0, time.UTC),
	} {
		putNTPTime(b, want)
		if got := ntpTime(b); abs(got.Sub(want)) > time.Nanosecond {
			t.Errorf("ntpTime(putNTPTime(%v)) = %v", want, got.UTC())
		}
	}
}

func TestBest(t *testing.T) {
	good := (&fakeServer{offset: 5 * time.Second}).serve(t)
	slow := (&fakeServer{offset: 7 * time.Second, delay: 300 * time.Millisecond}).serve(t)
	silent := (&fakeServer{silent: true}).serve(t)
	dead := deadAddr(t)

	r, errs := Best(context.Background(), []string{silent.Addr, good.Addr, dead}, 500*time.Millisecond)
	if r.Server != good.Addr || !near(r.Offset, 5*time.Second) {
		t.Errorf("Best(silent, good, dead) = %s offset %v, want %s offset 5s", r.Server, r.Offset, good.Addr)
	}
	if len(errs) != 2 || !strings.Contains(errs[0].Error(), silent.Addr) || !strings.Contains(errs[1].Error(), dead) {
		t.Errorf("Best(silent, good, dead) errors = %v, want one for %s then one for %s", errs, silent.Addr, dead)
	}

	// slow answers too, but its answer left it 300ms after the request came: the RTT,
	// which excludes that, is about equal. Both are fine; it must be one of them.
	r, errs = Best(context.Background(), []string{slow.Addr, good.Addr}, time.Second)
	if len(errs) != 0 || (r.Server != good.Addr && r.Server != slow.Addr) {
		t.Errorf("Best(slow, good) = %s, %v; want one of them and no error", r.Server, errs)
	}

	r, errs = Best(context.Background(), []string{silent.Addr, dead}, 200*time.Millisecond)
	if r.Server != "" || len(errs) != 2 {
		t.Errorf("Best(silent, dead) = %+v, %v; want no result and 2 errors", r, errs)
	}
	r, errs = Best(context.Background(), nil, time.Second)
	if r.Server != "" || len(errs) != 1 || !errors.Is(errs[0], ErrNoServers) {
		t.Errorf("Best(none) = %+v, %v; want ErrNoServers", r, errs)
	}
}

// TestBestLowestRTT checks the choice by RTT, with a server whose replies the network
// (here: a relay) delays.
func TestBestLowestRTT(t *testing.T) {
	nearby := (&fakeServer{offset: time.Second}).serve(t)
	far := (&fakeServer{offset: 2 * time.Second}).serve(t)
	relay := delayRelay(t, far.Addr, 150*time.Millisecond)
	r, errs := Best(context.Background(), []string{relay, nearby.Addr}, time.Second)
	if len(errs) != 0 || r.Server != nearby.Addr {
		t.Errorf("Best(far via 150ms relay, nearby) = %s (RTT %v), %v; want %s", r.Server, r.RTT, errs, nearby.Addr)
	}
}

// delayRelay forwards one datagram at a time to target and its answer back, after d.
func delayRelay(t *testing.T, target string, d time.Duration) string {
	t.Helper()
	in, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { in.Close() })
	go func() {
		buf := make([]byte, 512)
		for {
			n, from, err := in.ReadFrom(buf)
			if err != nil {
				return
			}
			time.Sleep(d)
			out, err := net.Dial("udp", target)
			if err != nil {
				return
			}
			out.Write(buf[:n])
			out.SetReadDeadline(time.Now().Add(time.Second))
			if n, err = out.Read(buf); err == nil {
				in.WriteTo(buf[:n], from)
			}
			out.Close()
		}
	}()
	return in.LocalAddr().String()
}

func TestSetRTCErrors(t *testing.T) {
	if err := SetRTC(t.TempDir()+"/rtc9", time.Now()); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("SetRTC(missing device) = %v, want os.ErrNotExist", err)
	}
	// A regular file is no RTC: the ioctl must fail, not pretend.
	f := t.TempDir() + "/notrtc"
	if err := os.WriteFile(f, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := SetRTC(f, time.Now()); err == nil || !strings.Contains(err.Error(), f) {
		t.Errorf("SetRTC(regular file) = %v, want an error naming %s", err, f)
	}
}
