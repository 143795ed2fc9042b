package store

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/enrollment-appliance/aeappliance/config"
)

var (
	// ErrLocked means another Store, in this process or another, has the directory open.
	ErrLocked = errors.New("locked by another process")
	// ErrCorrupt means a file of the store cannot be read as what it should be. The errors that
	// wrap it name the file.
	ErrCorrupt = errors.New("corrupt")
	// ErrNotFound means that what Archive, Remove or DropPending was asked to act on is not
	// there.
	ErrNotFound = errors.New("not found")
)

// Modes of what the store writes.
const (
	dirMode    = 0o700
	publicMode = 0o644 // certificates, chains, request.json
	secretMode = 0o600 // keys, state files

	maxFile = 1 << 20 // a larger file of the store is corrupt
)

// Store is an open certificate store; see the package comment for its layout.
type Store struct {
	dir string
	now func() time.Time // the clock that names archive entries
	// place renames a staging directory into place: rename, but tests make it fail.
	place func(from, to string) error

	mu   sync.Mutex
	lock *os.File // nil once closed
}

// Open opens the store in dir, making dir (mode 0700, parents 0755) if it does not exist, and
// locks it. It fails with an error wrapping ErrLocked if another Store has it open, and if dir
// exists but is not a directory. It removes the .staging-* entries a crash left behind.
func Open(dir string) (s *Store, err error) {
	defer wrap(&err, "opening %s", dir)
	fi, err := os.Stat(dir)
	switch {
	case errors.Is(err, os.ErrNotExist):
		if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
			return nil, err
		}
		if err := os.Mkdir(dir, dirMode); err != nil && !errors.Is(err, os.ErrExist) {
			return nil, err
		} else if err == nil {
			if err := os.Chmod(dir, dirMode); err != nil { // the umask may have taken bits away
				return nil, err
			}
		}
	case err != nil:
		return nil, err
	case !fi.IsDir():
		return nil, errors.New("not a directory")
	}
	lock, err := os.OpenFile(filepath.Join(dir, lockFile), os.O_RDWR|os.O_CREATE|syscall.O_CLOEXEC|syscall.O_NOFOLLOW, secretMode)
	if err != nil {
		return nil, err
	}
	if err := flock(lock); err != nil {
		lock.Close()
		return nil, err
	}
	s = &Store{dir: dir, now: time.Now, place: rename, lock: lock}
	if err := s.removeStaging(); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// flock takes the exclusive lock without waiting.
func flock(f *os.File) error {
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		switch {
		case err == nil:
			return nil
		case errors.Is(err, syscall.EINTR):
			continue
		case errors.Is(err, syscall.EWOULDBLOCK):
			return ErrLocked
		}
		return fmt.Errorf("locking %s: %w", f.Name(), err)
	}
}

// removeStaging deletes what an interrupted change left in DIR.
func (s *Store) removeStaging() error {
	entries, err := os.ReadDir(s.dir)
	if err != nil {
		return err
	}
	removed := false
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), stagingPrefix) {
			if err := os.RemoveAll(filepath.Join(s.dir, e.Name())); err != nil {
				return fmt.Errorf("removing a leftover of an interrupted change: %w", err)
			}
			removed = true
		}
	}
	if removed {
		return config.SyncDir(s.dir)
	}
	return nil
}

// Close releases the lock. The Store cannot be used afterwards; closing it again does nothing.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.lock == nil {
		return nil
	}
	err := s.lock.Close() // closing the last descriptor releases the flock
	s.lock = nil
	if err != nil {
		return fmt.Errorf("store: closing %s: %w", s.dir, err)
	}
	return nil
}

// Dir returns the directory of the store.
func (s *Store) Dir() string { return s.dir }

// begin locks s.mu for one operation; the caller unlocks it if begin returns nil.
func (s *Store) begin() error {
	s.mu.Lock()
	if s.lock == nil {
		s.mu.Unlock()
		return os.ErrClosed
	}
	return nil
}

// wrap prefixes a non-nil *err with "store: " and what was being done.
func wrap(err *error, format string, args ...any) {
	if *err != nil {
		*err = fmt.Errorf("store: %s: %w", fmt.Sprintf(format, args...), *err)
	}
}

// corrupt says that the file at path is not what it should be.
func corrupt(path string, err error) error {
	return fmt.Errorf("%s: %w: %w", path, ErrCorrupt, err)
}

// readFile reads a regular file of the store. A missing file is os.ErrNotExist; one that is not
// a regular file or is too large is corrupt. With secret set, a file that group or other may
// access is corrupt too.
func readFile(path string, secret bool) ([]byte, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_CLOEXEC|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, corrupt(path, fmt.Errorf("not a regular file (%s)", fi.Mode().Type()))
	}
	if secret && fi.Mode().Perm()&0o077 != 0 {
		return nil, corrupt(path, fmt.Errorf("a private key with mode %04o: group or other may access it, want 0600", fi.Mode().Perm()))
	}
	data, err := io.ReadAll(io.LimitReader(f, maxFile+1))
	if err != nil {
		return nil, err
	}
	if len(data) > maxFile {
		return nil, corrupt(path, fmt.Errorf("larger than %d bytes", maxFile))
	}
	return data, nil
}

// file is one file to write.
type file struct {
	name string
	data []byte
	mode os.FileMode
}

// writeFile creates path, which must not exist, with exactly mode, and syncs it.
func writeFile(path string, data []byte, mode os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_CLOEXEC|syscall.O_NOFOLLOW, mode)
	if err != nil {
		return err
	}
	err = f.Chmod(mode) // the umask may have taken bits away
	if err == nil {
		_, err = f.Write(data)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// stage writes files into a new DIR/.staging-* directory and syncs it. The caller renames the
// directory into place, or removes it; stage removes it itself if it fails.
func (s *Store) stage(files []file) (string, error) {
	dir, err := os.MkdirTemp(s.dir, stagingPrefix)
	if err != nil {
		return "", err
	}
	for _, f := range files {
		if err = writeFile(filepath.Join(dir, f.name), f.data, f.mode); err != nil {
			break
		}
	}
	if err == nil {
		err = config.SyncDir(dir)
	}
	if err != nil {
		os.RemoveAll(dir)
		return "", err
	}
	return dir, nil
}

// discard renames dir away into DIR/.staging-* and then deletes it, so that a crash leaves either
// all of it or something Open removes.
func (s *Store) discard(dir string) error {
	tmp, err := os.MkdirTemp(s.dir, stagingPrefix)
	if err != nil {
		return err
	}
	gone := filepath.Join(tmp, "gone")
	if err := os.Rename(dir, gone); err != nil {
		os.Remove(tmp)
		return err
	}
	if err := config.SyncDir(filepath.Dir(dir)); err != nil {
		return err // tmp stays for Open to remove: dir is already out of place
	}
	return os.RemoveAll(tmp)
}

// rename is os.Rename without its refusal to replace a directory: rename(2) replaces an empty
// one, which readCertDir and readPendingDir take for nothing.
func rename(from, to string) error {
	if err := syscall.Rename(from, to); err != nil {
		return &os.LinkError{Op: "rename", Old: from, New: to, Err: err}
	}
	return nil
}

// mkdirs makes dir (below DIR) and the missing directories above it, mode 0700, and syncs the
// parents of those it made.
func mkdirs(dir string) error {
	if _, err := os.Stat(dir); err == nil {
		return nil
	}
	parent := filepath.Dir(dir)
	if err := mkdirs(parent); err != nil {
		return err
	}
	if err := os.Mkdir(dir, dirMode); err != nil && !errors.Is(err, os.ErrExist) {
		return err
	}
	return config.SyncDir(parent)
}
