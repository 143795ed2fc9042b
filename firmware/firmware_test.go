package firmware

import (
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
)

func names(ms []*kmodule) []string {
	var n []string
	for _, m := range ms {
		n = append(n, m.Name)
	}
	return n
}

func TestResolveModules(t *testing.T) {
	mods := map[string]*kmodule{
		"ext4":           {Name: "ext4", Depends: []string{"mbcache", "jbd2", "crc16"}, PreDeps: []string{"crc32c"}},
		"jbd2":           {Name: "jbd2"},
		"mbcache":        {Name: "mbcache"},
		"crc16":          {Name: "crc16"},
		"crc32c_generic": {Name: "crc32c_generic", Aliases: []string{"crc32c", "crypto-crc32c"}},
		"crc32c_intel":   {Name: "crc32c_intel", Aliases: []string{"crc32c"}},
		"virtio_net":     {Name: "virtio_net", Depends: []string{"net_failover", "virtio"}},
		"net_failover":   {Name: "net_failover", Depends: []string{"failover"}},
		"failover":       {Name: "failover"},
		"virtio":         {Name: "virtio"},
	}
	got, err := resolveModules(mods, []string{"virtio_net", "ext4", "virtio"})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"failover", "net_failover", "virtio", "virtio_net", "mbcache", "jbd2", "crc16", "crc32c_generic", "crc32c_intel", "ext4"}
	if !reflect.DeepEqual(names(got), want) {
		t.Errorf("resolveModules = %v, want %v", names(got), want)
	}
	if _, err := resolveModules(mods, []string{"nope"}); err == nil || !strings.Contains(err.Error(), `"nope"`) {
		t.Errorf("resolveModules(missing) = %v", err)
	}
	mods["jbd2"].Depends = []string{"ext4"}
	if _, err := resolveModules(mods, []string{"ext4"}); err == nil || !strings.Contains(err.Error(), "cycle") {
		t.Errorf("resolveModules(cycle) = %v", err)
	}
}

func TestParseSoftdep(t *testing.T) {
	if got := parseSoftdep("pre: crc32c crc16 post: foo"); !reflect.DeepEqual(got, []string{"crc32c", "crc16"}) {
		t.Errorf("parseSoftdep = %v", got)
	}
}

func TestParseLdList(t *testing.T) {
	out := "\tlinux-vdso.so.1 (0x00007ffd)\n\tlibcrypto.so.3 => /lib/x86_64-linux-gnu/libcrypto.so.3 (0x00007f)\n" +
		"\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f)\n\t/lib64/ld-linux-x86-64.so.2 (0x00007f)\n"
	got, err := parseLdList([]byte(out))
	want := []string{"/lib/x86_64-linux-gnu/libcrypto.so.3", "/lib/x86_64-linux-gnu/libc.so.6", "/lib64/ld-linux-x86-64.so.2"}
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Errorf("parseLdList = %v, %v; want %v", got, err, want)
	}
	if _, err := parseLdList([]byte("\tlibfoo.so.1 => not found\n")); err == nil {
		t.Error("parseLdList(not found) = nil error")
	}
}

// TestSharedLibs lists the libraries of a real dynamically linked host binary.
func TestSharedLibs(t *testing.T) {
	libs, err := sharedLibs(t.Context(), "/bin/ls")
	if err != nil {
		t.Fatal(err)
	}
	joined := strings.Join(libs, " ")
	if !strings.Contains(joined, "libc.so.6") || !strings.Contains(joined, "ld-linux-x86-64.so.2") {
		t.Errorf("sharedLibs(/bin/ls) = %v, want libc and the loader", libs)
	}
}

func TestCopyTreeNormalisesModes(t *testing.T) {
	src, dst := t.TempDir(), t.TempDir()
	os.MkdirAll(filepath.Join(src, "etc"), 0o700)
	os.WriteFile(filepath.Join(src, "README.md"), []byte("doc"), 0o600)
	os.WriteFile(filepath.Join(src, "etc", "hosts"), []byte("127.0.0.1 localhost\n"), 0o600)
	os.WriteFile(filepath.Join(src, "etc", "run"), []byte("#!/bin/sh\n"), 0o700)
	if err := copyTree(src, dst); err != nil {
		t.Fatal(err)
	}
	for p, mode := range map[string]os.FileMode{"etc/hosts": 0o644, "etc/run": 0o755} {
		fi, err := os.Stat(filepath.Join(dst, p))
		if err != nil || fi.Mode().Perm() != mode {
			t.Errorf("%s: %v, %v; want mode %o", p, fi, err, mode)
		}
	}
	if _, err := os.Stat(filepath.Join(dst, "README.md")); err == nil {
		t.Error("the rootfs README was copied into the image")
	}
}

func TestManifestSummary(t *testing.T) {
	m := Manifest{Files: map[string]FileMeta{KernelFile: {Size: 8 << 20}, InitramfsFile: {Size: 15 << 20}},
		Modules: []string{"virtio", "ext4"}, AlwaysLoad: []string{"ext4"},
		HSM: HSMMeta{Module: "/usr/lib/pkcs11/libsofthsm2.so", SHA256: "abc", SoftHSM: true,
			Source: "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so", Libraries: []string{"/lib/x86_64-linux-gnu/libc.so.6"}}}
	m.Release.Version, m.Kernel.Release = "v1", "6.1.0-56-amd64"
	if m.Total() != 23<<20 {
		t.Errorf("Total = %d", m.Total())
	}
	s := m.Summary()
	for _, want := range []string{"release image v1 (kernel 6.1.0-56-amd64", "8.0 MB", "15.0 MB", "23.0 MB  (limit 40.0 MB)",
		"/usr/lib/pkcs11/libsofthsm2.so  sha256 abc", "SoftHSM2, from /usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so, with 1 libraries",
		"kernel modules       2 (1 at every boot, the others for the devices present)"} {
		if !strings.Contains(s, want) {
			t.Errorf("Summary lacks %q:\n%s", want, s)
		}
	}
	m.Debug, m.HSM.SoftHSM = true, false
	s = m.Summary()
	for _, want := range []string{"DEBUG image (has a shell: not for production) v1", "vendor module, from"} {
		if !strings.Contains(s, want) {
			t.Errorf("debug Summary lacks %q:\n%s", want, s)
		}
	}
}

func TestDebugVersion(t *testing.T) {
	for _, c := range []struct {
		version string
		debug   bool
		want    string
	}{{"v1", false, "v1"}, {"v1", true, "v1-debug"}, {"v1-debug", true, "v1-debug"}} {
		o := Options{Root: ".", OutDir: "out", Version: c.version, Debug: c.debug}
		if err := o.defaults(); err != nil || o.Version != c.want {
			t.Errorf("defaults(%q, debug %v): version %q, %v; want %q", c.version, c.debug, o.Version, err, c.want)
		}
	}
}

// kernelModulesDir is the lib/modules/RELEASE directory of a kernel package make image
// already extracted into build/cache, or "" when there is none.
func kernelModulesDir() string {
	dirs, _ := filepath.Glob("../build/cache/linux-image-*/lib/modules/*")
	if len(dirs) == 0 {
		return ""
	}
	return dirs[len(dirs)-1]
}

// defaultModulesInKernel resolves DefaultModules against the kernel of kernelModulesDir, or
// returns "" when there is none.
func defaultModulesInKernel(t *testing.T) (string, []*kmodule) {
	t.Helper()
	dir := kernelModulesDir()
	if dir == "" {
		return "", nil
	}
	mods, err := scanModules(dir)
	if err != nil {
		t.Fatal(err)
	}
	order, err := resolveModules(mods, DefaultModules)
	if err != nil {
		t.Fatal(err)
	}
	return dir, order
}

// TestDefaultModulesInKernel resolves DefaultModules against the kernel package of the
// last image build: every module exists, none but the known ones asks for a firmware
// blob (the image bundles none), and they stay a small part of the image.
func TestDefaultModulesInKernel(t *testing.T) {
	dir, order := defaultModulesInKernel(t)
	if dir == "" {
		t.Skip("no kernel package extracted in build/cache (make image fetches one)")
	}
	// Drivers that name firmware files but work without them on most of their chips.
	firmwareOptional := map[string]bool{"tg3": true, "r8169": true}
	var size int64
	for _, m := range order {
		info, err := readModinfo(filepath.Join(dir, m.Path))
		if err != nil {
			t.Fatal(err)
		}
		if len(info["firmware"]) > 0 && !firmwareOptional[m.Name] {
			t.Errorf("module %s needs firmware %v, which the image does not bundle", m.Name, info["firmware"])
		}
		fi, err := os.Stat(filepath.Join(dir, m.Path))
		if err != nil {
			t.Fatal(err)
		}
		size += fi.Size()
	}
	t.Logf("%s: %d modules, %.1f MB uncompressed", filepath.Base(dir), len(order), float64(size)/(1<<20))
	if len(order) > 80 || size > 24<<20 {
		t.Errorf("%d modules, %d bytes: more than the image should carry", len(order), size)
	}
}

// TestImageHasDiskEncryption: the image carries cryptsetup with every library it needs,
// and the kernel modules of dm-crypt with aes-xts; the TPM's drivers are built into the
// kernel of the last image build.
func TestImageHasDiskEncryption(t *testing.T) {
	if _, err := os.Stat("/sbin/cryptsetup"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("cryptsetup not found (make deps installs cryptsetup-bin): %v", err)
		}
		t.Skipf("cryptsetup not found: %v", err)
	}
	host, err := hostFiles(t.Context(), "/bin/ls")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"/sbin/cryptsetup", "/sbin/mke2fs", "/sbin/e2fsck", "/etc/mke2fs.conf"} {
		if host[want] != want {
			t.Errorf("the image lacks %s", want)
		}
	}
	libs, err := sharedLibs(t.Context(), "/sbin/cryptsetup")
	if err != nil {
		t.Fatal(err)
	}
	var libNames []string
	for _, l := range libs {
		if host[l] != l {
			t.Errorf("the image lacks %s, which cryptsetup needs", l)
		}
		libNames = append(libNames, filepath.Base(l))
	}
	for _, want := range []string{"libcryptsetup.so.12", "libdevmapper.so.1.02.1", "libargon2.so.1", "libjson-c.so.5", "libcrypto.so.3"} {
		if !slices.Contains(libNames, want) {
			t.Errorf("cryptsetup's libraries %v lack %s", libNames, want)
		}
	}

	for _, want := range []string{"dm_mod", "dm_crypt", "xts", "aesni_intel", "af_alg", "algif_skcipher"} {
		if !slices.Contains(DefaultModules, want) {
			t.Errorf("DefaultModules lacks %s", want)
		}
	}
	dir, order := defaultModulesInKernel(t)
	if dir == "" {
		t.Log("no kernel package extracted in build/cache: the modules and the kernel's TPM drivers are not checked")
		return
	}
	pos := map[string]int{}
	for i, m := range order {
		pos[m.Name] = i
	}
	if _, ok := pos["dm_crypt"]; !ok || pos["dm_mod"] > pos["dm_crypt"] {
		t.Errorf("the image's modules %v: dm_crypt missing or before dm_mod", slices.Collect(maps.Keys(pos)))
	}
	krel := filepath.Base(dir)
	config, err := os.ReadFile(filepath.Join(dir, "../../../boot/config-"+krel))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"CONFIG_TCG_TPM=y", "CONFIG_TCG_TIS=y", "CONFIG_TCG_CRB=y", "CONFIG_CRYPTO_AES=y"} {
		if !slices.Contains(strings.Split(string(config), "\n"), want) {
			t.Errorf("kernel %s is not built with %s: the image would need its module", krel, want)
		}
	}
}
