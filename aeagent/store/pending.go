package store

import (
	"crypto"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/enrollment-appliance/aeappliance/config"
)

// requestFile holds a PendingRequest in pending/<template>/.
const requestFile = "request.json"

// PendingRequest is a certificate request waiting for a CA manager's approval.
type PendingRequest struct {
	Template  string        `json:"template"`
	RequestID int64         `json:"request_id"` // the CA's request ID; > 0
	Submitted time.Time     `json:"submitted"`
	CESURL    string        `json:"ces_url"` // where to ask again (the ReferenceURI)
	Key       crypto.Signer `json:"-"`       // the request's private key, in key.pem
}

// Pending returns the pending requests, sorted by template name. If any of them cannot be read,
// it fails with an error wrapping ErrCorrupt that names the file.
func (s *Store) Pending() (reqs []PendingRequest, err error) {
	defer wrap(&err, "reading the pending requests")
	if err := s.begin(); err != nil {
		return nil, err
	}
	defer s.mu.Unlock()
	dirs, err := templateDirs(filepath.Join(s.dir, pendingDir))
	if err != nil {
		return nil, err
	}
	for _, d := range dirs {
		p, err := readPendingDir(d.path, d.name)
		if err != nil {
			return nil, err
		}
		if p != nil {
			reqs = append(reqs, *p)
		}
	}
	return reqs, nil
}

// AddPending records a pending request with its key. It refuses a template that has a pending
// request already. Like Install, it is atomic.
func (s *Store) AddPending(p PendingRequest) (err error) {
	defer wrap(&err, "adding pending request %d for %q", p.RequestID, p.Template)
	if err := s.begin(); err != nil {
		return err
	}
	defer s.mu.Unlock()
	enc, err := encodeName(p.Template)
	if err != nil {
		return err
	}
	if p.RequestID <= 0 {
		return errors.New("the request ID must be positive")
	}
	if err := checkKeyType(p.Key); err != nil {
		return err
	}
	keyPEM, err := encodeKey(p.Key)
	if err != nil {
		return err
	}
	req, err := json.MarshalIndent(p, "", "  ")
	if err != nil {
		return err
	}
	parent := filepath.Join(s.dir, pendingDir)
	dir := filepath.Join(parent, enc)
	old, err := readPendingDir(dir, p.Template)
	if err != nil {
		return err
	}
	if old != nil {
		return fmt.Errorf("the template has pending request %d already", old.RequestID)
	}
	if err := mkdirs(parent); err != nil {
		return err
	}
	staging, err := s.stage([]file{{requestFile, append(req, '\n'), publicMode}, {keyFile, keyPEM, secretMode}})
	if err != nil {
		return err
	}
	if err := s.place(staging, dir); err != nil {
		os.RemoveAll(staging)
		return err
	}
	return config.SyncDir(parent)
}

// DropPending deletes the pending request of template with requestID and its key. If template
// has no pending request or one with another ID, the error wraps ErrNotFound.
func (s *Store) DropPending(template string, requestID int64) (err error) {
	defer wrap(&err, "dropping pending request %d for %q", requestID, template)
	if err := s.begin(); err != nil {
		return err
	}
	defer s.mu.Unlock()
	enc, err := encodeName(template)
	if err != nil {
		return err
	}
	dir := filepath.Join(s.dir, pendingDir, enc)
	p, err := readPendingDir(dir, template)
	switch {
	case err != nil:
		return err
	case p == nil:
		return fmt.Errorf("%w: no pending request", ErrNotFound)
	case p.RequestID != requestID:
		return fmt.Errorf("%w: the pending request is %d", ErrNotFound, p.RequestID)
	}
	return s.discard(dir)
}

// readPendingDir reads pending/<template>/. A missing or empty one holds nothing (nil, nil).
func readPendingDir(dir, template string) (*PendingRequest, error) {
	reqPath := filepath.Join(dir, requestFile)
	data, err := readFile(reqPath, false)
	if errors.Is(err, os.ErrNotExist) {
		return nil, absent(dir, reqPath)
	} else if err != nil {
		return nil, err
	}
	var p PendingRequest
	switch err := json.Unmarshal(data, &p); {
	case err != nil:
		return nil, corrupt(reqPath, err)
	case p.Template != template:
		return nil, corrupt(reqPath, fmt.Errorf("a request for template %q in the directory of %q", p.Template, template))
	case p.RequestID <= 0:
		return nil, corrupt(reqPath, fmt.Errorf("request ID %d, want a positive one", p.RequestID))
	}
	keyPath := filepath.Join(dir, keyFile)
	data, err = readFile(keyPath, true)
	if errors.Is(err, os.ErrNotExist) {
		return nil, corrupt(keyPath, errors.New("missing: a pending request needs its key"))
	} else if err != nil {
		return nil, err
	}
	if p.Key, err = parseKey(data); err != nil {
		return nil, corrupt(keyPath, err)
	}
	return &p, nil
}
