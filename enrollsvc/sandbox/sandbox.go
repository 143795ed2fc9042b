// Package sandbox confines the enrollment service once it runs: it sets no_new_privs and loads a
// seccomp allow-list (Linux seccomp(2), SECCOMP_SET_MODE_FILTER with SECCOMP_FILTER_FLAG_TSYNC, so
// every thread of the Go runtime and of the PKCS#11 module gets it). A system call outside the list
// kills the whole process (SECCOMP_RET_KILL_PROCESS): its supervisor sees "killed by signal bad
// system call" and restarts it. The list holds what the Go runtime, SQLite, TLS listeners, LDAP and
// the PKCS#11 module (SoftHSM2) use, measured under strace over the service's end-to-end tests, plus
// the runtime's rare paths (thread exit, restarted sleeps); it has no execve, fork, ptrace, mount,
// module, kexec, reboot, namespace, keyring, bpf or set*id call, so code that takes over the service
// can neither start a program nor widen its privileges.
//
// The filter is assembled by github.com/elastic/go-seccomp-bpf: pure Go (libseccomp would put a C
// library and its cgo binding in the image), it checks the audit architecture first and knows the
// system call numbers of each architecture.
package sandbox

import (
	"fmt"
	"slices"

	seccomp "github.com/elastic/go-seccomp-bpf"
)

// Allowed are the system calls the service may make, by name (the kernel's, for the running
// architecture).
var Allowed = []string{
	// Files: the data directory, the SQLite store, the SoftHSM token, CRLs.
	"read", "write", "pread64", "pwrite64", "readv", "writev", "open", "openat", "close", "lseek",
	"stat", "fstat", "lstat", "newfstatat", "statx", "access", "faccessat", "faccessat2", "readlinkat",
	"getdents64", "fcntl", "flock", "fsync", "fdatasync", "ftruncate", "fchmod", "fchown", "unlink",
	"unlinkat", "rename", "renameat", "mkdir", "mkdirat", "ioctl", "dup", "dup3", "pipe2", "umask",
	// The metrics' process collector: statfs tells it /proc is procfs (it reads only).
	"statfs", "fstatfs",
	// Memory.
	"mmap", "munmap", "mprotect", "madvise", "brk", "mremap", "mlock", "munlock", "mincore",
	// Threads, signals, time (the Go runtime and the C libraries).
	"clone", "clone3", "futex", "set_robust_list", "get_robust_list", "set_tid_address", "rseq",
	"sched_yield", "sched_getaffinity", "gettid", "getpid", "tgkill", "rt_sigaction", "rt_sigprocmask",
	"rt_sigreturn", "sigaltstack", "nanosleep", "clock_nanosleep", "clock_gettime", "clock_getres",
	"gettimeofday", "restart_syscall", "exit", "exit_group", "arch_prctl", "prctl", "prlimit64",
	"getrlimit", "getrusage", "uname", "sysinfo", "getrandom", "getuid", "geteuid", "getgid",
	"getegid", "getppid",
	// Network: the listeners, LDAP, DNS.
	"socket", "bind", "listen", "accept4", "connect", "getsockname", "getpeername", "getsockopt",
	"setsockopt", "sendto", "recvfrom", "sendmsg", "recvmsg", "shutdown", "epoll_create1", "epoll_ctl",
	"epoll_pwait", "epoll_wait", "eventfd2", "poll", "ppoll",
}

// Filter is the seccomp filter Apply loads.
func Filter() seccomp.Filter {
	return seccomp.Filter{
		NoNewPrivs: true,
		Flag:       seccomp.FilterFlagTSync,
		Policy: seccomp.Policy{
			DefaultAction: seccomp.ActionKillProcess,
			Syscalls:      []seccomp.SyscallGroup{{Action: seccomp.ActionAllow, Names: slices.Clone(Allowed)}},
		},
	}
}

// Apply sets no_new_privs and loads the allow-list for every thread of the process. It cannot be
// undone: call it once the process has everything it needs from the outside world that the list
// does not allow (nothing, for the service: its listeners and files are opened with allowed calls).
func Apply() error {
	if !seccomp.Supported() {
		return fmt.Errorf("sandbox: the kernel has no seccomp filter support (CONFIG_SECCOMP_FILTER)")
	}
	if err := seccomp.LoadFilter(Filter()); err != nil {
		return fmt.Errorf("sandbox: %w", err)
	}
	return nil
}
