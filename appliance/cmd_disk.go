package appliance

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/enrollment-appliance/aeappliance/appliance/datadisk"
	"github.com/enrollment-appliance/aeappliance/appliance/tpmseal"
	"github.com/enrollment-appliance/aeappliance/provisioning"
)

// The sealed data disk at the console: its status line, the recovery passphrase (shown
// once when provisioning finishes, or anew with `disk recovery`), and `disk unlock`, which
// opens a disk whose key the TPM does not give back (moved from another appliance, or the
// board or its firmware changed) with the recovery passphrase and seals it to this TPM.

// openTPM opens the appliance's TPM.
func (a *Appliance) openTPM() (*tpmseal.TPM, error) { return tpmseal.Open(a.o.TPMDevice) }

// diskSealer is the sealer of the data disk's key, or nil when the machine has no usable
// TPM 2.0.
func (a *Appliance) diskSealer() datadisk.Sealer {
	t, err := a.openTPM()
	if err != nil {
		a.log.Info("no TPM for the data disk", "err", err)
		return nil
	}
	t.Close()
	return tpmseal.DiskSealer{Open: a.openTPM}
}

// capTPM extends the cap PCR once the disk is open and this image stays: nothing later in
// this boot can unseal the disk key again.
func (a *Appliance) capTPM() {
	disk, ok := a.diskReady()
	if a.o.Dev || !ok || disk.Kind != datadisk.Encrypted {
		return
	}
	if err := tpmseal.Cap(a.openTPM); err != nil {
		a.log.Error("capping the TPM's PCR after opening the data disk", "err", err)
		a.con.Printf("TPM: extending PCR %d after opening the data disk failed: %v", tpmseal.CapPCR, err)
	}
}

// encryptionLine is status's Encryption row.
func (a *Appliance) encryptionLine(ctx context.Context) string {
	disk, ok := a.diskReady()
	switch {
	case a.o.Dev:
		return "none (development mode)"
	case disk.Locked && disk.Sealing == "":
		return "locked: disk unlock with the disk's passphrase (no TPM)"
	case disk.Locked:
		return "locked: its key is not unsealed here; disk unlock with the recovery passphrase"
	case disk.NeedsPassphrase:
		return "blank disk, no TPM: disk encrypt sets its passphrase"
	case !ok:
		return "-"
	case disk.Kind != datadisk.Encrypted:
		return "NONE: this data disk is not encrypted (a copy of it is a copy of the CA's token)"
	case disk.Sealing == "":
		return "LUKS2 aes-xts-plain64, its passphrase typed at every boot (no TPM)"
	}
	line := "LUKS2 aes-xts-plain64, key sealed to the " + disk.Sealing + ", unsealed at this boot"
	slots, err := datadisk.RecoverySlots(ctx, disk.Dev)
	switch {
	case err != nil:
		line += "; recovery: " + err.Error()
	case len(slots) == 0:
		line += "; NO recovery passphrase yet (provision finish shows one; disk recovery)"
	default:
		line += "; recovery passphrase set"
	}
	return line
}

// newRecovery gives the encrypted data disk a new recovery passphrase and returns the lines
// that show it, once. Nothing is logged but the fact.
func (a *Appliance) newRecovery(ctx context.Context) ([]string, error) {
	a.mu.Lock()
	disk := a.disk
	a.mu.Unlock()
	if disk.Kind != datadisk.Encrypted || !disk.Mounted {
		return nil, errors.New("the data disk is not encrypted")
	}
	if len(disk.Key) == 0 {
		return nil, errors.New("the data disk's key is not at hand (it was opened with the recovery passphrase)")
	}
	pass, err := datadisk.NewRecoveryPassphrase()
	if err != nil {
		return nil, err
	}
	if _, err := datadisk.SetRecovery(ctx, disk.Dev, disk.Key, pass); err != nil {
		return nil, fmt.Errorf("setting the recovery passphrase: %w", err)
	}
	a.log.Warn("data disk: a new recovery passphrase was set and shown on the console")
	return []string{
		"Recovery passphrase of the data disk (shown this once; write it down and keep it",
		"apart from the appliance: it opens the disk on another machine, or after the board",
		"or its firmware changed, with disk unlock):",
		"    " + string(pass),
	}, nil
}

// finishRecovery is the recovery passphrase for provision finish: a new one when the
// encrypted data disk has none yet, else nothing.
func (a *Appliance) finishRecovery(ctx context.Context) ([]string, error) {
	disk, ok := a.diskReady()
	if a.o.Dev || !ok || disk.Kind != datadisk.Encrypted || disk.Sealing == "" {
		return nil, nil // no TPM: the disk's own passphrase is what an admin keeps
	}
	if slots, err := datadisk.RecoverySlots(ctx, disk.Dev); err != nil || len(slots) > 0 {
		return nil, err
	}
	return a.newRecovery(ctx)
}

func (a *Appliance) cmdDiskRecovery(ctx context.Context, _ []string, w io.Writer) error {
	if err := a.needDisk(); err != nil {
		return err
	}
	lines, err := a.newRecovery(ctx)
	if err != nil {
		return err
	}
	fmt.Fprintln(w, strings.Join(lines, "\n"))
	fmt.Fprintln(w, "The previous recovery passphrase no longer opens the disk.")
	return nil
}

// unlockGuard backs off failed recovery passphrases. The locked disk cannot keep the count,
// so it lives in memory (/run) until the next boot; each try also costs Argon2id's work.
func unlockGuard() loginGuard { return loginGuard{dir: "/run/appliance-unlock", now: time.Now} }

func (a *Appliance) cmdDiskUnlock(ctx context.Context, _ []string, w io.Writer) error {
	disk, _ := a.diskReady()
	if !disk.Locked {
		return errors.New("the data disk is not locked (see status)")
	}
	seal := a.diskSealer()
	guard := unlockGuard()
	if err := os.MkdirAll(guard.dir, 0o700); err != nil {
		return err
	}
	if d := guard.wait(); d > 0 {
		return fmt.Errorf("too many wrong passphrases: try again in %s", d)
	}
	if seal == nil {
		return a.unlockWithPassphrase(ctx, disk, guard, w)
	}
	p, err := a.con.Ask("Recovery passphrase: ", true)
	if err != nil {
		return err
	}
	fmt.Fprintln(w, "Checking the recovery passphrase...")
	if _, err := datadisk.Reseal(ctx, disk.Dev, []byte(strings.TrimSpace(p)), seal); err != nil {
		return a.unlockFailed(guard, "recovery passphrase", err)
	}
	_ = guard.succeeded()
	a.log.Warn("disk unlock: the data disk was recovered with its recovery passphrase and its key sealed to this TPM")
	fmt.Fprintln(w, "The disk's key is now sealed to this machine's TPM and firmware; the recovery")
	fmt.Fprintln(w, "passphrase stays the same. Rebooting to open the disk.")
	return a.power(unix.LINUX_REBOOT_CMD_RESTART, "Rebooting")(ctx, nil, w)
}

// unlockFailed counts a wrong passphrase (what) against the back-off and says so; other
// errors are reported as they are. Either way nothing changed.
func (a *Appliance) unlockFailed(guard loginGuard, what string, err error) error {
	if !errors.Is(err, datadisk.ErrWrongKey) {
		return fmt.Errorf("nothing changed: %w", err)
	}
	n, d, _ := guard.failed()
	a.log.Warn("disk unlock: wrong "+what, "failures_in_a_row", n, "next_attempt_in", d.String())
	time.Sleep(min(d, LoginBackoff))
	return fmt.Errorf("wrong %s: nothing changed (%d failures in a row)", what, n)
}

// unlockWithPassphrase opens the disk of a machine without a TPM with its passphrase and
// carries on with the boot (afterUnlock).
func (a *Appliance) unlockWithPassphrase(ctx context.Context, disk datadisk.State, guard loginGuard, w io.Writer) error {
	p, err := a.con.Ask("Disk passphrase: ", true)
	if err != nil {
		return err
	}
	fmt.Fprintln(w, "Checking the passphrase...")
	st, err := datadisk.OpenWithPassphrase(ctx, disk.Dev, a.o.DataDir, []byte(p), a.log)
	if err != nil {
		return a.unlockFailed(guard, "passphrase", err)
	}
	_ = guard.succeeded()
	a.log.Info("disk unlock: the data disk was opened with its passphrase")
	fmt.Fprintln(w, "Opened the data disk.")
	return a.afterUnlock(st, w)
}

func (a *Appliance) cmdDiskEncrypt(ctx context.Context, _ []string, w io.Writer) error {
	disk, _ := a.diskReady()
	if !disk.NeedsPassphrase {
		return errors.New("there is no blank data disk waiting for a passphrase (see status)")
	}
	fmt.Fprintf(w, "This machine has no TPM 2.0: the data disk is encrypted with a passphrase (at least %d\n", datadisk.MinPassphrase)
	fmt.Fprintln(w, "characters) that the console asks for at every boot (disk unlock). Nothing opens the disk")
	fmt.Fprintln(w, "without it: keep it apart from the appliance.")
	p, err := a.askTwice("Disk passphrase")
	if err != nil {
		return err
	}
	if len(p) < datadisk.MinPassphrase {
		return fmt.Errorf("a disk passphrase has at least %d characters: nothing changed", datadisk.MinPassphrase)
	}
	fmt.Fprintln(w, "Encrypting the data disk (LUKS2) and making an ext4 file system...")
	st, err := datadisk.FormatWithPassphrase(ctx, disk.Dev, a.o.DataDir, []byte(p))
	if err != nil {
		return err
	}
	a.log.Warn("data disk encrypted with a passphrase at the console (no TPM)")
	fmt.Fprintln(w, "Encrypted the data disk; it is open.")
	return a.afterUnlock(st, w)
}

// afterUnlock carries on with the boot once a console command opened the data disk:
// the log on it, the saved network settings, then the service when provisioned, else the
// provisioning API.
func (a *Appliance) afterUnlock(st datadisk.State, w io.Writer) error {
	a.mu.Lock()
	a.disk = st
	a.mu.Unlock()
	if err := a.afterMount(); err != nil {
		return err
	}
	a.resume(w)
	return nil
}

// resume starts what runs on the data disk, once it is mounted again: the saved network
// settings, then the service when provisioned, else the provisioning API.
func (a *Appliance) resume(w io.Writer) {
	ctx := a.ctx
	// The boot configured DHCP without the disk's settings: apply them when they say more.
	if n, err := provisioning.LoadNetwork(a.settingsDir()); err == nil &&
		(n.Mode == "static" || len(n.DNS)+len(n.NTP) > 0 || n.Hostname != "") {
		if _, err := a.net.Configure(ctx, n); err != nil {
			fmt.Fprintf(w, "Network settings: %v\n", err)
		}
	}
	fmt.Fprintf(w, "State: %s\n", a.stateLine())
	if a.provisioned() {
		go func() {
			if err := a.startService(ctx); err != nil {
				a.con.Printf("enrollsvc: %v", err)
			}
		}()
		return
	}
	go a.provisioningAPILoop(ctx)
}

func (a *Appliance) cmdDiskMigrate(ctx context.Context, _ []string, w io.Writer) error {
	disk, ok := a.diskReady()
	if !ok || disk.Kind != datadisk.Ext || a.o.Dev {
		return errors.New("the data disk is not a plain ext4 disk in use (see status): nothing to migrate")
	}
	seal := a.diskSealer()
	var pass []byte
	if seal != nil {
		p, err := datadisk.NewRecoveryPassphrase()
		if err != nil {
			return err
		}
		fmt.Fprintln(w, "The data disk's recovery passphrase (shown this once). Write it down now: the")
		fmt.Fprintln(w, "encryption uses it, and if the power fails before it is done, it is the way back")
		fmt.Fprintln(w, "(disk unlock); afterwards it opens the disk on another machine or after a firmware change:")
		fmt.Fprintf(w, "    %s\n", p)
		back, err := a.con.Ask("Type it back to confirm you have it: ", true)
		if err != nil {
			return err
		}
		if strings.TrimSpace(back) != string(p) {
			return errors.New("that is not the recovery passphrase: nothing changed")
		}
		pass = p
	} else {
		fmt.Fprintf(w, "This machine has no TPM 2.0: the disk is encrypted with a passphrase (at least %d\n", datadisk.MinPassphrase)
		fmt.Fprintln(w, "characters) that the console asks for at every boot (disk unlock).")
		p, err := a.askTwice("Disk passphrase")
		if err != nil {
			return err
		}
		if len(p) < datadisk.MinPassphrase {
			return fmt.Errorf("a disk passphrase has at least %d characters: nothing changed", datadisk.MinPassphrase)
		}
		pass = []byte(p)
	}
	fmt.Fprintln(w, "Stopping the service and unmounting the data disk...")
	a.stopProvisioningAPI()
	a.shutdownService()
	a.closeLogs()
	if err := datadisk.Unmount(a.o.DataDir, 10*time.Second); err != nil {
		a.remount()
		a.afterRemount(w)
		return fmt.Errorf("the data disk stays as it was: %w", err)
	}
	a.mu.Lock()
	a.disk.Mounted = false
	a.mu.Unlock()
	a.log.Warn("data disk: encrypting in place", "dev", disk.Dev, "tpm", seal != nil)
	fmt.Fprintln(w, "Encrypting the data disk in place (LUKS2). This takes a while: do not power off.")
	t := time.Now()
	if err := datadisk.EncryptInPlace(ctx, disk.Dev, pass); err != nil {
		if k, _ := datadisk.Probe(disk.Dev); k == datadisk.Ext {
			a.remount()
			a.afterRemount(w)
		}
		return fmt.Errorf("encrypting the data disk: %w", err)
	}
	st := datadisk.State{Dev: disk.Dev, Kind: datadisk.Encrypted}
	key := pass
	if seal != nil {
		k, err := datadisk.Reseal(ctx, disk.Dev, pass, seal)
		if err != nil {
			return fmt.Errorf("the disk is encrypted, but sealing its key to the TPM failed (%w); reboot and disk unlock with the recovery passphrase", err)
		}
		key, st.Key, st.Sealing = k, k, seal.Describe()
	}
	var err error
	if st.Mapped, err = datadisk.LUKSOpen(ctx, disk.Dev, datadisk.MapperName, key); err != nil {
		return fmt.Errorf("the disk is encrypted but did not open: %w; reboot", err)
	}
	if err := datadisk.Mount(st.Mapped, a.o.DataDir); err != nil {
		return fmt.Errorf("the disk is encrypted but did not mount: %w; reboot", err)
	}
	st.Mounted = true
	a.log.Warn("data disk encrypted in place", "elapsed", time.Since(t).Round(time.Second))
	fmt.Fprintf(w, "Encrypted the data disk in %s.\n", time.Since(t).Round(time.Second))
	if err := a.afterUnlock(st, w); err != nil {
		return err
	}
	a.capTPM()
	return nil
}

// afterRemount restarts what the data disk being unmounted stopped, after a failed migration.
func (a *Appliance) afterRemount(w io.Writer) {
	if _, ok := a.diskReady(); !ok {
		fmt.Fprintln(w, "The data disk did not mount again: reboot.")
		return
	}
	a.resume(w)
}
