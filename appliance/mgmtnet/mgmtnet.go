// Package mgmtnet keeps the appliance's management network: it applies the saved
// settings (provisioning.Network: a static address, or DHCP retried with a growing delay
// until it gets a lease and renewed at half of each lease), the resolver, the host name
// and the time servers (a timesync.Keeper), and tells the rest of the appliance the
// management address once there is one.
package mgmtnet

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"sync"
	"time"

	"github.com/enrollment-appliance/aeappliance/appliance/netcfg"
	"github.com/enrollment-appliance/aeappliance/appliance/timesync"
	"github.com/enrollment-appliance/aeappliance/provisioning"
)

// Manager is the management interface's state. Make it with New.
type Manager struct {
	iface string
	dev   bool // development mode: nothing is applied, no clock keeping
	log   *slog.Logger
	say   func(string) // a message for the console

	done chan struct{} // closed once the network is configured

	mu       sync.Mutex
	cfg      *netcfg.Config
	err      error
	keeper   *timesync.Keeper // keeps the clock; nil without NTP servers
	timeStop context.CancelFunc
}

// New returns the manager of interface iface; say shows a message on the console.
func New(iface string, dev bool, log *slog.Logger, say func(string)) *Manager {
	return &Manager{iface: iface, dev: dev, log: log, say: say, done: make(chan struct{})}
}

// Interface is the management interface's name.
func (m *Manager) Interface() string { return m.iface }

// Done is closed once the network is configured.
func (m *Manager) Done() <-chan struct{} { return m.done }

// SetConfigured records cfg as configured from elsewhere (development mode: loopback).
func (m *Manager) SetConfigured(cfg netcfg.Config) {
	m.set(&cfg, nil)
	close(m.done)
}

// Run configures loopback and then the management interface: it waits for the link and
// for ready (the data disk, where the settings are), asks initial for the settings,
// retries until the configuration succeeds, and then, with DHCP, renews the lease for
// as long as reload still says DHCP, calling moved when the address changes.
func (m *Manager) Run(ctx context.Context, ready <-chan struct{}, initial func() provisioning.Network,
	reload func() (provisioning.Network, error), moved func(ctx context.Context)) {
	if err := netcfg.LoopbackUp(); err != nil {
		m.log.Error("loopback", "err", err)
	}
	if err := netcfg.WaitLink(ctx, m.iface, 15*time.Second); err != nil {
		m.set(nil, err)
		m.say(fmt.Sprintf("Network: %v", err))
		return
	}
	select {
	case <-ready:
	case <-ctx.Done():
		return
	}
	n := initial()
	delay := 2 * time.Second
	for attempt := 1; ; attempt++ {
		cfg, err := m.Configure(ctx, n)
		if err == nil {
			m.log.Info("network configured", "config", cfg.String())
			close(m.done)
			if n.Mode == "dhcp" {
				m.renewLease(ctx, n, cfg, reload, moved)
			}
			return
		}
		m.set(nil, err)
		m.log.Warn("network configuration failed", "mode", n.Mode, "attempt", attempt, "err", err)
		if attempt == 1 {
			m.say(fmt.Sprintf("Network: %v; retrying in the background", err))
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(delay):
		}
		delay = min(2*delay, time.Minute)
	}
}

// renewLease asks the DHCP server again at half of each lease, for as long as the
// settings say DHCP; when the address changes, moved is called.
func (m *Manager) renewLease(ctx context.Context, n provisioning.Network, cfg netcfg.Config,
	reload func() (provisioning.Network, error), moved func(ctx context.Context)) {
	for {
		wait := max(cfg.LeaseTime/2, time.Minute)
		if cfg.LeaseTime == 0 {
			wait = time.Hour
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		if cur, err := reload(); err != nil || cur.Mode != "dhcp" {
			return // changed at the console, which applied it
		}
		before := cfg.Addr.IP
		next, err := m.Configure(ctx, n)
		if err != nil {
			m.log.Warn("DHCP renewal failed; keeping the address", "err", err)
			cfg.LeaseTime = 2 * time.Minute // try again soon
			continue
		}
		cfg = next
		if !before.Equal(cfg.Addr.IP) {
			m.say(fmt.Sprintf("Network: the DHCP server gave a new address %s", cfg.Addr))
			moved(ctx)
		}
	}
}

func (m *Manager) set(cfg *netcfg.Config, err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.cfg, m.err = cfg, err
}

// Current is the configuration in effect, or why there is none (both nil: configuring).
func (m *Manager) Current() (*netcfg.Config, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.cfg, m.err
}

// Address waits up to wait for the management address.
func (m *Manager) Address(ctx context.Context, wait time.Duration) (net.IP, error) {
	select {
	case <-m.done:
	case <-time.After(wait):
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.cfg == nil {
		why := "not configured yet"
		if m.err != nil {
			why = m.err.Error()
		}
		return nil, fmt.Errorf("no network address on %s (%s)", m.iface, why)
	}
	return m.cfg.Addr.IP, nil
}

// Configure configures the management interface from n (without retries): the
// address, the resolver, the host name and the time servers.
func (m *Manager) Configure(ctx context.Context, n provisioning.Network) (netcfg.Config, error) {
	var cfg netcfg.Config
	var err error
	if n.Mode == "static" {
		ipn, perr := parseCIDR(n.Address)
		if perr != nil {
			return cfg, perr
		}
		cfg, err = netcfg.Static(m.iface, ipn, net.ParseIP(n.Gateway))
	} else {
		cfg, err = netcfg.DHCP(ctx, m.iface, 4*time.Second, 3)
	}
	if err != nil {
		return cfg, err
	}
	if len(n.DNS) > 0 {
		cfg.DNS = nil
		for _, d := range n.DNS {
			cfg.DNS = append(cfg.DNS, net.ParseIP(d))
		}
	}
	if err := netcfg.WriteResolvConf("/etc/resolv.conf", cfg.DNS); err != nil {
		m.log.Error("resolv.conf", "err", err)
	}
	if n.Hostname != "" {
		if err := netcfg.SetHostname(n.Hostname); err != nil {
			m.log.Error("hostname", "err", err)
		}
	}
	m.set(&cfg, nil)
	m.setTimeServers(n, cfg)
	return cfg, nil
}

// parseCIDR is ADDR/PREFIX with the address kept (net.ParseCIDR masks it).
func parseCIDR(s string) (*net.IPNet, error) {
	ip, ipn, err := net.ParseCIDR(s)
	if err != nil {
		return nil, err
	}
	ipn.IP = ip
	return ipn, nil
}

// setTimeServers (re)starts the clock keeper with the NTP servers of the settings, or
// else those the DHCP server offered. Certificates carry validity times and OCSP answers
// and CRLs are judged by them: the appliance keeps its clock on time.
func (m *Manager) setTimeServers(n provisioning.Network, cfg netcfg.Config) {
	servers := n.NTP
	if len(servers) == 0 {
		for _, ip := range cfg.NTP {
			servers = append(servers, ip.String())
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.timeStop != nil {
		if slices.Equal(m.keeper.Servers, servers) {
			return
		}
		m.timeStop()
		m.timeStop, m.keeper = nil, nil
	}
	if len(servers) == 0 || m.dev {
		return
	}
	k := &timesync.Keeper{Servers: servers, Logger: m.log, Clock: timesync.SystemClock{Log: m.log}}
	ctx, cancel := context.WithCancel(context.Background())
	m.keeper, m.timeStop = k, cancel
	go k.Run(ctx)
}

// TimeStatus is one line about the clock.
func (m *Manager) TimeStatus() string {
	m.mu.Lock()
	k := m.keeper
	m.mu.Unlock()
	if k == nil {
		return "no NTP servers (network ntp SERVER... sets them)"
	}
	return k.Status().String()
}
