package testvm

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/enrollment-appliance/aeappliance/appliance/release"
	"github.com/enrollment-appliance/aeappliance/firmware"
	"github.com/enrollment-appliance/aeappliance/firmware/update"
)

// TestApplianceUpdate: a provisioned appliance takes a signed update over the API
// (aectl firmware upload through the forwarded port), refuses one signed by another
// key, boots the update from slot a at the next reboot (the factory image kexecs into
// it) and confirms it once the service answers with the same CA. It refuses a signed
// bundle with a lower security version (422) until an administrator forces it at the console
// after confirming; that update hangs, is reset by the watchdog and the confirmed slot comes back; a slot changed on the disk (its header fixed
// to match) is refused at boot while the factory image serves; update rollback returns to
// the factory image.
func TestApplianceUpdate(t *testing.T) {
	needVM(t)
	ctx, cancel := context.WithTimeout(context.Background(), 12*time.Minute)
	defer cancel()
	vm, disk := boot(t, ctx, nil)
	must(t, vm, prompt, 2*time.Minute)

	// The update: the same sources as a second version, bundled and signed with the
	// development key the first image trusts.
	root, err := RepoRoot(".")
	if err != nil {
		t.Fatal(err)
	}
	v2, err := BuildImageWith(ctx, root, slog.New(slog.NewTextHandler(io.Discard, nil)), ImageOptions{VersionSuffix: "-v2"})
	if err != nil {
		t.Fatal(err)
	}
	_, privPath, err := firmware.EnsureDevKeys(root)
	if err != nil {
		t.Fatal(err)
	}
	key, err := update.ReadPrivateKey(privPath)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	good := filepath.Join(dir, "good.aeu")
	h, err := update.Build(filepath.Dir(v2.Kernel), good, key)
	if err != nil {
		t.Fatal(err)
	}
	_, otherKey, _ := update.GenerateKey()
	foreign := filepath.Join(dir, "foreign.aeu")
	if _, err := update.Build(filepath.Dir(v2.Kernel), foreign, otherKey); err != nil {
		t.Fatal(err)
	}

	ceremonyToKey(t, vm)
	command(t, vm, "provision selfsigned Update Test CA", 2*time.Minute)
	fingerprint := finish(t, vm)
	recovery := recoveryPassphrase(t, vm)
	tokenFile, caFile := apiCredentials(t, vm, dir)
	aectlArgs := func(args ...string) ([]byte, error) {
		full := append([]string{"--api", "127.0.0.1:" + strconv.Itoa(vm.HostPort(apiPort)), "--token-file", tokenFile, "--ca-file", caFile}, args...)
		return exec.CommandContext(ctx, aectl(t), full...).CombinedOutput()
	}
	if out, err := aectlArgs("firmware", "upload", foreign); err == nil || !strings.Contains(string(out), "422") {
		t.Errorf("a bundle signed by another key: %v\n%s", err, out)
	}
	out, err := aectlArgs("firmware", "upload", good)
	if err != nil || !strings.Contains(string(out), "installed "+h.Version+" in slot a") {
		t.Fatalf("aectl firmware upload: %v\n%s", err, out)
	}
	if out := command(t, vm, "update", 30*time.Second); !strings.Contains(out, "pending: tried at the next boot") {
		t.Errorf("update status after the upload:\n%s", out)
	}

	if err := vm.SendLine("reboot"); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	must(t, vm, "Trying the update in slot a.", 2*time.Minute)
	must(t, vm, "Starting "+h.Version+" from slot a", time.Minute)
	banner := must(t, vm, prompt, 3*time.Minute)
	if !strings.Contains(banner, "Version:        "+h.Version+" (slot a)") {
		t.Errorf("the banner after the update:\n%s", banner)
	}
	must(t, vm, "Firmware: "+h.Version+" in slot a confirmed.", 3*time.Minute)
	must(t, vm, prompt, 10*time.Second) // shown again after the notice
	checkService(t, ctx, vm, fingerprint, time.Minute)
	t.Logf("reboot into the update (factory image, kexec, update) to serving: %s", time.Since(start).Round(100*time.Millisecond))
	out, err = aectlArgs("firmware")
	if err != nil || !strings.Contains(string(out), "Running:  a") || !strings.Contains(string(out), "[active]") {
		t.Errorf("aectl firmware after the update: %v\n%s", err, out)
	}

	// A correctly signed bundle whose security version is lower than the running one's:
	// 422, held for the console's update force, nothing installed.
	old := hangBundle(t, ctx, image, key, "old-security", release.SecurityVersion-1)
	if out, err := aectlArgs("firmware", "upload", old); err == nil || !strings.Contains(string(out), "422") ||
		!strings.Contains(string(out), "update force") {
		t.Errorf("a bundle with a lower security version: %v\n%s", err, out)
	}
	if out, err := aectlArgs("firmware"); err != nil || strings.Contains(string(out), "old-security") || strings.Contains(string(out), "Pending:  b") {
		t.Errorf("the refused downgrade changed the slots: %v\n%s", err, out)
	}

	// An administrator forces it at the console, after confirming: installed in slot b, and the
	// factory image boots it (the forced record names exactly its signed header). It is also
	// an update that hangs without panicking: the factory image armed the hardware watchdog
	// (i6300esb) before the kexec, nothing feeds it in the hung update, it resets the machine,
	// and the factory image finds the trial used and goes back to the confirmed slot.
	if out := secretLines(t, vm, time.Minute, "login", passphrase); !strings.Contains(out, "Logged in") {
		t.Fatalf("login: %q", out)
	}
	if out := secretLines(t, vm, time.Minute, "update force", "n"); !strings.Contains(out, "(it may reopen old flaws)? [y/N]: ") ||
		!strings.Contains(out, "cancelled: nothing changed") {
		t.Errorf("update force, declined: %q", out)
	}
	if out, err := aectlArgs("firmware"); err != nil || strings.Contains(string(out), "old-security") {
		t.Errorf("a declined update force changed the slots: %v\n%s", err, out)
	}
	if out := secretLines(t, vm, time.Minute, "update force", "y"); !strings.Contains(out,
		fmt.Sprintf("Installed old-security (security version %d; this image's is %d) in slot b", release.SecurityVersion-1, release.SecurityVersion)) {
		t.Fatalf("update force: %q", out)
	}
	if err := vm.SendLine("reboot"); err != nil {
		t.Fatal(err)
	}
	must(t, vm, "Trying the update in slot b.", 2*time.Minute)
	must(t, vm, "HANG-TEST: this update's init hangs on purpose", 2*time.Minute)
	start = time.Now()
	must(t, vm, "old-security in slot b did not come up; rolled back to slot a", 4*time.Minute)
	t.Logf("the watchdog reset the hung update after %s", time.Since(start).Round(time.Second))
	banner = must(t, vm, prompt, 3*time.Minute)
	if !strings.Contains(banner, "Version:        "+h.Version+" (slot a)") {
		t.Errorf("after the hung trial the confirmed update does not run:\n%s", banner)
	}
	checkService(t, ctx, vm, fingerprint, 2*time.Minute)

	// The confirmed slot's initramfs changed on the disk, its bundle.json fixed to match:
	// the factory image refuses it (the signature no longer verifies), says so and serves.
	powerOff(t, vm)
	tamperSlot(t, disk, recovery, "a")
	vm = startVM(t, ctx, Options{DataDisk: disk})
	banner = must(t, vm, prompt, 3*time.Minute)
	if !strings.Contains(banner, "Firmware: slots: slot a: signature does not verify") || !strings.Contains(banner, "staying on this image") ||
		strings.Contains(banner, "(slot a)") {
		t.Errorf("the banner with a tampered slot:\n%s", banner)
	}
	checkService(t, ctx, vm, fingerprint, 2*time.Minute)

	// Back to the factory image for good.
	if out := secretLines(t, vm, time.Minute, "login", passphrase); !strings.Contains(out, "Logged in") {
		t.Fatalf("login: %q", out)
	}
	if out := command(t, vm, "update rollback", time.Minute); !strings.Contains(out, "rolled back to the factory image") {
		t.Errorf("update rollback: %q", out)
	}
	if err := vm.SendLine("reboot"); err != nil {
		t.Fatal(err)
	}
	must(t, vm, "Rebooting.", time.Minute)
	banner = must(t, vm, prompt, 3*time.Minute)
	if strings.Contains(banner, "(slot a)") || strings.Contains(banner, "-v2") || strings.Contains(banner, "Firmware: slots:") {
		t.Errorf("after the rollback:\n%s", banner)
	}
	checkService(t, ctx, vm, fingerprint, 2*time.Minute)
}
