package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/enrollment-appliance/aeappliance/apiclient"
)

func init() {
	commands["agent-restrictions"] = agentRestrictionsCommand
}

// agentRestrictionsCommand: `aectl agent-restrictions [list]`,
// `aectl agent-restrictions add --agent A --target T... [--template T...] [--deny]`,
// `aectl agent-restrictions remove N`.
func agentRestrictionsCommand(fs *flag.FlagSet) runner {
	var spec apiclient.AgentRestrictionSpec
	var targets, templates listFlag
	fs.StringVar(&spec.Agent, "agent", "", "add: the enrollment agent, a user, computer or group (name, DOMAIN\\name, UPN or SID)")
	fs.Var(&targets, "target", "add: an account or group the agent may (--deny: may not) enroll for, or Everyone (repeat for more)")
	fs.Var(&templates, "template", "add: a template the restriction is about (repeat for more; none: every template)")
	fs.BoolVar(&spec.Deny, "deny", false, "add: deny instead of allow (a matching deny wins)")
	usage := fmt.Errorf("%w: aectl agent-restrictions [list] | add --agent A --target T [--target T...] [--template T...] [--deny] | remove N", errUsage)
	return func(ctx context.Context, e *env) error {
		switch {
		case len(e.args) == 0 || len(e.args) == 1 && e.args[0] == "list":
			rs, err := e.cl.AgentRestrictions(ctx)
			if err != nil {
				return err
			}
			return e.print(rs, func(w io.Writer) {
				if len(rs) == 0 {
					fmt.Fprintln(w, "Enrollment agents are not restricted: an agent may enroll any template it may enroll for any")
					fmt.Fprintln(w, "account, except accounts in administrative groups (or with adminCount=1), which only a restriction that names them allows.")
					return
				}
				tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "#\tAGENT\tTEMPLATES\tTARGETS\tACCESS")
				for i, r := range rs {
					tmpl := "(every template)"
					if len(r.Templates) > 0 {
						tmpl = strings.Join(r.Templates, ", ")
					}
					names := make([]string, len(r.Targets))
					for j, p := range r.Targets {
						names[j] = p.Name
					}
					access := "allow"
					if r.Deny {
						access = "DENY"
					}
					fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\n", i+1, r.Agent.Name, tmpl, strings.Join(names, ", "), access)
				}
				tw.Flush()
			})
		case len(e.args) == 1 && e.args[0] == "add":
			spec.Targets, spec.Templates = targets, templates
			if spec.Agent == "" || len(spec.Targets) == 0 {
				return usage
			}
			r, err := e.cl.AddAgentRestriction(ctx, spec)
			if err != nil {
				return err
			}
			return e.print(r, func(w io.Writer) {
				access := "may"
				if r.Deny {
					access = "may not"
				}
				fmt.Fprintf(w, "Added: enrollment agent %s (%s) %s enroll for %d target(s). Enrollment agents are now restricted: an agent no restriction allows enrolls for nobody.\n",
					r.Agent.Name, r.Agent.SID, access, len(r.Targets))
			})
		case len(e.args) == 2 && e.args[0] == "remove":
			n, err := strconv.Atoi(e.args[1])
			if err != nil {
				return usage
			}
			if err := e.cl.RemoveAgentRestriction(ctx, n); err != nil {
				return err
			}
			return e.print(map[string]int{"removed": n}, func(w io.Writer) { fmt.Fprintf(w, "Removed restriction %d.\n", n) })
		}
		return usage
	}
}
