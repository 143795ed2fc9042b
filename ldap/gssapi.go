package ldap

import (
	"errors"
	"fmt"
	"net"
	"strings"

	goldap "github.com/go-ldap/ldap/v3"
	ldapgssapi "github.com/go-ldap/ldap/v3/gssapi"
	krbclient "github.com/jcmturner/gokrb5/v8/client"
	krbconfig "github.com/jcmturner/gokrb5/v8/config"
	"github.com/jcmturner/gokrb5/v8/keytab"
	"github.com/jcmturner/gokrb5/v8/krberror"
)

// kerberos binds with SASL GSSAPI using a keytab (no password in the configuration). The bind still runs
// inside TLS; go-ldap negotiates no SASL security layer, which Samba and AD accept over TLS.
type kerberos struct {
	client *ldapgssapi.Client
	spn    string // ldap/<DC host name>
}

// newKerberos loads the keytab and builds an in-memory krb5 configuration for one realm and KDC, so the
// appliance needs no /etc/krb5.conf and does no DNS SRV lookups.
func newKerberos(cfg *Config, dcHost string) (*kerberos, error) {
	principal, realm, _ := strings.Cut(cfg.Principal, "@")
	if cfg.Realm != "" {
		realm = cfg.Realm
	}
	realm = strings.ToUpper(realm)
	if principal == "" || realm == "" {
		return nil, fmt.Errorf("ldap: Config.Principal %q: want name@REALM (or set Config.Realm)", cfg.Principal)
	}
	if net.ParseIP(dcHost) != nil {
		return nil, fmt.Errorf("ldap: Kerberos needs the DC's host name for its service principal, not %s: set Config.ServerName", dcHost)
	}
	kdc := cfg.KDC
	if kdc == "" {
		kdc = dcHost
	}
	if _, _, err := net.SplitHostPort(kdc); err != nil {
		kdc = net.JoinHostPort(kdc, "88")
	}
	kt, err := keytab.Load(cfg.Keytab)
	if err != nil {
		return nil, fmt.Errorf("ldap: Config.Keytab: %w", err)
	}
	conf, err := krbconfig.NewFromString(fmt.Sprintf(`[libdefaults]
  default_realm = %[1]s
  dns_lookup_kdc = false
  dns_lookup_realm = false
  udp_preference_limit = 1
[realms]
  %[1]s = {
    kdc = %[2]s
  }
`, realm, kdc))
	if err != nil {
		return nil, fmt.Errorf("ldap: Kerberos configuration for realm %s, KDC %s: %w", realm, kdc, err)
	}
	cl := krbclient.NewWithKeytab(principal, realm, kt, conf, krbclient.DisablePAFXFAST(true))
	return &kerberos{client: &ldapgssapi.Client{Client: cl}, spn: "ldap/" + dcHost}, nil
}

func (k *kerberos) bind(conn *goldap.Conn) error {
	if _, ok := conn.TLSConnectionState(); !ok {
		return errInsecureBind
	}
	return conn.GSSAPIBind(k.client, k.spn, "")
}

// asKerberosError finds a gokrb5 error (a value type) in err's chain.
func asKerberosError(err error) (krberror.Krberror, bool) {
	var kerr krberror.Krberror
	ok := errors.As(err, &kerr)
	return kerr, ok
}
