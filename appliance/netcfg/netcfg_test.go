package netcfg

import (
	"net"
	"testing"
	"time"
)

func TestConfigString(t *testing.T) {
	c := Config{Interface: "eth0", Method: "dhcp", Addr: &net.IPNet{IP: net.IPv4(10, 0, 2, 15), Mask: net.CIDRMask(24, 32)},
		Gateway: net.IPv4(10, 0, 2, 2), DNS: []net.IP{net.IPv4(10, 0, 2, 3)}, LeaseTime: 24 * time.Hour}
	if got, want := c.String(), "eth0 10.0.2.15/24 gw 10.0.2.2 dns 10.0.2.3 (dhcp, lease 24h0m0s)"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
	c = Config{Interface: "lo", Method: "development mode", Addr: &net.IPNet{IP: net.IPv4(127, 0, 0, 1), Mask: net.CIDRMask(8, 32)}}
	if got, want := c.String(), "lo 127.0.0.1/8 (development mode)"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
}
