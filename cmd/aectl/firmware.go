package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
)

func init() { commands["firmware"] = firmwareCommand }

// firmwareCommand: `aectl firmware` shows the appliance's firmware slots, `aectl firmware
// upload FILE.aeu` installs a signed update bundle for the next boot.
func firmwareCommand(fs *flag.FlagSet) runner {
	return func(ctx context.Context, e *env) error {
		switch {
		case len(e.args) == 0 || len(e.args) == 1 && e.args[0] == "status":
			st, err := e.cl.FirmwareStatus(ctx)
			if err != nil {
				return err
			}
			return e.print(st, func(w io.Writer) {
				fmt.Fprintf(w, "Running:\t%s\n", st.Running)
				for _, s := range st.Slots {
					v := s.Version
					if v == "" {
						v = "empty"
					}
					tag := ""
					if s.Name == st.Active {
						tag += " [active]"
					}
					if s.Name == st.Pending {
						tag += " [pending: tried at the next boot]"
					}
					fmt.Fprintf(w, "Slot %s:\t%s%s\n", s.Name, v, tag)
				}
				if st.Last != "" {
					fmt.Fprintf(w, "Last:\t%s\n", st.Last)
				}
			})
		case len(e.args) == 2 && e.args[0] == "upload":
			b, err := os.ReadFile(e.args[1])
			if err != nil {
				return err
			}
			res, err := e.cl.InstallFirmware(ctx, b)
			if err != nil {
				return err
			}
			return e.print(res, func(w io.Writer) { fmt.Fprintf(w, "%s\n", res.Message) })
		}
		return fmt.Errorf("%w: aectl firmware [status] | aectl firmware upload FILE.aeu", errUsage)
	}
}
