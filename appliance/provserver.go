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
	"time"

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
// provisioned), with a self-signed certificate whose fingerprint the console shows.
type provServer struct {
	srv *http.Server
	url string
	fp  string // SHA-256 of the certificate
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
	cert, fp, err := bootstrapCertificate(a.settingsDir(), ip, n.Hostname)
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
	addr := net.JoinHostPort(ip.String(), strconv.Itoa(a.o.APIPort))
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: time.Minute,
		WriteTimeout: 5 * time.Minute, IdleTimeout: time.Minute, MaxHeaderBytes: 16 << 10,
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}}
	ps := &provServer{srv: srv, url: "https://" + addr, fp: fp}
	a.mu.Lock()
	if a.prov != nil || a.down {
		a.mu.Unlock()
		l.Close()
		return nil
	}
	a.prov = ps
	a.mu.Unlock()
	go func() {
		if err := srv.ServeTLS(l, "", ""); err != nil && !errors.Is(err, http.ErrServerClosed) {
			a.log.Error("provisioning API", "err", err)
		}
	}()
	a.log.Info("provisioning API listening", "url", ps.url, "sha256", fp)
	return nil
}

// stopProvisioningAPI shuts the provisioning API down (before the service takes its port).
func (a *Appliance) stopProvisioningAPI() {
	a.mu.Lock()
	ps := a.prov
	a.prov = nil
	a.mu.Unlock()
	if ps == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := ps.srv.Shutdown(ctx); err != nil {
		ps.srv.Close()
	}
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
