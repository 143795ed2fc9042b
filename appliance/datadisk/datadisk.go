// Package datadisk prepares the appliance's data disk, where all of its state lives (the
// image itself keeps nothing across boots): it finds the disk, formats it only when it is
// blank, checks and mounts it, reports its usage and unmounts it cleanly.
//
// On a machine with a TPM 2.0 a blank disk becomes a LUKS2 volume (luks.go) whose key the
// TPM seals to the firmware that booted (sealed.go, with appliance/tpmseal), with a
// recovery passphrase for another machine or changed firmware; the file system lives
// inside. Without a TPM a blank disk gets a plain file system, which status reports.
//
// "Blank" is strict on purpose: only a disk whose first MiB is all zeros is formatted. A
// disk holding anything else that is not ext4 or a LUKS2 volume (a partition table,
// another file system) is refused with a message, never overwritten.
package datadisk

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Kind is what a disk holds.
type Kind int

const (
	Blank     Kind = iota // the first MiB is all zeros: safe to format
	Ext                   // an ext2/3/4 file system
	Unknown               // something else: never touched
	Encrypted             // a LUKS2 volume (the sealed data disk)
)

func (k Kind) String() string {
	switch k {
	case Blank:
		return "blank"
	case Ext:
		return "ext4"
	case Encrypted:
		return "LUKS2"
	}
	return "unknown content"
}

// blankSize is how much of a disk must be zeros for it to count as blank.
const blankSize = 1 << 20

// ErrNoDisk is returned by Find when none of the candidate devices appears.
var ErrNoDisk = errors.New("no data disk")

// DefaultDevices are the devices tried in order, the first whole disk of each kind of
// controller the image has drivers for (firmware.DefaultModules): virtio-blk (/dev/vda);
// SCSI disks (/dev/sda), which covers SATA through ahci, SAS HBAs and RAID controllers
// (mpt3sas, megaraid_sas, hpsa, smartpqi: a RAID volume appears as one disk) and
// virtio-scsi or VMware's pvscsi; then NVMe (/dev/nvme0n1). On a server with both SCSI
// and NVMe disks the first SCSI disk wins; a disk that is not blank and not ext4 (a boot
// stick, another system) is never formatted, so a wrong pick is refused, not erased.
var DefaultDevices = []string{"/dev/vda", "/dev/sda", "/dev/nvme0n1"}

// Find returns the first of devices that exists, polling for up to wait while the kernel
// probes its drivers.
func Find(ctx context.Context, devices []string, wait time.Duration) (string, error) {
	deadline := time.Now().Add(wait)
	for {
		for _, d := range devices {
			if _, err := os.Stat(d); err == nil {
				return d, nil
			}
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("%w: none of %s appeared within %s", ErrNoDisk, strings.Join(devices, ", "), wait)
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Probe reads the start of dev (a block device or an image file) and says what it holds.
func Probe(dev string) (Kind, error) {
	f, err := os.Open(dev)
	if err != nil {
		return Unknown, fmt.Errorf("datadisk: %w", err)
	}
	defer f.Close()
	buf := make([]byte, blankSize)
	n, err := io.ReadFull(f, buf)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) {
		return Unknown, fmt.Errorf("datadisk: reading %s: %w", dev, err)
	}
	buf = buf[:n]
	if len(buf) >= 8 && bytes.Equal(buf[:8], []byte("LUKS\xba\xbe\x00\x02")) {
		return Encrypted, nil
	}
	// ext2/3/4: the superblock starts at 1024, its magic 0xEF53 at offset 56 in it.
	if len(buf) >= 1024+58 && binary.LittleEndian.Uint16(buf[1024+56:]) == 0xEF53 {
		return Ext, nil
	}
	if len(buf) < 64<<10 {
		return Unknown, fmt.Errorf("datadisk: %s is too small (%d bytes)", dev, n)
	}
	if bytes.Count(buf, []byte{0}) == len(buf) {
		return Blank, nil
	}
	return Unknown, nil
}

// Label is the file system label the appliance gives its data disk.
const Label = "aedata"

// Format makes an ext4 file system on dev with the image's mke2fs. Callers check with
// Probe that dev is Blank first.
func Format(ctx context.Context, dev string) error {
	out, err := exec.CommandContext(ctx, "mke2fs", "-t", "ext4", "-q", "-F", "-L", Label, dev).CombinedOutput()
	if err != nil {
		return fmt.Errorf("datadisk: mke2fs %s: %w: %s", dev, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// Check runs e2fsck -p on the unmounted dev: it replays the journal and repairs what is
// safe to repair unattended. It returns e2fsck's output when it changed something, and
// an error when the file system needs a person (exit status 4 and up).
func Check(ctx context.Context, dev string) (string, error) {
	out, err := exec.CommandContext(ctx, "e2fsck", "-p", dev).CombinedOutput()
	msg := strings.TrimSpace(string(out))
	var ee *exec.ExitError
	if errors.As(err, &ee) && ee.ExitCode() < 4 {
		return msg, nil // 1: errors corrected, 2: corrected, reboot advised (not for a data disk)
	}
	if err != nil {
		return msg, fmt.Errorf("datadisk: e2fsck %s: %w: %s", dev, err, msg)
	}
	return "", nil
}

// MountFlags: nothing on the data disk is ever executed or a device.
const MountFlags = unix.MS_NOATIME | unix.MS_NODEV | unix.MS_NOSUID | unix.MS_NOEXEC

// Mount mounts dev (ext4) at dir, creating dir.
func Mount(dev, dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("datadisk: %w", err)
	}
	if err := unix.Mount(dev, dir, "ext4", MountFlags, ""); err != nil {
		return fmt.Errorf("datadisk: mount %s on %s: %w", dev, dir, err)
	}
	return nil
}

// Unmount syncs and unmounts dir, retrying while it is busy for up to wait; if it stays
// busy it is remounted read-only, which also leaves the file system clean.
func Unmount(dir string, wait time.Duration) error {
	unix.Sync()
	deadline := time.Now().Add(wait)
	for {
		err := unix.Unmount(dir, 0)
		if err == nil {
			return nil
		}
		if !errors.Is(err, unix.EBUSY) || time.Now().After(deadline) {
			if rerr := unix.Mount("", dir, "", unix.MS_REMOUNT|unix.MS_RDONLY|MountFlags, ""); rerr == nil {
				return fmt.Errorf("datadisk: unmount %s: %w (remounted read-only instead)", dir, err)
			}
			return fmt.Errorf("datadisk: unmount %s: %w", dir, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Usage is how full a mounted file system is.
type Usage struct {
	Total, Used, Avail uint64 // bytes
}

// UsageOf reports the usage of the file system mounted at dir.
func UsageOf(dir string) (Usage, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return Usage{}, fmt.Errorf("datadisk: statfs %s: %w", dir, err)
	}
	bs := uint64(st.Bsize)
	return Usage{Total: st.Blocks * bs, Used: (st.Blocks - st.Bfree) * bs, Avail: st.Bavail * bs}, nil
}

// String is "1.2 MiB used of 243.0 MiB (1%)".
func (u Usage) String() string {
	pct := 0.0
	if u.Total > 0 {
		pct = 100 * float64(u.Used) / float64(u.Total)
	}
	return fmt.Sprintf("%s used of %s (%.0f%%)", HumanBytes(u.Used), HumanBytes(u.Total), pct)
}

// HumanBytes formats n in binary units with one decimal.
func HumanBytes(n uint64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := uint64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// IsMounted reports whether dir is a mount point (per /proc/self/mountinfo).
func IsMounted(dir string) bool {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) > 4 && f[4] == dir {
			return true
		}
	}
	return false
}

// State is what Prepare found: the device, its kind, whether it is mounted, and why it
// cannot be used ("" when it can).
type State struct {
	Dev     string
	Kind    Kind
	Mounted bool
	Problem string
	// Mapped is the opened LUKS2 volume (/dev/mapper/MapperName) when Dev is encrypted.
	Mapped string
	// Locked: Dev is encrypted and its key could not be unsealed (another machine's TPM,
	// other firmware, no TPM): it opens with the recovery passphrase (Reseal).
	Locked bool
	// Key is the disk key of an encrypted Dev, for the caller to set the recovery
	// passphrase with (SetRecovery) and then forget. Never logged.
	Key []byte
	// Sealing says how the key of an encrypted Dev is kept (Sealer.Describe); "" when
	// there is no TPM and an admin types its passphrase.
	Sealing string
	// NeedsPassphrase: Dev is blank and there is no TPM to seal a key to; it is left
	// blank until an admin sets a passphrase to encrypt it with (FormatWithPassphrase).
	NeedsPassphrase bool
}

// FSDev is the device that holds the file system: the opened volume of an encrypted disk.
func (s State) FSDev() string {
	if s.Mapped != "" {
		return s.Mapped
	}
	return s.Dev
}

// Prepare finds the data disk among devices, checks it, makes a file system on it only
// when it is blank, and mounts it on dir. It refuses a disk holding anything else (a
// partition table, another file system) and one with errors e2fsck -p cannot repair,
// saying why in State.Problem. say shows progress on the console.
//
// With a sealer (the machine has a TPM), a blank disk becomes a LUKS2 volume whose key the
// sealer keeps, and an encrypted disk is opened with the key the sealer gives back; when it
// cannot, the disk is Locked and left closed. Without one, nothing is written: a blank disk
// NeedsPassphrase (FormatWithPassphrase) and an encrypted disk is Locked (OpenWithPassphrase).
func Prepare(ctx context.Context, devices []string, dir string, seal Sealer, say func(string), log *slog.Logger) State {
	var st State
	dev, err := Find(ctx, devices, 5*time.Second)
	if err != nil {
		st.Problem = fmt.Sprintf("none found (looked for %s). The appliance keeps all of its "+
			"state on a data disk: attach one and reboot.", strings.Join(devices, ", "))
		return st
	}
	st.Dev = dev
	if st.Kind, err = Probe(dev); err != nil {
		st.Problem = err.Error()
		return st
	}
	if seal != nil {
		st.Sealing = seal.Describe()
	}
	switch st.Kind {
	case Unknown:
		st.Problem = fmt.Sprintf("%s holds data that is not an ext4 file system (a partition table or "+
			"another file system). It was left untouched. Attach a blank disk, or one this appliance "+
			"formatted, and reboot.", dev)
		return st
	case Blank:
		t := time.Now()
		if seal != nil {
			say(fmt.Sprintf("Data disk %s is blank: encrypting it (LUKS2, its key sealed to the TPM) and "+
				"making an ext4 file system (first boot)...", dev))
			key, err := formatSealed(ctx, dev, seal)
			if err != nil {
				st.Problem = "encrypting the blank data disk: " + err.Error()
				return st
			}
			st.Kind, st.Key = Encrypted, key
			if st.Mapped, err = LUKSOpen(ctx, dev, MapperName, key); err != nil {
				st.Problem = "opening the new encrypted data disk: " + err.Error()
				return st
			}
		} else {
			st.NeedsPassphrase = true
			st.Problem = fmt.Sprintf("%s is blank and this machine has no TPM 2.0 to seal the disk's key to. "+
				"Encrypt it with a passphrase, which the console then asks for at every boot: disk encrypt.", dev)
			return st
		}
		if err := Format(ctx, st.FSDev()); err != nil {
			st.Problem = err.Error()
			return st
		}
		log.Info("formatted the data disk", "dev", dev, "encrypted", st.Mapped != "", "elapsed", time.Since(t))
	case Encrypted:
		if seal == nil {
			st.Locked = true
			st.Problem = fmt.Sprintf("%s is encrypted and this machine has no TPM 2.0 to unseal its key. "+
				"Unlock it with its passphrase: disk unlock.", dev)
			return st
		}
		key, err := unsealKey(ctx, dev, seal)
		if err != nil {
			st.Locked = true
			st.Problem = fmt.Sprintf("%s is encrypted and its key cannot be unsealed here (%v). If the disk "+
				"was moved from another appliance, or the board or its firmware changed, unlock it with "+
				"its recovery passphrase: disk unlock.", dev, err)
			return st
		}
		st.Key = key
		if st.Mapped, err = LUKSOpen(ctx, dev, MapperName, key); err != nil {
			st.Problem = "opening the encrypted data disk: " + err.Error()
			return st
		}
		if !checkFS(ctx, &st, log) {
			return st
		}
	case Ext:
		if !checkFS(ctx, &st, log) {
			return st
		}
	}
	if err := Mount(st.FSDev(), dir); err != nil {
		st.Problem = err.Error()
		return st
	}
	st.Mounted = true
	return st
}

// checkFS runs e2fsck -p on the state's file system and reports whether it may be mounted.
func checkFS(ctx context.Context, st *State, log *slog.Logger) bool {
	tc := time.Now()
	out, err := Check(ctx, st.FSDev())
	log.Info("e2fsck -p", "dev", st.FSDev(), "elapsed", time.Since(tc))
	if err != nil {
		st.Problem = fmt.Sprintf("the file system on %s has errors e2fsck cannot repair unattended; "+
			"it was not mounted. %s", st.Dev, lastLine(err.Error()))
		return false
	}
	if out != "" {
		log.Warn("e2fsck repaired the data disk", "output", out)
	}
	return true
}

// lastLine is the last non-empty line of s.
func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.TrimSpace(lines[len(lines)-1])
}
