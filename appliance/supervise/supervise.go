// Package supervise keeps a service process running: it starts it, restarts it when it
// exits with a backoff that doubles up to a limit (and starts over once the process has
// stayed up for a while), reports its state, and stops it with SIGTERM, then SIGKILL.
package supervise

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Config describes the process and the restart policy.
type Config struct {
	Name string   // for messages, e.g. "enrollsvc"
	Path string   // executable
	Args []string // arguments, without the program name
	Env  []string // environment (nil: the supervisor's)
	Dir  string   // working directory
	// Output receives the process's standard output and error (nil: discarded). Its
	// standard input is always /dev/null: the console belongs to the init payload.
	Output io.Writer

	MinBackoff  time.Duration // first restart delay (default 1s)
	MaxBackoff  time.Duration // longest restart delay (default 1m)
	StableAfter time.Duration // a run this long resets the backoff (default 1m)
	StopTimeout time.Duration // SIGTERM to SIGKILL (default 10s)

	// OnEvent is told about starts and exits ("enrollsvc exited: exit status 1; restarting in 2s").
	OnEvent func(msg string)

	// Credential, when set, is the user, group and (empty) supplementary groups the process runs
	// as; AmbientCaps are the capabilities it keeps across that change and its exec (capabilities(7):
	// ambient), e.g. CAP_NET_BIND_SERVICE alone. Both need the supervisor to be root.
	Credential  *syscall.Credential
	AmbientCaps []uintptr
}

// State is a snapshot of the supervised process.
type State struct {
	Running  bool
	PID      int
	Since    time.Time // start of the current run, or of the wait before the next
	Restarts int       // restarts after exits
	LastExit string    // how the last run ended ("" before the first exit)
	NextTry  time.Time // when the next start is due (not Running)
	Stopped  bool      // Stop was called
}

// Supervisor runs one process. Create it with New, then Start it once.
type Supervisor struct {
	cfg     Config
	mu      sync.Mutex
	st      State
	cmd     *exec.Cmd
	stop    chan struct{}
	done    chan struct{}
	started bool
}

// New returns a supervisor for cfg with defaults filled in.
func New(cfg Config) *Supervisor {
	if cfg.MinBackoff == 0 {
		cfg.MinBackoff = time.Second
	}
	if cfg.MaxBackoff == 0 {
		cfg.MaxBackoff = time.Minute
	}
	if cfg.StableAfter == 0 {
		cfg.StableAfter = time.Minute
	}
	if cfg.StopTimeout == 0 {
		cfg.StopTimeout = 10 * time.Second
	}
	if cfg.Name == "" {
		cfg.Name = cfg.Path
	}
	if cfg.OnEvent == nil {
		cfg.OnEvent = func(string) {}
	}
	return &Supervisor{cfg: cfg, stop: make(chan struct{}), done: make(chan struct{})}
}

// State returns the current state.
func (s *Supervisor) State() State {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.st
}

// Start starts the process and keeps it running in the background until Stop.
func (s *Supervisor) Start() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.started || s.st.Stopped {
		return
	}
	s.started = true
	go s.loop()
}

func (s *Supervisor) loop() {
	defer close(s.done)
	backoff := s.cfg.MinBackoff
	for {
		started := time.Now()
		err := s.runOnce()
		ran := time.Since(started)
		select {
		case <-s.stop:
			return
		default:
		}
		if ran >= s.cfg.StableAfter {
			backoff = s.cfg.MinBackoff
		}
		s.mu.Lock()
		s.st.Running, s.st.PID = false, 0
		s.st.LastExit = describeExit(err)
		s.st.NextTry = time.Now().Add(backoff)
		s.st.Since = time.Now()
		s.mu.Unlock()
		s.cfg.OnEvent(fmt.Sprintf("%s %s; restarting in %s", s.cfg.Name, describeExit(err), backoff))
		select {
		case <-s.stop:
			return
		case <-time.After(backoff):
		}
		s.mu.Lock()
		s.st.Restarts++
		s.mu.Unlock()
		backoff = min(2*backoff, s.cfg.MaxBackoff)
	}
}

// runOnce runs the process to its end.
func (s *Supervisor) runOnce() error {
	cmd := exec.Command(s.cfg.Path, s.cfg.Args...)
	cmd.Env, cmd.Dir = s.cfg.Env, s.cfg.Dir
	cmd.Stdout, cmd.Stderr = s.cfg.Output, s.cfg.Output
	// Its own process group: keyboard signals on the console never reach it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Credential: s.cfg.Credential, AmbientCaps: s.cfg.AmbientCaps}
	s.mu.Lock()
	select {
	case <-s.stop:
		s.mu.Unlock()
		return errors.New("stopped")
	default:
	}
	if err := cmd.Start(); err != nil {
		s.mu.Unlock()
		return err
	}
	s.cmd = cmd
	s.st.Running, s.st.PID, s.st.Since, s.st.NextTry = true, cmd.Process.Pid, time.Now(), time.Time{}
	s.mu.Unlock()
	s.cfg.OnEvent(fmt.Sprintf("%s started (pid %d)", s.cfg.Name, cmd.Process.Pid))
	err := cmd.Wait()
	s.mu.Lock()
	s.cmd = nil
	s.mu.Unlock()
	return err
}

// Stop stops supervising: it sends SIGTERM, waits up to StopTimeout, then sends SIGKILL.
// It returns once the process is gone; calling it again does nothing.
func (s *Supervisor) Stop() error {
	s.mu.Lock()
	if s.st.Stopped {
		s.mu.Unlock()
		<-s.done
		return nil
	}
	s.st.Stopped = true
	close(s.stop)
	cmd := s.cmd
	if !s.started {
		close(s.done)
	}
	s.mu.Unlock()
	if cmd != nil {
		// The whole process group: helpers the service started go too.
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-s.done:
		case <-time.After(s.cfg.StopTimeout):
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-s.done
			s.cfg.OnEvent(fmt.Sprintf("%s did not stop within %s: killed", s.cfg.Name, s.cfg.StopTimeout))
			s.setStopped()
			return fmt.Errorf("supervise: %s did not stop within %s: killed", s.cfg.Name, s.cfg.StopTimeout)
		}
	} else {
		<-s.done
	}
	s.setStopped()
	return nil
}

func (s *Supervisor) setStopped() {
	s.mu.Lock()
	s.st.Running, s.st.PID = false, 0
	s.mu.Unlock()
}

// Wait blocks until the process is running or ctx ends.
func (s *Supervisor) Wait(ctx context.Context) error {
	for {
		if s.State().Running {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// describeExit says how a run ended: "exited: exit status 1", "killed by signal 9".
func describeExit(err error) string {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return "killed by signal " + ws.Signal().String()
		}
		return "exited: " + ee.Error()
	}
	if err == nil {
		return "exited: status 0"
	}
	if errors.Is(err, os.ErrNotExist) {
		return "could not start: " + err.Error()
	}
	return "failed: " + err.Error()
}

// LastLine is an io.Writer that passes everything to W and remembers the last complete
// non-empty line written (at most 300 bytes of it), so that an exit can be reported with the
// reason the process gave last.
type LastLine struct {
	W io.Writer

	mu      sync.Mutex
	partial []byte
	last    string
}

// Write passes p to W and keeps its last line.
func (l *LastLine) Write(p []byte) (int, error) {
	l.mu.Lock()
	l.partial = append(l.partial, p...)
	for {
		i := bytes.IndexByte(l.partial, '\n')
		if i < 0 {
			break
		}
		if line := strings.TrimSpace(string(l.partial[:i])); line != "" {
			if len(line) > 300 {
				line = line[:300] + "..."
			}
			l.last = line
		}
		l.partial = l.partial[i+1:]
	}
	if len(l.partial) > 4096 { // a runaway line: keep its start only
		l.partial = l.partial[:4096]
	}
	l.mu.Unlock()
	if l.W == nil {
		return len(p), nil
	}
	return l.W.Write(p)
}

// Last is the last complete non-empty line written ("" if none).
func (l *LastLine) Last() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.last
}
