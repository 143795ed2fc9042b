package firmware

import (
	"bytes"
	"debug/elf"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	"github.com/enrollment-appliance/aeappliance/appliance/kmod"
)

// DefaultModules are the kernel modules the image loads, in this order after their
// dependencies. Debian's kernel builds all of them as modules. crc32c_generic is listed
// explicitly: ext4 only names "crc32c" as a soft dependency, and without it ext4 will
// not mount. crc32c_intel (and crct10dif_pclmul, a soft dependency of sd_mod's CRCs) are
// the faster variants where the CPU has SSE4.2 and PCLMULQDQ; they refuse to load under
// QEMU's default TCG CPU, which the appliance tolerates.
//
// Beyond virtio, the image carries the storage controllers and network cards of common
// rack servers (60 modules with their dependencies). At boot the appliance loads only
// the drivers of the devices present, as udev's coldplug would (appliance/kmod), from the
// device aliases stageModules writes next to the list; the modules without a device
// alias (ext4 and what it needs) load at every boot. Measured on 6.1.0-56: the hardware
// drivers add 3.0 MB to the compressed initramfs; under QEMU's TCG emulation loading all
// 60 modules took 3.0 to 3.7 s of a boot, the 15 the test VM needs (with three looks at
// its devices) 1.3 to 1.7 s. No firmware blobs are bundled: the
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
	// The data disk's encryption (dm-crypt, LUKS2 with aes-xts-plain64): device-mapper and
	// dm-crypt; xts, which dm-crypt asks the crypto API for by name ("xts(aes)") and the
	// kernel cannot load on demand (the image has no modprobe); aesni_intel where the CPU
	// has AES-NI (its CPU feature alias; the generic AES is built in, CONFIG_CRYPTO_AES=y);
	// and the crypto API's sockets (af_alg, algif_skcipher), with which cryptsetup decrypts
	// key slots without a device-mapper device. The TPM's drivers need no module: Debian
	// builds tpm_tis and tpm_crb into the kernel (CONFIG_TCG_TIS=y, CONFIG_TCG_CRB=y).
	"dm_mod", "dm_crypt", "xts", "aesni_intel", "af_alg", "algif_skcipher",
	// The hardware watchdog that brings back a trial boot of an update that hangs
	// (appliance/kmod.Params loads it with nowayout): QEMU's i6300esb.
	"i6300esb",
}

// kmodule is one kernel module file of a kernel package.
type kmodule struct {
	Name    string   // "virtio_net" (dashes in file names become underscores)
	Path    string   // relative to lib/modules/VERSION, e.g. "kernel/drivers/net/virtio_net.ko"
	Depends []string // hard dependencies (modinfo depends=)
	PreDeps []string // soft pre-dependencies (modinfo softdep=pre: ...), names or aliases
	Aliases []string // plain aliases without wildcards (soft dependencies may name them)
	Devices []string // device alias patterns, wildcards kept (see isDeviceAlias)
}

// isDeviceAlias tells a module's device aliases, the patterns matched against a device's
// modalias ("pci:v00008086d000010D3sv*sd*bc*sc*i*", "virtio:d00000002v*",
// "acpi*:PNP0501:*"), from its other aliases: names for modprobe ("crc32c",
// "fs-ext4", "block-major-8-*", "net-pf-10") have no "BUS:" prefix, and "devname:" names a
// device node to create, not a device.
func isDeviceAlias(a string) bool {
	bus, _, ok := strings.Cut(a, ":")
	if !ok || bus == "" || bus == "devname" {
		return false
	}
	for _, c := range bus {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_' || c == '*') {
			return false
		}
	}
	return true
}

// postLoad names modules to load whenever another one is, like modprobe's "softdep X
// post: Y". SCSI disks appear when a host adapter's driver finds them, and SAS and RAID
// adapters (mpt3sas, megaraid_sas, smartpqi) report theirs from the background, after
// the boot's last look at the devices; so sd_mod loads with the SCSI core, which every
// SCSI adapter's driver needs, rather than for a disk already present.
var postLoad = map[string][]string{"scsi_mod": {"sd_mod"}}

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
			if isDeviceAlias(a) {
				m.Devices = append(m.Devices, a)
			}
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
	byAlias := aliasIndex(mods)
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
			for _, t := range softTargets(mods, byAlias, d) {
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

// aliasIndex maps each plain alias to the modules that provide it, sorted.
func aliasIndex(mods map[string]*kmodule) map[string][]string {
	byAlias := map[string][]string{}
	for _, m := range mods {
		for _, a := range m.Aliases {
			byAlias[a] = append(byAlias[a], m.Name)
		}
	}
	for _, names := range byAlias {
		sort.Strings(names)
	}
	return byAlias
}

// softTargets are the modules a soft dependency names: the module of that name, or else
// every module providing it as an alias (none is not an error).
func softTargets(mods map[string]*kmodule, byAlias map[string][]string, dep string) []string {
	if n := strings.ReplaceAll(dep, "-", "_"); mods[n] != nil {
		return []string{n}
	}
	return byAlias[dep]
}

// stageModules copies the resolved modules of kernel release krel from srcDir
// (lib/modules/KREL of the extracted package) into stage, writes the load order to
// stage/etc/appliance/modules, one absolute path a line, and the modules' device aliases
// and dependencies to stage/etc/appliance/modules.alias (aliasFile). It returns the
// modules' names in load order and the ones the image loads at every boot.
func stageModules(srcDir, stage, krel string, want []string) (names, always []string, err error) {
	mods, err := scanModules(srcDir)
	if err != nil {
		return nil, nil, err
	}
	order, err := resolveModules(mods, want)
	if err != nil {
		return nil, nil, err
	}
	var list bytes.Buffer
	for _, m := range order {
		dst := filepath.Join(stage, "lib/modules", krel, m.Path)
		if err := copyFile(filepath.Join(srcDir, m.Path), dst, 0o644); err != nil {
			return nil, nil, err
		}
		fmt.Fprintf(&list, "/lib/modules/%s/%s\n", krel, m.Path)
		names = append(names, m.Name)
	}
	if err := writeFile(filepath.Join(stage, strings.TrimPrefix(kmod.ListPath, "/")), list.Bytes(), 0o644); err != nil {
		return nil, nil, err
	}
	aliases, always, err := aliasFile(mods, order, want)
	if err != nil {
		return nil, nil, err
	}
	if err := writeFile(filepath.Join(stage, strings.TrimPrefix(kmod.AliasPath, "/")), aliases, 0o644); err != nil {
		return nil, nil, err
	}
	return names, always, nil
}

// aliasFile is the alias file (format: appliance/kmod.Aliases) of the modules in order:
// every device alias of each, an "always" line for each wanted module without one,
// their direct dependencies (hard ones and the modules soft pre-dependencies resolved
// to) and postLoad, with sorted lines; and the "always" modules in load order.
func aliasFile(mods map[string]*kmodule, order []*kmodule, want []string) ([]byte, []string, error) {
	in, wanted := map[string]bool{}, map[string]bool{}
	for _, m := range order {
		in[m.Name] = true
	}
	for _, w := range want {
		wanted[strings.ReplaceAll(w, "-", "_")] = true
	}
	byAlias := aliasIndex(mods)
	var lines, always []string
	for _, m := range order {
		for _, a := range m.Devices {
			if strings.ContainsAny(a, "\n\r\t") || strings.TrimSpace(a) != a {
				return nil, nil, fmt.Errorf("kernel module %s: device alias %q holds white space", m.Name, a)
			}
			lines = append(lines, "alias "+a+" "+m.Name)
		}
		if len(m.Devices) == 0 && wanted[m.Name] {
			lines = append(lines, "always "+m.Name)
			always = append(always, m.Name)
		}
		var deps []string
		for _, d := range m.Depends {
			deps = append(deps, strings.ReplaceAll(d, "-", "_"))
		}
		for _, d := range m.PreDeps {
			deps = append(deps, softTargets(mods, byAlias, d)...)
		}
		if deps = sortedUnique(deps); len(deps) > 0 {
			lines = append(lines, "dep "+m.Name+" "+strings.Join(deps, " "))
		}
		var post []string
		for _, p := range postLoad[m.Name] {
			if in[p] {
				post = append(post, p)
			}
		}
		if post = sortedUnique(post); len(post) > 0 {
			lines = append(lines, "post "+m.Name+" "+strings.Join(post, " "))
		}
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, "# Device aliases and dependencies of the modules in %s, for appliance/kmod.\n", kmod.ListPath)
	for _, l := range sortedUnique(lines) {
		b.WriteString(l + "\n")
	}
	return b.Bytes(), always, nil
}

// sortedUnique sorts s and drops repeats.
func sortedUnique(s []string) []string {
	sort.Strings(s)
	return slices.Compact(s)
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
