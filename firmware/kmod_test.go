package firmware

import (
	"bytes"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/enrollment-appliance/aeappliance/appliance/kmod"
)

func TestIsDeviceAlias(t *testing.T) {
	for a, want := range map[string]bool{
		"pci:v00008086d000010D3sv*sd*bc*sc*i*":     true,
		"virtio:d00000002v*":                       true,
		"scsi:t-0x00*":                             true,
		"cpu:type:x86,ven*fam*mod*:feature:*0094*": true,
		"acpi*:PNP0501:*":                          true,
		"auxiliary:mlx5_core.eth":                  true,
		"crc32c":                                   false,
		"crypto-crc32c":                            false,
		"fs-ext4":                                  false,
		"block-major-135-*":                        false,
		"devname:nvme-fabrics":                     false,
		"net-pf-16-proto-16-family-devlink":        false,
		":odd":                                     false,
		"Odd:x":                                    false,
	} {
		if got := isDeviceAlias(a); got != want {
			t.Errorf("isDeviceAlias(%q) = %v, want %v", a, got, want)
		}
	}
}

// TestAliasFile writes the alias file of a few modules shaped like Debian's.
func TestAliasFile(t *testing.T) {
	mods := map[string]*kmodule{
		"ext4":           {Name: "ext4", Depends: []string{"mbcache", "jbd2", "crc16"}, PreDeps: []string{"crypto-crc32c"}, Aliases: []string{"fs-ext4"}},
		"jbd2":           {Name: "jbd2", PreDeps: []string{"crypto-crc32c"}},
		"mbcache":        {Name: "mbcache"},
		"crc16":          {Name: "crc16"},
		"crc32c_generic": {Name: "crc32c_generic", Aliases: []string{"crc32c", "crypto-crc32c"}},
		"crc32c_intel":   {Name: "crc32c_intel", Aliases: []string{"crypto-crc32c"}, Devices: []string{"cpu:type:x86,ven*fam*mod*:feature:*0094*"}},
		"nvme_core":      {Name: "nvme_core", Depends: []string{"t10-pi"}},
		"t10_pi":         {Name: "t10_pi"},
		"nvme":           {Name: "nvme", Depends: []string{"nvme-core"}, Devices: []string{"pci:v*d*sv*sd*bc01sc08i02*", "pci:v0000106Bd00002005sv*sd*bc*sc*i*", "pci:v*d*sv*sd*bc01sc08i02*"}},
		"scsi_common":    {Name: "scsi_common"},
		"scsi_mod":       {Name: "scsi_mod", Depends: []string{"scsi_common"}},
		"sd_mod":         {Name: "sd_mod", Depends: []string{"scsi_mod", "t10-pi"}, Devices: []string{"scsi:t-0x00*"}},
		"unused":         {Name: "unused", Devices: []string{"pci:v00001234d*sv*sd*bc*sc*i*"}},
	}
	want := []string{"nvme", "sd_mod", "crc32c_generic", "crc32c_intel", "crc16", "ext4"}
	order, err := resolveModules(mods, want)
	if err != nil {
		t.Fatal(err)
	}
	got, always, err := aliasFile(mods, order, want)
	if err != nil {
		t.Fatal(err)
	}
	wantFile := `# Device aliases and dependencies of the modules in /etc/appliance/modules, for appliance/kmod.
alias cpu:type:x86,ven*fam*mod*:feature:*0094* crc32c_intel
alias pci:v*d*sv*sd*bc01sc08i02* nvme
alias pci:v0000106Bd00002005sv*sd*bc*sc*i* nvme
alias scsi:t-0x00* sd_mod
always crc16
always crc32c_generic
always ext4
dep ext4 crc16 crc32c_generic crc32c_intel jbd2 mbcache
dep jbd2 crc32c_generic crc32c_intel
dep nvme nvme_core
dep nvme_core t10_pi
dep scsi_mod scsi_common
dep sd_mod scsi_mod t10_pi
post scsi_mod sd_mod
`
	if string(got) != wantFile {
		t.Errorf("aliasFile =\n%s\nwant\n%s", got, wantFile)
	}
	if want := []string{"crc32c_generic", "crc16", "ext4"}; !reflect.DeepEqual(always, want) {
		t.Errorf("always = %v, want %v (load order)", always, want)
	}
	mods["nvme"].Devices = []string{"pci:v*d*sv*sd*bc01sc08i02* "}
	if _, _, err := aliasFile(mods, order, want); err == nil {
		t.Error("aliasFile with a space at the end of a pattern = nil error")
	}
}

// TestStagedAliases stages DefaultModules from the kernel package of the last image
// build and checks the alias file against what the appliance needs: the drivers have
// their device aliases, all of them for bus devices, ext4 loads always, every module is
// reachable, the file is the same on a second run, and LoadPresent on a fake sysfs of the test VM (QEMU with
// virtio-net, virtio-rng and a virtio data disk) loads only what the VM needs.
func TestStagedAliases(t *testing.T) {
	dir := kernelModulesDir()
	if dir == "" {
		t.Skip("no kernel package extracted in build/cache (make image fetches one)")
	}
	krel := filepath.Base(dir)
	stage := t.TempDir()
	names, always, err := stageModules(dir, stage, krel, DefaultModules)
	if err != nil {
		t.Fatal(err)
	}
	listFile := filepath.Join(stage, strings.TrimPrefix(kmod.ListPath, "/"))
	aliasPath := filepath.Join(stage, strings.TrimPrefix(kmod.AliasPath, "/"))
	raw, err := os.ReadFile(aliasPath)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(string(raw), "\n"), "\n")
	if !sort.StringsAreSorted(lines[1:]) {
		t.Error("the alias file's lines are not sorted")
	}
	stage2 := t.TempDir()
	if _, _, err := stageModules(dir, stage2, krel, DefaultModules); err != nil {
		t.Fatal(err)
	}
	if raw2, err := os.ReadFile(filepath.Join(stage2, strings.TrimPrefix(kmod.AliasPath, "/"))); err != nil || !bytes.Equal(raw2, raw) {
		t.Errorf("staging again wrote another alias file (%v)", err)
	}
	al, err := kmod.ReadAliases(aliasPath)
	if err != nil {
		t.Fatal(err)
	}
	byModule := map[string][]string{}
	for _, a := range al.Patterns {
		byModule[a.Module] = append(byModule[a.Module], a.Pattern)
	}
	for mod, pattern := range map[string]string{
		"e1000e":       "pci:v00008086d000010D3sv*sd*bc*sc*i*",
		"nvme":         "pci:v*d*sv*sd*bc01sc08i02*",
		"virtio_blk":   "virtio:d00000002v*",
		"virtio_pci":   "pci:v00001AF4d*sv*sd*bc*sc*i*",
		"ahci":         "pci:v*d*sv*sd*bc01sc06i01*",
		"mpt3sas":      "pci:v00001000d00000097sv*sd*bc*sc*i*",
		"crc32c_intel": "cpu:type:x86,ven*fam*mod*:feature:*0094*",
	} {
		if !slices.Contains(byModule[mod], pattern) {
			t.Errorf("%s lacks the alias %s; has %d: %.200v", mod, pattern, len(byModule[mod]), byModule[mod])
		}
	}
	// LoadPresent looks at bus devices only: a driver for class devices (input:, dmi*:)
	// would never load. These are the kinds of alias the image's drivers have now.
	for _, a := range al.Patterns {
		if bus, _, _ := strings.Cut(a.Pattern, ":"); !slices.Contains([]string{"pci", "virtio", "scsi", "cpu", "auxiliary", "mdio"}, bus) {
			t.Errorf("%s has the alias %s, for devices LoadPresent may not see (it looks at bus devices)", a.Module, a.Pattern)
		}
	}
	if !slices.Contains(al.Always, "ext4") || !slices.Contains(al.Always, "crc32c_generic") || slices.Contains(al.Always, "e1000e") {
		t.Errorf("always = %v, want ext4 and crc32c_generic and no hardware driver", al.Always)
	}
	if !reflect.DeepEqual(sortedUnique(slices.Clone(al.Always)), sortedUnique(slices.Clone(always))) {
		t.Errorf("stageModules says always %v, the file %v", always, al.Always)
	}
	for _, dep := range []string{"jbd2", "mbcache", "crc16", "crc32c_generic"} {
		if !slices.Contains(al.Deps["ext4"], dep) {
			t.Errorf("dep ext4 = %v, lacks %s", al.Deps["ext4"], dep)
		}
	}
	// Every listed module is reachable (always, by a device, or needed by one), and every
	// module the file names is in the list.
	listed, reachable := map[string]bool{}, map[string]bool{}
	for _, n := range names {
		listed[n] = true
	}
	named := slices.Clone(al.Always)
	for _, a := range al.Patterns {
		named = append(named, a.Module)
	}
	for _, m := range []map[string][]string{al.Deps, al.Post} {
		for k, v := range m {
			named = append(named, k)
			named = append(named, v...)
		}
	}
	for _, n := range named {
		reachable[n] = true
		if !listed[n] {
			t.Errorf("the alias file names %s, which is not in the list", n)
		}
	}
	for _, n := range names {
		if !reachable[n] {
			t.Errorf("listed module %s is never loaded", n)
		}
	}
	t.Logf("%d modules, %d always, %d alias patterns, %d bytes", len(names), len(al.Always), len(al.Patterns), len(raw))

	// The test VM, as its sysfs shows it before and after virtio_pci loads: "BUS PATH" ->
	// modalias (see appliance/kmod's tests).
	sys := t.TempDir()
	addDevices := func(devices map[string]string) {
		for key, alias := range devices {
			bus, p, _ := strings.Cut(key, " ")
			dev, link := filepath.Join(sys, "devices", p), filepath.Join(sys, "bus", bus, "devices", filepath.Base(p))
			for _, d := range []string{dev, filepath.Dir(link)} {
				if err := os.MkdirAll(d, 0o755); err != nil {
					t.Fatal(err)
				}
			}
			if err := os.WriteFile(filepath.Join(dev, "uevent"), []byte("MODALIAS="+alias+"\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(dev, link); err != nil {
				t.Fatal(err)
			}
		}
	}
	addDevices(map[string]string{
		"pci pci0000:00/0000:00:00.0":  "pci:v00008086d00001237sv00001AF4sd00001100bc06sc00i00",
		"pci pci0000:00/0000:00:01.0":  "pci:v00008086d00007000sv00001AF4sd00001100bc06sc01i00",
		"pci pci0000:00/0000:00:01.1":  "pci:v00008086d00007010sv00001AF4sd00001100bc01sc01i80",
		"pci pci0000:00/0000:00:01.3":  "pci:v00008086d00007113sv00001AF4sd00001100bc06sc80i00",
		"pci pci0000:00/0000:00:02.0":  "pci:v00001AF4d00001000sv00001AF4sd00000001bc02sc00i00",
		"pci pci0000:00/0000:00:03.0":  "pci:v00001AF4d00001005sv00001AF4sd00000004bc00scFFi00",
		"pci pci0000:00/0000:00:04.0":  "pci:v00001AF4d00001001sv00001AF4sd00000002bc01sc00i00",
		"cpu system/cpu/cpu0":          "cpu:type:x86,ven0000fam0006mod0006:feature:,0000,0001,0002,0003,0004,0005,0006,0007,0008,0009,000B,000C,000D,0080,0089,0093",
		"platform platform/serial8250": "platform:serial8250",
		"acpi LNXSYSTM:00":             "acpi:LNXSYSTM:",
	})
	var tried []string
	res, err := kmod.LoadPresent(listFile, aliasPath, sys, func(p string) error {
		tried = append(tried, kmod.Name(p))
		if kmod.Name(p) == "virtio_pci" {
			addDevices(map[string]string{
				"virtio pci0000:00/0000:00:02.0/virtio0": "virtio:d00000001v00001AF4",
				"virtio pci0000:00/0000:00:03.0/virtio1": "virtio:d00000004v00001AF4",
				"virtio pci0000:00/0000:00:04.0/virtio2": "virtio:d00000002v00001AF4",
			})
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"ext4", "virtio_pci", "virtio_net", "virtio_blk", "virtio_rng"} {
		if !slices.Contains(tried, want) {
			t.Errorf("the VM loads %v: no %s", tried, want)
		}
	}
	for _, n := range tried {
		if n == "e1000e" || n == "ahci" || n == "nvme" || n == "sd_mod" || n == "scsi_mod" || n == "mlx5_core" {
			t.Errorf("the VM loads %v: %s has no device there", tried, n)
		}
	}
	pos := map[string]int{}
	for i, n := range tried {
		pos[n] = i
	}
	for _, n := range tried {
		for _, d := range al.Deps[n] {
			if p, ok := pos[d]; !ok || p > pos[n] {
				t.Errorf("%s loaded without its dependency %s before it: %v", n, d, tried)
			}
		}
	}
	t.Logf("the test VM: %s in %d rounds: %v", res.Summary(), res.Rounds, tried)
	if bytes.Count(raw, []byte("\n")) != len(lines) {
		t.Error("the alias file does not end in a newline")
	}
}
