// Operations settings: kept in the store (shared by every instance), cached here and read again
// every settingsRefresh, so that a change made on one instance reaches the others.

package daemon

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"sync"
	"time"

	"github.com/enrollment-appliance/aeappliance/apiclient"
	"github.com/enrollment-appliance/aeappliance/enrollsvc"
	"github.com/enrollment-appliance/aeappliance/enrollsvc/events"
	"github.com/enrollment-appliance/aeappliance/enrollsvc/store"
)

// settingsRefresh is how often the settings are read again from the store.
const settingsRefresh = 10 * time.Second

// Setting names.
const settingMetrics = "metrics"

// metricsSetting is the "metrics" setting.
type metricsSetting struct {
	TokenSHA256 string `json:"token_sha256,omitempty"` // hex; "" means GET /metrics is open
}

// opsSettings caches the settings.
type opsSettings struct {
	rt *Runtime
	st store.SettingsStore

	mu      sync.Mutex
	metrics []byte                    // SHA-256 of the metrics token, nil: open
	syslog  *apiclient.SyslogSettings // nil: off
}

// newOpsSettings loads the settings (nil when the store keeps none).
func (rt *Runtime) newOpsSettings(ctx context.Context) (*opsSettings, error) {
	st, ok := rt.Store.(store.SettingsStore)
	if !ok {
		return nil, nil
	}
	o := &opsSettings{rt: rt, st: st}
	return o, o.load(ctx)
}

// load reads every setting from the store.
func (o *opsSettings) load(ctx context.Context) error {
	var m metricsSetting
	if err := o.get(ctx, settingMetrics, &m); err != nil {
		return err
	}
	sum, err := hex.DecodeString(m.TokenSHA256)
	if err != nil || (len(sum) != 0 && len(sum) != 32) {
		return fmt.Errorf("setting %q: token_sha256 is not a hex SHA-256", settingMetrics)
	}
	var sl apiclient.SyslogSettings
	if err := o.get(ctx, settingSyslog, &sl); err != nil {
		return err
	}
	var bs apiclient.BackupSchedule
	if err := o.get(ctx, settingBackupSchedule, &bs); err != nil {
		return err
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if len(sum) == 0 {
		sum = nil
	}
	o.metrics = sum
	var next *apiclient.SyslogSettings
	if sl.Address != "" {
		next = &sl
	}
	if o.rt.scheduler != nil {
		var sched *apiclient.BackupSchedule
		if bs.Every != "" {
			sched = &bs
		}
		if err := o.rt.scheduler.set(sched); err != nil {
			return fmt.Errorf("setting %q: %w", settingBackupSchedule, err)
		}
	}
	if !reflect.DeepEqual(next, o.syslog) {
		if err := o.rt.applySyslog(next); err != nil {
			return fmt.Errorf("setting %q: %w", settingSyslog, err)
		}
		o.syslog = next
	}
	return nil
}

// get decodes the setting name into v; a setting never set leaves v as it is.
func (o *opsSettings) get(ctx context.Context, name string, v any) error {
	s, err := o.st.GetSetting(ctx, name)
	if errors.Is(err, store.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	if err := json.Unmarshal(s.Value, v); err != nil {
		return fmt.Errorf("setting %q: %w", name, err)
	}
	return nil
}

// put stores the setting name with its audit event (which names the setting, and what kv say),
// then loads the settings again.
func (o *opsSettings) put(ctx context.Context, name string, v any, by, remote string, kv ...any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	now := o.rt.Recorder.Now()
	ev := events.New(now, events.SettingChanged, "", append([]any{"setting", name, "by", by, "remote", remote}, kv...)...)
	if err := o.st.PutSetting(ctx, store.Setting{Name: name, Value: b, Updated: now, By: by}, ev); err != nil {
		return &enrollsvc.Error{Kind: enrollsvc.KindOf(err), Op: "changing setting " + name, Err: err}
	}
	o.rt.Recorder.Log(ctx, ev)
	return o.load(ctx)
}

// run reads the settings again every settingsRefresh until ctx ends.
func (o *opsSettings) run(ctx context.Context) {
	runEvery(ctx, settingsRefresh, func() {
		if err := o.load(ctx); err != nil && ctx.Err() == nil {
			o.rt.Log.Warn("reading the operations settings", "error", err)
		}
	})
}

// MetricsToken implements api.OpsSettings.
func (o *opsSettings) MetricsToken() []byte {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.metrics
}

// SetMetricsToken implements api.OpsSettings.
func (o *opsSettings) SetMetricsToken(ctx context.Context, sum []byte, by, remote string) error {
	if sum != nil && len(sum) != 32 {
		return errors.New("a metrics token hash is a SHA-256")
	}
	return o.put(ctx, settingMetrics, metricsSetting{TokenSHA256: hex.EncodeToString(sum)}, by, remote,
		"metrics_token", sum != nil)
}

// Syslog implements api.OpsSettings.
func (o *opsSettings) Syslog(ctx context.Context) apiclient.SyslogStatus {
	o.mu.Lock()
	s := o.syslog
	o.mu.Unlock()
	return o.rt.syslogStatus(s)
}

// SetSyslog implements api.OpsSettings: it checks s (nil: off) before storing it.
func (o *opsSettings) SetSyslog(ctx context.Context, s *apiclient.SyslogSettings, by, remote string) error {
	v := apiclient.SyslogSettings{}
	if s != nil {
		if _, err := syslogConfig(*s); err != nil {
			return &enrollsvc.Error{Kind: enrollsvc.KindBadRequest, Op: "remote syslog", Err: err}
		}
		v = *s
	}
	return o.put(ctx, settingSyslog, v, by, remote, "address", v.Address, "transport", v.Transport)
}

// BackupSchedule implements api.OpsSettings.
func (o *opsSettings) BackupSchedule(ctx context.Context) apiclient.BackupScheduleStatus {
	return o.rt.scheduler.status()
}

// SetBackupSchedule implements api.OpsSettings: it checks s (nil: off) before storing it.
func (o *opsSettings) SetBackupSchedule(ctx context.Context, s *apiclient.BackupSchedule, by, remote string) error {
	v := apiclient.BackupSchedule{}
	if s != nil {
		if _, err := checkSchedule(*s); err != nil {
			return &enrollsvc.Error{Kind: enrollsvc.KindBadRequest, Op: "backup schedule", Err: err}
		}
		v = *s
	}
	return o.put(ctx, settingBackupSchedule, v, by, remote, "every", v.Every, "keep", v.Keep, "push_url", v.PushURL,
		"recipients", len(v.Recipients))
}

// RunBackupSchedule implements api.OpsSettings: a scheduled backup now.
func (o *opsSettings) RunBackupSchedule(ctx context.Context, by string) (string, error) {
	return o.rt.scheduler.runOnce(ctx, by)
}
