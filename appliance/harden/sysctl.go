// Package harden hardens the running appliance: it sets the kernel's security sysctls
// (Apply, then Check reads them back), and lists the sockets that listen for the network
// (Listening, Owners) so the console and tests can show that only the expected services
// are reachable.
package harden

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// Setting is one sysctl: Key in sysctl(8)'s dotted form ("kernel.kptr_restrict"), or with
// slashes when a component holds a dot ("net/ipv4/conf/eth0.100/rp_filter").
type Setting struct {
	Key      string
	Value    string
	Optional bool // the key may be missing: the kernel lacks the feature, so nothing to harden
}

// Sysctls is the appliance's hardening, in the spirit of the KSPP recommendations and the
// CIS benchmarks. The appliance is one host on one management network: it neither routes
// nor accepts routes. IPv6 router advertisements (accept_ra) are left alone, since the
// appliance may configure IPv6 by SLAAC.
var Sysctls = []Setting{
	// Kernel pointers, logs and debugging interfaces.
	{Key: "kernel.kptr_restrict", Value: "2"},
	{Key: "kernel.dmesg_restrict", Value: "1"},
	{Key: "kernel.yama.ptrace_scope", Value: "2", Optional: true},         // CONFIG_SECURITY_YAMA
	{Key: "kernel.unprivileged_bpf_disabled", Value: "1", Optional: true}, // CONFIG_BPF_SYSCALL; 1 cannot be undone
	{Key: "net.core.bpf_jit_harden", Value: "2", Optional: true},          // CONFIG_BPF_JIT
	{Key: "kernel.kexec_load_disabled", Value: "1", Optional: true},       // CONFIG_KEXEC_CORE; cannot be undone
	{Key: "kernel.sysrq", Value: "0", Optional: true},                     // CONFIG_MAGIC_SYSRQ: no magic keys
	{Key: "dev.tty.ldisc_autoload", Value: "0", Optional: true},           // Linux 5.1+
	{Key: "vm.unprivileged_userfaultfd", Value: "0", Optional: true},      // CONFIG_USERFAULTFD, Linux 5.2+
	{Key: "fs.suid_dumpable", Value: "0"},                                 // no core dumps of setuid programs
	// Files: link and open tricks in world-writable sticky directories.
	{Key: "fs.protected_symlinks", Value: "1"},
	{Key: "fs.protected_hardlinks", Value: "1"},
	{Key: "fs.protected_fifos", Value: "2"},
	{Key: "fs.protected_regular", Value: "2"},
	// IPv4: a host, not a router.
	{Key: "net.ipv4.ip_forward", Value: "0"},
	{Key: "net.ipv4.conf.all.rp_filter", Value: "1"}, // strict: one interface, symmetric routes
	{Key: "net.ipv4.conf.default.rp_filter", Value: "1"},
	{Key: "net.ipv4.conf.all.accept_redirects", Value: "0"},
	{Key: "net.ipv4.conf.default.accept_redirects", Value: "0"},
	{Key: "net.ipv4.conf.all.secure_redirects", Value: "0"},
	{Key: "net.ipv4.conf.default.secure_redirects", Value: "0"},
	{Key: "net.ipv4.conf.all.send_redirects", Value: "0"},
	{Key: "net.ipv4.conf.default.send_redirects", Value: "0"},
	{Key: "net.ipv4.conf.all.accept_source_route", Value: "0"},
	{Key: "net.ipv4.conf.default.accept_source_route", Value: "0"},
	{Key: "net.ipv4.conf.all.log_martians", Value: "1"},
	{Key: "net.ipv4.icmp_echo_ignore_broadcasts", Value: "1"},
	{Key: "net.ipv4.icmp_ignore_bogus_error_responses", Value: "1"},
	{Key: "net.ipv4.tcp_syncookies", Value: "1"},
	// IPv6, when the kernel has it.
	{Key: "net.ipv6.conf.all.forwarding", Value: "0", Optional: true},
	{Key: "net.ipv6.conf.all.accept_redirects", Value: "0", Optional: true},
	{Key: "net.ipv6.conf.default.accept_redirects", Value: "0", Optional: true},
	{Key: "net.ipv6.conf.all.accept_source_route", Value: "0", Optional: true},
	{Key: "net.ipv6.conf.default.accept_source_route", Value: "0", Optional: true},
}

// path is where key lives under procSys.
func path(procSys, key string) (string, error) {
	rel := key
	if !strings.Contains(key, "/") {
		rel = strings.ReplaceAll(key, ".", "/")
	}
	if rel == "" || !filepath.IsLocal(rel) {
		return "", fmt.Errorf("%s: not a sysctl key", key)
	}
	return filepath.Join(procSys, rel), nil
}

// Apply writes settings under procSys ("/proc/sys" on the appliance). A missing Optional
// key is skipped; any other failure is an error naming the key, and the others are still
// written. applied counts the values written.
func Apply(procSys string, settings []Setting) (applied int, errs []error) {
	for _, s := range settings {
		p, err := path(procSys, s.Key)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		// Never O_CREATE: a key the kernel does not have must not appear as a file.
		f, err := os.OpenFile(p, os.O_WRONLY|os.O_TRUNC, 0)
		if errors.Is(err, fs.ErrNotExist) {
			if !s.Optional {
				errs = append(errs, fmt.Errorf("%s: not supported by this kernel", s.Key))
			}
			continue
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", s.Key, err))
			continue
		}
		_, err = f.WriteString(s.Value + "\n")
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("set %s = %s: %w", s.Key, s.Value, err))
			continue
		}
		applied++
	}
	return applied, errs
}

// Check reads settings back from procSys and returns an error for each that differs
// ("kernel.kptr_restrict is 0, want 2") or cannot be read. Missing Optional keys pass.
// Values compare field by field, so "4\t4\t1\t7" equals "4 4 1 7".
func Check(procSys string, settings []Setting) []error {
	var errs []error
	for _, s := range settings {
		p, err := path(procSys, s.Key)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		b, err := os.ReadFile(p)
		if errors.Is(err, fs.ErrNotExist) {
			if !s.Optional {
				errs = append(errs, fmt.Errorf("%s: not supported by this kernel", s.Key))
			}
			continue
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", s.Key, err))
			continue
		}
		got, want := strings.Join(strings.Fields(string(b)), " "), strings.Join(strings.Fields(s.Value), " ")
		if got != want {
			errs = append(errs, fmt.Errorf("%s is %s, want %s", s.Key, got, want))
		}
	}
	return errs
}
