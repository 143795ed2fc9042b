// Package softhsm finds and configures SoftHSM2, the software token the tests and
// development setups use in place of a hardware security module. It needs no cgo:
// it only finds the module and writes softhsm2.conf. SoftHSM reads the file named
// by the environment variable SOFTHSM2_CONF when the library is initialised;
// callers set it.
package softhsm

import (
	"errors"
	"fmt"
	"os"
	"strings"
)

// ModulePaths are the places Debian installs libsofthsm2.so, in the order
// ModulePath tries them.
var ModulePaths = []string{
	"/usr/lib/softhsm/libsofthsm2.so",
	"/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
	"/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
	"/usr/local/lib/softhsm/libsofthsm2.so",
}

// ErrNotInstalled says that no SoftHSM2 module was found.
var ErrNotInstalled = errors.New("SoftHSM2 is not installed")

// ModulePath returns the path of the installed SoftHSM2 PKCS#11 module.
func ModulePath() (string, error) {
	for _, p := range ModulePaths {
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() {
			return p, nil
		}
	}
	return "", fmt.Errorf("softhsm: %w (looked in %s)", ErrNotInstalled, strings.Join(ModulePaths, ", "))
}

// Config is the softhsm2.conf WriteConfig writes for tokenDir.
func Config(tokenDir string) string {
	return "# written by hsm/softhsm\n" +
		"directories.tokendir = " + tokenDir + "\n" +
		"objectstore.backend = file\n" +
		"log.level = ERROR\n" +
		"slots.removable = false\n"
}

// WriteConfig writes a softhsm2.conf at confPath that keeps tokens as files in
// tokenDir (created with mode 0700), logs only errors and makes slots
// non-removable.
func WriteConfig(confPath, tokenDir string) error {
	if tokenDir == "" || strings.ContainsAny(tokenDir, "\n\r") {
		return fmt.Errorf("softhsm: bad token directory %q", tokenDir)
	}
	if err := os.MkdirAll(tokenDir, 0o700); err != nil {
		return fmt.Errorf("softhsm: %w", err)
	}
	if err := os.WriteFile(confPath, []byte(Config(tokenDir)), 0o600); err != nil {
		return fmt.Errorf("softhsm: %w", err)
	}
	return nil
}
