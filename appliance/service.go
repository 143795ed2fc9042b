package appliance

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/enrollment-appliance/aeappliance/appliance/release"
	"github.com/enrollment-appliance/aeappliance/appliance/supervise"
	"github.com/enrollment-appliance/aeappliance/enrollsvc/config"
)

// startService starts `enrollsvc serve` under supervision once the network is up (the
// service binds to the management address).
func (a *Appliance) startService(ctx context.Context) error {
	ip, err := a.address(ctx, 365*24*time.Hour)
	if err != nil {
		return fmt.Errorf("not started: %w", err)
	}
	host := ip.String()
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.down {
		return errors.New("not started: shutting down")
	}
	if a.svc != nil {
		return nil
	}
	f, err := os.OpenFile(filepath.Join(a.o.DataDir, "log", "enrollsvc.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o640)
	if err != nil {
		return fmt.Errorf("opening its log: %w", err)
	}
	a.svcLog = f
	args := []string{"serve", "--data", a.varDir(), "--log-level", "info",
		// The listeners follow the management address, whatever it was when provisioned.
		"--api-listen", net.JoinHostPort(host, strconv.Itoa(a.o.APIPort)),
		"--http-listen", net.JoinHostPort(host, strconv.Itoa(a.o.HTTPPort)),
		"--enroll-listen", net.JoinHostPort(host, strconv.Itoa(a.o.EnrollPort))}
	if _, err := os.Stat(release.UpdateKeysPath); err == nil && !a.o.Dev {
		args = append(args, "--firmware-dir", a.firmwareStore().Dir, "--update-keys", release.UpdateKeysPath)
	}
	a.svc = supervise.New(supervise.Config{
		Name:   "enrollsvc",
		Path:   a.o.Enrollsvc,
		Args:   args,
		Dir:    a.o.DataDir,
		Output: f,
		OnEvent: func(msg string) {
			a.log.Info(msg)
			if strings.Contains(msg, "restarting") {
				a.con.Printf("%s", msg)
			}
		},
	})
	a.svc.Start()
	return nil
}

// restartService stops the service and starts it again (on a new address).
func (a *Appliance) restartService(ctx context.Context) {
	a.mu.Lock()
	svc := a.svc
	a.svc = nil
	if a.svcLog != nil {
		a.svcLog.Close()
		a.svcLog = nil
	}
	a.mu.Unlock()
	if svc != nil {
		if err := svc.Stop(); err != nil {
			a.log.Error("stopping enrollsvc", "err", err)
		}
	}
	if err := a.startService(ctx); err != nil {
		a.con.Printf("enrollsvc: %v", err)
	}
}

// shutdownService stops the service (SIGTERM, then SIGKILL after 10 s).
func (a *Appliance) shutdownService() {
	a.mu.Lock()
	a.down = true
	svc := a.svc
	a.mu.Unlock()
	a.stopProvisioningAPI()
	if svc == nil {
		return
	}
	if err := svc.Stop(); err != nil {
		a.log.Error("stopping enrollsvc", "err", err)
	}
}

// serviceInfo is what status shows about the service.
type serviceInfo struct {
	State  string // "running (pid 312, up 41s, 0 restarts)"
	API    string // "https://10.0.2.15:9443"
	Health error  // nil: the API answered healthy
}

func (a *Appliance) serviceInfo(ctx context.Context) serviceInfo {
	a.mu.Lock()
	svc := a.svc
	a.mu.Unlock()
	if svc == nil {
		if a.provisioned() {
			return serviceInfo{State: "not started (waiting for the network)"}
		}
		return serviceInfo{State: "not started (unprovisioned)"}
	}
	st := svc.State()
	var si serviceInfo
	switch {
	case st.Stopped:
		si.State = "stopped"
	case st.Running:
		si.State = fmt.Sprintf("running (pid %d, up %s, %d restarts)", st.PID, roundDur(time.Since(st.Since)), st.Restarts)
	default:
		si.State = fmt.Sprintf("%s; next start in %s", st.LastExit, roundDur(time.Until(st.NextTry)))
	}
	si.API, si.Health = a.health(ctx)
	return si
}

// health asks the local API whether the service is healthy, verifying its certificate
// against the CA.
func (a *Appliance) health(ctx context.Context) (string, error) {
	cfg, err := config.Load(a.varDir())
	if err != nil {
		return "", err
	}
	pool := x509.NewCertPool()
	pemBytes, err := os.ReadFile(config.Path(a.varDir(), cfg.CACert))
	if err != nil {
		return "", err
	}
	if !pool.AppendCertsFromPEM(pemBytes) {
		return "", errors.New("no CA certificate")
	}
	addr := cfg.API.Listen
	if b, err := os.ReadFile(config.Path(a.varDir(), config.APIAddrFile)); err == nil {
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

// waitHealthy polls health until it succeeds or wait passes.
func (a *Appliance) waitHealthy(ctx context.Context, wait time.Duration) (string, error) {
	deadline := time.Now().Add(wait)
	for {
		url, err := a.health(ctx)
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

// caInfo reads the CA certificate of the data directory: its subject and SHA-256
// fingerprint.
func caInfo(dir string) (subject, fingerprint string, err error) {
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
