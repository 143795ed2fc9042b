package ldaptest

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	goldap "github.com/go-ldap/ldap/v3"
)

// HTTPService makes account (e.g. "svc-http"; created in CN=Users with a random password that never expires
// if it does not exist) the owner of the service principal spn (e.g. "HTTP/localhost"), lets it use AES
// tickets, and exports the keys of spn into a keytab file, whose path it returns: what an administrator does
// for the appliance's Kerberos endpoints (MS-KILE 3.4; docs/architecture.md). SPNs are unique in a domain: give each spn
// once per DC.
func (dc *DC) HTTPService(t testing.TB, account, spn string) (keytabPath string) {
	t.Helper()
	keytabPath, err := dc.ServiceKeytab(account, spn)
	if err != nil {
		t.Fatalf("ldaptest: %v", err)
	}
	return keytabPath
}

// ServiceKeytab is HTTPService for programs that are not tests.
func (dc *DC) ServiceKeytab(account, spn string) (keytabPath string, err error) {
	conn, err := dc.dialAdmin()
	if err != nil {
		return "", err
	}
	defer conn.Close()
	res, err := conn.Search(goldap.NewSearchRequest(BaseDN, goldap.ScopeWholeSubtree, goldap.NeverDerefAliases, 0, 0,
		false, "(sAMAccountName="+goldap.EscapeFilter(account)+")", []string{"dn"}, nil))
	if err != nil {
		return "", fmt.Errorf("looking up %s: %w", account, err)
	}
	var dn string
	switch len(res.Entries) {
	case 0:
		secret := make([]byte, 16)
		rand.Read(secret)
		dn = "CN=" + account + ",CN=Users," + BaseDN
		if err := add(conn, dn, map[string][]string{
			"objectClass":        {"user"},
			"sAMAccountName":     {account},
			"unicodePwd":         {unicodePwd("Svc-" + hex.EncodeToString(secret) + "!")},
			"userAccountControl": {"66048"}, // NORMAL_ACCOUNT | DONT_EXPIRE_PASSWORD
		}); err != nil {
			return "", err
		}
	case 1:
		dn = res.Entries[0].DN
	default:
		return "", fmt.Errorf("%d accounts named %s", len(res.Entries), account)
	}
	// AES128 | AES256: without it the KDC issues RC4 tickets and exportkeytab writes RC4 keys only.
	mod := goldap.NewModifyRequest(dn, nil)
	mod.Replace("msDS-SupportedEncryptionTypes", []string{"24"})
	if err := conn.Modify(mod); err != nil {
		return "", fmt.Errorf("setting msDS-SupportedEncryptionTypes on %s: %w", dn, err)
	}
	conf := filepath.Join(dc.Dir, "etc", "smb.conf")
	if out, err := exec.Command("samba-tool", "spn", "add", spn, account, "-s", conf).CombinedOutput(); err != nil {
		return "", fmt.Errorf("samba-tool spn add %s %s: %v\n%s", spn, account, err, out)
	}
	name := strings.NewReplacer("/", "_", "@", "_").Replace(spn)
	keytabPath = filepath.Join(dc.Dir, "private", "http-"+name+".keytab")
	os.Remove(keytabPath) // exportkeytab adds to an existing file
	out, err := exec.Command("samba-tool", "domain", "exportkeytab", keytabPath, "--principal="+spn,
		"-s", conf).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("samba-tool domain exportkeytab --principal=%s: %v\n%s", spn, err, out)
	}
	return keytabPath, nil
}

// Krb5Conf writes a krb5.conf for this DC's realm (KDC on dc.IP, no DNS, no reverse lookups, AES only) for
// MIT tools (KRB5_CONFIG) and gokrb5 clients, and returns its path. Host names map to the realm as the
// sample domain's do, and "localhost" too, so that tests can use http://localhost/ with HTTP/localhost.
func (dc *DC) Krb5Conf(t testing.TB) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "krb5.conf")
	if err := dc.WriteKrb5Conf(path); err != nil {
		t.Fatal(err)
	}
	return path
}

// WriteKrb5Conf writes the krb5.conf of Krb5Conf to path.
func (dc *DC) WriteKrb5Conf(path string) error {
	const aes = "aes256-cts-hmac-sha1-96 aes128-cts-hmac-sha1-96"
	conf := fmt.Sprintf(`# Written by ldaptest for the DC on %[2]s.
[libdefaults]
	default_realm = %[1]s
	dns_lookup_kdc = false
	dns_lookup_realm = false
	dns_canonicalize_hostname = false
	rdns = false
	udp_preference_limit = 1
	default_tgs_enctypes = %[3]s
	default_tkt_enctypes = %[3]s
	permitted_enctypes = %[3]s
	ticket_lifetime = 10h
	forwardable = false

[realms]
	%[1]s = {
		kdc = %[2]s
	}

[domain_realm]
	.%[4]s = %[1]s
	%[4]s = %[1]s
	localhost = %[1]s
`, Realm, dc.IP, aes, DomainDNS)
	return os.WriteFile(path, []byte(conf), 0o644)
}
