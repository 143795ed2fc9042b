package appliance

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/enrollment-appliance/aeappliance/appliance/svcctl"
	"github.com/enrollment-appliance/aeappliance/provisioning"
	"github.com/enrollment-appliance/aeappliance/provisioning/stepcmd"
)

// steps runs the provisioning ceremony for the console and the provisioning API alike:
// the appliance's own settings in this process, the service's steps (which need PKCS#11,
// so cgo) in `enrollsvc provision STEP` child processes with their secrets on stdin.
type steps struct{ a *Appliance }

func (a *Appliance) steps() steps { return steps{a} }

// run runs one service step in a child process (stepcmd) and decodes its answer into out.
func (s steps) run(ctx context.Context, out any, call stepcmd.Call) error {
	a := s.a
	if err := a.needDisk(); err != nil {
		return err
	}
	if call.Step != provisioning.Status && a.provisioned() {
		subj, _, _ := svcctl.CAInfo(a.varDir())
		return fmt.Errorf("already provisioned (CA %s); nothing changed", subj)
	}
	t := time.Now()
	err := stepcmd.Run(ctx, a.o.Enrollsvc, a.varDir(), a.hsmModule(), call, out)
	a.log.Info("provisioning step", "step", call.Step, "args", call.Args, "err", err, "elapsed", time.Since(t)) // never stdin
	return diskFull(err)
}

func (s steps) report(ctx context.Context, call stepcmd.Call, err error) (provisioning.Report, error) {
	var r provisioning.Report
	if err != nil {
		return r, err
	}
	err = s.run(ctx, &r, call)
	return r, err
}

// Progress lists the service's steps.
func (s steps) Progress(ctx context.Context) ([]provisioning.Step, error) {
	var st []provisioning.Step
	err := s.run(ctx, &st, stepcmd.Status())
	return st, err
}

// Network changes the network settings and applies them.
func (s steps) Network(ctx context.Context, change func(*provisioning.Network)) (provisioning.Network, provisioning.Report, error) {
	a := s.a
	if err := a.needDisk(); err != nil {
		return provisioning.Network{}, provisioning.Report{}, err
	}
	if change == nil {
		n, err := provisioning.LoadNetwork(a.settingsDir())
		return n, provisioning.Report{Step: provisioning.StepNetwork}, err
	}
	n, r, err := provisioning.UpdateNetwork(a.settingsDir(), change)
	if err != nil || !r.Changed {
		return n, r, diskFull(err)
	}
	var applied bytes.Buffer
	err = a.applyNetwork(ctx, n, &applied)
	for _, l := range strings.Split(strings.TrimSpace(applied.String()), "\n") {
		if l != "" {
			r.Lines = append(r.Lines, l)
		}
	}
	return n, r, err
}

// Token initialises the HSM token (or checks the user PIN of the one there).
func (s steps) Token(ctx context.Context, soPIN, userPIN string) (provisioning.Report, error) {
	call, err := stepcmd.Token(soPIN, userPIN)
	return s.report(ctx, call, err)
}

// Key generates the CA key in the token.
func (s steps) Key(ctx context.Context, keyType string) (provisioning.Report, error) {
	return s.report(ctx, stepcmd.Key(keyType), nil)
}

// SelfSigned makes the self-signed root CA certificate.
func (s steps) SelfSigned(ctx context.Context, name string, validity time.Duration) (provisioning.Report, error) {
	return s.report(ctx, stepcmd.SelfSigned(name, validity), nil)
}

// CSR makes the subordinate CA's request.
func (s steps) CSR(ctx context.Context, name string) ([]byte, provisioning.Report, error) {
	var out stepcmd.CSRReply
	err := s.run(ctx, &out, stepcmd.CSR(name))
	return []byte(out.CSR), out.Report, err
}

// Import imports the subordinate CA's certificate and chain.
func (s steps) Import(ctx context.Context, bundle []byte) (provisioning.Report, error) {
	return s.report(ctx, stepcmd.Import(bundle), nil)
}

// Directory checks and saves the Active Directory settings.
func (s steps) Directory(ctx context.Context, d provisioning.Directory) (provisioning.Report, error) {
	var caFile string
	remove, err := tempFiles(tempFile{d.CAPEM, &caFile})
	if err != nil {
		return provisioning.Report{}, err
	}
	defer remove()
	call, err := stepcmd.Directory(d, caFile)
	return s.report(ctx, call, err)
}

// tempFile is content for a step's child process, and where to put the file's name.
type tempFile struct {
	b   []byte
	dst *string
}

// tempFiles writes each non-empty content into a temporary file (mode 0600, os.CreateTemp's)
// and sets its dst to the file's name; remove removes them all.
func tempFiles(files ...tempFile) (remove func(), err error) {
	var names []string
	remove = func() {
		for _, n := range names {
			os.Remove(n)
		}
	}
	for _, f := range files {
		if len(f.b) == 0 {
			continue
		}
		tf, err := os.CreateTemp("", "step-*")
		if err != nil {
			remove()
			return nil, err
		}
		names = append(names, tf.Name())
		_, werr := tf.Write(f.b)
		if err := errors.Join(werr, tf.Close()); err != nil {
			remove()
			return nil, err
		}
		*f.dst = tf.Name()
	}
	return remove, nil
}

// Store checks and saves the shared PostgreSQL store's settings, its PEM files handed to the
// step in temporary files.
func (s steps) Store(ctx context.Context, st provisioning.Store) (provisioning.Report, error) {
	var files stepcmd.StoreFiles
	remove, err := tempFiles(tempFile{st.CAPEM, &files.CA}, tempFile{st.ClientCertPEM, &files.ClientCert},
		tempFile{st.ClientKeyPEM, &files.ClientKey})
	if err != nil {
		return provisioning.Report{}, err
	}
	defer remove()
	call, err := stepcmd.Store(st, files)
	return s.report(ctx, call, err)
}

// Finish writes the service's configuration for the management address: the API there,
// the plain-HTTP listener on port 80 named by the host name (or the address), and with a
// directory the enrollment web services on 443.
func (s steps) Finish(ctx context.Context) (provisioning.Report, error) {
	a := s.a
	if err := a.needDisk(); err != nil {
		return provisioning.Report{}, err
	}
	st, _ := provisioning.LoadState(a.varDir())
	f, err := a.listeners(ctx, st.Directory != nil)
	if err != nil {
		return provisioning.Report{}, err
	}
	r, err := s.report(ctx, stepcmd.FinishCall(f), nil)
	if err != nil {
		return r, err
	}
	return s.provisioned(ctx, r)
}

// Join joins the CA whose store j.Store names, instead of steps token to finish: its PEM files
// and the token bundle handed to the step in temporary files, the listeners as Finish's (the
// enrollment web services' used when the CA has a directory).
func (s steps) Join(ctx context.Context, j provisioning.Join) (provisioning.Report, error) {
	a := s.a
	if err := a.needDisk(); err != nil {
		return provisioning.Report{}, err
	}
	f, err := a.listeners(ctx, true)
	if err != nil {
		return provisioning.Report{}, err
	}
	var files stepcmd.StoreFiles
	var bundle string
	remove, err := tempFiles(tempFile{j.Store.CAPEM, &files.CA}, tempFile{j.Store.ClientCertPEM, &files.ClientCert},
		tempFile{j.Store.ClientKeyPEM, &files.ClientKey}, tempFile{j.TokenBundle, &bundle})
	if err != nil {
		return provisioning.Report{}, err
	}
	defer remove()
	call, err := stepcmd.JoinCall(j, files, bundle, f)
	r, err := s.report(ctx, call, err)
	if err != nil {
		return r, err
	}
	return s.provisioned(ctx, r)
}

// Restore brings the data directory back from a backup, instead of steps token to finish,
// listening where Finish would (the enrollment web services' used when the backup's CA has a
// directory).
func (s steps) Restore(ctx context.Context, rs provisioning.Restore) (provisioning.Report, error) {
	a := s.a
	if err := a.needDisk(); err != nil {
		return provisioning.Report{}, err
	}
	f, err := a.listeners(ctx, true)
	if err != nil {
		return provisioning.Report{}, err
	}
	call, err := stepcmd.RestoreCall(rs, f)
	r, err := s.report(ctx, call, err)
	if err != nil {
		return r, err
	}
	return s.provisioned(ctx, r)
}

// listeners are the service's listeners on the management address: the API, the plain-HTTP
// listener named by the host name (or the address), and with a directory the enrollment web
// services on 443 named by the address and the host name.
func (a *Appliance) listeners(ctx context.Context, directory bool) (stepcmd.Finish, error) {
	ip, err := a.net.Address(ctx, 30*time.Second)
	if err != nil {
		return stepcmd.Finish{}, fmt.Errorf("%w; nothing changed, try again once the network is up", err)
	}
	host := ip.String()
	f := stepcmd.Finish{APIListen: net.JoinHostPort(host, strconv.Itoa(a.o.APIPort)),
		HTTPURL: a.httpURL(ctx), HTTPListen: net.JoinHostPort(host, strconv.Itoa(a.o.HTTPPort))}
	n, _ := provisioning.LoadNetwork(a.settingsDir())
	if directory {
		f.EnrollListen, f.Hostnames = net.JoinHostPort(host, strconv.Itoa(a.o.EnrollPort)), []string{host}
		if n.Hostname != "" {
			f.Hostnames = append(f.Hostnames, n.Hostname)
		}
	}
	// Its name among the appliances sharing a store: the host name, else the serial number.
	switch {
	case n.Hostname != "":
		f.Instance = n.Hostname
	case a.serial != "":
		f.Instance = "appliance-" + a.serial
	}
	return f, nil
}

// provisioned completes a step that ends provisioned (finish, join): the data disk's recovery
// passphrase.
func (s steps) provisioned(ctx context.Context, r provisioning.Report) (provisioning.Report, error) {
	a := s.a
	lines, err := a.finishRecovery(ctx)
	if err != nil {
		r.Say("The data disk's recovery passphrase could not be set: %v (disk recovery tries again)", err)
	}
	r.Lines = append(r.Lines, lines...)
	return r, nil
}

// httpURL is how clients reach the plain-HTTP listener: the host name when one is set,
// else the management address.
func (a *Appliance) httpURL(ctx context.Context) string {
	name := ""
	if n, err := provisioning.LoadNetwork(a.settingsDir()); err == nil {
		name = n.Hostname
	}
	if name == "" {
		if ip, err := a.net.Address(ctx, 0); err == nil {
			name = ip.String()
		}
	}
	u := "http://" + name
	if a.o.HTTPPort != 80 {
		u += ":" + strconv.Itoa(a.o.HTTPPort)
	}
	return u
}
