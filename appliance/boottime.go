package appliance

import (
	"bytes"
	"cmp"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// The boot's timeline, for status: when each phase ended, as time since the kernel started
// (CLOCK_BOOTTIME). What comes before the kernel's clock (the platform firmware, the boot loader,
// the kernel's own decompression) only the host sees; the VM test adds it from QEMU's start.

// Boot phases, in order.
const (
	bootKernel    = "kernel"           // the kernel's own initialisation, to the initramfs
	bootInitramfs = "initramfs unpack" // the kernel unpacks the initramfs
	bootToInit    = "kernel to /init"  // the rest of the kernel's start, to running /init
	bootInit      = "init"             // from the kernel's running /init (process 1) to its payload's start
	bootModules   = "mounts and modules"
	bootDisk      = "data disk" // find, unlock (TPM), check, mount
	bootNetwork   = "network"   // the management address (DHCP or static)
	bootService   = "service"   // enrollsvc started until its API answers
)

// sinceKernelStart is CLOCK_BOOTTIME.
func sinceKernelStart() time.Duration {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts); err != nil {
		return 0
	}
	return time.Duration(ts.Nano())
}

// bootTimeline records when each phase of this boot ended.
type bootTimeline struct {
	mu    sync.Mutex
	marks []bootMark
}

type bootMark struct {
	phase string
	at    time.Duration // since the kernel started
}

// mark records that phase ended now (once: a phase marked again keeps its first end).
func (b *bootTimeline) mark(phase string) { b.markAt(phase, sinceKernelStart()) }

func (b *bootTimeline) markAt(phase string, at time.Duration) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, m := range b.marks {
		if m.phase == phase {
			return
		}
	}
	b.marks = append(b.marks, bootMark{phase, at})
}

// kernelMarks reads the kernel's log (/dev/kmsg, RFC-less "PRIO,SEQ,USEC,FLAGS;TEXT" records,
// Documentation/ABI/testing/dev-kmsg) for when the initramfs unpacking began and ended and when
// the kernel ran /init, and records the kernel and initramfs phases.
func (b *bootTimeline) kernelMarks(kmsg string) error {
	// Read with system calls: os.File would park a read of this pollable device at the end of
	// the buffer (EAGAIN) until the kernel logs something more.
	fd, err := unix.Open(kmsg, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return &os.PathError{Op: "open", Path: kmsg, Err: err}
	}
	defer unix.Close(fd)
	var unpack, unpacked, runInit time.Duration
	buf := make([]byte, 8192) // one record per read
	var pending []byte        // a regular file (tests) gives several records per read
	for {
		n, err := unix.Read(fd, buf)
		if err == unix.EPIPE || err == unix.EINTR {
			continue // records overwritten before we read them
		}
		if err != nil || n <= 0 {
			break // EAGAIN: the end of the kernel's buffer
		}
		pending = append(pending, buf[:n]...)
		for {
			i := bytes.IndexByte(pending, '\n')
			if i < 0 {
				break
			}
			line := string(pending[:i])
			pending = pending[i+1:]
			at, text, ok := parseKmsg(line)
			switch {
			case !ok:
			case strings.Contains(text, "Unpacking initramfs") || strings.Contains(text, "Trying to unpack rootfs image"):
				unpack = at
			case strings.Contains(text, "Freeing initrd memory"):
				unpacked = at
			case strings.HasPrefix(text, "Run /init"):
				runInit = at
			}
		}
	}
	if unpack > 0 {
		b.markAt(bootKernel, unpack)
	}
	if unpacked > 0 {
		b.markAt(bootInitramfs, unpacked)
	}
	if runInit > 0 {
		b.markAt(bootToInit, runInit)
	}
	return nil
}

// parseKmsg reads one /dev/kmsg record: its timestamp and its text.
func parseKmsg(line string) (time.Duration, string, bool) {
	head, text, ok := strings.Cut(strings.TrimRight(line, "\n"), ";")
	if !ok {
		return 0, "", false
	}
	f := strings.Split(head, ",")
	if len(f) < 3 {
		return 0, "", false
	}
	us, err := strconv.ParseInt(f[2], 10, 64)
	if err != nil || us < 0 {
		return 0, "", false
	}
	return time.Duration(us) * time.Microsecond, text, true
}

// String is the timeline as status shows it: each phase's own duration in order, then when the
// last one ended.
func (b *bootTimeline) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.marks) == 0 {
		return "not recorded"
	}
	marks := slices.SortedStableFunc(slices.Values(b.marks), func(x, y bootMark) int { return cmp.Compare(x.at, y.at) })
	var parts []string
	var prev time.Duration
	for _, m := range marks {
		parts = append(parts, fmt.Sprintf("%s %.1fs", m.phase, (m.at-prev).Seconds()))
		prev = m.at
	}
	last := marks[len(marks)-1]
	return fmt.Sprintf("%s; %s %.1fs after the kernel started", strings.Join(parts, ", "), last.phase+" done", last.at.Seconds())
}
