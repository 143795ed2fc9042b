package appliance

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/enrollment-appliance/aeappliance/appliance/supervise"
	"github.com/enrollment-appliance/aeappliance/appliance/svcctl"
	"github.com/enrollment-appliance/aeappliance/config"
	"github.com/enrollment-appliance/aeappliance/provisioning"
	"github.com/enrollment-appliance/aeappliance/provisioning/provapi"
)

// Files of the provisioning API's certificate in the settings directory.
const (
	bootstrapCert = "provisioning-tls.pem"
	bootstrapKey  = "provisioning-tls-key.pem"
)

// provServer is the provisioning API while the appliance is unprovisioned: the ceremony
// over HTTPS on the management address and the API port (which the service takes once
// provisioned), with a self-signed certificate whose fingerprint the console shows. No root
// process listens on the network (provapi's relay): appinit serves the API on a Unix socket in
// a directory only the relay's user may enter, and supervises `enrollsvc relay`, running as that
// user (confined like the service), which terminates TLS and forwards each request.
type provServer struct {
	srv   *http.Server // the API on the Unix socket
	relay *supervise.Supervisor
	url   string
	fp    string // SHA-256 of the certificate
	dir   string // the socket's and the relay's directory, removed on stop
	log   *os.File
}

// relayDir is where the provisioning API's socket and the relay's copy of its certificate
// live: in memory on the image, beside the data in development mode.
func (a *Appliance) relayDir() string {
	if a.o.Dev {
		return filepath.Join(a.o.DataDir, "run", "provapi")
	}
	return "/run/provapi"
}

// provisioningAPILoop starts the provisioning API once the network is up, unless the
// appliance is provisioned or has no data disk.
func (a *Appliance) provisioningAPILoop(ctx context.Context) {
	select {
	case <-a.net.Done():
	case <-ctx.Done():
		return
	}
	if _, ok := a.diskReady(); !ok || a.provisioned() {
		return
	}
	if err := a.startProvisioningAPI(ctx); err != nil {
		a.con.Printf("Provisioning API: %v", err)
	}
}

func (a *Appliance) startProvisioningAPI(ctx context.Context) error {
	ip, err := a.net.Address(ctx, 0)
	if err != nil {
		return err
	}
	n, _ := provisioning.LoadNetwork(a.settingsDir())
	_, fp, err := bootstrapCertificate(a.settingsDir(), ip, n.Hostname)
	if err != nil {
		return fmt.Errorf("its certificate: %w", err)
	}
	h, err := provapi.NewHandler(provapi.Config{Settings: a.settingsDir(), Steps: a.steps(), Logger: a.log,
		OnFinish: func() {
			url, err := a.serveAfterFinish(context.Background())
			if err != nil {
				a.con.Printf("Provisioned over the API, but: %v", err)
				return
			}
			a.con.Printf("Provisioned over the API. Service running: API %s", url)
		}})
	if err != nil {
		return err
	}
	a.mu.Lock()
	running := a.prov != nil || a.down
	a.mu.Unlock()
	if running {
		return nil
	}
	var user *svcctl.User
	if !a.o.Dev {
		user = &svcctl.RelayUser
	}
	dir := a.relayDir()
	l, certFile, keyFile, err := relaySetup(dir, a.settingsDir(), user)
	if err != nil {
		os.RemoveAll(dir)
		return fmt.Errorf("preparing its relay: %w", err)
	}
	logf, err := os.OpenFile(filepath.Join(a.o.DataDir, "log", "provapi-relay.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o640)
	if err != nil {
		l.Close()
		os.RemoveAll(dir)
		return fmt.Errorf("its relay's log: %w", err)
	}
	addr := net.JoinHostPort(ip.String(), strconv.Itoa(a.o.APIPort))
	out := &supervise.LastLine{W: logf}
	sc := supervise.Config{Name: "provisioning API relay", Path: a.o.Enrollsvc, Dir: dir, Output: out,
		Args: []string{"relay", "--listen", addr, "--socket", filepath.Join(dir, relaySocket), "--tls-cert", certFile,
			"--tls-key", keyFile, "--seccomp"},
		OnEvent: func(msg string) {
			a.log.Info(msg)
			if strings.Contains(msg, "restarting") {
				// The relay's last words say why (its error is its last line).
				if last := out.Last(); last != "" {
					msg += " after: " + last
				}
				a.con.Printf("%s (see log/provapi-relay.log)", msg)
			}
		}}
	if user != nil {
		sc.Credential = &syscall.Credential{Uid: uint32(user.UID), Gid: uint32(user.GID), Groups: []uint32{}}
		sc.AmbientCaps = []uintptr{svcctl.CapNetBindService}
	}
	ps := &provServer{srv: provapi.NewUnixServer(h), relay: supervise.New(sc), url: "https://" + addr, fp: fp, dir: dir, log: logf}
	a.mu.Lock()
	if a.prov != nil || a.down {
		a.mu.Unlock()
		l.Close()
		logf.Close()
		return nil
	}
	a.prov = ps
	a.mu.Unlock()
	go func() {
		if err := ps.srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			a.log.Error("provisioning API", "err", err)
		}
	}()
	ps.relay.Start()
	a.log.Info("provisioning API listening", "url", ps.url, "sha256", fp, "relay_user", user)
	return nil
}

// relaySocket is the provisioning API's Unix socket in the relay's directory.
const relaySocket = "api.sock"

// relaySetup makes the relay's directory (only root and the relay's group may enter it), the
// API's Unix socket in it (root's, the relay's group may connect) and the relay's copy of the
// API's certificate and key (the relay's, readable by it alone). user nil: development mode,
// everything the caller's.
func relaySetup(dir, settings string, user *svcctl.User) (l net.Listener, certFile, keyFile string, err error) {
	if err := os.RemoveAll(dir); err != nil {
		return nil, "", "", err
	}
	// The parents (/run on the image) must stay open to the relay's user.
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return nil, "", "", err
	}
	if err := os.Mkdir(dir, 0o750); err != nil {
		return nil, "", "", err
	}
	// own gives p the relay's group, and to the relay's user too when relays (root keeps it
	// otherwise); in development mode everything stays the caller's.
	own := func(p string, relays bool) error {
		if user == nil {
			return nil
		}
		uid := 0
		if relays {
			uid = user.UID
		}
		return os.Lchown(p, uid, user.GID)
	}
	if err := own(dir, false); err != nil {
		return nil, "", "", err
	}
	certFile, keyFile = filepath.Join(dir, "tls.pem"), filepath.Join(dir, "tls-key.pem")
	for _, f := range []struct{ from, to string }{{bootstrapCert, certFile}, {bootstrapKey, keyFile}} {
		b, err := os.ReadFile(filepath.Join(settings, f.from))
		if err != nil {
			return nil, "", "", err
		}
		if err := os.WriteFile(f.to, b, 0o400); err != nil {
			return nil, "", "", err
		}
		if err := own(f.to, true); err != nil {
			return nil, "", "", err
		}
	}
	sock := filepath.Join(dir, relaySocket)
	l, err = net.Listen("unix", sock)
	if err != nil {
		return nil, "", "", err
	}
	if err := errors.Join(os.Chmod(sock, 0o660), own(sock, false)); err != nil {
		l.Close()
		return nil, "", "", err
	}
	return l, certFile, keyFile, nil
}

// stopProvisioningAPI shuts the provisioning API down (before the service takes its port):
// the relay first, so that the port is free when this returns.
func (a *Appliance) stopProvisioningAPI() {
	a.mu.Lock()
	ps := a.prov
	a.prov = nil
	a.mu.Unlock()
	if ps == nil {
		return
	}
	if err := ps.relay.Stop(); err != nil {
		a.log.Warn("stopping the provisioning API relay", "err", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := ps.srv.Shutdown(ctx); err != nil {
		ps.srv.Close()
	}
	ps.log.Close()
	os.RemoveAll(ps.dir)
}

// relayConfinement is how the kernel sees the running provisioning API relay's privileges.
func (a *Appliance) relayConfinement() (supervise.Confinement, error) {
	a.mu.Lock()
	ps := a.prov
	a.mu.Unlock()
	if ps == nil {
		return supervise.Confinement{}, errors.New("not running")
	}
	st := ps.relay.State()
	if !st.Running {
		return supervise.Confinement{}, errors.New("not running")
	}
	return supervise.ReadConfinement(st.PID)
}

// provisioningAPI is the running provisioning API's URL and certificate fingerprint.
func (a *Appliance) provisioningAPI() (url, fingerprint string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.prov == nil {
		return "", ""
	}
	return a.prov.url, a.prov.fp
}

// bootstrapCertificate loads the provisioning API's certificate from the settings
// directory, making a new self-signed one (ECDSA P-256, the key only on the data disk)
// when there is none or it does not name ip.
func bootstrapCertificate(dir string, ip net.IP, hostname string) (tls.Certificate, string, error) {
	certPath, keyPath := filepath.Join(dir, bootstrapCert), filepath.Join(dir, bootstrapKey)
	if kp, err := tls.LoadX509KeyPair(certPath, keyPath); err == nil {
		leaf, err := x509.ParseCertificate(kp.Certificate[0])
		if err == nil && leaf.VerifyHostname(ip.String()) == nil && (hostname == "" || leaf.VerifyHostname(hostname) == nil) &&
			time.Until(leaf.NotAfter) > 30*24*time.Hour {
			return kp, certFingerprint(leaf.Raw), nil
		}
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, "", err
	}
	serial, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	tmpl := &x509.Certificate{SerialNumber: serial, Subject: pkix.Name{CommonName: "aeappliance provisioning " + ip.String()},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(2 * 365 * 24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true, IPAddresses: []net.IP{ip, net.IPv4(127, 0, 0, 1)}, DNSNames: []string{"localhost"}}
	if hostname != "" {
		tmpl.DNSNames = append(tmpl.DNSNames, strings.TrimSuffix(hostname, "."))
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return tls.Certificate{}, "", err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return tls.Certificate{}, "", err
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return tls.Certificate{}, "", err
	}
	if err := config.WriteFileAtomic(keyPath, keyPEM, 0o600); err != nil {
		return tls.Certificate{}, "", diskFull(err)
	}
	if err := config.WriteFileAtomic(certPath, certPEM, 0o644); err != nil {
		return tls.Certificate{}, "", diskFull(err)
	}
	kp, err := tls.X509KeyPair(certPEM, keyPEM)
	return kp, certFingerprint(der), err
}

func certFingerprint(der []byte) string {
	sum := sha256.Sum256(der)
	return strings.ToUpper(hex.EncodeToString(sum[:]))
}
