package ldap_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	goldap "github.com/go-ldap/ldap/v3"

	"github.com/enrollment-appliance/aeappliance/ldap"
	"github.com/enrollment-appliance/aeappliance/ldap/ldaptest"
)

func TestDialStartTLSAndLDAPS(t *testing.T) {
	t.Parallel()
	dc := ldaptest.StartDC(t)
	ctx := context.Background()
	for _, url := range []string{dc.URL, dc.LDAPSURL, dc.URL + ":389", dc.LDAPSURL + ":636"} {
		c, err := ldap.Dial(ctx, ldap.Config{URL: url, CAFile: dc.CAFile, BindUser: dc.AdminUser, Password: dc.AdminPassword})
		if err != nil {
			t.Fatalf("Dial(%s) = %v", url, err)
		}
		if st, ok := ldap.TLSState(c); !ok || !st.HandshakeComplete {
			t.Errorf("Dial(%s): connection is not TLS", url)
		}
		root := c.RootDSE()
		want := ldap.RootDSE{DefaultNamingContext: ldaptest.BaseDN, ConfigurationNamingContext: ldaptest.ConfigDN,
			SchemaNamingContext: "CN=Schema," + ldaptest.ConfigDN, DNSHostName: ldaptest.DCDNSName,
			DomainDNS: ldaptest.DomainDNS}
		if root != want {
			t.Errorf("Dial(%s).RootDSE() = %+v, want %+v", url, root, want)
		}
		if err := c.Ping(ctx); err != nil {
			t.Errorf("Ping() = %v", err)
		}
		c.Close()
		if err := c.Ping(ctx); !errors.Is(err, ldap.ErrUnavailable) {
			t.Errorf("Ping() after Close = %v, want ErrUnavailable", err)
		}
	}
	// ServerName override: the certificate names dc1.corp.example.test as well as the IP.
	c, err := ldap.Dial(ctx, ldap.Config{URL: dc.LDAPSURL, CAFile: dc.CAFile, ServerName: ldaptest.DCDNSName,
		BindUser: dc.AdminUser, Password: dc.AdminPassword})
	if err != nil {
		t.Fatalf("Dial with ServerName = %v", err)
	}
	c.Close()
}

func TestDialRefusals(t *testing.T) {
	t.Parallel()
	dc := ldaptest.StartDC(t)
	s := dc.Seed(t)
	ctx := context.Background()
	const wrong = "Wr0ng-Secret-Do-Not-Log"
	good := ldap.Config{URL: dc.URL, CAFile: dc.CAFile, BindUser: s.Alice.UPN, Password: s.Alice.Password}

	cfg := good
	cfg.Password = wrong
	_, err := ldap.Dial(ctx, cfg)
	if !errors.Is(err, ldap.ErrBind) || errors.Is(err, ldap.ErrUnavailable) {
		t.Errorf("Dial(wrong password) = %v, want ErrBind", err)
	}
	if err != nil && strings.Contains(err.Error(), wrong) {
		t.Errorf("Dial(wrong password) error contains the password: %v", err)
	}

	// A certificate we do not trust: TLS fails before any password is sent.
	cfg = good
	cfg.CAFile = ""
	if _, err := ldap.Dial(ctx, cfg); !errors.Is(err, ldap.ErrUnavailable) || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("Dial(untrusted DC certificate) = %v, want ErrUnavailable about the certificate", err)
	}
	cfg = good
	cfg.ServerName = "evil.example.test"
	if _, err := ldap.Dial(ctx, cfg); !errors.Is(err, ldap.ErrUnavailable) {
		t.Errorf("Dial(wrong server name) = %v, want ErrUnavailable", err)
	}

	// Bad configurations fail fast, naming the field.
	for _, tc := range []struct {
		mod  func(*ldap.Config)
		want string
	}{
		{func(c *ldap.Config) { c.URL = "http://" + dc.IP }, "scheme"},
		{func(c *ldap.Config) { c.URL = "" }, "Config.URL"},
		{func(c *ldap.Config) { c.Password = "" }, "Password"},
		{func(c *ldap.Config) { c.BindUser = "" }, "BindUser"},
		{func(c *ldap.Config) { c.CAFile = "/nonexistent" }, "CAFile"},
		{func(c *ldap.Config) { c.Keytab = "/etc/krb5.keytab" }, "Keytab"},
	} {
		cfg := good
		tc.mod(&cfg)
		if _, err := ldap.Dial(ctx, cfg); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Dial(%+v) = %v, want an error about %s", cfg, err, tc.want)
		}
	}

	// Nothing listening: ErrUnavailable, quickly.
	cfg = good
	cfg.URL, cfg.Timeout = "ldap://127.0.0.1:1", 2*time.Second
	t0 := time.Now()
	if _, err := ldap.Dial(ctx, cfg); !errors.Is(err, ldap.ErrUnavailable) || time.Since(t0) > 3*time.Second {
		t.Errorf("Dial(nothing listening) = %v after %v, want ErrUnavailable within the timeout", err, time.Since(t0))
	}
}

// The client never sends a simple bind over a plain connection, whatever the caller does.
func TestSimpleBindRefusesPlaintext(t *testing.T) {
	t.Parallel()
	dc := ldaptest.StartDC(t)
	conn, err := goldap.DialURL(dc.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := ldap.SimpleBind(conn, dc.AdminUser, dc.AdminPassword); !errors.Is(err, ldap.ErrInsecureBind) {
		t.Fatalf("simpleBind over plain LDAP = %v, want %v", err, ldap.ErrInsecureBind)
	}
	// The connection is still anonymous (the password never went out): the directory shows it nothing.
	res, err := conn.Search(goldap.NewSearchRequest(ldaptest.BaseDN, goldap.ScopeWholeSubtree, goldap.NeverDerefAliases,
		0, 0, false, "(sAMAccountName=Administrator)", []string{"dn"}, nil))
	if err == nil && len(res.Entries) > 0 {
		t.Errorf("after the refused bind the connection sees %s: it is not anonymous", res.Entries[0].DN)
	}
}

func TestDirectoryDownThenBack(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	if _, err := e.c.Account(ctx, "alice"); err != nil {
		t.Fatal(err)
	}
	e.dc.Stop(t)
	t0 := time.Now()
	err := e.c.Ping(ctx)
	if !errors.Is(err, ldap.ErrUnavailable) {
		t.Fatalf("Ping() with the DC stopped = %v, want ErrUnavailable", err)
	}
	if d := time.Since(t0); d > 3*time.Second {
		t.Errorf("Ping() with the DC stopped took %v, more than the 3s timeout", d)
	}
	e.c.Invalidate()
	if _, err := e.c.Account(ctx, "alice"); !errors.Is(err, ldap.ErrUnavailable) {
		t.Errorf("Account() with the DC stopped and an empty cache = %v, want ErrUnavailable", err)
	}
	t.Logf("while down: %v", err)

	e.dc.Start(t)
	deadline := time.Now().Add(15 * time.Second)
	for {
		err := e.c.Ping(ctx)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Ping() 15s after the DC came back = %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	a, err := e.c.Account(ctx, "alice")
	if err != nil || a.DN != e.s.Alice.DN {
		t.Errorf("Account(alice) after the DC came back = %v, %v", a, err)
	}
}

// A DC restarted between two calls (the old connection is dead but nobody noticed): the next call redials
// once and succeeds, without an error surfacing.
func TestReconnectTransparent(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	e.dc.Stop(t)
	e.dc.Start(t)
	if err := e.c.Ping(ctx); err != nil {
		t.Fatalf("Ping() after a DC restart = %v, want a transparent redial", err)
	}
}

func TestContextDeadline(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	e.c.Invalidate()
	if _, err := e.c.Account(ctx, "alice"); !errors.Is(err, context.Canceled) {
		t.Errorf("Account(cancelled ctx) = %v, want context.Canceled", err)
	}
	if err := e.c.Ping(context.Background()); err != nil {
		t.Errorf("Ping() after a cancelled call = %v", err)
	}
}

func TestDialKerberos(t *testing.T) {
	t.Parallel()
	dc := ldaptest.StartDC(t)
	s := dc.Seed(t)
	keytab := dc.Keytab(t, "svc-enroll")
	ctx := context.Background()
	for _, url := range []string{dc.URL, dc.LDAPSURL} {
		cfg := ldap.Config{URL: url, CAFile: dc.CAFile, ServerName: ldaptest.DCDNSName, Keytab: keytab,
			Principal: "svc-enroll@" + ldaptest.Realm, KDC: dc.IP}
		c, err := ldap.Dial(ctx, cfg)
		if err != nil {
			t.Fatalf("Dial(%s, Kerberos) = %v", url, err)
		}
		a, err := c.Account(ctx, "alice")
		if err != nil || !a.SID.Equal(s.Alice.SID) {
			t.Errorf("Account(alice) over a Kerberos bind = %v, %v", a, err)
		}
		c.Close()
	}
	// The wrong key: refused as a bind failure. (carol's keys are not in svc-enroll's keytab.)
	cfg := ldap.Config{URL: dc.URL, CAFile: dc.CAFile, ServerName: ldaptest.DCDNSName, Keytab: keytab,
		Principal: "carol@" + ldaptest.Realm, KDC: dc.IP}
	if _, err := ldap.Dial(ctx, cfg); !errors.Is(err, ldap.ErrBind) {
		t.Errorf("Dial(Kerberos, principal not in the keytab) = %v, want ErrBind", err)
	}
	cfg.ServerName = ""
	if _, err := ldap.Dial(ctx, cfg); err == nil || !strings.Contains(err.Error(), "ServerName") {
		t.Errorf("Dial(Kerberos to an IP without ServerName) = %v, want an error about ServerName", err)
	}
}

func TestDialKerberosKDCDown(t *testing.T) {
	t.Parallel()
	dc := ldaptest.StartDC(t)
	dc.Seed(t)
	cfg := ldap.Config{URL: dc.URL, CAFile: dc.CAFile, ServerName: ldaptest.DCDNSName, Keytab: dc.Keytab(t, "svc-enroll"),
		Principal: "svc-enroll@" + ldaptest.Realm, KDC: "127.0.0.1:1", Timeout: 3 * time.Second}
	if _, err := ldap.Dial(context.Background(), cfg); !errors.Is(err, ldap.ErrUnavailable) {
		t.Errorf("Dial(Kerberos, KDC not answering) = %v, want ErrUnavailable", err)
	}
}

// A DC that accepts connections but never answers: calls fail with ErrUnavailable within the timeout (the
// redial gets no extra time), and the client recovers when it answers again.
func TestDirectoryHangs(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(c *ldap.Config) { c.Timeout = time.Second })
	ctx := context.Background()
	e.dc.Freeze(t)
	for range 2 { // the first on the established connection, the second on a fresh dial
		t0 := time.Now()
		err := e.c.Ping(ctx)
		if !errors.Is(err, ldap.ErrUnavailable) {
			t.Errorf("Ping() to a hung DC = %v, want ErrUnavailable", err)
		}
		if d := time.Since(t0); d > 1500*time.Millisecond {
			t.Errorf("Ping() to a hung DC took %v, want about the 1s timeout", d)
		}
		time.Sleep(300 * time.Millisecond) // past the redial backoff
	}
	e.dc.Thaw(t)
	deadline := time.Now().Add(10 * time.Second)
	for err := e.c.Ping(ctx); err != nil; err = e.c.Ping(ctx) {
		if time.Now().After(deadline) {
			t.Fatalf("Ping() after the DC answers again = %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
