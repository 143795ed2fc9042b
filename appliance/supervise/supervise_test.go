package supervise

import (
	"context"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

type events struct {
	mu   sync.Mutex
	msgs []string
}

func (e *events) add(m string) { e.mu.Lock(); e.msgs = append(e.msgs, m); e.mu.Unlock() }
func (e *events) all() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]string(nil), e.msgs...)
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestRestartsWithBackoff(t *testing.T) {
	var ev events
	s := New(Config{Name: "crasher", Path: "/bin/sh", Args: []string{"-c", "exit 3"},
		MinBackoff: 10 * time.Millisecond, MaxBackoff: 40 * time.Millisecond, OnEvent: ev.add})
	s.Start()
	waitFor(t, "three restarts", func() bool { return s.State().Restarts >= 3 })
	if err := s.Stop(); err != nil {
		t.Fatalf("Stop = %v", err)
	}
	st := s.State()
	if st.LastExit != "exited: exit status 3" || st.Running || !st.Stopped {
		t.Errorf("State = %+v, want stopped after exit status 3", st)
	}
	msgs := ev.all()
	var delays []string
	for _, m := range msgs {
		if _, d, ok := strings.Cut(m, "restarting in "); ok {
			delays = append(delays, d)
		}
	}
	if len(delays) < 3 || delays[0] != "10ms" || delays[1] != "20ms" || delays[2] != "40ms" {
		t.Errorf("restart delays = %v, want 10ms 20ms 40ms (capped)...; events %q", delays, msgs)
	}
	if len(delays) > 3 && delays[3] != "40ms" {
		t.Errorf("fourth delay = %s, want the 40ms cap", delays[3])
	}
}

func TestStopRunning(t *testing.T) {
	var ev events
	s := New(Config{Name: "sleeper", Path: "/bin/sleep", Args: []string{"300"}, OnEvent: ev.add})
	s.Start()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.Wait(ctx); err != nil {
		t.Fatalf("Wait = %v", err)
	}
	if st := s.State(); !st.Running || st.PID == 0 {
		t.Fatalf("State = %+v, want running", st)
	}
	start := time.Now()
	if err := s.Stop(); err != nil {
		t.Fatalf("Stop = %v", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Stop took %s", d)
	}
	if st := s.State(); st.Running || st.Restarts != 0 {
		t.Errorf("State after Stop = %+v, want not running, no restarts", st)
	}
	if err := s.Stop(); err != nil {
		t.Errorf("second Stop = %v", err)
	}
}

func TestStopKillsStubbornProcess(t *testing.T) {
	s := New(Config{Name: "stubborn", Path: "/bin/sh", Args: []string{"-c", "trap '' TERM; sleep 300 & wait"},
		StopTimeout: 200 * time.Millisecond})
	s.Start()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond) // let the shell install its trap
	if err := s.Stop(); err == nil || !strings.Contains(err.Error(), "killed") {
		t.Errorf("Stop = %v, want killed after the timeout", err)
	}
}

func TestStopBeforeStart(t *testing.T) {
	s := New(Config{Path: "/bin/true"})
	if err := s.Stop(); err != nil {
		t.Errorf("Stop before Start = %v", err)
	}
	s.Start() // no effect after Stop
	if s.State().Running {
		t.Error("Start after Stop started the process")
	}
}

func TestMissingExecutable(t *testing.T) {
	var ev events
	s := New(Config{Name: "ghost", Path: "/nonexistent/ghost", MinBackoff: 10 * time.Millisecond, OnEvent: ev.add})
	s.Start()
	waitFor(t, "an exit", func() bool { return s.State().LastExit != "" })
	s.Stop()
	if got := s.State().LastExit; !strings.HasPrefix(got, "could not start") {
		t.Errorf("LastExit = %q, want could not start", got)
	}
}

// The process runs as the configured user with only the ambient capabilities it is given, as the
// kernel reports them; the supervisor itself is root.
func TestCredentialAndAmbientCapabilities(t *testing.T) {
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("the suite runs as root on CI")
		}
		t.Skip("needs root")
	}
	const capNetBindService = 10
	s := New(Config{Name: "sleeper", Path: "/bin/sleep", Args: []string{"30"},
		Credential: &syscall.Credential{Uid: 65534, Gid: 65534}, AmbientCaps: []uintptr{capNetBindService}})
	s.Start()
	defer s.Stop()
	if err := s.Wait(context.Background()); err != nil {
		t.Fatal(err)
	}
	var c Confinement
	waitFor(t, "the exec to be done", func() bool {
		var err error
		c, err = ReadConfinement(s.State().PID)
		return err == nil && c.UID == 65534
	})
	if c.GID != 65534 || c.CapEff != 1<<capNetBindService {
		t.Errorf("confinement = %+v (%s), want uid/gid 65534 and only cap_net_bind_service", c, c)
	}
	if got, want := c.String(), "uid 65534, no seccomp, capabilities cap_net_bind_service"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
}

// A process a seccomp filter kills is reported as killed by SIGSYS.
func TestReportsBadSystemCall(t *testing.T) {
	var ev events
	s := New(Config{Name: "svc", Path: "/bin/sh", Args: []string{"-c", "kill -SYS $$"},
		MinBackoff: time.Hour, OnEvent: ev.add})
	s.Start()
	waitFor(t, "the exit", func() bool { return s.State().LastExit != "" })
	s.Stop()
	if got := s.State().LastExit; got != "killed by signal bad system call" {
		t.Errorf("LastExit = %q, want killed by signal bad system call; events %q", got, ev.all())
	}
}

func TestParseConfinement(t *testing.T) {
	c, err := parseConfinement([]byte("Name:\tenrollsvc\nUid:\t900\t900\t900\t900\nGid:\t900\t900\t900\t900\n" +
		"CapEff:\t0000000000000400\nNoNewPrivs:\t1\nSeccomp:\t2\n"))
	if err != nil || c != (Confinement{UID: 900, GID: 900, NoNewPrivs: true, Seccomp: 2, CapEff: 0x400}) {
		t.Fatalf("parseConfinement = %+v, %v", c, err)
	}
	if got := c.String(); got != "uid 900, seccomp filter, no_new_privs, capabilities cap_net_bind_service" {
		t.Errorf("String() = %q", got)
	}
	if _, err := parseConfinement([]byte("Uid:\t0\n")); err == nil {
		t.Error("a status without Seccomp parsed")
	}
}

// TestLastLine: an exit is reported with the process's last line, whatever the writes' sizes.
func TestLastLine(t *testing.T) {
	var sink strings.Builder
	l := &LastLine{W: &sink}
	var e events
	s := New(Config{Name: "failing", Path: "/bin/sh", Args: []string{"-c", "echo starting; printf 'enrollsvc: relay: listen tcp: bind: '; echo 'address in use' >&2; exit 1"},
		Output: l, OnEvent: e.add, MinBackoff: time.Hour})
	s.Start()
	waitFor(t, "the exit", func() bool { return len(e.all()) >= 2 })
	if err := s.Stop(); err != nil {
		t.Fatal(err)
	}
	if got, want := l.Last(), "enrollsvc: relay: listen tcp: bind: address in use"; got != want {
		t.Errorf("Last() = %q, want %q", got, want)
	}
	if !strings.Contains(sink.String(), "starting\n") {
		t.Errorf("the output did not reach W: %q", sink.String())
	}
	var w LastLine
	w.Write([]byte("one\n\n  \ntw"))
	w.Write([]byte("o\nthree"))
	if w.Last() != "two" {
		t.Errorf("Last() = %q, want the last complete line \"two\"", w.Last())
	}
}
