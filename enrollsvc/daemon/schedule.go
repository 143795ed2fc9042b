// Scheduled backups: the "backup_schedule" operations setting has the service write a backup
// every so often, encrypted to age recipients (public keys: the appliance holds nothing that
// opens its own backups), kept in the data directory's backups/ (the newest Keep) and pushed to
// an HTTPS URL with PUT.

package daemon

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/enrollment-appliance/aeappliance/apiclient"
	"github.com/enrollment-appliance/aeappliance/config"
	"github.com/enrollment-appliance/aeappliance/enrollsvc"
	"github.com/enrollment-appliance/aeappliance/enrollsvc/backup"
	"github.com/enrollment-appliance/aeappliance/enrollsvc/events"
)

const settingBackupSchedule = "backup_schedule"

// BackupsDir holds, in the data directory, the scheduled backups kept on the appliance.
const BackupsDir = "backups"

// MinBackupEvery is the shortest schedule.
const MinBackupEvery = time.Minute

// checkSchedule refuses a schedule that cannot work.
func checkSchedule(s apiclient.BackupSchedule) (time.Duration, error) {
	every, err := time.ParseDuration(s.Every)
	if err != nil || every < MinBackupEvery {
		return 0, fmt.Errorf("every %q: want a duration of at least %s (24h, 6h, ...)", s.Every, MinBackupEvery)
	}
	if len(s.Recipients) == 0 {
		return 0, errors.New("scheduled backups are encrypted to age recipients (age1...): at least one is required")
	}
	if err := (backup.Encryption{Recipients: s.Recipients}).Check(); err != nil {
		return 0, err
	}
	if s.Keep < 0 || s.Keep > 1000 {
		return 0, fmt.Errorf("keep %d: want 0 (none kept on the appliance) to 1000", s.Keep)
	}
	if s.PushURL == "" && s.Keep == 0 {
		return 0, errors.New("a schedule needs somewhere to put the backups: keep some on the appliance, or a push URL")
	}
	if s.PushURL != "" {
		u, err := url.Parse(s.PushURL)
		if err != nil || u.Scheme != "https" || u.Host == "" {
			return 0, fmt.Errorf("push URL %q: want https://host/path/", s.PushURL)
		}
		if s.PushCAPEM != "" && !x509.NewCertPool().AppendCertsFromPEM([]byte(s.PushCAPEM)) {
			return 0, errors.New("push_ca_pem holds no PEM certificate")
		}
	}
	return every, nil
}

// scheduler runs the scheduled backups.
type scheduler struct {
	rt  *Runtime
	now func() time.Time

	mu       sync.Mutex
	sched    *apiclient.BackupSchedule // nil: off
	every    time.Duration
	lastErr  string
	lastRun  time.Time
	running  bool
	failedAt time.Time
}

// set changes the schedule (nil: off).
func (s *scheduler) set(sc *apiclient.BackupSchedule) error {
	var every time.Duration
	if sc != nil {
		var err error
		if every, err = checkSchedule(*sc); err != nil {
			return err
		}
	}
	s.mu.Lock()
	s.sched, s.every = sc, every
	s.mu.Unlock()
	return nil
}

// due says whether a backup is due at now: the last complete one (any, scheduled or not) is
// older than every, and no failure was within the last retry pause.
func (s *scheduler) due(now time.Time, last time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.sched == nil || s.running {
		return false
	}
	if !s.failedAt.IsZero() && now.Sub(s.failedAt) < min(s.every, 5*time.Minute) {
		return false
	}
	return last.IsZero() || now.Sub(last) >= s.every
}

// run checks every tick whether a backup is due, until ctx ends.
func (s *scheduler) run(ctx context.Context, tick time.Duration) {
	runEvery(ctx, tick, func() {
		var last time.Time
		if u := s.rt.lastBackup.Load(); u != 0 {
			last = time.Unix(u, 0)
		}
		if s.due(s.now(), last) {
			_, _ = s.runOnce(ctx, "schedule")
		}
	})
}

// runOnce writes one backup now: into backups/ (renamed into place once whole), the oldest beyond
// Keep removed, then pushed. A failure is event 3071 and is retried after a pause.
func (s *scheduler) runOnce(ctx context.Context, by string) (string, error) {
	s.mu.Lock()
	sc := s.sched
	if sc == nil {
		s.mu.Unlock()
		return "", &enrollsvc.Error{Kind: enrollsvc.KindConflict, Op: "running the backup schedule", Err: errors.New("no backup schedule is set")}
	}
	if s.running {
		s.mu.Unlock()
		return "", &enrollsvc.Error{Kind: enrollsvc.KindConflict, Op: "running the backup schedule", Err: errors.New("a scheduled backup is running")}
	}
	s.running = true
	s.mu.Unlock()
	name, err := s.backup(ctx, *sc, by)
	s.mu.Lock()
	s.running, s.lastRun = false, s.now()
	if err != nil {
		s.lastErr, s.failedAt = err.Error(), s.now()
	} else {
		s.lastErr, s.failedAt = "", time.Time{}
	}
	s.mu.Unlock()
	if err != nil {
		_ = s.rt.Recorder.Record(context.WithoutCancel(ctx), events.BackupFailed, "", "by", by, "error", err.Error())
	}
	return name, err
}

func (s *scheduler) backup(ctx context.Context, sc apiclient.BackupSchedule, by string) (string, error) {
	dir := config.Path(s.rt.Dir, BackupsDir)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", err
	}
	name := fmt.Sprintf("backup-%s-%s.age", safeName(s.rt.InstanceName()), s.now().UTC().Format("20060102T150405.000Z"))
	part := filepath.Join(dir, ".part-"+name)
	f, err := os.OpenFile(part, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return "", err
	}
	defer os.Remove(part)
	_, err = s.rt.Backup(ctx, f, backup.Encryption{Recipients: sc.Recipients}, by, "")
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return "", err
	}
	final := filepath.Join(dir, name)
	// Never over an earlier backup (one run at a time writes here: running).
	if _, err := os.Lstat(final); err == nil {
		return "", fmt.Errorf("%s exists", final)
	}
	if err := os.Rename(part, final); err != nil {
		return "", err
	}
	if sc.PushURL != "" {
		if err := push(ctx, sc, final, name); err != nil {
			if sc.Keep == 0 {
				os.Remove(final)
			}
			return "", err
		}
	}
	return name, prune(dir, sc.Keep)
}

// safeName keeps letters, digits, '-' and '.' of s for a file name.
func safeName(s string) string {
	out := strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '.' {
			return r
		}
		return '_'
	}, s)
	if out == "" || strings.Trim(out, ".") == "" {
		return "appliance"
	}
	return out
}

// prune removes the oldest backups beyond keep (names sort by time).
func prune(dir string, keep int) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	var names []string
	for _, e := range entries {
		if e.Type().IsRegular() && strings.HasPrefix(e.Name(), "backup-") && strings.HasSuffix(e.Name(), ".age") {
			names = append(names, e.Name())
		}
	}
	slices.Sort(names)
	for len(names) > keep {
		if err := os.Remove(filepath.Join(dir, names[0])); err != nil {
			return err
		}
		names = names[1:]
	}
	return nil
}

// push PUTs the backup file to the push URL, under its name when the URL ends in '/'.
func push(ctx context.Context, sc apiclient.BackupSchedule, path, name string) error {
	target := sc.PushURL
	if strings.HasSuffix(target, "/") {
		target += url.PathEscape(name)
	}
	body, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	tr := &http.Transport{TLSClientConfig: &tls.Config{MinVersion: tls.VersionTLS12}}
	if sc.PushCAPEM != "" {
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM([]byte(sc.PushCAPEM))
		tr.TLSClientConfig.RootCAs = pool
	}
	hc := &http.Client{Transport: tr, Timeout: time.Hour}
	defer tr.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, target, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/octet-stream")
	if sc.PushToken != "" {
		req.Header.Set("Authorization", "Bearer "+sc.PushToken)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("pushing the backup: %w", err)
	}
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("pushing the backup to %s: HTTP %d", target, resp.StatusCode)
	}
	return nil
}

// status is what GET /api/v1/backup/schedule shows; the push token is never shown.
func (s *scheduler) status() apiclient.BackupScheduleStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := apiclient.BackupScheduleStatus{LastError: s.lastErr, LastRun: s.lastRun}
	if s.sched != nil {
		sc := *s.sched
		sc.PushToken = ""
		st.Schedule = &sc
	}
	if last := s.rt.lastBackup.Load(); last != 0 {
		st.LastBackup = time.Unix(last, 0).UTC()
	}
	return st
}
