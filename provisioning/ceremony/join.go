package ceremony

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/enrollment-appliance/aeappliance/config"
	"github.com/enrollment-appliance/aeappliance/enrollsvc/daemon"
	"github.com/enrollment-appliance/aeappliance/enrollsvc/events"
	"github.com/enrollment-appliance/aeappliance/enrollsvc/store"
	"github.com/enrollment-appliance/aeappliance/hsm"
	"github.com/enrollment-appliance/aeappliance/hsm/softhsm"
	"github.com/enrollment-appliance/aeappliance/proto/certutil"
	"github.com/enrollment-appliance/aeappliance/provisioning"
	"github.com/enrollment-appliance/aeappliance/provisioning/tokenbundle"
)

// JoinOptions describe a new instance of a CA whose store is a shared PostgreSQL database.
type JoinOptions struct {
	Dir   string
	Store StoreOptions
	// TokenFrom copies a SoftHSM token directory (another instance's DIR/hsm: its tokens and
	// user PIN) for this instance. For tests only: a copy of a token is a copy of the CA key. In
	// production every instance reaches the same key in a network HSM (Module, PINFile).
	TokenFrom string
	// TokenBundle is a SoftHSM token exported by another instance (ExportToken: encrypted to
	// BundlePassphrase); its user PIN is PIN or PINFile. A software token's key can only reach
	// another appliance this way.
	TokenBundle      []byte
	BundlePassphrase string
	Module           string // PKCS#11 module reaching the CA key (without TokenFrom or TokenBundle)
	PINFile          string // the token's user PIN (without TokenFrom), or
	PIN              string // the PIN itself
	// The listeners of this instance (defaults as for init); the shared settings come from the
	// store. Hostnames, when set, are this instance's names for its enrollment web services
	// (default: the first instance's).
	APIListen, EnrollListen, HTTPListen string
	Hostnames                           []string
	// LDAPPasswordFile (or LDAPPassword) is the directory service account's password (required
	// when the CA uses the directory); Keytab the Kerberos service keytab (optional).
	LDAPPasswordFile string
	LDAPPassword     string
	Keytab           string
	KeytabBytes      []byte
	Instance         string
	Logger           *slog.Logger
}

// Join makes a data directory for one more instance of the CA recorded in the shared store: it
// reads the CA certificate and the shared settings from the store, finds the CA key in the HSM by
// its PKCS#11 URI and checks that it is the certificate's. It never creates a key: an HSM that
// does not hold the CA's key is refused, and so is a database that serves no CA yet. Like Init it
// builds the directory aside and moves it into place only when everything worked.
func Join(ctx context.Context, o JoinOptions) (*Result, error) {
	if o.Dir == "" {
		return nil, errors.New("--data: a data directory is required")
	}
	if o.Store.URL == "" {
		return nil, errors.New("--store-url: join needs the shared store of the CA")
	}
	ways := 0
	for _, set := range []bool{o.TokenFrom != "", o.TokenBundle != nil, o.Module != ""} {
		if set {
			ways++
		}
	}
	if ways != 1 {
		return nil, errors.New("give one of --token-from (a SoftHSM token copy, tests only), --token-bundle (a SoftHSM token exported by another instance) or --pkcs11-module (the HSM that holds the CA key)")
	}
	if o.TokenFrom == "" && (o.PINFile == "") == (o.PIN == "") {
		return nil, errors.New("the token's user PIN is required (--pin-file)")
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.APIListen == "" {
		o.APIListen = config.DefaultAPIListen
	}
	return buildAside(o.Dir, "join", o.Module == "", func(stage string) (*Result, error) { return joinIn(ctx, stage, o) })
}

func joinIn(ctx context.Context, stage string, o JoinOptions) (*Result, error) {
	pg, err := o.Store.stage(stage)
	if err != nil {
		return nil, err
	}
	probe := &config.Config{Postgres: pg}
	st, err := daemon.OpenStore(ctx, stage, probe, o.Logger)
	if err != nil {
		return nil, fmt.Errorf("the shared store: %w", err)
	}
	cs, ok := st.(store.ClusterStore)
	if !ok {
		st.Close()
		return nil, errors.New("the store cannot say which CA it serves")
	}
	cl, err := cs.GetCluster(ctx)
	st.Close()
	if errors.Is(err, store.ErrNotFound) {
		return nil, errors.New("the shared store serves no CA yet: create the CA with enrollsvc init --store-url first")
	}
	if err != nil {
		return nil, fmt.Errorf("the shared store: %w", err)
	}
	caCert, err := x509.ParseCertificate(cl.CACert)
	if err != nil {
		return nil, fmt.Errorf("the CA certificate in the store: %w", err)
	}
	var shared config.Shared
	if err := json.Unmarshal(cl.Settings, &shared); err != nil {
		return nil, fmt.Errorf("the shared settings in the store: %w", err)
	}
	uri, err := hsm.ParseURI(cl.KeyURI)
	if err != nil {
		return nil, fmt.Errorf("the CA key's URI in the store: %w", err)
	}

	// The HSM: the CA key must be there, and be the certificate's.
	hc := config.HSM{KeyURI: cl.KeyURI, KeyType: shared.KeyType, TokenLabel: uri.Token, TokenSerial: uri.Serial, PINFile: config.PINFile}
	if err := os.MkdirAll(filepath.Join(stage, config.HSMDir), 0o700); err != nil {
		return nil, err
	}
	if o.Module == "" {
		if hc.Module, err = softhsm.ModulePath(); err != nil {
			return nil, fmt.Errorf("finding SoftHSM (run `make deps`): %w", err)
		}
		if o.TokenFrom != "" {
			if err := copyTree(filepath.Join(o.TokenFrom, "tokens"), filepath.Join(stage, config.SoftHSMTokens)); err != nil {
				return nil, fmt.Errorf("--token-from: %w", err)
			}
			if err := copyFile(filepath.Join(o.TokenFrom, "pin"), filepath.Join(stage, config.PINFile), 0o600); err != nil {
				return nil, fmt.Errorf("--token-from: %w", err)
			}
		} else {
			if err := tokenbundle.Open(o.TokenBundle, o.BundlePassphrase, filepath.Join(stage, config.SoftHSMTokens)); err != nil {
				return nil, err
			}
			if err := writePIN(stage, o); err != nil {
				return nil, err
			}
		}
		hc.SoftHSMConf = config.SoftHSMConf
		if err := softhsm.WriteConfig(filepath.Join(stage, config.SoftHSMConf), filepath.Join(stage, config.SoftHSMTokens)); err != nil {
			return nil, err
		}
		if err := os.Setenv("SOFTHSM2_CONF", filepath.Join(stage, config.SoftHSMConf)); err != nil {
			return nil, err
		}
	} else {
		hc.Module = o.Module
		if err := writePIN(stage, o); err != nil {
			return nil, err
		}
	}
	if err := checkJoinKey(ctx, stage, hc, uri, caCert, o.Logger); err != nil {
		return nil, err
	}

	// The data directory: the CA certificate, the shared settings, this instance's own parts.
	if err := os.WriteFile(filepath.Join(stage, config.CACertFile), pemCert(caCert), 0o644); err != nil {
		return nil, err
	}
	tokenBytes := make([]byte, 32)
	if _, err := rand.Read(tokenBytes); err != nil {
		return nil, err
	}
	token := base64.RawURLEncoding.EncodeToString(tokenBytes)
	sum := sha256.Sum256([]byte(token))
	if err := os.MkdirAll(filepath.Join(stage, config.APIDir), 0o700); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(stage, config.APITokenFile), []byte(token+"\n"), 0o600); err != nil {
		return nil, err
	}
	cfg := &config.Config{Version: config.Version, CAName: shared.CAName, HSM: hc, Postgres: pg, CACert: config.CACertFile,
		API: config.API{Listen: o.APIListen, CertFile: config.APICertFile, KeyFile: config.APIKeyFile,
			TokenFile: config.APITokenFile, TokenHash: hex.EncodeToString(sum[:])},
		CRLURLs: shared.CRLURLs, OCSPURLs: shared.OCSPURLs, CAIssuerURLs: shared.CAIssuerURLs, Templates: shared.Templates,
		TrustedProxies: shared.TrustedProxies, Limits: shared.Limits, Instance: o.Instance}
	if cl.CAChain != "" {
		if err := os.WriteFile(filepath.Join(stage, CAChainFile), []byte(cl.CAChain), 0o644); err != nil {
			return nil, err
		}
		cfg.CAChain = CAChainFile
	}
	if h := shared.HTTP; h != nil {
		cfg.HTTP = &config.HTTP{Listen: h.Listen, BaseURL: h.BaseURL}
		if o.HTTPListen != "" {
			cfg.HTTP.Listen = o.HTTPListen
		}
	}
	if d := shared.Directory; d != nil {
		if o.LDAPPasswordFile == "" && o.LDAPPassword == "" {
			return nil, fmt.Errorf("the CA takes its policy from the directory %s: the password of its service account %s is required (--ldap-password-file)", d.URL, d.BindUser)
		}
		dd := *d
		if err := os.MkdirAll(filepath.Join(stage, config.LDAPDir), 0o700); err != nil {
			return nil, err
		}
		if err := writeSecret(filepath.Join(stage, config.LDAPPassword), "directory password", o.LDAPPassword,
			o.LDAPPasswordFile, "--ldap-password-file"); err != nil {
			return nil, err
		}
		dd.PasswordFile, dd.CAFile = config.LDAPPassword, ""
		if shared.LDAPCA != "" {
			if err := os.WriteFile(filepath.Join(stage, config.LDAPCAFile), []byte(shared.LDAPCA), 0o644); err != nil {
				return nil, err
			}
			dd.CAFile = config.LDAPCAFile
		}
		cfg.Directory = &dd
		if e := shared.Enroll; e != nil {
			ee := *e
			ee.CertFile, ee.KeyFile = config.EnrollCert, config.EnrollKey
			if o.EnrollListen != "" {
				ee.Listen = o.EnrollListen
			}
			if len(o.Hostnames) > 0 {
				ee.Hostnames = o.Hostnames
			}
			cfg.Enroll = &ee
		}
	}
	if err := cfg.Write(stage); err != nil {
		return nil, err
	}
	rt, err := daemon.Open(ctx, stage, o.Logger)
	if err != nil {
		return nil, err
	}
	defer rt.Close()
	if cfg.Directory != nil {
		if _, err := rt.Service.OfferedTemplates(ctx); err != nil {
			return nil, fmt.Errorf("checking the directory settings: %w", err)
		}
	}
	if o.Keytab != "" || o.KeytabBytes != nil {
		kt := o.KeytabBytes
		if o.Keytab != "" {
			if kt, err = os.ReadFile(o.Keytab); err != nil {
				return nil, fmt.Errorf("reading --keytab: %w", err)
			}
		}
		if err := rt.InstallKeytab(ctx, kt); err != nil {
			return nil, fmt.Errorf("the keytab: %w", err)
		}
	}
	if _, err := rt.EnsureAPICert(ctx, daemon.APIHosts(cfg.API.Listen)); err != nil {
		return nil, err
	}
	_ = rt.Recorder.Record(ctx, events.DataDirInitialised, "", "ca_name", cfg.CAName, "joined", true,
		"instance", rt.InstanceName(), "key", cl.KeyURI)
	return &Result{KeyURI: cl.KeyURI, CASubject: caCert.Subject.String(), CASerial: certutil.SerialString(caCert.SerialNumber),
		APIListen: o.APIListen}, nil
}

// writePIN writes the token's user PIN (o.PIN or o.PINFile's) into stage.
func writePIN(stage string, o JoinOptions) error {
	return writeSecret(filepath.Join(stage, config.PINFile), "PIN", o.PIN, o.PINFile, "--pin-file")
}

// writeSecret writes a secret into the file to (mode 0600): value itself, one line, or when it
// is empty a copy of the file from (flag names it in errors).
func writeSecret(to, what, value, from, flag string) error {
	if value != "" {
		if strings.ContainsAny(value, "\r\n") {
			return fmt.Errorf("the %s holds a line break", what)
		}
		return os.WriteFile(to, []byte(value+"\n"), 0o600)
	}
	if err := copyFile(from, to, 0o600); err != nil {
		return fmt.Errorf("%s: %w", flag, err)
	}
	return nil
}

// checkJoinKey opens the HSM as cfg says and checks that the key uri names is caCert's.
func checkJoinKey(ctx context.Context, dir string, cfg config.HSM, uri hsm.URI, caCert *x509.Certificate, log *slog.Logger) error {
	pin, err := hsm.ReadPIN(config.Path(dir, cfg.PINFile), "")
	if err != nil {
		return fmt.Errorf("reading the HSM PIN: %w", err)
	}
	ks, err := hsm.Open(ctx, hsm.Config{ModulePath: cfg.Module, TokenLabel: cfg.TokenLabel, TokenSerial: cfg.TokenSerial, PIN: pin, Logger: log})
	if err != nil {
		return fmt.Errorf("opening the HSM that must hold the CA key %s (an instance joins with the CA's key, and join never creates one): %w", uri, err)
	}
	defer ks.Close()
	k, err := ks.FindKey(ctx, uri)
	if errors.Is(err, hsm.ErrKeyNotFound) {
		return fmt.Errorf("the CA key %s is not in this HSM: an instance joins with the CA's key (the same HSM), and join never creates one", uri)
	}
	if err != nil {
		return fmt.Errorf("finding the CA key %s: %w", uri, err)
	}
	if !certutil.PublicKeysEqual(caCert.PublicKey, k.Public()) {
		return fmt.Errorf("the key %s in this HSM is not the key of the CA %s: refusing to join", uri, caCert.Subject)
	}
	return nil
}

// copyTree copies the regular files and directories under src to dst, keeping their modes.
func copyTree(src, dst string) error {
	return filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		to := filepath.Join(dst, rel)
		info, err := d.Info()
		if err != nil {
			return err
		}
		switch {
		case d.IsDir():
			return os.MkdirAll(to, info.Mode().Perm()|0o700)
		case d.Type().IsRegular():
			return copyFile(p, to, info.Mode().Perm())
		}
		return fmt.Errorf("%s: not a regular file or directory", p)
	})
}

func copyFile(from, to string, mode os.FileMode) error {
	b, err := os.ReadFile(from)
	if err != nil {
		return err
	}
	return os.WriteFile(to, b, mode)
}

// StepJoin is the join step's name.
const StepJoin = provisioning.StepJoin

// Join is the appliance's join step: instead of its own token, key and CA, an appliance with a
// blank data directory joins the CA whose store j.Store names, with the CA key from the first
// appliance's SoftHSM token bundle (ExportToken), and ends provisioned with the listeners of fo
// (as Finish). Everything Join (the function) checks holds: the key must be the store's CA's, the
// store must serve a CA, and nothing is left when a check fails.
func (c *Ceremony) Join(ctx context.Context, j provisioning.Join, fo FinishOptions) (Report, error) {
	r := Report{Step: StepJoin}
	if c.Provisioned() {
		return r, errors.New("the appliance is provisioned already: nothing changed")
	}
	st, err := c.State()
	if err != nil {
		return r, err
	}
	if st.Token != nil {
		return r, errors.New("this appliance has begun a CA of its own (its token is initialised); an appliance joins with a blank data disk: nothing changed")
	}
	if len(j.Store.CAPEM) == 0 {
		return r, errors.New("the database server's CA (PEM) is required: the connection is TLS, verified: nothing changed")
	}
	if len(j.TokenBundle) == 0 {
		return r, errors.New("the token bundle is required (ca export-token at the first appliance's console): nothing changed")
	}
	tmp, err := os.MkdirTemp("", "join-")
	if err != nil {
		return r, err
	}
	defer os.RemoveAll(tmp)
	so := StoreOptions{URL: j.Store.URL, Password: j.Store.Password}
	for _, f := range []struct {
		b    []byte
		name string
		dst  *string
	}{{j.Store.CAPEM, "ca.pem", &so.CAFile}, {j.Store.ClientCertPEM, "client.pem", &so.ClientCertFile}, {j.Store.ClientKeyPEM, "client-key.pem", &so.ClientKeyFile}} {
		if len(f.b) == 0 {
			continue
		}
		*f.dst = filepath.Join(tmp, f.name)
		if err := os.WriteFile(*f.dst, f.b, 0o600); err != nil {
			return r, err
		}
	}
	if _, err := parsePEMCerts(j.Store.CAPEM); err != nil {
		return r, fmt.Errorf("the database server's CA: %w: nothing changed", err)
	}
	res, err := Join(ctx, JoinOptions{Dir: c.Dir, Store: so, TokenBundle: j.TokenBundle, BundlePassphrase: j.BundlePassphrase,
		PIN: j.UserPIN, APIListen: fo.APIListen, EnrollListen: fo.EnrollListen, HTTPListen: fo.HTTPListen, Hostnames: fo.Hostnames,
		LDAPPassword: j.LDAPPassword, KeytabBytes: fo.Keytab, Instance: fo.Instance, Logger: c.log()})
	if err != nil {
		return r, fmt.Errorf("%w: nothing changed", err)
	}
	// The ceremony's state, as if its steps had run: status shows what the appliance joined.
	cfg, err := config.Load(c.Dir)
	if err != nil {
		return r, err
	}
	caCert, err := parsePEMFile(filepath.Join(c.Dir, config.CACertFile))
	if err != nil {
		return r, err
	}
	now := c.now()
	st = State{Token: &TokenState{Module: cfg.HSM.Module, SoftHSM: true, Label: cfg.HSM.TokenLabel, Serial: cfg.HSM.TokenSerial, At: now},
		Key: &KeyState{URI: cfg.HSM.KeyURI, Type: cfg.HSM.KeyType, At: now}, CA: caState("joined", cfg.CAName, caCert),
		Directory: cfg.Directory, Store: cfg.Postgres}
	if err := c.save(st); err != nil {
		return r, err
	}
	r.Changed = true
	r.Say("Joined the CA %s (serial %s) whose store is PostgreSQL at %s.", res.CASubject, res.CASerial, so.URL)
	r.Say("The CA key %s is the CA certificate's; this appliance has a copy of the first one's token.", res.KeyURI)
	r.Say("Wrote the service configuration: API on %s.", cfg.API.Listen)
	if cfg.Directory != nil && cfg.Enroll != nil {
		r.Say("Enrollment web services on %s for %s.", cfg.Enroll.Listen, strings.Join(cfg.Enroll.Hostnames, ", "))
	}
	return r, nil
}

// parsePEMFile reads the first certificate of a PEM file.
func parsePEMFile(p string) (*x509.Certificate, error) {
	b, err := os.ReadFile(p)
	if err != nil {
		return nil, err
	}
	certs, err := parsePEMCerts(b)
	if err != nil {
		return nil, err
	}
	return certs[0], nil
}
