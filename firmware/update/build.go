package update

import (
	"archive/tar"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

// imageManifest is the part of firmware.Manifest a bundle needs. It is a local copy, not
// an import of firmware: firmware will make bundles, and this package must not depend on
// it.
type imageManifest struct {
	Release struct {
		Product         string `json:"product"`
		Version         string `json:"version"`
		SourceDateEpoch int64  `json:"source_date_epoch"`
		Kernel          string `json:"kernel"`
		SecurityVersion int    `json:"security_version"`
	} `json:"release"`
	Kernel struct {
		Release string `json:"release"` // uname -r
	} `json:"kernel"`
	// Files are the sizes and digests the manifest records for vmlinuz and the initramfs:
	// Build checks them, so that a stale manifest next to new files is caught.
	Files map[string]struct {
		Size   int64  `json:"size"`
		SHA256 string `json:"sha256"`
	} `json:"files"`
}

// Build writes the bundle of the image in imageDir (vmlinuz, initramfs.cpio.zst and
// manifest.json, as firmware.Build writes them) to out, signed with key. Product, version,
// kernel release and source date come from the manifest. The bundle appears at out
// complete or not at all (a temporary file in the same directory, synced, then renamed).
// The same image and key give the same bytes.
func Build(imageDir, out string, key ed25519.PrivateKey) (Header, error) {
	if len(key) != ed25519.PrivateKeySize {
		return Header{}, fmt.Errorf("update: private key has %d bytes, want %d", len(key), ed25519.PrivateKeySize)
	}
	h, err := imageHeader(imageDir)
	if err != nil {
		return Header{}, err
	}
	h.KeyID = KeyID(key.Public().(ed25519.PublicKey))
	hb, err := json.MarshalIndent(h, "", "  ")
	if err != nil {
		return Header{}, fmt.Errorf("update: %w", err)
	}
	hb = append(hb, '\n')
	sig := []byte(base64.StdEncoding.EncodeToString(ed25519.Sign(key, hb)) + "\n")
	if len(hb) > MaxHeaderSize {
		return Header{}, fmt.Errorf("update: bundle.json would be %d bytes, more than %d", len(hb), MaxHeaderSize)
	}
	if err := writeBundle(out, h, hb, sig, imageDir); err != nil {
		return Header{}, err
	}
	return h, nil
}

// imageHeader describes the image in dir: the manifest's release and the size and digest
// of each file. The key ID is left for the caller.
func imageHeader(dir string) (Header, error) {
	mb, err := os.ReadFile(filepath.Join(dir, ManifestName))
	if err != nil {
		return Header{}, fmt.Errorf("update: %w", err)
	}
	var m imageManifest
	if err := json.Unmarshal(mb, &m); err != nil {
		return Header{}, fmt.Errorf("update: %s: %w", filepath.Join(dir, ManifestName), err)
	}
	r := m.Release
	kernel := m.Kernel.Release
	switch {
	case r.Product == "":
		return Header{}, fmt.Errorf("update: %s: no release.product", dir)
	case r.Version == "":
		return Header{}, fmt.Errorf("update: %s: no release.version", dir)
	case kernel == "":
		return Header{}, fmt.Errorf("update: %s: no kernel.release", dir)
	case r.Kernel != "" && r.Kernel != kernel:
		return Header{}, fmt.Errorf("update: %s: release.kernel %q and kernel.release %q differ", dir, r.Kernel, kernel)
	}
	h := Header{
		Format:          Format,
		Product:         r.Product,
		Version:         r.Version,
		SourceDateEpoch: r.SourceDateEpoch,
		Kernel:          kernel,
		SecurityVersion: r.SecurityVersion,
	}
	var total int64
	for _, name := range imageFiles {
		f, err := hashFile(filepath.Join(dir, name))
		if err != nil {
			return Header{}, err
		}
		if want, ok := m.Files[name]; ok && (want.Size != f.Size || want.SHA256 != f.SHA256) {
			return Header{}, fmt.Errorf("update: %s: %s is not the file its manifest describes (size %d, sha256 %s; manifest says %d, %s)",
				dir, name, f.Size, f.SHA256, want.Size, want.SHA256)
		}
		total += f.Size
		h.Files = append(h.Files, f)
	}
	if total > MaxBundleSize {
		return Header{}, fmt.Errorf("update: %s: the image files weigh %d bytes, more than a bundle may (%d)", dir, total, MaxBundleSize)
	}
	return h, nil
}

func hashFile(path string) (File, error) {
	f, err := os.Open(path)
	if err != nil {
		return File{}, fmt.Errorf("update: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return File{}, fmt.Errorf("update: %w", err)
	}
	if !st.Mode().IsRegular() {
		return File{}, fmt.Errorf("update: %s is not a regular file", path)
	}
	d := sha256.New()
	n, err := io.Copy(d, f)
	if err != nil {
		return File{}, fmt.Errorf("update: %s: %w", path, err)
	}
	return File{Name: filepath.Base(path), Size: n, SHA256: hex.EncodeToString(d.Sum(nil))}, nil
}

// modTime is the time every member carries: the source date, or the epoch when ustar
// cannot hold the source date (it takes 0 to 8^11-1 seconds).
func modTime(epoch int64) time.Time {
	if epoch < 0 || epoch >= 1<<33 {
		epoch = 0
	}
	return time.Unix(epoch, 0)
}

// writeBundle writes the tar archive to a temporary file next to out and renames it into
// place. Each image file is hashed again as it is copied: a file changed since imageHeader
// read it fails the build instead of making a bundle that no appliance would accept.
func writeBundle(out string, h Header, hb, sig []byte, imageDir string) (err error) {
	tmp, err := os.CreateTemp(filepath.Dir(out), "."+filepath.Base(out)+".*.tmp")
	if err != nil {
		return fmt.Errorf("update: %w", err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	tw := tar.NewWriter(tmp)
	mtime := modTime(h.SourceDateEpoch)
	member := func(name string, size int64) error {
		return tw.WriteHeader(&tar.Header{
			Typeflag: tar.TypeReg,
			Name:     name,
			Size:     size,
			Mode:     0o644,
			ModTime:  mtime,
			Format:   tar.FormatUSTAR, // fails rather than fall back to PAX records
		})
	}
	for _, m := range []struct {
		name string
		b    []byte
	}{{HeaderName, hb}, {SignatureName, sig}} {
		if err := member(m.name, int64(len(m.b))); err != nil {
			return fmt.Errorf("update: %s: %w", m.name, err)
		}
		if _, err := tw.Write(m.b); err != nil {
			return fmt.Errorf("update: %s: %w", out, err)
		}
	}
	for _, want := range h.Files {
		if err := member(want.Name, want.Size); err != nil {
			return fmt.Errorf("update: %s: %w", want.Name, err)
		}
		if err := copyFile(tw, filepath.Join(imageDir, want.Name), want); err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return fmt.Errorf("update: %s: %w", out, err)
	}
	st, err := tmp.Stat()
	if err != nil {
		return fmt.Errorf("update: %w", err)
	}
	if st.Size() > MaxBundleSize {
		return fmt.Errorf("update: the bundle would be %d bytes, more than %d", st.Size(), MaxBundleSize)
	}
	if err := tmp.Chmod(0o644); err != nil {
		return fmt.Errorf("update: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("update: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("update: %w", err)
	}
	if err := os.Rename(tmp.Name(), out); err != nil {
		return fmt.Errorf("update: %w", err)
	}
	return syncDir(filepath.Dir(out))
}

func copyFile(w io.Writer, path string, want File) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("update: %w", err)
	}
	defer f.Close()
	d := sha256.New()
	n, err := io.Copy(io.MultiWriter(w, d), io.LimitReader(f, want.Size))
	if err != nil {
		return fmt.Errorf("update: %s: %w", path, err)
	}
	var extra [1]byte
	if m, _ := f.Read(extra[:]); n != want.Size || m != 0 || hex.EncodeToString(d.Sum(nil)) != want.SHA256 {
		return fmt.Errorf("update: %s changed while the bundle was written", path)
	}
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("update: %w", err)
	}
	defer d.Close()
	// Some file systems cannot sync a directory (EINVAL); there is nothing more to do there.
	if err := d.Sync(); err != nil && !errors.Is(err, syscall.EINVAL) {
		return fmt.Errorf("update: sync %s: %w", dir, err)
	}
	return nil
}
