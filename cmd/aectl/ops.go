package main

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/enrollment-appliance/aeappliance/apiclient"
	"github.com/enrollment-appliance/aeappliance/proto/auditlog"
)

// errTrailBroken is returned (exit status 1) when the audit trail does not verify.
var errTrailBroken = errors.New("the audit trail does not verify")

// verifyEvents reads every audit event, oldest first, and checks each instance's hash chain
// (proto/auditlog) here, on the administrator's side, from what the API returns: the first
// broken link is named with its sequence number and why. Each anchor (SEQ:HASH) must be found
// with its hash.
func verifyEvents(ctx context.Context, e *env, anchors []string) error {
	v := auditlog.NewVerifier()
	for _, a := range anchors {
		seq, h, err := auditlog.ParseAnchor(a)
		if err != nil {
			return fmt.Errorf("%w: %v", errUsage, err)
		}
		if err := v.Anchor(seq, h); err != nil {
			return fmt.Errorf("%w: %v", errUsage, err)
		}
	}
	var after int64
	for {
		page, err := e.cl.Events(ctx, apiclient.EventQuery{After: after, Limit: 1000})
		if err != nil {
			return err
		}
		if len(page) == 0 {
			break
		}
		for _, ev := range page {
			r, err := record(ev)
			if err != nil {
				return err
			}
			after = ev.Seq
			if v.Add(r) != nil {
				break
			}
		}
		if v.Result().Broken != nil {
			break
		}
	}
	v.End()
	res := v.Result()
	if err := e.print(res, func(w io.Writer) {
		fmt.Fprintf(w, "Chained events:\t%d\n", res.Events)
		if res.Unchained > 0 {
			fmt.Fprintf(w, "Older, unchained:\t%d (recorded before the trail was chained; not covered)\n", res.Unchained)
		}
		for _, c := range res.Chains {
			name := c.Instance
			if name == "" {
				name = "(this appliance)"
			}
			fmt.Fprintf(w, "Chain %s:\t%d events, last seq %d, head %s\n", name, c.Events, c.LastSeq, c.Head)
		}
		if len(anchors) > 0 {
			fmt.Fprintf(w, "Anchors found:\t%d of %d\n", res.Anchors, len(anchors))
		}
		switch b := res.Broken; {
		case b != nil && b.N == 0:
			fmt.Fprintf(w, "BROKEN at seq %d:\t%s\n", b.Seq, b.Reason)
		case b != nil:
			fmt.Fprintf(w, "BROKEN at seq %d (chain %q, #%d):\t%s\n", b.Seq, b.Instance, b.N, b.Reason)
		default:
			fmt.Fprintln(w, "Verified:\tevery chain is whole")
		}
	}); err != nil {
		return err
	}
	if res.Broken != nil {
		return fmt.Errorf("%w: %v", errTrailBroken, res.Broken)
	}
	return nil
}

// record is the chain's view of an event from the API.
func record(ev apiclient.Event) (auditlog.Record, error) {
	r := auditlog.Record{Seq: ev.Seq, Instance: ev.Instance, N: ev.N, ID: ev.ID, Category: ev.Category,
		Level: ev.Level, Time: ev.Time, Message: ev.Message, Fields: ev.Fields}
	if ev.Hash == "" {
		return r, nil
	}
	var err error
	if r.Prev, err = hex.DecodeString(ev.Prev); err != nil {
		return r, fmt.Errorf("event seq %d: previous hash %q: %w", ev.Seq, ev.Prev, err)
	}
	if r.Hash, err = hex.DecodeString(ev.Hash); err != nil {
		return r, fmt.Errorf("event seq %d: hash %q: %w", ev.Seq, ev.Hash, err)
	}
	return r, nil
}

// writeBackup writes the backup to a temporary file beside out and renames it into place only
// once it was received whole: a cut-short backup never lies at out.
func writeBackup(ctx context.Context, cl *apiclient.Client, in apiclient.BackupRequest, out string) (int64, error) {
	if _, err := os.Lstat(out); err == nil {
		return 0, fmt.Errorf("%s exists", out)
	}
	f, err := os.CreateTemp(filepath.Dir(out), "."+filepath.Base(out)+".part-")
	if err != nil {
		return 0, err
	}
	defer os.Remove(f.Name())
	n, err := cl.Backup(ctx, in, f)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return n, err
	}
	if err := os.Chmod(f.Name(), 0o600); err != nil {
		return n, err
	}
	return n, os.Rename(f.Name(), out)
}

// listFlag is a repeatable string flag.
type listFlag []string

func (l *listFlag) String() string     { return fmt.Sprint(*l) }
func (l *listFlag) Set(s string) error { *l = append(*l, s); return nil }

// backupSchedule is aectl backup schedule [set|off|run].
func backupSchedule(ctx context.Context, e *env, args []string, sched apiclient.BackupSchedule, tokenFile, caFile string) error {
	var st apiclient.BackupScheduleStatus
	var err error
	switch strings.Join(args, " ") {
	case "", "status":
		st, err = e.cl.BackupSchedule(ctx)
	case "off":
		st, err = e.cl.BackupScheduleOff(ctx)
	case "run":
		run, err := e.cl.RunBackupSchedule(ctx)
		if err != nil {
			return err
		}
		return e.print(run, func(w io.Writer) { fmt.Fprintf(w, "Backup:\t%s\n", run.File) })
	case "set":
		if tokenFile != "" {
			b, rerr := os.ReadFile(tokenFile)
			if rerr != nil {
				return rerr
			}
			sched.PushToken = strings.TrimSpace(string(b))
		}
		if caFile != "" {
			b, rerr := os.ReadFile(caFile)
			if rerr != nil {
				return rerr
			}
			sched.PushCAPEM = string(b)
		}
		st, err = e.cl.SetBackupSchedule(ctx, sched)
	default:
		return fmt.Errorf("%w: aectl backup schedule [status|set|off|run], got %q", errUsage, args)
	}
	if err != nil {
		return err
	}
	return e.print(st, func(w io.Writer) {
		if st.Schedule == nil {
			fmt.Fprintln(w, "Schedule:\toff")
		} else {
			s := st.Schedule
			fmt.Fprintf(w, "Schedule:\tevery %s, to %d recipient(s), keep %d on the appliance", s.Every, len(s.Recipients), s.Keep)
			if s.PushURL != "" {
				fmt.Fprintf(w, ", push to %s", s.PushURL)
			}
			fmt.Fprintln(w)
		}
		if !st.LastBackup.IsZero() {
			fmt.Fprintf(w, "Last backup:\t%s\n", st.LastBackup.Format(time.RFC3339))
		}
		if st.LastError != "" {
			fmt.Fprintf(w, "Last run failed:\t%s\n", st.LastError)
		}
	})
}
