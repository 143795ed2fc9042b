package appliance

import (
	"context"
	"slices"

	"github.com/enrollment-appliance/aeappliance/appliance/netcfg"
	"github.com/enrollment-appliance/aeappliance/appliance/timesync"
	"github.com/enrollment-appliance/aeappliance/provisioning"
)

// setTimeServers (re)starts the clock keeper with the NTP servers of the settings, or
// else those the DHCP server offered. Certificates carry validity times and OCSP answers
// and CRLs are judged by them: the appliance keeps its clock on time.
func (a *Appliance) setTimeServers(n provisioning.Network, cfg netcfg.Config) {
	servers := n.NTP
	if len(servers) == 0 {
		for _, ip := range cfg.NTP {
			servers = append(servers, ip.String())
		}
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.timeStop != nil {
		if slices.Equal(a.keeper.Servers, servers) {
			return
		}
		a.timeStop()
		a.timeStop, a.keeper = nil, nil
	}
	if len(servers) == 0 || a.o.Dev {
		return
	}
	k := &timesync.Keeper{Servers: servers, Logger: a.log, Clock: timesync.SystemClock{Log: a.log}}
	ctx, cancel := context.WithCancel(context.Background())
	a.keeper, a.timeStop = k, cancel
	go k.Run(ctx)
}

// timeStatus is one line about the clock.
func (a *Appliance) timeStatus() string {
	a.mu.Lock()
	k := a.keeper
	a.mu.Unlock()
	if k == nil {
		return "no NTP servers (network ntp SERVER... sets them)"
	}
	return k.Status().String()
}
