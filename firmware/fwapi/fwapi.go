// Package fwapi serves the appliance's firmware slots (firmware/slots) to the enrollment
// service's local API: GET /api/v1/firmware shows them and PUT /api/v1/firmware installs a signed
// update bundle (firmware/update) in the free slot. cmd/enrollsvc wires it in on the appliance
// (serve --firmware-dir, --update-keys); the service itself knows only the api.FirmwareAdmin
// interface, so it never imports firmware/.
package fwapi

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"

	"github.com/enrollment-appliance/aeappliance/apiclient"
	"github.com/enrollment-appliance/aeappliance/appliance/release"
	"github.com/enrollment-appliance/aeappliance/enrollsvc/api"
	"github.com/enrollment-appliance/aeappliance/firmware/slots"
	"github.com/enrollment-appliance/aeappliance/firmware/update"
)

// Admin installs signed update bundles into the appliance's slots for the API.
type Admin struct {
	store   slots.Store
	keys    []ed25519.PublicKey
	running string
}

// New serves the firmware slots in dir to the API, accepting bundles signed by the keys in
// keysFile (PEM) for this product (release.Product); cmdlineFile (/proc/cmdline) names the
// running slot.
func New(dir, keysFile, cmdlineFile string) (*Admin, error) {
	b, err := os.ReadFile(keysFile)
	if err != nil {
		return nil, fmt.Errorf("the update signing keys: %w", err)
	}
	keys, err := update.ParsePublicKeys(b)
	if err != nil {
		return nil, fmt.Errorf("the update signing keys %s: %w", keysFile, err)
	}
	running := ""
	if b, err := os.ReadFile(cmdlineFile); err == nil {
		running = slots.RunningSlot(string(b))
	}
	return &Admin{store: slots.Store{Dir: dir}, keys: keys, running: running}, nil
}

// FirmwareStatus is the running slot, both slots and the last update.
func (f *Admin) FirmwareStatus(ctx context.Context) (apiclient.FirmwareStatus, error) {
	st, err := f.store.Load()
	if err != nil {
		return apiclient.FirmwareStatus{}, err
	}
	out := apiclient.FirmwareStatus{Running: f.running, Active: st.Active, Pending: st.Pending, Last: st.Last}
	if out.Running == "" {
		out.Running = "factory"
	}
	for _, n := range slots.Names {
		info, err := f.store.Slot(n)
		if err != nil {
			return out, err
		}
		s := apiclient.FirmwareSlot{Name: n}
		if info.Header != nil {
			s.Version, s.Kernel = info.Header.Version, info.Header.Kernel
		}
		out.Slots = append(out.Slots, s)
	}
	return out, nil
}

// InstallFirmware verifies the bundle r completely and installs it in the free slot, to be tried
// at the next boot; a bundle that fails verification is an api.ErrBadBundle and changes nothing.
func (f *Admin) InstallFirmware(ctx context.Context, r io.Reader) (apiclient.FirmwareInstalled, error) {
	h, slot, err := f.store.Install(r, f.keys, release.Product, f.running, release.SecurityVersion)
	if err != nil {
		if isMaxBytes(err) {
			return apiclient.FirmwareInstalled{}, err
		}
		return apiclient.FirmwareInstalled{}, fmt.Errorf("%w: %v", api.ErrBadBundle, err)
	}
	return apiclient.FirmwareInstalled{Version: h.Version, Slot: slot,
		Message: fmt.Sprintf("installed %s in slot %s: reboot to try it; if it does not come up, the next boot returns to the current firmware", h.Version, slot)}, nil
}

// Admin is what the API needs of the firmware slots.
var _ api.FirmwareAdmin = (*Admin)(nil)

// isMaxBytes reports whether err came from the API's body limit.
func isMaxBytes(err error) bool {
	var mb *http.MaxBytesError
	return errors.As(err, &mb)
}
