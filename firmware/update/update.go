// Package update holds signed firmware update bundles: made by the build, verified by the
// appliance before anything is installed.
//
// A bundle is one file, update-<version>.aeu: an uncompressed POSIX (ustar) tar archive,
// written deterministically (fixed member order, mode 0644, uid and gid 0, the release's
// source date as modification time, no PAX records), holding exactly these members in
// this order:
//
//	bundle.json          the Header: product, version, kernel, and the name, size and
//	                     SHA-256 of each of the three image files (indented JSON)
//	bundle.sig           base64 of the Ed25519 signature over the exact bytes of
//	                     bundle.json, and a newline
//	vmlinuz              the image's files, as firmware.Build wrote them
//	initramfs.cpio.zst
//	manifest.json
//
// The header comes first so that Verify can check the signature before it reads a byte
// of the image, and then check each file while it streams it to disk: a bundle is read
// once, from any io.Reader, and never held in memory.
//
// Versions are whatever the build was told (git describe output, a commit hash): this
// package does not order them. Whether a bundle is "newer" is the operator's call, made
// from Header.String.
package update

import (
	"fmt"
	"strings"
	"time"
)

// FileExt is the file name extension of an update bundle.
const FileExt = ".aeu"

// Format is the bundle format this package writes and reads.
const Format = 1

// Member names, in the order they appear in a bundle.
const (
	HeaderName    = "bundle.json"
	SignatureName = "bundle.sig"
	KernelName    = "vmlinuz"            // firmware.KernelFile
	InitramfsName = "initramfs.cpio.zst" // firmware.InitramfsFile
	ManifestName  = "manifest.json"      // firmware.ManifestFile
)

// imageFiles are the image files a bundle carries, in bundle order.
var imageFiles = [...]string{KernelName, InitramfsName, ManifestName}

// Size limits Verify enforces (and Build respects).
const (
	MaxHeaderSize    = 64 << 10 // bundle.json
	MaxSignatureSize = 1 << 10  // bundle.sig
	MaxBundleSize    = 64 << 20 // the whole bundle file, tar headers included
)

// File describes one image file in a bundle.
type File struct {
	Name   string `json:"name"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"` // lower-case hex
}

// Header is the content of bundle.json.
type Header struct {
	Format          int    `json:"format"` // Format
	Product         string `json:"product"`
	Version         string `json:"version"`
	SourceDateEpoch int64  `json:"source_date_epoch"` // commit time of the sources
	Kernel          string `json:"kernel"`            // uname -r of the bundled kernel
	Files           []File `json:"files"`             // vmlinuz, initramfs.cpio.zst, manifest.json
	KeyID           string `json:"key_id"`            // KeyID of the signing key
	// SecurityVersion is the image's release.SecurityVersion: an appliance refuses a
	// bundle below its own, or below its confirmed slot's, unless forced at the console.
	SecurityVersion int `json:"security_version"`
}

// FileName is the conventional name of the bundle of a version: update-<version>.aeu.
func FileName(version string) string { return "update-" + version + FileExt }

// String describes the bundle for an operator, e.g.
// "aeappliance v1.2 (kernel 6.1.0-40-amd64, sources of 2026-11-23T10:00:00Z)".
// The product is shortened to its name: release.Product is "aeappliance - certificate
// autoenrollment appliance", and the tagline says nothing that helps choose an update.
func (h Header) String() string {
	name, _, _ := strings.Cut(h.Product, " - ")
	return fmt.Sprintf("%s %s (kernel %s, sources of %s)", name, h.Version, h.Kernel,
		time.Unix(h.SourceDateEpoch, 0).UTC().Format(time.RFC3339))
}
