package firmware

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// KernelMeta is the Debian kernel package an image was built from.
type KernelMeta struct {
	Package string `json:"package"` // e.g. linux-image-6.1.0-56-amd64
	Version string `json:"version"` // Debian version, e.g. 6.1.192-2
	Release string `json:"release"` // uname -r, e.g. 6.1.0-56-amd64
	SHA256  string `json:"sha256"`  // of the .deb
}

// kernelPackage names the concrete kernel package behind a metapackage such as
// linux-image-amd64 (apt-cache depends), or returns pkg when it is already concrete.
func kernelPackage(ctx context.Context, pkg string) (string, error) {
	if pkg != "linux-image-amd64" {
		return pkg, nil
	}
	out, err := exec.CommandContext(ctx, "apt-cache", "depends", pkg).Output()
	if err != nil {
		return "", fmt.Errorf("apt-cache depends %s: %w%s", pkg, err, stderrOf(err))
	}
	for _, line := range strings.Split(string(out), "\n") {
		if dep, ok := strings.CutPrefix(strings.TrimSpace(line), "Depends: "); ok && strings.HasPrefix(dep, "linux-image-") {
			return strings.TrimSpace(dep), nil
		}
	}
	return "", fmt.Errorf("apt-cache depends %s: no linux-image dependency (run apt-get update?)", pkg)
}

// aptShow returns the Version, Filename and SHA256 fields of the candidate version of pkg.
func aptShow(ctx context.Context, pkg string) (map[string]string, error) {
	out, err := exec.CommandContext(ctx, "apt-cache", "show", "--no-all-versions", pkg).Output()
	if err != nil {
		return nil, fmt.Errorf("apt-cache show %s: %w%s", pkg, err, stderrOf(err))
	}
	fields := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), ": "); ok && !strings.HasPrefix(k, " ") {
			if _, dup := fields[k]; !dup {
				fields[k] = v
			}
		}
	}
	for _, k := range []string{"Version", "Filename", "SHA256"} {
		if fields[k] == "" {
			return nil, fmt.Errorf("apt-cache show %s: no %s field", pkg, k)
		}
	}
	return fields, nil
}

// fetchKernel returns the path of the kernel .deb for pkg in cacheDir, downloading it
// with `apt-get download` unless a file with the archive's SHA-256 is already there.
// The kernel is never installed on the build host.
func fetchKernel(ctx context.Context, pkg, cacheDir string) (string, KernelMeta, error) {
	name, err := kernelPackage(ctx, pkg)
	if err != nil {
		// A fresh system may have no package lists yet.
		if out, uerr := exec.CommandContext(ctx, "apt-get", "update", "-qq").CombinedOutput(); uerr != nil {
			return "", KernelMeta{}, fmt.Errorf("%w (apt-get update: %v: %s)", err, uerr, strings.TrimSpace(string(out)))
		}
		if name, err = kernelPackage(ctx, pkg); err != nil {
			return "", KernelMeta{}, err
		}
	}
	info, err := aptShow(ctx, name)
	if err != nil {
		return "", KernelMeta{}, err
	}
	meta := KernelMeta{Package: name, Version: info["Version"], SHA256: info["SHA256"]}
	deb := filepath.Join(cacheDir, filepath.Base(info["Filename"]))
	if sum, err := fileSHA256(deb); err == nil && sum == meta.SHA256 {
		return deb, meta, nil
	}
	if err := os.MkdirAll(cacheDir, 0o755); err != nil {
		return "", KernelMeta{}, fmt.Errorf("kernel cache: %w", err)
	}
	cmd := exec.CommandContext(ctx, "apt-get", "download", "-q", name+"="+meta.Version)
	cmd.Dir = cacheDir
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", KernelMeta{}, fmt.Errorf("apt-get download %s: %w: %s", name, err, strings.TrimSpace(string(out)))
	}
	sum, err := fileSHA256(deb)
	if err != nil {
		return "", KernelMeta{}, fmt.Errorf("apt-get download %s: %w", name, err)
	}
	if sum != meta.SHA256 {
		return "", KernelMeta{}, fmt.Errorf("apt-get download %s: SHA-256 %s, the archive says %s", name, sum, meta.SHA256)
	}
	return deb, meta, nil
}

// extractKernel unpacks deb (dpkg-deb -x) into a directory beside it, once, and returns
// the kernel release and the paths of vmlinuz and of the lib/modules/RELEASE directory.
func extractKernel(ctx context.Context, deb string) (release, vmlinuz, modDir string, err error) {
	dir := strings.TrimSuffix(deb, ".deb")
	if _, err := os.Stat(dir); err != nil {
		tmp := dir + ".tmp"
		os.RemoveAll(tmp)
		if out, err := exec.CommandContext(ctx, "dpkg-deb", "-x", deb, tmp).CombinedOutput(); err != nil {
			return "", "", "", fmt.Errorf("dpkg-deb -x %s: %w: %s", deb, err, strings.TrimSpace(string(out)))
		}
		if err := os.Rename(tmp, dir); err != nil {
			return "", "", "", fmt.Errorf("kernel package %s: %w", deb, err)
		}
	}
	ents, err := os.ReadDir(filepath.Join(dir, "lib/modules"))
	if err != nil {
		return "", "", "", fmt.Errorf("kernel package %s: %w", deb, err)
	}
	if len(ents) != 1 {
		return "", "", "", fmt.Errorf("kernel package %s: want one lib/modules directory, found %d", deb, len(ents))
	}
	release = ents[0].Name()
	vmlinuz = filepath.Join(dir, "boot", "vmlinuz-"+release)
	if _, err := os.Stat(vmlinuz); err != nil {
		return "", "", "", fmt.Errorf("kernel package %s: %w", deb, err)
	}
	return release, vmlinuz, filepath.Join(dir, "lib/modules", release), nil
}

func fileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
