package datadisk

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"reflect"
	"testing"
)

// TestLUKS formats an image file (no device-mapper needed for anything but open and close,
// which the appliance does in the VM).
func TestLUKS(t *testing.T) {
	needTool(t, "cryptsetup", "cryptsetup-bin")
	ctx := context.Background()
	dev := image(t, 32<<20, nil)
	key, err := NewKey()
	if err != nil || len(key) != KeySize {
		t.Fatalf("NewKey = %d bytes, %v", len(key), err)
	}
	if ok, err := IsLUKS(dev); err != nil || ok {
		t.Fatalf("IsLUKS(blank) = %v, %v", ok, err)
	}
	if err := LUKSFormat(ctx, dev, key[:16]); err == nil {
		t.Fatal("LUKSFormat took a 16-byte key")
	}
	if err := LUKSFormat(ctx, dev, key); err != nil {
		t.Fatalf("LUKSFormat: %v", err)
	}
	if ok, err := IsLUKS(dev); err != nil || !ok {
		t.Fatalf("IsLUKS(formatted) = %v, %v", ok, err)
	}
	if err := TestKey(ctx, dev, key); err != nil {
		t.Fatalf("TestKey(the key) = %v", err)
	}
	wrong := bytes.Clone(key)
	wrong[0] ^= 1
	if err := TestKey(ctx, dev, wrong); !errors.Is(err, ErrWrongKey) {
		t.Fatalf("TestKey(a wrong key) = %v, want ErrWrongKey", err)
	}

	passphrase := []byte("crane-violet-7Q4M-harbor-9XK2")
	if _, err := AddRecovery(ctx, dev, wrong, passphrase); !errors.Is(err, ErrWrongKey) {
		t.Fatalf("AddRecovery authorised by a wrong key = %v, want ErrWrongKey", err)
	}
	slot, err := AddRecovery(ctx, dev, key, passphrase)
	if err != nil || slot != 1 {
		t.Fatalf("AddRecovery = %d, %v; want slot 1", slot, err)
	}
	if err := TestKey(ctx, dev, passphrase); err != nil {
		t.Fatalf("TestKey(the recovery passphrase) = %v", err)
	}
	if err := TestKey(ctx, dev, passphrase[:len(passphrase)-1]); !errors.Is(err, ErrWrongKey) {
		t.Fatalf("TestKey(a shortened passphrase) = %v, want ErrWrongKey", err)
	}
	if slots, err := KeySlots(ctx, dev); err != nil || len(slots) != 2 || slots[0] != 0 || slots[1] != 1 {
		t.Fatalf("KeySlots = %v, %v; want [0 1]", slots, err)
	}

	// The parameters the header records.
	out, err := exec.Command("cryptsetup", "luksDump", "--dump-json-metadata", dev).Output()
	if err != nil {
		t.Fatal(err)
	}
	var md struct {
		Keyslots map[string]struct {
			KeySize int `json:"key_size"`
			KDF     struct {
				Type       string `json:"type"`
				Iterations int    `json:"iterations"`
				Memory     int    `json:"memory"`
			} `json:"kdf"`
		} `json:"keyslots"`
		Segments map[string]struct {
			Encryption string `json:"encryption"`
			SectorSize int    `json:"sector_size"`
		} `json:"segments"`
	}
	if err := json.Unmarshal(out, &md); err != nil {
		t.Fatal(err)
	}
	if s := md.Segments["0"]; s.Encryption != "aes-xts-plain64" || s.SectorSize != 4096 {
		t.Errorf("segment 0 = %+v, want aes-xts-plain64 with 4096-byte sectors", s)
	}
	if k := md.Keyslots["0"]; k.KeySize != 64 || k.KDF.Type != "pbkdf2" || k.KDF.Iterations != 1000 {
		t.Errorf("key slot 0 = %+v, want a 512-bit key behind PBKDF2 with 1000 iterations", k)
	}
	if k := md.Keyslots["1"]; k.KeySize != 64 || k.KDF.Type != "argon2id" || k.KDF.Memory != 65536 {
		t.Errorf("key slot 1 = %+v, want a 512-bit key behind Argon2id with 64 MiB", k)
	}

	// The token round trip, and replacing it (a re-seal).
	if _, err := GetToken(ctx, dev, TokenType); !errors.Is(err, ErrNoToken) {
		t.Fatalf("GetToken before SetToken = %v, want ErrNoToken", err)
	}
	sealed := json.RawMessage(`{"version":1,"pcrs":[8,9]}`)
	if err := SetToken(ctx, dev, Token{Type: TokenType, Keyslots: []string{"0"}, Sealed: sealed}); err != nil {
		t.Fatalf("SetToken: %v", err)
	}
	tok, err := GetToken(ctx, dev, TokenType)
	if err != nil || tok.Type != TokenType || len(tok.Keyslots) != 1 || tok.Keyslots[0] != "0" {
		t.Fatalf("GetToken = %+v, %v", tok, err)
	}
	var want, got any
	json.Unmarshal(sealed, &want)
	json.Unmarshal(tok.Sealed, &got)
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("token holds %s, want %s", tok.Sealed, sealed)
	}
	resealed := json.RawMessage(`{"version":1,"pcrs":[8,9,11]}`)
	if err := SetToken(ctx, dev, Token{Type: TokenType, Keyslots: []string{"0"}, Sealed: resealed}); err != nil {
		t.Fatalf("SetToken (replace): %v", err)
	}
	if tok, err := GetToken(ctx, dev, TokenType); err != nil || !bytes.Contains(tok.Sealed, []byte("11")) {
		t.Fatalf("GetToken after replacing = %s, %v", tok.Sealed, err)
	}
	md2, err := readMetadata(ctx, dev)
	if err != nil || len(md2.Tokens) != 1 {
		t.Fatalf("tokens after replacing: %d, %v; want 1", len(md2.Tokens), err)
	}
	if err := SetToken(ctx, dev, Token{Type: "luks2-keyring"}); err == nil {
		t.Error("SetToken took a luks2- type, which cryptsetup reserves")
	}

	// Neither secret is anywhere in the image.
	raw, err := os.ReadFile(dev)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(raw, key) || bytes.Contains(raw, key[:12]) {
		t.Error("the image holds the disk key")
	}
	if bytes.Contains(raw, passphrase) || bytes.Contains(raw, passphrase[:12]) {
		t.Error("the image holds the recovery passphrase")
	}
}

// TestLUKSRefusesShortPassphrase: a recovery passphrase is long enough not to be guessed.
func TestLUKSRefusesShortPassphrase(t *testing.T) {
	if _, err := AddRecovery(context.Background(), "/nonexistent", make([]byte, KeySize), []byte("short")); err == nil {
		t.Fatal("AddRecovery took a 5-character passphrase")
	}
}
