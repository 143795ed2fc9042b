package store

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestReopen(t *testing.T) { eachStoreReopen(t, testReopen) }

func testReopen(t *testing.T, s Store, reopen func() Store) {
	ctx := context.Background()
	reqID, err := s.CreateRequest(ctx, Request{Template: "T", Account: "a", CSR: []byte("csr")})
	if err != nil {
		t.Fatal(err)
	}
	c := issue(t, s, Certificate{Template: "T", Account: "a", RequestID: reqID, NotAfter: epoch.Add(time.Hour)})
	seq, err := s.AppendEvent(ctx, Event{ID: 7, Category: "Admin", Message: "m", Fields: map[string]any{"k": "v"}})
	if err != nil {
		t.Fatal(err)
	}
	wantReq, _ := s.GetRequest(ctx, reqID)
	wantCert, _ := s.GetCertificate(ctx, c.Serial)
	wantEvents, _ := s.ListEvents(ctx, EventFilter{})
	s = reopen()
	if got, err := s.GetRequest(ctx, reqID); err != nil || !reflect.DeepEqual(got, wantReq) {
		t.Errorf("GetRequest(%d) after reopen = %+v, %v, want %+v", reqID, got, err, wantReq)
	}
	if got, err := s.GetCertificate(ctx, c.Serial); err != nil || !reflect.DeepEqual(got, wantCert) {
		t.Errorf("GetCertificate(%s) after reopen = %+v, %v, want %+v", c.Serial, got, err, wantCert)
	}
	if got, err := s.ListEvents(ctx, EventFilter{}); err != nil || !reflect.DeepEqual(got, wantEvents) {
		t.Errorf("ListEvents() after reopen = %+v, %v, want %+v", got, err, wantEvents)
	}
	if err := s.ReserveSerial(ctx, c.Serial, ev(1, "")); !errors.Is(err, ErrSerialUsed) {
		t.Errorf("ReserveSerial(%s) after reopen = %v, want ErrSerialUsed", c.Serial, err)
	}
	if id, err := s.CreateRequest(ctx, Request{}); err != nil || id <= reqID {
		t.Errorf("CreateRequest() after reopen = %d, %v, want an ID > %d", id, err, reqID)
	}
	if seq2, err := s.AppendEvent(ctx, Event{}); err != nil || seq2 <= seq {
		t.Errorf("AppendEvent() after reopen = %d, %v, want a Seq > %d", seq2, err, seq)
	}
}

// crashEnv names the database file the child process of TestCrash writes to.
const crashEnv = "AEAPPLIANCE_STORE_CRASH_DB"

// TestCrash kills a process that is issuing certificates and checks that every certificate
// whose CommitCertificate had returned is in the database afterwards. It runs the test binary
// again as that process. (SIGKILL tests the process dying, not the machine: data the kernel
// already holds survives it. Power loss is what synchronous=FULL is for.)
func TestCrash(t *testing.T) {
	if path := os.Getenv(crashEnv); path != "" {
		crashChild(t, path)
		return
	}
	path := filepath.Join(t.TempDir(), "crash.db")
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrash$", "-test.count=1")
	cmd.Env = append(os.Environ(), crashEnv+"="+path)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}

	// Read until 500 commits have been reported, kill the child, then read whatever it wrote
	// before it died. Only whole lines count: a line is written after its commit returned.
	const killAfter = 500
	var committed []string
	r := bufio.NewReader(out)
	killed := false
	for {
		line, err := r.ReadString('\n')
		if serial, ok := strings.CutPrefix(line, "committed "); ok && strings.HasSuffix(serial, "\n") {
			committed = append(committed, strings.TrimSuffix(serial, "\n"))
		}
		if len(committed) >= killAfter && !killed {
			if err := cmd.Process.Kill(); err != nil {
				t.Fatalf("kill child: %v", err)
			}
			killed = true
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("reading child output: %v", err)
		}
	}
	werr := cmd.Wait()
	if !killed {
		t.Fatalf("child ended after %d commits (%v); stderr:\n%s", len(committed), werr, stderr.String())
	}

	s := openAt(t, path)
	ctx := context.Background()
	for _, sr := range committed {
		c, err := s.GetCertificate(ctx, sr)
		if err != nil {
			t.Errorf("GetCertificate(%s) after crash = %v", sr, err)
			continue
		}
		if !bytes.Equal(c.DER, testDER(sr)) {
			t.Errorf("GetCertificate(%s) after crash: DER differs", sr)
		}
	}
	n, err := s.CountCertificates(ctx)
	if err != nil || n < int64(len(committed)) {
		t.Errorf("CountCertificates() after crash = %d, %v, want at least %d", n, err, len(committed))
	}
	t.Logf("child reported %d commits before it was killed; %d certificates stored", len(committed), n)
}

// crashChild issues certificates from 4 goroutines and reports each on stdout once committed,
// until it is killed (or gives up after a minute, should the parent have gone).
func crashChild(t *testing.T, path string) {
	s, err := Open(context.Background(), path, nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		os.Exit(2)
	}
	ctx := context.Background()
	deadline := time.Now().Add(time.Minute)
	var mu sync.Mutex
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for time.Now().Before(deadline) {
				sr := newSerial(t)
				if err := s.ReserveSerial(ctx, sr, ev(2100, "")); err != nil {
					fmt.Fprintln(os.Stderr, "child:", err)
					os.Exit(2)
				}
				c := Certificate{Serial: sr, DER: testDER(sr), Template: "T", Account: "a"}
				if err := s.CommitCertificate(ctx, c, ev(2101, "")); err != nil {
					fmt.Fprintln(os.Stderr, "child:", err)
					os.Exit(2)
				}
				mu.Lock()
				os.Stdout.WriteString("committed " + sr + "\n") // one write: a whole line or nothing
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	os.Exit(3)
}
