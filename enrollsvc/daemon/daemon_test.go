package daemon_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/enrollment-appliance/aeappliance/config"
	"github.com/enrollment-appliance/aeappliance/enrollsvc"
	"github.com/enrollment-appliance/aeappliance/enrollsvc/daemon"
	"github.com/enrollment-appliance/aeappliance/enrollsvc/events"
	"github.com/enrollment-appliance/aeappliance/enrollsvc/store"
	"github.com/enrollment-appliance/aeappliance/hsm/softhsm"
	"github.com/enrollment-appliance/aeappliance/proto/certutil"
	"github.com/enrollment-appliance/aeappliance/provisioning/ceremony"
)

var quiet = slog.New(slog.NewJSONHandler(io.Discard, nil))

// newDataDir runs the real init (SoftHSM token, CA key in it) into a fresh directory.
func newDataDir(t testing.TB, keyType string) string {
	t.Helper()
	needSoftHSM(t)
	t.Setenv("SOFTHSM2_CONF", "") // init and Open set it; restore afterwards
	dir := filepath.Join(t.TempDir(), "var")
	if _, err := ceremony.Init(context.Background(), ceremony.InitOptions{Dir: dir, CAName: "Test CA " + keyType, KeyType: keyType, Logger: quiet}); err != nil {
		t.Fatalf("Init(%s): %v", keyType, err)
	}
	return dir
}

func needSoftHSM(t testing.TB) {
	t.Helper()
	if _, err := softhsm.ModulePath(); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("SoftHSM2 is required on CI: %v", err)
		}
		t.Skipf("SoftHSM2 not installed (make deps installs it): %v", err)
	}
}

func openRuntime(t testing.TB, dir string) *daemon.Runtime {
	t.Helper()
	rt, err := daemon.Open(context.Background(), dir, quiet)
	if err != nil {
		t.Fatalf("Open(%s): %v", dir, err)
	}
	t.Cleanup(rt.Close)
	return rt
}

// leafOrder asks for a TLS server certificate for cn under the core's server profile.
func leafOrder(t testing.TB, cn string, m enrollsvc.Meta) enrollsvc.ProfileRequest {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return enrollsvc.ProfileRequest{Profile: enrollsvc.ProfileServer, Subject: pkix.Name{CommonName: cn},
		DNSNames: []string{cn}, PublicKey: k.Public(), Validity: 90 * 24 * time.Hour, Meta: m}
}

func TestIssueWithCAKeyInSoftHSM(t *testing.T) {
	for _, kt := range []string{"ecdsa-p256", "ecdsa-p384", "rsa-2048", "rsa-3072"} {
		t.Run(kt, func(t *testing.T) {
			dir := newDataDir(t, kt)
			rt := openRuntime(t, dir)
			ctx := context.Background()

			// The token itself says the CA key is sensitive and never left it.
			attrs, err := rt.KeyStore.KeyAttributes(ctx, rt.Key.URI())
			if err != nil {
				t.Fatalf("KeyAttributes: %v", err)
			}
			if !attrs.Sensitive || attrs.Extractable || !attrs.NeverExtractable || !attrs.AlwaysSensitive {
				t.Errorf("CA key attributes = %+v, want sensitive, not extractable, never extractable, always sensitive", attrs)
			}
			if string(rt.Key.Type()) != kt {
				t.Errorf("key type = %s, want %s", rt.Key.Type(), kt)
			}

			res, err := rt.Service.IssueProfile(ctx, leafOrder(t, "host1.example.test", enrollsvc.Meta{Requester: "test", Account: "host1$", Template: "Machine"}))
			if err != nil {
				t.Fatalf("IssueProfile: %v", err)
			}
			roots := x509.NewCertPool()
			roots.AddCert(rt.CACert)
			if _, err := res.Certificate.Verify(x509.VerifyOptions{Roots: roots, DNSName: "host1.example.test"}); err != nil {
				t.Errorf("crypto/x509 verify: %v", err)
			}
			opensslVerify(t, filepath.Join(dir, config.CACertFile), res.Certificate)

			serial := certutil.SerialString(res.Certificate.SerialNumber)
			sc, err := rt.Store.GetCertificate(ctx, serial)
			if err != nil || !bytes.Equal(sc.DER, res.Certificate.Raw) || sc.Account != "host1$" || sc.RequestID != res.RequestID {
				t.Errorf("stored certificate = %+v, %v; want the issued one for host1$", sc, err)
			}
			req, err := rt.Store.GetRequest(ctx, res.RequestID)
			if err != nil || req.State != store.RequestIssued || req.Serial != serial {
				t.Errorf("request = %+v, %v; want issued with serial %s", req, err, serial)
			}
			// An audit event before and after the signature, both naming the serial.
			for _, id := range []events.ID{events.SigningStarted, events.CertificateIssued} {
				evs, err := rt.Store.ListEvents(ctx, store.EventFilter{ID: int(id), Limit: 1000})
				if err != nil {
					t.Fatal(err)
				}
				found := false
				for _, e := range evs {
					found = found || e.Fields["serial"] == serial
				}
				if !found {
					t.Errorf("no event %d for serial %s in %+v", id, serial, evs)
				}
			}
		})
	}
}

func opensslVerify(t *testing.T, caFile string, c *x509.Certificate) {
	t.Helper()
	leaf := filepath.Join(t.TempDir(), "leaf.pem")
	if err := os.WriteFile(leaf, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("openssl", "verify", "-x509_strict", "-CAfile", caFile, leaf).CombinedOutput()
	if err != nil || !strings.Contains(string(out), ": OK") {
		t.Errorf("openssl verify: %v\n%s", err, out)
	}
}

// 10,000 issuances from 8 goroutines: 10,000 distinct serials, every one in the store. Under the
// race detector 2,000 (the same goroutines racing on the same paths, a fifth of the time).
func TestTenThousandIssuancesDistinctAndStored(t *testing.T) {
	dir := newDataDir(t, "ecdsa-p256")
	rt := openRuntime(t, dir)
	ctx := context.Background()
	before, err := rt.Store.CountCertificates(ctx)
	if err != nil {
		t.Fatal(err)
	}
	const workers = 8
	each := 1250
	if raceDetector {
		each = 250
	}
	order := leafOrder(t, "load.example.test", enrollsvc.Meta{Requester: "test", Account: "load", Template: "Load"})
	serials := make([][]string, workers)
	errc := make(chan error, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range each {
				res, err := rt.Service.IssueProfile(ctx, order)
				if err != nil {
					errc <- err
					return
				}
				serials[w] = append(serials[w], certutil.SerialString(res.Certificate.SerialNumber))
			}
		}()
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Fatalf("IssueProfile: %v", err)
	}
	seen := make(map[string]bool, workers*each)
	for _, list := range serials {
		for _, s := range list {
			if seen[s] {
				t.Errorf("serial %s issued twice", s)
			}
			seen[s] = true
		}
	}
	if len(seen) != workers*each {
		t.Fatalf("%d distinct serials, want %d", len(seen), workers*each)
	}
	after, err := rt.Store.CountCertificates(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if after-before != int64(workers*each) {
		t.Errorf("store has %d new certificates, want %d", after-before, workers*each)
	}
	stored, err := rt.Store.ListCertificates(ctx, store.CertFilter{Account: "load", Limit: 100000})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range stored {
		delete(seen, c.Serial)
	}
	if len(seen) != 0 {
		t.Errorf("%d issued serials are missing from the store", len(seen))
	}
}

// treeDigest is every file's path, mode and content under dir (but the token's internal
// files), to prove nothing changed.
func treeDigest(t *testing.T, dir string) string {
	t.Helper()
	var b strings.Builder
	err := filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		// The token's own files are the HSM's business: a token counts failed logins (SoftHSM
		// in token.object, as a hardware HSM does internally), and that must not be undone.
		if strings.Contains(p, string(filepath.Separator)+config.SoftHSMTokens+string(filepath.Separator)) {
			return nil
		}
		b.WriteString(p + " " + fi.Mode().String() + "\n")
		if fi.Mode().IsRegular() {
			data, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			b.Write(data)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return b.String()
}

func TestInitRefusesAndChangesNothing(t *testing.T) {
	dir := newDataDir(t, "ecdsa-p256")
	orig := treeDigest(t, dir)
	_, err := ceremony.Init(context.Background(), ceremony.InitOptions{Dir: dir, CAName: "Again", Logger: quiet})
	if err == nil || !strings.Contains(err.Error(), "refusing to overwrite") {
		t.Errorf("second Init = %v, want a refusal to overwrite", err)
	}
	if treeDigest(t, dir) != orig {
		t.Error("second Init changed the data directory")
	}

	parent := t.TempDir()
	for _, tc := range []struct {
		name string
		o    ceremony.InitOptions
		want string
	}{
		{"unknown key type", ceremony.InitOptions{CAName: "X", KeyType: "dsa-1024"}, "dsa-1024"},
		{"no CA name", ceremony.InitOptions{KeyType: "ecdsa-p256"}, "--ca-name"},
		{"bad listen address", ceremony.InitOptions{CAName: "X", APIListen: "nowhere"}, "--api-listen"},
		{"missing PKCS#11 module", ceremony.InitOptions{CAName: "X", Module: "/nonexistent/libpkcs11.so"}, "/nonexistent/libpkcs11.so"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.o.Dir = filepath.Join(parent, strings.ReplaceAll(tc.name, " ", "-"))
			tc.o.Logger = quiet
			_, err := ceremony.Init(context.Background(), tc.o)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Init = %v, want an error mentioning %q", err, tc.want)
			}
			if _, serr := os.Stat(tc.o.Dir); !errors.Is(serr, os.ErrNotExist) {
				t.Errorf("failed Init left %s behind", tc.o.Dir)
			}
		})
	}
	if entries, _ := os.ReadDir(parent); len(entries) != 0 {
		t.Errorf("failed Inits left %d entries (staging directories?) in %s", len(entries), parent)
	}
}

func TestOpenRejectsBrokenDataDir(t *testing.T) {
	good := newDataDir(t, "ecdsa-p256")
	other := newDataDir(t, "ecdsa-p256")
	copyDir := func(t *testing.T) string {
		d := filepath.Join(t.TempDir(), "var")
		if out, err := exec.Command("cp", "-a", good, d).CombinedOutput(); err != nil {
			t.Fatalf("cp: %v %s", err, out)
		}
		// The copy's SoftHSM configuration must name the copy's tokens.
		if err := softhsm.WriteConfig(filepath.Join(d, config.SoftHSMConf), filepath.Join(d, config.SoftHSMTokens)); err != nil {
			t.Fatal(err)
		}
		return d
	}
	pin, err := os.ReadFile(filepath.Join(good, config.PINFile))
	if err != nil {
		t.Fatal(err)
	}
	editConfig := func(f func(c *config.Config)) func(t *testing.T, d string) {
		return func(t *testing.T, d string) {
			c, err := config.Load(d)
			if err != nil {
				t.Fatal(err)
			}
			f(c)
			if err := c.Write(d); err != nil {
				t.Fatal(err)
			}
		}
	}
	write := func(name string, data []byte) func(t *testing.T, d string) {
		return func(t *testing.T, d string) {
			if err := os.WriteFile(filepath.Join(d, name), data, 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}
	otherCA, err := os.ReadFile(filepath.Join(other, config.CACertFile))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		break_ func(t *testing.T, d string)
		want   string
	}{
		{"wrong PIN", write(config.PINFile, []byte("000000wrong\n")), "PIN"},
		{"missing token", editConfig(func(c *config.Config) { c.HSM.TokenLabel = "no-such-token"; c.HSM.TokenSerial = "" }), "no-such-token"},
		{"missing key", editConfig(func(c *config.Config) { c.HSM.KeyURI = "pkcs11:object=no-such-key;id=%77" }), "no-such-key"},
		{"corrupt config", write(config.File, []byte("{\"version\": 1, \"ca_name\": ")), "corrupt configuration"},
		{"corrupt CA certificate", write(config.CACertFile, []byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")), "corrupt CA certificate"},
		{"CA certificate of another key", write(config.CACertFile, otherCA), "does not match"},
		{"corrupt store", write(config.StoreFile, bytes.Repeat([]byte("garbage!"), 4096)), config.StoreFile},
		{"missing data directory", func(t *testing.T, d string) { os.RemoveAll(d) }, "no configuration"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := copyDir(t)
			tc.break_(t, d)
			var before string
			if _, err := os.Stat(d); err == nil {
				before = treeDigest(t, d)
			}
			rt, err := daemon.Open(context.Background(), d, quiet)
			if err == nil {
				rt.Close()
				t.Fatalf("Open succeeded, want an error mentioning %q", tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Open error = %v, want it to mention %q", err, tc.want)
			}
			if strings.Contains(err.Error(), strings.TrimSpace(string(pin))) {
				t.Errorf("Open error %q contains the PIN", err)
			}
			if before != "" && treeDigest(t, d) != before {
				t.Error("a failed Open changed the data directory")
			}
		})
	}
}
