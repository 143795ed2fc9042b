package harden

import (
	"bufio"
	"cmp"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// Socket is a socket waiting for the network: a TCP socket in LISTEN, or an unconnected
// UDP socket.
type Socket struct {
	Proto string // "tcp", "tcp6", "udp" or "udp6", as the /proc/net file it came from
	Addr  netip.AddrPort
	Inode uint64 // the socket's inode: see Owners
	UID   int    // the user of the process that made it
}

// String is "tcp 10.0.2.15:9443" or "udp6 [::]:546".
func (s Socket) String() string { return s.Proto + " " + s.Addr.String() }

// /proc/net socket states (include/net/tcp_states.h).
const (
	stateEstablished = 0x01
	stateClose       = 0x07 // an unconnected UDP socket
	stateListen      = 0x0A
)

// Listening lists the listening sockets in procNet ("/proc/net": the caller's network
// namespace), from its tcp, tcp6, udp and udp6 tables, sorted by protocol, address and
// inode. A table that is missing (no IPv6 in the kernel) is skipped. Sockets sharing a
// port (SO_REUSEPORT) stay separate entries: they may belong to different programs.
func Listening(procNet string) ([]Socket, error) {
	var all []Socket
	for _, proto := range []string{"tcp", "tcp6", "udp", "udp6"} {
		socks, err := readTable(filepath.Join(procNet, proto), proto)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, err
		}
		all = append(all, socks...)
	}
	slices.SortFunc(all, func(a, b Socket) int {
		return cmp.Or(cmp.Compare(a.Proto, b.Proto), a.Addr.Compare(b.Addr), cmp.Compare(a.Inode, b.Inode))
	})
	return slices.Compact(all), nil
}

// readTable reads one /proc/net table:
//
//	sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
//	 0: 0100007F:0277 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 23016 1 ...
func readTable(path, proto string) ([]Socket, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	udp := strings.HasPrefix(proto, "udp")
	var socks []Socket
	sc := bufio.NewScanner(f)
	for line := 0; sc.Scan(); line++ {
		if line == 0 {
			continue // header
		}
		fields := strings.Fields(sc.Text())
		if len(fields) == 0 {
			continue
		}
		s, listening, err := parseLine(fields, udp)
		if err != nil {
			return nil, fmt.Errorf("%s line %d: %w", path, line+1, err)
		}
		if listening {
			s.Proto = proto
			socks = append(socks, s)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return socks, nil
}

func parseLine(fields []string, udp bool) (s Socket, listening bool, err error) {
	if len(fields) < 10 {
		return s, false, fmt.Errorf("%d fields, want at least 10", len(fields))
	}
	local, err := parseAddrPort(fields[1])
	if err != nil {
		return s, false, fmt.Errorf("local address: %w", err)
	}
	remote, err := parseAddrPort(fields[2])
	if err != nil {
		return s, false, fmt.Errorf("remote address: %w", err)
	}
	state, err := strconv.ParseUint(fields[3], 16, 8)
	if err != nil {
		return s, false, fmt.Errorf("state %q: %w", fields[3], err)
	}
	uid, err := strconv.Atoi(fields[7])
	if err != nil {
		return s, false, fmt.Errorf("uid %q: %w", fields[7], err)
	}
	inode, err := strconv.ParseUint(fields[9], 10, 64)
	if err != nil {
		return s, false, fmt.Errorf("inode %q: %w", fields[9], err)
	}
	if udp {
		listening = state == stateClose && remote.Port() == 0 && remote.Addr().IsUnspecified()
	} else {
		listening = state == stateListen
	}
	return Socket{Addr: local, Inode: inode, UID: uid}, listening, nil
}

// parseAddrPort parses "0100007F:0277" (127.0.0.1:631). The address is the kernel's
// bytes printed as 32-bit words in host byte order, so little-endian per word on the
// appliance's x86-64; the port is plain hex.
func parseAddrPort(s string) (netip.AddrPort, error) {
	h, p, ok := strings.Cut(s, ":")
	if !ok {
		return netip.AddrPort{}, fmt.Errorf("%q has no port", s)
	}
	port, err := strconv.ParseUint(p, 16, 16)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("port %q: %w", p, err)
	}
	raw, err := hex.DecodeString(h)
	if err != nil || (len(raw) != 4 && len(raw) != 16) {
		return netip.AddrPort{}, fmt.Errorf("address %q: want 8 or 32 hex digits", h)
	}
	b := make([]byte, len(raw))
	for i := 0; i < len(raw); i += 4 {
		binary.NativeEndian.PutUint32(b[i:], binary.BigEndian.Uint32(raw[i:]))
	}
	addr, _ := netip.AddrFromSlice(b)
	return netip.AddrPortFrom(addr, uint16(port)), nil
}

// Owners maps socket inodes to the name (comm) of a process holding them, by reading
// the fd links ("socket:[23016]") of every process under procRoot ("/proc"). When
// several processes share a socket, the one with the lowest pid names it. Processes that
// end meanwhile, or whose fds cannot be read, are left out.
func Owners(procRoot string) (map[uint64]string, error) {
	ents, err := os.ReadDir(procRoot)
	if err != nil {
		return nil, err
	}
	type proc struct {
		pid int
		dir string
	}
	var procs []proc
	for _, e := range ents {
		if pid, err := strconv.Atoi(e.Name()); err == nil && pid > 0 {
			procs = append(procs, proc{pid, filepath.Join(procRoot, e.Name())})
		}
	}
	slices.SortFunc(procs, func(a, b proc) int { return cmp.Compare(a.pid, b.pid) })
	owners := map[uint64]string{}
	for _, p := range procs {
		fds, err := os.ReadDir(filepath.Join(p.dir, "fd"))
		if err != nil {
			continue
		}
		var name string
		for _, fd := range fds {
			link, err := os.Readlink(filepath.Join(p.dir, "fd", fd.Name()))
			if err != nil {
				continue
			}
			num, ok := strings.CutPrefix(link, "socket:[")
			if !ok {
				continue
			}
			inode, err := strconv.ParseUint(strings.TrimSuffix(num, "]"), 10, 64)
			if err != nil {
				continue
			}
			if _, seen := owners[inode]; seen {
				continue
			}
			if name == "" {
				comm, err := os.ReadFile(filepath.Join(p.dir, "comm"))
				if err != nil {
					break
				}
				name = strings.TrimSpace(string(comm))
			}
			owners[inode] = name
		}
	}
	return owners, nil
}
