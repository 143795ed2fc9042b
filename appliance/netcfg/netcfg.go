// Package netcfg configures the appliance's network: the loopback interface, and the
// management interface by DHCPv4 (u-root's DHCP client library) or with a static address
// and default route; the resolver configuration and the host name.
package netcfg

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/u-root/u-root/pkg/dhclient"
	"github.com/vishvananda/netlink"
)

// Config is how an interface was configured.
type Config struct {
	Interface string
	Method    string // "dhcp"
	Addr      *net.IPNet
	Gateway   net.IP
	DNS       []net.IP
	NTP       []net.IP // time servers the DHCP server offered
	LeaseTime time.Duration
	At        time.Time
}

// String is "eth0 10.0.2.15/24 gw 10.0.2.2 dns 10.0.2.3 (dhcp, lease 24h0m0s)".
func (c Config) String() string {
	s := c.Interface + " " + c.Addr.String()
	if c.Gateway != nil {
		s += " gw " + c.Gateway.String()
	}
	if len(c.DNS) > 0 {
		var d []string
		for _, ip := range c.DNS {
			d = append(d, ip.String())
		}
		s += " dns " + strings.Join(d, " ")
	}
	s += " (" + c.Method
	if c.LeaseTime > 0 {
		s += ", lease " + c.LeaseTime.String()
	}
	return s + ")"
}

// LoopbackUp brings lo up (the kernel then gives it 127.0.0.1/8 and ::1).
func LoopbackUp() error {
	lo, err := netlink.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("netcfg: lo: %w", err)
	}
	if err := netlink.LinkSetUp(lo); err != nil {
		return fmt.Errorf("netcfg: lo up: %w", err)
	}
	return nil
}

// WaitLink waits up to wait for the interface to exist (its driver may still be probing).
func WaitLink(ctx context.Context, ifname string, wait time.Duration) error {
	deadline := time.Now().Add(wait)
	for {
		_, err := netlink.LinkByName(ifname)
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("netcfg: no interface %s: %w", ifname, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// DHCP brings ifname up, obtains a DHCPv4 lease, and configures the address, the routes
// and /etc/resolv.conf from it.
func DHCP(ctx context.Context, ifname string, attempt time.Duration, retries int) (Config, error) {
	link, err := dhclient.IfUp(ifname, 10*time.Second)
	if err != nil {
		return Config{}, fmt.Errorf("netcfg: %w", err)
	}
	c := dhclient.Config{Timeout: attempt, Retries: retries}
	var errs []error
	for r := range dhclient.SendRequests(ctx, []netlink.Link{link}, true, false, c, 10*time.Second) {
		if r.Err != nil {
			errs = append(errs, r.Err)
			continue
		}
		if err := r.Lease.Configure(); err != nil {
			return Config{}, fmt.Errorf("netcfg: configuring %s: %w", ifname, err)
		}
		p, ok := r.Lease.(*dhclient.Packet4)
		if !ok {
			continue
		}
		cfg := Config{Interface: ifname, Method: "dhcp", Addr: p.Lease(), At: time.Now()}
		msg, _ := p.Message()
		if gw := msg.Router(); len(gw) > 0 {
			cfg.Gateway = gw[0]
		}
		cfg.DNS = msg.DNS()
		cfg.NTP = msg.NTPServers()
		cfg.LeaseTime = msg.IPAddressLeaseTime(0)
		return cfg, nil
	}
	if len(errs) == 0 {
		errs = append(errs, errors.New("no answer"))
	}
	return Config{}, fmt.Errorf("netcfg: DHCP on %s: %w", ifname, errors.Join(errs...))
}

// Static brings ifname up with the address addr only (others are removed) and, when gw
// is not nil, a default route through it.
func Static(ifname string, addr *net.IPNet, gw net.IP) (Config, error) {
	link, err := netlink.LinkByName(ifname)
	if err != nil {
		return Config{}, fmt.Errorf("netcfg: %s: %w", ifname, err)
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return Config{}, fmt.Errorf("netcfg: %s up: %w", ifname, err)
	}
	old, err := netlink.AddrList(link, netlink.FAMILY_V4)
	if err != nil {
		return Config{}, fmt.Errorf("netcfg: listing the addresses of %s: %w", ifname, err)
	}
	have := false
	for _, a := range old {
		if a.IPNet.String() == addr.String() {
			have = true
			continue
		}
		if err := netlink.AddrDel(link, &a); err != nil {
			return Config{}, fmt.Errorf("netcfg: removing %s from %s: %w", a.IPNet, ifname, err)
		}
	}
	if !have {
		if err := netlink.AddrAdd(link, &netlink.Addr{IPNet: addr}); err != nil {
			return Config{}, fmt.Errorf("netcfg: adding %s to %s: %w", addr, ifname, err)
		}
	}
	if gw != nil {
		def := &netlink.Route{LinkIndex: link.Attrs().Index, Dst: &net.IPNet{IP: net.IPv4zero, Mask: net.CIDRMask(0, 32)}, Gw: gw}
		if err := netlink.RouteReplace(def); err != nil {
			return Config{}, fmt.Errorf("netcfg: default route via %s: %w", gw, err)
		}
	}
	return Config{Interface: ifname, Method: "static", Addr: addr, Gateway: gw, At: time.Now()}, nil
}

// WriteResolvConf writes path (/etc/resolv.conf) naming servers; with none it leaves
// the file as it is.
func WriteResolvConf(path string, servers []net.IP) error {
	if len(servers) == 0 {
		return nil
	}
	var b strings.Builder
	for _, s := range servers {
		fmt.Fprintf(&b, "nameserver %s\n", s)
	}
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		return fmt.Errorf("netcfg: %w", err)
	}
	return nil
}

// SetHostname sets the kernel's host name.
func SetHostname(name string) error {
	if err := unix.Sethostname([]byte(name)); err != nil {
		return fmt.Errorf("netcfg: setting the host name %q: %w", name, err)
	}
	return nil
}
