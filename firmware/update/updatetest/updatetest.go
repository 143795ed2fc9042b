// Package updatetest builds small signed update bundles (firmware/update) for tests: a fake
// kernel and initramfs with the manifest firmware.Build would write.
package updatetest

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/enrollment-appliance/aeappliance/appliance/release"
	"github.com/enrollment-appliance/aeappliance/firmware/update"
)

// Bundle builds a bundle of version v for product, signed with key (kernel release 6.1.0-test).
func Bundle(t testing.TB, key ed25519.PrivateKey, product, v string) []byte {
	t.Helper()
	return BundleSV(t, key, product, v, release.SecurityVersion)
}

// BundleSV is Bundle with security version sv.
func BundleSV(t testing.TB, key ed25519.PrivateKey, product, v string, sv int) []byte {
	t.Helper()
	dir := t.TempDir()
	files := map[string]any{}
	for name, content := range map[string]string{"vmlinuz": "kernel " + v, "initramfs.cpio.zst": "initramfs " + v} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256([]byte(content))
		files[name] = map[string]any{"size": len(content), "sha256": hex.EncodeToString(sum[:])}
	}
	m := map[string]any{"release": map[string]any{"product": product, "version": v, "source_date_epoch": 1795448802, "kernel": "6.1.0-test",
		"security_version": sv},
		"kernel": map[string]any{"release": "6.1.0-test"}, "files": files}
	b, _ := json.Marshal(m)
	if err := os.WriteFile(filepath.Join(dir, "manifest.json"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "b.aeu")
	if _, err := update.Build(dir, out, key); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}
