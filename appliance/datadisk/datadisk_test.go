package datadisk

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// needTool fails on CI and skips elsewhere when program (of Debian package pkg) is missing.
func needTool(t *testing.T, program, pkg string) {
	t.Helper()
	if _, err := exec.LookPath(program); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s not found (make deps installs %s): %v", program, pkg, err)
		}
		t.Skipf("%s not found: %v", program, err)
	}
}

func image(t *testing.T, size int64, fill func(f *os.File)) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "disk.img")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	if fill != nil {
		fill(f)
	}
	return p
}

func TestProbeFormatCheck(t *testing.T) {
	needTool(t, "mke2fs", "e2fsprogs")
	ctx := context.Background()
	blank := image(t, 64<<20, nil)
	if k, err := Probe(blank); err != nil || k != Blank {
		t.Fatalf("Probe(zeros) = %v, %v; want blank", k, err)
	}
	if err := Format(ctx, blank); err != nil {
		t.Fatalf("Format = %v", err)
	}
	if k, err := Probe(blank); err != nil || k != Ext {
		t.Fatalf("Probe(after Format) = %v, %v; want ext4", k, err)
	}
	if msg, err := Check(ctx, blank); err != nil {
		t.Fatalf("Check(fresh file system) = %q, %v", msg, err)
	}
	out, err := exec.Command("dumpe2fs", "-h", blank).Output()
	if err != nil {
		t.Fatalf("dumpe2fs: %v", err)
	}
	if !strings.Contains(string(out), "Filesystem volume name:   "+Label) || !strings.Contains(string(out), "extent") {
		t.Errorf("dumpe2fs -h: want label %q and ext4 features, got\n%s", Label, out)
	}
}

func TestProbeRefusesOtherContent(t *testing.T) {
	// An MBR partition table: not blank, not ext4, so never formatted.
	mbr := image(t, 8<<20, func(f *os.File) {
		if _, err := f.WriteAt([]byte{0x55, 0xAA}, 510); err != nil {
			t.Fatal(err)
		}
	})
	if k, err := Probe(mbr); err != nil || k != Unknown {
		t.Errorf("Probe(MBR) = %v, %v; want unknown content", k, err)
	}
	// Data past the first MiB does not make a disk non-blank; data inside it does.
	late := image(t, 8<<20, func(f *os.File) {
		if _, err := f.WriteAt([]byte("x"), 2<<20); err != nil {
			t.Fatal(err)
		}
	})
	if k, _ := Probe(late); k != Blank {
		t.Errorf("Probe(data after 1 MiB) = %v, want blank", k)
	}
	if _, err := Probe(image(t, 4096, nil)); err == nil {
		t.Error("Probe(4 KiB disk) = nil error, want too small")
	}
	if _, err := Probe(filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Error("Probe(missing) = nil error")
	}
}

func TestFind(t *testing.T) {
	dir := t.TempDir()
	a, b := filepath.Join(dir, "vda"), filepath.Join(dir, "sda")
	go func() {
		time.Sleep(100 * time.Millisecond)
		os.WriteFile(b, nil, 0o644)
	}()
	got, err := Find(context.Background(), []string{a, b}, 5*time.Second)
	if err != nil || got != b {
		t.Errorf("Find = %q, %v; want %q", got, err, b)
	}
	if _, err := Find(context.Background(), []string{a}, 100*time.Millisecond); err == nil {
		t.Error("Find(never appears) = nil error")
	}
}

func TestHumanBytes(t *testing.T) {
	for _, c := range []struct {
		n    uint64
		want string
	}{{512, "512 B"}, {1536, "1.5 KiB"}, {255 << 20, "255.0 MiB"}, {3 << 30, "3.0 GiB"}} {
		if got := HumanBytes(c.n); got != c.want {
			t.Errorf("HumanBytes(%d) = %q, want %q", c.n, got, c.want)
		}
	}
	if got, want := (Usage{Total: 100 << 20, Used: 25 << 20, Avail: 70 << 20}).String(), "25.0 MiB used of 100.0 MiB (25%)"; got != want {
		t.Errorf("Usage.String() = %q, want %q", got, want)
	}
}
