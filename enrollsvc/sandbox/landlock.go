// Landlock (Linux 5.13 and later, landlock(7)): the service may write only beneath the
// directories it owns. Reading stays as the file permissions say; what Landlock takes away is
// every way of changing the file system elsewhere: writing or truncating a file, creating,
// removing or linking an entry, or making a device node, socket, FIFO or symbolic link.
//
// A Landlock domain belongs to a thread (landlock_restrict_self(2) restricts the caller only),
// and the Go runtime runs many threads, some before main starts; kernels before the
// LANDLOCK_RESTRICT_SELF_TSYNC flag cannot restrict them all. A domain is, however, kept across
// execve(2), so RestrictWrites restricts the calling thread and executes the program again from
// it: the new process, and every thread it ever has, starts inside the domain.
//
// The system calls are made directly (golang.org/x/sys/unix): the go-landlock library restricts
// every thread with libpsx, which needs cgo hooks into thread creation, and the re-execution
// makes that unnecessary.

package sandbox

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// LandlockedEnv marks, in the environment of the re-executed program, that it runs inside the
// domain, with the Landlock ABI version it was made with.
const LandlockedEnv = "AE_LANDLOCKED"

// writeAccess is every file-system change Landlock ABI 1 can handle; ABI 2 adds REFER (linking
// or renaming into another directory) and ABI 3 TRUNCATE.
const writeAccess = unix.LANDLOCK_ACCESS_FS_WRITE_FILE | unix.LANDLOCK_ACCESS_FS_REMOVE_DIR |
	unix.LANDLOCK_ACCESS_FS_REMOVE_FILE | unix.LANDLOCK_ACCESS_FS_MAKE_CHAR | unix.LANDLOCK_ACCESS_FS_MAKE_DIR |
	unix.LANDLOCK_ACCESS_FS_MAKE_REG | unix.LANDLOCK_ACCESS_FS_MAKE_SOCK | unix.LANDLOCK_ACCESS_FS_MAKE_FIFO |
	unix.LANDLOCK_ACCESS_FS_MAKE_BLOCK | unix.LANDLOCK_ACCESS_FS_MAKE_SYM

// ErrNoLandlock: the kernel has no Landlock (not built, or not in the lsm= list).
var ErrNoLandlock = errors.New("sandbox: the kernel has no Landlock (CONFIG_SECURITY_LANDLOCK, lsm=landlock)")

// Landlocked reports the Landlock ABI version the process was restricted with by RestrictWrites
// (0: it was not).
func Landlocked() int {
	v, _ := strconv.Atoi(os.Getenv(LandlockedEnv))
	return v
}

// LandlockABI is the kernel's Landlock ABI version, or ErrNoLandlock.
func LandlockABI() (int, error) {
	v, _, e := syscall.Syscall(unix.SYS_LANDLOCK_CREATE_RULESET, 0, 0, unix.LANDLOCK_CREATE_RULESET_VERSION)
	if e != 0 {
		if e == syscall.ENOSYS || e == syscall.EOPNOTSUPP {
			return 0, ErrNoLandlock
		}
		return 0, fmt.Errorf("sandbox: landlock_create_ruleset: %w", e)
	}
	return int(v), nil
}

// RestrictWrites confines the process so that it can change the file system only beneath dirs.
// In a process not yet restricted it never returns on success: it sets no_new_privs, restricts
// the calling thread and executes the program again (/proc/self/exe, the same arguments, the
// environment plus LandlockedEnv and env). In the re-executed process it returns the ABI version
// at once. A directory that cannot be opened is an error; so is a kernel without Landlock.
func RestrictWrites(dirs []string, env ...string) (int, error) {
	if v := Landlocked(); v > 0 {
		return v, nil
	}
	abi, err := LandlockABI()
	if err != nil {
		return 0, err
	}
	handled := uint64(writeAccess)
	if abi >= 2 {
		handled |= unix.LANDLOCK_ACCESS_FS_REFER
	}
	if abi >= 3 {
		handled |= unix.LANDLOCK_ACCESS_FS_TRUNCATE
	}
	// Only handled_access_fs, the first field of struct landlock_ruleset_attr in every ABI.
	attr := struct{ handledAccessFS uint64 }{handled}
	fd, _, e := syscall.Syscall(unix.SYS_LANDLOCK_CREATE_RULESET, uintptr(unsafe.Pointer(&attr)), unsafe.Sizeof(attr), 0)
	if e != 0 {
		return 0, fmt.Errorf("sandbox: landlock_create_ruleset: %w", e)
	}
	ruleset := int(fd)
	defer syscall.Close(ruleset)
	for _, d := range dirs {
		if err := allowBeneath(ruleset, d, handled); err != nil {
			return 0, err
		}
	}
	exe, err := os.Executable()
	if err != nil {
		return 0, fmt.Errorf("sandbox: finding the program to run again: %w", err)
	}
	environ := append(os.Environ(), env...)
	environ = append(environ, LandlockedEnv+"="+strconv.Itoa(abi))

	// From here on the thread is changed for good: it must be the one that executes.
	runtime.LockOSThread()
	if _, _, e := syscall.RawSyscall6(syscall.SYS_PRCTL, unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0, 0); e != 0 {
		return 0, fmt.Errorf("sandbox: prctl(PR_SET_NO_NEW_PRIVS): %w", e)
	}
	if _, _, e := syscall.RawSyscall(unix.SYS_LANDLOCK_RESTRICT_SELF, uintptr(ruleset), 0, 0); e != 0 {
		return 0, fmt.Errorf("sandbox: landlock_restrict_self: %w", e)
	}
	err = syscall.Exec(exe, os.Args, environ)
	return 0, fmt.Errorf("sandbox: running %s again inside the Landlock domain: %w", exe, err)
}

func allowBeneath(ruleset int, dir string, access uint64) error {
	fd, err := unix.Open(dir, unix.O_PATH|unix.O_CLOEXEC|unix.O_DIRECTORY, 0)
	if err != nil {
		return fmt.Errorf("sandbox: opening %s for its Landlock rule: %w", dir, err)
	}
	defer unix.Close(fd)
	rule := unix.LandlockPathBeneathAttr{Allowed_access: access, Parent_fd: int32(fd)}
	// struct landlock_path_beneath_attr is packed: 8 bytes of access, then the descriptor.
	if _, _, e := syscall.Syscall6(unix.SYS_LANDLOCK_ADD_RULE, uintptr(ruleset), unix.LANDLOCK_RULE_PATH_BENEATH,
		uintptr(unsafe.Pointer(&rule)), 0, 0, 0); e != 0 {
		return fmt.Errorf("sandbox: landlock_add_rule for %s: %w", dir, e)
	}
	return nil
}
