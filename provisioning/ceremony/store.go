package ceremony

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/enrollment-appliance/aeappliance/config"
	"github.com/enrollment-appliance/aeappliance/enrollsvc/store"
	"github.com/enrollment-appliance/aeappliance/provisioning"
)

// StepStore is the store step's name.
const StepStore = provisioning.StepStore

// Store saves the settings of a PostgreSQL store several appliances share, after checking them:
// the server must be reached over TLS verified against s.CAPEM, with the password or client
// certificate given, and must not serve another CA than this appliance's (once it has its CA
// certificate). Settings that fail the check are not saved. Finish then writes them into the
// service's configuration instead of the SQLite file.
func (c *Ceremony) Store(ctx context.Context, s provisioning.Store) (Report, error) {
	r := Report{Step: StepStore}
	if c.Provisioned() {
		return r, errors.New("the appliance is provisioned; move its store with enrollsvc store migrate: nothing changed")
	}
	st, err := c.State()
	if err != nil {
		return r, err
	}
	pg := &config.Postgres{URL: s.URL, CAFile: config.StoreCAFile}
	files := map[string][]byte{config.StoreCAFile: s.CAPEM}
	if s.Password != "" {
		if strings.ContainsAny(s.Password, "\r\n") {
			return r, errors.New("the password holds a line break: nothing changed")
		}
		pg.PasswordFile, files[config.StorePassword] = config.StorePassword, []byte(s.Password+"\n")
	}
	if len(s.ClientCertPEM) > 0 || len(s.ClientKeyPEM) > 0 {
		if _, err := tls.X509KeyPair(s.ClientCertPEM, s.ClientKeyPEM); err != nil {
			return r, fmt.Errorf("the client certificate and key: %w: nothing changed", err)
		}
		pg.ClientCertFile, pg.ClientKeyFile = config.StoreClientCert, config.StoreClientKey
		files[config.StoreClientCert], files[config.StoreClientKey] = s.ClientCertPEM, s.ClientKeyPEM
	}
	if len(s.CAPEM) == 0 {
		return r, errors.New("the database server's CA (PEM) is required: the connection is TLS, verified: nothing changed")
	}
	if _, err := parsePEMCerts(s.CAPEM); err != nil {
		return r, fmt.Errorf("the database server's CA: %w: nothing changed", err)
	}
	if err := pg.Validate(); err != nil {
		return r, fmt.Errorf("%w: nothing changed", err)
	}
	// Check in a scratch directory, then move the files into place.
	tmp, err := os.MkdirTemp(c.Dir, ".store-")
	if err != nil {
		return r, err
	}
	defer os.RemoveAll(tmp)
	if err := os.MkdirAll(filepath.Join(tmp, config.StoreDir), 0o700); err != nil {
		return r, err
	}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(tmp, name), b, 0o600); err != nil {
			return r, err
		}
	}
	db, err := store.OpenPostgres(ctx, store.PGConfig{URL: pg.URL, CAFile: config.Path(tmp, pg.CAFile),
		PasswordFile: config.Path(tmp, pg.PasswordFile), ClientCertFile: config.Path(tmp, pg.ClientCertFile),
		ClientKeyFile: config.Path(tmp, pg.ClientKeyFile)}, c.log())
	if err != nil {
		return r, fmt.Errorf("checking the store settings: %w: nothing changed", err)
	}
	cl, err := db.GetCluster(ctx)
	db.Close()
	switch {
	case errors.Is(err, store.ErrNotFound):
		r.Say("The database serves no CA yet: this appliance's CA will be the one it serves.")
	case err != nil:
		return r, fmt.Errorf("checking the store settings: %w: nothing changed", err)
	default:
		if !c.servesOwnCA(st, cl.CACert) {
			return r, errors.New("the database already serves another CA; an appliance joins that CA with enrollsvc join (with its HSM key), not by provisioning a new one: nothing changed")
		}
		r.Say("The database serves this appliance's CA already.")
	}
	if err := os.MkdirAll(filepath.Join(c.Dir, config.StoreDir), 0o700); err != nil {
		return r, err
	}
	for name, b := range files {
		if err := config.WriteFileAtomic(filepath.Join(c.Dir, name), b, 0o600); err != nil {
			return r, err
		}
	}
	for _, name := range []string{config.StorePassword, config.StoreClientCert, config.StoreClientKey} {
		if _, ok := files[name]; !ok {
			os.Remove(filepath.Join(c.Dir, name))
		}
	}
	r.Changed = st.Store == nil || *st.Store != *pg
	st.Store = pg
	if err := c.save(st); err != nil {
		return r, err
	}
	r.Say("Checked and saved the store settings: PostgreSQL at %s (TLS verified).", pg.URL)
	return r, nil
}

// servesOwnCA reports whether der is this appliance's CA certificate (once it has one).
func (c *Ceremony) servesOwnCA(st State, der []byte) bool {
	if st.CA == nil || !st.CA.Certified {
		return false
	}
	b, err := os.ReadFile(filepath.Join(c.Dir, config.CACertFile))
	if err != nil {
		return false
	}
	certs, err := parsePEMCerts(b)
	return err == nil && len(certs) > 0 && bytes.Equal(certs[0].Raw, der)
}
