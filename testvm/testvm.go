// Package testvm boots the appliance image in QEMU for tests: it builds (or reuses) the
// image, makes data disks, picks free host ports for the forwarded guest ports (bound to
// 127.0.0.1 only), drives the serial console (send a line, wait for text with a
// timeout, keep the transcript) and tears the machine down.
//
// QEMU runs with TCG (-accel tcg): there is no KVM here. Nothing in the product imports
// this package.
package testvm

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/enrollment-appliance/aeappliance/firmware"
	"github.com/enrollment-appliance/aeappliance/internal/freeport"
	"github.com/enrollment-appliance/aeappliance/testvm/swtpm"
)

// QEMU is the emulator binary.
const QEMU = "qemu-system-x86_64"

// Image is a built appliance image.
type Image struct {
	Kernel, Initrd string
	Manifest       firmware.Manifest
	BuildTime      time.Duration
}

// RepoRoot finds the repository root (the directory with go.mod) from dir upwards.
func RepoRoot(dir string) (string, error) {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("testvm: no go.mod above the working directory")
		}
		dir = parent
	}
}

// BuildImage builds the image from the sources in root into root/build/appliance, as
// `make image` does (an unchanged image costs seconds: the build is reproducible and the
// compressed archive is kept when the archive is identical). With $AE_IMAGE_DIR set it
// uses the image already in that directory instead.
func BuildImage(ctx context.Context, root string, log *slog.Logger) (Image, error) {
	return BuildImageWith(ctx, root, log, ImageOptions{})
}

// ImageOptions choose the variant of the image BuildImageWith builds.
type ImageOptions struct {
	// Debug builds the debug image (a shell at release.ShellPath, version suffixed
	// -debug) into root/build/appliance-debug, as `make image DEBUG=1
	// IMAGE_DIR=build/appliance-debug` does; $AE_DEBUG_IMAGE_DIR names a prebuilt one.
	Debug bool
	// VersionSuffix builds a second release image into root/build/appliance<suffix> with
	// the version suffixed (an update to install over the first).
	VersionSuffix string
}

// ImageZstdLevel is the zstd level of the images the VM tests build: 3, 0.7 s of CPU for the
// initramfs where the release level (19) takes 36 s and 12 took 5 s, for an archive 4.5 MB
// larger than at 19. The kernel unpacks it as fast (zstd's decompression speed hardly
// depends on the level), and a make test builds two images.
const ImageZstdLevel = 3

// BuildImageWith is BuildImage for the variant o.
func BuildImageWith(ctx context.Context, root string, log *slog.Logger, o ImageOptions) (Image, error) {
	env, outName := "AE_IMAGE_DIR", "appliance"
	if o.Debug {
		env, outName = "AE_DEBUG_IMAGE_DIR", "appliance-debug"
	}
	if o.VersionSuffix != "" {
		env, outName = "", "appliance"+o.VersionSuffix
	}
	if dir := os.Getenv(env); env != "" && dir != "" {
		m, err := firmware.ReadManifest(dir)
		if err != nil {
			return Image{}, fmt.Errorf("testvm: %s: %w", env, err)
		}
		if m.Debug != o.Debug {
			return Image{}, fmt.Errorf("testvm: %s=%s holds an image with debug=%v, want debug=%v", env, dir, m.Debug, o.Debug)
		}
		return Image{Kernel: filepath.Join(dir, firmware.KernelFile), Initrd: filepath.Join(dir, firmware.InitramfsFile), Manifest: m}, nil
	}
	sde, err := firmware.SourceDateEpoch(ctx, root)
	if err != nil {
		return Image{}, err
	}
	out := filepath.Join(root, "build", outName)
	start := time.Now()
	m, err := firmware.Build(ctx, firmware.Options{Root: root, OutDir: out, CacheDir: filepath.Join(root, "build", "cache"),
		Version: firmware.GitVersion(ctx, root) + o.VersionSuffix, SourceDateEpoch: sde, ZstdLevel: ImageZstdLevel, Debug: o.Debug, Log: log})
	if err != nil {
		return Image{}, err
	}
	return Image{Kernel: filepath.Join(out, firmware.KernelFile), Initrd: filepath.Join(out, firmware.InitramfsFile),
		Manifest: m, BuildTime: time.Since(start)}, nil
}

// NewDisk creates a blank (all zeros, sparse) disk image of size bytes at path.
func NewDisk(path string, size int64) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
	if err != nil {
		return fmt.Errorf("testvm: %w", err)
	}
	if err := f.Truncate(size); err != nil {
		f.Close()
		return fmt.Errorf("testvm: %w", err)
	}
	return f.Close()
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago, outside the kernel's
// ephemeral range (freeport), so that no other test's listener on port 0 takes it before QEMU
// forwards it.
func FreePort() (int, error) { return freeport.Port() }

// Options describe a machine.
type Options struct {
	Image    Image
	DataDisk string // raw disk image attached as the virtio data disk ("" for none)
	Forward  []int  // guest TCP ports to forward from free host ports on 127.0.0.1
	Serial   string // SMBIOS serial number
	MemoryMB int    // default 1024
	CPUs     int    // default 1
	Append   string // extra kernel command line
	NoReboot bool   // QEMU exits instead of rebooting
	// The machine's TPM 2.0 (Debian's swtpm): its state lives in TPMState, by default
	// TPMStateDir(DataDisk), kept across boots of the same disk. FreshTPM empties it first
	// (another machine's TPM, or a cleared one); NoTPM gives the machine none. A machine
	// without a data disk and without TPMState has no TPM.
	TPMState string
	FreshTPM bool
	NoTPM    bool
	// Log receives the console output as it arrives (e.g. a file for the test's
	// artifacts); nil discards it. The transcript is kept either way.
	Log io.Writer
}

// Args returns QEMU's command line for o, with the host ports chosen for o.Forward, and
// the serial console on standard input and output.
func Args(o Options, hostPorts map[int]int) []string {
	mem, cpus := o.MemoryMB, o.CPUs
	if mem == 0 {
		mem = 1024
	}
	if cpus == 0 {
		cpus = 1
	}
	cmdline := "console=ttyS0 quiet panic=-1"
	if o.Append != "" {
		cmdline += " " + o.Append
	}
	netdev := "user,id=n0"
	for _, g := range o.Forward {
		netdev += fmt.Sprintf(",hostfwd=tcp:127.0.0.1:%d-:%d", hostPorts[g], g)
	}
	args := []string{"-accel", "tcg", "-m", strconv.Itoa(mem), "-smp", strconv.Itoa(cpus),
		"-nodefaults", "-no-user-config", "-display", "none",
		"-kernel", o.Image.Kernel, "-initrd", o.Image.Initrd, "-append", cmdline,
		"-netdev", netdev, "-device", "virtio-net-pci,netdev=n0", "-device", "virtio-rng-pci",
		// A hardware watchdog that resets the machine when it expires (appliance: trial boots).
		"-device", "i6300esb", "-action", "watchdog=reset"}
	if o.DataDisk != "" {
		args = append(args, "-drive", "file="+o.DataDisk+",if=virtio,format=raw,cache=writeback")
	}
	if o.Serial != "" {
		args = append(args, "-smbios", "type=1,serial="+o.Serial)
	}
	if o.NoReboot {
		args = append(args, "-no-reboot")
	}
	return args
}

// TPMStateDir is the swtpm state directory of the machine of data disk image disk: beside
// it, so the disk and its TPM go together.
func TPMStateDir(disk string) string { return disk + ".tpm" }

// TPMArgs are QEMU's options for a TPM 2.0 on the TIS interface (tpm-tis, as on PC
// motherboards) served by swtpm through its control socket (swtpm.TPM.Ctrl).
func TPMArgs(ctrlSocket string) []string {
	return []string{"-chardev", "socket,id=chrtpm,path=" + ctrlSocket,
		"-tpmdev", "emulator,id=tpm0,chardev=chrtpm", "-device", "tpm-tis,tpmdev=tpm0"}
}

// tpmState is the swtpm state directory of o, or "" for no TPM.
func (o Options) tpmState() string {
	switch {
	case o.NoTPM:
		return ""
	case o.TPMState != "":
		return o.TPMState
	case o.DataDisk != "":
		return TPMStateDir(o.DataDisk)
	}
	return ""
}

// VM is a running machine.
type VM struct {
	cmd       *exec.Cmd
	stdin     io.WriteCloser
	hostPorts map[int]int
	started   time.Time

	mu     sync.Mutex
	buf    strings.Builder // the console output, with carriage returns removed
	mark   int             // where the next WaitFor starts looking
	change chan struct{}   // closed and replaced whenever output arrives or QEMU exits
	exited bool
	err    error // QEMU's exit
	done   chan struct{}
}

// Start boots a machine. Stop it with Kill (or let it power itself off and Wait).
func Start(ctx context.Context, o Options) (*VM, error) {
	if _, err := exec.LookPath(QEMU); err != nil {
		return nil, fmt.Errorf("testvm: %w (install qemu-system-x86)", err)
	}
	ports := map[int]int{}
	for _, g := range o.Forward {
		p, err := FreePort()
		if err != nil {
			return nil, err
		}
		ports[g] = p
	}
	args := append([]string{"-serial", "stdio", "-monitor", "none"}, Args(o, ports)...)
	var tpm *swtpm.TPM
	if state := o.tpmState(); state != "" {
		var err error
		if tpm, err = swtpm.Start(state, swtpm.Options{Fresh: o.FreshTPM}); err != nil {
			return nil, fmt.Errorf("testvm: the machine's TPM: %w", err)
		}
		args = append(args, TPMArgs(tpm.Ctrl)...)
	}
	cmd := exec.CommandContext(ctx, QEMU, args...)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		stopTPM(tpm)
		return nil, err
	}
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	vm := &VM{cmd: cmd, stdin: stdin, hostPorts: ports, change: make(chan struct{}), done: make(chan struct{})}
	if err := cmd.Start(); err != nil {
		stopTPM(tpm)
		return nil, fmt.Errorf("testvm: starting QEMU: %w", err)
	}
	vm.started = time.Now()
	read := make(chan struct{})
	go func() {
		defer close(read)
		vm.read(pr, o.Log)
	}()
	go func() {
		err := cmd.Wait()
		stopTPM(tpm)
		pw.Close()
		// QEMU's last output is in the transcript before anyone sees it exited: a
		// WaitFor must not give up on text that arrived in the final chunk.
		<-read
		vm.mu.Lock()
		vm.exited, vm.err = true, err
		vm.notify()
		vm.mu.Unlock()
		close(vm.done)
	}()
	return vm, nil
}

// stopTPM stops tpm unless it is nil.
func stopTPM(tpm *swtpm.TPM) {
	if tpm != nil {
		tpm.Stop()
	}
}

func (vm *VM) read(r io.Reader, log io.Writer) {
	b := make([]byte, 4096)
	for {
		n, err := r.Read(b)
		if n > 0 {
			chunk := strings.ReplaceAll(string(b[:n]), "\r", "")
			if log != nil {
				io.WriteString(log, chunk)
			}
			vm.mu.Lock()
			vm.buf.WriteString(chunk)
			vm.notify()
			vm.mu.Unlock()
		}
		if err != nil {
			return
		}
	}
}

// notify wakes WaitFor callers; vm.mu is held.
func (vm *VM) notify() {
	close(vm.change)
	vm.change = make(chan struct{})
}

// HostPort is the host port on 127.0.0.1 forwarded to the guest's port.
func (vm *VM) HostPort(guest int) int { return vm.hostPorts[guest] }

// Started is when QEMU was started.
func (vm *VM) Started() time.Time { return vm.started }

// SendLine types line and Enter on the serial console.
func (vm *VM) SendLine(line string) error {
	if _, err := io.WriteString(vm.stdin, line+"\r"); err != nil {
		return fmt.Errorf("testvm: sending %q: %w", line, err)
	}
	return nil
}

// WaitFor waits up to timeout for text to appear in the console output after the end of
// the previous match, and returns the output from there up to and including text.
func (vm *VM) WaitFor(text string, timeout time.Duration) (string, error) {
	deadline := time.After(timeout)
	for {
		vm.mu.Lock()
		all := vm.buf.String()
		if i := strings.Index(all[vm.mark:], text); i >= 0 {
			out := all[vm.mark : vm.mark+i+len(text)]
			vm.mark += i + len(text)
			vm.mu.Unlock()
			return out, nil
		}
		change, exited, err := vm.change, vm.exited, vm.err
		vm.mu.Unlock()
		if exited {
			return "", fmt.Errorf("testvm: waiting for %q: QEMU exited (%v)", text, err)
		}
		select {
		case <-change:
		case <-deadline:
			return "", fmt.Errorf("testvm: %q did not appear within %s", text, timeout)
		}
	}
}

// Transcript is everything the console printed so far.
func (vm *VM) Transcript() string {
	vm.mu.Lock()
	defer vm.mu.Unlock()
	return vm.buf.String()
}

// Wait waits up to timeout for QEMU to exit (after a poweroff) and returns its error.
func (vm *VM) Wait(timeout time.Duration) error {
	select {
	case <-vm.done:
		vm.mu.Lock()
		defer vm.mu.Unlock()
		return vm.err
	case <-time.After(timeout):
		return fmt.Errorf("testvm: QEMU still running after %s", timeout)
	}
}

// Kill stops QEMU at once (no clean shutdown) and waits for it; it does nothing when
// QEMU has already exited.
func (vm *VM) Kill() {
	select {
	case <-vm.done:
		return
	default:
	}
	_ = vm.cmd.Process.Kill()
	<-vm.done
}
