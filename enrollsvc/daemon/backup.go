// Backups: a consistent online snapshot of the store with the data directory, encrypted
// (enrollsvc/backup), written while the service keeps issuing; and the restore of one into a new
// data directory.

package daemon

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/enrollment-appliance/aeappliance/apiclient"
	"github.com/enrollment-appliance/aeappliance/config"
	"github.com/enrollment-appliance/aeappliance/enrollsvc"
	"github.com/enrollment-appliance/aeappliance/enrollsvc/backup"
	"github.com/enrollment-appliance/aeappliance/enrollsvc/events"
	"github.com/enrollment-appliance/aeappliance/enrollsvc/store"
	"github.com/enrollment-appliance/aeappliance/hsm/softhsm"
)

// BackupTmpDir holds, in the data directory, the store's snapshot while a backup is written.
const BackupTmpDir = "backup-tmp"

const settingBackupLast = "backup_last"

// backupLast is the "backup_last" setting: the last backup written completely.
type backupLast struct {
	Time  time.Time `json:"time"`
	By    string    `json:"by"`
	Bytes int64     `json:"bytes"`
}

// skipInBackup leaves out what the service writes while it runs and the store's live files (the
// snapshot stands for them).
func skipInBackup(store string) backup.Skip {
	return func(rel string) bool {
		switch rel {
		case config.APIAddrFile, config.EnrollAddr, config.ConfinementFile, config.StartupFile, BackupTmpDir, BackupsDir:
			return true
		}
		if store != "" && (rel == store || strings.HasPrefix(rel, store+"-")) { // -wal, -shm, -journal
			return true
		}
		return strings.HasPrefix(filepath.Base(rel), ".tmp-")
	}
}

// countingWriter counts what passes.
type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// Backup writes a backup of this instance's data directory to w, encrypted as enc says, while
// the service keeps serving, and records it (event 3070, the "backup_last" setting) once it
// was written completely. by and remote name who asked.
func (rt *Runtime) Backup(ctx context.Context, w io.Writer, enc backup.Encryption, by, remote string) (*backup.Manifest, error) {
	op := "writing a backup"
	if err := enc.Check(); err != nil {
		return nil, &enrollsvc.Error{Kind: enrollsvc.KindBadRequest, Op: op, Err: err}
	}
	sq, ok := rt.Store.(interface {
		Snapshot(ctx context.Context, path string) error
	})
	if !ok {
		return nil, &enrollsvc.Error{Kind: enrollsvc.KindUnavailable, Op: op, Err: errors.New("this store cannot be snapshotted")}
	}
	tmpDir := config.Path(rt.Dir, BackupTmpDir)
	if err := os.MkdirAll(tmpDir, 0o700); err != nil {
		return nil, err
	}
	var rnd [8]byte
	rand.Read(rnd[:])
	snap := filepath.Join(tmpDir, "store-"+hex.EncodeToString(rnd[:])+".db")
	defer os.Remove(snap)
	start := time.Now()
	if err := sq.Snapshot(ctx, snap); err != nil {
		return nil, &enrollsvc.Error{Kind: enrollsvc.KindInternal, Op: op, Err: err}
	}
	sum, err := store.SummarizeFile(ctx, snap)
	if err != nil {
		return nil, &enrollsvc.Error{Kind: enrollsvc.KindInternal, Op: op, Err: err}
	}
	m := &backup.Manifest{Created: rt.Recorder.Now().UTC(), Version: rt.version, Instance: rt.InstanceName()}
	m.CA.Subject, m.CA.SHA256, m.CA.KeyURI = rt.CACert.Subject.String(), hex.EncodeToString(sha256Of(rt.CACert.Raw)), rt.Key.URI().String()
	m.HSM.Module, m.HSM.TokenIncluded = rt.Config.HSM.Module, rt.Config.HSM.SoftHSMConf != ""
	m.Store = backup.StoreSummary{File: rt.Config.Store, Certificates: sum.Certificates, Revoked: sum.Revoked,
		Pending: sum.Pending, Events: sum.Events, LastSeq: sum.LastSeq, CRLNumber: sum.CRLNumber, From: "sqlite"}
	if rt.Config.Postgres != nil { // the shared store, snapshotted into a SQLite file
		m.Store.File, m.Store.From = config.StoreFile, "postgres"
	}
	if rt.firmware != nil {
		if fs, err := rt.firmware.FirmwareStatus(ctx); err == nil {
			m.Firmware, _ = json.Marshal(fs)
		}
	}
	cw := &countingWriter{w: w}
	bw, err := backup.NewWriter(cw, enc, m)
	if err != nil {
		return nil, &enrollsvc.Error{Kind: enrollsvc.KindBadRequest, Op: op, Err: err}
	}
	if err := bw.AddDir(rt.Dir, skipInBackup(rt.Config.Store)); err != nil {
		return nil, &enrollsvc.Error{Kind: enrollsvc.KindInternal, Op: op, Err: err}
	}
	if err := bw.AddFile(m.Store.File, snap); err != nil {
		return nil, &enrollsvc.Error{Kind: enrollsvc.KindInternal, Op: op, Err: err}
	}
	if err := bw.Close(); err != nil {
		return nil, &enrollsvc.Error{Kind: enrollsvc.KindInternal, Op: op, Err: err}
	}
	now := rt.Recorder.Now()
	ev := events.New(now, events.BackupWritten, "", "by", by, "remote", remote, "bytes", cw.n, "files", len(m.Files),
		"certificates", sum.Certificates, "last_event_seq", sum.LastSeq, "crl_number", sum.CRLNumber,
		"token_included", m.HSM.TokenIncluded, "took_ms", time.Since(start).Milliseconds())
	last, _ := json.Marshal(backupLast{Time: now.UTC(), By: by, Bytes: cw.n})
	if ss, ok := rt.Store.(store.SettingsStore); ok {
		if err := ss.PutSetting(context.WithoutCancel(ctx), store.Setting{Name: settingBackupLast, Value: last, Updated: now, By: by}, ev); err != nil {
			rt.Log.Error("recording the backup", "error", err)
		} else {
			rt.Recorder.Log(ctx, ev)
		}
	}
	rt.lastBackup.Store(now.Unix())
	return m, nil
}

// LastBackup is the last complete backup (zero Time: never), as the store records it.
func (rt *Runtime) LastBackup(ctx context.Context) (backupLast, error) {
	var last backupLast
	ss, ok := rt.Store.(store.SettingsStore)
	if !ok {
		return last, nil
	}
	s, err := ss.GetSetting(ctx, settingBackupLast)
	if errors.Is(err, store.ErrNotFound) {
		return last, nil
	}
	if err != nil {
		return last, err
	}
	return last, json.Unmarshal(s.Value, &last)
}

// backupInfo is the last backup for the status.
func (rt *Runtime) backupInfo(ctx context.Context) apiclient.BackupInfo {
	last, err := rt.LastBackup(ctx)
	if err != nil {
		return apiclient.BackupInfo{Error: err.Error()}
	}
	return apiclient.BackupInfo{Last: last.Time, By: last.By, Bytes: last.Bytes}
}

// RestoreOptions say how to restore.
type RestoreOptions struct {
	Passphrase   string
	IdentityFile []byte // age identities, instead of or besides Passphrase
	Log          *slog.Logger
	// Adjust, when set, changes the backup's configuration for this machine (its listeners)
	// before the directory is put in place.
	Adjust func(cfg *config.Config) error
}

// Restore writes the data directory a backup holds into dir (which must not exist), ready to
// serve on this machine: the SoftHSM configuration points at the restored token where it now
// is, a SoftHSM module path the machine lacks is replaced by its own, the store records the
// restore (event 3053), and issuances in progress at the snapshot are marked failed (requests
// held for approval stay pending). Nothing is written at dir unless all of it succeeds.
func Restore(ctx context.Context, r io.Reader, dir string, o RestoreOptions) (*backup.Manifest, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	return backup.Extract(r, o.Passphrase, o.IdentityFile, abs, func(tmp string, m *backup.Manifest) error {
		cfg, err := config.Load(tmp)
		if err != nil {
			return fmt.Errorf("the backup's configuration: %w", err)
		}
		caPEM, err := os.ReadFile(config.Path(tmp, cfg.CACert))
		if err != nil {
			return err
		}
		if ca, err := parseCertPEM(caPEM); err != nil || hex.EncodeToString(sha256Of(ca.Raw)) != m.CA.SHA256 {
			return errors.New("the backup's CA certificate is not the one its manifest names")
		}
		if cfg.Postgres != nil {
			// A member of a cluster: restored as a single appliance on the SQLite snapshot of the
			// shared store (enrollsvc store migrate moves it into PostgreSQL again).
			cfg.Postgres, cfg.Store = nil, m.Store.File
			if err := cfg.Write(tmp); err != nil {
				return err
			}
		}
		if cfg.Store == "" || cfg.Store != m.Store.File {
			return errors.New("the backup holds no SQLite store")
		}
		if o.Adjust != nil {
			if err := o.Adjust(cfg); err != nil {
				return err
			}
			if err := cfg.Write(tmp); err != nil {
				return err
			}
		}
		if cfg.HSM.SoftHSMConf != "" {
			conf := softhsm.Config(filepath.Join(abs, config.SoftHSMTokens))
			if err := os.WriteFile(config.Path(tmp, cfg.HSM.SoftHSMConf), []byte(conf), 0o600); err != nil {
				return err
			}
			if _, err := os.Stat(cfg.HSM.Module); err != nil {
				if local, lerr := softhsm.ModulePath(); lerr == nil {
					cfg.HSM.Module = local
					if err := cfg.Write(tmp); err != nil {
						return err
					}
				}
			}
		}
		os.Remove(config.Path(tmp, SyslogCursorFile)) // a new machine starts its stream anew
		st, err := store.Open(ctx, config.Path(tmp, cfg.Store), o.Log)
		if err != nil {
			return fmt.Errorf("the backup's store: %w", err)
		}
		defer st.Close()
		ev := events.New(time.Now(), events.StoreRestored, "", "backup_created", m.Created.Format(time.RFC3339),
			"from_instance", m.Instance, "from_version", m.Version, "certificates", m.Store.Certificates,
			"last_event_seq", m.Store.LastSeq, "crl_number", m.Store.CRLNumber)
		if _, err = st.AppendEvent(ctx, ev); err != nil {
			return err
		}
		return failInProgress(ctx, st, m.Created)
	})
}

// failInProgress marks failed the requests a restored store holds as issuances in progress
// (pending without a decision held for approval): the snapshot was taken between their record
// and their certificate's, and nothing on the restored appliance will finish them. Their serials
// stay reserved. Each is event 2004 (request failed), so the trail says why.
func failInProgress(ctx context.Context, st store.Store, snapshot time.Time) error {
	var after int64
	for {
		page, err := st.ListRequests(ctx, store.RequestFilter{State: store.RequestPending, AfterID: after, Limit: 1000})
		if err != nil {
			return fmt.Errorf("the backup's requests: %w", err)
		}
		if len(page) == 0 {
			return nil
		}
		for _, r := range page {
			after = r.ID
			if len(r.Decision) > 0 { // held for a certificate manager: it stays pending
				continue
			}
			reason := fmt.Sprintf("the issuance was in progress when the backup's snapshot was taken (%s): the restored "+
				"appliance has no certificate for it; the client asks again", snapshot.UTC().Format(time.RFC3339))
			ev := events.New(time.Now(), events.RequestFailed, "", "error", reason, "template", r.Template)
			if err := st.SetRequestState(ctx, r.ID, store.RequestFailed, reason, ev); err != nil {
				return fmt.Errorf("the backup's request %d: %w", r.ID, err)
			}
		}
	}
}

func parseCertPEM(b []byte) (*x509.Certificate, error) {
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "CERTIFICATE" {
		return nil, errors.New("not a PEM certificate")
	}
	return x509.ParseCertificate(blk.Bytes)
}

func sha256Of(b []byte) []byte {
	s := sha256.Sum256(b)
	return s[:]
}
