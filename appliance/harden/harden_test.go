package harden

import (
	"cmp"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
)

// procSysTree makes a fake /proc/sys holding files for keys, with their values.
func procSysTree(t *testing.T, keys map[string]string) string {
	t.Helper()
	root := t.TempDir()
	for k, v := range keys {
		p, err := path(root, k)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(v+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

func errStrings(errs []error) []string {
	var s []string
	for _, e := range errs {
		s = append(s, e.Error())
	}
	return s
}

func TestApplyCheck(t *testing.T) {
	settings := []Setting{
		{Key: "kernel.kptr_restrict", Value: "2"},
		{Key: "kernel.yama.ptrace_scope", Value: "2", Optional: true}, // missing: skipped
		{Key: "net.ipv4.conf.all.rp_filter", Value: "1"},
		{Key: "net/ipv4/conf/eth0.100/rp_filter", Value: "1"}, // a dot inside a component
		{Key: "net.ipv4.tcp_rmem", Value: "4096 131072 6291456"},
	}
	root := procSysTree(t, map[string]string{
		"kernel.kptr_restrict":             "0",
		"net.ipv4.conf.all.rp_filter":      "0",
		"net/ipv4/conf/eth0.100/rp_filter": "0",
		"net.ipv4.tcp_rmem":                "4096\t87380\t6291456",
	})

	errs := Check(root, settings)
	want := []string{
		"kernel.kptr_restrict is 0, want 2",
		"net.ipv4.conf.all.rp_filter is 0, want 1",
		"net/ipv4/conf/eth0.100/rp_filter is 0, want 1",
		"net.ipv4.tcp_rmem is 4096 87380 6291456, want 4096 131072 6291456",
	}
	if got := errStrings(errs); !slices.Equal(got, want) {
		t.Errorf("Check before Apply = %q, want %q", got, want)
	}

	applied, errs := Apply(root, settings)
	if applied != 4 || len(errs) != 0 {
		t.Errorf("Apply = %d, %v; want 4 applied, no error", applied, errs)
	}
	for key, want := range map[string]string{
		"kernel/kptr_restrict":             "2\n",
		"net/ipv4/conf/all/rp_filter":      "1\n",
		"net/ipv4/conf/eth0.100/rp_filter": "1\n",
	} {
		if b, err := os.ReadFile(filepath.Join(root, key)); err != nil || string(b) != want {
			t.Errorf("after Apply, %s = %q, %v; want %q", key, b, err, want)
		}
	}
	if _, err := os.Stat(filepath.Join(root, "kernel/yama/ptrace_scope")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Apply created the missing optional key kernel/yama/ptrace_scope (stat: %v)", err)
	}
	if errs := Check(root, settings); len(errs) != 0 {
		t.Errorf("Check after Apply = %v, want none", errs)
	}
}

func TestApplyErrors(t *testing.T) {
	root := procSysTree(t, map[string]string{"kernel.dmesg_restrict": "0"})
	ro := filepath.Join(root, "kernel", "dmesg_restrict")
	settings := []Setting{
		{Key: "kernel.kptr_restrict", Value: "2"}, // required and missing
		{Key: "kernel.dmesg_restrict", Value: "1"},
		{Key: "../../etc/passwd", Value: "x"},
	}
	applied, errs := Apply(root, settings)
	want := []string{"kernel.kptr_restrict: not supported by this kernel", "../../etc/passwd: not a sysctl key"}
	if got := errStrings(errs); applied != 1 || !slices.Equal(got, want) {
		t.Errorf("Apply = %d, %q; want 1, %q", applied, got, want)
	}
	if _, err := os.Stat(filepath.Join(root, "kernel", "kptr_restrict")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Apply created the missing key kernel/kptr_restrict (stat: %v)", err)
	}
	if got := errStrings(Check(root, settings[:1])); !slices.Equal(got, want[:1]) {
		t.Errorf("Check(missing required key) = %q, want %q", got, want[:1])
	}

	// A key the kernel refuses to write (here: a directory) is an error naming it,
	// and does not stop the others.
	if err := os.Remove(ro); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(ro, 0o755); err != nil {
		t.Fatal(err)
	}
	applied, errs = Apply(root, []Setting{{Key: "kernel.dmesg_restrict", Value: "1"}})
	if applied != 0 || len(errs) != 1 || !strings.HasPrefix(errs[0].Error(), "kernel.dmesg_restrict: ") {
		t.Errorf("Apply(unwritable) = %d, %v; want 0 and an error naming kernel.dmesg_restrict", applied, errs)
	}
}

// TestSysctlsList checks the appliance's list itself: no duplicates, values set, the
// promised keys there, accept_ra left alone, and every required key known to the kernel
// running the test (read only; a misspelt key would be missing).
func TestSysctlsList(t *testing.T) {
	seen := map[string]bool{}
	for _, s := range Sysctls {
		if seen[s.Key] {
			t.Errorf("Sysctls has %s twice", s.Key)
		}
		seen[s.Key] = true
		if s.Value == "" {
			t.Errorf("Sysctls: %s has no value", s.Key)
		}
		if strings.Contains(s.Key, "accept_ra") {
			t.Errorf("Sysctls sets %s: the appliance may use SLAAC", s.Key)
		}
		if _, err := os.Stat("/proc/sys/" + strings.ReplaceAll(s.Key, ".", "/")); err != nil {
			if !s.Optional {
				t.Errorf("required %s is not in this kernel's /proc/sys: %v", s.Key, err)
			} else {
				t.Logf("optional %s is not in this kernel's /proc/sys", s.Key)
			}
		}
	}
	for key, value := range map[string]string{
		"kernel.kptr_restrict": "2", "kernel.dmesg_restrict": "1", "kernel.unprivileged_bpf_disabled": "1",
		"net.core.bpf_jit_harden": "2", "kernel.yama.ptrace_scope": "2", "kernel.kexec_load_disabled": "1",
		"kernel.sysrq": "0", "fs.protected_symlinks": "1", "fs.protected_hardlinks": "1",
		"fs.protected_fifos": "2", "fs.protected_regular": "2", "fs.suid_dumpable": "0",
		"net.ipv4.conf.all.rp_filter": "1", "net.ipv4.conf.default.rp_filter": "1",
		"net.ipv4.conf.all.accept_redirects": "0", "net.ipv4.conf.default.accept_redirects": "0",
		"net.ipv6.conf.all.accept_redirects": "0", "net.ipv6.conf.default.accept_redirects": "0",
		"net.ipv4.conf.all.send_redirects": "0", "net.ipv4.conf.all.accept_source_route": "0",
		"net.ipv4.icmp_echo_ignore_broadcasts": "1", "net.ipv4.tcp_syncookies": "1",
		"net.ipv4.conf.all.log_martians": "1", "net.ipv4.ip_forward": "0",
	} {
		i := slices.IndexFunc(Sysctls, func(s Setting) bool { return s.Key == key })
		if i < 0 || Sysctls[i].Value != value {
			t.Errorf("Sysctls lacks %s = %s", key, value)
		}
	}
}

func TestListeningFixtures(t *testing.T) {
	got, err := Listening("testdata/net")
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"tcp 0.0.0.0:22 18004 uid 0",
		"tcp 0.0.0.0:53 40001 uid 101", // SO_REUSEPORT: two sockets, two entries
		"tcp 0.0.0.0:53 40002 uid 101",
		"tcp 10.0.2.15:9443 31337 uid 900",
		"tcp 127.0.0.1:631 23016 uid 0",
		"tcp6 [::]:22 18006 uid 0",
		"tcp6 [::1]:8080 22222 uid 0",
		"tcp6 [::ffff:10.0.2.15]:443 44444 uid 0",
		"tcp6 [fe80::5054:ff:fe12:3456]:9443 33333 uid 0",
		"udp 0.0.0.0:68 16012 uid 0",
		"udp 127.0.0.1:323 16100 uid 0",
		"udp6 [::]:546 17001 uid 0",
		"udp6 [::1]:323 17002 uid 0",
	}
	var gotS []string
	for _, s := range got {
		gotS = append(gotS, fmt.Sprintf("%s %d uid %d", s, s.Inode, s.UID))
	}
	if !slices.Equal(gotS, want) {
		t.Errorf("Listening(testdata/net) =\n\t%s\nwant\n\t%s", strings.Join(gotS, "\n\t"), strings.Join(want, "\n\t"))
	}
}

func TestListeningMissingAndBadTables(t *testing.T) {
	dir := t.TempDir()
	b, err := os.ReadFile("testdata/net/tcp")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "tcp"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := Listening(dir) // no tcp6, udp, udp6: a kernel without IPv6 has no tcp6
	if err != nil || len(got) != 5 {
		t.Errorf("Listening(only tcp) = %v, %v; want the 5 TCP listeners", got, err)
	}

	bad := "  sl  local_address rem_address   st\n   0: 0100007G:0277 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1\n"
	if err := os.WriteFile(filepath.Join(dir, "udp"), []byte(bad), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Listening(dir); err == nil || !strings.Contains(err.Error(), "udp line 2") {
		t.Errorf("Listening(bad udp table) = %v, want an error naming udp line 2", err)
	}
}

func TestParseAddrPort(t *testing.T) {
	for in, want := range map[string]string{
		"0100007F:0277":                         "127.0.0.1:631",
		"0F02000A:24E3":                         "10.0.2.15:9443",
		"00000000000000000000000001000000:0016": "[::1]:22",
		"B80D0120000000000000000001000000:0035": "[2001:db8::1]:53",
	} {
		got, err := parseAddrPort(in)
		if err != nil || got.String() != want {
			t.Errorf("parseAddrPort(%q) = %v, %v; want %s", in, got, err, want)
		}
	}
	for _, in := range []string{"0100007F", "0100007F:XYZ", "01007F:0016", "0100007F:10000"} {
		if got, err := parseAddrPort(in); err == nil {
			t.Errorf("parseAddrPort(%q) = %v, want an error", in, got)
		}
	}
}

func inode(t *testing.T, c syscall.Conn) uint64 {
	t.Helper()
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var st syscall.Stat_t
	var serr error
	if err := rc.Control(func(fd uintptr) { serr = syscall.Fstat(int(fd), &st) }); err != nil {
		t.Fatal(err)
	}
	if serr != nil {
		t.Fatal(serr)
	}
	return st.Ino
}

// TestListeningReal reads this process's own sockets from the real /proc/net.
func TestListeningReal(t *testing.T) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	// A connected TCP socket, both ends, must not count.
	cc, err := net.Dial("tcp4", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	sc, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()

	want := []Socket{
		{Proto: "tcp", Addr: netip.MustParseAddrPort(ln.Addr().String()), Inode: inode(t, ln.(*net.TCPListener))},
		{Proto: "udp", Addr: netip.MustParseAddrPort(pc.LocalAddr().String()), Inode: inode(t, pc.(*net.UDPConn))},
	}
	got, err := Listening("/proc/net")
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range want {
		if !slices.Contains(got, w) {
			t.Errorf("Listening(/proc/net) = %v, want it to contain %s (inode %d)", got, w, w.Inode)
		}
	}
	client := netip.MustParseAddrPort(cc.LocalAddr().String())
	for _, s := range got {
		if s.Addr == client {
			t.Errorf("Listening(/proc/net) has %s, the client end of a connection", s)
		}
	}
	if !slices.IsSortedFunc(got, func(a, b Socket) int {
		return cmp.Or(strings.Compare(a.Proto, b.Proto), a.Addr.Compare(b.Addr), cmp.Compare(a.Inode, b.Inode))
	}) {
		t.Errorf("Listening(/proc/net) is not sorted: %v", got)
	}

	owners, err := Owners("/proc")
	if err != nil {
		t.Fatal(err)
	}
	comm, err := os.ReadFile("/proc/self/comm")
	if err != nil {
		t.Fatal(err)
	}
	me := strings.TrimSpace(string(comm))
	for _, w := range want {
		if owners[w.Inode] != me {
			t.Errorf("Owners(/proc)[%d] (%s) = %q, want %q", w.Inode, w, owners[w.Inode], me)
		}
	}
}
