package mgmtnet

import (
	"context"
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"

	"github.com/enrollment-appliance/aeappliance/appliance/netcfg"
)

func TestAddressOnceConfigured(t *testing.T) {
	m := New("eth9", true, slog.New(slog.NewTextHandler(io.Discard, nil)), func(string) {})
	ctx := context.Background()
	if _, err := m.Address(ctx, 0); err == nil || !strings.Contains(err.Error(), "no network address on eth9 (not configured yet)") {
		t.Errorf("Address before configuring = %v", err)
	}
	if cfg, err := m.Current(); cfg != nil || err != nil {
		t.Errorf("Current before configuring = %v, %v; want nothing (configuring)", cfg, err)
	}
	m.SetConfigured(netcfg.Config{Interface: "lo", Addr: &net.IPNet{IP: net.IPv4(127, 0, 0, 1), Mask: net.CIDRMask(8, 32)}})
	select {
	case <-m.Done():
	default:
		t.Fatal("Done not closed after SetConfigured")
	}
	ip, err := m.Address(ctx, 0)
	if err != nil || !ip.Equal(net.IPv4(127, 0, 0, 1)) {
		t.Errorf("Address = %v, %v; want 127.0.0.1", ip, err)
	}
	if got := m.TimeStatus(); !strings.Contains(got, "no NTP servers") {
		t.Errorf("TimeStatus without servers = %q", got)
	}
}

func TestParseCIDRKeepsTheAddress(t *testing.T) {
	ipn, err := parseCIDR("10.0.2.15/24")
	if err != nil || ipn.String() != "10.0.2.15/24" {
		t.Errorf("parseCIDR(10.0.2.15/24) = %v, %v", ipn, err)
	}
	if _, err := parseCIDR("10.0.2.15"); err == nil {
		t.Error("parseCIDR without a prefix: no error")
	}
}
