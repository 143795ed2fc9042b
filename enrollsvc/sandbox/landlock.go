// Landlock (Linux 5.13 and later, landlock(7)): the service may write only beneath the
// directories it owns. Reading stays as the file permissions say; what Landlock takes away is
// every way of changing the file system elsewhere: writing or truncating a file, creating,
// removing or linking an entry, or making a device node, socket, FIFO or symbolic link.
//
// A Landlock domain belongs to a thread (landlock_restrict_self(2) restricts the caller only),
// and the Go runtime runs many threads, some before main starts; kernels before Landlock ABI 8
// (LANDLOCK_RESTRICT_SELF_TSYNC) cannot restrict them all at once. The rules are enforced by
// github.com/landlock-lsm/go-landlock, which on such kernels makes the same system calls on every
// thread with libpsx (it wraps pthread_create, so it knows the threads the Go runtime and the
// PKCS#11 module start) and uses TSYNC where the kernel has it. It replaces running the program
// again from a restricted thread (a second start of the service, about 30 ms natively) and the
// environment variable that told the second start it was already restricted (whoever set it in
// the service's environment would have turned the restriction off).

package sandbox

import (
	"errors"
	"fmt"
	"syscall"

	"github.com/landlock-lsm/go-landlock/landlock"
	"golang.org/x/sys/unix"
)

// writeAccess is every file-system change Landlock ABI 1 can handle; ABI 2 adds REFER (linking
// or renaming into another directory) and ABI 3 TRUNCATE.
const writeAccess = unix.LANDLOCK_ACCESS_FS_WRITE_FILE | unix.LANDLOCK_ACCESS_FS_REMOVE_DIR |
	unix.LANDLOCK_ACCESS_FS_REMOVE_FILE | unix.LANDLOCK_ACCESS_FS_MAKE_CHAR | unix.LANDLOCK_ACCESS_FS_MAKE_DIR |
	unix.LANDLOCK_ACCESS_FS_MAKE_REG | unix.LANDLOCK_ACCESS_FS_MAKE_SOCK | unix.LANDLOCK_ACCESS_FS_MAKE_FIFO |
	unix.LANDLOCK_ACCESS_FS_MAKE_BLOCK | unix.LANDLOCK_ACCESS_FS_MAKE_SYM

// ErrNoLandlock: the kernel has no Landlock (not built, or not in the lsm= list).
var ErrNoLandlock = errors.New("sandbox: the kernel has no Landlock (CONFIG_SECURITY_LANDLOCK, lsm=landlock)")

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

// RestrictWrites confines the process, every thread of it, so that it can change the file
// system only beneath dirs, and sets no_new_privs; it returns the kernel's Landlock ABI version.
// A directory that cannot be opened is an error; so is a kernel without Landlock.
func RestrictWrites(dirs []string) (int, error) {
	abi, err := LandlockABI()
	if err != nil {
		return 0, err
	}
	handled := landlock.AccessFSSet(writeAccess)
	if abi >= 2 {
		handled |= unix.LANDLOCK_ACCESS_FS_REFER
	}
	if abi >= 3 {
		handled |= unix.LANDLOCK_ACCESS_FS_TRUNCATE
	}
	cfg, err := landlock.NewConfig(handled)
	if err != nil {
		return 0, fmt.Errorf("sandbox: the Landlock rules: %w", err)
	}
	for _, d := range dirs { // the library's error would not say which
		fd, err := unix.Open(d, unix.O_PATH|unix.O_CLOEXEC|unix.O_DIRECTORY, 0)
		if err != nil {
			return 0, fmt.Errorf("sandbox: opening %s for its Landlock rule: %w", d, err)
		}
		unix.Close(fd)
	}
	if err := cfg.RestrictPaths(landlock.PathAccess(handled, dirs...)); err != nil {
		return 0, fmt.Errorf("sandbox: restricting writes to %v: %w", dirs, err)
	}
	return abi, nil
}
