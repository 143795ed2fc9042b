package provapi_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/enrollment-appliance/aeappliance/config"
	"github.com/enrollment-appliance/aeappliance/enrollsvc/store"
	"github.com/enrollment-appliance/aeappliance/enrollsvc/store/pgtest"
	"github.com/enrollment-appliance/aeappliance/provisioning"
	"github.com/enrollment-appliance/aeappliance/provisioning/ceremony"
	"github.com/enrollment-appliance/aeappliance/provisioning/provapi"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

// The store step over the provisioning API: settings that do not reach the database (a CA that
// did not issue its certificate, a password in the URL) are refused and nothing is saved; good
// ones are checked and saved, and finish makes the store PostgreSQL, which then serves this CA;
// another appliance's new CA is refused by that database.
func TestStoreStep(t *testing.T) {
	needSoftHSM(t)
	ctx := context.Background()
	db := pgtest.Shared(t).NewDatabase(t)
	caPEM, err := os.ReadFile(db.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	good := provisioning.Store{URL: db.URL, Password: db.Password, CAPEM: caPEM}
	ceremonyToCA := func(f *fixture, name string) *provapi.Client {
		if _, err := provisioning.SetPassphrase(f.settings, "", passphrase); err != nil {
			t.Fatal(err)
		}
		cl := f.client(passphrase)
		if _, err := cl.Token(ctx, soPIN, userPIN); err != nil {
			t.Fatal(err)
		}
		if _, err := cl.Key(ctx, "ecdsa-p256"); err != nil {
			t.Fatal(err)
		}
		if _, err := cl.SelfSigned(ctx, name, 3650); err != nil {
			t.Fatal(err)
		}
		return cl
	}
	f := newFixture(t)
	cl := ceremonyToCA(f, "Shared Root CA")

	wrongCA := good
	wrongCA.CAPEM = otherCAPEM(t)
	f.refused(http.StatusConflict, "checking the store settings", func() error { _, err := cl.Store(ctx, wrongCA); return err })
	inURL := good
	inURL.URL = strings.Replace(db.URL, "postgres://"+pgtest.Role+"@", "postgres://"+pgtest.Role+":"+db.Password+"@", 1)
	f.refused(http.StatusConflict, "password", func() error { _, err := cl.Store(ctx, inURL); return err })
	noCA := good
	noCA.CAPEM = nil
	f.refused(http.StatusConflict, "CA (PEM) is required", func() error { _, err := cl.Store(ctx, noCA); return err })
	if st, err := cl.Status(ctx); err != nil || strings.Contains(doneSteps(st.Steps), "store") {
		t.Fatalf("status after refused store steps: %+v, %v; want the store step not done", st, err)
	}
	if _, err := os.Stat(filepath.Join(f.dir, config.StoreDir)); err == nil {
		t.Error("refused store steps left files in the data directory")
	}
	if r, err := cl.Store(ctx, good); err != nil || !r.Changed || !strings.Contains(r.String(), "serves no CA yet") {
		t.Fatalf("store: %v %+v", err, r)
	}
	if r, err := cl.Finish(ctx); err != nil || !r.Changed {
		t.Fatalf("finish: %v %+v", err, r)
	}
	f.waitFinish()
	cfg, err := config.Load(f.dir)
	if err != nil || cfg.Postgres == nil || cfg.Store != "" || cfg.Postgres.URL != db.URL {
		t.Fatalf("the configuration after finish: %+v, %v; want the PostgreSQL store", cfg, err)
	}
	if b, _ := os.ReadFile(filepath.Join(f.dir, config.File)); strings.Contains(string(b), db.Password) {
		t.Error("config.json holds the database password")
	}
	pg, err := store.OpenPostgres(ctx, store.PGConfig{URL: db.URL, CAFile: db.CAFile, PasswordFile: db.PasswordFile}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer pg.Close()
	cluster, err := pg.GetCluster(ctx)
	ca, _ := os.ReadFile(filepath.Join(f.dir, config.CACertFile))
	blk, _ := pem.Decode(ca)
	if err != nil || blk == nil || string(cluster.CACert) != string(blk.Bytes) {
		t.Errorf("the database serves %x (%v), want this appliance's CA", cluster.CACert, err)
	}

	// Another appliance, another CA, the same database: refused.
	f2 := newFixture(t)
	cl2 := ceremonyToCA(f2, "Another Root CA")
	f2.refused(http.StatusConflict, "already serves another CA", func() error { _, err := cl2.Store(ctx, good); return err })

	// A third appliance joins the first one's CA with its token bundle: a wrong passphrase is
	// refused and leaves nothing; the right one ends provisioned with the same CA.
	bundle, err := ceremony.ExportToken(ctx, f.dir, "join bundle passphrase", "test", nil)
	if err != nil {
		t.Fatal(err)
	}
	f3 := newFixture(t)
	if _, err := provisioning.SetPassphrase(f3.settings, "", passphrase); err != nil {
		t.Fatal(err)
	}
	cl3 := f3.client(passphrase)
	j := provisioning.Join{Store: good, TokenBundle: bundle, BundlePassphrase: "not the passphrase", UserPIN: userPIN}
	f3.refused(http.StatusConflict, "the passphrase does not open this token bundle: nothing changed", func() error { _, err := cl3.Join(ctx, j); return err })
	if st, err := cl3.Status(ctx); err != nil || doneSteps(st.Steps) != "" {
		t.Fatalf("status after a refused join: %+v, %v; want nothing done", st, err)
	}
	j.BundlePassphrase = "join bundle passphrase"
	r, err := cl3.Join(ctx, j)
	if err != nil || !r.Changed || !strings.Contains(r.String(), "Joined the CA CN=Shared Root CA") {
		t.Fatalf("join: %v %+v", err, r)
	}
	f3.waitFinish()
	ca3, _ := os.ReadFile(filepath.Join(f3.dir, config.CACertFile))
	if string(ca3) != string(ca) {
		t.Error("the joined appliance's CA certificate is not the first one's")
	}
	if st, err := cl3.Status(ctx); err != nil || !strings.Contains(doneSteps(st.Steps), "finish") {
		t.Errorf("status after the join: %+v, %v; want every step done", st, err)
	}
}

// otherCAPEM is a CA certificate that issued nothing the database server has.
func otherCAPEM(t *testing.T) []byte {
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "Unrelated CA"}, NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, k.Public(), k)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}
