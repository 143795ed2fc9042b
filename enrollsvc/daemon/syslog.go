// Remote syslog: the "syslog" operations setting, the audit stream (this instance's chain of
// events, read from the store in order from a cursor kept in the data directory, so that an
// outage or a restart is caught up and nothing is sent out of order) and the operational log
// stream (remotelog.Tee, best effort).

package daemon

import (
	"context"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/enrollment-appliance/aeappliance/apiclient"
	"github.com/enrollment-appliance/aeappliance/config"
	"github.com/enrollment-appliance/aeappliance/enrollsvc/remotelog"
	"github.com/enrollment-appliance/aeappliance/enrollsvc/store"
	"github.com/enrollment-appliance/aeappliance/proto/auditlog"
)

const settingSyslog = "syslog"

// SyslogCursorFile holds, in the data directory, the sequence number of the last audit event
// the remote syslog server took.
const SyslogCursorFile = "syslog-audit.cursor"

// syslogConfig checks a syslog setting and makes the sender configuration.
func syslogConfig(s apiclient.SyslogSettings) (remotelog.Config, error) {
	cfg := remotelog.Config{Address: s.Address, Transport: s.Transport, ServerName: s.ServerName}
	if cfg.Transport == "" {
		cfg.Transport = remotelog.TLS
	}
	if err := cfg.Check(); err != nil {
		return cfg, err
	}
	if s.CAPEM != "" {
		if cfg.Transport != remotelog.TLS {
			return cfg, errors.New("remote syslog: a CA is for the tls transport")
		}
		cfg.RootCAs = x509.NewCertPool()
		if !cfg.RootCAs.AppendCertsFromPEM([]byte(s.CAPEM)) {
			return cfg, errors.New("remote syslog: ca_pem holds no PEM certificate")
		}
	}
	return cfg, nil
}

// auditStream sends this instance's audit events to the remote syslog server.
type auditStream struct {
	rt    *Runtime
	chain string // the store's chain of this instance
	host  string
	wake  chan struct{}

	mu     sync.Mutex
	sender *remotelog.Sender
	state  string // what status shows
}

func newAuditStream(rt *Runtime, chain, host string) *auditStream {
	return &auditStream{rt: rt, chain: chain, host: host, wake: make(chan struct{}, 1), state: "off"}
}

// set starts sending to s (nil: stops). Starting for the first time on this data directory
// places the cursor after the newest event now, before set returns: what happens from the
// moment the setting is applied is sent, not the history before it.
func (a *auditStream) set(s *remotelog.Sender) {
	if s != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		if _, err := a.cursor(ctx); err != nil {
			a.rt.Log.Warn("remote syslog: placing the audit cursor", "error", err)
		}
		cancel()
	}
	a.mu.Lock()
	if a.sender != nil && a.sender != s {
		a.sender.Close()
	}
	a.sender = s
	if s == nil {
		a.state = "off"
	} else {
		a.state = "connecting"
	}
	a.mu.Unlock()
	a.poke()
}

// poke says a new event may be there.
func (a *auditStream) poke() {
	select {
	case a.wake <- struct{}{}:
	default:
	}
}

func (a *auditStream) current() *remotelog.Sender {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.sender
}

func (a *auditStream) setState(s string) {
	a.mu.Lock()
	a.state = s
	a.mu.Unlock()
}

// State is the stream's last state: off, connecting, sending, caught up, or the last error.
func (a *auditStream) State() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.state
}

// cursor reads the last sequence number sent; without one, it starts after this chain's newest
// event (a new remote server gets what happens from now on, not the whole history).
func (a *auditStream) cursor(ctx context.Context) (int64, error) {
	b, err := os.ReadFile(config.Path(a.rt.Dir, SyslogCursorFile))
	if err == nil {
		return strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	}
	if !errors.Is(err, os.ErrNotExist) {
		return 0, err
	}
	evs, err := a.rt.Store.ListEvents(ctx, store.EventFilter{Chain: &a.chain, Newest: true, Limit: 1})
	if err != nil || len(evs) == 0 {
		return 0, err
	}
	return evs[0].Seq, a.saveCursor(evs[0].Seq)
}

func (a *auditStream) saveCursor(seq int64) error {
	return config.WriteFileAtomic(config.Path(a.rt.Dir, SyslogCursorFile), []byte(strconv.FormatInt(seq, 10)+"\n"), 0o600)
}

// run sends events until ctx ends: each in order, the next only once the previous was written;
// after a failure the same event is sent again after a pause (0.5 s, doubling to 30 s).
func (a *auditStream) run(ctx context.Context) {
	const firstPause = 500 * time.Millisecond
	pause := firstPause
	var after int64 = -1
	var recent []sentAt // what the current connection took lately
	wait := func(d time.Duration) bool {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-ctx.Done():
			return false
		case <-a.wake:
		case <-t.C:
		}
		return true
	}
	for ctx.Err() == nil {
		s := a.current()
		if s == nil {
			after = -1 // read the cursor again when sending starts
			if !wait(time.Minute) {
				return
			}
			continue
		}
		if after < 0 {
			c, err := a.cursor(ctx)
			if err != nil {
				a.setState("cursor: " + err.Error())
				if !wait(pause) {
					return
				}
				continue
			}
			after = c
		}
		evs, err := a.rt.Store.ListEvents(ctx, store.EventFilter{AfterSeq: after, Chain: &a.chain, Limit: 500})
		if err != nil {
			a.setState("reading events: " + err.Error())
			if !wait(pause) {
				return
			}
			continue
		}
		if len(evs) == 0 {
			a.setState("caught up")
			if !wait(time.Second) {
				return
			}
			continue
		}
		sent := after
		failed := false
		for _, e := range evs {
			if err := s.Send(ctx, auditMessage(e, a.host)); err != nil {
				a.setState(err.Error())
				failed = true
				break
			}
			sent = e.Seq
			recent = append(recent, sentAt{e.Seq, time.Now()})
		}
		if failed {
			// TCP takes a write without a receipt: the last messages written before the
			// connection broke may never have arrived. Send again those of the last
			// resendWindow (at least once: a receiver tells a repeat by its seq).
			if r := rewind(recent, time.Now()); r >= 0 && r < sent {
				sent = r
			}
			recent = recent[:0]
		} else {
			recent = trimRecent(recent, time.Now())
		}
		if sent != after {
			after = sent
			if err := a.saveCursor(sent); err != nil {
				a.rt.Log.Warn("remote syslog: keeping the audit cursor", "error", err)
			}
			a.setState("sending")
			pause = firstPause
			continue
		}
		if !wait(pause) {
			return
		}
		pause = min(2*pause, 30*time.Second)
	}
}

// resendWindow is how far back, after a connection broke, audit events are sent again.
const resendWindow = 10 * time.Second

type sentAt struct {
	seq int64
	at  time.Time
}

// rewind returns the cursor to send again from: before the first event sent within
// resendWindow of now, or -1 if none was.
func rewind(recent []sentAt, now time.Time) int64 {
	for i, r := range recent {
		if now.Sub(r.at) <= resendWindow {
			if i == 0 {
				return r.seq - 1 // the cursor is a Seq; the store lists events after it
			}
			return recent[i-1].seq
		}
	}
	return -1
}

// trimRecent drops what is older than resendWindow.
func trimRecent(recent []sentAt, now time.Time) []sentAt {
	i := 0
	for i < len(recent) && now.Sub(recent[i].at) > resendWindow {
		i++
	}
	return append(recent[:0], recent[i:]...)
}

// auditMessage is an audit event as an RFC 5424 message: facility "log audit", MSGID "audit",
// the chain in structured data (so that the copy off the box anchors it), the message and the
// fields (JSON) as MSG.
func auditMessage(e store.Event, host string) []byte {
	sev := remotelog.SevInfo
	switch e.Level {
	case "error":
		sev = remotelog.SevError
	case "warning":
		sev = remotelog.SevWarning
	}
	msg := e.Message
	if f, err := auditlog.CanonicalFields(e.Fields); err == nil && f != nil {
		msg += " " + string(f)
	}
	return remotelog.Format(remotelog.Message{Facility: remotelog.FacilityAudit, Severity: sev, Time: e.Time,
		Hostname: host, AppName: "enrollsvc", MsgID: "audit", SDID: remotelog.SDID, Params: []remotelog.Param{
			{Name: "seq", Value: strconv.FormatInt(e.Seq, 10)}, {Name: "id", Value: strconv.Itoa(e.ID)},
			{Name: "category", Value: e.Category}, {Name: "instance", Value: e.Instance},
			{Name: "n", Value: strconv.FormatInt(e.N, 10)}, {Name: "prev", Value: hex.EncodeToString(e.Prev)},
			{Name: "hash", Value: hex.EncodeToString(e.Hash)}},
		Msg: msg})
}

// applySyslog starts, changes or stops both streams for the setting s (nil: off).
func (rt *Runtime) applySyslog(s *apiclient.SyslogSettings) error {
	if rt.audit == nil {
		return nil
	}
	if s == nil || s.Address == "" {
		rt.audit.set(nil)
		if rt.logTee != nil {
			rt.logTee.SetSender(nil)
		}
		return nil
	}
	cfg, err := syslogConfig(*s)
	if err != nil {
		return err
	}
	rt.audit.set(remotelog.NewSender(cfg))
	if rt.logTee != nil {
		rt.logTee.SetSender(remotelog.NewSender(cfg))
	}
	return nil
}

// SyslogStatus reports the setting and the audit stream's state.
func (rt *Runtime) syslogStatus(s *apiclient.SyslogSettings) apiclient.SyslogStatus {
	st := apiclient.SyslogStatus{}
	if s != nil {
		st.SyslogSettings = *s
	}
	if rt.audit != nil {
		st.Audit = rt.audit.State()
	}
	if rt.logTee != nil {
		st.LogSent, st.LogDropped = rt.logTee.Sent(), rt.logTee.Dropped()
	}
	return st
}
