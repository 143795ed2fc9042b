package provapi

import (
	"context"
	"time"

	"github.com/enrollment-appliance/aeappliance/provisioning"
)

// Steps is what the API drives; the appliance implements it (running each HSM step in a
// child process), and Local implements it in this process on a data directory.
type Steps interface {
	// Progress lists the service's steps, token to finish.
	Progress(ctx context.Context) ([]provisioning.Step, error)
	// Network applies change to the saved network settings and saves them when they are
	// valid (provisioning.UpdateNetwork). A nil change only reads them: it saves nothing
	// and returns an empty report.
	Network(ctx context.Context, change func(*provisioning.Network)) (provisioning.Network, provisioning.Report, error)
	Token(ctx context.Context, soPIN, userPIN string) (provisioning.Report, error)
	Key(ctx context.Context, keyType string) (provisioning.Report, error)
	SelfSigned(ctx context.Context, name string, validity time.Duration) (provisioning.Report, error)
	CSR(ctx context.Context, name string) ([]byte, provisioning.Report, error)
	Import(ctx context.Context, bundle []byte) (provisioning.Report, error)
	Directory(ctx context.Context, d provisioning.Directory) (provisioning.Report, error)
	Store(ctx context.Context, s provisioning.Store) (provisioning.Report, error)
	Finish(ctx context.Context) (provisioning.Report, error)
	// Join replaces Token to Finish on an appliance that joins a CA whose store is PostgreSQL;
	// it ends provisioned, as Finish does.
	Join(ctx context.Context, j provisioning.Join) (provisioning.Report, error)
	// Restore replaces Token to Finish too: the data directory from a backup; it ends
	// provisioned, as Finish does.
	Restore(ctx context.Context, r provisioning.Restore) (provisioning.Report, error)
}
