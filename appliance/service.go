package appliance

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/enrollment-appliance/aeappliance/appliance/release"
	"github.com/enrollment-appliance/aeappliance/appliance/svcctl"
)

// startService starts `enrollsvc serve` under supervision once the network is up (the
// service binds to the management address).
func (a *Appliance) startService(ctx context.Context) error {
	ip, err := a.net.Address(ctx, 365*24*time.Hour)
	if err != nil {
		return fmt.Errorf("not started: %w", err)
	}
	var extra, writable []string
	if _, err := os.Stat(release.UpdateKeysPath); err == nil && !a.o.Dev {
		extra = []string{"--firmware-dir", a.firmwareStore().Dir, "--update-keys", release.UpdateKeysPath}
		writable = []string{a.firmwareStore().Dir}
	}
	// On the appliance the service runs as its own user; in development mode as the caller.
	var user *svcctl.User
	if !a.o.Dev {
		user = &svcctl.ServiceUser
	}
	err = a.svc.Start(svcctl.Config{Enrollsvc: a.o.Enrollsvc, Dir: a.o.DataDir, VarDir: a.varDir(),
		LogFile: filepath.Join(a.o.DataDir, "log", "enrollsvc.log"), User: user, Writable: writable,
		APIPort: a.o.APIPort, HTTPPort: a.o.HTTPPort, EnrollPort: a.o.EnrollPort, ExtraArgs: extra,
		OnEvent: func(msg string) {
			a.log.Info(msg)
			if strings.Contains(msg, "restarting") {
				a.con.Printf("%s", msg)
			}
		}}, ip.String())
	if errors.Is(err, svcctl.ErrHalted) {
		return fmt.Errorf("not started: %w", err)
	}
	return err
}

// restartService stops the service and starts it again (on a new address).
func (a *Appliance) restartService(ctx context.Context) {
	if err := a.svc.Stop(); err != nil {
		a.log.Error("stopping enrollsvc", "err", err)
	}
	if err := a.startService(ctx); err != nil {
		a.con.Printf("enrollsvc: %v", err)
	}
}

// shutdownService stops the service (SIGTERM, then SIGKILL after 10 s) and starts
// nothing more.
func (a *Appliance) shutdownService() {
	a.mu.Lock()
	a.down = true
	a.mu.Unlock()
	a.stopProvisioningAPI()
	if err := a.svc.Halt(); err != nil {
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
	st, ok := a.svc.State()
	if !ok {
		if a.provisioned() {
			return serviceInfo{State: "not started (waiting for the network)"}
		}
		return serviceInfo{State: "not started (unprovisioned)"}
	}
	si := serviceInfo{State: svcctl.Describe(st)}
	si.API, si.Health = svcctl.Health(ctx, a.varDir())
	return si
}
