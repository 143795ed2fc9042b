package appliance

import (
	"context"
	"fmt"
	"io"

	"github.com/enrollment-appliance/aeappliance/provisioning"
)

// cmdNetwork shows the network, or changes one setting and applies it.
func (a *Appliance) cmdNetwork(what string) func(context.Context, []string, io.Writer) error {
	return func(ctx context.Context, args []string, w io.Writer) error {
		if what == "" {
			cur, cerr := a.net.Current()
			n, err := provisioning.LoadNetwork(a.settingsDir())
			if err != nil {
				return err
			}
			fmt.Fprintf(w, "%-12s%s\n", "Settings:", n)
			switch {
			case cur != nil:
				fmt.Fprintf(w, "%-12s%s\n", "Now:", cur)
			case cerr != nil:
				fmt.Fprintf(w, "%-12s%v\n", "Now:", cerr)
			}
			fmt.Fprintf(w, "%-12s%s\n", "Time:", a.net.TimeStatus())
			return nil
		}
		if err := a.needDisk(); err != nil {
			return err
		}
		n, r, err := provisioning.UpdateNetwork(a.settingsDir(), func(n *provisioning.Network) {
			switch what {
			case "dhcp":
				n.Mode = "dhcp"
			case "static":
				n.Mode, n.Address, n.Gateway = "static", args[0], ""
				if len(args) > 1 {
					n.Gateway = args[1]
				}
			case "dns":
				n.DNS = args
			case "ntp":
				n.NTP = args
			case "hostname":
				n.Hostname = args[0]
			}
		})
		if err != nil {
			return err
		}
		fmt.Fprintln(w, r.String())
		if !r.Changed {
			return nil
		}
		return a.applyNetwork(ctx, n, w)
	}
}

// applyNetwork applies saved settings now: the address (static, or a new DHCP lease), the
// resolver, the host name and the time servers; the service follows a new address.
func (a *Appliance) applyNetwork(ctx context.Context, n provisioning.Network, w io.Writer) error {
	if a.o.Dev {
		fmt.Fprintln(w, "(development mode: saved, not applied)")
		return nil
	}
	before, _ := a.net.Address(ctx, 0)
	cfg, err := a.net.Configure(ctx, n)
	if err != nil {
		return fmt.Errorf("saved, but applying failed: %w", err)
	}
	fmt.Fprintf(w, "Applied: %s\n", cfg)
	if before != nil && !before.Equal(cfg.Addr.IP) {
		if a.provisioned() {
			fmt.Fprintln(w, "The management address changed: restarting enrollsvc on it.")
			a.restartService(ctx)
		} else if _, running := a.provisioningAPI(); running != "" {
			a.stopProvisioningAPI()
			if err := a.startProvisioningAPI(ctx); err != nil {
				fmt.Fprintf(w, "Provisioning API: %v\n", err)
			}
		}
	}
	return nil
}
