// Package release describes an appliance image: the product, its version and the kernel
// it was built with. The image builder (firmware) writes it into the image at Path; the
// init payload reads it for the banner, `version` and `status`. The builder also writes
// HSMPath, naming the PKCS#11 module the image bundles, and ShellPath exists only in
// debug images.
package release

import (
	"encoding/json"
	"fmt"
	"os"
	"time"
)

// Path is where the release file lives in the image.
const Path = "/etc/appliance/release.json"

// Product is the product name shown on the console.
const Product = "aeappliance - certificate autoenrollment appliance"

// Release is the content of the release file.
type Release struct {
	Product         string `json:"product"`
	Version         string `json:"version"`
	SourceDateEpoch int64  `json:"source_date_epoch"` // commit time of the sources: the build date
	Kernel          string `json:"kernel"`            // uname -r of the bundled kernel
	Debug           bool   `json:"debug,omitempty"`   // a debug build (not for production)
	// SecurityVersion is the image's SecurityVersion: no update bundle below it installs
	// or boots without an administrator forcing it at the console.
	SecurityVersion int `json:"security_version"`
}

// SecurityVersion is the security version of the sources: raised by one with every release
// that fixes a vulnerability, so that no firmware still carrying it can be installed over
// (or booted by) one without it, unless an administrator forces it at the console.
const SecurityVersion = 1

// BuildDate is the source date as a time.
func (r Release) BuildDate() time.Time { return time.Unix(r.SourceDateEpoch, 0).UTC() }

// Marshal encodes r as the release file's bytes (stable: indented, one trailing newline).
func (r Release) Marshal() []byte {
	b, _ := json.MarshalIndent(r, "", "  ") // a struct of strings and ints cannot fail
	return append(b, '\n')
}

// Read reads the release file at path.
func Read(path string) (Release, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Release{}, fmt.Errorf("release: %w", err)
	}
	var r Release
	if err := json.Unmarshal(b, &r); err != nil {
		return Release{}, fmt.Errorf("release %s: %w", path, err)
	}
	return r, nil
}

// ShellPath is the debug image's shell (u-root's gosh, built small: no line editor, so
// that it sends no terminal queries). Release images have no shell at all.
const ShellPath = "/bin/gosh"

// UpdateKeysPath holds the public keys (PEM, Ed25519) that the image's firmware updates
// must be signed by.
const UpdateKeysPath = "/etc/appliance/update-keys.pem"

// HSMPath is where the image says which PKCS#11 module it bundles.
const HSMPath = "/etc/appliance/hsm.json"

// HSM is the content of the HSM file: the PKCS#11 module the image was built with.
type HSM struct {
	Module  string `json:"module"`  // absolute path of the module in the image, e.g. /usr/lib/pkcs11/libsofthsm2.so
	SoftHSM bool   `json:"softhsm"` // the module is SoftHSM2 (tokens are files on the data disk, set up by the appliance)
}

// Marshal encodes h as the HSM file's bytes (stable: indented, one trailing newline).
func (h HSM) Marshal() []byte {
	b, _ := json.MarshalIndent(h, "", "  ") // a string and a bool cannot fail
	return append(b, '\n')
}

// ReadHSM reads the HSM file at path. A file without a module is an error.
func ReadHSM(path string) (HSM, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return HSM{}, fmt.Errorf("release: %w", err)
	}
	var h HSM
	if err := json.Unmarshal(b, &h); err != nil {
		return HSM{}, fmt.Errorf("release: %s: %w", path, err)
	}
	if h.Module == "" {
		return HSM{}, fmt.Errorf("release: %s names no PKCS#11 module", path)
	}
	return h, nil
}
