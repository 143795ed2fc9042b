// Package release describes an appliance image: the product, its version and the kernel
// it was built with. The image builder (firmware) writes it into the image at Path; the
// init payload reads it for the banner, `version` and `status`.
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
}

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
