package ceremony

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/enrollment-appliance/aeappliance/config"
	"github.com/enrollment-appliance/aeappliance/enrollsvc/daemon"
	"github.com/enrollment-appliance/aeappliance/provisioning"
)

// OpenBackup opens the backup at from: an http:// or https:// URL (the backup authenticates
// itself: age refuses one changed on the way), or a file.
func OpenBackup(ctx context.Context, from string) (io.ReadCloser, error) {
	if !strings.HasPrefix(from, "http://") && !strings.HasPrefix(from, "https://") {
		return os.Open(from)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, from, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("fetching the backup: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		return nil, fmt.Errorf("fetching the backup: %s: HTTP %d", from, resp.StatusCode)
	}
	return resp.Body, nil
}

// Restore is the restore step: the data directory from the backup rs.From names, instead of
// steps token to finish, listening where this appliance's finish would (fin: the backup's
// addresses are another machine's); the URLs written into certificates stay the CA's. It is
// refused when any step was done here; a failure leaves nothing.
func (c *Ceremony) Restore(ctx context.Context, rs provisioning.Restore, fin FinishOptions) (provisioning.Report, error) {
	var r provisioning.Report
	if entries, err := os.ReadDir(c.Dir); err == nil {
		if len(entries) > 0 {
			return r, fmt.Errorf("%s holds a provisioning already (provision status): a restore replaces steps token to finish on an appliance that has done none of them; nothing changed", c.Dir)
		}
		if err := os.Remove(c.Dir); err != nil {
			return r, err
		}
	}
	f, err := OpenBackup(ctx, rs.From)
	if err != nil {
		return r, err
	}
	defer f.Close()
	m, err := daemon.Restore(ctx, f, c.Dir, daemon.RestoreOptions{Passphrase: rs.Passphrase, Log: c.log(),
		Adjust: func(cfg *config.Config) error {
			if fin.APIListen != "" {
				cfg.API.Listen = fin.APIListen
			}
			if cfg.HTTP != nil && fin.HTTPListen != "" {
				cfg.HTTP.Listen = fin.HTTPListen
			}
			if cfg.Enroll != nil && fin.EnrollListen != "" {
				cfg.Enroll.Listen = fin.EnrollListen
				for _, h := range fin.Hostnames {
					if !slices.Contains(cfg.Enroll.Hostnames, h) {
						cfg.Enroll.Hostnames = append(cfg.Enroll.Hostnames, h)
					}
				}
			}
			if fin.Instance != "" {
				cfg.Instance = fin.Instance
			}
			return nil
		}})
	if err != nil {
		return r, err
	}
	r.Step = provisioning.StepRestore
	r.Say("Restored the backup of %s made %s (version %s): CA %s.", m.Instance, m.Created.Format(time.RFC3339), m.Version, m.CA.Subject)
	r.Say("%d certificates (%d revoked), %d pending requests, %d audit events; the next CRL number follows %d.",
		m.Store.Certificates, m.Store.Revoked, m.Store.Pending, m.Store.Events, m.Store.CRLNumber)
	if m.Store.From == "postgres" {
		r.Say("The backup is of an instance on a shared PostgreSQL store: this appliance is now a single one on SQLite.")
	}
	if m.HSM.TokenIncluded {
		r.Say("The CA key came back in the SoftHSM token the backup holds.")
	} else {
		r.Say("The CA key stays in the HSM (%s), which this appliance must reach.", m.CA.KeyURI)
	}
	return r, nil
}
