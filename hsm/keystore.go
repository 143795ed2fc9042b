//go:build cgo

package hsm

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ThalesIgnite/crypto11"
	"github.com/miekg/pkcs11"
)

// reopenBackoff is the shortest time between two failed attempts to reopen the
// token, so that a dead HSM is not hammered by every signature.
const reopenBackoff = time.Second

// KeyStore is one open token of one PKCS#11 module. It is safe for concurrent use.
type KeyStore struct {
	cfg  Config
	path string // canonical module path
	log  *slog.Logger
	raw  *pkcs11.Ctx // raw handle on the (already initialised) library for object searches

	cur atomic.Pointer[generation]

	reopenMu    sync.Mutex // serialises recovery
	lastFailure time.Time  // of the last failed reopen, under reopenMu
	lastErr     error      // under reopenMu

	genMu sync.Mutex // serialises GenerateKey

	keysMu sync.Mutex
	keys   []*Key // every Key handed out, re-found after a reopen

	// observer, when set, is told of every private-key operation (SetObserver).
	observer atomic.Pointer[Observer]
	// inUse counts operations in the token now: the sessions of the pool taken.
	inUse atomic.Int64

	closed   atomic.Bool
	stop     chan struct{}
	bg       sync.WaitGroup
	closeErr error
	once     sync.Once
}

// generation is one crypto11 context. Keys cache their signer per generation;
// a reopen installs a new generation and the old one is closed.
type generation struct {
	n       uint64
	ctx     *crypto11.Context
	slot    uint
	info    TokenInfo
	signers sync.Map // key ident → crypto11.Signer
}

// Open validates cfg, loads the module, finds the token, logs in and starts the
// health check. Close releases it.
func Open(ctx context.Context, cfg Config) (*KeyStore, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	path, err := canonicalModule(cfg.ModulePath)
	if err != nil {
		return nil, err
	}
	c, si, err := openContext(&cfg, path)
	if err != nil {
		return nil, err
	}
	raw := pkcs11.New(path)
	if raw == nil {
		_ = closeContext(c, path, si.info.Serial)
		return nil, fmt.Errorf("hsm: cannot load PKCS#11 module %q: %w", path, ErrModule)
	}
	k := &KeyStore{cfg: cfg, path: path, log: cfg.Logger, raw: raw, stop: make(chan struct{})}
	k.cur.Store(&generation{n: 1, ctx: c, slot: si.slot, info: si.info})
	if cfg.HealthInterval > 0 {
		k.bg.Add(1)
		go k.healthLoop(cfg.HealthInterval)
	}
	k.log.Info("hsm: token open", "module", path, "token", si.info.Label, "serial", si.info.Serial,
		"sessions", cfg.Sessions)
	return k, nil
}

// TokenInfo describes the open token.
func (k *KeyStore) TokenInfo() TokenInfo { return k.cur.Load().info }

// Close stops the health check and closes the token. Keys stop working.
func (k *KeyStore) Close() error {
	k.once.Do(func() {
		k.closed.Store(true)
		close(k.stop)
		k.reopenMu.Lock() // wait for a reopen in progress
		k.reopenMu.Unlock()
		k.bg.Wait()
		g := k.cur.Load()
		k.closeErr = closeContext(g.ctx, k.path, g.info.Serial)
		k.raw.Destroy()
	})
	return k.closeErr
}

// do runs f on the current generation. If f fails with an error that means the
// sessions are dead, or the generation changed under it, the token is reopened
// (once, however many callers fail together) and f runs once more.
func (k *KeyStore) do(ctx context.Context, f func(g *generation) error) error {
	if k.closed.Load() {
		return ErrClosed
	}
	g := k.cur.Load()
	err := f(g)
	if err == nil || ctx.Err() != nil {
		return err
	}
	if !recoverable(err) && k.cur.Load() == g {
		return err
	}
	if rerr := k.recover(ctx, g, err); rerr != nil {
		return fmt.Errorf("%w (reopening the token failed: %v)", err, rerr)
	}
	if k.closed.Load() {
		return ErrClosed
	}
	return f(k.cur.Load())
}

// recover replaces generation failed by a fresh crypto11 context. If another
// caller already did, it returns at once. The new context is opened before the
// old one is closed, because closing the last context finalises the library.
func (k *KeyStore) recover(ctx context.Context, failed *generation, cause error) error {
	k.reopenMu.Lock()
	defer k.reopenMu.Unlock()
	if k.closed.Load() {
		return ErrClosed
	}
	if k.cur.Load() != failed {
		return nil
	}
	if !k.lastFailure.IsZero() && time.Since(k.lastFailure) < reopenBackoff {
		return k.lastErr
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	k.log.Warn("hsm: token sessions failed; reopening", "token", failed.info.Label, "serial", failed.info.Serial,
		"generation", failed.n, "cause", cause)
	c, si, err := openContext(&k.cfg, k.path)
	if err != nil {
		k.lastFailure, k.lastErr = time.Now(), err
		k.log.Warn("hsm: reopening token failed", "token", failed.info.Label, "serial", failed.info.Serial, "error", err)
		return err
	}
	k.lastFailure, k.lastErr = time.Time{}, nil
	g := &generation{n: failed.n + 1, ctx: c, slot: si.slot, info: si.info}
	k.keysMu.Lock()
	keys := append([]*Key(nil), k.keys...)
	k.keysMu.Unlock()
	for _, key := range keys {
		if _, err := key.signerIn(g); err != nil {
			k.log.Warn("hsm: key not found again after reopening", "key", key.uri.String(), "error", err)
		}
	}
	k.cur.Store(g)
	k.log.Warn("hsm: token reopened", "token", si.info.Label, "serial", si.info.Serial, "generation", g.n,
		"keys", len(keys))
	// Close the old context in the background: crypto11 waits until every session
	// is back in its pool, and a signature may still be running on it.
	k.bg.Add(1)
	go func() {
		defer k.bg.Done()
		if err := closeContext(failed.ctx, k.path, failed.info.Serial); err != nil {
			k.log.Debug("hsm: closing the old context", "generation", failed.n, "error", err)
		}
	}()
	return nil
}

// Health checks that the token is present, that a session is logged in and that
// the session pool works (with a test signature if a key is known). If not, it
// reopens the token and checks again.
func (k *KeyStore) Health(ctx context.Context) error {
	if k.closed.Load() {
		return ErrClosed
	}
	ctx, cancel := context.WithTimeout(ctx, k.cfg.SignTimeout)
	defer cancel()
	g := k.cur.Load()
	err := k.ping(ctx, g)
	if err == nil {
		return nil
	}
	if ctx.Err() != nil {
		return fmt.Errorf("hsm: health check: %w", err)
	}
	if rerr := k.recover(ctx, g, err); rerr != nil {
		return fmt.Errorf("hsm: health check: %w (reopening the token failed: %v)", err, rerr)
	}
	if err := k.ping(ctx, k.cur.Load()); err != nil {
		return fmt.Errorf("hsm: health check after reopening: %w", err)
	}
	return nil
}

var healthDigest = sha256.Sum256([]byte("hsm health check"))

func (k *KeyStore) ping(ctx context.Context, g *generation) error {
	sh, err := k.rawSession(g)
	if err != nil {
		return err
	}
	k.raw.CloseSession(sh)
	return runCtx(ctx, k.cfg.SignTimeout, func() error {
		k.keysMu.Lock()
		var key *Key
		for _, c := range k.keys {
			if !c.decryptOnly { // the token refuses a decryption key's signatures
				key = c
				break
			}
		}
		k.keysMu.Unlock()
		if key != nil {
			s, err := key.signerIn(g)
			if err != nil {
				return err
			}
			_, err = s.Sign(nil, healthDigest[:], signOpts(key.kt))
			return err
		}
		r, err := g.ctx.NewRandomReader()
		if err != nil {
			return err
		}
		_, err = r.Read(make([]byte, 8))
		return err
	})
}

// rawSession opens a short session on the token of g and checks that it is
// logged in (the login belongs to the process, so it shows in every session).
// The caller closes it with k.raw.CloseSession.
func (k *KeyStore) rawSession(g *generation) (pkcs11.SessionHandle, error) {
	ti, err := k.raw.GetTokenInfo(g.slot)
	if err != nil {
		return 0, fmt.Errorf("hsm: token %q: %w", g.info.Label, err)
	}
	if ti.SerialNumber != g.info.Serial {
		return 0, fmt.Errorf("hsm: token %q: slot now holds serial %q: %w", g.info.Label, ti.SerialNumber, pkcs11.Error(pkcs11.CKR_TOKEN_NOT_RECOGNIZED))
	}
	sh, err := k.raw.OpenSession(g.slot, pkcs11.CKF_SERIAL_SESSION)
	if err != nil {
		return 0, fmt.Errorf("hsm: token %q: opening a session: %w", g.info.Label, err)
	}
	si, err := k.raw.GetSessionInfo(sh)
	if err == nil && si.State != pkcs11.CKS_RO_USER_FUNCTIONS && si.State != pkcs11.CKS_RW_USER_FUNCTIONS {
		err = pkcs11.Error(pkcs11.CKR_USER_NOT_LOGGED_IN)
	}
	if err != nil {
		k.raw.CloseSession(sh)
		return 0, fmt.Errorf("hsm: token %q: %w", g.info.Label, err)
	}
	return sh, nil
}

// withRawSession runs f on a fresh logged-in session, reopening the token first if
// it is not logged in any more.
func (k *KeyStore) withRawSession(ctx context.Context, f func(sh pkcs11.SessionHandle) error) error {
	return k.do(ctx, func(g *generation) error {
		sh, err := k.rawSession(g)
		if err != nil {
			return err
		}
		defer k.raw.CloseSession(sh)
		return f(sh)
	})
}

// healthLoop runs Health every interval until Close.
func (k *KeyStore) healthLoop(interval time.Duration) {
	defer k.bg.Done()
	t := time.NewTicker(interval)
	defer t.Stop()
	healthy := true
	for {
		select {
		case <-k.stop:
			return
		case <-t.C:
		}
		ctx, cancel := context.WithCancel(context.Background())
		go func() {
			select {
			case <-k.stop:
				cancel()
			case <-ctx.Done():
			}
		}()
		err := k.Health(ctx)
		cancel()
		switch {
		case err != nil && !errors.Is(err, ErrClosed):
			k.log.Warn("hsm: health check failed", "token", k.TokenInfo().Label, "error", err)
			healthy = false
		case err == nil && !healthy:
			k.log.Info("hsm: health check passed again", "token", k.TokenInfo().Label)
			healthy = true
		}
	}
}

// runCtx runs f and waits for it or for ctx, bounded by timeout. PKCS#11 calls
// cannot be interrupted: on timeout f keeps running and its result is dropped.
func runCtx(ctx context.Context, timeout time.Duration, f func() error) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- f() }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return fmt.Errorf("hsm: PKCS#11 operation abandoned: %w", ctx.Err())
	}
}
