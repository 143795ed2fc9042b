package testvm

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/u-root/u-root/pkg/cpio"

	"github.com/enrollment-appliance/aeappliance/appliance/release"
	"github.com/enrollment-appliance/aeappliance/firmware/update"
)

// hangInit is the init of an update that hangs without panicking: it says so on the
// console and then sleeps for ever, as a payload stuck in a deadlock would.
const hangInit = `package main

import (
	"fmt"
	"time"
)

func main() {
	fmt.Println("HANG-TEST: this update's init hangs on purpose")
	for {
		time.Sleep(time.Hour)
	}
}
`

// hangBundle builds a signed update bundle (version, security version sv) of the image's
// kernel and an initramfs whose init hangs, and returns its path.
func hangBundle(t *testing.T, ctx context.Context, img Image, key ed25519.PrivateKey, version string, sv int) string {
	t.Helper()
	src := t.TempDir()
	if err := os.WriteFile(filepath.Join(src, "main.go"), []byte(hangInit), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(src, "go.mod"), []byte("module hang\n\ngo 1.22\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	initBin := filepath.Join(src, "init")
	build := exec.CommandContext(ctx, "go", "build", "-o", initBin, ".")
	build.Dir = src
	build.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64", "GOFLAGS=", "GOWORK=off")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building the hanging init: %v\n%s", err, out)
	}
	bin, err := os.ReadFile(initBin)
	if err != nil {
		t.Fatal(err)
	}
	var archive bytes.Buffer
	w := cpio.Newc.Writer(&archive)
	for _, r := range []cpio.Record{cpio.Directory("dev", 0o755), cpio.CharDev("dev/console", 0o600, 5, 1),
		cpio.StaticFile("init", string(bin), 0o755)} {
		if err := w.WriteRecord(r); err != nil {
			t.Fatal(err)
		}
	}
	if err := cpio.WriteTrailer(w); err != nil {
		t.Fatal(err)
	}
	zst := exec.CommandContext(ctx, "zstd", "-q", "-3", "-o", filepath.Join(dir, "initramfs.cpio.zst"))
	zst.Stdin = &archive
	if out, err := zst.CombinedOutput(); err != nil {
		t.Fatalf("zstd: %v\n%s", err, out)
	}
	kernel, err := os.ReadFile(img.Kernel)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "vmlinuz"), kernel, 0o644); err != nil {
		t.Fatal(err)
	}
	krel := img.Manifest.Kernel.Release
	m, _ := json.Marshal(map[string]any{
		"release": map[string]any{"product": release.Product, "version": version, "kernel": krel,
			"source_date_epoch": img.Manifest.Release.SourceDateEpoch, "security_version": sv},
		"kernel": map[string]any{"release": krel}})
	if err := os.WriteFile(filepath.Join(dir, "manifest.json"), m, 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), version+".aeu")
	if _, err := update.Build(dir, out, key); err != nil {
		t.Fatal(err)
	}
	return out
}

// tamperSlot changes the initramfs of firmware slot on the powered-off encrypted data disk
// and rewrites the slot's bundle.json to match it (sizes and SHA-256), as someone holding
// the disk and its recovery passphrase but no trusted update key could.
func tamperSlot(t *testing.T, disk, recovery, slot string) {
	t.Helper()
	plain := decryptDisk(t, disk, recovery)
	dir := "/firmware/" + slot
	hb, err := exec.Command("debugfs", "-R", "cat "+dir+"/bundle.json", plain).Output()
	if err != nil {
		t.Fatalf("debugfs cat bundle.json: %v", err)
	}
	var h map[string]any
	if err := json.Unmarshal(hb, &h); err != nil {
		t.Fatalf("slot %s's bundle.json: %v\n%s", slot, err, hb)
	}
	evil := []byte("not the initramfs the bundle was signed with")
	sum := sha256.Sum256(evil)
	files, _ := h["files"].([]any)
	changed := false
	for _, f := range files {
		if m, ok := f.(map[string]any); ok && m["name"] == "initramfs.cpio.zst" {
			m["size"], m["sha256"] = len(evil), hex.EncodeToString(sum[:])
			changed = true
		}
	}
	if !changed {
		t.Fatalf("slot %s's bundle.json lists no initramfs:\n%s", slot, hb)
	}
	nb, _ := json.MarshalIndent(h, "", "  ")
	local := t.TempDir()
	os.WriteFile(filepath.Join(local, "initramfs"), evil, 0o644)
	os.WriteFile(filepath.Join(local, "bundle.json"), nb, 0o644)
	for _, req := range []string{"rm " + dir + "/initramfs.cpio.zst", "write " + filepath.Join(local, "initramfs") + " " + dir + "/initramfs.cpio.zst",
		"rm " + dir + "/bundle.json", "write " + filepath.Join(local, "bundle.json") + " " + dir + "/bundle.json"} {
		if out, err := exec.Command("debugfs", "-w", "-R", req, plain).CombinedOutput(); err != nil || strings.Contains(string(out), "rror") {
			t.Fatalf("debugfs %s: %v\n%s", req, err, out)
		}
	}
	if out, err := exec.Command("debugfs", "-R", "cat "+dir+"/initramfs.cpio.zst", plain).Output(); err != nil || string(out) != string(evil) {
		t.Fatalf("the tampered initramfs did not land: %v %q", err, out)
	}
	encryptDisk(t, disk, recovery, plain)
}
