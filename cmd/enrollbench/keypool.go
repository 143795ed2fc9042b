package main

import (
	"bufio"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"syscall"
	"time"
)

// rsaKeys returns n distinct RSA-2048 client keys. Go makes one in about 65 ms on this class of
// machine, so 10,000 take minutes: they are made once per machine and kept in
// $TMPDIR/aeappliance-bench-rsa2048.keys (PKCS#1 DER, each behind its 4-byte length), which
// grows when a larger storm asks for more. They are throw-away keys of bench clients, never a
// real client's, and are made before any clock starts.
func rsaKeys(n int, progress io.Writer) ([]*rsa.PrivateKey, error) {
	path := filepath.Join(os.TempDir(), "aeappliance-bench-rsa2048.keys")
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		return nil, fmt.Errorf("flock %s: %w", path, err)
	}
	keys, good, err := readKeys(f, n)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if len(keys) == n {
		return keys, nil
	}
	// A torn last record (a killed run) is cut off; new keys are appended after the good ones.
	if err := f.Truncate(good); err != nil {
		return nil, err
	}
	if _, err := f.Seek(good, io.SeekStart); err != nil {
		return nil, err
	}
	missing := n - len(keys)
	fmt.Fprintf(progress, "enrollbench: making %d RSA-2048 client keys once for this machine (kept in %s)\n", missing, path)
	start := time.Now()
	made := make(chan *rsa.PrivateKey)
	var wg sync.WaitGroup
	var genErr error
	var mu sync.Mutex
	next := make(chan struct{}, missing)
	for range missing {
		next <- struct{}{}
	}
	close(next)
	for range runtime.GOMAXPROCS(0) {
		wg.Go(func() {
			for range next {
				k, err := rsa.GenerateKey(rand.Reader, 2048)
				if err != nil {
					mu.Lock()
					genErr = err
					mu.Unlock()
					return
				}
				made <- k
			}
		})
	}
	go func() { wg.Wait(); close(made) }()
	w := bufio.NewWriter(f)
	for k := range made {
		der := x509.MarshalPKCS1PrivateKey(k)
		var l [4]byte
		binary.BigEndian.PutUint32(l[:], uint32(len(der)))
		w.Write(l[:])
		w.Write(der)
		keys = append(keys, k)
		if len(keys)%1000 == 0 {
			fmt.Fprintf(progress, "enrollbench: %d of %d keys (%s)\n", len(keys), n, time.Since(start).Round(time.Second))
		}
	}
	if genErr != nil {
		return nil, genErr
	}
	if err := w.Flush(); err != nil {
		return nil, err
	}
	if err := f.Sync(); err != nil {
		return nil, err
	}
	return keys, nil
}

// readKeys reads up to n keys from r and returns them with the offset just past the last whole
// record.
func readKeys(r io.Reader, n int) ([]*rsa.PrivateKey, int64, error) {
	br := bufio.NewReader(r)
	var keys []*rsa.PrivateKey
	var off int64
	for len(keys) < n {
		var l [4]byte
		if _, err := io.ReadFull(br, l[:]); err != nil {
			return keys, off, nil // the end, or a torn length
		}
		size := binary.BigEndian.Uint32(l[:])
		if size > 8192 {
			return nil, 0, errors.New("not a key file of enrollbench (a record over 8 KiB)")
		}
		der := make([]byte, size)
		if _, err := io.ReadFull(br, der); err != nil {
			return keys, off, nil // a torn record
		}
		k, err := x509.ParsePKCS1PrivateKey(der)
		if err != nil {
			return nil, 0, fmt.Errorf("key %d: %w", len(keys), err)
		}
		keys = append(keys, k)
		off += 4 + int64(size)
	}
	return keys, off, nil
}
