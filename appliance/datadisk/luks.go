package datadisk

// LUKS2 (the LUKS2 On-Disk Format Specification, version 1.1.x) with Debian's cryptsetup:
// there is no maintained Go implementation that formats LUKS2 (the Go packages that exist
// only open volumes, or only LUKS1), and cryptsetup is the reference implementation the
// specification describes, with its Argon2 key slots and JSON tokens.
//
// Secrets never appear on a command line (where /proc/PID/cmdline shows them to every
// process) nor in a log: each one goes to cryptsetup on a pipe of its own, named by the
// path /proc/self/fd/N, which cryptsetup reads as a key file (the exact bytes, no newline
// handling). Error messages carry cryptsetup's own messages, which never hold a key.

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
)

// KeySize is the size of the random disk key a TPM seals: the passphrase of the LUKS2 key
// slot the appliance unlocks at boot (not the volume key, which cryptsetup makes).
const KeySize = 32

// NewKey returns a random disk key of KeySize bytes.
func NewKey() ([]byte, error) {
	k := make([]byte, KeySize)
	if _, err := rand.Read(k); err != nil {
		return nil, fmt.Errorf("datadisk: %w", err)
	}
	return k, nil
}

// The LUKS2 parameters. The volume key is 512 bits of aes-xts-plain64 (two AES-256 keys,
// IEEE 1619 XTS), made by cryptsetup from the kernel's random source; sectors are 4096
// bytes, ext4's block size, which halves the per-sector work of 512-byte sectors.
var formatArgs = []string{
	"--type", "luks2", "--cipher", "aes-xts-plain64", "--key-size", "512", "--hash", "sha256",
	"--sector-size", "4096", "--use-urandom",
}

// keySlotKDF is the KDF of the key slot opened by the random disk key: PBKDF2 with
// cryptsetup's minimum of 1000 iterations. A KDF slows down guessing a low-entropy
// passphrase; a 256-bit random key cannot be guessed however fast each try is, so a
// memory-hard KDF would only cost every boot seconds under emulation and 1 GiB of memory.
var keySlotKDF = []string{"--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000"}

// recoveryKDF is the KDF of the recovery passphrase's slot: Argon2id (RFC 9106) with fixed
// costs, 64 MiB of memory, 4 passes, 2 lanes, rather than cryptsetup's benchmark, which
// would size the cost to the machine that formats (a fast host, or the slow emulated VM)
// and could ask for more memory than the 2-core appliance with a few hundred MiB has free.
// About a quarter of a second per try on a current x86 core.
var recoveryKDF = []string{"--pbkdf", "argon2id", "--pbkdf-memory", "65536", "--pbkdf-force-iterations", "4",
	"--pbkdf-parallel", "2"}

// ErrWrongKey is returned when no key slot opens with the key or passphrase given.
var ErrWrongKey = errors.New("datadisk: no key slot of the encrypted disk opens with this key")

// cryptsetup runs cryptsetup with args, stdin on its standard input, and secrets on pipes
// that args name as /proc/self/fd/3, /proc/self/fd/4, ... (SecretFD). It returns the
// standard output.
func cryptsetup(ctx context.Context, stdin []byte, secrets [][]byte, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, "cryptsetup", append([]string{"--batch-mode"}, args...)...)
	// The image runs no udev: libdevmapper makes the /dev/mapper nodes itself instead of
	// waiting for udev to (dmsetup(8), DM_DISABLE_UDEV).
	cmd.Env = append(os.Environ(), "DM_DISABLE_UDEV=1")
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	var ends []*os.File
	defer func() {
		for _, f := range ends {
			f.Close()
		}
	}()
	for _, s := range secrets {
		r, w, err := os.Pipe()
		if err != nil {
			return nil, fmt.Errorf("datadisk: %w", err)
		}
		ends = append(ends, r, w)
		cmd.ExtraFiles = append(cmd.ExtraFiles, r)
		// A pipe holds 64 KiB: a key or passphrase is written whole before cryptsetup runs.
		if len(s) > 4096 {
			return nil, errors.New("datadisk: a key over 4096 bytes")
		}
		if _, err := w.Write(s); err != nil {
			return nil, fmt.Errorf("datadisk: %w", err)
		}
		w.Close()
	}
	err := cmd.Run()
	if err != nil {
		msg := strings.TrimSpace(stderr.String())
		var ee *exec.ExitError
		// cryptsetup exits 2 for "no permission (bad passphrase)" (cryptsetup(8), RETURN CODES).
		if errors.As(err, &ee) && ee.ExitCode() == 2 && len(secrets) > 0 {
			return nil, fmt.Errorf("%w (%s)", ErrWrongKey, msg)
		}
		return nil, fmt.Errorf("datadisk: cryptsetup %s: %w: %s", args[0], err, msg)
	}
	return stdout.Bytes(), nil
}

// SecretFD is the path by which cryptsetup reads the i-th secret (from 0) passed to it.
func SecretFD(i int) string { return "/proc/self/fd/" + strconv.Itoa(3+i) }

// LUKSFormat makes dev a LUKS2 volume whose first key slot (0) opens with key (a random
// disk key, NewKey), and labels it Label. It erases what dev held.
func LUKSFormat(ctx context.Context, dev string, key []byte) error {
	if len(key) < KeySize {
		return fmt.Errorf("datadisk: a disk key of %d bytes; it must be at least %d random bytes", len(key), KeySize)
	}
	args := append([]string{"luksFormat"}, formatArgs...)
	args = append(args, keySlotKDF...)
	args = append(args, "--label", Label, "--key-slot", "0", "--key-file", SecretFD(0), dev)
	_, err := cryptsetup(ctx, nil, [][]byte{key}, args...)
	return err
}

// AddRecovery adds a key slot to the LUKS2 volume dev that opens with passphrase (recovery
// at the console), authorised by key (any key or passphrase of the volume), and returns its
// number.
func AddRecovery(ctx context.Context, dev string, key, passphrase []byte) (int, error) {
	if len(passphrase) < 16 {
		return 0, errors.New("datadisk: a recovery passphrase must have at least 16 characters")
	}
	return addKey(ctx, dev, key, passphrase, recoveryKDF)
}

// AddKey adds a key slot to the LUKS2 volume dev that opens with newKey (a random disk key,
// NewKey, as for the slot LUKSFormat makes), authorised by auth (any key or passphrase of
// the volume), and returns its number: a re-seal after recovery.
func AddKey(ctx context.Context, dev string, auth, newKey []byte) (int, error) {
	if len(newKey) < KeySize {
		return 0, fmt.Errorf("datadisk: a disk key of %d bytes; it must be at least %d random bytes", len(newKey), KeySize)
	}
	return addKey(ctx, dev, auth, newKey, keySlotKDF)
}

func addKey(ctx context.Context, dev string, auth, secret []byte, kdf []string) (int, error) {
	before, err := keySlots(ctx, dev)
	if err != nil {
		return 0, err
	}
	args := append([]string{"luksAddKey"}, kdf...)
	args = append(args, "--key-file", SecretFD(0), dev, SecretFD(1))
	if _, err := cryptsetup(ctx, nil, [][]byte{auth, secret}, args...); err != nil {
		return 0, err
	}
	after, err := keySlots(ctx, dev)
	if err != nil {
		return 0, err
	}
	for s := range after {
		if _, ok := before[s]; !ok {
			return s, nil
		}
	}
	return 0, errors.New("datadisk: cryptsetup luksAddKey added no key slot")
}

// KillSlot wipes key slot slot of the LUKS2 volume dev (cryptsetup luksKillSlot, which in
// batch mode asks for no remaining passphrase: callers keep another slot that opens).
func KillSlot(ctx context.Context, dev string, slot int) error {
	_, err := cryptsetup(ctx, nil, nil, "luksKillSlot", dev, strconv.Itoa(slot))
	return err
}

// TestKey checks that key (a disk key or a passphrase) opens a key slot of the LUKS2 volume
// dev without opening the volume (cryptsetup open --test-passphrase, which needs no
// device-mapper). It returns an error wrapping ErrWrongKey when none opens.
func TestKey(ctx context.Context, dev string, key []byte) error {
	if len(key) == 0 {
		return ErrWrongKey
	}
	_, err := cryptsetup(ctx, nil, [][]byte{key}, "open", "--type", "luks2", "--test-passphrase",
		"--key-file", SecretFD(0), dev)
	return err
}

// MapperName is the device-mapper name under which the appliance opens its data disk.
const MapperName = "aedata"

// LUKSOpen opens the LUKS2 volume dev as /dev/mapper/name with key and returns that path.
// It needs the kernel's device-mapper and dm-crypt (the appliance image loads them).
func LUKSOpen(ctx context.Context, dev, name string, key []byte) (string, error) {
	if _, err := cryptsetup(ctx, nil, [][]byte{key}, "open", "--type", "luks2",
		"--key-file", SecretFD(0), dev, name); err != nil {
		return "", err
	}
	return "/dev/mapper/" + name, nil
}

// LUKSClose closes the opened volume name (its file system unmounted first).
func LUKSClose(ctx context.Context, name string) error {
	_, err := cryptsetup(ctx, nil, nil, "close", name)
	return err
}

// IsLUKS reports whether dev starts with a LUKS2 header (magic "LUKS\xba\xbe", version 2).
func IsLUKS(dev string) (bool, error) {
	f, err := os.Open(dev)
	if err != nil {
		return false, fmt.Errorf("datadisk: %w", err)
	}
	defer f.Close()
	hdr := make([]byte, 8)
	if _, err := io.ReadFull(f, hdr); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return false, nil
		}
		return false, fmt.Errorf("datadisk: reading %s: %w", dev, err)
	}
	return bytes.Equal(hdr, []byte("LUKS\xba\xbe\x00\x02")), nil
}

// luksMetadata is the part of a LUKS2 header's JSON area the appliance reads (LUKS2
// On-Disk Format §3: keyslots, tokens).
type luksMetadata struct {
	Keyslots map[string]json.RawMessage `json:"keyslots"`
	Tokens   map[string]json.RawMessage `json:"tokens"`
}

func readMetadata(ctx context.Context, dev string) (*luksMetadata, error) {
	out, err := cryptsetup(ctx, nil, nil, "luksDump", "--dump-json-metadata", dev)
	if err != nil {
		return nil, err
	}
	var m luksMetadata
	if err := json.Unmarshal(out, &m); err != nil {
		return nil, fmt.Errorf("datadisk: reading the LUKS2 metadata of %s: %w", dev, err)
	}
	return &m, nil
}

// keySlots is the set of the volume's key slot numbers.
func keySlots(ctx context.Context, dev string) (map[int]struct{}, error) {
	m, err := readMetadata(ctx, dev)
	if err != nil {
		return nil, err
	}
	slots := map[int]struct{}{}
	for k := range m.Keyslots {
		n, err := strconv.Atoi(k)
		if err != nil {
			return nil, fmt.Errorf("datadisk: key slot %q in the LUKS2 metadata of %s", k, dev)
		}
		slots[n] = struct{}{}
	}
	return slots, nil
}

// KeySlots returns the volume's key slot numbers, ascending.
func KeySlots(ctx context.Context, dev string) ([]int, error) {
	slots, err := keySlots(ctx, dev)
	if err != nil {
		return nil, err
	}
	var out []int
	for s := range slots {
		out = append(out, s)
	}
	slices.Sort(out)
	return out, nil
}

// TokenType is the type of the LUKS2 token in which the appliance keeps the TPM-sealed
// disk key (appliance/tpmseal's blob); the LUKS2 format reserves "luks2-" for cryptsetup.
const TokenType = "aeappliance-tpm2"

// Token is a LUKS2 token of the appliance: its type, the key slots it opens and what it
// holds (the sealed blob's JSON). Tokens are not secret: the header is readable by anyone
// who has the disk.
type Token struct {
	Type     string          `json:"type"`
	Keyslots []string        `json:"keyslots"`
	Sealed   json.RawMessage `json:"sealed"`
}

// SetToken stores tok in the volume's header, replacing a token of the same type.
func SetToken(ctx context.Context, dev string, tok Token) error {
	if tok.Type == "" || strings.HasPrefix(tok.Type, "luks2-") {
		return fmt.Errorf("datadisk: token type %q", tok.Type)
	}
	js, err := json.Marshal(tok)
	if err != nil {
		return fmt.Errorf("datadisk: %w", err)
	}
	id, _, err := findToken(ctx, dev, tok.Type)
	if err != nil && !errors.Is(err, ErrNoToken) {
		return err
	}
	args := []string{"token", "import", "--json-file", "-"}
	if err == nil {
		args = append(args, "--token-id", strconv.Itoa(id), "--token-replace")
	}
	_, err = cryptsetup(ctx, js, nil, append(args, dev)...)
	return err
}

// ErrNoToken is returned by GetToken when the volume has no token of the type asked for.
var ErrNoToken = errors.New("datadisk: the encrypted disk has no such token")

// GetToken reads the volume's token of type typ.
func GetToken(ctx context.Context, dev, typ string) (Token, error) {
	_, tok, err := findToken(ctx, dev, typ)
	return tok, err
}

func findToken(ctx context.Context, dev, typ string) (int, Token, error) {
	m, err := readMetadata(ctx, dev)
	if err != nil {
		return 0, Token{}, err
	}
	for id, raw := range m.Tokens {
		var tok Token
		if err := json.Unmarshal(raw, &tok); err != nil || tok.Type != typ {
			continue
		}
		n, err := strconv.Atoi(id)
		if err != nil {
			return 0, Token{}, fmt.Errorf("datadisk: token %q in the LUKS2 metadata of %s", id, dev)
		}
		return n, tok, nil
	}
	return 0, Token{}, fmt.Errorf("%w (type %s)", ErrNoToken, typ)
}
