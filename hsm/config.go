package hsm

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"
)

// Sentinel errors. Errors returned by this package wrap them with context; test
// with errors.Is.
var (
	// ErrNoCgo: this binary was built without cgo and cannot load a PKCS#11 module.
	ErrNoCgo = errors.New("this build has no cgo; PKCS#11 needs a cgo build of enrollsvc")
	// ErrTokenNotFound: no token with the configured label or serial.
	ErrTokenNotFound = errors.New("PKCS#11 token not found")
	// ErrPINIncorrect: the token refused the PIN (or the PIN is locked).
	ErrPINIncorrect = errors.New("PKCS#11 PIN incorrect")
	// ErrKeyNotFound: no private key (with its public half) matches.
	ErrKeyNotFound = errors.New("PKCS#11 key not found")
	// ErrModule: the PKCS#11 module is missing or cannot be loaded or initialised.
	ErrModule = errors.New("PKCS#11 module unusable")
	// ErrClosed: the KeyStore has been closed.
	ErrClosed = errors.New("hsm: key store is closed")
)

// Defaults applied by Open to zero Config fields.
const (
	DefaultSessions        = 4
	DefaultPoolWaitTimeout = 5 * time.Second
	DefaultSignTimeout     = 10 * time.Second
	DefaultHealthInterval  = 30 * time.Second
	maxSessions            = 1024
	maxTokenLabel          = 32 // bytes, CK_TOKEN_INFO.label
)

// Config says which module and token to open. It is plain data: Open validates it
// and fails naming the bad field. Formatting a Config (%v, %+v, %#v, slog) never
// shows the PIN.
type Config struct {
	ModulePath  string // PKCS#11 module (.so)
	TokenLabel  string // select the token by label ...
	TokenSerial string // ... or by serial (if both are set, serial selects and the label must match)
	PIN         string // user PIN (fill with ReadPIN); never logged, never in an error

	// Sessions is the number of parallel signing sessions; crypto11 gets
	// MaxSessions = Sessions+1 because it keeps one session logged in. 0 → 4.
	Sessions int
	// PoolWaitTimeout bounds the wait for a free session. 0 → 5s.
	PoolWaitTimeout time.Duration
	// SignTimeout is the deadline around each signature. 0 → 10s.
	SignTimeout time.Duration
	// HealthInterval is the period of the background health check; 0 → 30s,
	// negative disables it.
	HealthInterval time.Duration
	// Logger receives recovery and health messages; nil → slog.Default().
	Logger *slog.Logger
}

// String describes the config without the PIN.
func (c Config) String() string {
	pin := "unset"
	if c.PIN != "" {
		pin = "set"
	}
	return fmt.Sprintf("hsm.Config{ModulePath:%q TokenLabel:%q TokenSerial:%q PIN:%s Sessions:%d PoolWaitTimeout:%s SignTimeout:%s HealthInterval:%s}",
		c.ModulePath, c.TokenLabel, c.TokenSerial, pin, c.Sessions, c.PoolWaitTimeout, c.SignTimeout, c.HealthInterval)
}

// GoString is String, so that %#v does not print the PIN either.
func (c Config) GoString() string { return c.String() }

// LogValue keeps the PIN out of structured logs.
func (c Config) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("module", c.ModulePath),
		slog.String("token_label", c.TokenLabel),
		slog.String("token_serial", c.TokenSerial),
		slog.Bool("pin_set", c.PIN != ""),
		slog.Int("sessions", c.Sessions),
	)
}

// withDefaults validates c and fills in defaults. Errors name the field, never the PIN.
func (c Config) withDefaults() (Config, error) {
	if c.ModulePath == "" {
		return c, fmt.Errorf("hsm: Config.ModulePath is empty: %w", ErrModule)
	}
	if st, err := os.Stat(c.ModulePath); err != nil {
		return c, fmt.Errorf("hsm: Config.ModulePath %q: %w: %v", c.ModulePath, ErrModule, err)
	} else if st.IsDir() {
		return c, fmt.Errorf("hsm: Config.ModulePath %q is a directory: %w", c.ModulePath, ErrModule)
	}
	if c.TokenLabel == "" && c.TokenSerial == "" {
		return c, errors.New("hsm: Config.TokenLabel and Config.TokenSerial are both empty; set one to select the token")
	}
	if len(c.TokenLabel) > maxTokenLabel {
		return c, fmt.Errorf("hsm: Config.TokenLabel %q is longer than %d bytes", c.TokenLabel, maxTokenLabel)
	}
	if c.PIN == "" {
		return c, errors.New("hsm: Config.PIN is empty")
	}
	switch {
	case c.Sessions == 0:
		c.Sessions = DefaultSessions
	case c.Sessions < 0 || c.Sessions > maxSessions:
		return c, fmt.Errorf("hsm: Config.Sessions = %d, want 1..%d", c.Sessions, maxSessions)
	}
	var err error
	if c.PoolWaitTimeout, err = positiveOr(c.PoolWaitTimeout, DefaultPoolWaitTimeout, "PoolWaitTimeout"); err != nil {
		return c, err
	}
	if c.SignTimeout, err = positiveOr(c.SignTimeout, DefaultSignTimeout, "SignTimeout"); err != nil {
		return c, err
	}
	if c.HealthInterval == 0 {
		c.HealthInterval = DefaultHealthInterval
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c, nil
}

func positiveOr(d, def time.Duration, field string) (time.Duration, error) {
	switch {
	case d == 0:
		return def, nil
	case d < 0:
		return 0, fmt.Errorf("hsm: Config.%s = %s, want > 0 (0 means %s)", field, d, def)
	}
	return d, nil
}

// maxPINFile bounds what ReadPIN reads; PINs are short.
const maxPINFile = 4096

// ReadPIN reads the PIN from file (one trailing newline, LF or CRLF, is removed)
// or, if file is "", from the environment variable env. Errors name the file or the
// variable, never the PIN.
func ReadPIN(file, env string) (string, error) {
	var pin string
	switch {
	case file != "":
		f, err := os.Open(file)
		if err != nil {
			return "", fmt.Errorf("hsm: reading PIN file: %w", err)
		}
		defer f.Close()
		b, err := io.ReadAll(io.LimitReader(f, maxPINFile+1))
		if err != nil {
			return "", fmt.Errorf("hsm: reading PIN file %s: %w", file, err)
		}
		if len(b) > maxPINFile {
			return "", fmt.Errorf("hsm: PIN file %s is larger than %d bytes", file, maxPINFile)
		}
		pin = string(b)
		pin = strings.TrimSuffix(pin, "\n")
		pin = strings.TrimSuffix(pin, "\r")
		if pin == "" {
			return "", fmt.Errorf("hsm: PIN file %s is empty", file)
		}
	case env != "":
		v, ok := os.LookupEnv(env)
		if !ok {
			return "", fmt.Errorf("hsm: PIN environment variable %s is not set", env)
		}
		if v == "" {
			return "", fmt.Errorf("hsm: PIN environment variable %s is empty", env)
		}
		pin = v
	default:
		return "", errors.New("hsm: no PIN source: give a PIN file or an environment variable")
	}
	if strings.ContainsAny(pin, "\n\x00") {
		return "", errors.New("hsm: PIN contains a newline or NUL byte")
	}
	return pin, nil
}

// TokenInfo describes the open token.
type TokenInfo struct {
	Label        string
	Serial       string
	Manufacturer string
	Model        string
}

// KeyAttributes are attributes of a private key object as the token reports them.
type KeyAttributes struct {
	Sensitive, Extractable, AlwaysSensitive, NeverExtractable, Private, Token bool
	KeyType                                                                   string // "RSA", "EC" or "0x..." for others
}
