package firmware

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/enrollment-appliance/aeappliance/firmware/update"
)

// DevKeys are the development update signing key pair, under the repository's build
// directory (never committed): root/build/keys/update-signing.{key,pub}.
func DevKeys(root string) (pub, priv string) {
	dir := filepath.Join(root, "build", "keys")
	return filepath.Join(dir, "update-signing.pub"), filepath.Join(dir, "update-signing.key")
}

// EnsureDevKeys returns the development key pair, making it the first time. A release
// build names its own keys instead (mkfirmware -update-keys, -signing-key).
func EnsureDevKeys(root string) (pub, priv string, err error) {
	pub, priv = DevKeys(root)
	_, perr := os.Stat(pub)
	_, kerr := os.Stat(priv)
	switch {
	case perr == nil && kerr == nil:
		return pub, priv, nil
	case perr == nil || kerr == nil:
		return "", "", fmt.Errorf("firmware: only one of %s and %s exists: remove it to make a new pair", pub, priv)
	case !errors.Is(perr, os.ErrNotExist):
		return "", "", fmt.Errorf("firmware: %w", perr)
	}
	if err := os.MkdirAll(filepath.Dir(pub), 0o700); err != nil {
		return "", "", fmt.Errorf("firmware: %w", err)
	}
	if err := os.WriteFile(filepath.Join(filepath.Dir(pub), ".gitignore"), []byte("*\n"), 0o644); err != nil {
		return "", "", fmt.Errorf("firmware: %w", err)
	}
	pk, sk, err := update.GenerateKey()
	if err != nil {
		return "", "", err
	}
	if err := update.WritePrivateKey(priv, sk); err != nil {
		return "", "", err
	}
	if err := os.WriteFile(pub, update.MarshalPublicKey(pk), 0o644); err != nil {
		return "", "", fmt.Errorf("firmware: %w", err)
	}
	return pub, priv, nil
}
