// Package freeport picks loopback TCP ports for tests, benchmarks and their helpers that must
// name a port before the program that listens on it binds it: another process (QEMU's host
// forward, PostgreSQL, enrollsvc started as a command) or an address written into a CA's URLs
// at provisioning.
//
// The usual way, listening on port 0 and closing the socket, hands back a port from the
// kernel's ephemeral range, which the kernel gives again to the next listen on port 0 or
// outgoing connection of any program. With many test binaries running at once, one of them
// takes the port before the intended listener binds it, and that listener fails. Port picks
// instead a random port just below the ephemeral range (net.ipv4.ip_local_port_range, the
// range RFC 6056 §2 calls the ephemeral ports), which the kernel never hands out by itself,
// and checks that it is free. In-process listeners should bind port 0 and keep the socket
// instead.
package freeport

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
)

const (
	span  = 16384 // how many ports below the ephemeral range Port picks from
	lower = 1024  // never below: the privileged ports
	tries = 200
)

var (
	mu     sync.Mutex
	handed = map[int]bool{} // ports this process handed out: never twice
)

// Port returns a port on 127.0.0.1 that nothing listened on a moment ago, for TCP and UDP,
// outside the kernel's ephemeral range, and never the same port twice in one process.
func Port() (int, error) {
	low, err := ephemeralLow()
	if err != nil || low-lower < 1024 {
		// No room below the ephemeral range: the kernel's own choice, with its race.
		return kernelPort()
	}
	return pick(max(lower, low-span), low)
}

// pick returns a free port in [from, to) that this process has not handed out before.
func pick(from, to int) (int, error) {
	mu.Lock()
	defer mu.Unlock()
	for range tries {
		p := from + rand.IntN(to-from)
		if handed[p] {
			continue
		}
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(p))
		l, err := net.Listen("tcp", addr)
		if err != nil {
			continue // in use
		}
		l.Close()
		u, err := net.ListenPacket("udp", addr) // free for UDP as well (a syslog receiver's)
		if err != nil {
			continue
		}
		u.Close()
		handed[p] = true
		return p, nil
	}
	return 0, fmt.Errorf("freeport: no free port in %d-%d after %d tries", from, to-1, tries)
}

// ephemeralLow is the first port of the kernel's ephemeral range.
func ephemeralLow() (int, error) {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 0, err
	}
	f := strings.Fields(string(b))
	if len(f) != 2 {
		return 0, errors.New("freeport: ip_local_port_range: not two numbers")
	}
	return strconv.Atoi(f[0])
}

// kernelPort is a port the kernel picks (listen on port 0, then close).
func kernelPort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("freeport: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
