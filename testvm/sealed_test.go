package testvm

import (
	"context"
	"crypto/aes"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/xts"
)

// diskCipher returns the XTS cipher of the appliance's encrypted data disk (LUKS2,
// aes-xts-plain64) and the offset of its data segment, using the recovery passphrase: the
// host has no device-mapper here, so cryptsetup gives the volume key (luksDump
// --dump-volume-key, which reads the header only) and Go's XTS does the rest, one 4096-byte
// sector at a time, its tweak the sector's offset in 512-byte units (dm-crypt's plain64 IV
// without iv_large_sectors, which LUKS2 does not set).
func diskCipher(t *testing.T, disk, recovery string) (*xts.Cipher, int64) {
	t.Helper()
	dir := t.TempDir()
	passFile, keyFile := filepath.Join(dir, "pass"), filepath.Join(dir, "volume.key")
	if err := os.WriteFile(passFile, []byte(recovery), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("cryptsetup", "luksDump", "--batch-mode", "--dump-volume-key", "--volume-key-file", keyFile,
		"--key-file", passFile, disk).CombinedOutput(); err != nil {
		t.Fatalf("cryptsetup luksDump --dump-volume-key with the recovery passphrase: %v\n%s", err, out)
	}
	key, err := os.ReadFile(keyFile)
	if err != nil || len(key) != 64 {
		t.Fatalf("the volume key: %d bytes, %v; want 64 (aes-xts-plain64, 512 bits)", len(key), err)
	}
	out, err := exec.Command("cryptsetup", "luksDump", "--dump-json-metadata", disk).Output()
	if err != nil {
		t.Fatal(err)
	}
	var md struct {
		Segments map[string]struct {
			Offset     string `json:"offset"`
			Encryption string `json:"encryption"`
			SectorSize int    `json:"sector_size"`
		} `json:"segments"`
	}
	if err := json.Unmarshal(out, &md); err != nil {
		t.Fatal(err)
	}
	seg := md.Segments["0"]
	offset, err := strconv.ParseInt(seg.Offset, 10, 64)
	if err != nil || seg.Encryption != "aes-xts-plain64" || seg.SectorSize != 4096 {
		t.Fatalf("segment 0 = %+v (%v), want aes-xts-plain64 with 4096-byte sectors", seg, err)
	}
	c, err := xts.NewCipher(aes.NewCipher, key)
	if err != nil {
		t.Fatal(err)
	}
	return c, offset
}

// decryptDisk writes the plain file system of the encrypted data disk to a new file and
// returns its path.
func decryptDisk(t *testing.T, disk, recovery string) string {
	t.Helper()
	c, offset := diskCipher(t, disk, recovery)
	in, err := os.Open(disk)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	plainPath := filepath.Join(t.TempDir(), "plain.img")
	plain, err := os.Create(plainPath)
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	if _, err := in.Seek(offset, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	buf, dst := make([]byte, 4096), make([]byte, 4096)
	for sector := uint64(0); ; sector++ {
		if _, err := io.ReadFull(in, buf); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		c.Decrypt(dst, buf, sector*8)
		if _, err := plain.Write(dst); err != nil {
			t.Fatal(err)
		}
	}
	return plainPath
}

// encryptDisk writes the plain file system plainPath (from decryptDisk, changed) back into
// the encrypted data disk: what someone holding the disk and its recovery passphrase, but
// not a trusted update key, can do.
func encryptDisk(t *testing.T, disk, recovery, plainPath string) {
	t.Helper()
	c, offset := diskCipher(t, disk, recovery)
	plain, err := os.ReadFile(plainPath)
	if err != nil {
		t.Fatal(err)
	}
	out, err := os.OpenFile(disk, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	dst := make([]byte, 4096)
	for sector := 0; sector*4096 < len(plain); sector++ {
		c.Encrypt(dst, plain[sector*4096:(sector+1)*4096], uint64(sector)*8)
		if _, err := out.WriteAt(dst, offset+int64(sector)*4096); err != nil {
			t.Fatal(err)
		}
	}
}

// recoveryPassphrase is the data disk's recovery passphrase that provision finish showed
// on vm's console.
func recoveryPassphrase(t *testing.T, vm *VM) string {
	t.Helper()
	m := regexp.MustCompile(`Recovery passphrase of the data disk[^\n]*\n[^\n]*\n[^\n]*\n\s+((?:[A-Za-z0-9]{5}-){7}[A-Za-z0-9]{5})\r?\n`).
		FindStringSubmatch(vm.Transcript())
	if m == nil {
		t.Fatalf("provision finish showed no recovery passphrase:\n%s", vm.Transcript())
	}
	return m[1]
}

// TestApplianceWithoutTPM: a machine without a TPM 2.0 never writes a blank data disk in
// clear. It waits for `disk encrypt` and a passphrase, then carries on (provisioning
// works); after a reboot the disk is locked until `disk unlock` with that passphrase (a
// wrong one changes nothing), and what was saved is there. The powered-off disk holds a
// LUKS2 header and no file system in clear.
func TestApplianceWithoutTPM(t *testing.T) {
	needVM(t)
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	buildImage(t, ctx)
	disk := filepath.Join(t.TempDir(), "data.img")
	if err := NewDisk(disk, 256<<20); err != nil {
		t.Fatal(err)
	}
	vm := startVM(t, ctx, Options{DataDisk: disk, NoTPM: true})
	banner := must(t, vm, prompt, 2*time.Minute)
	for _, want := range []string{"no TPM 2.0 to seal the disk's key to", "disk encrypt", "State:          data disk not encrypted yet"} {
		if !strings.Contains(strings.Join(strings.Fields(banner), " "), strings.Join(strings.Fields(want), " ")) {
			t.Errorf("banner without a TPM lacks %q:\n%s", want, banner)
		}
	}
	if out := command(t, vm, "status", 30*time.Second); !strings.Contains(out, "Encryption:     blank disk, no TPM: disk encrypt sets its passphrase") ||
		!strings.Contains(out, "TPM:            none") {
		t.Errorf("status without a TPM:\n%s", out)
	}
	const diskPass = "vm disk passphrase without a TPM 1"
	if out := secretLines(t, vm, time.Minute, "disk encrypt", "too short", "too short"); !strings.Contains(out, "at least 16 characters: nothing changed") {
		t.Errorf("disk encrypt with a short passphrase: %q", out)
	}
	if out := secretLines(t, vm, 2*time.Minute, "disk encrypt", diskPass, diskPass); !strings.Contains(out, "Encrypted the data disk; it is open.") ||
		!strings.Contains(out, "State: unprovisioned") {
		t.Fatalf("disk encrypt: %q", out)
	}
	if out := command(t, vm, "status", 30*time.Second); !strings.Contains(out, "Encryption:     LUKS2 aes-xts-plain64, its passphrase typed at every boot (no TPM)") ||
		!strings.Contains(out, "Data disk:      /dev/vda on /data") {
		t.Errorf("status after disk encrypt:\n%s", out)
	}
	if out := secretLines(t, vm, time.Minute, "provision passphrase", passphrase, passphrase); !strings.Contains(out, "Set the admin passphrase.") {
		t.Fatalf("provision passphrase on the encrypted disk: %q", out)
	}
	if out := secretLines(t, vm, time.Minute, "login", passphrase); !strings.Contains(out, "Logged in") {
		t.Fatalf("login: %q", out)
	}
	if err := vm.SendLine("reboot"); err != nil {
		t.Fatal(err)
	}
	must(t, vm, "Rebooting.", time.Minute)
	banner = must(t, vm, prompt, 2*time.Minute)
	if !strings.Contains(banner, "State:          data disk locked") {
		t.Errorf("banner after the reboot:\n%s", banner)
	}
	if out := secretLines(t, vm, time.Minute, "disk unlock", "not the disk passphrase at all"); !strings.Contains(out, "wrong passphrase: nothing changed") {
		t.Errorf("disk unlock with a wrong passphrase: %q", out)
	}
	if out := secretLines(t, vm, 2*time.Minute, "disk unlock", diskPass); !strings.Contains(out, "Opened the data disk.") || !strings.Contains(out, "State: unprovisioned") {
		t.Fatalf("disk unlock: %q", out)
	}
	if out := command(t, vm, "provision status", 30*time.Second); !strings.Contains(out, "[x] passphrase set") {
		t.Errorf("what was saved before the reboot is not there:\n%s", out)
	}
	if strings.Contains(vm.Transcript(), diskPass) {
		t.Error("the console echoed the disk passphrase")
	}
	powerOff(t, vm)
	if ok, err := isLUKS(disk); err != nil || !ok {
		t.Errorf("the data disk is not a LUKS2 volume: %v", err)
	}
	if out, err := exec.Command("e2fsck", "-fn", disk).CombinedOutput(); err == nil {
		t.Errorf("the raw data disk is a readable file system:\n%s", out)
	}
}

// isLUKS reports whether the image starts with a LUKS2 header.
func isLUKS(path string) (bool, error) {
	f, err := os.Open(path)
	if err != nil {
		return false, err
	}
	defer f.Close()
	hdr := make([]byte, 8)
	if _, err := io.ReadFull(f, hdr); err != nil {
		return false, err
	}
	return string(hdr) == "LUKS\xba\xbe\x00\x02", nil
}

// TestApplianceMigratesPlainDisk: a plain ext4 data disk (from before encryption) is used
// as it is and status says it is not encrypted; disk migrate shows a recovery passphrase and
// goes ahead only once it is typed back, encrypts the disk in place with the service's state
// kept, seals the key to the TPM, and the next boot opens it by itself. The powered-off disk
// is LUKS2, holds no file system in clear, and opens with the recovery passphrase.
func TestApplianceMigratesPlainDisk(t *testing.T) {
	needVM(t)
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	vm, disk := boot(t, ctx, func(disk string) {
		if out, err := exec.Command("mkfs.ext4", "-q", "-F", "-L", "aedata", disk).CombinedOutput(); err != nil {
			t.Fatalf("mkfs.ext4: %v\n%s", err, out)
		}
	})
	must(t, vm, prompt, 2*time.Minute)
	if out := command(t, vm, "status", 30*time.Second); !strings.Contains(out, "Encryption:     NONE: this data disk is not encrypted") {
		t.Errorf("status with a plain disk:\n%s", out)
	}
	if out := secretLines(t, vm, time.Minute, "provision passphrase", passphrase, passphrase); !strings.Contains(out, "Set the admin passphrase.") {
		t.Fatalf("provision passphrase: %q", out)
	}
	if out := secretLines(t, vm, time.Minute, "login", passphrase); !strings.Contains(out, "Logged in") {
		t.Fatalf("login: %q", out)
	}
	shown := regexp.MustCompile(`\n\s+((?:[A-Za-z0-9]{5}-){7}[A-Za-z0-9]{5})\r?\n`)
	// Typed back wrong: nothing changes.
	if err := vm.SendLine("disk migrate"); err != nil {
		t.Fatal(err)
	}
	must(t, vm, "Type it back to confirm you have it: ", time.Minute)
	if out := answerLines(t, vm, time.Minute, "AAAAA-AAAAA-AAAAA-AAAAA-AAAAA-AAAAA-AAAAA-AAAAA"); !strings.Contains(out, "that is not the recovery passphrase: nothing changed") {
		t.Errorf("disk migrate with the passphrase typed back wrong: %q", out)
	}
	if err := vm.SendLine("disk migrate"); err != nil {
		t.Fatal(err)
	}
	out := must(t, vm, "Type it back to confirm you have it: ", time.Minute)
	m := shown.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("disk migrate showed no recovery passphrase:\n%s", out)
	}
	recovery := m[1]
	start := time.Now()
	if out := answerLines(t, vm, 6*time.Minute, recovery); !strings.Contains(out, "Encrypted the data disk in") || !strings.Contains(out, "State: unprovisioned") {
		t.Fatalf("disk migrate: %q", out)
	}
	t.Logf("encrypting the 256 MiB data disk in place under TCG: %s", time.Since(start).Round(time.Second))
	if out := command(t, vm, "status", 30*time.Second); !strings.Contains(out, "Encryption:     LUKS2 aes-xts-plain64, key sealed to the TPM 2.0") ||
		!strings.Contains(out, "recovery passphrase set") || !strings.Contains(out, "Data disk:      /dev/vda on /data") {
		t.Errorf("status after disk migrate:\n%s", out)
	}
	if err := vm.SendLine("reboot"); err != nil {
		t.Fatal(err)
	}
	must(t, vm, "Rebooting.", time.Minute)
	banner := must(t, vm, prompt, 2*time.Minute)
	if !strings.Contains(banner, "State:          unprovisioned") {
		t.Errorf("banner after the migration and a reboot:\n%s", banner)
	}
	if out := command(t, vm, "provision status", 30*time.Second); !strings.Contains(out, "[x] passphrase set") {
		t.Errorf("the state saved before the migration is gone:\n%s", out)
	}
	powerOff(t, vm)
	if ok, err := isLUKS(disk); err != nil || !ok {
		t.Errorf("the migrated data disk is not a LUKS2 volume: %v", err)
	}
	if out, err := exec.Command("e2fsck", "-fn", disk).CombinedOutput(); err == nil {
		t.Errorf("the migrated data disk is still a readable file system:\n%s", out)
	}
	pf := filepath.Join(t.TempDir(), "recovery")
	os.WriteFile(pf, []byte(recovery), 0o600)
	if out, err := exec.Command("cryptsetup", "open", "--test-passphrase", "--key-file", pf, disk).CombinedOutput(); err != nil {
		t.Errorf("the recovery passphrase does not open the migrated disk: %v\n%s", err, out)
	}
}
