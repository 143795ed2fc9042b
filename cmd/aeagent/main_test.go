package main

// The aeagent binary against a real Samba AD DC and the real enrollment service: a host (WS1$)
// autoenrolls in machine context with its Kerberos keytab, as a domain-joined Linux host would.

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/enrollment-appliance/aeappliance/aeagent/agent"
	"github.com/enrollment-appliance/aeappliance/aeagent/plan"
	"github.com/enrollment-appliance/aeappliance/enrollsvc/daemon/daemontest"
	"github.com/enrollment-appliance/aeappliance/ldap/ldaptest"
)

// binary is aeagent; aectlBinary the admin CLI, for what an administrator does in the tests.
var binary, aectlBinary string

func TestMain(m *testing.M) {
	d, err := os.MkdirTemp("", "aeagent-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary, aectlBinary = filepath.Join(d, "aeagent"), filepath.Join(d, "aectl")
	for _, b := range []struct{ out, pkg string }{{binary, "."}, {aectlBinary, "../aectl"}} {
		if out, err := exec.Command("go", "build", "-o", b.out, b.pkg).CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "building %s: %v\n%s", b.pkg, err, out)
			os.Exit(1)
		}
	}
	code := m.Run()
	os.RemoveAll(d)
	os.Exit(code)
}

// aeagent runs the binary and returns its stdout, stderr and exit code.
func aeagent(t *testing.T, env []string, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(binary, args...)
	cmd.Env = append(os.Environ(), env...)
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("running aeagent: %v", err)
	}
	return out.String(), errb.String(), code
}

func TestMachineAutoenrollment(t *testing.T) {
	dc := ldaptest.StartDC(t)
	s := dc.Seed(t)
	httpKeytab := dc.HTTPService(t, "svc-http", "HTTP/localhost")
	srv := daemontest.Start(t, dc, s, daemontest.Options{CAName: "Agent CLI CA", Keytab: httpKeytab})
	hostKeytab := dc.Keytab(t, "WS1$")
	krb5 := dc.Krb5Conf(t)
	tmp := t.TempDir()
	storeDir := filepath.Join(tmp, "store")
	hookLog := filepath.Join(tmp, "hook.log")
	cfgFile := filepath.Join(tmp, "aeagent.json")
	cfg := agent.Config{Server: srv.CEP("Kerberos"), Auth: agent.AuthKerberos, Context: agent.ContextMachine,
		Keytab: hostKeytab, Krb5Conf: krb5, CAFile: srv.CAFile, Store: storeDir,
		Hooks: []agent.Hook{{Template: "AEMachine", Command: []string{"sh", "-c", `echo "$AEAGENT_EVENT $AEAGENT_TEMPLATE $AEAGENT_CERT" >> ` + hookLog}}}}
	raw, _ := json.Marshal(cfg)
	if err := os.WriteFile(cfgFile, raw, 0o600); err != nil {
		t.Fatal(err)
	}

	out, errs, code := aeagent(t, nil, "--config", cfgFile, "pulse", "--json")
	if code != 0 {
		t.Fatalf("aeagent pulse = exit %d\n%s\n%s", code, out, errs)
	}
	var rep agent.Report
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("pulse --json output: %v\n%s", err, out)
	}
	var enrolled []string
	for _, o := range rep.Outcomes {
		if o.Action.Kind == plan.Enroll {
			enrolled = append(enrolled, o.Action.Template)
		}
	}
	if len(enrolled) != 1 || enrolled[0] != "AEMachine" {
		t.Errorf("machine pulse enrolled %v, want AEMachine only", enrolled)
	}
	certPEM := filepath.Join(storeDir, "AEMachine", "cert.pem")
	if o, err := exec.Command("openssl", "x509", "-in", certPEM, "-noout", "-ext", "subjectAltName").CombinedOutput(); err != nil ||
		!strings.Contains(string(o), "DNS:ws1.corp.example.test") {
		t.Errorf("openssl x509 of the installed certificate: %v\n%s", err, o)
	}
	if o, err := exec.Command("openssl", "verify", "-CAfile", srv.CAFile, certPEM).CombinedOutput(); err != nil {
		t.Errorf("openssl verify: %v\n%s", err, o)
	}
	if info, err := os.Stat(filepath.Join(storeDir, "AEMachine", "key.pem")); err != nil || info.Mode().Perm() != 0o600 {
		t.Errorf("key.pem: %v, mode %v; want 0600", err, info)
	}
	if log, _ := os.ReadFile(hookLog); string(log) != "installed AEMachine "+certPEM+"\n" {
		t.Errorf("hook log = %q, want one installed line naming the certificate", log)
	}

	// A second pulse, flags on top of the file: nothing to do.
	out, errs, code = aeagent(t, nil, "pulse", "--config", cfgFile, "--log-level", "warn")
	if code != 0 || !strings.Contains(out, "nothing to do") {
		t.Errorf("second pulse = exit %d %q %s, want nothing to do", code, out, errs)
	}

	out, errs, code = aeagent(t, nil, "--config", cfgFile, "status", "--json")
	var st agent.Status
	if code != 0 || json.Unmarshal([]byte(out), &st) != nil || len(st.Certificates) != 1 || st.LastPass == nil || !st.LastPass.OK {
		t.Fatalf("status --json = exit %d\n%s\n%s", code, out, errs)
	}
	c := st.Certificates[0]
	if want := c.NotAfter.Add(-42 * 24 * time.Hour); c.Template != "AEMachine" || !c.RenewAt.Equal(want) || c.State != "valid" {
		t.Errorf("status = %+v, want AEMachine renewing at %s (6 weeks before expiry)", c, want)
	}
	out, _, code = aeagent(t, nil, "--config", cfgFile, "status")
	if code != 0 || !strings.Contains(out, "AEMachine") || !strings.Contains(out, c.RenewAt.UTC().Format("2006-01-02")) {
		t.Errorf("status = exit %d\n%s", code, out)
	}

	// plan at the renewal date: renew, spelled out; the store is not touched.
	out, errs, code = aeagent(t, nil, "--config", cfgFile, "plan", "--at", c.RenewAt.Format(time.RFC3339))
	if code != 0 || !strings.Contains(out, "renew AEMachine") || !strings.Contains(out, "80% of the lifetime") {
		t.Errorf("plan --at the renewal date = exit %d\n%s\n%s", code, out, errs)
	}
	if log, _ := os.ReadFile(hookLog); strings.Count(string(log), "\n") != 1 {
		t.Errorf("plan or a no-op pulse ran hooks: %q", log)
	}

	// Errors: usage is exit 2; a policy server that is down, exit 1 with a clear message.
	if _, _, code := aeagent(t, nil, "--config", cfgFile, "frobnicate"); code != 2 {
		t.Errorf("unknown command: exit %d, want 2", code)
	}
	if _, errs, code := aeagent(t, nil, "--config", cfgFile, "pulse", "--auth", "magic"); code != 1 || !strings.Contains(errs, `auth "magic"`) {
		t.Errorf("bad --auth: exit %d %s, want 1 naming the setting", code, errs)
	}
	before, _ := os.ReadFile(certPEM)
	_, errs, code = aeagent(t, nil, "--config", cfgFile, "pulse", "--server", "https://localhost:1/ADPolicyProvider_CEP_Kerberos/service.svc/CEP")
	if code != 1 || !strings.Contains(errs, "fetching the policy") {
		t.Errorf("server down: exit %d %s, want 1 and a message about the policy", code, errs)
	}
	if after, _ := os.ReadFile(certPEM); string(after) != string(before) {
		t.Error("a failed pulse changed the installed certificate")
	}
}
