package apiclient

import (
	"fmt"
	"io"
	"strings"
	"time"
)

// WriteText writes the cluster status as aectl and the console show it: tab-separated columns
// for a text/tabwriter.
func (st Cluster) WriteText(w io.Writer) {
	store := "reachable"
	if !st.StoreOK {
		store = "NOT REACHABLE: " + st.StoreError
	}
	fmt.Fprintf(w, "Store:\t%s, %s (asked %s)\n", st.Store, store, st.Instance)
	if st.DatabaseVersion != "" {
		pub := st.CRLPublisher
		if pub == "" {
			pub = "none holds the lock now"
		}
		fmt.Fprintf(w, "Database:\tPostgreSQL %s; CRL publisher: %s\n", st.DatabaseVersion, pub)
		if len(st.Replicas) == 0 {
			fmt.Fprintf(w, "Replicas:\tnone reported\n")
		}
		for _, r := range st.Replicas {
			fmt.Fprintf(w, "Replica:\t%s\n", r)
		}
	}
	fmt.Fprintln(w, "INSTANCE\tVERSION\tSTATE\tLAST HEARTBEAT\tSTARTED\tADDRESSES")
	for _, in := range st.Instances {
		state := "down"
		if in.Live {
			state = "live"
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\n", in.Name, in.Version, state, in.Heartbeat.Format(time.RFC3339),
			in.Started.Format(time.RFC3339), strings.Join(in.Addresses, " "))
	}
}
