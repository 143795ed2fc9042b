package appliance

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/u-root/u-root/pkg/boot/kexec"
	"golang.org/x/sys/unix"

	"github.com/enrollment-appliance/aeappliance/appliance/datadisk"
	"github.com/enrollment-appliance/aeappliance/appliance/harden"
	"github.com/enrollment-appliance/aeappliance/appliance/release"
	"github.com/enrollment-appliance/aeappliance/appliance/svcctl"
	"github.com/enrollment-appliance/aeappliance/config"
	"github.com/enrollment-appliance/aeappliance/firmware/slots"
	"github.com/enrollment-appliance/aeappliance/firmware/update"
)

// kexecSysctl is applied only once the boot has chosen its firmware: it forbids loading
// another kernel for the rest of the boot.
const kexecSysctl = "kernel.kexec_load_disabled"

// firmwareStore is the slots on the data disk.
func (a *Appliance) firmwareStore() slots.Store {
	return slots.Store{Dir: filepath.Join(a.o.DataDir, "firmware")}
}

// chooseFirmware runs once the data disk is mounted: the factory image boots the
// confirmed or pending slot (kexec, not returning when it works); a slot on trial is
// noted for confirmation. It then forbids kexec for the rest of the boot.
func (a *Appliance) chooseFirmware() {
	defer a.disableKexec()
	if a.o.Dev {
		return
	}
	if _, ok := a.diskReady(); !ok {
		return
	}
	st := a.firmwareStore()
	d, err := st.Decide(a.running)
	if err != nil {
		a.con.Printf("Firmware: %v (staying on this image)", err)
		return
	}
	if d.Message != "" {
		a.con.Printf("%s", d.Message)
	}
	a.confirm = d.Commit
	if d.Boot == "" || d.Boot == a.running {
		return
	}
	// The signature again, at every boot: the slot lives on the data disk, which the
	// service (not root) may write when it installs an update.
	keys, err := trustedUpdateKeys()
	if err != nil {
		a.con.Printf("Firmware: %v; staying on this image", err)
		return
	}
	h, err := st.VerifySlot(d.Boot, keys, a.rel.Product)
	if err == nil {
		err = a.securityFloor(st, d.Boot, h)
	}
	if err != nil {
		a.con.Printf("Firmware: %v; staying on this image", err)
		return
	}
	a.con.Printf("Starting %s from slot %s...", h.Version, d.Boot)
	if err := a.kexecSlot(st, d.Boot, d.Trial); err != nil {
		a.con.Printf("Firmware: starting slot %s failed: %v; staying on this image", d.Boot, err)
		if !datadisk.IsMounted(a.o.DataDir) {
			a.remount()
		}
	}
}

// kexecSlot loads slot name's kernel and initramfs and boots into them, after unmounting
// the data disk cleanly. It returns only on failure.
func (a *Appliance) kexecSlot(st slots.Store, name string, trial bool) error {
	dir := st.SlotDir(name)
	cmdline, err := os.ReadFile("/proc/cmdline")
	if err != nil {
		return err
	}
	kernel, err := os.Open(filepath.Join(dir, slots.Kernel))
	if err != nil {
		return err
	}
	initrd, err := os.Open(filepath.Join(dir, slots.Initramfs))
	if err != nil {
		kernel.Close()
		return err
	}
	err = kexec.FileLoad(kernel, initrd, slots.Cmdline(strings.TrimSpace(string(cmdline)), name))
	kernel.Close() // the kernel holds its own copy; the data disk must not stay busy
	initrd.Close()
	if err != nil {
		return fmt.Errorf("kexec_file_load: %w", err)
	}
	a.closeLogs()
	if err := datadisk.Unmount(a.o.DataDir, 5*time.Second); err != nil {
		// Read-only is as safe to leave as unmounted; anything else is not.
		if !strings.Contains(err.Error(), "remounted read-only") {
			return err
		}
		a.log.Warn("kexec with the data disk read-only", "err", err)
	}
	unix.Sync()
	if trial {
		a.armWatchdog()
	}
	if err := a.con.Drain(); err != nil {
		a.log.Error("draining the console", "err", err)
	}
	return kexec.Reboot()
}

// remount mounts the data disk again after a failed kexec.
func (a *Appliance) remount() {
	disk, _ := a.diskReady()
	if err := datadisk.Mount(disk.FSDev(), a.o.DataDir); err != nil {
		a.mu.Lock()
		a.disk.Mounted, a.disk.Problem = false, err.Error()
		a.mu.Unlock()
		return
	}
	if err := a.afterMount(); err != nil {
		a.con.Printf("Data disk: %v", err)
	}
}

func (a *Appliance) disableKexec() {
	if a.o.Dev {
		return
	}
	for _, s := range harden.Sysctls {
		if s.Key == kexecSysctl {
			if _, errs := harden.Apply("/proc/sys", []harden.Setting{s}); len(errs) > 0 {
				a.log.Error("sysctl hardening", "err", errors.Join(errs...))
			}
		}
	}
}

// confirmFirmware confirms a slot on trial once the appliance is up: the console works
// and, when provisioned, the service answers.
func (a *Appliance) confirmFirmware(ctx context.Context) {
	if !a.confirm {
		return
	}
	if a.provisioned() {
		if _, err := svcctl.WaitHealthy(ctx, a.varDir(), 5*time.Minute); err != nil {
			a.con.Printf("Firmware: the service did not come up on this update (%v); it is not confirmed, "+
				"the next boot returns to the previous firmware", err)
			return
		}
	}
	msg, err := a.firmwareStore().Confirm(a.running)
	if err != nil {
		a.con.Printf("Firmware: confirming: %v", err)
		return
	}
	if msg != "" {
		a.con.Printf("Firmware: %s.", msg)
	}
}

func (a *Appliance) cmdUpdateStatus(ctx context.Context, _ []string, w io.Writer) error {
	if err := a.needDisk(); err != nil {
		return err
	}
	st := a.firmwareStore()
	s, err := st.Load()
	if err != nil {
		return err
	}
	running := "the factory image"
	if a.running != "" {
		running = "slot " + a.running
	}
	fmt.Fprintf(w, "%-12s%s from %s\n", "Running:", a.rel.Version, running)
	for _, n := range slots.Names {
		info, err := st.Slot(n)
		line := "empty"
		switch {
		case err != nil:
			line = err.Error()
		case info.Header != nil:
			line = info.Header.String()
		}
		var tags []string
		if s.Active == n {
			tags = append(tags, "active")
		}
		if s.Pending == n {
			tags = append(tags, "pending: tried at the next boot")
		}
		if len(tags) > 0 {
			line += " [" + strings.Join(tags, ", ") + "]"
		}
		fmt.Fprintf(w, "%-12s%s\n", "Slot "+n+":", line)
	}
	if s.Last != "" {
		fmt.Fprintf(w, "%-12s%s (%s)\n", "Last:", s.Last, s.At.Format(time.RFC3339))
	}
	fmt.Fprintf(w, "%-12s%d (no update below it installs or boots unless forced)\n", "Security:", a.rel.SecurityVersion)
	if keys, err := trustedUpdateKeys(); err == nil {
		if h, err := st.Held(keys, a.rel.Product); err != nil {
			fmt.Fprintf(w, "%-12s%v\n", "Held:", err)
		} else if h != nil {
			fmt.Fprintf(w, "%-12s%s, security version %d: refused as a downgrade; update force installs it\n", "Held:", h, h.SecurityVersion)
		}
	}
	fmt.Fprintln(w, "Updates are uploaded over the API (aectl firmware upload FILE.aeu), then reboot.")
	return nil
}

func (a *Appliance) cmdUpdateRollback(ctx context.Context, _ []string, w io.Writer) error {
	if err := a.needDisk(); err != nil {
		return err
	}
	msg, err := a.firmwareStore().Rollback()
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "%s: the next boot runs it (reboot).\n", msg)
	return nil
}

// trustedUpdateKeys are the update-signing public keys the image trusts.
func trustedUpdateKeys() ([]ed25519.PublicKey, error) {
	b, err := os.ReadFile(release.UpdateKeysPath)
	if err != nil {
		return nil, fmt.Errorf("the image's trusted update keys: %w", err)
	}
	return update.ParsePublicKeys(b)
}

func (a *Appliance) cmdUpdateForce(ctx context.Context, _ []string, w io.Writer) error {
	if err := a.needDisk(); err != nil {
		return err
	}
	keys, err := trustedUpdateKeys()
	if err != nil {
		return err
	}
	st := a.firmwareStore()
	h, slot, err := st.InstallHeld(keys, a.rel.Product, a.running)
	if err != nil {
		return err
	}
	hb, err := os.ReadFile(filepath.Join(st.SlotDir(slot), update.HeaderName))
	if err != nil {
		return err
	}
	sum := sha256.Sum256(hb)
	rec, _ := json.Marshal(forcedFirmware{HeaderSHA256: hex.EncodeToString(sum[:]), Version: h.Version, SecurityVersion: h.SecurityVersion})
	if err := config.WriteFileAtomic(filepath.Join(a.settingsDir(), forcedFile), rec, 0o600); err != nil {
		return fmt.Errorf("recording the forced update: %w", err)
	}
	a.log.Warn("firmware below the security version forced at the console", "version", h.Version,
		"security_version", h.SecurityVersion, "image_security_version", a.rel.SecurityVersion, "slot", slot)
	fmt.Fprintf(w, "Installed %s (security version %d; this image's is %d) in slot %s: the next boot tries it (reboot).\n",
		h.Version, h.SecurityVersion, a.rel.SecurityVersion, slot)
	return nil
}

// forcedFile, in the settings directory (root's, not the service's), names the one slot
// header an administrator forced below the factory image's security version.
const forcedFile = "firmware-forced.json"

type forcedFirmware struct {
	HeaderSHA256    string `json:"header_sha256"`
	Version         string `json:"version"`
	SecurityVersion int    `json:"security_version"`
}

// securityFloor refuses to boot slot (header h) when its security version is below this
// image's, unless an administrator forced exactly that signed header at the console.
func (a *Appliance) securityFloor(st slots.Store, slot string, h update.Header) error {
	if h.SecurityVersion >= a.rel.SecurityVersion {
		return nil
	}
	hb, err := os.ReadFile(filepath.Join(st.SlotDir(slot), update.HeaderName))
	if err != nil {
		return err
	}
	sum := sha256.Sum256(hb)
	var rec forcedFirmware
	if b, err := os.ReadFile(filepath.Join(a.settingsDir(), forcedFile)); err == nil && json.Unmarshal(b, &rec) == nil &&
		rec.HeaderSHA256 == hex.EncodeToString(sum[:]) {
		return nil
	}
	return fmt.Errorf("slot %s holds %s with security version %d, below this image's %d, and no administrator forced it",
		slot, h.Version, h.SecurityVersion, a.rel.SecurityVersion)
}
