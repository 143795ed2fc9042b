// Package backup writes and restores a backup of a data directory: a consistent online snapshot
// of the store (SQLite's VACUUM INTO), the configuration and every file of the data directory
// (certificates, service keys and passwords, the SCEP profiles' settings, and, with SoftHSM, the
// token that holds the CA key), and a manifest that names the CA, the HSM and the firmware and
// holds each file's SHA-256. The archive (tar, gzip) is encrypted with age
// (https://age-encryption.org/v1) to a passphrase (scrypt) or to age X25519 recipients.
//
// A backup of an appliance whose CA key is in a hardware HSM holds no key: the manifest names it
// by URI, and a restore needs the same HSM. With SoftHSM the token's files are in the backup:
// whoever holds the backup and its passphrase (and the token's PIN, which the backup holds too)
// holds the CA key.
//
// Restore reads and checks everything before it writes anything where it was asked to: the age
// stream is authenticated chunk by chunk, so a wrong passphrase or a changed byte stops it; the
// files are extracted into a temporary directory beside the target, checked against the manifest,
// and only then renamed into place.
package backup

import (
	"archive/tar"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"filippo.io/age"
	"golang.org/x/sys/unix"

	"github.com/enrollment-appliance/aeappliance/config"
)

// Format is the version of the archive's layout this code writes and reads.
const Format = 1

// ManifestName is the archive's last entry.
const ManifestName = "manifest.json"

// dataPrefix holds the data directory's files in the archive.
const dataPrefix = "data/"

// MinPassphrase is the shortest passphrase a backup is encrypted to.
const MinPassphrase = 12

// Manifest describes a backup.
type Manifest struct {
	Format   int       `json:"format"`
	Created  time.Time `json:"created"`
	Version  string    `json:"version"`  // the service's
	Instance string    `json:"instance"` // the instance that made it
	CA       struct {
		Subject string `json:"subject"`
		SHA256  string `json:"sha256"` // of the CA certificate (DER)
		KeyURI  string `json:"key_uri"`
	} `json:"ca"`
	HSM struct {
		Module string `json:"module"`
		// TokenIncluded: the SoftHSM token (and so the CA key, PIN-protected) is in the backup.
		TokenIncluded bool `json:"token_included"`
	} `json:"hsm"`
	Store    StoreSummary    `json:"store"`
	Firmware json.RawMessage `json:"firmware,omitempty"` // the appliance's slots, as the API reports them
	Files    []File          `json:"files"`
}

// StoreSummary is what the snapshot holds, counted in the snapshot itself.
type StoreSummary struct {
	File         string `json:"file"` // its path in the data directory
	From         string `json:"from"` // "sqlite", or "postgres": the shared store, snapshotted into File
	Certificates int64  `json:"certificates"`
	Revoked      int64  `json:"revoked"`
	Pending      int64  `json:"pending"`
	Events       int64  `json:"events"`
	LastSeq      int64  `json:"last_event_seq"`
	CRLNumber    int64  `json:"crl_number"`
}

// File is one file of the data directory.
type File struct {
	Path   string      `json:"path"` // slash-separated, relative to the data directory
	Mode   fs.FileMode `json:"mode"`
	Size   int64       `json:"size"`
	SHA256 string      `json:"sha256"`
}

// Encryption says whom a backup is encrypted to: a passphrase, or age recipients
// ("age1..."), or both.
type Encryption struct {
	Passphrase string
	Recipients []string
}

func (e Encryption) recipients() ([]age.Recipient, error) {
	var rs []age.Recipient
	if e.Passphrase != "" {
		if len(e.Passphrase) < MinPassphrase {
			return nil, fmt.Errorf("backup: a passphrase needs at least %d characters", MinPassphrase)
		}
		r, err := age.NewScryptRecipient(e.Passphrase)
		if err != nil {
			return nil, err
		}
		rs = append(rs, r)
	}
	for _, s := range e.Recipients {
		r, err := age.ParseX25519Recipient(s)
		if err != nil {
			return nil, fmt.Errorf("backup: recipient %q: %w", s, err)
		}
		rs = append(rs, r)
	}
	if len(rs) == 0 {
		return nil, errors.New("backup: a passphrase or an age recipient is required")
	}
	if e.Passphrase != "" && len(rs) > 1 {
		return nil, errors.New("backup: age encrypts to a passphrase alone, or to recipients")
	}
	return rs, nil
}

// Check refuses an encryption that cannot be used, before anything is written.
func (e Encryption) Check() error {
	_, err := e.recipients()
	return err
}

// Skip reports whether a data directory file stays out of backups: what the service writes
// while it runs (addresses, the confinement line), the store's live files (the snapshot stands
// for them), and temporary files.
type Skip func(rel string) bool

// Writer writes one backup.
type Writer struct {
	age io.WriteCloser
	gz  *gzip.Writer
	tw  *tar.Writer
	m   *Manifest
}

// NewWriter starts a backup to w for manifest m (Files is filled as files are added).
func NewWriter(w io.Writer, enc Encryption, m *Manifest) (*Writer, error) {
	rs, err := enc.recipients()
	if err != nil {
		return nil, err
	}
	aw, err := age.Encrypt(w, rs...)
	if err != nil {
		return nil, fmt.Errorf("backup: %w", err)
	}
	gz, _ := gzip.NewWriterLevel(aw, gzip.BestSpeed)
	m.Format = Format
	return &Writer{age: aw, gz: gz, tw: tar.NewWriter(gz), m: m}, nil
}

// AddFile adds the file at src as rel (slash-separated, relative to the data directory).
func (w *Writer) AddFile(rel, src string) error {
	f, err := os.Open(src)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	if !st.Mode().IsRegular() {
		return fmt.Errorf("backup: %s is not a regular file", rel)
	}
	hdr := &tar.Header{Name: dataPrefix + rel, Mode: int64(st.Mode().Perm()), Size: st.Size(), ModTime: st.ModTime().UTC().Truncate(time.Second),
		Typeflag: tar.TypeReg, Format: tar.FormatPAX}
	if err := w.tw.WriteHeader(hdr); err != nil {
		return err
	}
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(w.tw, h), f)
	if err != nil {
		return fmt.Errorf("backup: %s: %w", rel, err)
	}
	if n != st.Size() {
		return fmt.Errorf("backup: %s changed size while it was read", rel)
	}
	w.m.Files = append(w.m.Files, File{Path: rel, Mode: st.Mode().Perm(), Size: n, SHA256: hex.EncodeToString(h.Sum(nil))})
	return nil
}

// AddDir adds every regular file under the data directory dir that skip does not exclude.
// Symbolic links and other special files are refused: a data directory has none.
func (w *Writer) AddDir(dir string, skip Skip) error {
	return filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		if rel == "." {
			return nil
		}
		if skip != nil && skip(rel) {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		switch {
		case d.IsDir():
			return nil
		case d.Type().IsRegular():
			return w.AddFile(rel, p)
		}
		return fmt.Errorf("backup: %s is not a regular file or directory", rel)
	})
}

// Close writes the manifest and finishes the encryption. The backup is complete only when
// Close returns nil.
func (w *Writer) Close() error {
	b, err := json.MarshalIndent(w.m, "", "  ")
	if err != nil {
		return err
	}
	if err := w.tw.WriteHeader(&tar.Header{Name: ManifestName, Mode: 0o600, Size: int64(len(b)), ModTime: w.m.Created.UTC().Truncate(time.Second),
		Typeflag: tar.TypeReg, Format: tar.FormatPAX}); err != nil {
		return err
	}
	if _, err := w.tw.Write(b); err != nil {
		return err
	}
	if err := w.tw.Close(); err != nil {
		return err
	}
	if err := w.gz.Close(); err != nil {
		return err
	}
	return w.age.Close()
}

// Identities are what a backup is decrypted with.
func identities(passphrase string, identityFile []byte) ([]age.Identity, error) {
	var ids []age.Identity
	if passphrase != "" {
		id, err := age.NewScryptIdentity(passphrase)
		if err != nil {
			return nil, err
		}
		ids = append(ids, id)
	}
	if len(identityFile) > 0 {
		more, err := age.ParseIdentities(strings.NewReader(string(identityFile)))
		if err != nil {
			return nil, fmt.Errorf("backup: identity file: %w", err)
		}
		ids = append(ids, more...)
	}
	if len(ids) == 0 {
		return nil, errors.New("backup: a passphrase or an identity file is required")
	}
	return ids, nil
}

// Limits of what Extract accepts.
const (
	maxEntries  = 100000
	maxManifest = 64 << 20
)

// Extract decrypts the backup r and writes its data directory into dst, which must not exist,
// through a temporary directory beside it that is renamed into place only after every file
// matched the manifest and prepare (which may be nil) made the directory ready in place. It
// returns the manifest. On any error nothing is left at dst.
func Extract(r io.Reader, passphrase string, identityFile []byte, dst string, prepare func(dir string, m *Manifest) error) (*Manifest, error) {
	ids, err := identities(passphrase, identityFile)
	if err != nil {
		return nil, err
	}
	if _, err := os.Lstat(dst); err == nil {
		return nil, fmt.Errorf("backup: %s exists: restore into a new directory", dst)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	ar, err := age.Decrypt(r, ids...)
	if err != nil {
		return nil, fmt.Errorf("backup: cannot decrypt (wrong passphrase or identity, or not a backup): %w", err)
	}
	parent := filepath.Dir(dst)
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return nil, err
	}
	tmp, err := os.MkdirTemp(parent, "."+filepath.Base(dst)+".restore-")
	if err != nil {
		return nil, err
	}
	done := false
	defer func() {
		if !done {
			os.RemoveAll(tmp)
		}
	}()
	m, err := extractArchive(ar, tmp)
	if err != nil {
		return nil, err
	}
	if err := os.Chmod(tmp, 0o700); err != nil {
		return nil, err
	}
	if prepare != nil {
		if err := prepare(tmp, m); err != nil {
			return nil, err
		}
	}
	// Everything on disk before the directory appears at dst, and its name after: one syncfs(2)
	// for the files (rather than an fsync each), then the parent directory.
	if err := syncFS(tmp); err != nil {
		return nil, err
	}
	if err := os.Rename(tmp, dst); err != nil {
		return nil, err
	}
	done = true
	if err := config.SyncDir(parent); err != nil {
		return m, fmt.Errorf("backup: %s: %w", parent, err)
	}
	return m, nil
}

// syncFS writes the file system holding dir to disk (syncfs(2)).
func syncFS(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := unix.Syncfs(int(f.Fd())); err != nil {
		return fmt.Errorf("backup: syncfs: %w", err)
	}
	return nil
}

// extractArchive reads the decrypted archive (gzip, tar) from r into the directory tmp and
// checks every file against the manifest, which it returns. It reads r to its end: the age
// stream's last chunk's authentication says nothing was cut.
func extractArchive(r io.Reader, tmp string) (*Manifest, error) {
	gz, err := gzip.NewReader(r)
	if err != nil {
		return nil, fmt.Errorf("backup: %w", err)
	}
	tr := tar.NewReader(gz)
	got := map[string]File{}
	var m *Manifest
	for n := 0; ; n++ {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("backup: damaged or changed: %w", err)
		}
		if n > maxEntries || m != nil {
			return nil, errors.New("backup: entries after the manifest, or too many")
		}
		if hdr.Name == ManifestName {
			b, err := io.ReadAll(io.LimitReader(tr, maxManifest))
			if err != nil {
				return nil, fmt.Errorf("backup: damaged or changed: %w", err)
			}
			m = &Manifest{}
			if err := json.Unmarshal(b, m); err != nil {
				return nil, fmt.Errorf("backup: manifest: %w", err)
			}
			continue
		}
		rel, ok := strings.CutPrefix(hdr.Name, dataPrefix)
		if !ok || hdr.Typeflag != tar.TypeReg || !fs.ValidPath(rel) || rel == "." || path.Clean(rel) != rel {
			return nil, fmt.Errorf("backup: unexpected entry %q", hdr.Name)
		}
		if sparse(hdr) {
			// A few bytes that read as gigabytes of zeros: backups hold no sparse files.
			return nil, fmt.Errorf("backup: %s is a sparse file", hdr.Name)
		}
		if _, dup := got[rel]; dup {
			return nil, fmt.Errorf("backup: %s twice", rel)
		}
		f, err := extractFile(tmp, rel, fs.FileMode(hdr.Mode).Perm(), tr)
		if err != nil {
			return nil, err
		}
		got[rel] = f
	}
	// Read to the end of the age stream: its last chunk's authentication says nothing was cut.
	if _, err := io.Copy(io.Discard, r); err != nil {
		return nil, fmt.Errorf("backup: damaged or changed: %w", err)
	}
	if m == nil {
		return nil, errors.New("backup: no manifest: the backup is incomplete")
	}
	if m.Format != Format {
		return nil, fmt.Errorf("backup: format %d, this program reads %d", m.Format, Format)
	}
	if len(m.Files) != len(got) {
		return nil, fmt.Errorf("backup: the manifest lists %d files, the archive holds %d", len(m.Files), len(got))
	}
	for _, want := range m.Files {
		if g, ok := got[want.Path]; !ok || g.SHA256 != want.SHA256 || g.Size != want.Size {
			return nil, fmt.Errorf("backup: %s does not match the manifest", want.Path)
		}
	}
	return m, nil
}

// sparse reports whether hdr is a GNU sparse file in PAX form (GNU.sparse.* records), which
// archive/tar expands as it reads.
func sparse(hdr *tar.Header) bool {
	for k := range hdr.PAXRecords {
		if strings.HasPrefix(k, "GNU.sparse.") {
			return true
		}
	}
	return false
}

func extractFile(root, rel string, mode fs.FileMode, r io.Reader) (File, error) {
	p := filepath.Join(root, filepath.FromSlash(rel))
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		return File{}, err
	}
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode|0o600)
	if err != nil {
		return File{}, err
	}
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(f, h), r)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return File{}, fmt.Errorf("backup: %s: damaged or changed: %w", rel, err)
	}
	if err := os.Chmod(p, mode); err != nil {
		return File{}, err
	}
	return File{Path: rel, Mode: mode, Size: n, SHA256: hex.EncodeToString(h.Sum(nil))}, nil
}

// Paths lists the manifest's files, sorted.
func (m *Manifest) Paths() []string {
	var out []string
	for _, f := range m.Files {
		out = append(out, f.Path)
	}
	slices.Sort(out)
	return out
}
