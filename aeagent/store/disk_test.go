package store

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

func TestFullDisk(t *testing.T) {
	if os.Geteuid() != 0 {
		skipOrFail(t, "mounting a tmpfs needs root")
	}
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size=64k"); err != nil {
		skipOrFail(t, "mounting a tmpfs: %v", err)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(dir, 0); err != nil {
			t.Errorf("unmounting %s: %v", dir, err)
		}
	})
	pki := newPKI(t)
	s := openStore(t, filepath.Join(dir, "store"))
	mustInstall(t, s, pki, "Web")
	if err := s.WriteJSON("state.json", map[string]int{"passes": 1}); err != nil {
		t.Fatal(err)
	}
	before := snapshot(t, s.Dir())

	fill := filepath.Join(dir, "fill")
	f, err := os.Create(fill)
	if err != nil {
		t.Fatal(err)
	}
	block := bytes.Repeat([]byte{0}, 4096)
	for err == nil {
		_, err = f.Write(block)
	}
	f.Close()
	if !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("filling the disk: %v, want ENOSPC", err)
	}

	key := ecKey(t)
	cert := pki.issue(t, "Web", key)
	if _, err := s.Install("Web", cert, pki.chain(), key); !errors.Is(err, syscall.ENOSPC) {
		t.Errorf("Install on a full disk = %v, want ENOSPC", err)
	}
	if err := s.WriteJSON("state.json", map[string]int{"passes": 2}); !errors.Is(err, syscall.ENOSPC) {
		t.Errorf("WriteJSON on a full disk = %v, want ENOSPC", err)
	}
	if err := s.AddPending(PendingRequest{Template: "Mail", RequestID: 1, Key: key}); !errors.Is(err, syscall.ENOSPC) {
		t.Errorf("AddPending on a full disk = %v, want ENOSPC", err)
	}
	after := snapshot(t, s.Dir())
	delete(after, "pending") // AddPending may make the empty directory before it fails
	checkUnchanged(t, before, after)
	if left := stagingLeft(t, s.Dir()); len(left) > 0 {
		t.Errorf("staging left behind: %v", left)
	}

	// With room again, the same Install works.
	if err := os.Remove(fill); err != nil {
		t.Fatal(err)
	}
	if replaced, err := s.Install("Web", cert, pki.chain(), key); err != nil || replaced == nil {
		t.Errorf("Install after freeing space = %v, %v, want the old certificate archived", replaced, err)
	}
}
