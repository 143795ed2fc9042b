package remotelog

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"sync/atomic"
	"time"
)

// QueueSize bounds the operational log's messages waiting for the server.
const QueueSize = 4096

// Tee is a slog.Handler that writes every record to the handler it wraps and, once SetSender
// gave it a server, also queues it (as the same JSON line) for the server as the operational log
// stream. Records of audit events (an "audit" attribute) are not queued: they have their own
// stream. The queue is bounded; what does not fit is dropped and counted (Dropped).
type Tee struct {
	next   slog.Handler
	remote slog.Handler // JSON into the line writer
	st     *teeState
}

type teeState struct {
	queue    chan []byte
	sender   atomic.Pointer[Sender]
	hostname string
	dropped  atomic.Int64
	sent     atomic.Int64
	level    slog.Leveler
}

// NewTee wraps next; records at level or above go to the server (nil: info). Call Run to send.
func NewTee(next slog.Handler, level slog.Leveler) *Tee {
	if level == nil {
		level = slog.LevelInfo
	}
	h, _ := os.Hostname()
	st := &teeState{queue: make(chan []byte, QueueSize), hostname: h, level: level}
	return &Tee{next: next, remote: slog.NewJSONHandler(lineWriter{st}, &slog.HandlerOptions{Level: level}), st: st}
}

// SetSender starts (or, with nil, stops) sending to a server; what is queued goes to the new one.
func (t *Tee) SetSender(s *Sender) {
	if old := t.st.sender.Swap(s); old != nil && old != s {
		old.Close()
	}
}

// SetHostname names this instance in the messages' HOSTNAME.
func (t *Tee) SetHostname(h string) { t.st.hostname = h }

// Dropped counts the lines dropped because the queue was full; Sent those sent.
func (t *Tee) Dropped() int64 { return t.st.dropped.Load() }

// Sent counts the lines sent.
func (t *Tee) Sent() int64 { return t.st.sent.Load() }

// Enabled implements slog.Handler.
func (t *Tee) Enabled(ctx context.Context, l slog.Level) bool {
	return t.next.Enabled(ctx, l) || (t.st.sender.Load() != nil && l >= t.st.level.Level())
}

// Handle implements slog.Handler.
func (t *Tee) Handle(ctx context.Context, r slog.Record) error {
	var err error
	if t.next.Enabled(ctx, r.Level) {
		err = t.next.Handle(ctx, r)
	}
	if t.st.sender.Load() == nil || r.Level < t.st.level.Level() {
		return err
	}
	audit := false
	r.Attrs(func(a slog.Attr) bool {
		audit = a.Key == "audit"
		return !audit
	})
	if !audit {
		_ = t.remote.Handle(ctx, r)
	}
	return err
}

// WithAttrs implements slog.Handler.
func (t *Tee) WithAttrs(as []slog.Attr) slog.Handler {
	return &Tee{next: t.next.WithAttrs(as), remote: t.remote.WithAttrs(as), st: t.st}
}

// WithGroup implements slog.Handler.
func (t *Tee) WithGroup(name string) slog.Handler {
	return &Tee{next: t.next.WithGroup(name), remote: t.remote.WithGroup(name), st: t.st}
}

// lineWriter takes the JSON handler's lines (one Write per record) into the queue.
type lineWriter struct{ st *teeState }

func (w lineWriter) Write(p []byte) (int, error) {
	line := bytes.TrimRight(p, "\n")
	select {
	case w.st.queue <- append([]byte(nil), line...):
	default:
		w.st.dropped.Add(1)
	}
	return len(p), nil
}

// severity reads the level slog's JSON handler wrote.
func severity(line []byte) int {
	switch {
	case bytes.Contains(line, []byte(`"level":"ERROR`)):
		return SevError
	case bytes.Contains(line, []byte(`"level":"WARN`)):
		return SevWarning
	case bytes.Contains(line, []byte(`"level":"DEBUG`)):
		return SevDebug
	}
	return SevInfo
}

// Run sends the queue to the current server until ctx ends. A line the server could not take is
// tried again after a pause (1 s, doubling to 30 s) while new ones queue behind it.
func (t *Tee) Run(ctx context.Context) {
	var pending []byte
	pause := time.Second
	for {
		if pending == nil {
			select {
			case <-ctx.Done():
				return
			case pending = <-t.st.queue:
			}
		}
		s := t.st.sender.Load()
		if s == nil {
			pending = nil // stopped: what was queued for the old server is not kept
			continue
		}
		msg := Format(Message{Facility: FacilityDaemon, Severity: severity(pending), Time: time.Now(), Hostname: t.st.hostname,
			AppName: "enrollsvc", MsgID: "log", Msg: string(pending)})
		if err := s.Send(ctx, msg); err != nil {
			select {
			case <-ctx.Done():
				return
			case <-time.After(pause):
			}
			pause = min(2*pause, 30*time.Second)
			continue
		}
		t.st.sent.Add(1)
		pending, pause = nil, time.Second
	}
}

var _ slog.Handler = (*Tee)(nil)
