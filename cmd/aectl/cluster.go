package main

import (
	"context"
	"flag"
	"fmt"
)

func init() {
	commands["cluster"] = clusterCommand
}

// clusterCommand shows the store and the instances serving the CA from it.
func clusterCommand(fs *flag.FlagSet) runner {
	return func(ctx context.Context, e *env) error {
		if len(e.args) != 1 || e.args[0] != "status" {
			return fmt.Errorf("%w: aectl cluster status", errUsage)
		}
		st, err := e.cl.Cluster(ctx)
		if err != nil {
			return err
		}
		return e.print(st, st.WriteText)
	}
}
