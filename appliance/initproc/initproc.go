// Package initproc is the appliance's process 1. The kernel runs /init (appinit) as the first
// process; appinit, seeing its process ID is 1, runs Run, which starts appinit again as the
// payload (the console, the data disk, the network, enrollsvc's supervision) and does what
// only process 1 can:
//
//   - it reaps every process whose parent ended before it (the kernel makes process 1 their
//     parent, and a zombie nobody waits for holds its process ID forever);
//   - it starts the payload in a session of its own with the console as its controlling
//     terminal, and with an environment of its own choosing: the kernel hands process 1 every
//     unrecognised name=value of its command line as environment variables, which must not
//     reach the payload or the service (LD_PRELOAD=, GODEBUG=, SOFTHSM2_CONF=);
//   - it catches and drops the signals the kernel or a stray kill could send it: a Go
//     program's default for SIGTERM or SIGINT is to exit, and process 1 exiting panics the
//     kernel (caught, not ignored: an ignored signal stays ignored across exec(2), in the
//     payload and in everything it starts);
//   - when the payload ends (it never does unless it crashed), it says so on the console and
//     in the kernel log, starts the debug image's shell if there is one, then asks every
//     process to stop (SIGTERM, then SIGKILL after a grace period), syncs and restarts the
//     machine, as any init does (reboot(2)).
//
// Before this package the image ran u-root's init, which started appinit (bin/uinit) and did
// the rest; it also mounted debugfs, efivarfs and the cgroup v1 trees and copied /etc onto a
// tmpfs, none of which the appliance uses, and passed the kernel's environment through. The
// payload mounts what it needs (/proc, /sys, /dev). Without u-root's init the image is 0.5 MB
// smaller and the boot starts one Go program fewer.
package initproc

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Path is the PATH the payload and everything it starts get: the image's tools (mke2fs,
// e2fsck, cryptsetup, resize2fs) are in /sbin.
const Path = "/sbin:/bin:/usr/sbin:/usr/bin"

// Config is what Run starts.
type Config struct {
	Payload string   // the payload's program (appinit itself)
	Args    []string // its arguments after the program name
	Shell   string   // started on the console after the payload ends, when it exists (the debug image's)
	// Env is the payload's whole environment; nil gives Environment(os.Environ()).
	Env []string
	// Grace is how long the other processes have to stop after SIGTERM at the end (default 10 s).
	Grace time.Duration
	// Log receives Run's messages (default: the console, standard error, and /dev/kmsg).
	Log io.Writer
}

// Environment is the payload's environment derived from process 1's: TERM as the kernel set
// it (linux by default), HOME=/ and PATH=Path. Nothing else passes, in particular no
// name=value the kernel's command line put there.
func Environment(kernel []string) []string {
	term := "linux"
	for _, kv := range kernel {
		if v, ok := strings.CutPrefix(kv, "TERM="); ok && v != "" && !strings.ContainsAny(v, "/\x00") {
			term = v
		}
	}
	return []string{"HOME=/", "PATH=" + Path, "TERM=" + term}
}

// dropped are the signals process 1 catches and drops (SIGKILL and SIGSTOP never reach it).
// SIGCHLD is not among them: Run waits for its children.
var dropped = []os.Signal{syscall.SIGHUP, syscall.SIGINT, syscall.SIGQUIT, syscall.SIGTERM, syscall.SIGUSR1,
	syscall.SIGUSR2, syscall.SIGPIPE, syscall.SIGTSTP, syscall.SIGTTIN, syscall.SIGTTOU, syscall.SIGALRM}

// Run is process 1's life: it starts the payload, reaps every child until the payload ends,
// runs the shell if there is one, then stops every process and restarts the machine. It
// returns only when it cannot restart it (or start the payload at all); the caller then
// exits, and the kernel panics (and restarts the machine if its command line says panic=).
func Run(cfg Config) error {
	sigs := make(chan os.Signal, 16)
	signal.Notify(sigs, dropped...)
	go func() {
		for range sigs {
		}
	}()
	if cfg.Env == nil {
		cfg.Env = Environment(os.Environ())
	}
	if cfg.Grace == 0 {
		cfg.Grace = 10 * time.Second
	}
	pid, err := start(cfg.Payload, cfg.Args, cfg.Env)
	if err != nil {
		return fmt.Errorf("starting %s: %w", cfg.Payload, err)
	}
	ended := reapUntil(pid)
	logw := cfg.Log
	if logw == nil {
		logw = consoleAndKernelLog() // now: the payload has mounted /dev
	}
	logf := func(format string, args ...any) { fmt.Fprintf(logw, "init: "+format+"\n", args...) }
	logf("%s ended: %s", cfg.Payload, ended)
	if cfg.Shell != "" {
		if _, err := os.Stat(cfg.Shell); err == nil {
			logf("starting %s (a debug image)", cfg.Shell)
			if sh, err := start(cfg.Shell, nil, cfg.Env); err != nil {
				logf("starting %s: %v", cfg.Shell, err)
			} else {
				logf("%s ended: %s", cfg.Shell, reapUntil(sh))
			}
		}
	}
	logf("stopping every process and restarting")
	stopAll(cfg.Grace)
	unix.Sync()
	return fmt.Errorf("restarting the machine: %w", unix.Reboot(unix.LINUX_REBOOT_CMD_RESTART))
}

// start starts program in a new session, with process 1's standard input, output and error
// (the console: the kernel opened /dev/console for them) and the console as its controlling
// terminal when it is one. It uses ForkExec rather than os/exec so that the only waiting is
// reapUntil's.
func start(program string, args, env []string) (int, error) {
	attr := &syscall.ProcAttr{Dir: "/", Env: env, Files: []uintptr{0, 1, 2},
		Sys: &syscall.SysProcAttr{Setsid: true}}
	if _, err := unix.IoctlGetTermios(0, unix.TCGETS); err == nil {
		attr.Sys.Setctty, attr.Sys.Ctty = true, 0
	}
	return syscall.ForkExec(program, append([]string{program}, args...), attr)
}

// reapUntil waits for any child, again and again, until pid has ended, and describes how
// it ended. Every other child it collects is an orphan the kernel gave process 1.
func reapUntil(pid int) string {
	for {
		var ws unix.WaitStatus
		p, err := unix.Wait4(-1, &ws, 0, nil)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return fmt.Sprintf("waiting: %v", err) // ECHILD: it is gone
		}
		if p == pid {
			return describe(ws)
		}
	}
}

func describe(ws unix.WaitStatus) string {
	switch {
	case ws.Exited():
		return fmt.Sprintf("exit status %d", ws.ExitStatus())
	case ws.Signaled():
		return "killed by " + ws.Signal().String()
	}
	return fmt.Sprintf("status %#x", uint32(ws))
}

// stopAll sends SIGTERM to every other process, reaps them for up to grace, then sends SIGKILL
// to those left and reaps them (kill(2) with pid -1: every process but process 1).
func stopAll(grace time.Duration) {
	if err := unix.Kill(-1, unix.SIGTERM); errors.Is(err, unix.ESRCH) {
		return // nobody left
	}
	deadline := time.Now().Add(grace)
	for time.Now().Before(deadline) {
		var ws unix.WaitStatus
		p, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
		if errors.Is(err, unix.ECHILD) {
			return
		}
		if p <= 0 {
			time.Sleep(50 * time.Millisecond)
		}
	}
	_ = unix.Kill(-1, unix.SIGKILL)
	for {
		var ws unix.WaitStatus
		if _, err := unix.Wait4(-1, &ws, 0, nil); err != nil && !errors.Is(err, unix.EINTR) {
			return
		}
	}
}

// consoleAndKernelLog writes to standard error (the console) and, line by line, to the kernel's
// log (/dev/kmsg, which the payload's boot timeline and `status` read), when it can be opened.
func consoleAndKernelLog() io.Writer {
	if k, err := os.OpenFile("/dev/kmsg", os.O_WRONLY, 0); err == nil {
		return io.MultiWriter(os.Stderr, k)
	}
	return os.Stderr
}
