package freeport

import (
	"net"
	"strconv"
	"testing"
)

// Port's ports lie below the kernel's ephemeral range, are free (they can be bound) and are
// never handed out twice by one process.
func TestPort(t *testing.T) {
	low, err := ephemeralLow()
	if err != nil {
		t.Skipf("no ip_local_port_range: %v", err)
	}
	seen := map[int]bool{}
	for range 50 {
		p, err := Port()
		if err != nil {
			t.Fatal(err)
		}
		if p >= low || p < lower {
			t.Fatalf("port %d: not between %d and the ephemeral range's start %d", p, lower, low)
		}
		if seen[p] {
			t.Fatalf("port %d handed out twice", p)
		}
		seen[p] = true
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
		if err != nil {
			t.Fatalf("port %d is not free: %v", p, err)
		}
		l.Close()
	}
}

// A port something listens on is never handed out, and a range with no free port is an error.
func TestPickSkipsBusy(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	a := busy.Addr().(*net.TCPAddr).Port
	if p, err := pick(a, a+1); err == nil {
		t.Fatalf("pick handed out port %d, which is in use", p)
	}
	// A free port: the kernel's, let go.
	free, err := kernelPort()
	if err != nil {
		t.Fatal(err)
	}
	if p, err := pick(free, free+1); err != nil || p != free {
		t.Fatalf("pick(%d, %d) = %d, %v; want the free port", free, free+1, p, err)
	}
	if p, err := pick(free, free+1); err == nil {
		t.Fatalf("pick handed out port %d twice", p)
	}
}
