package ceremony

import (
	"context"
	"time"

	"github.com/enrollment-appliance/aeappliance/provisioning"
)

// Local runs the steps in this process (it implements provapi.Steps): Ceremony for the service's steps, Settings for the
// network settings directory, FinishOptions for Finish.
type Local struct {
	Ceremony      *Ceremony
	Settings      string
	FinishOptions FinishOptions
}

// Progress implements Steps.
func (l *Local) Progress(context.Context) ([]provisioning.Step, error) { return l.Ceremony.Progress() }

// Network implements Steps.
func (l *Local) Network(_ context.Context, change func(*provisioning.Network)) (provisioning.Network, provisioning.Report, error) {
	if change == nil {
		n, err := provisioning.LoadNetwork(l.Settings)
		return n, provisioning.Report{Step: provisioning.StepNetwork}, err
	}
	return provisioning.UpdateNetwork(l.Settings, change)
}

// Token implements Steps.
func (l *Local) Token(ctx context.Context, soPIN, userPIN string) (provisioning.Report, error) {
	return l.Ceremony.Token(ctx, soPIN, userPIN)
}

// Key implements Steps.
func (l *Local) Key(ctx context.Context, keyType string) (provisioning.Report, error) {
	return l.Ceremony.Key(ctx, keyType)
}

// SelfSigned implements Steps.
func (l *Local) SelfSigned(ctx context.Context, name string, validity time.Duration) (provisioning.Report, error) {
	return l.Ceremony.SelfSigned(ctx, name, validity)
}

// CSR implements Steps.
func (l *Local) CSR(ctx context.Context, name string) ([]byte, provisioning.Report, error) {
	return l.Ceremony.CSR(ctx, name)
}

// Import implements Steps.
func (l *Local) Import(ctx context.Context, bundle []byte) (provisioning.Report, error) {
	return l.Ceremony.Import(ctx, bundle)
}

// Directory implements Steps.
func (l *Local) Directory(ctx context.Context, d provisioning.Directory) (provisioning.Report, error) {
	return l.Ceremony.Directory(ctx, d)
}

// Store implements Steps.
func (l *Local) Store(ctx context.Context, s provisioning.Store) (provisioning.Report, error) {
	return l.Ceremony.Store(ctx, s)
}

// Finish implements Steps.
func (l *Local) Finish(ctx context.Context) (provisioning.Report, error) {
	return l.Ceremony.Finish(ctx, l.FinishOptions)
}

// Join implements Steps.
func (l *Local) Join(ctx context.Context, j provisioning.Join) (provisioning.Report, error) {
	return l.Ceremony.Join(ctx, j, l.FinishOptions)
}

// Restore implements Steps.
func (l *Local) Restore(ctx context.Context, r provisioning.Restore) (provisioning.Report, error) {
	return l.Ceremony.Restore(ctx, r, l.FinishOptions)
}
