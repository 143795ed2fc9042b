package ceremony

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/enrollment-appliance/aeappliance/apiclient"
	"github.com/enrollment-appliance/aeappliance/config"
	"github.com/enrollment-appliance/aeappliance/enrollsvc/events"
	"github.com/enrollment-appliance/aeappliance/enrollsvc/store"
)

// MigrateStore moves a single appliance's history from its SQLite store into an empty
// PostgreSQL database (enrollsvc store migrate): certificates, requests, events, CRL numbers and
// CRLs, SCEP profiles, challenges and transactions, with their IDs; it checks the counts and then
// points the configuration at PostgreSQL. The service must be stopped (what it recorded during the
// copy would be lost); the SQLite file is left as it was, unused. On any error the configuration
// is unchanged.
func MigrateStore(ctx context.Context, dir string, so StoreOptions, log *slog.Logger) (store.Counts, error) {
	if log == nil {
		log = slog.Default()
	}
	cfg, err := config.Load(dir)
	if err != nil {
		return store.Counts{}, err
	}
	if cfg.Postgres != nil {
		return store.Counts{}, fmt.Errorf("%s already keeps its store in PostgreSQL (%s)", dir, cfg.Postgres.URL)
	}
	if cl, err := apiclient.DialDataDir(dir); err == nil {
		hctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		err := cl.Health(hctx)
		cancel()
		if err == nil {
			return store.Counts{}, errors.New("the service is running: stop it first, so that nothing it records after the copy is lost")
		}
	}
	storeDir := filepath.Join(dir, config.StoreDir)
	if _, err := os.Stat(storeDir); err == nil {
		return store.Counts{}, fmt.Errorf("%s exists: remove what an earlier attempt left there first", storeDir)
	}
	pg, err := so.stage(dir)
	if err != nil {
		os.RemoveAll(storeDir)
		return store.Counts{}, err
	}
	counts, err := migrateInto(ctx, dir, cfg, pg, log)
	if err != nil {
		os.RemoveAll(storeDir)
		return counts, err
	}
	return counts, nil
}

func migrateInto(ctx context.Context, dir string, cfg *config.Config, pg *config.Postgres, log *slog.Logger) (store.Counts, error) {
	src, err := store.Open(ctx, config.Path(dir, cfg.Store), log)
	if err != nil {
		return store.Counts{}, fmt.Errorf("the SQLite store: %w", err)
	}
	defer src.Close()
	dst, err := store.OpenPostgres(ctx, store.PGConfig{URL: pg.URL, CAFile: config.Path(dir, pg.CAFile),
		PasswordFile: config.Path(dir, pg.PasswordFile), ClientCertFile: config.Path(dir, pg.ClientCertFile),
		ClientKeyFile: config.Path(dir, pg.ClientKeyFile)}, log)
	if err != nil {
		return store.Counts{}, fmt.Errorf("the PostgreSQL store: %w", err)
	}
	defer dst.Close()
	counts, err := src.CopyTo(ctx, dst)
	if err != nil {
		return counts, err
	}
	fields := []any{"from", config.Path(dir, cfg.Store), "to", pg.URL, "crl_number", counts.CRLNumber}
	for t, n := range counts.Rows {
		fields = append(fields, t, n)
	}
	if _, err := dst.AppendEvent(ctx, events.New(time.Now(), events.StoreMigrated, "", fields...)); err != nil {
		return counts, fmt.Errorf("recording the move: %w", err)
	}
	old := cfg.Store
	cfg.Store, cfg.Postgres = "", pg
	if err := cfg.Write(dir); err != nil {
		return counts, err
	}
	log.Info("store moved to PostgreSQL", "from", old, "to", pg.URL)
	return counts, nil
}
