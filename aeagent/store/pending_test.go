package store

import (
	"crypto"
	"errors"
	"path/filepath"
	"testing"
	"time"
)

func TestPending(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir)
	submitted := time.Date(2025, 3, 1, 8, 0, 0, 0, time.FixedZone("CET", 3600))
	reqs := []PendingRequest{
		{Template: "Web Server", RequestID: 42, Submitted: submitted, CESURL: "https://ca.example.com/CES", Key: getRSAKey(t)},
		{Template: "Mail", RequestID: 7, Submitted: submitted.Add(time.Hour), Key: edKey(t)},
		{Template: "archive", RequestID: 1 << 40, Key: ecKey(t)},
	}
	for _, p := range reqs {
		if err := s.AddPending(p); err != nil {
			t.Fatalf("AddPending(%q) = %v", p.Template, err)
		}
	}
	if got := mode(t, filepath.Join(dir, pendingDir, "Web%20Server", keyFile)); got != "0600" {
		t.Errorf("mode of the pending key = %s, want 0600", got)
	}
	got, err := s.Pending()
	if err != nil {
		t.Fatalf("Pending = %v", err)
	}
	want := []PendingRequest{reqs[1], reqs[0], reqs[2]} // by template
	if len(got) != len(want) {
		t.Fatalf("Pending = %d requests, want %d", len(got), len(want))
	}
	for i, w := range want {
		g := got[i]
		if g.Template != w.Template || g.RequestID != w.RequestID || !g.Submitted.Equal(w.Submitted) || g.CESURL != w.CESURL {
			t.Errorf("Pending()[%d] = %+v, want %+v", i, g, w)
		}
		if g.Key == nil || !g.Key.Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(w.Key.Public()) {
			t.Errorf("Pending()[%d] (%q) has another key", i, g.Template)
		}
	}

	before := snapshot(t, dir)
	for _, tc := range []struct {
		name string
		err  error
		want error
	}{
		{"second request", s.AddPending(PendingRequest{Template: "Mail", RequestID: 8, Key: ecKey(t)}), nil},
		{"request ID 0", s.AddPending(PendingRequest{Template: "New", Key: ecKey(t)}), nil},
		{"no key", s.AddPending(PendingRequest{Template: "New", RequestID: 9}), nil},
		{"empty template", s.AddPending(PendingRequest{RequestID: 9, Key: ecKey(t)}), nil},
		{"drop with another ID", s.DropPending("Mail", 8), ErrNotFound},
		{"drop without a request", s.DropPending("New", 8), ErrNotFound},
	} {
		if tc.err == nil || tc.want != nil && !errors.Is(tc.err, tc.want) {
			t.Errorf("%s: error %v, want %v", tc.name, tc.err, tc.want)
		}
	}
	checkUnchanged(t, before, snapshot(t, dir))

	if err := s.DropPending("Mail", 7); err != nil {
		t.Fatalf("DropPending = %v", err)
	}
	if got, err := s.Pending(); err != nil || len(got) != 2 {
		t.Errorf("Pending after DropPending = %d requests, %v, want 2", len(got), err)
	}
	if left := stagingLeft(t, dir); len(left) > 0 {
		t.Errorf("staging left behind: %v", left)
	}
	if err := s.AddPending(PendingRequest{Template: "Mail", RequestID: 8, Key: ecKey(t)}); err != nil {
		t.Errorf("AddPending after DropPending = %v", err)
	}
}
