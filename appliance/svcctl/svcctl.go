// Package svcctl runs the enrollment service on the appliance: `enrollsvc serve` under
// supervision (appliance/supervise) with its output in a log file on the data disk and
// its listeners on the management address, and asks the service's management API
// whether it is healthy, trusting the CA certificate on the data disk.
package svcctl

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/enrollment-appliance/aeappliance/appliance/supervise"
	"github.com/enrollment-appliance/aeappliance/config"
)

// Config says how to run the service.
type Config struct {
	Enrollsvc  string   // the service binary
	Dir        string   // working directory (the data disk's mount point)
	VarDir     string   // the service's data directory
	LogFile    string   // its standard output and error, appended
	APIPort    int      // the listeners' ports on the management address
	HTTPPort   int      //
	EnrollPort int      //
	ExtraArgs  []string // more flags of `enrollsvc serve` (firmware updates)
	OnEvent    func(msg string)
	// User, when set, is who the service runs as (the appliance: ServiceUID; development
	// mode: nil, the caller). Start then gives it VarDir and Writable, readable by it alone,
	// and the capability to bind ports below 1024 and no other.
	User *User
	// Writable are more directories the service writes (the firmware slots, for updates).
	Writable []string
}

// User is an unprivileged user and group by number (the image has no user database).
type User struct{ UID, GID int }

// ServiceUser is the user the appliance runs enrollsvc as: not root, owning nothing but the
// data directory and the firmware slots.
var ServiceUser = User{UID: 900, GID: 900}

// RelayUser is the user the appliance runs the provisioning API's relay as (enrollsvc relay)
// while unprovisioned: it owns nothing on the data disk.
var RelayUser = User{UID: 901, GID: 901}

// CapNetBindService is CAP_NET_BIND_SERVICE (capabilities(7)).
const CapNetBindService = 10

const capNetBindService = CapNetBindService

// Service is the supervised service: none until Start, again none after Stop.
type Service struct {
	mu     sync.Mutex
	sup    *supervise.Supervisor
	log    *os.File
	halted bool
}

// ErrHalted is Start's error after Halt.
var ErrHalted = errors.New("shutting down")

// Start starts the service listening on host, unless it runs already.
func (s *Service) Start(cfg Config, host string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.halted {
		return ErrHalted
	}
	if s.sup != nil {
		return nil
	}
	svc, err := config.Load(cfg.VarDir)
	if err != nil {
		return err
	}
	f, err := os.OpenFile(cfg.LogFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o640)
	if err != nil {
		return fmt.Errorf("opening its log: %w", err)
	}
	s.log = f
	// The listeners follow the management address, whatever it was when provisioned; serve
	// refuses a listener its configuration does not have, so only those are passed.
	// --seccomp: the service confines itself (no_new_privs and a system-call allow-list)
	// before it opens anything.
	// --landlock: it may change the file system only beneath its directories.
	args := []string{"serve", "--data", cfg.VarDir, "--log-level", "info", "--seccomp", "--landlock",
		"--api-listen", net.JoinHostPort(host, strconv.Itoa(cfg.APIPort))}
	if svc.HTTP != nil {
		args = append(args, "--http-listen", net.JoinHostPort(host, strconv.Itoa(cfg.HTTPPort)))
	}
	if svc.Enroll != nil {
		args = append(args, "--enroll-listen", net.JoinHostPort(host, strconv.Itoa(cfg.EnrollPort)))
	}
	args = append(args, cfg.ExtraArgs...)
	sc := supervise.Config{Name: "enrollsvc", Path: cfg.Enrollsvc, Args: args, Dir: cfg.Dir, Output: f, OnEvent: cfg.OnEvent}
	if u := cfg.User; u != nil {
		// Every start: `enrollsvc provision` steps run as root and leave root's files.
		for _, d := range append([]string{cfg.VarDir}, cfg.Writable...) {
			if err := os.MkdirAll(d, 0o700); err != nil {
				s.closeLogLocked()
				return err
			}
			if err := Own(d, *u); err != nil {
				s.closeLogLocked()
				return err
			}
		}
		sc.Credential = &syscall.Credential{Uid: uint32(u.UID), Gid: uint32(u.GID), Groups: []uint32{}}
		sc.AmbientCaps = []uintptr{capNetBindService}
	}
	s.sup = supervise.New(sc)
	s.sup.Start()
	return nil
}

// Own gives the tree at dir to u, readable and writable by it alone: directories 0700, files
// without group or other permissions (the PKCS#11 PIN, the token, the store, the keys). Symbolic
// links are not followed.
func Own(dir string, u User) error {
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := os.Lchown(p, u.UID, u.GID); err != nil {
			return err
		}
		switch {
		case d.Type()&fs.ModeSymlink != 0:
			return nil
		case d.IsDir():
			return os.Chmod(p, 0o700)
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		return os.Chmod(p, fi.Mode().Perm()&0o700)
	})
	if err != nil {
		return fmt.Errorf("giving %s to the service's user: %w", dir, err)
	}
	return nil
}

// Confinement is how the kernel sees the running service's privileges.
func (s *Service) Confinement() (supervise.Confinement, error) {
	st, ok := s.State()
	if !ok || !st.Running {
		return supervise.Confinement{}, errors.New("not running")
	}
	return supervise.ReadConfinement(st.PID)
}

// Stop stops the service (SIGTERM, then SIGKILL after 10 s) and closes its log; Start
// may start it again.
func (s *Service) Stop() error {
	s.mu.Lock()
	sup := s.sup
	s.sup = nil
	s.closeLogLocked()
	s.mu.Unlock()
	if sup == nil {
		return nil
	}
	return sup.Stop()
}

// Halt stops the service for good: Start does nothing after it. Its log stays open
// until CloseLog (the caller is powering off and closes its logs last).
func (s *Service) Halt() error {
	s.mu.Lock()
	s.halted = true
	sup := s.sup
	s.mu.Unlock()
	if sup == nil {
		return nil
	}
	return sup.Stop()
}

// CloseLog closes the service's log file.
func (s *Service) CloseLog() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closeLogLocked()
}

func (s *Service) closeLogLocked() {
	if s.log != nil {
		s.log.Close()
		s.log = nil
	}
}

// State is the supervisor's state; ok is false when the service was not started.
func (s *Service) State() (st supervise.State, ok bool) {
	s.mu.Lock()
	sup := s.sup
	s.mu.Unlock()
	if sup == nil {
		return supervise.State{}, false
	}
	return sup.State(), true
}

// Describe says how a started service is: "running (pid 312, up 41s, 0 restarts)".
func Describe(st supervise.State) string {
	switch {
	case st.Stopped:
		return "stopped"
	case st.Running:
		return fmt.Sprintf("running (pid %d, up %s, %d restarts)", st.PID, roundDur(time.Since(st.Since)), st.Restarts)
	default:
		return fmt.Sprintf("%s; next start in %s", st.LastExit, roundDur(time.Until(st.NextTry)))
	}
}

// Health asks the local API of the service with data directory dir whether it is
// healthy, verifying its certificate against the CA; it returns the API's URL.
func Health(ctx context.Context, dir string) (string, error) {
	cfg, err := config.Load(dir)
	if err != nil {
		return "", err
	}
	pool := x509.NewCertPool()
	pemBytes, err := os.ReadFile(config.Path(dir, cfg.CACert))
	if err != nil {
		return "", err
	}
	if !pool.AppendCertsFromPEM(pemBytes) {
		return "", errors.New("no CA certificate")
	}
	addr := cfg.API.Listen
	if b, err := os.ReadFile(config.Path(dir, config.APIAddrFile)); err == nil {
		addr = strings.TrimSpace(string(b)) // where serve listens now
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", err
	}
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		host = "127.0.0.1"
	}
	url := "https://" + net.JoinHostPort(host, port)
	client := &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: host, MinVersion: tls.VersionTLS12}}}
	defer client.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url+"/api/v1/health", nil)
	if err != nil {
		return url, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return url, err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return url, fmt.Errorf("health: HTTP %d", resp.StatusCode)
	}
	return url, nil
}

// WaitHealthy polls Health until it succeeds or wait passes.
func WaitHealthy(ctx context.Context, dir string, wait time.Duration) (string, error) {
	deadline := time.Now().Add(wait)
	for {
		url, err := Health(ctx, dir)
		if err == nil || time.Now().After(deadline) {
			return url, err
		}
		select {
		case <-ctx.Done():
			return url, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// CAInfo reads the CA certificate of the data directory dir: its subject and SHA-256
// fingerprint.
func CAInfo(dir string) (subject, fingerprint string, err error) {
	b, err := os.ReadFile(filepath.Join(dir, config.CACertFile))
	if err != nil {
		return "", "", err
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		return "", "", errors.New("ca.pem: no PEM block")
	}
	cert, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		return "", "", fmt.Errorf("ca.pem: %w", err)
	}
	sum := sha256.Sum256(cert.Raw)
	return cert.Subject.String(), strings.ToUpper(hex.EncodeToString(sum[:])), nil
}

func roundDur(d time.Duration) time.Duration {
	if d < 0 {
		return 0
	}
	return d.Round(time.Second)
}
