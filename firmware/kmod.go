package firmware

import (
	"bytes"
	"debug/elf"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// DefaultModules are the kernel modules the image loads, in this order after their
// dependencies. Debian's kernel builds all of them as modules. crc32c_generic is listed
// explicitly: ext4 only names "crc32c" as a soft dependency, and without it ext4 will
// not mount. crc32c_intel (and crct10dif_pclmul, a soft dependency of sd_mod's CRCs) are
// the faster variants where the CPU has SSE4.2 and PCLMULQDQ; they refuse to load under
// QEMU's default TCG CPU, which the appliance tolerates.
//
// Beyond virtio, the image carries the storage controllers and network cards of common
// rack servers. A driver for absent hardware loads and binds nothing; all of them are
// loaded at every boot (60 modules with their dependencies). Measured on 6.1.0-56: the
// hardware drivers add 3.0 MB to the compressed initramfs and about 2.4 s to a boot
// under QEMU's TCG emulation, far less on a real CPU. No firmware blobs are bundled: the
// drivers listed work without one (tg3 wants firmware only for a few old chips, r8169
// only for optional PHY patches; the other NICs and the storage controllers run from
// the firmware in their flash). Left out: bnx2x and qede (they need firmware blobs) and
// ice (Intel E810: without its DDP package file it runs in a reduced "safe mode"; 430 KB
// compressed). mlx5_core is the heaviest driver kept (840 KB with its dependencies).
var DefaultModules = []string{
	// Virtual machines: virtio (QEMU/KVM), VMware's paravirtual disk controller and NIC.
	"virtio_pci", "virtio_blk", "virtio_net", "virtio_rng", "virtio_scsi", "vmw_pvscsi", "vmxnet3",
	// Storage: SATA (AHCI), SCSI/SAS disks, NVMe, Broadcom/LSI SAS HBAs (mpt3sas) and
	// MegaRAID (Dell PERC, Lenovo), HPE Smart Array (hpsa) and SmartRAID (smartpqi).
	"ahci", "sd_mod", "nvme", "mpt3sas", "megaraid_sas", "hpsa", "smartpqi",
	// Ethernet: Intel 1 GbE (e1000 for emulated NICs, e1000e, igb, igc), Intel 10/25/40 GbE
	// (ixgbe, i40e), Broadcom NetXtreme (tg3) and NetXtreme-C/E (bnxt_en), Mellanox
	// ConnectX-4 and later (mlx5_core), Realtek (r8169).
	"e1000", "e1000e", "igb", "igc", "ixgbe", "i40e", "tg3", "bnxt_en", "mlx5_core", "r8169",
	// The data disk's file system.
	"crc32c_generic", "crc32c_intel", "crc16", "jbd2", "mbcache", "ext4",
}

// kmodule is one kernel module file of a kernel package.
type kmodule struct {
	Name    string   // "virtio_net" (dashes in file names become underscores)
	Path    string   // relative to lib/modules/VERSION, e.g. "kernel/drivers/net/virtio_net.ko"
	Depends []string // hard dependencies (modinfo depends=)
	PreDeps []string // soft pre-dependencies (modinfo softdep=pre: ...), names or aliases
	Aliases []string // plain aliases without wildcards
}

// modName is the kernel's name for a module file.
func modName(file string) string {
	return strings.ReplaceAll(strings.TrimSuffix(filepath.Base(file), ".ko"), "-", "_")
}

// readModinfo reads the .modinfo section of a module file.
func readModinfo(path string) (map[string][]string, error) {
	f, err := elf.Open(path)
	if err != nil {
		return nil, fmt.Errorf("module %s: %w", path, err)
	}
	defer f.Close()
	s := f.Section(".modinfo")
	if s == nil {
		return nil, fmt.Errorf("module %s: no .modinfo section", path)
	}
	data, err := s.Data()
	if err != nil {
		return nil, fmt.Errorf("module %s: reading .modinfo: %w", path, err)
	}
	info := map[string][]string{}
	for _, kv := range bytes.Split(data, []byte{0}) {
		k, v, ok := strings.Cut(string(kv), "=")
		if ok {
			info[k] = append(info[k], v)
		}
	}
	return info, nil
}

// parseSoftdep returns the "pre:" names of a softdep value such as "pre: crc32c post: foo".
func parseSoftdep(v string) []string {
	var pre []string
	in := false
	for _, f := range strings.Fields(v) {
		switch f {
		case "pre:":
			in = true
		case "post:":
			in = false
		default:
			if in {
				pre = append(pre, f)
			}
		}
	}
	return pre
}

// scanModules indexes every module under dir (a lib/modules/VERSION directory).
func scanModules(dir string) (map[string]*kmodule, error) {
	mods := map[string]*kmodule{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() || !strings.HasSuffix(p, ".ko") {
			return nil
		}
		info, err := readModinfo(p)
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		m := &kmodule{Name: modName(p), Path: filepath.ToSlash(rel)}
		for _, dep := range info["depends"] {
			for _, n := range strings.Split(dep, ",") {
				if n != "" {
					m.Depends = append(m.Depends, n)
				}
			}
		}
		for _, sd := range info["softdep"] {
			m.PreDeps = append(m.PreDeps, parseSoftdep(sd)...)
		}
		for _, a := range info["alias"] {
			if !strings.ContainsAny(a, "*?[") {
				m.Aliases = append(m.Aliases, a)
			}
		}
		mods[m.Name] = m
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("scanning modules in %s: %w", dir, err)
	}
	return mods, nil
}

// resolveModules returns the modules to load for want, dependencies first, each once.
// Soft pre-dependencies are followed by name or alias (every module providing the alias);
// a missing soft dependency is not an error, a missing hard one or wanted module is.
func resolveModules(mods map[string]*kmodule, want []string) ([]*kmodule, error) {
	byAlias := map[string][]string{}
	for _, m := range mods {
		for _, a := range m.Aliases {
			byAlias[a] = append(byAlias[a], m.Name)
		}
	}
	for _, names := range byAlias {
		sort.Strings(names)
	}
	var order []*kmodule
	state := map[string]int{} // 1 visiting, 2 done
	var visit func(name string, chain []string) error
	visit = func(name string, chain []string) error {
		name = strings.ReplaceAll(name, "-", "_")
		m, ok := mods[name]
		if !ok {
			return fmt.Errorf("kernel module %q (needed by %s) is not in the kernel package", name, strings.Join(chain, " <- "))
		}
		switch state[name] {
		case 2:
			return nil
		case 1:
			return fmt.Errorf("kernel module dependency cycle: %s", strings.Join(append(chain, name), " -> "))
		}
		state[name] = 1
		for _, d := range m.Depends {
			if err := visit(d, append(chain, name)); err != nil {
				return err
			}
		}
		for _, d := range m.PreDeps {
			targets := byAlias[d]
			if _, ok := mods[strings.ReplaceAll(d, "-", "_")]; ok {
				targets = []string{d}
			}
			for _, t := range targets {
				if err := visit(t, append(chain, name)); err != nil {
					return err
				}
			}
		}
		state[name] = 2
		order = append(order, m)
		return nil
	}
	for _, w := range want {
		if err := visit(w, []string{"image"}); err != nil {
			return nil, err
		}
	}
	return order, nil
}

// stageModules copies the resolved modules of kernel release krel from srcDir
// (lib/modules/KREL of the extracted package) into stage, and writes the load order to
// stage/etc/appliance/modules, one absolute path a line.
func stageModules(srcDir, stage, krel string, want []string) ([]string, error) {
	mods, err := scanModules(srcDir)
	if err != nil {
		return nil, err
	}
	order, err := resolveModules(mods, want)
	if err != nil {
		return nil, err
	}
	var list bytes.Buffer
	var names []string
	for _, m := range order {
		dst := filepath.Join(stage, "lib/modules", krel, m.Path)
		if err := copyFile(filepath.Join(srcDir, m.Path), dst, 0o644); err != nil {
			return nil, err
		}
		fmt.Fprintf(&list, "/lib/modules/%s/%s\n", krel, m.Path)
		names = append(names, m.Name)
	}
	if err := writeFile(filepath.Join(stage, "etc/appliance/modules"), list.Bytes(), 0o644); err != nil {
		return nil, err
	}
	return names, nil
}

// copyFile copies src to dst (creating parent directories) with mode.
func copyFile(src, dst string, mode os.FileMode) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return fmt.Errorf("copy: %w", err)
	}
	return writeFile(dst, b, mode)
}

// writeFile writes b to path (creating parent directories) with exactly mode.
func writeFile(path string, b []byte, mode os.FileMode) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.WriteFile(path, b, mode); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Chmod(path, mode); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
