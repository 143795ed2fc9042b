// Package tokenbundle carries a SoftHSM2 token from one appliance to another: the token's
// directory (its object files, whose private objects SoftHSM encrypts under a key derived from
// the user PIN) as a gzip-compressed tar archive, encrypted to a passphrase with age (scrypt
// recipient, https://age-encryption.org/v1) and ASCII-armored so that it can be carried over a
// serial console.
//
// A bundle is a copy of the CA key. It exists only because SoftHSM is a software token: an
// appliance whose CA key is in a hardware or network HSM never makes one (its key never leaves
// the HSM, and every instance reaches the same HSM). Opening a bundle needs both its passphrase
// and, to use the key, the token's user PIN.
package tokenbundle

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	"filippo.io/age"
	"filippo.io/age/armor"
)

// MinPassphrase is the shortest passphrase a bundle is sealed with.
const MinPassphrase = 12

// Limits of what Open accepts: a SoftHSM token of an appliance holds a handful of objects.
const (
	maxBundle  = 8 << 20  // armored bytes
	maxContent = 32 << 20 // bytes of files, uncompressed
	maxEntries = 4096
	maxDepth   = 2 // <token UUID>/<object file>
	// workFactor is the scrypt work factor (log2 N) a bundle is sealed with: 2^17 × 1 KiB =
	// 128 MiB of memory to try one passphrase, which an appliance with 1 GiB can spare.
	workFactor    = 17
	maxWorkFactor = 20
)

// ErrPassphrase says that the passphrase does not open the bundle.
var ErrPassphrase = errors.New("the passphrase does not open this token bundle")

// Seal archives the token directory dir (SoftHSM2's tokendir) and encrypts it to passphrase.
func Seal(dir, passphrase string) ([]byte, error) {
	if len(passphrase) < MinPassphrase {
		return nil, fmt.Errorf("the bundle's passphrase must have at least %d characters", MinPassphrase)
	}
	rcpt, err := age.NewScryptRecipient(passphrase)
	if err != nil {
		return nil, err
	}
	rcpt.SetWorkFactor(workFactor)
	var out bytes.Buffer
	aw := armor.NewWriter(&out)
	enc, err := age.Encrypt(aw, rcpt)
	if err != nil {
		return nil, err
	}
	gz := gzip.NewWriter(enc)
	tw := tar.NewWriter(gz)
	n := 0
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == dir {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		if n++; n > maxEntries {
			return fmt.Errorf("%s holds more than %d files", dir, maxEntries)
		}
		hdr := &tar.Header{Name: filepath.ToSlash(rel), ModTime: time.Unix(0, 0), Format: tar.FormatPAX}
		switch {
		case d.IsDir():
			hdr.Typeflag, hdr.Name, hdr.Mode = tar.TypeDir, hdr.Name+"/", 0o700
			return tw.WriteHeader(hdr)
		case d.Type().IsRegular():
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			hdr.Typeflag, hdr.Mode, hdr.Size = tar.TypeReg, 0o600, int64(len(b))
			if err := tw.WriteHeader(hdr); err != nil {
				return err
			}
			_, err = tw.Write(b)
			return err
		}
		return fmt.Errorf("%s: not a regular file or directory", p)
	})
	if err != nil {
		return nil, fmt.Errorf("archiving the token: %w", err)
	}
	if n == 0 {
		return nil, fmt.Errorf("%s holds no token", dir)
	}
	if err := errors.Join(tw.Close(), gz.Close(), enc.Close(), aw.Close()); err != nil {
		return nil, err
	}
	return out.Bytes(), nil
}

// Open decrypts bundle with passphrase and writes the token directory it carries into dst, which
// must not exist yet (its parent must). Nothing is left in dst's place when it fails.
func Open(bundle []byte, passphrase, dst string) error {
	if len(bundle) > maxBundle {
		return fmt.Errorf("the token bundle is larger than %d bytes", maxBundle)
	}
	if !bytes.Contains(bundle, []byte(armor.Header)) {
		return errors.New("this is not a token bundle: it lacks the line " + armor.Header)
	}
	bundle = bundle[bytes.Index(bundle, []byte(armor.Header)):]
	id, err := age.NewScryptIdentity(passphrase)
	if err != nil {
		return err
	}
	id.SetMaxWorkFactor(maxWorkFactor)
	r, err := age.Decrypt(armor.NewReader(bytes.NewReader(bundle)), id)
	if err != nil {
		var nm *age.NoIdentityMatchError
		if errors.As(err, &nm) {
			return ErrPassphrase
		}
		return fmt.Errorf("the token bundle: %w", err)
	}
	return Extract(r, dst)
}

// Extract writes the gzip-compressed tar archive read from r into the new directory dst. Only
// directories and regular files at most two levels deep, with local names, are accepted; an
// archive that breaks a rule or a limit leaves nothing behind.
func Extract(r io.Reader, dst string) (err error) {
	if err := os.Mkdir(dst, 0o700); err != nil {
		return err
	}
	defer func() {
		if err != nil {
			os.RemoveAll(dst)
		}
	}()
	gz, err := gzip.NewReader(r)
	if err != nil {
		return fmt.Errorf("the token bundle's archive: %w", err)
	}
	tr := tar.NewReader(gz)
	var total int64
	files := 0
	for n := 0; ; n++ {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("the token bundle's archive: %w", err)
		}
		if n >= maxEntries {
			return fmt.Errorf("the token bundle holds more than %d entries", maxEntries)
		}
		name := strings.TrimSuffix(hdr.Name, "/")
		if name == "" || !filepath.IsLocal(name) || path.Clean(name) != name || strings.Count(name, "/") >= maxDepth {
			return fmt.Errorf("the token bundle names %q, not a token file", hdr.Name)
		}
		to := filepath.Join(dst, filepath.FromSlash(name))
		switch hdr.Typeflag {
		case tar.TypeDir:
			if err := os.Mkdir(to, 0o700); err != nil {
				return fmt.Errorf("the token bundle: %w", err)
			}
		case tar.TypeReg:
			if total += hdr.Size; hdr.Size < 0 || total > maxContent {
				return fmt.Errorf("the token bundle's files exceed %d bytes", maxContent)
			}
			f, err := os.OpenFile(to, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
			if err != nil {
				return fmt.Errorf("the token bundle: %w", err)
			}
			_, cerr := io.Copy(f, io.LimitReader(tr, hdr.Size))
			if err := errors.Join(cerr, f.Close()); err != nil {
				return fmt.Errorf("the token bundle: %w", err)
			}
			files++
		default:
			return fmt.Errorf("the token bundle holds %q of type %q: only files and directories belong in a token", hdr.Name, hdr.Typeflag)
		}
	}
	if files == 0 {
		return errors.New("the token bundle holds no token files")
	}
	return nil
}
