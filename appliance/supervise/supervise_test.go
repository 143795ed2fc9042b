package supervise

import (
	"context"
	"strings"
	"sync"
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
