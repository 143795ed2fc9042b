//go:build cgo

package hsm_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/sha512"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/pkcs11"

	"github.com/enrollment-appliance/aeappliance/hsm"
	"github.com/enrollment-appliance/aeappliance/hsm/hsmtest"
)

// logBuffer collects the store's log so tests can check that no PIN is in it.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// open opens a KeyStore on cfg, closes it at cleanup and checks that the log never
// contains the PIN.
func open(t testing.TB, cfg hsm.Config) (*hsm.KeyStore, *logBuffer) {
	t.Helper()
	logs := &logBuffer{}
	cfg.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	ks, err := hsm.Open(context.Background(), cfg)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() {
		if err := ks.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		if strings.Contains(logs.String(), cfg.PIN) {
			t.Errorf("the log contains the PIN:\n%s", logs)
		}
	})
	return ks, logs
}

// checkSign signs with key and verifies the signature with its public key.
func checkSign(t testing.TB, key crypto.Signer, msg string) {
	t.Helper()
	h := sha256.Sum256([]byte(msg))
	switch pub := key.Public().(type) {
	case *ecdsa.PublicKey:
		sig, err := key.Sign(nil, h[:], crypto.SHA256)
		if err != nil {
			t.Fatalf("Sign: %v", err)
		}
		if !ecdsa.VerifyASN1(pub, h[:], sig) {
			t.Fatalf("ECDSA signature does not verify")
		}
	case *rsa.PublicKey:
		sig, err := key.Sign(nil, h[:], crypto.SHA256)
		if err != nil {
			t.Fatalf("Sign PKCS#1 v1.5: %v", err)
		}
		if err := rsa.VerifyPKCS1v15(pub, crypto.SHA256, h[:], sig); err != nil {
			t.Fatalf("VerifyPKCS1v15: %v", err)
		}
		h384 := sha512.Sum384([]byte(msg))
		for _, salt := range []int{rsa.PSSSaltLengthEqualsHash, rsa.PSSSaltLengthAuto, 20} {
			opts := &rsa.PSSOptions{Hash: crypto.SHA384, SaltLength: salt}
			sig, err := key.Sign(nil, h384[:], opts)
			if err != nil {
				t.Fatalf("Sign PSS (salt %d): %v", salt, err)
			}
			if err := rsa.VerifyPSS(pub, crypto.SHA384, h384[:], sig, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthAuto}); err != nil {
				t.Fatalf("VerifyPSS (salt %d): %v", salt, err)
			}
		}
	default:
		t.Fatalf("unexpected public key %T", pub)
	}
}

func TestGenerateKeyTypes(t *testing.T) {
	cfg := hsmtest.NewToken(t)
	ks, _ := open(t, cfg)
	ctx := context.Background()
	for i, kt := range hsm.KeyTypes() {
		label := "ca-" + string(kt)
		key, err := ks.GenerateKey(ctx, kt, label, []byte{0xca, byte(i)})
		if err != nil {
			t.Fatalf("GenerateKey(%s): %v", kt, err)
		}
		if key.Type() != kt {
			t.Errorf("GenerateKey(%s).Type() = %s", kt, key.Type())
		}
		u := key.URI()
		if u.Token != cfg.TokenLabel || u.Object != label || !bytes.Equal(u.ID, []byte{0xca, byte(i)}) || u.Type != "private" || u.Serial == "" {
			t.Errorf("GenerateKey(%s).URI() = %s", kt, u)
		}
		checkSign(t, key, "hello "+label)

		attrs, err := ks.KeyAttributes(ctx, u)
		if err != nil {
			t.Fatalf("KeyAttributes(%s): %v", u, err)
		}
		want := hsm.KeyAttributes{Sensitive: true, Extractable: false, AlwaysSensitive: true, NeverExtractable: true,
			Private: true, Token: true, KeyType: "RSA"}
		if strings.HasPrefix(string(kt), "ecdsa") {
			want.KeyType = "EC"
		}
		if attrs != want {
			t.Errorf("KeyAttributes(%s) = %+v, want %+v", kt, attrs, want)
		}
	}
	checkPKCS11Tool(t, cfg, len(hsm.KeyTypes()))
}

// checkPKCS11Tool asks OpenSC's pkcs11-tool, a separate process with its own view
// of the token, how it sees the private keys.
func checkPKCS11Tool(t *testing.T, cfg hsm.Config, wantKeys int) {
	tool, err := exec.LookPath("pkcs11-tool")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("pkcs11-tool (opensc) is missing: %v", err)
		}
		t.Skipf("pkcs11-tool (opensc) is missing; `make deps` installs it")
	}
	cmd := exec.Command(tool, "--module", cfg.ModulePath, "--token-label", cfg.TokenLabel,
		"--login", "--pin", "env:HSM_TEST_PKCS11_PIN", "--list-objects", "--type", "privkey")
	cmd.Env = append(os.Environ(), "HSM_TEST_PKCS11_PIN="+cfg.PIN)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("pkcs11-tool: %v\n%s", err, out)
	}
	t.Logf("pkcs11-tool --list-objects --type privkey:\n%s", out)
	objects := strings.Split(string(out), "Private Key Object")[1:]
	if len(objects) != wantKeys {
		t.Fatalf("pkcs11-tool lists %d private keys, want %d:\n%s", len(objects), wantKeys, out)
	}
	for _, o := range objects {
		var access, usage string
		for _, line := range strings.Split(o, "\n") {
			if v, ok := strings.CutPrefix(strings.TrimSpace(line), "Access:"); ok {
				access = v
			}
			if v, ok := strings.CutPrefix(strings.TrimSpace(line), "Usage:"); ok {
				usage = strings.TrimSpace(v)
			}
		}
		if usage != "sign" {
			t.Errorf("pkcs11-tool: key usage is %q, want only sign:\n%s", usage, o)
		}
		for _, flag := range []string{"sensitive", "always sensitive", "never extract"} {
			if !strings.Contains(access, flag) {
				t.Errorf("pkcs11-tool: key lacks %q:\n%s", flag, o)
			}
		}
		if strings.Contains(strings.ReplaceAll(access, "never extract", ""), "extract") {
			t.Errorf("pkcs11-tool: key is extractable:\n%s", o)
		}
	}
}

func TestGenerateKeyRefusesDuplicates(t *testing.T) {
	ks, _ := open(t, hsmtest.NewToken(t))
	ctx := context.Background()
	if _, err := ks.GenerateKey(ctx, hsm.ECDSAP256, "ca", []byte{1}); err != nil {
		t.Fatal(err)
	}
	if _, err := ks.GenerateKey(ctx, hsm.ECDSAP256, "other", []byte{1}); err == nil || !strings.Contains(err.Error(), "id 01") {
		t.Errorf("GenerateKey with a used id: error = %v", err)
	}
	if _, err := ks.GenerateKey(ctx, hsm.ECDSAP256, "ca", []byte{2}); err == nil || !strings.Contains(err.Error(), `labelled "ca"`) {
		t.Errorf("GenerateKey with a used label: error = %v", err)
	}
	if _, err := ks.GenerateKey(ctx, hsm.KeyType("ed25519"), "x", nil); err == nil || !strings.Contains(err.Error(), "ecdsa-p256") {
		t.Errorf("GenerateKey(ed25519): error = %v, want one naming the valid types", err)
	}
	key, err := ks.GenerateKey(ctx, hsm.ECDSAP384, "random-id", nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(key.URI().ID) != 16 {
		t.Errorf("GenerateKey with no id made id %x, want 16 random bytes", key.URI().ID)
	}
}

func TestFindKey(t *testing.T) {
	cfg := hsmtest.NewToken(t)
	ks, _ := open(t, cfg)
	ctx := context.Background()
	gen, err := ks.GenerateKey(ctx, hsm.ECDSAP256, "issuing-ca", []byte{0x01, 0x02})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ks.GenerateKey(ctx, hsm.RSA2048, "ocsp", []byte{0x03}); err != nil {
		t.Fatal(err)
	}
	info := ks.TokenInfo()
	for _, s := range []string{
		"pkcs11:id=%01%02",
		"pkcs11:object=issuing-ca",
		"pkcs11:object=issuing-ca;id=%01%02;type=private",
		"pkcs11:token=" + cfg.TokenLabel + ";object=issuing-ca",
		"pkcs11:serial=" + info.Serial + ";id=%01%02",
	} {
		u, err := hsm.ParseURI(s)
		if err != nil {
			t.Fatal(err)
		}
		key, err := ks.FindKey(ctx, u)
		if err != nil {
			t.Errorf("FindKey(%s): %v", s, err)
			continue
		}
		if !key.Public().(*ecdsa.PublicKey).Equal(gen.Public()) {
			t.Errorf("FindKey(%s) found another key", s)
		}
		if got := key.URI().String(); got != gen.URI().String() {
			t.Errorf("FindKey(%s).URI() = %s, want %s", s, got, gen.URI())
		}
		checkSign(t, key, "found")
	}
	for _, tt := range []struct {
		uri     string
		wantErr error
	}{
		{"pkcs11:id=%09", hsm.ErrKeyNotFound},
		{"pkcs11:object=nope", hsm.ErrKeyNotFound},
		{"pkcs11:object=ocsp;id=%01%02", hsm.ErrKeyNotFound},
		{"pkcs11:token=other-token;id=%01%02", hsm.ErrTokenNotFound},
		{"pkcs11:serial=0000;id=%01%02", hsm.ErrTokenNotFound},
	} {
		u, _ := hsm.ParseURI(tt.uri)
		if _, err := ks.FindKey(ctx, u); !errors.Is(err, tt.wantErr) {
			t.Errorf("FindKey(%s) error = %v, want %v", tt.uri, err, tt.wantErr)
		}
	}
	for _, s := range []string{"pkcs11:", "pkcs11:token=x", "pkcs11:object=issuing-ca;type=cert"} {
		u, _ := hsm.ParseURI(s)
		if _, err := ks.FindKey(ctx, u); err == nil {
			t.Errorf("FindKey(%s) succeeded", s)
		}
	}
	if _, err := ks.KeyAttributes(ctx, hsm.URI{Object: "nope"}); !errors.Is(err, hsm.ErrKeyNotFound) {
		t.Errorf("KeyAttributes(nope) error = %v, want ErrKeyNotFound", err)
	}
}

func TestOpenErrors(t *testing.T) {
	cfg := hsmtest.NewToken(t)
	ctx := context.Background()

	bad := cfg
	bad.PIN = "wrong-pin-4711"
	_, err := hsm.Open(ctx, bad)
	if !errors.Is(err, hsm.ErrPINIncorrect) || strings.Contains(err.Error(), bad.PIN) || strings.Contains(err.Error(), cfg.PIN) {
		t.Errorf("Open with a wrong PIN: error = %v, want ErrPINIncorrect without the PIN", err)
	}

	missing := cfg
	missing.TokenLabel = "no-such-token"
	if _, err := hsm.Open(ctx, missing); !errors.Is(err, hsm.ErrTokenNotFound) || !strings.Contains(err.Error(), "no-such-token") {
		t.Errorf("Open with a missing token: error = %v, want ErrTokenNotFound naming it", err)
	}
	missing = cfg
	missing.TokenLabel, missing.TokenSerial = "", "0123456789abcdef"
	if _, err := hsm.Open(ctx, missing); !errors.Is(err, hsm.ErrTokenNotFound) || !strings.Contains(err.Error(), "0123456789abcdef") {
		t.Errorf("Open with a missing serial: error = %v, want ErrTokenNotFound naming it", err)
	}

	nomod := cfg
	nomod.ModulePath = "/nonexistent/libpkcs11.so"
	if _, err := hsm.Open(ctx, nomod); !errors.Is(err, hsm.ErrModule) || !strings.Contains(err.Error(), nomod.ModulePath) {
		t.Errorf("Open with a missing module: error = %v, want ErrModule naming the path", err)
	}
	notlib := cfg
	notlib.ModulePath = os.Args[0] // exists, but is no PKCS#11 module
	if _, err := hsm.Open(ctx, notlib); !errors.Is(err, hsm.ErrModule) {
		t.Errorf("Open with a non-module: error = %v, want ErrModule", err)
	}

	// With a store open (the library is initialised and the token logged in),
	// a wrong PIN is still refused and the open store keeps working.
	ks, _ := open(t, cfg)
	key, err := ks.GenerateKey(ctx, hsm.ECDSAP256, "k", []byte{1})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := hsm.Open(ctx, bad); !errors.Is(err, hsm.ErrPINIncorrect) {
		t.Errorf("second Open with a wrong PIN: error = %v, want ErrPINIncorrect", err)
	}
	if _, err := hsm.Open(ctx, missing); !errors.Is(err, hsm.ErrTokenNotFound) {
		t.Errorf("second Open with a missing token: error = %v, want ErrTokenNotFound", err)
	}
	checkSign(t, key, "still works")

	// By serial, with the label checked.
	bySerial := cfg
	bySerial.TokenSerial = ks.TokenInfo().Serial
	ks2, _ := open(t, bySerial)
	if got := ks2.TokenInfo(); got.Label != cfg.TokenLabel || got.Manufacturer == "" || got.Model == "" {
		t.Errorf("TokenInfo() = %+v", got)
	}
	key2, err := ks2.FindKey(ctx, hsm.URI{ID: []byte{1}})
	if err != nil {
		t.Fatal(err)
	}
	checkSign(t, key2, "second store")
}

func TestConcurrentSign(t *testing.T) {
	cfg := hsmtest.NewToken(t)
	cfg.Sessions = 4
	ks, _ := open(t, cfg)
	ctx := context.Background()
	for _, kt := range []hsm.KeyType{hsm.ECDSAP256, hsm.RSA2048} {
		key, err := ks.GenerateKey(ctx, kt, "k-"+string(kt), nil)
		if err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		errs := make(chan error, 8)
		for g := 0; g < 8; g++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; i < 200; i++ {
					h := sha256.Sum256([]byte(fmt.Sprintf("%d/%d", g, i)))
					sig, err := key.SignContext(ctx, h[:], crypto.SHA256)
					if err != nil {
						errs <- err
						return
					}
					if i%50 == 0 && !verify(key.Public(), h[:], sig) {
						errs <- fmt.Errorf("signature %d/%d does not verify", g, i)
						return
					}
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Errorf("%s: %v", kt, err)
		}
	}
}

func verify(pub crypto.PublicKey, digest, sig []byte) bool {
	switch p := pub.(type) {
	case *ecdsa.PublicKey:
		return ecdsa.VerifyASN1(p, digest, sig)
	case *rsa.PublicKey:
		return rsa.VerifyPKCS1v15(p, crypto.SHA256, digest, sig) == nil
	}
	return false
}

// killSessions closes every session on the token from outside the KeyStore, as a
// HSM restart or a network drop would: through a second raw handle on the module.
func killSessions(t *testing.T, cfg hsm.Config) {
	t.Helper()
	p := pkcs11.New(cfg.ModulePath)
	if p == nil {
		t.Fatal("pkcs11.New failed")
	}
	defer p.Destroy() // never Finalize: the library belongs to the KeyStore
	if err := p.Initialize(); err != nil && err != pkcs11.Error(pkcs11.CKR_CRYPTOKI_ALREADY_INITIALIZED) {
		t.Fatalf("Initialize: %v", err)
	}
	slots, err := p.GetSlotList(true)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range slots {
		if ti, err := p.GetTokenInfo(s); err == nil && ti.Label == cfg.TokenLabel {
			if err := p.CloseAllSessions(s); err != nil {
				t.Fatalf("CloseAllSessions: %v", err)
			}
			return
		}
	}
	t.Fatalf("token %q not found", cfg.TokenLabel)
}

func TestRecoveryOnSign(t *testing.T) {
	cfg := hsmtest.NewToken(t)
	cfg.HealthInterval = -1 // only the signature may notice
	ks, logs := open(t, cfg)
	ctx := context.Background()
	key, err := ks.GenerateKey(ctx, hsm.ECDSAP256, "ca", []byte{7})
	if err != nil {
		t.Fatal(err)
	}
	rsaKey, err := ks.GenerateKey(ctx, hsm.RSA2048, "rsa", []byte{8})
	if err != nil {
		t.Fatal(err)
	}
	checkSign(t, key, "before")

	killSessions(t, cfg)
	checkSign(t, key, "after") // reopens the token and retries
	checkSign(t, rsaKey, "after, other key")
	if !strings.Contains(logs.String(), "reopened") {
		t.Errorf("no reopen in the log:\n%s", logs)
	}
	if err := ks.Health(ctx); err != nil {
		t.Errorf("Health after recovery: %v", err)
	}

	// Many signers failing together cause one reopen, not many.
	killSessions(t, cfg)
	before := strings.Count(logs.String(), "token reopened")
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 20; i++ {
				h := sha256.Sum256([]byte("x"))
				if _, err := key.Sign(nil, h[:], crypto.SHA256); err != nil {
					t.Errorf("Sign after killing sessions: %v", err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if n := strings.Count(logs.String(), "token reopened") - before; n != 1 {
		t.Errorf("%d reopens after one failure, want 1:\n%s", n, logs)
	}
	attrs, err := ks.KeyAttributes(ctx, key.URI())
	if err != nil || !attrs.NeverExtractable {
		t.Errorf("KeyAttributes after recovery = %+v, %v", attrs, err)
	}
}

func TestRecoveryByHealth(t *testing.T) {
	cfg := hsmtest.NewToken(t)
	cfg.HealthInterval = -1
	ks, logs := open(t, cfg)
	ctx := context.Background()
	key, err := ks.GenerateKey(ctx, hsm.ECDSAP384, "ca", []byte{7})
	if err != nil {
		t.Fatal(err)
	}
	if err := ks.Health(ctx); err != nil {
		t.Fatalf("Health: %v", err)
	}
	killSessions(t, cfg)
	if err := ks.Health(ctx); err != nil {
		t.Fatalf("Health after killing sessions: %v", err)
	}
	if !strings.Contains(logs.String(), "reopened") {
		t.Errorf("Health did not reopen the token:\n%s", logs)
	}
	checkSign(t, key, "after health")
}

func TestHealthLoop(t *testing.T) {
	cfg := hsmtest.NewToken(t)
	cfg.HealthInterval = 50 * time.Millisecond
	ks, logs := open(t, cfg)
	if _, err := ks.GenerateKey(context.Background(), hsm.ECDSAP256, "ca", []byte{7}); err != nil {
		t.Fatal(err)
	}
	killSessions(t, cfg)
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(logs.String(), "token reopened") {
		if time.Now().After(deadline) {
			t.Fatalf("the health check did not reopen the token:\n%s", logs)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestClosed(t *testing.T) {
	cfg := hsmtest.NewToken(t)
	ks, err := hsm.Open(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	key, err := ks.GenerateKey(context.Background(), hsm.ECDSAP256, "ca", nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := ks.Close(); err != nil {
		t.Fatal(err)
	}
	if err := ks.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	h := sha256.Sum256(nil)
	if _, err := key.Sign(nil, h[:], crypto.SHA256); !errors.Is(err, hsm.ErrClosed) {
		t.Errorf("Sign after Close: error = %v, want ErrClosed", err)
	}
	if err := ks.Health(context.Background()); !errors.Is(err, hsm.ErrClosed) {
		t.Errorf("Health after Close: error = %v, want ErrClosed", err)
	}
}

func BenchmarkSign(b *testing.B) {
	for _, kt := range []hsm.KeyType{hsm.ECDSAP256, hsm.RSA2048} {
		b.Run(string(kt), func(b *testing.B) {
			cfg := hsmtest.NewToken(b)
			cfg.HealthInterval = -1
			ks, _ := open(b, cfg)
			key, err := ks.GenerateKey(context.Background(), kt, "bench", nil)
			if err != nil {
				b.Fatal(err)
			}
			h := sha256.Sum256([]byte("benchmark"))
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, err := key.Sign(nil, h[:], crypto.SHA256); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}

// InitToken works while a KeyStore has the library initialised, and both tokens
// can be used side by side.
func TestInitTokenWhileOpen(t *testing.T) {
	cfg := hsmtest.NewToken(t)
	ks, _ := open(t, cfg)
	ctx := context.Background()
	k1, err := ks.GenerateKey(ctx, hsm.ECDSAP256, "one", nil)
	if err != nil {
		t.Fatal(err)
	}
	cfg2 := cfg
	cfg2.TokenLabel, cfg2.PIN = cfg.TokenLabel+"-2", "second-user-pin"
	serial, err := hsm.InitToken(ctx, cfg.ModulePath, cfg2.TokenLabel, "second-so-pin", cfg2.PIN)
	if err != nil {
		t.Fatalf("InitToken with a store open: %v", err)
	}
	if _, err := hsm.InitToken(ctx, cfg.ModulePath, strings.Repeat("x", 33), "1234", "5678"); err == nil {
		t.Error("InitToken with a 33-byte label succeeded")
	}
	if _, err := hsm.InitToken(ctx, "/nonexistent/lib.so", "x", "1234", "5678"); !errors.Is(err, hsm.ErrModule) {
		t.Errorf("InitToken with a missing module: error = %v, want ErrModule", err)
	}
	ks2, _ := open(t, cfg2)
	if got := ks2.TokenInfo().Serial; got != serial {
		t.Errorf("second token serial = %q, InitToken said %q", got, serial)
	}
	k2, err := ks2.GenerateKey(ctx, hsm.ECDSAP256, "two", nil)
	if err != nil {
		t.Fatal(err)
	}
	checkSign(t, k1, "one")
	checkSign(t, k2, "two")
	if _, err := ks2.FindKey(ctx, hsm.URI{Object: "one"}); !errors.Is(err, hsm.ErrKeyNotFound) {
		t.Errorf("FindKey on the other token: error = %v, want ErrKeyNotFound", err)
	}
}

// A decryption key (the SCEP RA's encryption key) decrypts what clients encrypt to it, in the
// token, and the token refuses its signatures; a signing key (a CA's, the RA's signing key)
// refuses to decrypt. No key does both (RFC 8894 §3.5.1).
func TestDecrypt(t *testing.T) {
	cfg := hsmtest.NewToken(t)
	ks, _ := open(t, cfg)
	ctx := context.Background()
	enc, err := ks.GenerateKeyFor(ctx, hsm.RSA2048, "scep-ra-encrypt", nil, hsm.UsageDecrypt)
	if err != nil {
		t.Fatal(err)
	}
	secret := []byte("a 32-byte AES key for the reply!")
	ct, err := rsa.EncryptPKCS1v15(rand.Reader, enc.Public().(*rsa.PublicKey), secret)
	if err != nil {
		t.Fatal(err)
	}
	var d crypto.Decrypter = enc
	if got, err := d.Decrypt(nil, ct, nil); err != nil || !bytes.Equal(got, secret) {
		t.Errorf("Decrypt = %q, %v; want the secret", got, err)
	}
	h := sha256.Sum256([]byte("a forged CertRep"))
	if _, err := enc.Sign(nil, h[:], crypto.SHA256); !errors.Is(err, pkcs11.Error(pkcs11.CKR_KEY_FUNCTION_NOT_PERMITTED)) {
		t.Errorf("the decryption key signed: error = %v, want CKR_KEY_FUNCTION_NOT_PERMITTED from the token", err)
	}
	if attrs, err := ks.KeyAttributes(ctx, enc.URI()); err != nil || !attrs.Sensitive || attrs.Extractable {
		t.Errorf("RA key attributes = %+v, %v; want sensitive, not extractable", attrs, err)
	}
	// Found again (as after a restart), it is still decrypt-only, and the health check, which
	// signs with a key it knows, does not pick it.
	if err := ks.Close(); err != nil {
		t.Fatal(err)
	}
	ks, _ = open(t, cfg)
	found, err := ks.FindKey(ctx, hsm.URI{Object: "scep-ra-encrypt"})
	if err != nil {
		t.Fatal(err)
	}
	if err := ks.Health(ctx); err != nil {
		t.Errorf("Health with only a decryption key known: %v", err)
	}
	if _, err := found.Sign(nil, h[:], crypto.SHA256); err == nil {
		t.Error("the decryption key, found again, signed")
	}

	for _, kind := range []string{"ca", "scep-ra-sign"} {
		sig, err := ks.GenerateKeyFor(ctx, hsm.RSA2048, kind, nil, hsm.UsageSign)
		if err != nil {
			t.Fatal(err)
		}
		checkSign(t, sig, kind+" signs")
		ct, _ = rsa.EncryptPKCS1v15(rand.Reader, sig.Public().(*rsa.PublicKey), secret)
		if _, err := sig.Decrypt(nil, ct, nil); !errors.Is(err, pkcs11.Error(pkcs11.CKR_KEY_FUNCTION_NOT_PERMITTED)) {
			t.Errorf("the sign-only %s key decrypted: error = %v, want CKR_KEY_FUNCTION_NOT_PERMITTED from the token", kind, err)
		}
	}
	if _, err := ks.GenerateKeyFor(ctx, hsm.ECDSAP256, "ec-ra", nil, hsm.UsageDecrypt); err == nil {
		t.Error("an ECDSA key was generated for decryption")
	}
}

// DestroyKey takes a key pair out of the token: it is not found again, the Key stops working,
// its label is free, and the other keys and the health check are unaffected.
func TestDestroyKey(t *testing.T) {
	ks, _ := open(t, hsmtest.NewToken(t))
	ctx := context.Background()
	old, err := ks.GenerateKey(ctx, hsm.RSA2048, "retired", nil)
	if err != nil {
		t.Fatal(err)
	}
	keep, err := ks.GenerateKey(ctx, hsm.ECDSAP256, "kept", nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := ks.DestroyKey(ctx, hsm.URI{Object: "retired"}); err != nil {
		t.Fatal(err)
	}
	if _, err := ks.FindKey(ctx, hsm.URI{Object: "retired"}); !errors.Is(err, hsm.ErrKeyNotFound) {
		t.Errorf("FindKey after DestroyKey: error = %v, want ErrKeyNotFound", err)
	}
	h := sha256.Sum256([]byte("x"))
	if _, err := old.Sign(nil, h[:], crypto.SHA256); err == nil {
		t.Error("a destroyed key signed")
	}
	if err := ks.DestroyKey(ctx, hsm.URI{Object: "retired"}); !errors.Is(err, hsm.ErrKeyNotFound) {
		t.Errorf("DestroyKey twice: error = %v, want ErrKeyNotFound", err)
	}
	if _, err := ks.GenerateKey(ctx, hsm.RSA2048, "retired", nil); err != nil {
		t.Errorf("the destroyed key's label is not free: %v", err)
	}
	checkSign(t, keep, "the other key still signs")
	if err := ks.Health(ctx); err != nil {
		t.Errorf("Health after DestroyKey: %v", err)
	}
}
