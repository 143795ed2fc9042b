package stepcmd

import (
	"context"
	"fmt"
	"io"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/enrollment-appliance/aeappliance/provisioning"
)

// TestMain makes the test binary a stand-in for `enrollsvc provision`: with
// STEPCMD_CHILD set it parses its command line and standard input as enrollsvc does
// and answers with what it read, so Run is tested against a real child process.
func TestMain(m *testing.M) {
	if os.Getenv("STEPCMD_CHILD") != "" {
		os.Exit(child(os.Args[1:]))
	}
	os.Exit(m.Run())
}

func child(args []string) int {
	if len(args) == 0 || args[0] != Command {
		fmt.Fprintln(os.Stderr, "enrollsvc: not a provisioning command")
		return 2
	}
	req, err := Parse(args[1:], os.Stdin, os.Stderr, "usage\n")
	if err != nil {
		fmt.Fprintf(os.Stderr, "enrollsvc: %v\n", err)
		return 1
	}
	if req.Step == provisioning.CACSR {
		_ = Reply(os.Stdout, CSRReply{Report: provisioning.Report{Step: provisioning.StepCA, Lines: []string{req.CAName}}, CSR: "PEM"})
		return 0
	}
	_ = Reply(os.Stdout, provisioning.Report{Step: req.Step, Lines: []string{req.Data, req.Module, req.SOPIN, req.UserPIN}})
	return 0
}

// TestRoundTrip: what each Call says reaches the child's Request unchanged.
func TestRoundTrip(t *testing.T) {
	tmp := t.TempDir()
	caFile := tmp + "/dc-ca.pem"
	if err := os.WriteFile(caFile, []byte("DC CA PEM"), 0o600); err != nil {
		t.Fatal(err)
	}
	token, err := Token("so pin 1", "user pin 2")
	if err != nil {
		t.Fatal(err)
	}
	d := provisioning.Directory{URL: "ldaps://dc1", BindUser: "svc@corp", Password: " pass word ", CACN: "Corp CA", ServerName: "dc1.corp"}
	dir, err := Directory(d, caFile)
	if err != nil {
		t.Fatal(err)
	}
	for name, body := range map[string]string{"db-ca.pem": "DB CA PEM", "client.pem": "CLIENT CERT", "client-key.pem": "CLIENT KEY"} {
		if err := os.WriteFile(tmp+"/"+name, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	sto := provisioning.Store{URL: "postgres://enroll@db1:5432/enroll", Password: "db pass"}
	storeCall, err := Store(sto, StoreFiles{CA: tmp + "/db-ca.pem", ClientCert: tmp + "/client.pem", ClientKey: tmp + "/client-key.pem"})
	if err != nil {
		t.Fatal(err)
	}
	fin := Finish{APIListen: "10.0.2.15:9443", HTTPURL: "http://ca.corp", HTTPListen: "10.0.2.15:80",
		EnrollListen: "10.0.2.15:443", Hostnames: []string{"10.0.2.15", "ca.corp"}}
	for _, c := range []struct {
		call  Call
		check func(Request) bool
	}{
		{Status(), func(r Request) bool { return r.Step == provisioning.Status }},
		{token, func(r Request) bool { return r.SOPIN == "so pin 1" && r.UserPIN == "user pin 2" }},
		{Key("rsa-3072"), func(r Request) bool { return r.KeyType == "rsa-3072" }},
		{SelfSigned("Corp Root CA", 48*time.Hour), func(r Request) bool { return r.CAName == "Corp Root CA" && r.Validity == 48*time.Hour }},
		{CSR("Corp Issuing CA"), func(r Request) bool { return r.CAName == "Corp Issuing CA" }},
		{Import([]byte("-----BEGIN CERTIFICATE-----\nAA==\n")), func(r Request) bool { return string(r.Bundle) == "-----BEGIN CERTIFICATE-----\nAA==\n" }},
		{dir, func(r Request) bool {
			want := d
			want.CAPEM = []byte("DC CA PEM")
			return reflect.DeepEqual(r.Directory, want)
		}},
		{storeCall, func(r Request) bool {
			want := sto
			want.CAPEM, want.ClientCertPEM, want.ClientKeyPEM = []byte("DB CA PEM"), []byte("CLIENT CERT"), []byte("CLIENT KEY")
			return reflect.DeepEqual(r.Store, want)
		}},
		{FinishCall(fin), func(r Request) bool { return reflect.DeepEqual(r.Finish, fin) }},
	} {
		argv := c.call.Argv("/data/var", "/lib/vendor.so")
		if argv[0] != Command || argv[1] != c.call.Step {
			t.Errorf("Argv(%s) = %q, want %s %s first", c.call.Step, argv, Command, c.call.Step)
		}
		r, err := Parse(argv[1:], strings.NewReader(c.call.Stdin), io.Discard, "")
		if err != nil {
			t.Errorf("Parse(%q) = %v", argv, err)
			continue
		}
		if r.Step != c.call.Step || r.Data != "/data/var" || r.Module != "/lib/vendor.so" || !r.JSON || !c.check(r) {
			t.Errorf("Parse(%q) with stdin %q = %+v", argv, c.call.Stdin, r)
		}
	}
}

func TestSecretsWithLineBreaksRefused(t *testing.T) {
	if _, err := Token("so\n", "user"); err == nil {
		t.Error("Token with a line break in the SO PIN: no error")
	}
	if _, err := Store(provisioning.Store{Password: "a\nb"}, StoreFiles{}); err == nil {
		t.Error("Store with a line break in the password: no error")
	}
	if _, err := Directory(provisioning.Directory{Password: "a\rb"}, ""); err == nil {
		t.Error("Directory with a line break in the password: no error")
	}
}

func TestParseRefusesUnknownStep(t *testing.T) {
	if _, err := Parse([]string{"selfsign", "--data", "d"}, strings.NewReader(""), io.Discard, ""); err == nil || !strings.Contains(err.Error(), `unknown provisioning step "selfsign"`) {
		t.Errorf("Parse(selfsign) = %v", err)
	}
	if _, err := Parse([]string{provisioning.StepKey}, strings.NewReader(""), io.Discard, ""); err == nil || !strings.Contains(err.Error(), "--data is required") {
		t.Errorf("Parse(key without --data) = %v", err)
	}
}

// TestRun runs the steps in a real child process: secrets over stdin, the answer back.
func TestRun(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("STEPCMD_CHILD", "1")
	ctx := context.Background()
	token, _ := Token("so-1234", "user-5678")
	var r provisioning.Report
	if err := Run(ctx, exe, "/data/var", "", token, &r); err != nil {
		t.Fatalf("Run(token) = %v", err)
	}
	if want := []string{"/data/var", "", "so-1234", "user-5678"}; r.Step != provisioning.StepToken || !reflect.DeepEqual(r.Lines, want) {
		t.Errorf("Run(token) answered %+v, want step token and lines %q", r, want)
	}
	var csr CSRReply
	if err := Run(ctx, exe, "/data/var", "", CSR("Sub CA"), &csr); err != nil || csr.CSR != "PEM" || csr.Report.Lines[0] != "Sub CA" {
		t.Errorf("Run(csr) = %+v, %v", csr, err)
	}
	err = Run(ctx, exe, "/data/var", "", Call{Step: "nonsense"}, &r)
	if err == nil || !strings.Contains(err.Error(), `unknown provisioning step "nonsense"`) || strings.HasPrefix(err.Error(), "enrollsvc:") {
		t.Errorf("Run(nonsense) = %v, want the child's reason without its prefix", err)
	}
}
