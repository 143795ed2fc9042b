package wsclient

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jcmturner/gokrb5/v8/iana/etypeID"
	"github.com/jcmturner/gokrb5/v8/keytab"

	"github.com/enrollment-appliance/aeappliance/enrollsvc/daemon/daemontest"
	"github.com/enrollment-appliance/aeappliance/ldap/ldaptest"
)

// Kerberos end to end: the Samba DC's KDC issues the tickets (to WS1$ from its exported keytab,
// to alice through MIT kinit), the real server accepts them with its HTTP/localhost keytab.
func TestKerberosAgainstEnrollmentWebServices(t *testing.T) {
	needKinit(t)
	dc := ldaptest.StartDC(t)
	s := dc.Seed(t)
	service := dc.HTTPService(t, "svc-http", "HTTP/localhost")
	_, base, roots := startServer(t, dc, s, daemontest.Options{Keytab: service})
	conf := dc.Krb5Conf(t)
	ws1 := dc.Keytab(t, "WS1$")
	ctx := context.Background()
	cep := base + "/ADPolicyProvider_CEP_Kerberos/service.svc/CEP"
	ces := base + "/" + url.PathEscape(caName) + "_CES_Kerberos/service.svc/CES"

	templates := func(t *testing.T, p *Policies) map[string]bool {
		t.Helper()
		got := map[string]bool{}
		for _, tp := range p.Templates {
			got[tp.Name] = tp.Autoenroll
		}
		return got
	}

	t.Run("machine keytab: policies and an AEMachine certificate", func(t *testing.T) {
		c, err := New(cep, KerberosAuth{Keytab: ws1, Krb5Conf: conf}, roots)
		if err != nil {
			t.Fatal(err)
		}
		if who := c.negotiate.who(); who != "WS1$@"+ldaptest.Realm {
			t.Errorf("principal picked from the keytab = %s, want WS1$@%s", who, ldaptest.Realm)
		}
		if err := c.Login(ctx); err != nil || c.negotiate.logins != 1 || c.negotiate.cl == nil {
			t.Fatalf("Login = %v after %d logins, want one login with a TGT", err, c.negotiate.logins)
		}
		p, err := c.GetPolicies(ctx, nil)
		if err != nil {
			t.Fatalf("GetPolicies as WS1$: %v", err)
		}
		got := templates(t, p)
		if auto, ok := got["AEMachine"]; !ok || !auto {
			t.Errorf("WS1$'s templates = %v, want AEMachine with autoenrollment", got)
		}
		if _, ok := got["AEUser"]; ok {
			t.Errorf("WS1$'s templates = %v: AEUser is for users", got)
		}
		tmpl, _ := p.Template("AEMachine")
		if u, err := p.EnrollmentURL(tmpl, AuthKerberos); err != nil || u != ces {
			t.Errorf("EnrollmentURL(AEMachine, Kerberos) = %q, %v, want %s", u, err, ces)
		}
		csr, _ := templateCSR(t, s.Templates["AEMachine"].OID)
		res, err := c.Issue(ctx, ces, csr, nil)
		if err != nil || res.Status != StatusIssued || res.Certificate == nil {
			t.Fatalf("Issue AEMachine as WS1$ = %+v, %v, want issued", res, err)
		}
		if want := "ws1." + ldaptest.DomainDNS; !slices.Contains(res.Certificate.DNSNames, want) {
			t.Errorf("certificate DNS names %v, want %s", res.Certificate.DNSNames, want)
		}
		var wg sync.WaitGroup
		for range 8 {
			wg.Go(func() {
				if _, err := c.GetPolicies(ctx, nil); err != nil {
					t.Errorf("concurrent GetPolicies as WS1$: %v", err)
				}
			})
		}
		wg.Wait()
		if c.negotiate.logins != 1 {
			t.Errorf("%d logins for Login and ten requests, want one", c.negotiate.logins)
		}
	})

	t.Run("Login with a wrong key fails there", func(t *testing.T) {
		c, err := New(cep, KerberosAuth{Keytab: writeKeytab(t, "WS1$@"+ldaptest.Realm), Krb5Conf: conf}, roots)
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Login(ctx); err == nil || c.negotiate.cl != nil {
			t.Errorf("Login of WS1$ with a wrong key = %v, want an error and no login", err)
		}
	})

	// kinit gets alice's tickets with MIT kinit into a private cache.
	kinit := func(t *testing.T, ccache string, args ...string) { kinitAs(t, conf, ccache, s.Alice, args...) }
	ccache := filepath.Join(t.TempDir(), "ccache")
	kinit(t, ccache)
	aliceTemplates := map[string]bool{"AEUser": true, "AEUserV2": true, "PendUser": false, "SuppliesSubject": false}

	t.Run("user credential cache (kinit)", func(t *testing.T) {
		c, err := New(cep, KerberosAuth{CCache: ccache, Principal: s.Alice.Name, Krb5Conf: conf}, roots)
		if err != nil {
			t.Fatal(err)
		}
		for range 2 {
			p, err := c.GetPolicies(ctx, nil)
			if err != nil {
				t.Fatalf("GetPolicies as alice: %v", err)
			}
			if got := templates(t, p); fmt.Sprint(got) != fmt.Sprint(aliceTemplates) {
				t.Errorf("alice's templates = %v, want %v", got, aliceTemplates)
			}
		}
		if c.negotiate.logins != 1 {
			t.Errorf("the credential cache was read %d times for two requests, want once", c.negotiate.logins)
		}
	})

	t.Run("defaults: KRB5_CONFIG and KRB5CCNAME", func(t *testing.T) {
		t.Setenv("KRB5_CONFIG", conf)
		t.Setenv("KRB5CCNAME", "FILE:"+ccache)
		c, err := New(cep, &KerberosAuth{}, roots)
		if err != nil {
			t.Fatal(err)
		}
		p, err := c.GetPolicies(ctx, nil)
		if err != nil {
			t.Fatalf("GetPolicies with the environment's cache: %v", err)
		}
		if got := templates(t, p); fmt.Sprint(got) != fmt.Sprint(aliceTemplates) {
			t.Errorf("templates = %v, want alice's %v", got, aliceTemplates)
		}
	})

	t.Run("expired credential cache, then kinit again", func(t *testing.T) {
		short := filepath.Join(t.TempDir(), "ccache")
		kinit(t, short, "-l", "30s") // ends within the minute of margin: as good as expired
		c, err := New(cep, KerberosAuth{CCache: short, Krb5Conf: conf}, roots)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.GetPolicies(ctx, nil); err == nil || !strings.Contains(err.Error(), "expired") || !strings.Contains(err.Error(), "kinit") {
			t.Errorf("GetPolicies with an expired ticket = %v, want an error saying to run kinit", err)
		}
		kinit(t, short)
		if p, err := c.GetPolicies(ctx, nil); err != nil || len(p.Templates) != len(aliceTemplates) {
			t.Errorf("GetPolicies after kinit = %+v, %v, want alice's templates from the cache read again", p, err)
		}
	})

	t.Run("failures", func(t *testing.T) {
		if _, err := New(cep, KerberosAuth{Keytab: ws1, Principal: "alice", Krb5Conf: conf}, roots); err == nil ||
			!strings.Contains(err.Error(), "no key of alice@"+ldaptest.Realm) || !strings.Contains(err.Error(), "WS1$@") {
			t.Errorf("New with a keytab without alice's key: %v, want an error naming alice and what the keytab has", err)
		}
		if _, err := New(cep, KerberosAuth{CCache: filepath.Join(t.TempDir(), "none"), Krb5Conf: conf}, roots); err == nil ||
			!strings.Contains(err.Error(), "credential cache") {
			t.Errorf("New with a missing credential cache: %v", err)
		}
		if _, err := New(cep, KerberosAuth{CCache: ccache, Principal: "bob", Krb5Conf: conf}, roots); err == nil ||
			!strings.Contains(err.Error(), "not bob@") {
			t.Errorf("New with alice's cache for bob: %v", err)
		}

		c, err := New(cep, KerberosAuth{Keytab: ws1, Krb5Conf: conf, SPN: "HTTP/nowhere." + ldaptest.DomainDNS}, roots)
		if err != nil {
			t.Fatal(err)
		}
		var e *Error
		if _, err := c.GetPolicies(ctx, nil); err == nil || errors.As(err, &e) || !strings.Contains(err.Error(), "HTTP/nowhere.") {
			t.Errorf("GetPolicies for an unknown SPN = %v, want a Kerberos error naming it", err)
		}

		// The UsernamePassword endpoint wants a UsernameToken, which a Kerberos client does not send.
		c, err = New(base+"/ADPolicyProvider_CEP_UsernamePassword/service.svc/CEP", KerberosAuth{Keytab: ws1, Krb5Conf: conf}, roots)
		if err != nil {
			t.Fatal(err)
		}
		if p, err := c.GetPolicies(ctx, nil); err == nil {
			t.Errorf("Kerberos at the password endpoint = %+v, want an error", p)
		} else {
			t.Logf("Kerberos at the password endpoint: %v", err)
		}

		// A ticket for a principal the server has no key of (svc-other's) is refused: ErrAuthentication.
		dc.HTTPService(t, "svc-other", "HTTP/other."+ldaptest.DomainDNS)
		c, err = New(cep, KerberosAuth{Keytab: ws1, Krb5Conf: conf, SPN: "HTTP/other." + ldaptest.DomainDNS}, roots)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.GetPolicies(ctx, nil); !errors.Is(err, ErrAuthentication) {
			t.Errorf("GetPolicies with a ticket for another service = %v, want ErrAuthentication", err)
		}
		if _, err := c.GetPolicies(ctx, nil); !errors.Is(err, ErrAuthentication) || c.negotiate.logins != 2 {
			t.Errorf("again = %v after %d logins, want ErrAuthentication after a new login", err, c.negotiate.logins)
		}
	})
}

// writeKeytab writes a keytab with AES keys (from passwords) of the principals.
func writeKeytab(t *testing.T, principals ...string) string {
	t.Helper()
	kt := keytab.New()
	for _, p := range principals {
		name, realm, _ := strings.Cut(p, "@")
		if err := kt.AddEntry(name, realm, "Passw0rd-"+name, time.Now(), 1, etypeID.AES256_CTS_HMAC_SHA1_96); err != nil {
			t.Fatal(err)
		}
	}
	b, err := kt.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "krb5.keytab")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func writeKrb5Conf(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "krb5.conf")
	conf := "[libdefaults]\n default_realm = EXAMPLE.TEST\n default_tkt_enctypes = aes256-cts-hmac-sha1-96\n" +
		"[realms]\n EXAMPLE.TEST = {\n  kdc = 127.0.0.1:1\n }\n"
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestKerberosSettings(t *testing.T) {
	conf := writeKrb5Conf(t)
	host := writeKeytab(t, "host/ws9.example.test@EXAMPLE.TEST", "WS9$@EXAMPLE.TEST", "carol@EXAMPLE.TEST")

	for _, c := range []struct {
		principal, want string
	}{
		{"", "WS9$@EXAMPLE.TEST"}, // the machine account
		{"carol", "carol@EXAMPLE.TEST"},
		{"host/ws9.example.test@EXAMPLE.TEST", "host/ws9.example.test@EXAMPLE.TEST"},
	} {
		n, err := KerberosAuth{Keytab: host, Principal: c.principal, Krb5Conf: conf}.negotiator()
		if err != nil || n.who() != c.want {
			t.Errorf("principal %q: %v, %v, want %s", c.principal, n, err, c.want)
		}
	}
	if n, err := (KerberosAuth{Keytab: writeKeytab(t, "dave@EXAMPLE.TEST"), Krb5Conf: conf}).negotiator(); err != nil || n.who() != "dave@EXAMPLE.TEST" {
		t.Errorf("keytab without a machine account: %v, want its first entry", err)
	}

	kt, err := keytab.Load(host)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		auth KerberosAuth
		want string
	}{
		{KerberosAuth{Keytab: host, Principal: "erin", Krb5Conf: conf}, "holds no key of erin@EXAMPLE.TEST (it has host/ws9.example.test@EXAMPLE.TEST, WS9$@EXAMPLE.TEST, carol@EXAMPLE.TEST)"},
		{KerberosAuth{Keytab: host, Principal: "WS9$@OTHER.TEST", Krb5Conf: conf}, "no key of WS9$@OTHER.TEST"},
		{KerberosAuth{Keytab: filepath.Join(t.TempDir(), "none"), Krb5Conf: conf}, "keytab"},
		{KerberosAuth{Keytab: conf, Krb5Conf: conf}, "keytab " + conf},
		{KerberosAuth{Keytab: host, Krb5Conf: filepath.Join(t.TempDir(), "none")}, "Kerberos configuration"},
		{KerberosAuth{Keytab: host, CCache: host, Krb5Conf: conf}, "give one"},
		{KerberosAuth{Keytab: host, Krb5Conf: conf, SPN: "HTTP/ws@EXAMPLE.TEST"}, "without a realm"},
		{KerberosAuth{Keytab: host, Krb5Conf: conf, SPN: "localhost"}, "not a service principal"},
		{KerberosAuth{CCache: host, Krb5Conf: conf}, "credential cache " + host},
	} {
		_, err := New("https://enroll.example.test/cep", c.auth, nil)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("New(%v) = %v, want an error with %q", c.auth, err, c.want)
		}
		for _, e := range kt.Entries {
			if err != nil && strings.Contains(strings.ToLower(err.Error()), hex.EncodeToString(e.Key.KeyValue)) {
				t.Errorf("New(%v): the error shows a key", c.auth)
			}
		}
	}

	t.Setenv("KRB5CCNAME", "KEYRING:persistent:0")
	if _, err := New("https://enroll.example.test/cep", KerberosAuth{Krb5Conf: conf}, nil); err == nil || !strings.Contains(err.Error(), "KEYRING:persistent:0") {
		t.Errorf("a keyring cache: %v, want an error naming it", err)
	}
	t.Setenv("KRB5CCNAME", "")
	t.Setenv("KRB5_CONFIG", filepath.Join(t.TempDir(), "none")+string(os.PathListSeparator)+conf)
	if _, err := New("https://enroll.example.test/cep", KerberosAuth{Keytab: host}, nil); err != nil {
		t.Errorf("KRB5_CONFIG with a missing file first: %v", err)
	}

	a := KerberosAuth{Keytab: host, Principal: "WS9$", Krb5Conf: conf}
	for _, s := range []string{a.String(), fmt.Sprintf("%v %+v %#v", a, a, a)} {
		if !strings.Contains(s, `Keytab: "`+host+`"`) || !strings.Contains(s, `Principal: "WS9$"`) || strings.Contains(s, "CCache") {
			t.Errorf("String = %s", s)
		}
	}
}

func TestKerberosServicePrincipal(t *testing.T) {
	n := &negotiator{}
	for host, want := range map[string]string{
		"enroll.corp.example.test":  "HTTP/enroll.corp.example.test",
		"Enroll.Corp.Example.Test.": "HTTP/enroll.corp.example.test",
		"localhost":                 "HTTP/localhost",
	} {
		if got, err := n.servicePrincipal(host); err != nil || got != want {
			t.Errorf("servicePrincipal(%q) = %q, %v, want %s", host, got, err, want)
		}
	}
	for _, host := range []string{"127.0.0.1", "::1", ""} {
		if got, err := n.servicePrincipal(host); err == nil {
			t.Errorf("servicePrincipal(%q) = %q, want an error: no SPN of an address", host, got)
		}
	}
	n.spn = "HTTP/enroll.corp.example.test"
	if got, _ := n.servicePrincipal("127.0.0.1"); got != n.spn {
		t.Errorf("servicePrincipal with SPN set = %q, want %s", got, n.spn)
	}
}

// needKinit fails the test on CI, and skips it elsewhere, without MIT kinit.
func needKinit(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("kinit"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("kinit (krb5-user) is required on CI: %v", err)
		}
		t.Skipf("kinit not installed (krb5-user): %v", err)
	}
}

// kinitAs gets p's tickets from the DC's KDC with MIT kinit (krb5.conf conf) into the
// credential cache file ccache; args go before the principal (e.g. "-l", "30s").
func kinitAs(t *testing.T, conf, ccache string, p ldaptest.Principal, args ...string) {
	t.Helper()
	cmd := exec.Command("kinit", append(args, p.Name+"@"+ldaptest.Realm)...)
	cmd.Env = append(os.Environ(), "KRB5_CONFIG="+conf, "KRB5CCNAME=FILE:"+ccache)
	cmd.Stdin = strings.NewReader(p.Password + "\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("kinit %v %s: %v\n%s", args, p.Name, err, out)
	}
}
