// Package firmware composes the appliance image: Debian's kernel (fetched with apt, never
// installed on the build host) and a u-root initramfs holding the init, cmd/appinit (as
// /init: process 1, which starts itself again as the payload), enrollsvc built with cgo, the PKCS#11 module (SoftHSM2 or a
// vendor's, with the libraries it needs), the e2fsprogs tools the data disk needs, the
// kernel modules to load and the files under rootfs/.
//
// A release image has no shell. A debug image (Options.Debug) adds u-root's gosh as
// /bin/gosh and /bin/sh and a few u-root tools (DebugTools), all in one busybox binary;
// its version ends in -debug.
//
// Builds are reproducible: the same inputs (sources, version string, source date, Go
// toolchain, kernel package and the host packages whose files are bundled) give the same
// bytes. Go binaries are built with -trimpath and no build ID, u-root writes its archive
// in sorted order with zeroed times and inode numbers, and zstd runs single-threaded at a
// fixed level. The manifest records every input that is not in the repository.
package firmware

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/enrollment-appliance/aeappliance/appliance/release"
	"github.com/enrollment-appliance/aeappliance/firmware/update"
)

// MaxImageSize is the most kernel and initramfs may weigh together.
const MaxImageSize = 40 << 20

// Files in the output directory.
const (
	KernelFile    = "vmlinuz"
	InitramfsFile = "initramfs.cpio.zst"
	ManifestFile  = "manifest.json"
)

// Options configure Build. Root, OutDir and Version are required.
type Options struct {
	Root            string // repository root (holds go.mod)
	OutDir          string // where vmlinuz, initramfs.cpio.zst and manifest.json are written
	CacheDir        string // downloaded kernel packages (default OutDir/../cache)
	Version         string // image version, also enrollsvc's
	SourceDateEpoch int64  // build date: the commit time of the sources
	KernelPackage   string // Debian package (default linux-image-amd64: the current one)
	Modules         []string
	ZstdLevel       int // default 19
	// ZstdWindowLog is zstd's window (--long): 2^ZstdWindowLog octets back a match may reach.
	// Default ZstdWindowLogDefault.
	ZstdWindowLog int
	HSMModule     string // PKCS#11 module to bundle (default DefaultHSMModule, SoftHSM2)
	Debug         bool   // a debug image: with a shell and tools, version suffixed -debug
	// UpdateKeys is a PEM file of the Ed25519 public keys the image accepts updates signed
	// by (default: the development key, DevKeys, made on first use).
	UpdateKeys string
	GoCache    string // GOCACHE for the Go builds (default: the user's)
	Log        *slog.Logger
}

// FileMeta describes one output file.
type FileMeta struct {
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
}

// Manifest records what an image was built from and what came out.
type Manifest struct {
	Release      release.Release     `json:"release"`
	Debug        bool                `json:"debug"` // a debug image (with a shell)
	Kernel       KernelMeta          `json:"kernel"`
	Modules      []string            `json:"modules"`        // load order
	AlwaysLoad   []string            `json:"modules_always"` // loaded at every boot; the others for the devices present
	HSM          HSMMeta             `json:"hsm"`
	UpdateKeys   []string            `json:"update_keys"`   // IDs of the keys updates must be signed by
	HostPackages map[string]string   `json:"host_packages"` // Debian packages whose files are bundled, with versions
	Tools        map[string]string   `json:"tools"`         // versions of the Go toolchain and zstd
	ZstdLevel    int                 `json:"zstd_level"`
	ZstdWindow   int                 `json:"zstd_window_log"`
	CPIOSHA256   string              `json:"cpio_sha256"` // of the uncompressed archive
	Files        map[string]FileMeta `json:"files"`
}

// Total is the size of kernel and initramfs together.
func (m Manifest) Total() int64 { return m.Files[KernelFile].Size + m.Files[InitramfsFile].Size }

// Summary is the human-readable report `make image` prints.
func (m Manifest) Summary() string {
	mb := func(n int64) string { return fmt.Sprintf("%.1f MB", float64(n)/(1<<20)) }
	kind := "release image"
	if m.Debug {
		kind = "DEBUG image (has a shell: not for production)"
	}
	hsm := "vendor module"
	if m.HSM.SoftHSM {
		hsm = "SoftHSM2"
	}
	return fmt.Sprintf("%s %s (kernel %s, built from sources of %s)\n"+
		"  %-20s %9s  sha256 %s\n  %-20s %9s  sha256 %s\n  %-20s %9s  (limit %s)\n"+
		"  %-20s %s  sha256 %s\n  %-20s %s, from %s, with %d libraries\n  %-20s %d (%d at every boot, the others for the devices present)\n  %-20s %s\n",
		kind, m.Release.Version, m.Kernel.Release, m.Release.BuildDate().Format(time.RFC3339),
		KernelFile, mb(m.Files[KernelFile].Size), m.Files[KernelFile].SHA256,
		InitramfsFile, mb(m.Files[InitramfsFile].Size), m.Files[InitramfsFile].SHA256,
		"together", mb(m.Total()), mb(MaxImageSize),
		"PKCS#11 module", m.HSM.Module, m.HSM.SHA256, "", hsm, m.HSM.Source, len(m.HSM.Libraries),
		"kernel modules", len(m.Modules), len(m.AlwaysLoad), "update keys", strings.Join(m.UpdateKeys, " "))
}

// ReadManifest reads dir/manifest.json.
func ReadManifest(dir string) (Manifest, error) {
	var m Manifest
	b, err := os.ReadFile(filepath.Join(dir, ManifestFile))
	if err != nil {
		return m, fmt.Errorf("manifest: %w", err)
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return m, fmt.Errorf("manifest %s: %w", dir, err)
	}
	return m, nil
}

func (o *Options) defaults() error {
	if o.Root == "" || o.OutDir == "" || o.Version == "" {
		return errors.New("firmware: Root, OutDir and Version are required")
	}
	if o.CacheDir == "" {
		o.CacheDir = filepath.Join(filepath.Dir(o.OutDir), "cache")
	}
	if o.KernelPackage == "" {
		o.KernelPackage = "linux-image-amd64"
	}
	if o.Modules == nil {
		o.Modules = DefaultModules
	}
	if o.ZstdLevel == 0 {
		o.ZstdLevel = 19
	}
	if o.ZstdWindowLog == 0 {
		o.ZstdWindowLog = ZstdWindowLogDefault
	}
	if o.HSMModule == "" {
		o.HSMModule = DefaultHSMModule
	}
	if o.UpdateKeys == "" {
		pub, _, err := EnsureDevKeys(o.Root)
		if err != nil {
			return err
		}
		o.UpdateKeys = pub
	}
	if o.Debug && !strings.HasSuffix(o.Version, debugSuffix) {
		o.Version += debugSuffix
	}
	if o.Log == nil {
		o.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return nil
}

// ZstdWindowLogDefault is the initramfs's zstd window: 32 MiB, so that a match reaches from
// enrollsvc back into appinit (they are next to each other in the sorted archive and share the
// Go runtime and much of the standard library): 2.7 MB less than zstd's default 4-8 MiB window
// at level 12 (22.5 -> 19.8 MB), 2.5 MB less at level 19 (20.2 -> 17.7 MB). The kernel's
// decompressor allocates the window while it unpacks the initramfs (lib/decompress_unzstd.c
// reads the frame's window size), 32 MiB of early memory, freed afterwards.
const ZstdWindowLogDefault = 25

// debugSuffix ends the version of a debug image.
const debugSuffix = "-debug"

// Build builds the image into o.OutDir and returns its manifest. Concurrent builds into
// the same directory wait for each other. When the archive comes out identical to the
// one already there, the compressed file is kept rather than compressed again. A missing
// or unusable PKCS#11 module fails the build before anything is built.
func Build(ctx context.Context, o Options) (Manifest, error) {
	if err := o.defaults(); err != nil {
		return Manifest{}, err
	}
	hsm, err := inspectHSMModule(o.HSMModule)
	if err != nil {
		return Manifest{}, fmt.Errorf("firmware: %w", err)
	}
	for _, d := range []string{o.OutDir, o.CacheDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return Manifest{}, fmt.Errorf("firmware: %w", err)
		}
		// Build outputs never belong in git.
		if err := os.WriteFile(filepath.Join(d, ".gitignore"), []byte("*\n"), 0o644); err != nil {
			return Manifest{}, fmt.Errorf("firmware: %w", err)
		}
	}
	unlock, err := lockDir(o.OutDir)
	if err != nil {
		return Manifest{}, err
	}
	defer unlock()
	tmp, err := os.MkdirTemp("", "aeimage-")
	if err != nil {
		return Manifest{}, fmt.Errorf("firmware: %w", err)
	}
	defer os.RemoveAll(tmp)
	m, err := build(ctx, o, hsm, tmp)
	if err != nil {
		return Manifest{}, fmt.Errorf("firmware: %w", err)
	}
	return m, nil
}

func build(ctx context.Context, o Options, hsm HSMMeta, tmp string) (Manifest, error) {
	start := time.Now()
	stage := filepath.Join(tmp, "stage")
	m := Manifest{Debug: o.Debug, ZstdLevel: o.ZstdLevel, ZstdWindow: o.ZstdWindowLog, HostPackages: map[string]string{}, Files: map[string]FileMeta{},
		Tools: map[string]string{"go": o.toolVersion(ctx, "go", "env", "GOVERSION"), "zstd": o.toolVersion(ctx, "zstd", "--version")}}

	deb, kmeta, err := fetchKernel(ctx, o.KernelPackage, o.CacheDir)
	if err != nil {
		return m, err
	}
	krel, vmlinuz, modDir, err := extractKernel(ctx, deb)
	if err != nil {
		return m, err
	}
	kmeta.Release = krel
	m.Kernel = kmeta
	if m.Modules, m.AlwaysLoad, err = stageModules(modDir, stage, krel, o.Modules); err != nil {
		return m, err
	}
	o.Log.Info("kernel", "package", kmeta.Package, "version", kmeta.Version, "modules", len(m.Modules), "always", len(m.AlwaysLoad))

	m.Release = release.Release{Product: release.Product, Version: o.Version, SourceDateEpoch: o.SourceDateEpoch, Kernel: krel, Debug: o.Debug,
		SecurityVersion: release.SecurityVersion}
	if err := writeFile(filepath.Join(stage, strings.TrimPrefix(release.Path, "/")), m.Release.Marshal(), 0o644); err != nil {
		return m, err
	}
	keysPEM, err := os.ReadFile(o.UpdateKeys)
	if err != nil {
		return m, fmt.Errorf("the update signing keys: %w", err)
	}
	keys, err := update.ParsePublicKeys(keysPEM)
	if err != nil {
		return m, fmt.Errorf("the update signing keys %s: %w", o.UpdateKeys, err)
	}
	for _, k := range keys {
		m.UpdateKeys = append(m.UpdateKeys, update.KeyID(k))
	}
	if err := writeFile(filepath.Join(stage, strings.TrimPrefix(release.UpdateKeysPath, "/")), keysPEM, 0o644); err != nil {
		return m, err
	}
	hsmFile := release.HSM{Module: hsm.Module, SoftHSM: hsm.SoftHSM}
	if err := writeFile(filepath.Join(stage, strings.TrimPrefix(release.HSMPath, "/")), hsmFile.Marshal(), 0o644); err != nil {
		return m, err
	}
	if err := copyTree(filepath.Join(o.Root, "rootfs"), stage); err != nil {
		return m, err
	}

	for _, c := range imageCommands() {
		if err := o.goBuild(ctx, c, filepath.Join(stage, c.Out)); err != nil {
			return m, err
		}
	}
	if o.Debug {
		if err := o.buildBusybox(ctx, filepath.Join(stage, debugBusybox)); err != nil {
			return m, err
		}
	}
	o.Log.Info("built the Go commands", "elapsed", time.Since(start).Round(time.Millisecond))

	// Host files: the PKCS#11 module under HSMDir with its libraries (hsmFiles), and
	// hostTools with their libraries and enrollsvc's (hostFiles).
	host, err := hostFiles(ctx, filepath.Join(stage, "bin", "enrollsvc"))
	if err != nil {
		return m, err
	}
	hsmHost, err := hsmFiles(ctx, &hsm)
	if err != nil {
		return m, err
	}
	for dst, src := range hsmHost {
		if prev, ok := host[dst]; ok && prev != src {
			return m, fmt.Errorf("HSM module: %s would replace %s at %s in the image", src, prev, dst)
		}
		host[dst] = src
	}
	m.HSM = hsm
	links := imageSymlinks(o.Debug)
	if hsm.SoftHSM && hsm.Module != softHSMCompat {
		rel, err := filepath.Rel(filepath.Dir(softHSMCompat), hsm.Module)
		if err != nil {
			return m, err
		}
		links[strings.TrimPrefix(softHSMCompat, "/")] = rel
	}
	for p, target := range links {
		dst := filepath.Join(stage, p)
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return m, err
		}
		if err := os.Symlink(target, dst); err != nil {
			return m, err
		}
	}
	for dst, src := range host {
		if err := stageHostFile(stage, src, dst); err != nil {
			return m, err
		}
		m.HostPackages[debPackageOf(ctx, src)] = ""
	}
	for p := range m.HostPackages {
		m.HostPackages[p] = debVersion(ctx, p)
	}

	cpio := filepath.Join(tmp, "initramfs.cpio")
	if err := o.uroot(ctx, stage, filepath.Join(tmp, "uroot"), cpio); err != nil {
		return m, err
	}
	names, err := archiveNames(cpio)
	if err != nil {
		return m, err
	}
	if err := checkShells(names, o.Debug); err != nil {
		return m, err
	}
	if m.CPIOSHA256, err = fileSHA256(cpio); err != nil {
		return m, err
	}
	o.Log.Info("built initramfs", "elapsed", time.Since(start).Round(time.Millisecond))

	if err := copyFile(vmlinuz, filepath.Join(o.OutDir, KernelFile+".new"), 0o644); err != nil {
		return m, err
	}
	zst := filepath.Join(o.OutDir, InitramfsFile)
	if prev, err := ReadManifest(o.OutDir); err == nil && prev.CPIOSHA256 == m.CPIOSHA256 && prev.ZstdLevel == m.ZstdLevel && prev.ZstdWindow == m.ZstdWindow && fileMatches(zst, prev.Files[InitramfsFile]) {
		o.Log.Info("initramfs unchanged: keeping the compressed archive")
		if err := copyFile(zst, zst+".new", 0o644); err != nil {
			return m, err
		}
	} else if err := o.compress(ctx, cpio, zst+".new"); err != nil {
		return m, err
	}
	for _, f := range []string{KernelFile, InitramfsFile} {
		p := filepath.Join(o.OutDir, f)
		if err := os.Rename(p+".new", p); err != nil {
			return m, err
		}
		sum, err := fileSHA256(p)
		if err != nil {
			return m, err
		}
		fi, err := os.Stat(p)
		if err != nil {
			return m, err
		}
		m.Files[f] = FileMeta{Size: fi.Size(), SHA256: sum}
	}
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return m, err
	}
	if err := writeFile(filepath.Join(o.OutDir, ManifestFile), append(b, '\n'), 0o644); err != nil {
		return m, err
	}
	o.Log.Info("image done", "elapsed", time.Since(start).Round(time.Millisecond))
	if m.Total() > MaxImageSize {
		return m, fmt.Errorf("image is %d bytes, over the %d-byte limit", m.Total(), MaxImageSize)
	}
	return m, nil
}

// hostTools are the host programs the image carries, at the same paths: e2fsprogs to make,
// check and (to encrypt a plain disk in place) shrink the data disk's file system, and
// cryptsetup (Debian's cryptsetup-bin) for its LUKS2 encryption (appliance/datadisk).
var hostTools = []string{"/sbin/mke2fs", "/sbin/e2fsck", "/sbin/resize2fs", "/sbin/cryptsetup"}

// hostFiles are the host files the image carries besides the HSM module (image path -> host
// path): hostTools, mke2fs's configuration, and the shared libraries of the tools and of
// the cgo-built enrollsvc, where the loader finds them here.
func hostFiles(ctx context.Context, enrollsvc string) (map[string]string, error) {
	host := map[string]string{"/etc/mke2fs.conf": "/etc/mke2fs.conf"}
	for _, t := range hostTools {
		host[t] = t
	}
	libs, err := sharedLibs(ctx, append([]string{enrollsvc}, hostTools...)...)
	if err != nil {
		return nil, err
	}
	for _, l := range libs {
		host[l] = l
	}
	return host, nil
}

func fileMatches(path string, want FileMeta) bool {
	sum, err := fileSHA256(path)
	return err == nil && sum == want.SHA256
}

// env is the environment of the build tools: reproducible, and without anything that
// would make the Go builds depend on the caller's settings.
func (o Options) env(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch k {
		case "GOFLAGS", "GOOS", "GOARCH", "GOAMD64", "CGO_ENABLED", "CGO_CFLAGS", "CGO_LDFLAGS", "SOURCE_DATE_EPOCH", "GOCACHE", "TZ", "LC_ALL":
			continue
		}
		env = append(env, kv)
	}
	env = append(env, "GOOS=linux", "GOARCH=amd64", "GOAMD64=v1", "GOFLAGS=-buildvcs=false -mod=readonly",
		"SOURCE_DATE_EPOCH="+strconv.FormatInt(o.SourceDateEpoch, 10), "TZ=UTC", "LC_ALL=C")
	if o.GoCache != "" {
		env = append(env, "GOCACHE="+o.GoCache)
	}
	return append(env, extra...)
}

// goBuild builds a Go command into out, reproducibly (-trimpath, no build ID, stripped).
// enrollsvc needs cgo (PKCS#11 modules are C libraries) and gets pure-Go DNS and user
// lookups, so that its only library is libc; everything else is static. The version goes into
// main.version, which cmd/enrollsvc hands to the service.
func (o Options) goBuild(ctx context.Context, c goCommand, out string) error {
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return err
	}
	ldflags := "-s -w -buildid= -X main.version=" + o.Version
	args := []string{"build", "-trimpath", "-ldflags", ldflags, "-o", out}
	env := o.env("CGO_ENABLED=0")
	if c.CGO {
		args = append(args, "-tags", "netgo,osusergo")
		env = o.env("CGO_ENABLED=1")
	}
	cmd := exec.CommandContext(ctx, "go", append(args, c.Pkg)...)
	cmd.Dir = o.Root
	cmd.Env = env
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("building %s: %w: %s", c.Pkg, err, strings.TrimSpace(string(b)))
	}
	return nil
}

// buildBusybox builds the debug image's busybox (gosh and DebugTools) into out with
// gobusybox's makebb, pinned in DebugToolsModule, and checks that gosh came out small.
// makebb rebuilds everything (go build -a): about 20 s on two cores.
func (o Options) buildBusybox(ctx context.Context, out string) error {
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, "go", makebbArgs(out)...)
	cmd.Dir = filepath.Join(o.Root, filepath.FromSlash(DebugToolsModule))
	cmd.Env = o.env("CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("building the debug busybox: %w: %s", err, strings.TrimSpace(string(b)))
	}
	return checkSmallShell(out)
}

// uroot runs the u-root tool pinned in go.mod to compose the archive: its base (device
// nodes, directories), /init -> bin/appinit (process 1, which starts itself again as the
// payload: appliance/initproc; u-root's own init is not in the image), no uinit, no default
// shell (a debug image stages its own), and every staged top-level directory added as is,
// symlinks kept.
//
// The Go commands are built beforehand with go build (-nocmd here): u-root's builder
// always rebuilds the standard library (go build -a), a minute per image, where the
// build cache makes an unchanged command free. Library dependencies were resolved while
// staging (-skip-ldd), so the archive does not depend on what else the host has.
func (o Options) uroot(ctx context.Context, stage, tmpDir, out string) error {
	args := []string{"tool", "u-root", "-nocmd", "-o", out, "-tmp-dir", tmpDir, "-skip-ldd",
		"-initcmd=/bin/appinit", "-uinitcmd=", "-defaultsh="}
	ents, err := os.ReadDir(stage)
	if err != nil {
		return err
	}
	for _, e := range ents {
		args = append(args, "-files", filepath.Join(stage, e.Name())+":"+e.Name())
	}
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = o.Root
	cmd.Env = o.env()
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("u-root: %w: %s", err, strings.TrimSpace(string(b)))
	}
	return nil
}

// toolVersion is the first line a tool prints about its version ("unknown" on failure).
func (o Options) toolVersion(ctx context.Context, name string, args ...string) string {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = o.Root
	cmd.Env = o.env()
	out, err := cmd.Output()
	if err != nil {
		return "unknown"
	}
	line, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
	return line
}

// compress writes in compressed with zstd at the fixed level and window, single-threaded (the
// multi-threaded format differs), without the file name or time.
func (o Options) compress(ctx context.Context, in, out string) error {
	cmd := exec.CommandContext(ctx, "zstd", "-q", "-f", "--single-thread", "-"+strconv.Itoa(o.ZstdLevel),
		"--long="+strconv.Itoa(o.ZstdWindowLog), "--no-progress", in, "-o", out)
	cmd.Env = o.env()
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("zstd: %w: %s", err, strings.TrimSpace(string(b)))
	}
	return os.Chmod(out, 0o644)
}

// copyTree copies the regular files under src into dst, keeping their relative paths;
// modes are normalised (0755 for executables, else 0644) so that a checkout's umask does
// not change the image.
func copyTree(src, dst string) error {
	return filepath.Walk(src, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return fmt.Errorf("rootfs: %w", err)
		}
		if !fi.Mode().IsRegular() || filepath.Base(p) == "README.md" && filepath.Dir(p) == src {
			return nil
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		mode := os.FileMode(0o644)
		if fi.Mode()&0o111 != 0 {
			mode = 0o755
		}
		return copyFile(p, filepath.Join(dst, rel), mode)
	})
}

// debPackageOf names the Debian package that owns a host file ("unknown" when dpkg does
// not know it).
func debPackageOf(ctx context.Context, path string) string {
	cands := []string{path}
	if real, err := filepath.EvalSymlinks(path); err == nil && real != path {
		cands = append(cands, real)
	}
	if strings.HasPrefix(path, "/usr/") {
		cands = append(cands, strings.TrimPrefix(path, "/usr"))
	} else {
		cands = append(cands, "/usr"+path)
	}
	for _, c := range cands {
		out, err := exec.CommandContext(ctx, "dpkg-query", "-S", c).Output()
		if err != nil {
			continue
		}
		if pkg, _, ok := strings.Cut(strings.TrimSpace(string(out)), ": "); ok {
			pkg, _, _ = strings.Cut(pkg, ",")
			return pkg
		}
	}
	return "unknown"
}

func debVersion(ctx context.Context, pkg string) string {
	out, err := exec.CommandContext(ctx, "dpkg-query", "-W", "-f=${Version}", pkg).Output()
	if err != nil {
		return "unknown"
	}
	return strings.TrimSpace(string(out))
}

// lockDir takes an exclusive lock on dir/.lock, waiting for another build to finish.
func lockDir(dir string) (func(), error) {
	f, err := os.OpenFile(filepath.Join(dir, ".lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("firmware: lock: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("firmware: lock %s: %w", dir, err)
	}
	return func() { f.Close() }, nil
}
