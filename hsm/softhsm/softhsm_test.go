package softhsm

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestWriteConfig(t *testing.T) {
	dir := t.TempDir()
	conf, tokens := filepath.Join(dir, "softhsm2.conf"), filepath.Join(dir, "a", "tokens")
	if err := WriteConfig(conf, tokens); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(tokens)
	if err != nil || !st.IsDir() || st.Mode().Perm() != 0o700 {
		t.Fatalf("token dir: %v, %v; want a 0700 directory", st, err)
	}
	b, err := os.ReadFile(conf)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"directories.tokendir = " + tokens + "\n", "objectstore.backend = file\n",
		"log.level = ERROR\n", "slots.removable = false\n"} {
		if !strings.Contains(string(b), want) {
			t.Errorf("softhsm2.conf lacks %q:\n%s", want, b)
		}
	}
	if err := WriteConfig(conf, "bad\ndir"); err == nil {
		t.Error("WriteConfig with a newline in the directory succeeded")
	}
}

func TestModulePath(t *testing.T) {
	saved := ModulePaths
	defer func() { ModulePaths = saved }()
	ModulePaths = []string{"/nonexistent/libsofthsm2.so"}
	if _, err := ModulePath(); err == nil || !strings.Contains(err.Error(), "/nonexistent/libsofthsm2.so") {
		t.Errorf("ModulePath() with nothing installed: error = %v", err)
	}
	lib := filepath.Join(t.TempDir(), "libsofthsm2.so")
	if err := os.WriteFile(lib, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	ModulePaths = []string{"/nonexistent/libsofthsm2.so", lib}
	if got, err := ModulePath(); err != nil || got != lib {
		t.Errorf("ModulePath() = %q, %v, want %q", got, err, lib)
	}
}
