package store

import (
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/enrollment-appliance/aeappliance/config"
)

// checkStateName accepts the names of state files: plain file names ending in ".json" that do not
// start with '.'.
func checkStateName(name string) error {
	if !strings.HasSuffix(name, jsonSuffix) || strings.HasPrefix(name, ".") || strings.ContainsAny(name, "/\x00") {
		return fmt.Errorf("%q is not a state file name: want a file name ending in %q, without '/' and not starting with '.'", name, jsonSuffix)
	}
	return nil
}

// ReadJSON reads the state file DIR/name into v with encoding/json. name is a plain file name
// ending in ".json" that does not start with '.'. A missing file is not an error: found is false.
// A file that does not decode into v is ErrCorrupt.
func (s *Store) ReadJSON(name string, v any) (found bool, err error) {
	defer wrap(&err, "reading state %q", name)
	if err := checkStateName(name); err != nil {
		return false, err
	}
	if err := s.begin(); err != nil {
		return false, err
	}
	defer s.mu.Unlock()
	path := filepath.Join(s.dir, name)
	data, err := readFile(path, false)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	} else if err != nil {
		return false, err
	}
	if err := json.Unmarshal(data, v); err != nil {
		var bad *json.InvalidUnmarshalError
		if errors.As(err, &bad) {
			return false, err // the caller's mistake, not the file's
		}
		return false, corrupt(path, err)
	}
	return true, nil
}

// WriteJSON replaces the state file DIR/name (see ReadJSON) with v in JSON, atomically, with mode
// 0600.
func (s *Store) WriteJSON(name string, v any) (err error) {
	defer wrap(&err, "writing state %q", name)
	if err := checkStateName(name); err != nil {
		return err
	}
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	if err := s.begin(); err != nil {
		return err
	}
	defer s.mu.Unlock()
	tmp := filepath.Join(s.dir, stagingPrefix+rand.Text()+jsonSuffix)
	if err := writeFile(tmp, append(data, '\n'), secretMode); err != nil {
		os.Remove(tmp)
		return err
	}
	if err := os.Rename(tmp, filepath.Join(s.dir, name)); err != nil {
		os.Remove(tmp)
		return err
	}
	return config.SyncDir(s.dir)
}
