package timesync

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// needChronyd returns chronyd's path; it fails on CI and skips elsewhere when it is missing.
func needChronyd(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("chronyd")
	if err != nil {
		if _, serr := os.Stat("/usr/sbin/chronyd"); serr == nil {
			return "/usr/sbin/chronyd"
		}
		if os.Getenv("CI") == "true" {
			t.Fatalf("chronyd not found (make deps installs chrony): %v", err)
		}
		t.Skipf("chronyd not found (apt-get install chrony): %v", err)
	}
	return p
}

// TestQueryChronyd asks a real NTP server: chronyd on loopback, serving its local clock
// at stratum 8, with -x so that it never adjusts the clock of the machine running the test.
func TestQueryChronyd(t *testing.T) {
	chronyd := needChronyd(t)
	dir := t.TempDir()
	c, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := c.LocalAddr().(*net.UDPAddr).Port
	c.Close()
	conf := filepath.Join(dir, "chrony.conf")
	err = os.WriteFile(conf, fmt.Appendf(nil, `port %d
bindaddress 127.0.0.1
allow 127.0.0.1
local stratum 8
cmdport 0
pidfile %s/chronyd.pid
driftfile %s/drift
`, port, dir, dir), 0o644)
	if err != nil {
		t.Fatal(err)
	}

	args := []string{"-x", "-d", "-f", conf}
	if os.Geteuid() == 0 {
		// Stay root: chronyd's own user could not reach the test's private temp dir.
		args = append(args, "-u", "root")
	} else {
		args = append(args, "-U") // no root needed: -x, a port above 1023, no cmd socket
	}
	cmd := exec.Command(chronyd, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("chronyd output:\n%s", out.String())
		}
	})

	server := fmt.Sprintf("127.0.0.1:%d", port)
	var r Result
	deadline := time.Now().Add(15 * time.Second)
	for {
		r, err = Query(context.Background(), server, 500*time.Millisecond)
		if err == nil || time.Now().After(deadline) {
			break
		}
		select {
		case werr := <-exited:
			exited <- werr
			t.Fatalf("chronyd exited: %v; last query: %v", werr, err)
		case <-time.After(200 * time.Millisecond):
		}
	}
	if err != nil {
		t.Fatalf("chronyd on %s did not answer in 15s: %v", server, err)
	}
	if r.Stratum != 8 {
		t.Errorf("chronyd answered stratum %d, want 8 (local stratum 8)", r.Stratum)
	}
	if abs(r.Offset) >= time.Second {
		t.Errorf("chronyd on this machine's clock: offset %v, want under 1s", r.Offset)
	}
	if r.RTT < 0 || r.RTT > 100*time.Millisecond {
		t.Errorf("chronyd on loopback: RTT %v, want 0 to 100ms", r.RTT)
	}
	t.Logf("chronyd: %+v", r)
	t.Cleanup(func() {
		if b, err := os.ReadFile(filepath.Join(dir, "chronyd.pid")); err != nil || len(b) == 0 {
			t.Errorf("chronyd wrote no pidfile in %s: %v", dir, err)
		}
	})
}
