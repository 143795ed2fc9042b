package tpmseal

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/enrollment-appliance/aeappliance/testvm/swtpm/swtpmtest"
)

// swtpm is a software TPM 2.0 and a connection to it.
type swtpm struct {
	sim *swtpmtest.Sim
	tpm *TPM
}

func startSwtpm(t *testing.T, state string) *swtpm {
	t.Helper()
	sim := swtpmtest.Start(t, state)
	return &swtpm{sim: sim, tpm: FromStream(sim.Dial())}
}

// restart: a reboot, the same TPM state, the PCRs reset.
func (s *swtpm) restart() *swtpm {
	sim := s.sim.Restart()
	return &swtpm{sim: sim, tpm: FromStream(sim.Dial())}
}

var secret = []byte("0123456789abcdef0123456789abcdef-volume-key")

func TestSealUnseal(t *testing.T) {
	tp := startSwtpm(t, "")
	pcrs := []int{9, 7}
	blob, err := tp.tpm.Seal(secret, pcrs, nil)
	if err != nil {
		t.Fatalf("Seal: %v", err)
	}
	js, err := json.Marshal(blob)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(js, secret) || bytes.Contains(js, secret[:16]) {
		t.Fatal("the sealed blob contains the secret")
	}
	blob, err = ParseBlob(js)
	if err != nil {
		t.Fatalf("ParseBlob: %v", err)
	}
	if got := blob.PCRs; len(got) != 2 || got[0] != 7 || got[1] != 9 {
		t.Fatalf("blob PCRs = %v, want [7 9]", got)
	}
	got, err := tp.tpm.Unseal(blob)
	if err != nil || !bytes.Equal(got, secret) {
		t.Fatalf("Unseal = %q, %v; want the secret", got, err)
	}

	// A reboot: the same TPM state, the PCRs back to their power-on values.
	tp = tp.restart()
	if got, err := tp.tpm.Unseal(blob); err != nil || !bytes.Equal(got, secret) {
		t.Fatalf("Unseal after a restart on the same state = %q, %v; want the secret", got, err)
	}

	// Other firmware measured into PCR 9.
	if err := tp.tpm.Extend(9, sha256.Sum256([]byte("other firmware"))); err != nil {
		t.Fatalf("Extend: %v", err)
	}
	got, err = tp.tpm.Unseal(blob)
	if !errors.Is(err, ErrPCRMismatch) || got != nil {
		t.Fatalf("Unseal after extending PCR 9 = %q, %v; want ErrPCRMismatch and nothing", got, err)
	}
	if !strings.Contains(err.Error(), "PCR 9 changed") {
		t.Errorf("Unseal error %q does not name PCR 9", err)
	}

	// The disk moved to another machine: a TPM with other seeds.
	other := startSwtpm(t, "")
	got, err = other.tpm.Unseal(blob)
	if !errors.Is(err, ErrOtherTPM) || got != nil {
		t.Fatalf("Unseal on a fresh TPM = %q, %v; want ErrOtherTPM and nothing", got, err)
	}
}

// TestSealToExpected seals to values the PCRs will hold after a measurement, as provisioning
// does for the firmware the next boot measures.
func TestSealToExpected(t *testing.T) {
	tp := startSwtpm(t, "")
	cur, err := tp.tpm.ReadPCRs([]int{8})
	if err != nil {
		t.Fatalf("ReadPCRs: %v", err)
	}
	m := sha256.Sum256([]byte("kernel and initramfs"))
	next := sha256.Sum256(append(append([]byte{}, cur[0]...), m[:]...))
	blob, err := tp.tpm.Seal(secret, []int{8}, [][]byte{next[:]})
	if err != nil {
		t.Fatalf("Seal: %v", err)
	}
	if _, err := tp.tpm.Unseal(blob); !errors.Is(err, ErrPCRMismatch) {
		t.Fatalf("Unseal before the measurement = %v; want ErrPCRMismatch", err)
	}
	if err := tp.tpm.Extend(8, m); err != nil {
		t.Fatal(err)
	}
	if now, _ := tp.tpm.ReadPCRs([]int{8}); !bytes.Equal(now[0], next[:]) {
		t.Fatalf("PCR 8 after Extend = %x, want %x", now[0], next)
	}
	if got, err := tp.tpm.Unseal(blob); err != nil || !bytes.Equal(got, secret) {
		t.Fatalf("Unseal after the measurement = %q, %v; want the secret", got, err)
	}
}

func TestInfo(t *testing.T) {
	tp := startSwtpm(t, "")
	info, err := tp.tpm.Info()
	if err != nil {
		t.Fatalf("Info: %v", err)
	}
	if info.Manufacturer != "IBM" { // swtpm (libtpms) reports IBM's vendor ID
		t.Errorf("Manufacturer = %q, want IBM", info.Manufacturer)
	}
	if s := info.String(); !strings.HasPrefix(s, "TPM 2.0 present (manufacturer IBM") {
		t.Errorf("String = %q", s)
	}
}

func TestPolicyDigestAndBlobChecks(t *testing.T) {
	zero := make([]byte, 32)
	one := bytes.Repeat([]byte{1}, 32)
	a, err := PolicyDigest([]int{7, 9}, [][]byte{zero, one})
	if err != nil {
		t.Fatal(err)
	}
	b, err := PolicyDigest([]int{9, 7}, [][]byte{one, zero})
	if err != nil || !bytes.Equal(a, b) {
		t.Fatalf("PolicyDigest depends on the order PCRs are named in: %x vs %x (%v)", a, b, err)
	}
	if c, _ := PolicyDigest([]int{7, 9}, [][]byte{one, zero}); bytes.Equal(a, c) {
		t.Fatal("PolicyDigest ignores which PCR holds which value")
	}
	if _, err := PolicyDigest([]int{24}, [][]byte{zero}); err == nil {
		t.Fatal("PolicyDigest took PCR 24")
	}
	if _, err := PolicyDigest([]int{7}, [][]byte{zero[:20]}); err == nil {
		t.Fatal("PolicyDigest took a 20-byte value")
	}
	blob := Blob{Version: 1, Hash: "sha256", PCRs: []int{7, 9}, PCRValues: [][]byte{zero, one}, Policy: a,
		Public: []byte{0, 1}, Private: []byte{0, 1}}
	js, _ := json.Marshal(blob)
	if _, err := ParseBlob(js); err != nil {
		t.Fatalf("ParseBlob(valid) = %v", err)
	}
	for name, mut := range map[string]func(*Blob){
		"version":  func(b *Blob) { b.Version = 2 },
		"bank":     func(b *Blob) { b.Hash = "sha1" },
		"policy":   func(b *Blob) { b.PCRValues = [][]byte{one, one} },
		"order":    func(b *Blob) { b.PCRs = []int{9, 7} },
		"no areas": func(b *Blob) { b.Private = nil },
	} {
		bad := blob
		mut(&bad)
		js, _ := json.Marshal(bad)
		if _, err := ParseBlob(js); err == nil {
			t.Errorf("ParseBlob took a blob with a wrong %s", name)
		}
	}
}

func TestSealRefusesBadSecrets(t *testing.T) {
	tp := startSwtpm(t, "")
	if _, err := tp.tpm.Seal(nil, []int{7}, nil); err == nil {
		t.Error("Seal took an empty secret")
	}
	if _, err := tp.tpm.Seal(make([]byte, MaxSecret+1), []int{7}, nil); err == nil {
		t.Error("Seal took a secret over MaxSecret")
	}
}
