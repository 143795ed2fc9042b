package fwapi

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/enrollment-appliance/aeappliance/appliance/release"
	"github.com/enrollment-appliance/aeappliance/enrollsvc/api"
	"github.com/enrollment-appliance/aeappliance/firmware/update"
	"github.com/enrollment-appliance/aeappliance/firmware/update/updatetest"
)

// bundleFor builds a signed update bundle of version v for product, and the file of its key.
func bundleFor(t *testing.T, product, v string) (bundle []byte, keysFile string) {
	t.Helper()
	pub, priv, err := update.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	keysFile = filepath.Join(t.TempDir(), "keys.pem")
	if err := os.WriteFile(keysFile, update.MarshalPublicKey(pub), 0o644); err != nil {
		t.Fatal(err)
	}
	return updatetest.Bundle(t, priv, product, v), keysFile
}

// TestInstallAndStatus: a bundle signed for this product goes to slot a and is pending; one for
// another product is an api.ErrBadBundle (422) and changes nothing; the API's body limit is
// passed through as it is (413).
func TestInstallAndStatus(t *testing.T) {
	ctx := context.Background()
	good, keys := bundleFor(t, release.Product, "v2")
	cmdline := filepath.Join(t.TempDir(), "cmdline")
	os.WriteFile(cmdline, []byte("console=ttyS0 quiet\n"), 0o644)
	a, err := New(filepath.Join(t.TempDir(), "firmware"), keys, cmdline)
	if err != nil {
		t.Fatal(err)
	}
	st, err := a.FirmwareStatus(ctx)
	if err != nil || st.Running != "factory" || len(st.Slots) != 2 || st.Slots[0].Version != "" || st.Pending != "" {
		t.Fatalf("FirmwareStatus before any update = %+v, %v; want factory and two empty slots", st, err)
	}

	other, _ := bundleFor(t, "someone else - another product", "v3")
	if _, err := a.InstallFirmware(ctx, bytes.NewReader(other)); !errors.Is(err, api.ErrBadBundle) {
		t.Errorf("InstallFirmware(a bundle for another product, other key) = %v, want api.ErrBadBundle", err)
	}
	if st, _ := a.FirmwareStatus(ctx); st.Pending != "" || st.Slots[0].Version != "" {
		t.Errorf("a refused bundle changed the slots: %+v", st)
	}

	rec := httptest.NewRecorder()
	limited := http.MaxBytesReader(rec, io.NopCloser(bytes.NewReader(good)), 100)
	var mb *http.MaxBytesError
	if _, err := a.InstallFirmware(ctx, limited); !errors.As(err, &mb) || errors.Is(err, api.ErrBadBundle) {
		t.Errorf("InstallFirmware over the body limit = %v, want the *http.MaxBytesError alone", err)
	}

	res, err := a.InstallFirmware(ctx, bytes.NewReader(good))
	if err != nil || res.Version != "v2" || res.Slot != "a" || !strings.Contains(res.Message, "reboot to try it") {
		t.Fatalf("InstallFirmware = %+v, %v; want v2 in slot a", res, err)
	}
	st, err = a.FirmwareStatus(ctx)
	if err != nil || st.Pending != "a" || st.Slots[0].Name != "a" || st.Slots[0].Version != "v2" || st.Slots[0].Kernel != "6.1.0-test" {
		t.Errorf("FirmwareStatus after the install = %+v, %v; want v2 pending in slot a", st, err)
	}
}

// TestDowngradeRefused: a bundle signed by a trusted key but below the running build's
// security version is refused (api.ErrBadBundle, 422) with a message naming the console's
// update force, and installs nothing.
func TestDowngradeRefused(t *testing.T) {
	ctx := context.Background()
	pub, priv, err := update.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	keys := filepath.Join(t.TempDir(), "keys.pem")
	os.WriteFile(keys, update.MarshalPublicKey(pub), 0o644)
	a, err := New(filepath.Join(t.TempDir(), "firmware"), keys, "/nonexistent")
	if err != nil {
		t.Fatal(err)
	}
	old := updatetest.BundleSV(t, priv, release.Product, "v0.9", release.SecurityVersion-1)
	if _, err := a.InstallFirmware(ctx, bytes.NewReader(old)); !errors.Is(err, api.ErrBadBundle) ||
		!strings.Contains(err.Error(), "update force") || !strings.Contains(err.Error(), "security version") {
		t.Errorf("InstallFirmware(a lower security version) = %v, want api.ErrBadBundle naming update force", err)
	}
	if st, _ := a.FirmwareStatus(ctx); st.Pending != "" || st.Slots[0].Version != "" || st.Slots[1].Version != "" {
		t.Errorf("a refused downgrade changed the slots: %+v", st)
	}
}

func TestNewRefusesBadKeys(t *testing.T) {
	bad := filepath.Join(t.TempDir(), "keys.pem")
	os.WriteFile(bad, []byte("not PEM"), 0o644)
	if _, err := New(t.TempDir(), bad, "/nonexistent"); err == nil {
		t.Error("New with a keys file holding no key succeeded")
	}
	if _, err := New(t.TempDir(), filepath.Join(t.TempDir(), "missing.pem"), "/nonexistent"); err == nil {
		t.Error("New without the keys file succeeded")
	}
}
