package appliance

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"time"

	"github.com/enrollment-appliance/aeappliance/appliance/console"
	"github.com/enrollment-appliance/aeappliance/provisioning"
)

// IdleLogout is how long a console login lasts without a command.
const IdleLogout = 15 * time.Minute

// settingsDir holds the appliance's own settings (admin passphrase, network).
func (a *Appliance) settingsDir() string { return filepath.Join(a.o.DataDir, "appliance") }

// allow is the console's gate: the command table's access (open commands always;
// beforePassphrase ones until an admin passphrase is set; the others after a login).
// The console's own help and menu are open.
func (a *Appliance) allow(cmd console.Command) error {
	acc, ok := a.access[cmd.Name]
	if !ok && (cmd.Name == "help" || cmd.Name == "menu") {
		acc = open
	}
	if acc == open {
		return nil
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if disk, ok := a.diskReadyLocked(); !ok {
		if disk.Locked {
			// The admin passphrase is on the locked disk: nobody can log in, so nothing
			// but the open commands (disk unlock among them) runs.
			return errors.New("the data disk is locked: disk unlock first (see status)")
		}
		return nil // nothing to protect; the commands say there is no data disk
	}
	if !provisioning.HasPassphrase(a.settingsDir()) {
		if acc == beforePassphrase {
			return nil
		}
		return errors.New("set the admin passphrase first: provision passphrase")
	}
	if !a.loggedIn || time.Since(a.lastCmd) > IdleLogout {
		a.loggedIn = false
		return errors.New("log in first: login")
	}
	a.lastCmd = time.Now()
	return nil
}

func (a *Appliance) cmdLogin(ctx context.Context, _ []string, w io.Writer) error {
	if _, ok := a.diskReady(); !ok {
		return errors.New("no usable data disk (see status)")
	}
	if !provisioning.HasPassphrase(a.settingsDir()) {
		return errors.New("no admin passphrase is set yet: provision passphrase")
	}
	guard := loginGuard{dir: a.settingsDir(), now: time.Now}
	if w := guard.wait(); w > 0 {
		a.log.Warn("console login refused: backing off after failed logins", "wait", w.String())
		return fmt.Errorf("too many failed logins: try again in %s", w)
	}
	p, err := a.con.Ask("Passphrase: ", true)
	if err != nil {
		return err
	}
	if err := provisioning.CheckPassphrase(a.settingsDir(), p); err != nil {
		n, d, gerr := guard.failed()
		a.log.Warn("console login failed", "err", err, "failures_in_a_row", n, "next_attempt_in", d.String())
		if gerr != nil {
			a.log.Error("recording a failed console login", "err", gerr)
		}
		time.Sleep(min(d, LoginBackoff)) // the serial line waits at least this long anyway
		if n > 1 {
			return fmt.Errorf("%w (%d failures in a row: the next attempt in %s)", err, n, d)
		}
		return err
	}
	if err := guard.succeeded(); err != nil {
		a.log.Error("clearing the failed console logins", "err", err)
	}
	a.mu.Lock()
	a.loggedIn, a.lastCmd = true, time.Now()
	a.mu.Unlock()
	a.log.Info("console login")
	fmt.Fprintf(w, "Logged in (for %s without a command).\n", IdleLogout)
	return nil
}

func (a *Appliance) cmdLogout(ctx context.Context, _ []string, w io.Writer) error {
	a.mu.Lock()
	a.loggedIn = false
	a.mu.Unlock()
	fmt.Fprintln(w, "Logged out.")
	return nil
}

// needDisk is the first check of every command that changes the data disk.
func (a *Appliance) needDisk() error {
	if _, ok := a.diskReady(); !ok {
		return errors.New("no usable data disk (see status); nothing changed")
	}
	return nil
}

func (a *Appliance) cmdPassphrase(ctx context.Context, _ []string, w io.Writer) error {
	if err := a.needDisk(); err != nil {
		return err
	}
	var current string
	if provisioning.HasPassphrase(a.settingsDir()) {
		var err error
		if current, err = a.con.Ask("Current passphrase: ", true); err != nil {
			return err
		}
	}
	fmt.Fprintf(w, "The admin passphrase guards this console (at least %d characters).\n", provisioning.MinPassphrase)
	next, err := a.askTwice("New passphrase")
	if err != nil {
		return err
	}
	r, err := provisioning.SetPassphrase(a.settingsDir(), current, next)
	if err != nil {
		return diskFull(err)
	}
	a.log.Info("admin passphrase", "changed", r.Changed)
	if r.Changed {
		a.mu.Lock()
		a.loggedIn, a.lastCmd = true, time.Now()
		a.mu.Unlock()
	}
	fmt.Fprintln(w, r.String())
	return nil
}

// askTwice asks for a secret and its repetition.
func (a *Appliance) askTwice(what string) (string, error) {
	s, err := a.con.Ask(what+": ", true)
	if err != nil {
		return "", err
	}
	again, err := a.con.Ask(what+" again: ", true)
	if err != nil {
		return "", err
	}
	if s != again {
		return "", errors.New("the two entries differ: nothing changed")
	}
	return s, nil
}
