// Command mkfirmware builds the appliance image (`make image`): build/appliance/vmlinuz
// and build/appliance/initramfs.cpio.zst, with manifest.json, and prints the version,
// sizes and PKCS#11 module. -hsm-module bundles a vendor's PKCS#11 module instead of
// SoftHSM2 (`make image HSM_MODULE=...`); -debug builds a debug image with a shell
// (`make image DEBUG=1`). With -check it builds a second time from scratch (fresh Go
// build cache, fresh temporary directories) and fails unless both builds are
// byte-identical (`make image-check`).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/enrollment-appliance/aeappliance/firmware"
	"github.com/enrollment-appliance/aeappliance/firmware/update"
)

func main() {
	if err := run(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "mkfirmware:", err)
		}
		os.Exit(1)
	}
}

func run(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("mkfirmware", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o firmware.Options
	var check, verbose bool
	var sde int64
	fs.StringVar(&o.Root, "root", ".", "repository root")
	fs.StringVar(&o.OutDir, "out", "build/appliance", "output directory")
	fs.StringVar(&o.CacheDir, "cache", "build/cache", "where downloaded kernel packages are kept")
	fs.StringVar(&o.Version, "version", "", "image version (default: git describe --always --dirty)")
	fs.Int64Var(&sde, "source-date-epoch", -1, "build date (default: $SOURCE_DATE_EPOCH, else the last commit's time)")
	fs.StringVar(&o.KernelPackage, "kernel-package", "linux-image-amd64", "Debian kernel package")
	fs.IntVar(&o.ZstdLevel, "zstd-level", 19, "zstd compression level of the initramfs (the VM tests build at 3, which is faster)")
	fs.IntVar(&o.ZstdWindowLog, "zstd-window-log", firmware.ZstdWindowLogDefault, "zstd window of the initramfs, log2 of its octets (--long; the kernel allocates it while unpacking)")
	fs.StringVar(&o.HSMModule, "hsm-module", firmware.DefaultHSMModule, "PKCS#11 module to bundle (symlinks are followed; its libraries come along)")
	fs.BoolVar(&o.Debug, "debug", false, "build a debug image: with a shell (/bin/gosh, /bin/sh) and tools, version suffixed -debug; not for production")
	fs.BoolVar(&check, "check", false, "build twice from scratch and fail unless the outputs are identical")
	var bundle bool
	var signingKey string
	fs.StringVar(&o.UpdateKeys, "update-keys", "", "PEM file: the Ed25519 public keys the image accepts updates signed by (default: the development key build/keys/update-signing.pub, made on first use)")
	fs.BoolVar(&bundle, "bundle", false, "also write the signed update bundle OUT/update-VERSION.aeu")
	fs.StringVar(&signingKey, "signing-key", "", "private key that signs the bundle (default: the development key build/keys/update-signing.key)")
	fs.BoolVar(&verbose, "v", false, "log the build steps")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), "Usage: mkfirmware [flags]\n\nBuilds the appliance image (kernel + u-root initramfs), reproducibly.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	ctx := context.Background()
	root, err := filepath.Abs(o.Root)
	if err != nil {
		return err
	}
	o.Root = root
	if o.Version == "" {
		o.Version = firmware.GitVersion(ctx, root)
	}
	if sde < 0 {
		if sde, err = firmware.SourceDateEpoch(ctx, root); err != nil {
			return err
		}
	}
	o.SourceDateEpoch = sde
	level := slog.LevelWarn
	if verbose {
		level = slog.LevelInfo
	}
	o.Log = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))

	start := time.Now()
	m, err := firmware.Build(ctx, o)
	if err != nil {
		return err
	}
	fmt.Fprint(stdout, m.Summary())
	fmt.Fprintf(stdout, "  built in %s into %s\n", time.Since(start).Round(100*time.Millisecond), o.OutDir)
	if bundle {
		if signingKey == "" {
			if _, signingKey, err = firmware.EnsureDevKeys(root); err != nil {
				return err
			}
		}
		key, err := update.ReadPrivateKey(signingKey)
		if err != nil {
			return err
		}
		out := filepath.Join(o.OutDir, update.FileName(m.Release.Version))
		h, err := update.Build(o.OutDir, out, key)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "update bundle %s\n  %s, signed by key %s\n", out, h, h.KeyID)
	}
	if !check {
		return nil
	}

	// The second build shares nothing with the first but the kernel package cache.
	tmp, err := os.MkdirTemp("", "aeimage-check-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	o2 := o
	o2.OutDir = filepath.Join(tmp, "out")
	o2.GoCache = filepath.Join(tmp, "gocache")
	if o2.CacheDir == "" || !filepath.IsAbs(o2.CacheDir) {
		o2.CacheDir, _ = filepath.Abs(o.CacheDir)
	}
	fmt.Fprintln(stdout, "check: building again with an empty Go build cache...")
	start = time.Now()
	m2, err := firmware.Build(ctx, o2)
	if err != nil {
		return fmt.Errorf("second build: %w", err)
	}
	fmt.Fprintf(stdout, "  second build in %s\n", time.Since(start).Round(100*time.Millisecond))
	same := true
	for _, f := range []string{firmware.KernelFile, firmware.InitramfsFile} {
		a, b := m.Files[f].SHA256, m2.Files[f].SHA256
		fmt.Fprintf(stdout, "  %-20s %s\n  %-20s %s\n", f, a, "", b)
		if a != b {
			same = false
		}
	}
	if m.CPIOSHA256 != m2.CPIOSHA256 {
		same = false
	}
	if !same {
		return errors.New("check: the two builds differ: the image is not reproducible")
	}
	fmt.Fprintln(stdout, "check: reproducible (both builds are byte-identical)")
	return nil
}
