// Package slots keeps the appliance's two firmware slots on the data disk and decides,
// at every boot, which firmware runs.
//
// The image the machine boots (from its boot medium; in QEMU -kernel/-initrd) is the
// factory image. Updates go into slot a or b on the data disk (Dir/a, Dir/b: vmlinuz,
// initramfs.cpio.zst, manifest.json and the bundle's signed header), never over the
// running one. A freshly installed slot is pending: the next boot tries it once (the
// factory image verifies the slot again and kexecs into it, with aeappliance.slot=X on the
// kernel command line). The slot's own appinit confirms it once it is up; a trial that
// never confirms (the kernel panics, the payload hangs and the watchdog or the operator
// resets) comes back to the factory image, which finds the trial used and rolls back to
// the last confirmed slot, or stays on the factory image. State lives in Dir/state.json,
// written atomically and synced, so that a power cut at any point leaves a bootable
// choice.
package slots

import (
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/enrollment-appliance/aeappliance/firmware/update"
)

// Files in a slot directory.
const (
	Kernel    = "vmlinuz"
	Initramfs = "initramfs.cpio.zst"
	Header    = "bundle.json"
	StateFile = "state.json"
	// CmdlineKey names the slot on the kernel command line of a kexec'd slot.
	CmdlineKey = "aeappliance.slot"
)

// Names of the slots.
var Names = []string{"a", "b"}

// State is state.json.
type State struct {
	Active  string    `json:"active,omitempty"`  // the confirmed slot booted into; "": the factory image
	Pending string    `json:"pending,omitempty"` // installed, not yet confirmed
	Tries   int       `json:"tries,omitempty"`   // boots of Pending started
	Last    string    `json:"last,omitempty"`    // what happened last, for status
	At      time.Time `json:"at,omitzero"`
}

// Store is the slots directory.
type Store struct {
	Dir string // /data/firmware
}

// Load reads the state (empty when there is none).
func (s Store) Load() (State, error) {
	var st State
	b, err := os.ReadFile(filepath.Join(s.Dir, StateFile))
	if errors.Is(err, os.ErrNotExist) {
		return st, nil
	}
	if err != nil {
		return st, fmt.Errorf("slots: %w", err)
	}
	if err := json.Unmarshal(b, &st); err != nil {
		return st, fmt.Errorf("slots: %s is corrupt: %w", filepath.Join(s.Dir, StateFile), err)
	}
	for _, v := range []string{st.Active, st.Pending} {
		if v != "" && v != "a" && v != "b" {
			return st, fmt.Errorf("slots: %s names slot %q", filepath.Join(s.Dir, StateFile), v)
		}
	}
	return st, nil
}

// Save writes the state atomically and durably.
func (s Store) Save(st State) error {
	b, _ := json.MarshalIndent(st, "", "  ")
	return writeDurable(filepath.Join(s.Dir, StateFile), append(b, '\n'))
}

func writeDurable(path string, b []byte) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("slots: %w", err)
	}
	f, err := os.CreateTemp(dir, ".tmp-")
	if err != nil {
		return fmt.Errorf("slots: %w", err)
	}
	defer os.Remove(f.Name())
	if _, err := f.Write(b); err != nil {
		f.Close()
		return fmt.Errorf("slots: writing %s: %w", path, err)
	}
	// Readable by all: appinit (root) and the service (its own user, which owns the slots
	// directory) both read the state, whoever wrote it last.
	if err := f.Chmod(0o644); err != nil {
		f.Close()
		return fmt.Errorf("slots: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("slots: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("slots: %w", err)
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return fmt.Errorf("slots: %w", err)
	}
	return syncDir(dir)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("slots: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("slots: syncing %s: %w", dir, err)
	}
	return nil
}

// SlotDir is the directory of slot name.
func (s Store) SlotDir(name string) string { return filepath.Join(s.Dir, name) }

// Info is what a slot holds.
type Info struct {
	Name   string
	Header *update.Header // nil: empty
}

// Slot reads slot name's header (nil Header when the slot is empty).
func (s Store) Slot(name string) (Info, error) {
	b, err := os.ReadFile(filepath.Join(s.SlotDir(name), Header))
	if errors.Is(err, os.ErrNotExist) {
		return Info{Name: name}, nil
	}
	if err != nil {
		return Info{Name: name}, fmt.Errorf("slots: %w", err)
	}
	var h update.Header
	if err := json.Unmarshal(b, &h); err != nil {
		return Info{Name: name}, fmt.Errorf("slots: slot %s: its header is corrupt: %w", name, err)
	}
	return Info{Name: name, Header: &h}, nil
}

// HeldDir is where a verified bundle whose security version is too low waits for an
// administrator to force it (InstallHeld) or for the next upload to replace it.
const HeldDir = "held"

// DowngradeError is Install's refusal of a bundle whose security version is lower than the
// running image's or the confirmed slot's. The bundle was verified and is held.
type DowngradeError struct {
	Header update.Header
	Floor  int    // the security version it is below
	Of     string // whose that is
}

func (e *DowngradeError) Error() string {
	return fmt.Sprintf("%s has security version %d, lower than %d (%s): it may bring back vulnerabilities "+
		"fixed since. It was verified and is held; to install it anyway, log in at the appliance's console "+
		"and run: update force", e.Header.Version, e.Header.SecurityVersion, e.Floor, e.Of)
}

// Install verifies the bundle read from r (signed by one of keys, for product) into the
// slot that is neither active nor the running one, and makes it pending. Nothing changes
// when verification fails. running is the slot this system runs from ("" for the factory
// image); minSecurity is the running image's security version. A bundle below it, or below
// the confirmed slot's, is not installed: it is held and Install returns a *DowngradeError.
func (s Store) Install(r io.Reader, keys []ed25519.PublicKey, product, running string, minSecurity int) (update.Header, string, error) {
	st, err := s.Load()
	if err != nil {
		return update.Header{}, "", err
	}
	stage, err := os.MkdirTemp(s.Dir, ".install-")
	if err != nil {
		if mkErr := os.MkdirAll(s.Dir, 0o755); mkErr != nil {
			return update.Header{}, "", fmt.Errorf("slots: %w", mkErr)
		}
		if stage, err = os.MkdirTemp(s.Dir, ".install-"); err != nil {
			return update.Header{}, "", fmt.Errorf("slots: %w", err)
		}
	}
	defer os.RemoveAll(stage)
	// Verify keeps the signed header in the slot (VerifySlot).
	h, err := update.Verify(r, keys, product, stage)
	if err != nil {
		return update.Header{}, "", err
	}
	floor, of := minSecurity, "the running firmware's"
	if st.Active != "" {
		if info, err := s.Slot(st.Active); err == nil && info.Header != nil && info.Header.SecurityVersion > floor {
			floor, of = info.Header.SecurityVersion, "the confirmed firmware's, "+info.Header.Version
		}
	}
	if h.SecurityVersion < floor {
		held := filepath.Join(s.Dir, HeldDir)
		if err := os.RemoveAll(held); err != nil {
			return update.Header{}, "", fmt.Errorf("slots: %w", err)
		}
		if err := os.Rename(stage, held); err != nil {
			return update.Header{}, "", fmt.Errorf("slots: %w", err)
		}
		if err := syncDir(s.Dir); err != nil {
			return update.Header{}, "", err
		}
		return update.Header{}, "", &DowngradeError{Header: h, Floor: floor, Of: of}
	}
	target, err := s.place(stage, running, st)
	if err != nil {
		return update.Header{}, "", err
	}
	return h, target, s.pending(target, fmt.Sprintf("installed %s in slot %s, to be tried at the next boot", h.Version, target))
}

// Held returns the header of the held bundle (nil when none is held), verified again.
func (s Store) Held(keys []ed25519.PublicKey, product string) (*update.Header, error) {
	dir := filepath.Join(s.Dir, HeldDir)
	if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	h, err := update.VerifyDir(dir, keys, product)
	if err != nil {
		return nil, fmt.Errorf("slots: the held update: %w", err)
	}
	return &h, nil
}

// InstallHeld installs the held bundle (verified again) as Install would have, when an
// administrator forces it, and returns its header and slot.
func (s Store) InstallHeld(keys []ed25519.PublicKey, product, running string) (update.Header, string, error) {
	h, err := s.Held(keys, product)
	if err != nil {
		return update.Header{}, "", err
	}
	if h == nil {
		return update.Header{}, "", errors.New("slots: no update is held")
	}
	st, err := s.Load()
	if err != nil {
		return update.Header{}, "", err
	}
	target, err := s.place(filepath.Join(s.Dir, HeldDir), running, st)
	if err != nil {
		return update.Header{}, "", err
	}
	return *h, target, s.pending(target, fmt.Sprintf("installed %s (security version %d) in slot %s, forced by the "+
		"administrator at the console; to be tried at the next boot", h.Version, h.SecurityVersion, target))
}

// place moves the verified directory stage into the slot that is neither active nor
// running, replacing what it held, and returns the slot.
func (s Store) place(stage, running string, st State) (string, error) {
	target := ""
	for _, n := range Names {
		if n != st.Active && n != running {
			target = n
			break
		}
	}
	if target == "" {
		return "", errors.New("slots: no free slot")
	}
	// The slot being replaced is neither running nor confirmed: drop it, move the
	// verified one in, then record it as pending.
	dst := s.SlotDir(target)
	if err := os.RemoveAll(dst); err != nil {
		return "", fmt.Errorf("slots: clearing slot %s: %w", target, err)
	}
	if err := os.Rename(stage, dst); err != nil {
		return "", fmt.Errorf("slots: %w", err)
	}
	return target, syncDir(s.Dir)
}

// pending records slot as pending, to be tried at the next boot.
func (s Store) pending(slot, last string) error {
	st, err := s.Load()
	if err != nil {
		return err
	}
	st.Pending, st.Tries = slot, 0
	st.Last, st.At = last, time.Now().UTC()
	return s.Save(st)
}

// Decision is what the boot does.
type Decision struct {
	Boot    string // slot to kexec into; "": stay on the running image
	Trial   bool   // Boot is the pending slot's one try: arm the watchdog before the kexec
	Commit  bool   // the running slot is the pending one, up on trial: confirm it once healthy
	Message string // for the console, "" when there is nothing to say
}

// Decide is the boot's choice, made as soon as the data disk is mounted; running is the
// slot named on the kernel command line ("" for the factory image). It saves the state
// it changes (a trial's count, a rollback) before returning.
func (s Store) Decide(running string) (Decision, error) {
	st, err := s.Load()
	if err != nil {
		return Decision{}, err
	}
	if running != "" {
		if running == st.Pending {
			return Decision{Commit: true}, nil
		}
		return Decision{}, nil
	}
	// The factory image: the first stage.
	if st.Pending != "" {
		if st.Tries == 0 {
			st.Tries = 1
			st.Last, st.At = "trying slot "+st.Pending, time.Now().UTC()
			if err := s.Save(st); err != nil {
				return Decision{}, err
			}
			return Decision{Boot: st.Pending, Trial: true, Message: "Trying the update in slot " + st.Pending + "."}, nil
		}
		failed := st.Pending
		info, _ := s.Slot(failed)
		version := "the update"
		if info.Header != nil {
			version = info.Header.Version
		}
		st.Pending, st.Tries = "", 0
		back := "the factory image"
		if st.Active != "" {
			back = "slot " + st.Active
		}
		st.Last = fmt.Sprintf("%s in slot %s did not come up; rolled back to %s", version, failed, back)
		st.At = time.Now().UTC()
		if err := s.Save(st); err != nil {
			return Decision{}, err
		}
		return Decision{Boot: st.Active, Message: "Firmware: " + st.Last + "."}, nil
	}
	return Decision{Boot: st.Active}, nil
}

// Confirm makes the running pending slot the active one.
func (s Store) Confirm(running string) (string, error) {
	st, err := s.Load()
	if err != nil {
		return "", err
	}
	if running == "" || st.Pending != running {
		return "", nil
	}
	info, _ := s.Slot(running)
	version := running
	if info.Header != nil {
		version = info.Header.Version
	}
	st.Active, st.Pending, st.Tries = running, "", 0
	st.Last, st.At = fmt.Sprintf("%s in slot %s confirmed", version, running), time.Now().UTC()
	if err := s.Save(st); err != nil {
		return "", err
	}
	return st.Last, nil
}

// Rollback stops booting into the active slot: the next boot runs the factory image.
func (s Store) Rollback() (string, error) {
	st, err := s.Load()
	if err != nil {
		return "", err
	}
	if st.Active == "" && st.Pending == "" {
		return "", errors.New("the factory image is what boots already")
	}
	st.Active, st.Pending, st.Tries = "", "", 0
	st.Last, st.At = "rolled back to the factory image by the administrator", time.Now().UTC()
	return st.Last, s.Save(st)
}

// RunningSlot is the slot named on a kernel command line ("" for none).
func RunningSlot(cmdline string) string {
	for _, f := range strings.Fields(cmdline) {
		if v, ok := strings.CutPrefix(f, CmdlineKey+"="); ok && (v == "a" || v == "b") {
			return v
		}
	}
	return ""
}

// Cmdline is cmdline for slot name: any slot key removed, the new one appended.
func Cmdline(cmdline, name string) string {
	var out []string
	for _, f := range strings.Fields(cmdline) {
		if !strings.HasPrefix(f, CmdlineKey+"=") {
			out = append(out, f)
		}
	}
	return strings.Join(append(out, CmdlineKey+"="+name), " ")
}

// VerifySlot checks slot name before anything boots it: the signature over its header by
// one of keys (for product), and its files against the header (sizes and SHA-256). A slot
// written by anything but a verified install (the data disk written behind the appliance's
// back, a compromised service) does not pass.
func (s Store) VerifySlot(name string, keys []ed25519.PublicKey, product string) (update.Header, error) {
	info, err := s.Slot(name)
	if err != nil {
		return update.Header{}, err
	}
	if info.Header == nil {
		return update.Header{}, fmt.Errorf("slots: slot %s is empty", name)
	}
	h, err := update.VerifyDir(s.SlotDir(name), keys, product)
	if err != nil {
		return update.Header{}, fmt.Errorf("slots: slot %s: %w", name, err)
	}
	return h, nil
}
