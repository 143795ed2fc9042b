package firmware

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// needTool fails on CI and skips elsewhere when a build tool is missing (make deps
// installs them all).
func needTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s is required on CI: %v", name, err)
		}
		t.Skipf("%s not installed (make deps installs it): %v", name, err)
	}
	return p
}

// needSoftHSM returns the host's SoftHSM2 module (DefaultHSMModule), failing on CI and
// skipping elsewhere when it is missing.
func needSoftHSM(t *testing.T) string {
	t.Helper()
	if _, err := os.Stat(DefaultHSMModule); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("SoftHSM2 is required on CI: %v", err)
		}
		t.Skipf("SoftHSM2 not installed (make deps installs it): %v", err)
	}
	return DefaultHSMModule
}

// TestHSMSoftHSM bundles the real SoftHSM2 module: the symlink Debian installs is
// resolved, the module goes under HSMDir, and its libraries come along, including those
// only its libraries need (libm, through libstdc++).
func TestHSMSoftHSM(t *testing.T) {
	mod := needSoftHSM(t)
	m, err := inspectHSMModule(mod)
	if err != nil {
		t.Fatal(err)
	}
	real, _ := filepath.EvalSymlinks(mod)
	sum, _ := fileSHA256(real)
	if m.Module != "/usr/lib/pkcs11/libsofthsm2.so" || !m.SoftHSM || m.Source != real || m.SHA256 != sum {
		t.Errorf("inspectHSMModule(%s) = %+v, want module /usr/lib/pkcs11/libsofthsm2.so, SoftHSM, from %s, sha256 %s", mod, m, real, sum)
	}
	files, err := hsmFiles(t.Context(), &m)
	if err != nil {
		t.Fatal(err)
	}
	if files[m.Module] != real {
		t.Errorf("hsmFiles: the module comes from %q, want %q", files[m.Module], real)
	}
	libs := strings.Join(m.Libraries, " ")
	for _, want := range []string{"/libcrypto.so.3", "/libstdc++.so.6", "/libgcc_s.so.1", "/libm.so.6", "/libc.so.6", defaultInterp} {
		if !strings.Contains(libs, want) {
			t.Errorf("hsmFiles: libraries %v lack %s", m.Libraries, want)
		}
	}
	for _, l := range m.Libraries {
		if files[l] != l {
			t.Errorf("hsmFiles: %s comes from %s; a library in the loader's directories keeps its path", l, files[l])
		}
	}
	again := m
	if _, err := hsmFiles(t.Context(), &again); err != nil || !reflect.DeepEqual(again.Libraries, m.Libraries) {
		t.Errorf("hsmFiles is not stable: %v, then %v (%v)", m.Libraries, again.Libraries, err)
	}
}

// TestHSMVendorModule builds a small vendor-style module with gcc: its own library sits
// beside it and is found through RUNPATH $ORIGIN, which the image's loader cannot follow
// (the module moves to HSMDir), so that library goes to /usr/lib. The module is no SoftHSM.
func TestHSMVendorModule(t *testing.T) {
	gcc := needTool(t, "gcc")
	dir := filepath.Join(t.TempDir(), "opt", "vendor", "lib")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "dep.c"), []byte("int vendor_dep(void) { return 7; }\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "mod.c"), []byte("#include <string.h>\nint vendor_dep(void);\nint C_GetFunctionList(void **p) { return vendor_dep() + (int)strlen((char *)p); }\n"), 0o644)
	for _, args := range [][]string{
		{"-shared", "-fPIC", "-o", "libvdep.so.1", "-Wl,-soname,libvdep.so.1", "dep.c"},
		{"-shared", "-fPIC", "-o", "libvendorp11.so", "mod.c", "-L.", "-l:libvdep.so.1", "-Wl,-rpath,$ORIGIN"},
	} {
		cmd := exec.Command(gcc, args...)
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("gcc %v: %v: %s", args, err, out)
		}
	}
	link := filepath.Join(t.TempDir(), "current.so")
	if err := os.Symlink(filepath.Join(dir, "libvendorp11.so"), link); err != nil {
		t.Fatal(err)
	}
	m, err := inspectHSMModule(link)
	if err != nil {
		t.Fatal(err)
	}
	if m.Module != "/usr/lib/pkcs11/libvendorp11.so" || m.SoftHSM || m.Source != filepath.Join(dir, "libvendorp11.so") {
		t.Errorf("inspectHSMModule(vendor) = %+v", m)
	}
	files, err := hsmFiles(t.Context(), &m)
	if err != nil {
		t.Fatal(err)
	}
	if got := files["/usr/lib/libvdep.so.1"]; got != filepath.Join(dir, "libvdep.so.1") {
		t.Errorf("hsmFiles: /usr/lib/libvdep.so.1 comes from %q, want the vendor's library (files %v)", got, files)
	}
	if !strings.Contains(strings.Join(m.Libraries, " "), "/libc.so.6") {
		t.Errorf("hsmFiles: libraries %v lack libc", m.Libraries)
	}

	// Without its library the module cannot be bundled, and the error says which is missing.
	os.Remove(filepath.Join(dir, "libvdep.so.1"))
	if _, err := hsmFiles(t.Context(), &m); err == nil || !strings.Contains(err.Error(), "libvdep.so.1") {
		t.Errorf("hsmFiles(missing library) = %v, want an error naming libvdep.so.1", err)
	}
}

func TestHSMModuleErrors(t *testing.T) {
	dir := t.TempDir()
	text := filepath.Join(dir, "libtext.so")
	os.WriteFile(text, []byte("not a library\n"), 0o644)
	empty := filepath.Join(dir, "libempty.so")
	os.WriteFile(empty, nil, 0o644)
	for _, c := range []struct{ file, want string }{
		{filepath.Join(dir, "missing.so"), "missing.so does not exist"},
		{text, "libtext.so is not an ELF shared library"},
		{empty, "libempty.so is not an ELF shared library"},
		{"/bin/ls", "does not export C_GetFunctionList"}, // a PIE executable is ET_DYN too
		{dir, "is not a regular file"},
		{"/lib/x86_64-linux-gnu/libc.so.6", "does not export C_GetFunctionList"},
		{"", "no path given"},
	} {
		if _, err := inspectHSMModule(c.file); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("inspectHSMModule(%q) = %v, want an error with %q", c.file, err, c.want)
		}
	}
}

// TestBuildChecksHSMModuleFirst: a bad module fails the build before anything is made,
// not even the output directory.
func TestBuildChecksHSMModuleFirst(t *testing.T) {
	out := filepath.Join(t.TempDir(), "out")
	for _, mod := range []string{"/nonexistent/libvendor.so", "/etc/hostname"} {
		_, err := Build(context.Background(), Options{Root: "..", OutDir: out, Version: "v1", HSMModule: mod})
		if err == nil || !strings.Contains(err.Error(), "HSM module "+mod) {
			t.Errorf("Build(HSMModule %s) = %v, want an HSM module error", mod, err)
		}
	}
	if _, err := os.Stat(out); err == nil {
		t.Error("Build created the output directory before checking the HSM module")
	}
}

// TestLoaderDirs: loaderDirs is the host loader's system search path, which the image's
// loader (the same file) uses too.
func TestLoaderDirs(t *testing.T) {
	out, err := exec.Command(defaultInterp, "--help").Output()
	if err != nil {
		t.Fatalf("%s --help: %v", defaultInterp, err)
	}
	got := map[string]bool{}
	for _, line := range strings.Split(string(out), "\n") {
		if dir, ok := strings.CutSuffix(strings.TrimSpace(line), " (system search path)"); ok {
			got[dir] = true
		}
	}
	if !reflect.DeepEqual(got, loaderDirs) {
		t.Errorf("%s searches %v, loaderDirs says %v", defaultInterp, got, loaderDirs)
	}
}
