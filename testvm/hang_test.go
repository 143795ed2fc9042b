package testvm

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
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

// hangBundle builds a signed update bundle (version "hang-test") of the image's kernel and
// an initramfs whose init hangs, and returns its path.
func hangBundle(t *testing.T, ctx context.Context, img Image, key ed25519.PrivateKey) string {
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
		"release": map[string]any{"product": release.Product, "version": "hang-test", "kernel": krel,
			"source_date_epoch": img.Manifest.Release.SourceDateEpoch, "security_version": release.SecurityVersion},
		"kernel": map[string]any{"release": krel}})
	if err := os.WriteFile(filepath.Join(dir, "manifest.json"), m, 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "hang.aeu")
	if _, err := update.Build(dir, out, key); err != nil {
		t.Fatal(err)
	}
	return out
}
