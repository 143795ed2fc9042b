package ceremony

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/enrollment-appliance/aeappliance/config"
	"github.com/enrollment-appliance/aeappliance/enrollsvc/daemon"
	"github.com/enrollment-appliance/aeappliance/enrollsvc/events"
	"github.com/enrollment-appliance/aeappliance/provisioning/tokenbundle"
)

// ExportToken seals the SoftHSM token of the provisioned data directory dir (with the CA key,
// encrypted by SoftHSM under the user PIN) into a bundle encrypted to passphrase, for another
// appliance to join the CA with (Join's TokenBundle), and records that it did in the audit trail
// first: without the event there is no bundle. The user PIN is not in the bundle. A CA whose key
// is in a hardware HSM is refused: that key never leaves the HSM, and joining instances reach it
// there.
func ExportToken(ctx context.Context, dir, passphrase, by string, log *slog.Logger) ([]byte, error) {
	if log == nil {
		log = slog.Default()
	}
	cfg, err := config.Load(dir)
	if err != nil {
		return nil, err
	}
	if cfg.HSM.SoftHSMConf == "" {
		return nil, errors.New("the CA key is in the HSM " + cfg.HSM.Module + ": it never leaves it; another appliance joins by reaching the same HSM")
	}
	if cfg.Postgres == nil {
		return nil, errors.New("this appliance keeps its own store (SQLite): move it to PostgreSQL (provision store, or enrollsvc store migrate) before another appliance can join its CA")
	}
	b, err := tokenbundle.Seal(config.Path(dir, config.SoftHSMTokens), passphrase)
	if err != nil {
		return nil, err
	}
	st, err := daemon.OpenStore(ctx, dir, cfg, log)
	if err != nil {
		return nil, fmt.Errorf("the store (the export is recorded there first): %w", err)
	}
	defer st.Close()
	instance := cfg.Instance
	if instance == "" {
		instance, _ = os.Hostname() // as the service names itself
	}
	rec := events.NewRecorder(st, log, time.Now)
	if err := rec.Record(ctx, events.HSMTokenExported, "", "key", cfg.HSM.KeyURI, "token", cfg.HSM.TokenLabel,
		"by", by, "instance", instance); err != nil {
		return nil, fmt.Errorf("recording the export: %w: no bundle made", err)
	}
	return b, nil
}
