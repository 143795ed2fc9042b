package datadisk

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"regexp"
	"testing"

	"github.com/enrollment-appliance/aeappliance/appliance/tpmseal"
	"github.com/enrollment-appliance/aeappliance/testvm/swtpm/swtpmtest"
)

// sealerOn is the appliance's disk sealer on the software TPM sim.
func sealerOn(sim *swtpmtest.Sim) tpmseal.DiskSealer {
	return tpmseal.DiskSealer{Open: func() (*tpmseal.TPM, error) { return tpmseal.FromStream(sim.Dial()), nil }}
}

// TestSealedDisk: a blank disk is encrypted with a key sealed to the TPM; the same TPM after
// a reboot gives the key back; after the cap, or on another TPM, it does not; the recovery
// passphrase re-seals the disk to the other TPM, after which the old key opens nothing.
// (Opening the volume needs device-mapper, which the appliance has in its VM; here
// cryptsetup's --test-passphrase checks each key.)
func TestSealedDisk(t *testing.T) {
	needTool(t, "cryptsetup", "cryptsetup-bin")
	ctx := context.Background()
	sim := swtpmtest.Start(t, "")
	dev := image(t, 32<<20, nil)
	key, err := formatSealed(ctx, dev, sealerOn(sim))
	if err != nil {
		t.Fatalf("formatSealed: %v", err)
	}
	if k, err := Probe(dev); err != nil || k != Encrypted {
		t.Fatalf("Probe = %v, %v; want Encrypted", k, err)
	}
	if slots, err := RecoverySlots(ctx, dev); err != nil || len(slots) != 0 {
		t.Fatalf("RecoverySlots of a new disk = %v, %v; want none", slots, err)
	}
	// The boot after: the same TPM, PCRs reset to their power-on values.
	sim = sim.Restart()
	got, err := unsealKey(ctx, dev, sealerOn(sim))
	if err != nil || !bytes.Equal(got, key) {
		t.Fatalf("unsealKey after a reboot: %v", err)
	}

	pass, err := NewRecoveryPassphrase()
	if err != nil || !regexp.MustCompile(`^([A-Za-z0-9]{5}-){7}[A-Za-z0-9]{5}$`).Match(pass) {
		t.Fatalf("NewRecoveryPassphrase = %q, %v", pass, err)
	}
	if _, err := SetRecovery(ctx, dev, bytes.Repeat([]byte{7}, KeySize), pass); !errors.Is(err, ErrWrongKey) {
		t.Fatalf("SetRecovery authorised by a wrong key = %v, want ErrWrongKey", err)
	}
	first, err := SetRecovery(ctx, dev, key, pass)
	if err != nil {
		t.Fatalf("SetRecovery: %v", err)
	}
	// A new recovery passphrase replaces the old one.
	pass2, _ := NewRecoveryPassphrase()
	second, err := SetRecovery(ctx, dev, key, pass2)
	if err != nil || second == first {
		t.Fatalf("SetRecovery again = slot %d, %v (first was %d)", second, err, first)
	}
	if err := TestKey(ctx, dev, pass); !errors.Is(err, ErrWrongKey) {
		t.Errorf("the replaced recovery passphrase still opens the disk: %v", err)
	}
	if slots, err := RecoverySlots(ctx, dev); err != nil || len(slots) != 1 || slots[0] != second {
		t.Fatalf("RecoverySlots = %v, %v; want [%d]", slots, err, second)
	}

	// The cap: nothing later in the boot unseals.
	if err := tpmseal.Cap(func() (*tpmseal.TPM, error) { return tpmseal.FromStream(sim.Dial()), nil }); err != nil {
		t.Fatal(err)
	}
	if _, err := unsealKey(ctx, dev, sealerOn(sim)); !errors.Is(err, tpmseal.ErrPCRMismatch) {
		t.Fatalf("unsealKey after the cap = %v, want ErrPCRMismatch", err)
	}

	// The disk moved to another machine: its TPM cannot load the sealed key.
	other := swtpmtest.Start(t, "")
	if _, err := unsealKey(ctx, dev, sealerOn(other)); !errors.Is(err, tpmseal.ErrOtherTPM) {
		t.Fatalf("unsealKey on another TPM = %v, want ErrOtherTPM", err)
	}
	st := Prepare(ctx, []string{dev}, t.TempDir(), sealerOn(other), func(string) {}, slog.New(slog.DiscardHandler))
	if !st.Locked || st.Mounted || st.Key != nil || !bytes.Contains([]byte(st.Problem), []byte("disk unlock")) {
		t.Fatalf("Prepare on another TPM = %+v, want a locked disk that says how to unlock it", st)
	}
	before, _ := os.ReadFile(dev)
	if _, err := Reseal(ctx, dev, []byte("not-the-recovery-passphrase"), sealerOn(other)); !errors.Is(err, ErrWrongKey) {
		t.Fatalf("Reseal with a wrong passphrase = %v, want ErrWrongKey", err)
	}
	if after, _ := os.ReadFile(dev); !bytes.Equal(before, after) {
		t.Fatal("a wrong recovery passphrase changed the disk")
	}
	newKey, err := Reseal(ctx, dev, pass2, sealerOn(other))
	if err != nil {
		t.Fatalf("Reseal: %v", err)
	}
	if got, err := unsealKey(ctx, dev, sealerOn(other)); err != nil || !bytes.Equal(got, newKey) {
		t.Fatalf("unsealKey on the new TPM after Reseal: %v", err)
	}
	if err := TestKey(ctx, dev, key); !errors.Is(err, ErrWrongKey) {
		t.Errorf("the old sealed key still opens the disk after the re-seal: %v", err)
	}
	if err := TestKey(ctx, dev, pass2); err != nil {
		t.Errorf("the recovery passphrase no longer opens the disk after the re-seal: %v", err)
	}
	if slots, err := KeySlots(ctx, dev); err != nil || len(slots) != 2 {
		t.Errorf("key slots after the re-seal = %v, %v; want the new sealed key's and the recovery's", slots, err)
	}
	raw, _ := os.ReadFile(dev)
	for _, secret := range [][]byte{key, newKey, pass, pass2} {
		if bytes.Contains(raw, secret[:16]) {
			t.Error("the disk image holds a key or passphrase in clear")
		}
	}
}

// TestPrepareWithoutTPMLeavesEncryptedDiskLocked: no sealer, an encrypted disk: locked,
// untouched, and the message says so.
func TestPrepareWithoutTPMLeavesEncryptedDiskLocked(t *testing.T) {
	needTool(t, "cryptsetup", "cryptsetup-bin")
	ctx := context.Background()
	dev := image(t, 32<<20, nil)
	key, _ := NewKey()
	if err := LUKSFormat(ctx, dev, key); err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadFile(dev)
	st := Prepare(ctx, []string{dev}, t.TempDir(), nil, func(string) {}, slog.New(slog.DiscardHandler))
	if !st.Locked || st.Mounted || st.Kind != Encrypted || !bytes.Contains([]byte(st.Problem), []byte("no TPM 2.0")) {
		t.Fatalf("Prepare = %+v", st)
	}
	if after, _ := os.ReadFile(dev); !bytes.Equal(before, after) {
		t.Fatal("Prepare changed a disk it could not open")
	}
}

// TestNoTPMBlankDiskWaitsForAPassphrase: without a TPM, Prepare writes nothing on a blank
// disk and says a passphrase is needed; FormatWithPassphrase refuses a short passphrase and
// a disk that is not blank, changing nothing.
func TestNoTPMBlankDiskWaitsForAPassphrase(t *testing.T) {
	needTool(t, "cryptsetup", "cryptsetup-bin")
	ctx := context.Background()
	dev := image(t, 32<<20, nil)
	st := Prepare(ctx, []string{dev}, t.TempDir(), nil, func(string) {}, slog.New(slog.DiscardHandler))
	if !st.NeedsPassphrase || st.Mounted || st.Locked || !bytes.Contains([]byte(st.Problem), []byte("disk encrypt")) {
		t.Fatalf("Prepare(blank, no TPM) = %+v", st)
	}
	if k, _ := Probe(dev); k != Blank {
		t.Fatalf("Prepare without a TPM wrote on the blank disk: %v", k)
	}
	if _, err := FormatWithPassphrase(ctx, dev, t.TempDir(), []byte("short")); err == nil {
		t.Error("FormatWithPassphrase took a 5-character passphrase")
	}
	if k, _ := Probe(dev); k != Blank {
		t.Fatalf("a refused FormatWithPassphrase wrote on the disk: %v", k)
	}
	key, _ := NewKey()
	if err := LUKSFormat(ctx, dev, key); err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadFile(dev)
	if _, err := FormatWithPassphrase(ctx, dev, t.TempDir(), []byte("a long enough passphrase")); err == nil {
		t.Error("FormatWithPassphrase formatted a disk that is not blank")
	}
	if _, err := OpenWithPassphrase(ctx, dev, t.TempDir(), []byte("not the passphrase at all"), slog.New(slog.DiscardHandler)); !errors.Is(err, ErrWrongKey) {
		t.Errorf("OpenWithPassphrase with a wrong passphrase = %v, want ErrWrongKey", err)
	}
	if after, _ := os.ReadFile(dev); !bytes.Equal(before, after) {
		t.Fatal("refused calls changed the encrypted disk")
	}
}
