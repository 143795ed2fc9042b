package testvm

import (
	"crypto/aes"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"

	"golang.org/x/crypto/xts"
)

// decryptDisk writes the plain file system of the appliance's encrypted data disk (LUKS2,
// aes-xts-plain64) to a new file and returns its path, using the recovery passphrase: the
// host has no device-mapper here, so cryptsetup gives the volume key (luksDump
// --dump-volume-key, which reads the header only) and Go's XTS decrypts the data segment,
// one 4096-byte sector at a time, its tweak the sector's offset in 512-byte units (dm-crypt's
// plain64 IV without iv_large_sectors, which LUKS2 does not set).
func decryptDisk(t *testing.T, disk, recovery string) string {
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
	in, err := os.Open(disk)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	plainPath := filepath.Join(dir, "plain.img")
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
