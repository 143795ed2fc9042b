package kmod

import (
	"fmt"
	"os"
	"path"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"
	"unicode/utf8"

	"golang.org/x/sys/unix"
)

func TestMatch(t *testing.T) {
	for _, c := range []struct {
		pattern, name string
		want          bool
	}{
		// Debian 6.1 patterns (modinfo alias=) against modaliases of real devices.
		{"pci:v00008086d000010D3sv*sd*bc*sc*i*", "pci:v00008086d000010D3sv00008086sd0000A01Fbc02sc00i00", true}, // e1000e, QEMU's e1000e
		{"pci:v00008086d000010D3sv*sd*bc*sc*i*", "pci:v00008086d0000100Esv00001AF4sd00001100bc02sc00i00", false},
		{"pci:v*d*sv*sd*bc01sc08i02*", "pci:v0000144Dd0000A808sv0000144Dsd0000A801bc01sc08i02", true}, // nvme by class
		{"pci:v*d*sv*sd*bc01sc08i02*", "pci:v00008086d00002922sv00001AF4sd00001100bc01sc06i01", false},
		{"pci:v*d*sv*sd*bc01sc06i01*", "pci:v00008086d00002922sv00001AF4sd00001100bc01sc06i01", true}, // ahci by class
		{"pci:v00001AF4d*sv*sd*bc*sc*i*", "pci:v00001AF4d00001000sv00001AF4sd00000001bc02sc00i00", true},
		{"virtio:d00000002v*", "virtio:d00000002v00001AF4", true},
		{"virtio:d00000002v*", "virtio:d00000001v00001AF4", false},
		{"virtio:d00000002v*", "virtio:d00000002", false},
		{"scsi:t-0x00*", "scsi:t-0x00", true},
		{"scsi:t-0x00*", "scsi:t-0x05", false},
		{"cpu:type:x86,ven*fam*mod*:feature:*0094*", "cpu:type:x86,ven0000fam0006mod003F:feature:,0000,0001,0094,00E7", true},
		{"cpu:type:x86,ven*fam*mod*:feature:*0094*", "cpu:type:x86,ven0000fam0006mod0006:feature:,0000,0001,0093", false},
		{"acpi*:PNP0501:*", "acpi:PNP0501:", true},
		// "*" crosses "/" (fnmatch without FNM_PATHNAME; path.Match would not).
		{"dmi*:bd*/2014:*", "dmi:bvnSeaBIOS:bd04/01/2014:svnQEMU:", true},
		// Brackets, "?", quoting.
		{"usb:v[0-9A-F]*", "usb:v1D6B", true},
		{"usb:v[0-9A-F]*", "usb:vx", false},
		{"[!a]bc", "xbc", true},
		{"[!a]bc", "abc", false},
		{"[^a]bc", "abc", false},
		{"[]]x", "]x", true},
		{"[a-]", "-", true},
		{"[abc", "[abc", true},
		{"[abc", "a", false},
		{`a\*b`, "a*b", true},
		{`a\*b`, "axb", false},
		{`[\]]`, "]", true},
		{"a?c", "abc", true},
		{"a?c", "ac", false},
		{"*", "", true},
		{"", "", true},
		{"", "a", false},
		{"*a*b*", "xxaxxbxx", true},
		{"*a*b", "xxaxxbxxc", false},
		{"**b", "b", true},
	} {
		if got := match(c.pattern, c.name); got != c.want {
			t.Errorf("match(%q, %q) = %v, want %v", c.pattern, c.name, got, c.want)
		}
	}
}

// FuzzMatch compares match with path.Match where the two agree on what a pattern means:
// ASCII without "/" and "!", and a pattern path.Match accepts.
func FuzzMatch(f *testing.F) {
	f.Add("pci:v00008086d000010D3sv*sd*bc*sc*i*", "pci:v00008086d000010D3sv00008086sd0000A01Fbc02sc00i00")
	f.Add("usb:v[0-9A-F]*", "usb:v1D6B")
	f.Add(`[^a]b\*`, "xb*")
	f.Add("*a?*b", "aaxab")
	f.Fuzz(func(t *testing.T, pattern, name string) {
		got := match(pattern, name) // must not panic, whatever the input
		if strings.ContainsAny(pattern+name, "/!") || !ascii(pattern+name) {
			return
		}
		if want, err := path.Match(pattern, name); err == nil && got != want {
			t.Errorf("match(%q, %q) = %v, path.Match says %v", pattern, name, got, want)
		}
	})
}

func ascii(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			return false
		}
	}
	return true
}

func TestReadAliases(t *testing.T) {
	file := filepath.Join(t.TempDir(), "modules.alias")
	content := "# comment\n\nalias pci:v*d*sv*sd*bc01sc08i02* nvme\nalias virtio:d00000002v* virtio_blk\n" +
		"always ext4\ndep ext4 crc16 jbd2\ndep nvme nvme_core\npost scsi_mod sd_mod\n"
	if err := os.WriteFile(file, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := ReadAliases(file)
	if err != nil {
		t.Fatal(err)
	}
	want := Aliases{
		Patterns: []Alias{{"pci:v*d*sv*sd*bc01sc08i02*", "nvme"}, {"virtio:d00000002v*", "virtio_blk"}},
		Always:   []string{"ext4"},
		Deps:     map[string][]string{"ext4": {"crc16", "jbd2"}, "nvme": {"nvme_core"}},
		Post:     map[string][]string{"scsi_mod": {"sd_mod"}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("ReadAliases = %+v, want %+v", got, want)
	}
	for _, bad := range []string{"alias nvme\n", "alias  nvme\n", "always\n", "always a b\n", "dep ext4\n", "dep ext4  jbd2\n", "modprobe ext4\n"} {
		if err := os.WriteFile(file, []byte("always ext4\n"+bad), 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := ReadAliases(file); err == nil || !strings.Contains(err.Error(), ":2: ") {
			t.Errorf("ReadAliases(%q) = %v, want an error for line 2", bad, err)
		}
	}
}

func TestMatcher(t *testing.T) {
	m := newMatcher([]Alias{
		{"pci:v*d*sv*sd*bc01sc08i02*", "nvme"},
		{"pci:v0000144Dd0000A808sv*sd*bc*sc*i*", "vendor_nvme"}, // a second driver for the same device
		{"pci:v0000106Bd00002005sv*sd*bc*sc*i*", "nvme"},
		{"pci:v00008086d000010D3sv*sd*bc*sc*i*", "e1000e"},
		{"pci:v00008086d000010D3sv*sd*bc*sc*i*", "e1000e"},
		{"virtio:d00000002v*", "virtio_blk"},
		{"*:unusual", "anything"},
	})
	for _, c := range []struct {
		modalias string
		want     []string
	}{
		{"pci:v0000144Dd0000A808sv0000144Dsd0000A801bc01sc08i02", []string{"nvme", "vendor_nvme"}},
		{"pci:v00008086d000010D3sv00008086sd0000A01Fbc02sc00i00", []string{"e1000e", "e1000e"}},
		{"virtio:d00000002v00001AF4", []string{"virtio_blk"}},
		{"virtio:d00000001v00001AF4", nil},
		{"platform:unusual", []string{"anything"}},
		{"", nil},
	} {
		var got []string
		m.modules(c.modalias, func(mod string) { got = append(got, mod) })
		sort.Strings(got)
		if !reflect.DeepEqual(got, c.want) {
			t.Errorf("modules(%q) = %v, want %v", c.modalias, got, c.want)
		}
	}
}

// fakeSystem is a module list, an alias file and a sysfs tree in a temporary directory,
// with a load function that records what it loads, fails for the modules in fail, and
// adds the devices in appear[module] when it loads module.
type fakeSystem struct {
	list, aliases, sys string
	loaded             []string
	fail               map[string]bool
	appear             map[string]map[string]string // module -> devices (as for addDevices)
}

func newFakeSystem(t *testing.T, modules []string, aliases string, devices map[string]string) *fakeSystem {
	t.Helper()
	dir := t.TempDir()
	fs := &fakeSystem{list: filepath.Join(dir, "modules"), aliases: filepath.Join(dir, "modules.alias"), sys: filepath.Join(dir, "sys")}
	var list strings.Builder
	for _, m := range modules {
		fmt.Fprintf(&list, "/lib/modules/6.1/kernel/%s.ko\n", strings.ReplaceAll(m, "_", "-"))
	}
	if err := os.WriteFile(fs.list, []byte(list.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	if aliases != "" {
		if err := os.WriteFile(fs.aliases, []byte(aliases), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.MkdirAll(filepath.Join(fs.sys, "bus"), 0o755); err != nil {
		t.Fatal(err)
	}
	fs.addDevices(t, devices)
	return fs
}

// addDevices adds devices to the sysfs tree as the kernel shows them: "BUS PATH" ->
// modalias makes the directory devices/PATH with a uevent file (with MODALIAS= unless
// the modalias is empty) and the link bus/BUS/devices/NAME to it.
func (fs *fakeSystem) addDevices(t *testing.T, devices map[string]string) {
	t.Helper()
	for key, alias := range devices {
		bus, p, _ := strings.Cut(key, " ")
		dev := filepath.Join(fs.sys, "devices", p)
		uevent := "DRIVER=\n"
		if alias != "" {
			uevent += "MODALIAS=" + alias + "\n"
		}
		link := filepath.Join(fs.sys, "bus", bus, "devices", filepath.Base(p))
		if err := os.MkdirAll(dev, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dev, "uevent"), []byte(uevent), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(filepath.Dir(link), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(filepath.Join("../../../devices", p), link); err != nil {
			t.Fatal(err)
		}
	}
}

func (fs *fakeSystem) loader(t *testing.T) Loader {
	return func(p string) error {
		n := Name(p)
		fs.loaded = append(fs.loaded, n)
		if fs.fail[n] {
			return fmt.Errorf("kmod: loading %s: %w", n, unix.ENODEV)
		}
		fs.addDevices(t, fs.appear[n])
		return nil
	}
}

// The modules of a QEMU machine and a few real-server drivers, in load order.
var testModules = []string{"crc32c_generic", "crc32c_intel", "crc16", "mbcache", "jbd2", "ext4",
	"virtio", "virtio_ring", "virtio_pci", "failover", "net_failover", "virtio_net", "virtio_blk",
	"scsi_common", "scsi_mod", "virtio_scsi", "sd_mod", "e1000e", "nvme_core", "nvme"}

const testAliases = `# test
alias cpu:type:x86,ven*fam*mod*:feature:*0094* crc32c_intel
alias pci:v*d*sv*sd*bc01sc08i02* nvme
alias pci:v00001AF4d*sv*sd*bc*sc*i* virtio_pci
alias pci:v00008086d000010D3sv*sd*bc*sc*i* e1000e
alias scsi:t-0x00* sd_mod
alias virtio:d00000001v* virtio_net
alias virtio:d00000002v* virtio_blk
alias virtio:d00000008v* virtio_scsi
always crc16
always crc32c_generic
always ext4
always jbd2
always mbcache
dep ext4 crc16 crc32c_generic crc32c_intel jbd2 mbcache
dep net_failover failover
dep nvme nvme_core
dep scsi_mod scsi_common
dep sd_mod scsi_mod
dep virtio_blk virtio virtio_ring
dep virtio_net net_failover virtio virtio_ring
dep virtio_pci virtio virtio_ring
dep virtio_ring virtio
dep virtio_scsi scsi_mod virtio virtio_ring
post scsi_mod sd_mod
`

// TestLoadPresent boots a fake QEMU machine: the virtio devices appear only once
// virtio_pci is loaded, so virtio_blk and virtio_net load in the second round.
func TestLoadPresent(t *testing.T) {
	fs := newFakeSystem(t, testModules, testAliases, map[string]string{
		"pci pci0000:00/0000:00:03.0":  "pci:v00001AF4d00001000sv00001AF4sd00000001bc02sc00i00",
		"pci pci0000:00/0000:00:04.0":  "pci:v00001AF4d00001001sv00001AF4sd00000002bc01sc00i00",
		"pci pci0000:00/0000:00:01.1":  "pci:v00008086d00007010sv00001AF4sd00001100bc01sc01i80", // PIIX IDE: no driver listed
		"cpu system/cpu/cpu0":          "cpu:type:x86,ven0000fam0006mod0006:feature:,0000,0001,0093",
		"platform platform/serial8250": "platform:serial8250",
		"memory system/memory/memory0": "", // no modalias
	})
	// Passed over: a bus without devices, a bus that is not a directory, a link to a
	// device that went away.
	os.MkdirAll(filepath.Join(fs.sys, "bus/empty"), 0o755)
	os.WriteFile(filepath.Join(fs.sys, "bus/odd"), nil, 0o644)
	os.Symlink("../../../devices/gone", filepath.Join(fs.sys, "bus/platform/devices/gone"))
	fs.fail = map[string]bool{"crc32c_intel": true}
	fs.appear = map[string]map[string]string{"virtio_pci": {
		"virtio pci0000:00/0000:00:03.0/virtio0": "virtio:d00000001v00001AF4",
		"virtio pci0000:00/0000:00:04.0/virtio1": "virtio:d00000002v00001AF4",
	}}

	res, err := LoadPresent(fs.list, fs.aliases, fs.sys, fs.loader(t))
	if err != nil {
		t.Fatal(err)
	}
	wantTried := []string{"crc32c_generic", "crc32c_intel", "crc16", "mbcache", "jbd2", "ext4", // always
		"virtio", "virtio_ring", "virtio_pci", // round 1
		"failover", "net_failover", "virtio_net", "virtio_blk"} // round 2
	if !reflect.DeepEqual(fs.loaded, wantTried) {
		t.Errorf("loaded %v, want %v", fs.loaded, wantTried)
	}
	if want := append(wantTried[:1:1], wantTried[2:]...); !reflect.DeepEqual(res.Loaded, want) {
		t.Errorf("Loaded = %v, want %v", res.Loaded, want)
	}
	if want := []string{"scsi_common", "scsi_mod", "virtio_scsi", "sd_mod", "e1000e", "nvme_core", "nvme"}; !reflect.DeepEqual(res.NotNeeded, want) {
		t.Errorf("NotNeeded = %v, want %v", res.NotNeeded, want)
	}
	if res.Rounds != 3 || res.Fallback != "" {
		t.Errorf("Rounds = %d, Fallback = %q; want 3 and none", res.Rounds, res.Fallback)
	}
	if got, want := res.Summary(), "12 loaded, 7 not needed, 1 unavailable (crc32c_intel: no such device)"; got != want {
		t.Errorf("Summary() = %q, want %q", got, want)
	}
}

// TestLoadPresentServer: a server with an NVMe disk that two drivers match, an Intel NIC,
// a CPU with SSE4.2 and a (virtio) SCSI controller; sd_mod comes with the SCSI core
// although no disk is there yet (SAS adapters find theirs later).
func TestLoadPresentServer(t *testing.T) {
	aliases := testAliases + "alias pci:v0000144Dd0000A808sv*sd*bc*sc*i* nvme\n"
	fs := newFakeSystem(t, testModules, aliases, map[string]string{
		"pci pci0000:00/0000:01:00.0": "pci:v0000144Dd0000A808sv0000144Dsd0000A801bc01sc08i02",
		"pci pci0000:00/0000:02:00.0": "pci:v00008086d000010D3sv00008086sd0000A01Fbc02sc00i00",
		"pci pci0000:00/0000:03:00.0": "pci:v00001AF4d00001004sv00001AF4sd00000008bc01sc00i00",
		"cpu system/cpu/cpu0":         "cpu:type:x86,ven0000fam0006mod003F:feature:,0000,0001,0094,00E7",
		"cpu system/cpu/cpu1":         "cpu:type:x86,ven0000fam0006mod003F:feature:,0000,0001,0094,00E7",
	})
	fs.appear = map[string]map[string]string{"virtio_pci": {"virtio pci0000:00/0000:03:00.0/virtio0": "virtio:d00000008v00001AF4"}}
	res, err := LoadPresent(fs.list, fs.aliases, fs.sys, fs.loader(t))
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"crc32c_generic", "crc32c_intel", "crc16", "mbcache", "jbd2", "ext4", // always
		"virtio", "virtio_ring", "virtio_pci", "e1000e", "nvme_core", "nvme", // round 1
		"scsi_common", "scsi_mod", "virtio_scsi", "sd_mod"} // round 2
	if !reflect.DeepEqual(fs.loaded, want) {
		t.Errorf("loaded %v, want %v (each once, in list order)", fs.loaded, want)
	}
	if res.Rounds != 3 || len(res.Failed) != 0 || !reflect.DeepEqual(res.NotNeeded, []string{"failover", "net_failover", "virtio_net", "virtio_blk"}) {
		t.Errorf("Rounds = %d, Failed = %v, NotNeeded = %v; want 3 rounds, no failures, the virtio NIC and disk not needed", res.Rounds, res.Failed, res.NotNeeded)
	}
}

// TestLoadPresentRounds: a chain of drivers each bringing the next one's device stops
// after MaxRounds looks at the devices.
func TestLoadPresentRounds(t *testing.T) {
	mods := []string{"bus1", "bus2", "bus3", "bus4", "bus5"}
	var aliases strings.Builder
	for _, m := range mods {
		fmt.Fprintf(&aliases, "alias chain:%s %s\n", m, m)
	}
	fs := newFakeSystem(t, mods, aliases.String(), map[string]string{"chain root": "chain:bus1"})
	fs.appear = map[string]map[string]string{}
	for i, m := range mods[:4] {
		fs.appear[m] = map[string]string{fmt.Sprintf("chain root/%d", i): "chain:" + mods[i+1]}
	}
	res, err := LoadPresent(fs.list, fs.aliases, fs.sys, fs.loader(t))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(res.Loaded, mods[:MaxRounds]) || !reflect.DeepEqual(res.NotNeeded, mods[MaxRounds:]) || res.Rounds != MaxRounds {
		t.Errorf("Loaded %v, NotNeeded %v, Rounds %d; want %v, %v, %d", res.Loaded, res.NotNeeded, res.Rounds, mods[:MaxRounds], mods[MaxRounds:], MaxRounds)
	}
}

// TestLoadPresentFallback: without an alias file (an older image), with a bad one, or
// without sysfs, every listed module is loaded, as LoadList does.
func TestLoadPresentFallback(t *testing.T) {
	for _, c := range []struct {
		name, aliases, sys, want string
	}{
		{"no alias file", "", "", "modules.alias: no such file or directory"},
		{"bad alias file", "always ext4\nmodprobe ext4\n", "", `modules.alias:2: unknown statement "modprobe"`},
		{"no sysfs", testAliases, "nowhere", "nowhere/bus: no such file or directory"},
	} {
		fs := newFakeSystem(t, testModules, c.aliases, nil)
		if c.sys != "" {
			fs.sys = filepath.Join(fs.sys, c.sys)
		}
		fs.fail = map[string]bool{"crc32c_intel": true}
		res, err := LoadPresent(fs.list, fs.aliases, fs.sys, fs.loader(t))
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if !reflect.DeepEqual(fs.loaded, testModules) || len(res.Loaded) != len(testModules)-1 || len(res.NotNeeded) != 0 {
			t.Errorf("%s: loaded %v (Loaded %v, NotNeeded %v), want the list in order", c.name, fs.loaded, res.Loaded, res.NotNeeded)
		}
		if !strings.Contains(res.Fallback, c.want) || !strings.Contains(res.Summary(), "19 loaded, 1 unavailable (crc32c_intel: no such device); loaded every listed module: ") {
			t.Errorf("%s: Fallback %q, Summary %q; want it to say %q", c.name, res.Fallback, res.Summary(), c.want)
		}
	}
	if _, err := LoadPresent(filepath.Join(t.TempDir(), "nope"), AliasPath, "/sys", Load); err == nil {
		t.Error("LoadPresent(missing list) = nil error, want one")
	}
}
