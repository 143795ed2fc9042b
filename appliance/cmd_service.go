package appliance

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/enrollment-appliance/aeappliance/apiclient"
	"github.com/enrollment-appliance/aeappliance/appliance/svcctl"
	"github.com/enrollment-appliance/aeappliance/config"
	"github.com/enrollment-appliance/aeappliance/provisioning"
)

// client dials the running service's API with the admin token on the data disk.
func (a *Appliance) client() (*apiclient.Client, error) {
	if !a.provisioned() {
		return nil, errors.New("the appliance is not provisioned (see provision status)")
	}
	return apiclient.DialDataDir(a.varDir())
}

func (a *Appliance) cmdRequests(ctx context.Context, args []string, w io.Writer) error {
	cl, err := a.client()
	if err != nil {
		return err
	}
	state := ""
	if len(args) > 0 {
		state = args[0]
	}
	reqs, err := cl.Requests(ctx, apiclient.RequestQuery{State: apiclient.RequestState(state), Limit: 20})
	if err != nil {
		return err
	}
	if len(reqs) == 0 {
		fmt.Fprintln(w, "No requests.")
		return nil
	}
	fmt.Fprintf(w, "%-6s %-8s %-16s %-18s %s\n", "ID", "STATE", "SUBMITTED", "TEMPLATE", "ACCOUNT")
	for _, r := range reqs {
		fmt.Fprintf(w, "%-6d %-8s %-16s %-18s %s\n", r.ID, r.State, r.Submitted.UTC().Format("2006-01-02 15:04"),
			clip(r.Template, 18), clip(r.Account, 28))
	}
	return nil
}

// cmdCluster shows the store and the instances serving the CA from it (aectl cluster status).
func (a *Appliance) cmdCluster(ctx context.Context, _ []string, w io.Writer) error {
	cl, err := a.client()
	if err != nil {
		return err
	}
	st, err := cl.Cluster(ctx)
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	st.WriteText(tw)
	return tw.Flush()
}

// requestClient parses a request ID and dials the API, for approve and deny.
func (a *Appliance) requestClient(arg string) (int64, *apiclient.Client, error) {
	id, err := strconv.ParseInt(arg, 10, 64)
	if err != nil {
		return 0, nil, fmt.Errorf("request ID %q: want a number", arg)
	}
	cl, err := a.client()
	return id, cl, err
}

func (a *Appliance) cmdApprove(ctx context.Context, args []string, w io.Writer) error {
	id, cl, err := a.requestClient(args[0])
	if err != nil {
		return err
	}
	res, err := cl.Approve(ctx, id)
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "Request %d: %s, serial %s\n", id, res.Status, res.Serial)
	return nil
}

func (a *Appliance) cmdDeny(ctx context.Context, args []string, w io.Writer) error {
	id, cl, err := a.requestClient(args[0])
	if err != nil {
		return err
	}
	res, err := cl.Deny(ctx, id, strings.Join(args[1:], " "))
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "Request %d: %s\n", id, res.Status)
	return nil
}

func (a *Appliance) cmdRevoke(ctx context.Context, args []string, w io.Writer) error {
	cl, err := a.client()
	if err != nil {
		return err
	}
	c, err := cl.Revoke(ctx, args[0], args[1])
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "Revoked %s (%s): %s\n", c.Serial, c.Subject, args[1])
	return nil
}

func (a *Appliance) cmdEvents(ctx context.Context, args []string, w io.Writer) error {
	n := 15
	if len(args) > 0 {
		v, err := strconv.Atoi(args[0])
		if err != nil || v < 1 || v > 500 {
			return fmt.Errorf("%q: want a number of events from 1 to 500", args[0])
		}
		n = v
	}
	cl, err := a.client()
	if err != nil {
		return err
	}
	all, err := cl.Events(ctx, apiclient.EventQuery{Limit: n, Newest: true})
	if err != nil {
		return err
	}
	for _, ev := range all {
		fmt.Fprintf(w, "%5d %s %4d %s\n", ev.Seq, ev.Time.UTC().Format("01-02 15:04:05"), ev.ID, clip(ev.Message, 52))
	}
	return nil
}

func (a *Appliance) cmdCA(ctx context.Context, _ []string, w io.Writer) error {
	if err := a.needDisk(); err != nil {
		return err
	}
	subj, fp, err := svcctl.CAInfo(a.varDir())
	if err != nil {
		return errors.New("there is no CA certificate yet (see provision status)")
	}
	b, err := os.ReadFile(filepath.Join(a.varDir(), config.CACertFile))
	if err != nil {
		return err
	}
	if chain, err := os.ReadFile(filepath.Join(a.varDir(), provisioning.CAChainFile)); err == nil {
		b = append(b, chain...)
	}
	fmt.Fprintf(w, "CA: %s\nSHA-256: %s\n%s", subj, fp, b)
	return nil
}

func (a *Appliance) cmdAPIToken(ctx context.Context, _ []string, w io.Writer) error {
	if !a.provisioned() {
		return errors.New("the appliance is not provisioned (see provision status)")
	}
	cfg, err := config.Load(a.varDir())
	if err != nil {
		return err
	}
	b, err := os.ReadFile(config.Path(a.varDir(), cfg.API.TokenFile))
	if err != nil {
		return err
	}
	a.log.Info("the API admin token was shown on the console")
	fmt.Fprintf(w, "API admin token (aectl --api ADDR --token-file FILE --ca-file CA.pem ...):\n%s\n", strings.TrimSpace(string(b)))
	return nil
}

func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n-1] + "~"
}

// cmdSyslog shows or sets the remote syslog server (the API's /api/v1/syslog).
func (a *Appliance) cmdSyslog(mode string) func(ctx context.Context, args []string, w io.Writer) error {
	return func(ctx context.Context, args []string, w io.Writer) error {
		cl, err := a.client()
		if err != nil {
			return err
		}
		var st apiclient.SyslogStatus
		switch mode {
		case "":
			st, err = cl.Syslog(ctx)
		case "off":
			st, err = cl.SyslogOff(ctx)
		case "udp":
			st, err = cl.SetSyslog(ctx, apiclient.SyslogSettings{Address: args[0], Transport: "udp"})
		case "tls":
			in := apiclient.SyslogSettings{Address: args[0], Transport: "tls"}
			if len(args) > 1 {
				in.ServerName = args[1]
			}
			lines, lerr := a.con.AskLines("Paste the CA certificate of the syslog server (PEM) then an empty line,\nor just an empty line to trust the system's roots:", 2000)
			if lerr != nil {
				return lerr
			}
			if len(lines) > 0 {
				in.CAPEM = strings.Join(lines, "\n") + "\n"
			}
			st, err = cl.SetSyslog(ctx, in)
		}
		if err != nil {
			return err
		}
		if st.Address == "" {
			fmt.Fprintln(w, "Remote syslog: off")
			return nil
		}
		fmt.Fprintf(w, "Remote syslog: %s (%s)\nAudit stream:  %s\nLog stream:    %d sent, %d dropped\n",
			st.Address, st.Transport, st.Audit, st.LogSent, st.LogDropped)
		return nil
	}
}
