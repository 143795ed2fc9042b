package tpmseal

import (
	"crypto/sha256"
	"encoding/json"
	"fmt"
)

// CapPCR is the PCR the appliance extends once its data disk is open (with CapDigest), and
// which the disk key is sealed to at its power-on value: nothing that runs later in the same
// boot (a compromised service, an admin's mistake) can unseal the key again. PCR 15 is left
// to the operating system by the PC Client Platform Firmware Profile (§3.3.4, PCRs 8-15) and
// used for the same purpose by other systems' disk unlockers.
const CapPCR = 15

// CapDigest is what CapPCR is extended with after the disk is opened.
var CapDigest = sha256.Sum256([]byte("aeappliance: data disk opened; no more unsealing this boot"))

// DiskPCRs are the PCRs the data disk's key is sealed to: what the platform firmware
// measured before the appliance's kernel ran (PC Client Platform Firmware Profile §3.3.4:
// 0 the firmware's code, 2 option ROMs, among them QEMU's linuxboot ROM, 4 the boot
// loader or kernel a UEFI firmware starts, 7 the Secure Boot policy) and CapPCR. Another
// machine's TPM cannot load the sealed key at all; the same machine booted by other
// firmware, or with another boot loader or kernel where the platform measures it, does not
// unseal it. A firmware update of the board or a board swap needs the recovery passphrase
// once, after which the key is sealed to the new values.
var DiskPCRs = []int{0, 2, 4, 7, CapPCR}

// DiskSealer seals the data disk's key (appliance/datadisk.Sealer) to the TPM that Open
// opens and the values DiskPCRs hold now.
type DiskSealer struct {
	Open func() (*TPM, error)
	PCRs []int // default DiskPCRs
}

func (s DiskSealer) pcrs() []int {
	if s.PCRs == nil {
		return DiskPCRs
	}
	return s.PCRs
}

// Seal seals key and returns the Blob's JSON.
func (s DiskSealer) Seal(key []byte) (json.RawMessage, error) {
	t, err := s.Open()
	if err != nil {
		return nil, err
	}
	defer t.Close()
	blob, err := t.Seal(key, s.pcrs(), nil)
	if err != nil {
		return nil, err
	}
	return json.Marshal(blob)
}

// Unseal returns the key sealed in the Blob JSON sealed. Its errors wrap ErrOtherTPM or
// ErrPCRMismatch when that is why it cannot.
func (s DiskSealer) Unseal(sealed json.RawMessage) ([]byte, error) {
	blob, err := ParseBlob(sealed)
	if err != nil {
		return nil, err
	}
	t, err := s.Open()
	if err != nil {
		return nil, err
	}
	defer t.Close()
	return t.Unseal(blob)
}

// Describe is "TPM 2.0, PCRs 0,2,4,7,15 (SHA-256)".
func (s DiskSealer) Describe() string {
	return fmt.Sprintf("TPM 2.0, PCRs %s (SHA-256)", joinInts(s.pcrs()))
}

// Cap extends CapPCR with CapDigest on the TPM open opens.
func Cap(open func() (*TPM, error)) error {
	t, err := open()
	if err != nil {
		return err
	}
	defer t.Close()
	return t.Extend(CapPCR, CapDigest)
}
