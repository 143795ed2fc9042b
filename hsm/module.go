//go:build cgo

package hsm

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"path/filepath"
	"sync"

	"github.com/ThalesIgnite/crypto11"
	"github.com/miekg/pkcs11"
)

// A PKCS#11 library is initialised once per process, but crypto11 and InitToken
// both drive it. libMu serialises every Initialize/Finalize in this package and
// openCtx mirrors crypto11's private per-path reference count, so that we know
// whether the library is (or should be) initialised. crypto11 finalises the
// library when its last context closes, and also when Configure fails after
// initialising; preflight checks the token and PIN first so that Configure
// rarely fails with other contexts open.
var (
	libMu   sync.Mutex
	openCtx = map[string]int{}          // canonical module path → open crypto11 contexts
	logins  = map[string]*loginRecord{} // module path + token serial → PIN digest of open stores
)

// loginRecord remembers the PIN that logged a token in, as a digest, so that a
// second KeyStore on an already logged-in token (where C_Login cannot check the PIN
// and answers CKR_USER_ALREADY_LOGGED_IN) still refuses a wrong PIN.
type loginRecord struct {
	digest [32]byte
	n      int
}

func loginKey(path, serial string) string { return path + "\x00" + serial }

// canonicalModule resolves symlinks so that crypto11's per-path reference count
// sees one name per library.
func canonicalModule(path string) (string, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return "", fmt.Errorf("hsm: module %q: %w: %v", path, ErrModule, err)
	}
	real, err := filepath.EvalSymlinks(abs)
	if err != nil {
		return "", fmt.Errorf("hsm: module %q: %w: %v", path, ErrModule, err)
	}
	return real, nil
}

// p11Code finds the PKCS#11 return value in err's chain. crypto11 wraps some
// errors with github.com/pkg/errors v0.8.1, which has Cause but not Unwrap.
func p11Code(err error) (pkcs11.Error, bool) {
	for err != nil {
		var pe pkcs11.Error
		if errors.As(err, &pe) {
			return pe, true
		}
		c, ok := err.(interface{ Cause() error })
		if !ok {
			return 0, false
		}
		next := c.Cause()
		if next == err {
			return 0, false
		}
		err = next
	}
	return 0, false
}

// isCode reports whether err carries one of the codes.
func isCode(err error, codes ...uint) bool {
	pe, ok := p11Code(err)
	if !ok {
		return false
	}
	for _, c := range codes {
		if uint(pe) == c {
			return true
		}
	}
	return false
}

// recoverable reports errors after which the sessions of a context are useless
// and a fresh crypto11 context is needed. Besides the session, device and login
// errors, stale object handles count: a session that lost its login (SoftHSM
// after C_CloseAllSessions) or a restarted HSM answers CKR_OBJECT_HANDLE_INVALID
// or CKR_KEY_HANDLE_INVALID for the cached key handles, and the reopen finds the
// keys again (or reports ErrKeyNotFound if they really are gone).
func recoverable(err error) bool {
	return isCode(err,
		pkcs11.CKR_OBJECT_HANDLE_INVALID,
		pkcs11.CKR_KEY_HANDLE_INVALID,
		pkcs11.CKR_SESSION_HANDLE_INVALID,
		pkcs11.CKR_SESSION_CLOSED,
		pkcs11.CKR_DEVICE_ERROR,
		pkcs11.CKR_DEVICE_REMOVED,
		pkcs11.CKR_TOKEN_NOT_PRESENT,
		pkcs11.CKR_USER_NOT_LOGGED_IN,
		pkcs11.CKR_TOKEN_NOT_RECOGNIZED,
	)
}

// library is a raw handle on a module, initialised if needed.
type library struct {
	p    *pkcs11.Ctx
	path string
	own  bool // we initialised it and must finalise it
}

// loadLibrary loads and initialises the module. Call with libMu held. If crypto11
// contexts are open the library stays initialised on release; if none are, it is
// finalised again so that crypto11 can initialise it itself.
// With forCrypto11, a library that code outside this package initialised is an
// error, because crypto11 would fail to initialise it again.
func loadLibrary(path string, forCrypto11 bool) (*library, error) {
	p := pkcs11.New(path)
	if p == nil {
		return nil, fmt.Errorf("hsm: cannot load PKCS#11 module %q: %w", path, ErrModule)
	}
	l := &library{p: p, path: path}
	switch err := p.Initialize(); {
	case err == nil:
		// With contexts open this means the library was finalised behind
		// crypto11's back (it does so when Configure fails). Leave it
		// initialised: crypto11 believes it is.
		l.own = openCtx[path] == 0
	case isCode(err, pkcs11.CKR_CRYPTOKI_ALREADY_INITIALIZED):
		if forCrypto11 && openCtx[path] == 0 {
			p.Destroy()
			return nil, fmt.Errorf("hsm: PKCS#11 module %q was initialised by other code in this process; crypto11 cannot share it: %w", path, ErrModule)
		}
	default:
		p.Destroy()
		return nil, fmt.Errorf("hsm: initialising PKCS#11 module %q: %w: %v", path, ErrModule, err)
	}
	return l, nil
}

func (l *library) release() {
	if l.own {
		_ = l.p.Finalize()
	}
	l.p.Destroy()
}

// slotInfo is a token found by preflight.
type slotInfo struct {
	slot uint
	info TokenInfo
}

// findToken selects the token by serial (if set) or label; a set label must match.
func findToken(p *pkcs11.Ctx, label, serial string) (slotInfo, error) {
	slots, err := p.GetSlotList(true)
	if err != nil {
		return slotInfo{}, fmt.Errorf("hsm: listing slots: %w", err)
	}
	var found []slotInfo
	for _, s := range slots {
		ti, err := p.GetTokenInfo(s)
		if err != nil {
			continue // token vanished or is being initialised
		}
		if ti.Flags&pkcs11.CKF_TOKEN_INITIALIZED == 0 {
			continue
		}
		if serial != "" && ti.SerialNumber != serial || serial == "" && ti.Label != label {
			continue
		}
		if serial != "" && label != "" && ti.Label != label {
			return slotInfo{}, fmt.Errorf("hsm: token with serial %q has label %q, not %q: %w", serial, ti.Label, label, ErrTokenNotFound)
		}
		found = append(found, slotInfo{slot: s, info: TokenInfo{
			Label: ti.Label, Serial: ti.SerialNumber, Manufacturer: ti.ManufacturerID, Model: ti.Model,
		}})
	}
	switch {
	case len(found) == 1:
		return found[0], nil
	case len(found) > 1:
		return slotInfo{}, fmt.Errorf("hsm: %d tokens are labelled %q; select by serial", len(found), label)
	case serial != "":
		return slotInfo{}, fmt.Errorf("hsm: no token with serial %q: %w", serial, ErrTokenNotFound)
	}
	return slotInfo{}, fmt.Errorf("hsm: no token labelled %q: %w", label, ErrTokenNotFound)
}

// checkPIN logs in on a short session to learn whether the PIN is right before
// crypto11 tries (a failed crypto11 login finalises the library under any other
// context). Call with libMu held.
func checkPIN(p *pkcs11.Ctx, path string, si slotInfo, pin string) error {
	sh, err := p.OpenSession(si.slot, pkcs11.CKF_SERIAL_SESSION)
	if err != nil {
		return fmt.Errorf("hsm: opening a session on token %q: %w", si.info.Label, err)
	}
	defer p.CloseSession(sh)
	err = p.Login(sh, pkcs11.CKU_USER, pin)
	switch {
	case err == nil:
		return nil
	case isCode(err, pkcs11.CKR_USER_ALREADY_LOGGED_IN):
		rec := logins[loginKey(path, si.info.Serial)]
		if rec != nil {
			d := sha256.Sum256([]byte(pin))
			if subtle.ConstantTimeCompare(d[:], rec.digest[:]) != 1 {
				return fmt.Errorf("hsm: token %q is logged in with a different PIN: %w", si.info.Label, ErrPINIncorrect)
			}
		}
		return nil
	case isCode(err, pkcs11.CKR_PIN_INCORRECT, pkcs11.CKR_PIN_INVALID, pkcs11.CKR_PIN_LEN_RANGE):
		return fmt.Errorf("hsm: login to token %q: %w", si.info.Label, ErrPINIncorrect)
	case isCode(err, pkcs11.CKR_PIN_LOCKED):
		return fmt.Errorf("hsm: login to token %q: the user PIN is locked: %w", si.info.Label, ErrPINIncorrect)
	}
	return fmt.Errorf("hsm: login to token %q: %w", si.info.Label, err)
}

// openContext opens a crypto11 context on the token after checking, with a raw
// handle, that the module loads, the token exists and the PIN is right.
func openContext(cfg *Config, path string) (*crypto11.Context, slotInfo, error) {
	libMu.Lock()
	defer libMu.Unlock()
	l, err := loadLibrary(path, true)
	if err != nil {
		return nil, slotInfo{}, err
	}
	si, err := findToken(l.p, cfg.TokenLabel, cfg.TokenSerial)
	if err == nil {
		err = checkPIN(l.p, path, si, cfg.PIN)
	}
	// A second handle keeps the module and the libraries it needs mapped (dlopen counts
	// references) while the first is released and crypto11 loads it again: otherwise the
	// module is unloaded and loaded afresh, its libraries relocated and initialised twice
	// (SoftHSM: OpenSSL and the C++ runtime).
	hold := pkcs11.New(path)
	if hold != nil {
		defer hold.Destroy()
	}
	l.release()
	if err != nil {
		return nil, slotInfo{}, err
	}
	c, err := crypto11.Configure(&crypto11.Config{
		Path:            path,
		TokenSerial:     si.info.Serial,
		Pin:             cfg.PIN,
		MaxSessions:     cfg.Sessions + 1,
		PoolWaitTimeout: cfg.PoolWaitTimeout,
	})
	if err != nil {
		// crypto11 errors carry no PIN; translate the ones we know.
		switch {
		case isCode(err, pkcs11.CKR_PIN_INCORRECT, pkcs11.CKR_PIN_LOCKED):
			return nil, slotInfo{}, fmt.Errorf("hsm: login to token %q: %w", si.info.Label, ErrPINIncorrect)
		case err.Error() == "could not find PKCS#11 token":
			return nil, slotInfo{}, fmt.Errorf("hsm: token %q (serial %s) vanished: %w", si.info.Label, si.info.Serial, ErrTokenNotFound)
		}
		return nil, slotInfo{}, fmt.Errorf("hsm: opening token %q: %w", si.info.Label, err)
	}
	openCtx[path]++
	k := loginKey(path, si.info.Serial)
	if logins[k] == nil {
		logins[k] = &loginRecord{digest: sha256.Sum256([]byte(cfg.PIN))}
	}
	logins[k].n++
	return c, si, nil
}

// closeContext closes a crypto11 context and keeps the bookkeeping. It blocks
// until the context's sessions are back in its pool.
func closeContext(c *crypto11.Context, path, serial string) error {
	libMu.Lock()
	defer libMu.Unlock()
	err := c.Close()
	openCtx[path]--
	k := loginKey(path, serial)
	if rec := logins[k]; rec != nil {
		if rec.n--; rec.n <= 0 {
			delete(logins, k)
		}
	}
	return err
}

// InitToken initialises a fresh token labelled label in the first free slot of the
// module, sets the SO PIN and the user PIN and returns the token's serial. It
// speaks PKCS#11 directly (C_InitToken, C_Login as SO, C_InitPIN), so no PIN is
// ever on a command line, and it coexists with KeyStores open in this process.
func InitToken(ctx context.Context, modulePath, label, soPIN, userPIN string) (serial string, err error) {
	switch {
	case label == "":
		return "", errors.New("hsm: InitToken: label is empty")
	case len(label) > maxTokenLabel:
		return "", fmt.Errorf("hsm: InitToken: label %q is longer than %d bytes", label, maxTokenLabel)
	case soPIN == "":
		return "", errors.New("hsm: InitToken: SO PIN is empty")
	case userPIN == "":
		return "", errors.New("hsm: InitToken: user PIN is empty")
	}
	if err := ctx.Err(); err != nil {
		return "", err
	}
	if _, err := (Config{ModulePath: modulePath, TokenLabel: label, PIN: "x"}).withDefaults(); err != nil {
		return "", err
	}
	path, err := canonicalModule(modulePath)
	if err != nil {
		return "", err
	}
	libMu.Lock()
	defer libMu.Unlock()
	l, err := loadLibrary(path, false)
	if err != nil {
		return "", err
	}
	defer l.release()
	p := l.p

	slots, err := p.GetSlotList(true)
	if err != nil {
		return "", fmt.Errorf("hsm: InitToken: listing slots: %w", err)
	}
	free := -1
	before := map[string]bool{}
	for _, s := range slots {
		ti, err := p.GetTokenInfo(s)
		if err != nil {
			continue
		}
		if ti.Flags&pkcs11.CKF_TOKEN_INITIALIZED != 0 {
			before[ti.SerialNumber] = true
			continue
		}
		if free < 0 {
			free = int(s)
		}
	}
	if free < 0 {
		return "", fmt.Errorf("hsm: InitToken: module %q has no slot with an uninitialised token", path)
	}
	if err := p.InitToken(uint(free), soPIN, label); err != nil {
		return "", fmt.Errorf("hsm: InitToken: C_InitToken for %q: %w", label, err)
	}
	// SoftHSM moves a freshly initialised token to a new slot id: find it again
	// as the token with our label that was not there before.
	slots, err = p.GetSlotList(true)
	if err != nil {
		return "", fmt.Errorf("hsm: InitToken: listing slots: %w", err)
	}
	slot, found := uint(0), false
	for _, s := range slots {
		ti, err := p.GetTokenInfo(s)
		if err != nil || ti.Flags&pkcs11.CKF_TOKEN_INITIALIZED == 0 || before[ti.SerialNumber] || ti.Label != label {
			continue
		}
		slot, serial, found = s, ti.SerialNumber, true
		break
	}
	if !found {
		return "", fmt.Errorf("hsm: InitToken: token %q not found after C_InitToken: %w", label, ErrTokenNotFound)
	}
	sh, err := p.OpenSession(slot, pkcs11.CKF_SERIAL_SESSION|pkcs11.CKF_RW_SESSION)
	if err != nil {
		return "", fmt.Errorf("hsm: InitToken: opening a session on %q: %w", label, err)
	}
	defer p.CloseSession(sh)
	if err := p.Login(sh, pkcs11.CKU_SO, soPIN); err != nil {
		if isCode(err, pkcs11.CKR_PIN_INCORRECT) {
			err = ErrPINIncorrect
		}
		return "", fmt.Errorf("hsm: InitToken: SO login to %q: %w", label, err)
	}
	defer p.Logout(sh)
	if err := p.InitPIN(sh, userPIN); err != nil {
		return "", fmt.Errorf("hsm: InitToken: C_InitPIN on %q: %w", label, err)
	}
	return serial, nil
}
