package store

import (
	"cmp"
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"time"

	"github.com/enrollment-appliance/aeappliance/config"
)

// Files of a certificate directory.
const (
	certFile  = "cert.pem"
	chainFile = "chain.pem"
	keyFile   = "key.pem"
)

// archiveTime is the layout of the time in the names of archive entries.
const archiveTime = "20060102T150405Z"

// archiveEntry matches the name of an archive entry: serial, time, and a number if the first
// name was taken.
var archiveEntry = regexp.MustCompile(`^-?[0-9a-f]+-([0-9]{8}T[0-9]{6}Z)(?:-([2-9]|[1-9][0-9]{1,8}))?$`)

// Cert is a certificate of the store.
type Cert struct {
	Template    string // the template name its directory stands for
	Certificate *x509.Certificate
	Chain       []*x509.Certificate // the issuing CA and up; may be empty
	Key         crypto.Signer       // nil when key.pem is missing: the certificate lacks its key
	Path        string              // the directory holding cert.pem
}

// Current returns the current certificate of every template, sorted by template name. If any of
// them cannot be read, it fails with an error wrapping ErrCorrupt that names the file.
func (s *Store) Current() (certs []Cert, err error) {
	defer wrap(&err, "reading the current certificates")
	if err := s.begin(); err != nil {
		return nil, err
	}
	defer s.mu.Unlock()
	dirs, err := templateDirs(s.dir)
	if err != nil {
		return nil, err
	}
	for _, d := range dirs {
		c, err := readCertDir(d.path, d.name)
		if err != nil {
			return nil, err
		}
		if c != nil {
			certs = append(certs, *c)
		}
	}
	return certs, nil
}

// Archived returns the archived certificates, sorted by template name and the newest first for
// each template. Like Current, it fails if any of them cannot be read.
func (s *Store) Archived() (certs []Cert, err error) {
	defer wrap(&err, "reading the archive")
	if err := s.begin(); err != nil {
		return nil, err
	}
	defer s.mu.Unlock()
	dirs, err := templateDirs(filepath.Join(s.dir, archiveDir))
	if err != nil {
		return nil, err
	}
	for _, d := range dirs {
		entries, err := os.ReadDir(d.path)
		if err != nil {
			return nil, err
		}
		type entry struct {
			name string
			at   time.Time
			seq  int
		}
		var list []entry
		for _, e := range entries {
			m := archiveEntry.FindStringSubmatch(e.Name())
			if !e.IsDir() || m == nil {
				continue
			}
			at, err := time.Parse(archiveTime, m[1])
			if err != nil {
				continue
			}
			seq, _ := strconv.Atoi(m[2]) // 0 without a number
			list = append(list, entry{e.Name(), at, seq})
		}
		slices.SortFunc(list, func(a, b entry) int {
			return cmp.Or(b.at.Compare(a.at), cmp.Compare(b.seq, a.seq), cmp.Compare(b.name, a.name))
		})
		for _, e := range list {
			c, err := readCertDir(filepath.Join(d.path, e.name), d.name)
			if err != nil {
				return nil, err
			}
			if c != nil {
				certs = append(certs, *c)
			}
		}
	}
	return certs, nil
}

// Install makes cert, with its chain and key, the current certificate of template. The key must
// be the certificate's and an *rsa.PrivateKey, *ecdsa.PrivateKey or ed25519.PrivateKey. The
// certificate it replaces, if any, is moved to the archive and returned with its new Path.
// Install is atomic: if it fails, the store is as it was.
func (s *Store) Install(template string, cert *x509.Certificate, chain []*x509.Certificate, key crypto.Signer) (replaced *Cert, err error) {
	defer wrap(&err, "installing %q", template)
	if err := s.begin(); err != nil {
		return nil, err
	}
	defer s.mu.Unlock()
	enc, err := encodeName(template)
	if err != nil {
		return nil, err
	}
	for i, c := range append([]*x509.Certificate{cert}, chain...) {
		if c == nil || len(c.Raw) == 0 {
			return nil, fmt.Errorf("certificate %d of %d is nil or was not parsed from DER", i+1, len(chain)+1)
		}
	}
	if err := checkKeyType(key); err != nil {
		return nil, err
	}
	if err := checkKeyMatches(cert, key); err != nil {
		return nil, err
	}
	keyPEM, err := encodeKey(key)
	if err != nil {
		return nil, err
	}
	cur := filepath.Join(s.dir, enc)
	old, err := readCertDir(cur, template)
	if err != nil {
		return nil, fmt.Errorf("reading the certificate it replaces: %w", err)
	}
	staging, err := s.stage([]file{
		{certFile, encodeCerts(cert), publicMode},
		{chainFile, encodeCerts(chain...), publicMode},
		{keyFile, keyPEM, secretMode},
	})
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			os.RemoveAll(staging) // nothing there once it has been renamed into place
		}
	}()
	if old != nil {
		if old.Path, err = s.moveToArchive(old, enc); err != nil {
			return nil, err
		}
	}
	if err := s.place(staging, cur); err != nil {
		if old != nil {
			if berr := os.Rename(old.Path, cur); berr != nil {
				err = errors.Join(err, fmt.Errorf("moving the replaced certificate back from %s: %w", old.Path, berr))
			}
		}
		return nil, err
	}
	return old, config.SyncDir(s.dir)
}

// Archive moves the current certificate of template to the archive if its serial number is
// serial, and returns it with its new Path. If template has no current certificate or one with
// another serial, the error wraps ErrNotFound.
func (s *Store) Archive(template string, serial *big.Int) (archived *Cert, err error) {
	defer wrap(&err, "archiving %q serial %x", template, serial)
	if err := s.begin(); err != nil {
		return nil, err
	}
	defer s.mu.Unlock()
	c, enc, err := s.currentWithSerial(template, serial)
	if err != nil {
		return nil, err
	}
	if c.Path, err = s.moveToArchive(c, enc); err != nil {
		return nil, err
	}
	return c, config.SyncDir(s.dir)
}

// Remove deletes the current certificate of template and its key if its serial number is serial.
// If template has no current certificate or one with another serial, the error wraps
// ErrNotFound. The key file is deleted, not overwritten: filesystems do not promise erasure.
func (s *Store) Remove(template string, serial *big.Int) (err error) {
	defer wrap(&err, "removing %q serial %x", template, serial)
	if err := s.begin(); err != nil {
		return err
	}
	defer s.mu.Unlock()
	c, _, err := s.currentWithSerial(template, serial)
	if err != nil {
		return err
	}
	return s.discard(c.Path)
}

// Path returns the directory that holds, or would hold, the current certificate of template:
// DIR/<encoded template>. It returns "" for a name that is not a template name (empty or not
// UTF-8).
func (s *Store) Path(template string) string {
	enc, err := encodeName(template)
	if err != nil {
		return ""
	}
	return filepath.Join(s.dir, enc)
}

// currentWithSerial reads the current certificate of template, which must have serial.
func (s *Store) currentWithSerial(template string, serial *big.Int) (*Cert, string, error) {
	if serial == nil {
		return nil, "", errors.New("no serial number")
	}
	enc, err := encodeName(template)
	if err != nil {
		return nil, "", err
	}
	c, err := readCertDir(filepath.Join(s.dir, enc), template)
	switch {
	case err != nil:
		return nil, "", err
	case c == nil:
		return nil, "", fmt.Errorf("%w: no current certificate", ErrNotFound)
	case c.Certificate.SerialNumber.Cmp(serial) != 0:
		return nil, "", fmt.Errorf("%w: the current certificate has serial %x", ErrNotFound, c.Certificate.SerialNumber)
	}
	return c, enc, nil
}

// moveToArchive renames the directory of c into archive/<enc>/ and returns its new path. The
// caller syncs DIR.
func (s *Store) moveToArchive(c *Cert, enc string) (string, error) {
	dir := filepath.Join(s.dir, archiveDir, enc)
	if err := mkdirs(dir); err != nil {
		return "", err
	}
	base := c.Certificate.SerialNumber.Text(16) + "-" + s.now().UTC().Format(archiveTime)
	dst := filepath.Join(dir, base)
	for n := 2; ; n++ {
		if _, err := os.Lstat(dst); errors.Is(err, os.ErrNotExist) {
			break
		} else if err != nil {
			return "", err
		}
		dst = filepath.Join(dir, base+"-"+strconv.Itoa(n))
	}
	if err := os.Rename(c.Path, dst); err != nil {
		return "", err
	}
	if err := config.SyncDir(dir); err != nil {
		if berr := os.Rename(dst, c.Path); berr != nil {
			return "", errors.Join(err, fmt.Errorf("moving %s back from %s: %w", c.Path, dst, berr))
		}
		return "", err
	}
	return dst, nil
}

// named is a directory that stands for a template.
type named struct{ name, path string }

// templateDirs lists the directories of dir that stand for templates, sorted by template name. A
// missing dir has none.
func templateDirs(dir string) ([]named, error) {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	} else if err != nil {
		return nil, err
	}
	var dirs []named
	for _, e := range entries {
		if name, ok := decodeName(e.Name()); ok && e.IsDir() {
			dirs = append(dirs, named{name, filepath.Join(dir, e.Name())})
		}
	}
	slices.SortFunc(dirs, func(a, b named) int { return cmp.Compare(a.name, b.name) })
	return dirs, nil
}

// readCertDir reads the certificate directory dir. A missing or empty one holds nothing (nil,
// nil).
func readCertDir(dir, template string) (*Cert, error) {
	certPath := filepath.Join(dir, certFile)
	data, err := readFile(certPath, false)
	if errors.Is(err, os.ErrNotExist) {
		return nil, absent(dir, certPath)
	} else if err != nil {
		return nil, err
	}
	certs, err := parseCerts(data, 1)
	if err != nil {
		return nil, corrupt(certPath, err)
	}
	c := &Cert{Template: template, Certificate: certs[0], Path: dir}

	chainPath := filepath.Join(dir, chainFile)
	if data, err = readFile(chainPath, false); err == nil {
		if c.Chain, err = parseCerts(data, -1); err != nil {
			return nil, corrupt(chainPath, err)
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}

	keyPath := filepath.Join(dir, keyFile)
	if data, err = readFile(keyPath, true); errors.Is(err, os.ErrNotExist) {
		return c, nil
	} else if err != nil {
		return nil, err
	}
	if c.Key, err = parseKey(data); err != nil {
		return nil, corrupt(keyPath, err)
	}
	if err := checkKeyMatches(c.Certificate, c.Key); err != nil {
		return nil, corrupt(keyPath, err)
	}
	return c, nil
}

// absent is what it means that path, the main file of dir, is missing: nothing if dir is missing
// or empty, a corrupt store if dir holds other files.
func absent(dir, path string) error {
	entries, err := os.ReadDir(dir)
	switch {
	case errors.Is(err, os.ErrNotExist) || err == nil && len(entries) == 0:
		return nil
	case err != nil:
		return err
	}
	return corrupt(path, errors.New("missing, but its directory holds other files"))
}
