package daemon

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"

	"github.com/enrollment-appliance/aeappliance/appliance/release"
	"github.com/enrollment-appliance/aeappliance/enrollsvc/api"
	"github.com/enrollment-appliance/aeappliance/firmware/slots"
	"github.com/enrollment-appliance/aeappliance/firmware/update"
)

// firmwareAdmin installs signed update bundles into the appliance's slots for the API.
type firmwareAdmin struct {
	store   slots.Store
	keys    []ed25519.PublicKey
	running string
}

// NewFirmwareAdmin serves the firmware slots in dir to the API, accepting bundles signed by
// the keys in keysFile (PEM) for this product; cmdlineFile (/proc/cmdline) names the
// running slot.
func NewFirmwareAdmin(dir, keysFile, cmdlineFile string) (api.FirmwareAdmin, error) {
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
	return &firmwareAdmin{store: slots.Store{Dir: dir}, keys: keys, running: running}, nil
}

func (f *firmwareAdmin) FirmwareStatus(ctx context.Context) (api.FirmwareStatus, error) {
	st, err := f.store.Load()
	if err != nil {
		return api.FirmwareStatus{}, err
	}
	out := api.FirmwareStatus{Running: f.running, Active: st.Active, Pending: st.Pending, Last: st.Last}
	if out.Running == "" {
		out.Running = "factory"
	}
	for _, n := range slots.Names {
		info, err := f.store.Slot(n)
		if err != nil {
			return out, err
		}
		s := api.FirmwareSlot{Name: n}
		if info.Header != nil {
			s.Version, s.Kernel = info.Header.Version, info.Header.Kernel
		}
		out.Slots = append(out.Slots, s)
	}
	return out, nil
}

func (f *firmwareAdmin) InstallFirmware(ctx context.Context, r io.Reader) (api.FirmwareInstalled, error) {
	h, slot, err := f.store.Install(r, f.keys, release.Product, f.running)
	if err != nil {
		if isMaxBytes(err) {
			return api.FirmwareInstalled{}, err
		}
		return api.FirmwareInstalled{}, fmt.Errorf("%w: %v", api.ErrBadBundle, err)
	}
	return api.FirmwareInstalled{Version: h.Version, Slot: slot,
		Message: fmt.Sprintf("installed %s in slot %s: reboot to try it; if it does not come up, the next boot returns to the current firmware", h.Version, slot)}, nil
}

// isMaxBytes reports whether err came from the API's body limit.
func isMaxBytes(err error) bool {
	var mb *http.MaxBytesError
	return errors.As(err, &mb)
}
