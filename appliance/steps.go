package appliance

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"github.com/enrollment-appliance/aeappliance/provisioning"
)

// steps runs the provisioning ceremony for the console and the provisioning API alike:
// the appliance's own settings in this process, the service's steps (which need PKCS#11,
// so cgo) in `enrollsvc provision STEP` child processes with their secrets on stdin.
type steps struct{ a *Appliance }

func (a *Appliance) steps() steps { return steps{a} }

// run runs one service step and decodes its JSON output into out.
func (s steps) run(ctx context.Context, out any, stdin, step string, args ...string) error {
	a := s.a
	if err := a.needDisk(); err != nil {
		return err
	}
	if step != "status" && a.provisioned() {
		subj, _, _ := caInfo(a.varDir())
		return fmt.Errorf("already provisioned (CA %s); nothing changed", subj)
	}
	full := append([]string{"provision", step, "--data", a.varDir(), "--json"}, args...)
	if h := a.hsmModule(); h != "" {
		full = append(full, "--pkcs11-module", h)
	}
	cmd := exec.CommandContext(ctx, a.o.Enrollsvc, full...)
	cmd.Stdin = strings.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	t := time.Now()
	err := cmd.Run()
	a.log.Info("provisioning step", "step", step, "args", args, "err", err, "elapsed", time.Since(t)) // never stdin
	if err != nil {
		why := strings.TrimPrefix(lastLine(stderr.String()), "enrollsvc: ")
		if why == "" {
			why = err.Error()
		}
		return diskFull(errors.New(why))
	}
	if err := json.Unmarshal(stdout.Bytes(), out); err != nil {
		return fmt.Errorf("enrollsvc provision %s: unreadable answer: %w", step, err)
	}
	return nil
}

func (s steps) report(ctx context.Context, stdin, step string, args ...string) (provisioning.Report, error) {
	var r provisioning.Report
	err := s.run(ctx, &r, stdin, step, args...)
	return r, err
}

// Progress lists the service's steps.
func (s steps) Progress(ctx context.Context) ([]provisioning.Step, error) {
	var st []provisioning.Step
	err := s.run(ctx, &st, "", "status")
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
	if strings.ContainsAny(soPIN+userPIN, "\n\r") {
		return provisioning.Report{}, errors.New("a PIN holds a line break: nothing changed")
	}
	return s.report(ctx, soPIN+"\n"+userPIN+"\n", "token")
}

// Key generates the CA key in the token.
func (s steps) Key(ctx context.Context, keyType string) (provisioning.Report, error) {
	return s.report(ctx, "", "key", "--key", keyType)
}

// SelfSigned makes the self-signed root CA certificate.
func (s steps) SelfSigned(ctx context.Context, name string, validity time.Duration) (provisioning.Report, error) {
	args := []string{"--ca-name", name}
	if validity > 0 {
		args = append(args, "--ca-validity", validity.String())
	}
	return s.report(ctx, "", "selfsigned", args...)
}

// CSR makes the subordinate CA's request.
func (s steps) CSR(ctx context.Context, name string) ([]byte, provisioning.Report, error) {
	var out struct {
		Report provisioning.Report `json:"report"`
		CSR    string              `json:"csr"`
	}
	err := s.run(ctx, &out, "", "csr", "--ca-name", name)
	return []byte(out.CSR), out.Report, err
}

// Import imports the subordinate CA's certificate and chain.
func (s steps) Import(ctx context.Context, bundle []byte) (provisioning.Report, error) {
	return s.report(ctx, string(bundle), "import")
}

// Directory checks and saves the Active Directory settings.
func (s steps) Directory(ctx context.Context, d provisioning.Directory) (provisioning.Report, error) {
	if strings.ContainsAny(d.Password, "\n\r") {
		return provisioning.Report{}, errors.New("the password holds a line break: nothing changed")
	}
	args := []string{"--ldap-url", d.URL, "--ldap-bind-user", d.BindUser, "--ca-cn", d.CACN}
	if d.ServerName != "" {
		args = append(args, "--ldap-server-name", d.ServerName)
	}
	if len(d.CAPEM) > 0 {
		f, err := os.CreateTemp("", "dc-ca-*.pem")
		if err != nil {
			return provisioning.Report{}, err
		}
		defer os.Remove(f.Name())
		_, werr := f.Write(d.CAPEM)
		if err := errors.Join(werr, f.Close()); err != nil {
			return provisioning.Report{}, err
		}
		args = append(args, "--ldap-ca-file", f.Name())
	}
	return s.report(ctx, d.Password+"\n", "directory", args...)
}

// Finish writes the service's configuration for the management address: the API there,
// the plain-HTTP listener on port 80 named by the host name (or the address), and with a
// directory the enrollment web services on 443.
func (s steps) Finish(ctx context.Context) (provisioning.Report, error) {
	a := s.a
	if err := a.needDisk(); err != nil {
		return provisioning.Report{}, err
	}
	ip, err := a.address(ctx, 30*time.Second)
	if err != nil {
		return provisioning.Report{}, fmt.Errorf("%w; nothing changed, try again once the network is up", err)
	}
	host := ip.String()
	args := []string{"--api-listen", net.JoinHostPort(host, strconv.Itoa(a.o.APIPort)),
		"--http-url", a.httpURL(ctx), "--http-listen", net.JoinHostPort(host, strconv.Itoa(a.o.HTTPPort))}
	if st, err := provisioning.LoadState(a.varDir()); err == nil && st.Directory != nil {
		args = append(args, "--enroll-listen", net.JoinHostPort(host, strconv.Itoa(a.o.EnrollPort)), "--hostname", host)
		if n, _ := provisioning.LoadNetwork(a.settingsDir()); n.Hostname != "" {
			args = append(args, "--hostname", n.Hostname)
		}
	}
	return s.report(ctx, "", "finish", args...)
}

// httpURL is how clients reach the plain-HTTP listener: the host name when one is set,
// else the management address.
func (a *Appliance) httpURL(ctx context.Context) string {
	name := ""
	if n, err := provisioning.LoadNetwork(a.settingsDir()); err == nil {
		name = n.Hostname
	}
	if name == "" {
		if ip, err := a.address(ctx, 0); err == nil {
			name = ip.String()
		}
	}
	u := "http://" + name
	if a.o.HTTPPort != 80 {
		u += ":" + strconv.Itoa(a.o.HTTPPort)
	}
	return u
}
