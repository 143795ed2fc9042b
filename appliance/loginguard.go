package appliance

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/enrollment-appliance/aeappliance/config"
)

// Console login back-off: after the nth failed login in a row, the next attempt must wait
// LoginBackoff·2^(n-1), at most LoginBackoffMax.
const (
	LoginBackoff    = 2 * time.Second
	LoginBackoffMax = 10 * time.Minute
	loginFailsFile  = "login-failures.json"
)

// loginGuard keeps the count of failed console logins in the settings directory on the data
// disk, so that rebooting (or pulling the power) does not reset the back-off; a login clears it.
type loginGuard struct {
	dir string
	now func() time.Time
}

type loginFailures struct {
	Count int       `json:"count"`
	Until time.Time `json:"until"` // no attempt before this
}

func (g loginGuard) load() (loginFailures, error) {
	var f loginFailures
	b, err := os.ReadFile(filepath.Join(g.dir, loginFailsFile))
	if errors.Is(err, os.ErrNotExist) {
		return f, nil
	}
	if err == nil {
		err = json.Unmarshal(b, &f)
	}
	if err != nil {
		// Unreadable: as after the most failures, so that corrupting it does not help a guesser.
		return loginFailures{Count: 64, Until: g.now().Add(LoginBackoffMax)}, fmt.Errorf("console login failures: %w", err)
	}
	return f, nil
}

// wait is how long the next attempt must wait (0: it may go ahead).
func (g loginGuard) wait() time.Duration {
	f, _ := g.load()
	return max(f.Until.Sub(g.now()), 0).Round(time.Second)
}

// failed counts a failed login and returns the failures in a row and the wait it imposes.
func (g loginGuard) failed() (int, time.Duration, error) {
	f, _ := g.load()
	f.Count++
	d := LoginBackoffMax
	if f.Count < 20 {
		d = min(LoginBackoff<<(f.Count-1), LoginBackoffMax)
	}
	f.Until = g.now().Add(d)
	b, _ := json.Marshal(f)
	return f.Count, d, config.WriteFileAtomic(filepath.Join(g.dir, loginFailsFile), b, 0o600)
}

// succeeded clears the count.
func (g loginGuard) succeeded() error {
	err := os.Remove(filepath.Join(g.dir, loginFailsFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	return err
}
