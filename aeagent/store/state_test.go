package store

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestJSON(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir)
	type state struct {
		Passes int      `json:"passes"`
		Names  []string `json:"names"`
	}
	var got state
	if found, err := s.ReadJSON("last-pass.json", &got); found || err != nil {
		t.Errorf("ReadJSON of a missing file = %v, %v, want false, nil", found, err)
	}
	for _, want := range []state{{1, []string{"a"}}, {2, nil}} {
		if err := s.WriteJSON("last-pass.json", want); err != nil {
			t.Fatalf("WriteJSON = %v", err)
		}
		got = state{}
		if found, err := s.ReadJSON("last-pass.json", &got); !found || err != nil || got.Passes != want.Passes || len(got.Names) != len(want.Names) {
			t.Errorf("ReadJSON = %v, %v, %+v, want true, nil, %+v", found, err, got, want)
		}
	}
	if m := mode(t, filepath.Join(dir, "last-pass.json")); m != "0600" {
		t.Errorf("mode of the state file = %s, want 0600", m)
	}
	if left := stagingLeft(t, dir); len(left) > 0 {
		t.Errorf("staging left behind: %v", left)
	}

	for _, name := range []string{"", ".json", ".hidden.json", "a/b.json", "../x.json", "x.txt", "x.json/", "x\x00.json", "archive", ".lock"} {
		if _, err := s.ReadJSON(name, &got); err == nil {
			t.Errorf("ReadJSON(%q) succeeded, want an error", name)
		}
		if err := s.WriteJSON(name, got); err == nil {
			t.Errorf("WriteJSON(%q) succeeded, want an error", name)
		}
	}
	if err := s.WriteJSON("x.json", func() {}); err == nil {
		t.Errorf("WriteJSON(a func) succeeded, want an error")
	}

	path := filepath.Join(dir, "policy.json")
	for _, bad := range []string{"{", `{"passes": "many"}`, "{} {}"} {
		if err := os.WriteFile(path, []byte(bad), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := s.ReadJSON("policy.json", &got); !errors.Is(err, ErrCorrupt) {
			t.Errorf("ReadJSON(%q) = %v, want ErrCorrupt", bad, err)
		}
	}
	if err := os.WriteFile(path, []byte("{}"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := s.ReadJSON("policy.json", got); err == nil || errors.Is(err, ErrCorrupt) {
		t.Errorf("ReadJSON into a non-pointer = %v, want an error that is not ErrCorrupt", err)
	}
}
