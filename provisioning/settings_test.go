package provisioning

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/enrollment-appliance/aeappliance/provisioning/provtest"
)

func TestPassphrase(t *testing.T) {
	dir := t.TempDir()
	if HasPassphrase(dir) {
		t.Fatal("a passphrase before any was set")
	}
	if err := CheckPassphrase(dir, "x"); err != ErrNoPassphrase {
		t.Errorf("check without a passphrase: %v", err)
	}
	if _, err := SetPassphrase(dir, "", "too short"); err == nil || !strings.Contains(err.Error(), "too short") {
		t.Errorf("short passphrase: %v", err)
	}
	if HasPassphrase(dir) {
		t.Fatal("a refused passphrase was saved")
	}
	r, err := SetPassphrase(dir, "", "correct horse battery")
	if err != nil || !r.Changed {
		t.Fatalf("set: %v %+v", err, r)
	}
	if err := CheckPassphrase(dir, "correct horse battery"); err != nil {
		t.Errorf("check: %v", err)
	}
	if err := CheckPassphrase(dir, "correct horse batterY"); err != ErrWrongPassphrase {
		t.Errorf("wrong passphrase: %v", err)
	}
	provtest.Refused(t, "current passphrase is wrong", func() error {
		_, err := SetPassphrase(dir, "guess guess guess", "new passphrase here")
		return err
	}, dir)
	if r, err := SetPassphrase(dir, "correct horse battery", "correct horse battery"); err != nil || r.Changed {
		t.Errorf("same again: %v %+v", err, r)
	}
	if _, err := SetPassphrase(dir, "correct horse battery", "new passphrase here"); err != nil {
		t.Fatal(err)
	}
	if err := CheckPassphrase(dir, "new passphrase here"); err != nil {
		t.Errorf("after the change: %v", err)
	}
	b, _ := os.ReadFile(filepath.Join(dir, AdminFile))
	if bytes.Contains(b, []byte("new passphrase")) {
		t.Error("the passphrase is stored in clear")
	}
}

func TestNetworkSettings(t *testing.T) {
	dir := t.TempDir()
	n, err := LoadNetwork(dir)
	if err != nil || n.Mode != "dhcp" {
		t.Fatalf("default: %+v %v", n, err)
	}
	for _, bad := range []struct {
		change func(*Network)
		want   string
	}{
		{func(n *Network) { n.Mode = "static"; n.Address = "10.0.2.15" }, "prefix length"},
		{func(n *Network) { n.Mode = "static"; n.Address = "10.0.2.0/24" }, "network address"},
		{func(n *Network) { n.Mode = "static"; n.Address = "10.0.2.15/24"; n.Gateway = "10.0.3.1" }, "not another address"},
		{func(n *Network) { n.DNS = []string{"dns.example"} }, "want an IP address"},
		{func(n *Network) { n.NTP = []string{"bad host!"} }, "NTP server"},
		{func(n *Network) { n.Hostname = "-pki" }, "hostname"},
		{func(n *Network) { n.Mode = "ppp" }, "want dhcp or static"},
	} {
		provtest.Refused(t, bad.want, func() error { _, _, err := UpdateNetwork(dir, bad.change); return err }, dir)
	}
	n, r, err := UpdateNetwork(dir, func(n *Network) {
		n.Mode, n.Address, n.Gateway = "static", "10.0.2.15/24", "10.0.2.2"
		n.DNS, n.NTP, n.Hostname = []string{"10.0.2.3"}, []string{"10.0.2.2:11123", "ntp.example.test"}, "pki"
	})
	if err != nil || !r.Changed || n.String() != "static 10.0.2.15/24 gw 10.0.2.2, dns 10.0.2.3, ntp 10.0.2.2:11123 ntp.example.test, hostname pki" {
		t.Fatalf("static: %v %+v %s", err, r, n)
	}
	if _, r, err := UpdateNetwork(dir, func(n *Network) { n.Hostname = "pki" }); err != nil || r.Changed {
		t.Errorf("same again: %v %+v", err, r)
	}
	n, _, err = UpdateNetwork(dir, func(n *Network) { n.Mode = "dhcp" })
	if err != nil || n.Address != "" || n.Hostname != "pki" {
		t.Errorf("back to DHCP: %+v %v", n, err)
	}
	if got, _ := LoadNetwork(dir); got.String() != n.String() {
		t.Errorf("saved %s, loaded %s", n, got)
	}
}
