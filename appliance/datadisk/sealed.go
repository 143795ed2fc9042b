package datadisk

// The sealed data disk: a LUKS2 volume whose key slot for booting opens with a random disk
// key that only this machine's TPM gives back, and only to the firmware it was sealed under
// (a Sealer, appliance/tpmseal on the image); a second key slot opens with a recovery
// passphrase an admin is shown once. The LUKS2 token (type TokenType) records the sealed key
// and the slots it opens, so a re-seal replaces both without touching the recovery slot.

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
)

// Sealer keeps the disk key of an encrypted data disk. Seal returns what the volume's token
// stores: the key sealed so that Unseal on the same machine, booted by the same firmware,
// gives it back, and nothing else can. Describe says how, for status ("TPM 2.0, PCRs ...").
type Sealer interface {
	Seal(key []byte) (json.RawMessage, error)
	Unseal(sealed json.RawMessage) ([]byte, error)
	Describe() string
}

// sealedToken reads the volume's sealed-key token.
func sealedToken(ctx context.Context, dev string) (Token, error) {
	return GetToken(ctx, dev, TokenType)
}

// formatSealed makes the blank dev a LUKS2 volume whose slot 0 opens with a new disk key,
// seals that key with seal into the volume's token, and returns the key.
func formatSealed(ctx context.Context, dev string, seal Sealer) ([]byte, error) {
	key, err := NewKey()
	if err != nil {
		return nil, err
	}
	if err := LUKSFormat(ctx, dev, key); err != nil {
		return nil, err
	}
	sealed, err := seal.Seal(key)
	if err != nil {
		return nil, err
	}
	if err := SetToken(ctx, dev, Token{Type: TokenType, Keyslots: []string{"0"}, Sealed: sealed}); err != nil {
		return nil, err
	}
	return key, nil
}

// unsealKey returns the disk key of the encrypted dev from its token.
func unsealKey(ctx context.Context, dev string, seal Sealer) ([]byte, error) {
	tok, err := sealedToken(ctx, dev)
	if err != nil {
		return nil, err
	}
	key, err := seal.Unseal(tok.Sealed)
	if err != nil {
		return nil, err
	}
	// The token must not name a slot the key does not open (a header edited by hand).
	if err := TestKey(ctx, dev, key); err != nil {
		return nil, fmt.Errorf("the unsealed key does not open the disk: %w", err)
	}
	return key, nil
}

// Reseal recovers the encrypted dev with passphrase (its recovery passphrase, or any key
// of the volume) and seals it to seal anew: a new disk key in a new key slot, the token
// naming it, the slots of the old token wiped. The recovery slot stays. It returns the new
// disk key. A wrong passphrase changes nothing and returns an error wrapping ErrWrongKey.
func Reseal(ctx context.Context, dev string, passphrase []byte, seal Sealer) ([]byte, error) {
	if err := TestKey(ctx, dev, passphrase); err != nil {
		return nil, err
	}
	if err := ResumeReencrypt(ctx, dev, passphrase); err != nil {
		return nil, err
	}
	old, err := sealedToken(ctx, dev)
	if err != nil && !errors.Is(err, ErrNoToken) {
		return nil, err
	}
	key, err := NewKey()
	if err != nil {
		return nil, err
	}
	sealed, err := seal.Seal(key)
	if err != nil {
		return nil, err
	}
	// New slot, then the token that names it, then the old slots: a crash in between
	// leaves a disk that opens with the new sealed key or the old one, and the recovery
	// passphrase either way.
	slot, err := AddKey(ctx, dev, passphrase, key)
	if err != nil {
		return nil, err
	}
	if err := SetToken(ctx, dev, Token{Type: TokenType, Keyslots: []string{strconv.Itoa(slot)}, Sealed: sealed}); err != nil {
		return nil, err
	}
	for _, s := range old.Keyslots {
		n, err := strconv.Atoi(s)
		if err != nil || n == slot {
			continue
		}
		if slots, _ := KeySlots(ctx, dev); slices.Contains(slots, n) {
			if err := KillSlot(ctx, dev, n); err != nil {
				return nil, fmt.Errorf("wiping the old sealed key's slot %d: %w", n, err)
			}
		}
	}
	return key, nil
}

// SetRecovery gives the encrypted dev a new recovery passphrase, authorised by key (its
// disk key); the slots that the sealed-key token does not name (an earlier recovery
// passphrase) are wiped once the new one is in. It returns the recovery slot.
func SetRecovery(ctx context.Context, dev string, key, passphrase []byte) (int, error) {
	if err := TestKey(ctx, dev, key); err != nil {
		return 0, err
	}
	if len(passphrase) < 16 {
		return 0, errors.New("datadisk: a recovery passphrase must have at least 16 characters")
	}
	if _, err := sealedToken(ctx, dev); err != nil {
		return 0, err // without the token, every slot would look like a recovery slot
	}
	old, err := RecoverySlots(ctx, dev)
	if err != nil {
		return 0, err
	}
	// The new passphrase first: a failure leaves the old one working.
	slot, err := AddRecovery(ctx, dev, key, passphrase)
	if err != nil {
		return 0, err
	}
	for _, s := range old {
		if err := KillSlot(ctx, dev, s); err != nil {
			return slot, fmt.Errorf("wiping the old recovery slot %d: %w", s, err)
		}
	}
	return slot, nil
}

// recoveryAlphabet has 32 characters that cannot be mistaken for one another when read
// off a screen and typed (no 0/O, 1/I/L, 2/Z, 5/S, 8/B).
const recoveryAlphabet = "ACDEFGHJKMNPQRTUVWXY34679abcdefg"

// NewRecoveryPassphrase returns a random recovery passphrase: 8 groups of 5 characters
// from a 32-character alphabet (200 bits), joined by dashes.
func NewRecoveryPassphrase() ([]byte, error) {
	b := make([]byte, 40)
	if _, err := rand.Read(b); err != nil {
		return nil, fmt.Errorf("datadisk: %w", err)
	}
	var out strings.Builder
	for i, c := range b {
		if i > 0 && i%5 == 0 {
			out.WriteByte('-')
		}
		out.WriteByte(recoveryAlphabet[int(c)%len(recoveryAlphabet)])
	}
	return []byte(out.String()), nil
}

// RecoverySlots returns the key slots of the encrypted dev that its sealed-key token does
// not name: those of the recovery passphrase.
func RecoverySlots(ctx context.Context, dev string) ([]int, error) {
	tok, err := sealedToken(ctx, dev)
	if err != nil && !errors.Is(err, ErrNoToken) {
		return nil, err
	}
	slots, err := KeySlots(ctx, dev)
	if err != nil {
		return nil, err
	}
	var out []int
	for _, s := range slots {
		if !slices.Contains(tok.Keyslots, strconv.Itoa(s)) {
			out = append(out, s)
		}
	}
	return out, nil
}

// MinPassphrase is the shortest passphrase a disk without a TPM is encrypted with.
const MinPassphrase = 16

// FormatWithPassphrase encrypts the blank dev (Probe says Blank) for a machine without a
// TPM: a LUKS2 volume whose only key slot opens with passphrase (Argon2id, as the recovery
// slot), opened as /dev/mapper/MapperName with an ext4 file system, which it mounts on dir.
func FormatWithPassphrase(ctx context.Context, dev, dir string, passphrase []byte) (State, error) {
	st := State{Dev: dev, Kind: Encrypted}
	if len(passphrase) < MinPassphrase {
		return st, fmt.Errorf("datadisk: the disk passphrase must have at least %d characters", MinPassphrase)
	}
	if k, err := Probe(dev); err != nil || k != Blank {
		return st, fmt.Errorf("datadisk: %s is not blank (%v, %v): nothing changed", dev, k, err)
	}
	args := append([]string{"luksFormat"}, formatArgs...)
	args = append(args, recoveryKDF...)
	args = append(args, "--label", Label, "--key-slot", "0", "--key-file", SecretFD(0), dev)
	if _, err := cryptsetup(ctx, nil, [][]byte{passphrase}, args...); err != nil {
		return st, err
	}
	var err error
	if st.Mapped, err = LUKSOpen(ctx, dev, MapperName, passphrase); err != nil {
		return st, err
	}
	if err := Format(ctx, st.Mapped); err != nil {
		return st, err
	}
	if err := Mount(st.Mapped, dir); err != nil {
		return st, err
	}
	st.Mounted = true
	return st, nil
}

// OpenWithPassphrase opens the encrypted dev with passphrase (any of its key slots), checks
// its file system and mounts it on dir. A wrong passphrase returns an error wrapping
// ErrWrongKey and changes nothing.
func OpenWithPassphrase(ctx context.Context, dev, dir string, passphrase []byte, log *slog.Logger) (State, error) {
	st := State{Dev: dev, Kind: Encrypted}
	if err := TestKey(ctx, dev, passphrase); err != nil {
		return st, err
	}
	if err := ResumeReencrypt(ctx, dev, passphrase); err != nil {
		return st, err
	}
	var err error
	if st.Mapped, err = LUKSOpen(ctx, dev, MapperName, passphrase); err != nil {
		return st, err
	}
	if !checkFS(ctx, &st, log) {
		return st, errors.New(st.Problem)
	}
	if err := Mount(st.Mapped, dir); err != nil {
		return st, err
	}
	st.Mounted = true
	return st, nil
}

// migrateReserve is what encrypting a plain disk in place takes from its end for the LUKS2
// header: twice the 16 MiB header, as cryptsetup(8) advises for --reduce-device-size.
const migrateReserve = 32 << 20

// EncryptInPlace encrypts the unmounted plain ext4 disk dev in place, its only key slot
// opened by passphrase (Argon2id): e2fsck -f, resize2fs to free migrateReserve at its end,
// then cryptsetup reencrypt --encrypt, which shifts the data behind a new LUKS2 header and
// records its progress in that header (LUKS2 reencryption with checksum resilience), so a
// power cut during it is resumed (ResumeReencrypt) with the same passphrase, not lost.
// Sectors are 512 bytes: ext4 on a small disk has 1 KiB blocks, and dm-crypt's sectors
// must not be larger than the file system's blocks.
func EncryptInPlace(ctx context.Context, dev string, passphrase []byte) error {
	if len(passphrase) < MinPassphrase {
		return fmt.Errorf("datadisk: a passphrase must have at least %d characters", MinPassphrase)
	}
	if k, err := Probe(dev); err != nil || k != Ext {
		return fmt.Errorf("datadisk: %s does not hold a plain ext4 file system (%v, %v): nothing changed", dev, k, err)
	}
	if out, err := exec.CommandContext(ctx, "e2fsck", "-f", "-p", dev).CombinedOutput(); err != nil {
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() >= 4 {
			return fmt.Errorf("datadisk: e2fsck -f %s: %w: %s", dev, err, strings.TrimSpace(string(out)))
		}
	}
	size, err := deviceSize(dev)
	if err != nil {
		return err
	}
	if size < 4*migrateReserve {
		return fmt.Errorf("datadisk: %s is too small (%d bytes) to encrypt in place", dev, size)
	}
	newSize := strconv.FormatInt((size-migrateReserve)/1024, 10) + "K"
	if out, err := exec.CommandContext(ctx, "resize2fs", dev, newSize).CombinedOutput(); err != nil {
		return fmt.Errorf("datadisk: resize2fs %s %s (the file system must leave %d MiB free at the end): %w: %s",
			dev, newSize, migrateReserve>>20, err, strings.TrimSpace(string(out)))
	}
	args := []string{"reencrypt", "--encrypt", "--type", "luks2", "--cipher", "aes-xts-plain64", "--key-size", "512",
		"--hash", "sha256", "--sector-size", "512", "--use-urandom", "--reduce-device-size", strconv.Itoa(migrateReserve>>20) + "M"}
	args = append(args, recoveryKDF...)
	args = append(args, "--label", Label, "--key-slot", "0", "--key-file", SecretFD(0), dev)
	_, err = cryptsetup(ctx, nil, [][]byte{passphrase}, args...)
	return err
}

// ResumeReencrypt finishes an encryption in place that was interrupted (the header still
// requires online-reencrypt), with passphrase; a finished disk is left as it is.
func ResumeReencrypt(ctx context.Context, dev string, passphrase []byte) error {
	out, err := cryptsetup(ctx, nil, nil, "luksDump", "--dump-json-metadata", dev)
	if err != nil {
		return err
	}
	var md struct {
		Config struct {
			Requirements struct {
				Mandatory []string `json:"mandatory"`
			} `json:"requirements"`
		} `json:"config"`
	}
	if err := json.Unmarshal(out, &md); err != nil {
		return fmt.Errorf("datadisk: reading the LUKS2 metadata of %s: %w", dev, err)
	}
	for _, r := range md.Config.Requirements.Mandatory {
		if strings.HasPrefix(r, "online-reencrypt") {
			_, err := cryptsetup(ctx, nil, [][]byte{passphrase}, "reencrypt", "--resume-only", "--key-file", SecretFD(0), dev)
			return err
		}
	}
	return nil
}

// deviceSize is the size of the block device or image file dev.
func deviceSize(dev string) (int64, error) {
	f, err := os.Open(dev)
	if err != nil {
		return 0, fmt.Errorf("datadisk: %w", err)
	}
	defer f.Close()
	n, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		return 0, fmt.Errorf("datadisk: the size of %s: %w", dev, err)
	}
	return n, nil
}
