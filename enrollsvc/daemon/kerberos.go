package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"

	"github.com/enrollment-appliance/aeappliance/config"
	"github.com/enrollment-appliance/aeappliance/enrollsvc/spnego"
)

// kerberosAuth is the Kerberos endpoints' authenticator: the service keytab in the data
// directory, for HTTP/<hostname> of every configured host name. Until a keytab is installed the
// endpoints answer 503 saying so; installing one (init --keytab, or the API) takes effect at once.
type kerberosAuth struct {
	path string
	spns []string
	log  *slog.Logger
	mu   sync.RWMutex
	a    *spnego.Authenticator
}

func newKerberosAuth(path string, hostnames []string, log *slog.Logger) *kerberosAuth {
	k := &kerberosAuth{path: path, log: log}
	for _, h := range hostnames {
		if net.ParseIP(h) == nil { // clients build the SPN from a host name, never from an address
			k.spns = append(k.spns, "HTTP/"+h)
		}
	}
	if _, err := os.Stat(path); err == nil {
		if a, err := spnego.New(spnego.Config{Keytab: path, SPNs: k.spns, Logger: log}); err != nil {
			log.Error("the Kerberos service keytab cannot be used; the Kerberos endpoints are off", "keytab", path, "error", err)
		} else {
			k.a = a
		}
	}
	return k
}

// Ready reports whether a usable keytab is installed (only then is Kerberos advertised).
func (k *kerberosAuth) Ready() bool {
	k.mu.RLock()
	defer k.mu.RUnlock()
	return k.a != nil
}

func (k *kerberosAuth) Authenticate(w http.ResponseWriter, r *http.Request) (spnego.Identity, bool) {
	k.mu.RLock()
	a := k.a
	k.mu.RUnlock()
	if a == nil {
		http.Error(w, "Kerberos is not set up on this appliance: no service keytab is installed", http.StatusServiceUnavailable)
		return spnego.Identity{}, false
	}
	return a.Authenticate(w, r)
}

// Install checks a new keytab (it must hold a key of one of the allowed SPNs), then puts it in
// place and uses it. A keytab that cannot be used changes nothing.
func (k *kerberosAuth) Install(keytab []byte) error {
	if len(k.spns) == 0 {
		return errors.New("no host name of the enrollment web services is a DNS name, so no HTTP/<host> principal can be used")
	}
	if err := os.MkdirAll(filepath.Dir(k.path), 0o700); err != nil {
		return err
	}
	tmp := k.path + ".new"
	if err := os.WriteFile(tmp, keytab, 0o600); err != nil {
		return err
	}
	defer os.Remove(tmp)
	a, err := spnego.New(spnego.Config{Keytab: tmp, SPNs: k.spns, Logger: k.log})
	if err != nil {
		return fmt.Errorf("the keytab cannot be used: %w", err)
	}
	if err := config.WriteFileAtomic(k.path, keytab, 0o600); err != nil {
		return err
	}
	final, err := spnego.New(spnego.Config{Keytab: k.path, SPNs: k.spns, Logger: k.log})
	if err != nil {
		final = a // same bytes; keep the checked one
	}
	k.mu.Lock()
	k.a = final
	k.mu.Unlock()
	return nil
}

// InstallKeytab installs the Kerberos service keytab of the enrollment web services.
func (rt *Runtime) InstallKeytab(_ context.Context, keytab []byte) error {
	if rt.kerberos == nil {
		return errors.New("the enrollment web services are not configured (they need the directory settings)")
	}
	return rt.kerberos.Install(keytab)
}
