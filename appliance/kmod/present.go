package kmod

import (
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// MaxRounds is how often LoadPresent looks at the devices at most. Loading a driver can
// make devices appear that need other drivers: virtio_pci's PCI devices become virtio
// devices for virtio_blk and virtio_net.
const MaxRounds = 4

// LoadPresent loads the modules of the list at listPath that the machine needs, as
// udev's coldplug would: first the ones the alias file at aliasPath marks "always", then,
// in rounds until a round loads nothing new (at most MaxRounds), the ones whose alias
// patterns match the modalias of a device. Each module comes with its dependencies and
// its "post" modules; modules load in list order, each at most once, and one that fails
// does not stop the others. Without a readable alias file (an image from before there
// was one) or a readable sysfs at sysRoot it loads every listed module, as LoadList, and
// says why in Result.Fallback. Only an unreadable list is an error.
//
// The devices are those on a bus (sysRoot/bus/BUS/devices/NAME; see busDevices), with
// the MODALIAS of their uevent file, as coldplug finds them and as the kernel announces
// them to udev. Class devices (input devices, /sys/class/dmi/id) are not looked at: the
// drivers an image carries are all for bus devices. Nor is the whole of /sys/devices
// walked: under QEMU's TCG emulation a walk took 0.2 to 0.65 s, each round; the first
// look at the buses takes about 0.15 s, and the later ones (0.02 to 0.05 s) read only the
// devices new to them.
func LoadPresent(listPath, aliasPath, sysRoot string, load Loader) (Result, error) {
	paths, err := ReadList(listPath)
	if err != nil {
		return Result{}, err
	}
	p := &present{load: load, paths: paths, index: map[string]int{}, tried: map[string]bool{},
		res: Result{Failed: map[string]string{}}}
	for i, path := range paths {
		p.index[Name(path)] = i
	}
	al, err := ReadAliases(aliasPath)
	if err != nil {
		p.loadRest(err)
		return p.res, nil
	}
	p.deps, p.post = al.Deps, al.Post
	p.loadWith(al.Always)
	m := newMatcher(al.Patterns)
	devs := busDevices{root: sysRoot, seen: map[string]bool{}}
	matched := map[string]bool{} // modaliases already matched (devices of a kind repeat)
	for p.res.Rounds < MaxRounds {
		aliases, err := devs.newModaliases()
		if err != nil {
			p.loadRest(err)
			break
		}
		p.res.Rounds++
		var want []string
		for _, a := range aliases {
			if !matched[a] {
				matched[a] = true
				m.modules(a, func(mod string) { want = append(want, mod) })
			}
		}
		if p.loadWith(want) == 0 {
			break
		}
	}
	for _, path := range paths {
		if !p.tried[Name(path)] {
			p.res.NotNeeded = append(p.res.NotNeeded, Name(path))
		}
	}
	return p.res, nil
}

// present is the state of one LoadPresent.
type present struct {
	load  Loader
	paths []string       // the list, in load order
	index map[string]int // module name -> position in paths
	deps  map[string][]string
	post  map[string][]string
	tried map[string]bool // modules loaded or failed
	res   Result
}

// loadWith loads the modules named (those in the list and not tried yet) with their
// dependencies and post modules, in list order, and returns how many it tried.
func (p *present) loadWith(names []string) int {
	set := map[string]bool{}
	var add func(name string)
	add = func(name string) {
		if _, listed := p.index[name]; !listed || set[name] || p.tried[name] {
			return // a module tried before came with its own dependencies then
		}
		set[name] = true
		for _, d := range p.deps[name] {
			add(d)
		}
		for _, d := range p.post[name] {
			add(d)
		}
	}
	for _, n := range names {
		add(n)
	}
	var order []int
	for n := range set {
		order = append(order, p.index[n])
	}
	sort.Ints(order)
	for _, i := range order {
		p.tried[Name(p.paths[i])] = true
		p.res.record(p.paths[i], p.load)
	}
	return len(order)
}

// loadRest loads every listed module not tried yet, because of why.
func (p *present) loadRest(why error) {
	p.res.Fallback = strings.TrimPrefix(why.Error(), "kmod: ")
	for _, path := range p.paths {
		if !p.tried[Name(path)] {
			p.tried[Name(path)] = true
			p.res.record(path, p.load)
		}
	}
}

// busDevices finds the devices of a sysfs tree on its buses: each entry of
// ROOT/bus/BUS/devices is a symbolic link to a device's directory under ROOT/devices,
// whose uevent file holds MODALIAS=... when the bus gives its devices one.
type busDevices struct {
	root string
	seen map[string]bool // "BUS/NAME" of the devices read
}

// newModaliases returns the modaliases of the devices not seen before. A bus or device
// that cannot be read (devices come and go) is passed over; only an unreadable
// ROOT/bus is an error.
func (b *busDevices) newModaliases() ([]string, error) {
	dir := filepath.Join(b.root, "bus")
	buses, err := dirNames(dir)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, bus := range buses {
		devDir := filepath.Join(dir, bus, "devices")
		names, err := dirNames(devDir)
		if err != nil {
			continue
		}
		for _, n := range names {
			if b.seen[bus+"/"+n] {
				continue
			}
			data, err := os.ReadFile(filepath.Join(devDir, n, "uevent"))
			if err != nil {
				continue
			}
			b.seen[bus+"/"+n] = true
			for _, l := range strings.Split(string(data), "\n") {
				if a, ok := strings.CutPrefix(l, "MODALIAS="); ok && a != "" {
					out = append(out, a)
				}
			}
		}
	}
	return out, nil
}

// dirNames lists the names in a directory, unsorted.
func dirNames(dir string) ([]string, error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return f.Readdirnames(-1)
}
