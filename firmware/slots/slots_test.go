package slots

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/enrollment-appliance/aeappliance/firmware/update"
	"github.com/enrollment-appliance/aeappliance/firmware/update/updatetest"
)

const product = "aeappliance - test"

// bundle builds a signed update bundle of a small fake image of version v.
func bundle(t *testing.T, key ed25519.PrivateKey, v string) []byte {
	return updatetest.Bundle(t, key, product, v)
}

func keys(t *testing.T) (ed25519.PrivateKey, []ed25519.PublicKey) {
	t.Helper()
	pub, priv, err := update.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	return priv, []ed25519.PublicKey{pub}
}

// TestUpdateLifecycle: install → pending; the factory boot tries it once; the slot's own
// boot confirms it; the next install goes to the other slot; a trial that never
// confirms is rolled back at the next factory boot, to the confirmed slot.
func TestUpdateLifecycle(t *testing.T) {
	priv, pubs := keys(t)
	s := Store{Dir: filepath.Join(t.TempDir(), "firmware")}

	if d, err := s.Decide(""); err != nil || d.Boot != "" || d.Commit {
		t.Fatalf("nothing installed: %+v %v", d, err)
	}
	h, slot, err := s.Install(bytes.NewReader(bundle(t, priv, "v2")), pubs, product, "", 0)
	if err != nil || slot != "a" || h.Version != "v2" {
		t.Fatalf("install: %v %s %+v", err, slot, h)
	}
	if _, err := s.VerifySlot("a", pubs, product); err != nil {
		t.Fatal(err)
	}
	d, err := s.Decide("")
	if err != nil || d.Boot != "a" {
		t.Fatalf("first factory boot after the install: %+v %v", d, err)
	}
	if d, _ := s.Decide("a"); !d.Commit || d.Boot != "" {
		t.Fatalf("the trial boot in slot a: %+v", d)
	}
	if msg, err := s.Confirm("a"); err != nil || !strings.Contains(msg, "v2 in slot a confirmed") {
		t.Fatalf("confirm: %q %v", msg, err)
	}
	if d, _ := s.Decide(""); d.Boot != "a" || d.Message != "" {
		t.Errorf("a factory boot after the confirmation: %+v", d)
	}

	// Running v2 from slot a: v3 goes to slot b; it never confirms.
	if _, slot, err := s.Install(bytes.NewReader(bundle(t, priv, "v3")), pubs, product, "a", 0); err != nil || slot != "b" {
		t.Fatalf("second install: %v %s", err, slot)
	}
	if d, _ := s.Decide(""); d.Boot != "b" {
		t.Fatalf("trying v3: %+v", d)
	}
	// The trial crashed: the machine comes back to the factory image.
	d, err = s.Decide("")
	if err != nil || d.Boot != "a" || !strings.Contains(d.Message, "v3 in slot b did not come up; rolled back to slot a") {
		t.Fatalf("after a failed trial: %+v %v", d, err)
	}
	st, _ := s.Load()
	if st.Active != "a" || st.Pending != "" {
		t.Errorf("state after the rollback: %+v", st)
	}
	if msg, err := s.Rollback(); err != nil || !strings.Contains(msg, "factory") {
		t.Errorf("rollback: %q %v", msg, err)
	}
	if d, _ := s.Decide(""); d.Boot != "" {
		t.Errorf("after the rollback to the factory image: %+v", d)
	}
}

// TestInstallRefusals: a bundle signed by another key, or altered, changes nothing; a
// corrupted slot file is caught before boot.
func TestInstallRefusals(t *testing.T) {
	priv, pubs := keys(t)
	other, _ := keys(t)
	s := Store{Dir: filepath.Join(t.TempDir(), "firmware")}
	good := bundle(t, priv, "v2")
	if _, _, err := s.Install(bytes.NewReader(good), pubs, product, "", 0); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Confirm(""); err != nil { // nothing to confirm on the factory image
		t.Fatal(err)
	}
	before, _ := os.ReadFile(filepath.Join(s.Dir, StateFile))
	for name, b := range map[string][]byte{
		"untrusted key": bundle(t, other, "v9"),
		"altered":       append(append([]byte{}, good[:len(good)-600]...), bytes.Repeat([]byte{1}, 600)...),
		"not a bundle":  []byte("hello"),
	} {
		if _, _, err := s.Install(bytes.NewReader(b), pubs, product, "", 0); err == nil {
			t.Errorf("%s: installed", name)
		}
	}
	if _, _, err := s.Install(bytes.NewReader(good), pubs, "another product", "", 0); err == nil {
		t.Error("a bundle for another product was installed")
	}
	after, _ := os.ReadFile(filepath.Join(s.Dir, StateFile))
	if !bytes.Equal(before, after) {
		t.Errorf("refused bundles changed the state:\n%s\n%s", before, after)
	}
	entries, _ := os.ReadDir(s.Dir)
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".install-") {
			t.Errorf("a refused install left %s", e.Name())
		}
	}
	if err := os.WriteFile(filepath.Join(s.SlotDir("a"), Kernel), []byte("tampered"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := s.VerifySlot("a", pubs, product); err == nil || !strings.Contains(err.Error(), "does not match its signed header") {
		t.Errorf("a tampered slot: %v", err)
	}
}

// TestSlotSwappedOnDiskDoesNotBoot: whoever can write the data disk (but holds no trusted
// key) cannot make a slot boot: not by replacing its files and rewriting bundle.json to
// match them, not by dropping the signature, not with a bundle signed by another key; a
// verified install passes with the trusted keys only.
func TestSlotSwappedOnDiskDoesNotBoot(t *testing.T) {
	priv, pubs := keys(t)
	otherPriv, otherPubs := keys(t)
	s := Store{Dir: filepath.Join(t.TempDir(), "firmware")}
	if _, _, err := s.Install(bytes.NewReader(bundle(t, priv, "v2")), pubs, product, "", 0); err != nil {
		t.Fatal(err)
	}
	if _, err := s.VerifySlot("a", pubs, product); err != nil {
		t.Fatalf("a verified install: %v", err)
	}
	if _, err := s.VerifySlot("a", otherPubs, product); err == nil {
		t.Error("the slot verifies with keys that did not sign it")
	}
	dir := s.SlotDir("a")
	for _, name := range []string{update.HeaderName, update.SignatureName} {
		if _, err := os.Stat(filepath.Join(dir, name)); err != nil {
			t.Fatalf("the install did not keep %s: %v", name, err)
		}
	}

	// The files of another (untrusted) bundle, with its header, over the slot's.
	stage := t.TempDir()
	if _, err := update.Verify(bytes.NewReader(bundle(t, otherPriv, "v666")), otherPubs, product, stage); err != nil {
		t.Fatal(err)
	}
	copyDir := func() {
		ents, _ := os.ReadDir(stage)
		for _, e := range ents {
			b, _ := os.ReadFile(filepath.Join(stage, e.Name()))
			if err := os.WriteFile(filepath.Join(dir, e.Name()), b, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	copyDir()
	if _, err := s.VerifySlot("a", pubs, product); err == nil || !strings.Contains(err.Error(), "signature does not verify") {
		t.Errorf("a slot swapped for another key's bundle: %v", err)
	}
	// The same, the header's key ID rewritten to the trusted key's and the signature dropped.
	if err := os.Remove(filepath.Join(dir, update.SignatureName)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.VerifySlot("a", pubs, product); err == nil {
		t.Error("a slot without its signature verifies")
	}
	if _, err := s.VerifySlot("b", pubs, product); err == nil {
		t.Error("an empty slot verifies")
	}
}

func TestCmdline(t *testing.T) {
	if got := Cmdline("console=ttyS0 aeappliance.slot=a quiet", "b"); got != "console=ttyS0 quiet aeappliance.slot=b" {
		t.Errorf("Cmdline = %q", got)
	}
	for in, want := range map[string]string{"console=ttyS0": "", "aeappliance.slot=b panic=1": "b", "aeappliance.slot=../x": ""} {
		if got := RunningSlot(in); got != want {
			t.Errorf("RunningSlot(%q) = %q, want %q", in, got, want)
		}
	}
}

// The state is readable by everyone: appinit writes it as root and the service, running as its
// own user, reads it (GET /api/v1/firmware).
func TestStateReadableByAll(t *testing.T) {
	s := Store{Dir: t.TempDir()}
	if err := s.Save(State{Active: "a"}); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(s.Dir, StateFile))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o644 {
		t.Errorf("state.json mode %v, want 0644", fi.Mode().Perm())
	}
}

// TestSecurityVersionFloor: a bundle below the running image's security version, or below
// the confirmed slot's, is verified but not installed: it is held, the state is unchanged,
// and only InstallHeld (the console's update force) installs it.
func TestSecurityVersionFloor(t *testing.T) {
	priv, pubs := keys(t)
	s := Store{Dir: filepath.Join(t.TempDir(), "firmware")}
	downgrade := func(sv int, running, want string) {
		t.Helper()
		_, _, err := s.Install(bytes.NewReader(updatetest.BundleSV(t, priv, product, "old", sv)), pubs, product, running, 3)
		var de *DowngradeError
		if !errors.As(err, &de) || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "update force") {
			t.Fatalf("security version %d: %v, want a DowngradeError %q naming update force", sv, err, want)
		}
	}
	downgrade(2, "", "lower than 3 (the running firmware's)")
	if st, _ := s.Load(); st.Pending != "" {
		t.Fatalf("a refused downgrade is pending: %+v", st)
	}
	if _, _, err := s.Install(bytes.NewReader(updatetest.BundleSV(t, priv, product, "v5", 5)), pubs, product, "", 3); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Confirm("a"); err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadFile(filepath.Join(s.Dir, StateFile))
	downgrade(4, "a", "lower than 5 (the confirmed firmware's, v5)")
	if after, _ := os.ReadFile(filepath.Join(s.Dir, StateFile)); !bytes.Equal(before, after) {
		t.Errorf("a refused downgrade changed the state:\n%s\n%s", before, after)
	}
	if info, _ := s.Slot("b"); info.Header != nil {
		t.Errorf("a refused downgrade is in slot b: %+v", info.Header)
	}
	h, err := s.Held(pubs, product)
	if err != nil || h == nil || h.SecurityVersion != 4 {
		t.Fatalf("Held = %+v, %v; want the last refused bundle (security version 4)", h, err)
	}
	if _, err := s.Held(nil, product); err == nil {
		t.Error("the held bundle verifies without trusted keys")
	}
	// Equal to the floor installs.
	if _, slot, err := s.Install(bytes.NewReader(updatetest.BundleSV(t, priv, product, "v5.1", 5)), pubs, product, "a", 3); err != nil || slot != "b" {
		t.Fatalf("a bundle at the floor: %s, %v", slot, err)
	}
	// Forced: the held one replaces the pending one.
	_, _, _ = s.Install(bytes.NewReader(updatetest.BundleSV(t, priv, product, "v4", 4)), pubs, product, "a", 3)
	fh, slot, err := s.InstallHeld(pubs, product, "a")
	if err != nil || slot != "b" || fh.Version != "v4" {
		t.Fatalf("InstallHeld = %+v, %s, %v", fh, slot, err)
	}
	st, _ := s.Load()
	if st.Pending != "b" || !strings.Contains(st.Last, "forced by the administrator") {
		t.Errorf("state after InstallHeld: %+v", st)
	}
	if _, err := s.VerifySlot("b", pubs, product); err != nil {
		t.Error(err)
	}
	if _, _, err := s.InstallHeld(pubs, product, "a"); err == nil {
		t.Error("InstallHeld twice: the held bundle was installed again")
	}
}
