// Package tpmseal seals small secrets (the data disk's volume key) to the appliance's TPM 2.0
// so that only the same TPM, with the same values in a chosen set of PCRs, gives them back
// (TPM 2.0 Library, Part 1 §19.6 "Sealed Data Objects", Part 3 §23.7 TPM2_PolicyPCR).
//
// The secret becomes a keyed-hash object with no user authorisation: its only authorisation
// is a policy of TPM2_PolicyPCR over the SHA-256 bank of the selected PCRs and their values.
// Its parent is the storage root key of the owner hierarchy, made from the TCG's ECC P-256 SRK
// template (TCG TPM v2.0 Provisioning Guidance §7.5.1): the same TPM with the same owner seed
// derives the same key every time, so nothing is persisted in the TPM's NV memory, and a TPM
// whose owner seed differs (another machine, a cleared TPM) cannot load the sealed object at
// all. The object is FixedTPM and FixedParent (it cannot be duplicated off the TPM).
//
// Sessions are salted with the SRK's public key and encrypt the secret in both directions
// (Part 1 §21 "Session-based encryption"), so the volume key never crosses the bus between
// the CPU and a discrete TPM in clear.
//
// The sealed blob (Blob) is JSON with a version: the object's public and private areas (the
// private one encrypted by the TPM under the SRK), the PCR selection, the values it was sealed
// to and the policy digest. It is not secret, but it is bound to the TPM that made it.
package tpmseal

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
	"github.com/google/go-tpm/tpm2/transport/linuxtpm"
)

// DevicePath is the kernel's TPM 2.0 resource manager, which flushes what a client leaves
// loaded when it closes the device.
const DevicePath = "/dev/tpmrm0"

// MaxSecret is the largest secret Seal takes: MAX_SYM_DATA, the size of a sealed data
// object's sensitive data (TPM 2.0 Part 2 §10.4.9, 128 on PC Client TPMs).
const MaxSecret = 128

var (
	// ErrPCRMismatch: the PCRs do not hold the values the secret was sealed to (other
	// firmware booted, or a PCR was extended since).
	ErrPCRMismatch = errors.New("tpmseal: the PCRs do not hold the values the secret was sealed to")
	// ErrOtherTPM: the sealed object does not belong to this TPM (the disk was moved to
	// another machine, or this TPM was cleared).
	ErrOtherTPM = errors.New("tpmseal: the secret was sealed by another TPM (or this TPM was cleared)")
)

// TPM is an open TPM 2.0.
type TPM struct {
	t      transport.TPM
	closer io.Closer
}

// Open opens the TPM device at path (DevicePath on the appliance).
func Open(path string) (*TPM, error) {
	t, err := linuxtpm.Open(path)
	if err != nil {
		return nil, fmt.Errorf("tpmseal: opening %s: %w", path, err)
	}
	return &TPM{t: t, closer: t}, nil
}

// FromStream uses a raw TPM 2.0 command stream, such as swtpm's server socket: each command
// is written whole and its response read whole, framed by the size in its header (TPM 2.0
// Part 1 §18.2 "Command/Response Structure"). go-tpm's transport.FromReadWriter reads a
// response with a single Read, which suits a character device but not a stream socket.
func FromStream(rw io.ReadWriteCloser) *TPM {
	return &TPM{t: streamTPM{rw}, closer: rw}
}

// New uses t, which the caller closes.
func New(t transport.TPM) *TPM { return &TPM{t: t} }

// Close closes the TPM's transport.
func (t *TPM) Close() error {
	if t.closer == nil {
		return nil
	}
	return t.closer.Close()
}

// streamTPM frames commands and responses on a byte stream.
type streamTPM struct{ rw io.ReadWriter }

// maxResponse bounds a response; the largest TPM 2.0 responses are a few KiB.
const maxResponse = 1 << 16

func (s streamTPM) Send(cmd []byte) ([]byte, error) {
	if _, err := s.rw.Write(cmd); err != nil {
		return nil, fmt.Errorf("tpmseal: sending a TPM command: %w", err)
	}
	hdr := make([]byte, 10) // tag (2), responseSize (4), responseCode (4)
	if _, err := io.ReadFull(s.rw, hdr); err != nil {
		return nil, fmt.Errorf("tpmseal: reading a TPM response: %w", err)
	}
	size := binary.BigEndian.Uint32(hdr[2:6])
	if size < 10 || size > maxResponse {
		return nil, fmt.Errorf("tpmseal: TPM response of %d bytes", size)
	}
	rsp := make([]byte, size)
	copy(rsp, hdr)
	if _, err := io.ReadFull(s.rw, rsp[10:]); err != nil {
		return nil, fmt.Errorf("tpmseal: reading a TPM response: %w", err)
	}
	return rsp, nil
}

// Info describes a TPM.
type Info struct {
	Manufacturer string // the TCG vendor ID's four characters, e.g. "IBM", "INTC", "STM"
	Vendor       string // the vendor strings, e.g. "SW   TPM"
	Firmware     string // firmware version, e.g. "20191023.0.0"
}

func (i Info) String() string {
	s := "TPM 2.0 present (manufacturer " + i.Manufacturer
	if i.Vendor != "" {
		s += ", " + i.Vendor
	}
	if i.Firmware != "" {
		s += ", firmware " + i.Firmware
	}
	return s + ")"
}

// Info reads the TPM's manufacturer, vendor strings and firmware version (TPM 2.0 Part 2
// §6.13 TPM_PT_MANUFACTURER to TPM_PT_FIRMWARE_VERSION_2).
func (t *TPM) Info() (Info, error) {
	rsp, err := tpm2.GetCapability{
		Capability:    tpm2.TPMCapTPMProperties,
		Property:      uint32(tpm2.TPMPTManufacturer),
		PropertyCount: 7,
	}.Execute(t.t)
	if err != nil {
		return Info{}, fmt.Errorf("tpmseal: reading the TPM's properties: %w", err)
	}
	props, err := rsp.CapabilityData.Data.TPMProperties()
	if err != nil {
		return Info{}, fmt.Errorf("tpmseal: reading the TPM's properties: %w", err)
	}
	v := map[tpm2.TPMPT]uint32{}
	for _, p := range props.TPMProperty {
		v[p.Property] = p.Value
	}
	var info Info
	info.Manufacturer = chars(v[tpm2.TPMPTManufacturer])
	for pt := tpm2.TPMPTVendorString1; pt <= tpm2.TPMPTVendorString1+3; pt++ {
		info.Vendor += chars(v[pt])
	}
	info.Vendor = strings.TrimSpace(info.Vendor)
	fw1, fw2 := v[tpm2.TPMPTFirmwareVersion1], v[tpm2.TPMPTFirmwareVersion1+1]
	if fw1 != 0 || fw2 != 0 {
		info.Firmware = fmt.Sprintf("%d.%d.%d.%d", fw1>>16, fw1&0xffff, fw2>>16, fw2&0xffff)
	}
	return info, nil
}

// chars is a TPM property of four ASCII characters, without padding.
func chars(v uint32) string {
	b := binary.BigEndian.AppendUint32(nil, v)
	var s strings.Builder
	for _, c := range b {
		if c >= 0x20 && c < 0x7f {
			s.WriteByte(c)
		}
	}
	return strings.TrimSpace(s.String())
}

// selection is the SHA-256 bank of pcrs.
func selection(pcrs []int) (tpm2.TPMLPCRSelection, error) {
	if len(pcrs) == 0 {
		return tpm2.TPMLPCRSelection{}, errors.New("tpmseal: no PCRs selected")
	}
	u := make([]uint, len(pcrs))
	for i, p := range pcrs {
		if p < 0 || p > 23 {
			return tpm2.TPMLPCRSelection{}, fmt.Errorf("tpmseal: PCR %d is out of range (0-23)", p)
		}
		u[i] = uint(p)
	}
	return tpm2.TPMLPCRSelection{PCRSelections: []tpm2.TPMSPCRSelection{{
		Hash: tpm2.TPMAlgSHA256, PCRSelect: tpm2.PCClientCompatible.PCRs(u...),
	}}}, nil
}

// normPCRs is pcrs sorted without repeats: the order in which the TPM concatenates their
// values for TPM2_PolicyPCR (ascending index, Part 3 §23.7).
func normPCRs(pcrs []int) []int {
	p := slices.Clone(pcrs)
	slices.Sort(p)
	return slices.Compact(p)
}

// ReadPCRs returns the SHA-256 values of pcrs, in the order given.
func (t *TPM) ReadPCRs(pcrs []int) ([][]byte, error) {
	out := make([][]byte, len(pcrs))
	for i, p := range pcrs {
		sel, err := selection([]int{p})
		if err != nil {
			return nil, err
		}
		rsp, err := tpm2.PCRRead{PCRSelectionIn: sel}.Execute(t.t)
		if err != nil {
			return nil, fmt.Errorf("tpmseal: reading PCR %d: %w", p, err)
		}
		if len(rsp.PCRValues.Digests) != 1 || len(rsp.PCRValues.Digests[0].Buffer) != sha256.Size {
			return nil, fmt.Errorf("tpmseal: PCR %d has no SHA-256 value (is the SHA-256 bank allocated?)", p)
		}
		out[i] = rsp.PCRValues.Digests[0].Buffer
	}
	return out, nil
}

// Extend extends PCR pcr's SHA-256 bank with digest: new = SHA-256(old || digest)
// (Part 3 §22.2 TPM2_PCR_Extend).
func (t *TPM) Extend(pcr int, digest [sha256.Size]byte) error {
	if _, err := selection([]int{pcr}); err != nil {
		return err
	}
	_, err := tpm2.PCRExtend{
		PCRHandle: tpm2.AuthHandle{Handle: tpm2.TPMHandle(pcr), Auth: tpm2.PasswordAuth(nil)},
		Digests: tpm2.TPMLDigestValues{Digests: []tpm2.TPMTHA{{
			HashAlg: tpm2.TPMAlgSHA256, Digest: digest[:],
		}}},
	}.Execute(t.t)
	if err != nil {
		return fmt.Errorf("tpmseal: extending PCR %d: %w", pcr, err)
	}
	return nil
}

// PolicyDigest is the digest of the policy TPM2_PolicyPCR(pcrs, values) starting from an
// empty policy (Part 3 §23.7): SHA-256(0^32 || TPM_CC_PolicyPCR || selection ||
// SHA-256(values concatenated in ascending PCR order)). values[i] belongs to pcrs[i].
func PolicyDigest(pcrs []int, values [][]byte) ([]byte, error) {
	if len(values) != len(pcrs) {
		return nil, fmt.Errorf("tpmseal: %d PCR values for %d PCRs", len(values), len(pcrs))
	}
	byPCR := map[int][]byte{}
	for i, p := range pcrs {
		if len(values[i]) != sha256.Size {
			return nil, fmt.Errorf("tpmseal: the value for PCR %d is %d bytes, not %d", p, len(values[i]), sha256.Size)
		}
		if prev, ok := byPCR[p]; ok && !bytes.Equal(prev, values[i]) {
			return nil, fmt.Errorf("tpmseal: two values for PCR %d", p)
		}
		byPCR[p] = values[i]
	}
	sorted := normPCRs(pcrs)
	sel, err := selection(sorted)
	if err != nil {
		return nil, err
	}
	h := sha256.New()
	for _, p := range sorted {
		h.Write(byPCR[p])
	}
	calc, err := tpm2.NewPolicyCalculator(tpm2.TPMAlgSHA256)
	if err != nil {
		return nil, err
	}
	if err := (tpm2.PolicyPCR{Pcrs: sel, PcrDigest: tpm2.TPM2BDigest{Buffer: h.Sum(nil)}}).Update(calc); err != nil {
		return nil, fmt.Errorf("tpmseal: computing the PCR policy: %w", err)
	}
	return calc.Hash().Digest, nil
}

// BlobVersion is the version of the Blob format this package writes and reads.
const BlobVersion = 1

// Blob is a sealed secret: serialise it with json.Marshal and read it with ParseBlob.
type Blob struct {
	Version   int      `json:"version"`
	Hash      string   `json:"pcrBank"`   // always "sha256"
	PCRs      []int    `json:"pcrs"`      // ascending
	PCRValues [][]byte `json:"pcrValues"` // the values sealed to, one per PCR
	Policy    []byte   `json:"policy"`    // the object's authPolicy (PolicyDigest)
	Public    []byte   `json:"public"`    // TPM2B_PUBLIC of the sealed object
	Private   []byte   `json:"private"`   // TPM2B_PRIVATE, encrypted under the SRK
}

// ParseBlob reads and checks a Blob's JSON.
func ParseBlob(b []byte) (*Blob, error) {
	var blob Blob
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&blob); err != nil {
		return nil, fmt.Errorf("tpmseal: reading a sealed blob: %w", err)
	}
	if blob.Version != BlobVersion {
		return nil, fmt.Errorf("tpmseal: sealed blob version %d; this appliance reads version %d", blob.Version, BlobVersion)
	}
	if blob.Hash != "sha256" {
		return nil, fmt.Errorf("tpmseal: sealed blob uses PCR bank %q; only sha256 is supported", blob.Hash)
	}
	if !slices.Equal(blob.PCRs, normPCRs(blob.PCRs)) {
		return nil, errors.New("tpmseal: sealed blob's PCRs are not in ascending order")
	}
	want, err := PolicyDigest(blob.PCRs, blob.PCRValues)
	if err != nil {
		return nil, err
	}
	if !bytes.Equal(want, blob.Policy) {
		return nil, errors.New("tpmseal: sealed blob's policy digest does not match its PCR values")
	}
	if len(blob.Public) == 0 || len(blob.Private) == 0 {
		return nil, errors.New("tpmseal: sealed blob lacks its public or private area")
	}
	return &blob, nil
}

// srk creates the owner hierarchy's ECC P-256 storage root key (a transient object the
// caller flushes) and returns its handle, name and public area.
func (t *TPM) srk() (tpm2.NamedHandle, *tpm2.TPMTPublic, error) {
	rsp, err := tpm2.CreatePrimary{
		PrimaryHandle: tpm2.TPMRHOwner,
		InPublic:      tpm2.New2B(tpm2.ECCSRKTemplate),
	}.Execute(t.t)
	if err != nil {
		return tpm2.NamedHandle{}, nil, fmt.Errorf("tpmseal: creating the storage root key: %w", err)
	}
	pub, err := rsp.OutPublic.Contents()
	if err != nil {
		t.flush(rsp.ObjectHandle)
		return tpm2.NamedHandle{}, nil, fmt.Errorf("tpmseal: reading the storage root key: %w", err)
	}
	return tpm2.NamedHandle{Handle: rsp.ObjectHandle, Name: rsp.Name}, pub, nil
}

func (t *TPM) flush(h tpm2.TPMHandle) {
	_, _ = tpm2.FlushContext{FlushHandle: h}.Execute(t.t)
}

// Seal seals secret (1 to MaxSecret bytes) to the SHA-256 values of pcrs: values, one per
// PCR in the order of pcrs, or the PCRs' current values when values is nil (to seal to the
// values a future boot will measure, pass them).
func (t *TPM) Seal(secret []byte, pcrs []int, values [][]byte) (*Blob, error) {
	if len(secret) == 0 || len(secret) > MaxSecret {
		return nil, fmt.Errorf("tpmseal: a secret of %d bytes (1 to %d)", len(secret), MaxSecret)
	}
	if values == nil {
		var err error
		if values, err = t.ReadPCRs(pcrs); err != nil {
			return nil, err
		}
	}
	policy, err := PolicyDigest(pcrs, values)
	if err != nil {
		return nil, err
	}
	blob := &Blob{Version: BlobVersion, Hash: "sha256", PCRs: normPCRs(pcrs), Policy: policy}
	for _, p := range blob.PCRs {
		blob.PCRValues = append(blob.PCRValues, values[slices.Index(pcrs, p)])
	}
	srk, srkPub, err := t.srk()
	if err != nil {
		return nil, err
	}
	defer t.flush(srk.Handle)
	rsp, err := tpm2.Create{
		ParentHandle: tpm2.AuthHandle{
			Handle: srk.Handle, Name: srk.Name,
			Auth: tpm2.HMAC(tpm2.TPMAlgSHA256, 16, tpm2.AESEncryption(128, tpm2.EncryptIn), tpm2.Salted(srk.Handle, *srkPub)),
		},
		InSensitive: tpm2.TPM2BSensitiveCreate{Sensitive: &tpm2.TPMSSensitiveCreate{
			Data: tpm2.NewTPMUSensitiveCreate(&tpm2.TPM2BSensitiveData{Buffer: secret}),
		}},
		InPublic: tpm2.New2B(tpm2.TPMTPublic{
			Type:    tpm2.TPMAlgKeyedHash,
			NameAlg: tpm2.TPMAlgSHA256,
			// No UserWithAuth: the policy is the only way to use the object. NoDA: a
			// policy failure (a PCR mismatch) must not lock the TPM out.
			ObjectAttributes: tpm2.TPMAObject{FixedTPM: true, FixedParent: true, NoDA: true},
			AuthPolicy:       tpm2.TPM2BDigest{Buffer: policy},
		}),
	}.Execute(t.t)
	if err != nil {
		return nil, fmt.Errorf("tpmseal: sealing: %w", err)
	}
	blob.Public = tpm2.Marshal(rsp.OutPublic)
	blob.Private = tpm2.Marshal(rsp.OutPrivate)
	return blob, nil
}

// Mismatched returns the PCRs of blob whose current values differ from those sealed to.
func (t *TPM) Mismatched(blob *Blob) ([]int, error) {
	cur, err := t.ReadPCRs(blob.PCRs)
	if err != nil {
		return nil, err
	}
	var diff []int
	for i, p := range blob.PCRs {
		if !bytes.Equal(cur[i], blob.PCRValues[i]) {
			diff = append(diff, p)
		}
	}
	return diff, nil
}

// Unseal returns the secret of blob if this TPM sealed it and the PCRs hold the values it
// was sealed to. Its errors wrap ErrOtherTPM or ErrPCRMismatch (naming the PCRs that differ)
// when that is why.
func (t *TPM) Unseal(blob *Blob) ([]byte, error) {
	pub, err := tpm2.Unmarshal[tpm2.TPM2BPublic](blob.Public)
	if err != nil {
		return nil, fmt.Errorf("tpmseal: sealed blob's public area: %w", err)
	}
	priv, err := tpm2.Unmarshal[tpm2.TPM2BPrivate](blob.Private)
	if err != nil {
		return nil, fmt.Errorf("tpmseal: sealed blob's private area: %w", err)
	}
	sel, err := selection(blob.PCRs)
	if err != nil {
		return nil, err
	}
	srk, srkPub, err := t.srk()
	if err != nil {
		return nil, err
	}
	defer t.flush(srk.Handle)
	obj, err := tpm2.Load{
		ParentHandle: tpm2.AuthHandle{Handle: srk.Handle, Name: srk.Name, Auth: tpm2.PasswordAuth(nil)},
		InPrivate:    *priv,
		InPublic:     *pub,
	}.Execute(t.t)
	if err != nil {
		if errors.Is(err, tpm2.TPMRCIntegrity) {
			return nil, fmt.Errorf("%w: %v", ErrOtherTPM, err)
		}
		return nil, fmt.Errorf("tpmseal: loading the sealed object: %w", err)
	}
	defer t.flush(obj.ObjectHandle)
	rsp, err := tpm2.Unseal{ItemHandle: tpm2.AuthHandle{
		Handle: obj.ObjectHandle, Name: obj.Name,
		Auth: tpm2.Policy(tpm2.TPMAlgSHA256, 16, func(tpm transport.TPM, h tpm2.TPMISHPolicy, _ tpm2.TPM2BNonce) error {
			// An empty digest: the TPM uses the PCRs' current values (Part 3 §23.7).
			_, err := tpm2.PolicyPCR{PolicySession: h, Pcrs: sel}.Execute(tpm)
			return err
		}, tpm2.AESEncryption(128, tpm2.EncryptOut), tpm2.Salted(srk.Handle, *srkPub)),
	}}.Execute(t.t)
	if err != nil {
		if errors.Is(err, tpm2.TPMRCPolicyFail) || errors.Is(err, tpm2.TPMRCPCRChanged) {
			diff, derr := t.Mismatched(blob)
			if derr == nil && len(diff) > 0 {
				return nil, fmt.Errorf("%w (PCR %s changed)", ErrPCRMismatch, joinInts(diff))
			}
			return nil, fmt.Errorf("%w: %v", ErrPCRMismatch, err)
		}
		return nil, fmt.Errorf("tpmseal: unsealing: %w", err)
	}
	return rsp.OutData.Buffer, nil
}

func joinInts(v []int) string {
	s := make([]string, len(v))
	for i, n := range v {
		s[i] = fmt.Sprint(n)
	}
	return strings.Join(s, ", ")
}
