// Package secdesc reads and writes Windows security descriptors (MS-DTYP 2.4.6, self-relative
// form, as Active Directory stores nTSecurityDescriptor) and decides what a token of SIDs may do
// with a certificate template: Read, Enroll, Autoenroll. It is pure code: the directory client
// fetches the bytes, policy asks Check.
package secdesc

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// SID is a security identifier (MS-DTYP 2.4.2).
type SID struct {
	Revision  uint8
	Authority uint64 // 48 bits
	Sub       []uint32
}

// Well-known SIDs that Active Directory does not list in tokenGroups but every token holds.
var (
	Everyone           = SID{Revision: 1, Authority: 1, Sub: []uint32{0}}  // S-1-1-0
	AuthenticatedUsers = SID{Revision: 1, Authority: 5, Sub: []uint32{11}} // S-1-5-11
)

const maxSubAuthorities = 15

// ParseSID parses the string form "S-1-5-21-...".
func ParseSID(s string) (SID, error) {
	parts := strings.Split(s, "-")
	if len(parts) < 3 || !strings.EqualFold(parts[0], "S") {
		return SID{}, fmt.Errorf("secdesc: bad SID %q", s)
	}
	rev, err := strconv.ParseUint(parts[1], 10, 8)
	if err != nil || rev != 1 {
		return SID{}, fmt.Errorf("secdesc: bad SID %q: revision must be 1", s)
	}
	var auth uint64
	if strings.HasPrefix(parts[2], "0x") || strings.HasPrefix(parts[2], "0X") {
		auth, err = strconv.ParseUint(parts[2][2:], 16, 48)
	} else {
		auth, err = strconv.ParseUint(parts[2], 10, 48)
	}
	if err != nil {
		return SID{}, fmt.Errorf("secdesc: bad SID %q: authority: %v", s, err)
	}
	if len(parts)-3 > maxSubAuthorities {
		return SID{}, fmt.Errorf("secdesc: bad SID %q: more than %d sub-authorities", s, maxSubAuthorities)
	}
	sid := SID{Revision: 1, Authority: auth}
	for _, p := range parts[3:] {
		v, err := strconv.ParseUint(p, 10, 32)
		if err != nil {
			return SID{}, fmt.Errorf("secdesc: bad SID %q: sub-authority %q", s, p)
		}
		sid.Sub = append(sid.Sub, uint32(v))
	}
	return sid, nil
}

// MustParseSID is ParseSID for constants; it panics on error.
func MustParseSID(s string) SID {
	sid, err := ParseSID(s)
	if err != nil {
		panic(err)
	}
	return sid
}

// DecodeSID decodes the binary form (objectSid, tokenGroups values); b must hold exactly one SID.
func DecodeSID(b []byte) (SID, error) {
	sid, n, err := decodeSID(b)
	if err != nil {
		return SID{}, err
	}
	if n != len(b) {
		return SID{}, fmt.Errorf("secdesc: %d bytes after the SID", len(b)-n)
	}
	return sid, nil
}

func decodeSID(b []byte) (SID, int, error) {
	if len(b) < 8 {
		return SID{}, 0, errors.New("secdesc: SID shorter than 8 bytes")
	}
	if b[0] != 1 {
		return SID{}, 0, fmt.Errorf("secdesc: SID revision %d, want 1", b[0])
	}
	n := int(b[1])
	if n > maxSubAuthorities {
		return SID{}, 0, fmt.Errorf("secdesc: SID with %d sub-authorities", n)
	}
	size := 8 + 4*n
	if len(b) < size {
		return SID{}, 0, errors.New("secdesc: SID truncated")
	}
	var auth uint64
	for _, c := range b[2:8] {
		auth = auth<<8 | uint64(c)
	}
	sid := SID{Revision: 1, Authority: auth, Sub: make([]uint32, n)}
	for i := range n {
		sid.Sub[i] = binary.LittleEndian.Uint32(b[8+4*i:])
	}
	return sid, size, nil
}

// Bytes is the binary form.
func (s SID) Bytes() []byte {
	b := make([]byte, 8+4*len(s.Sub))
	b[0] = 1
	b[1] = byte(len(s.Sub))
	for i := range 6 {
		b[2+i] = byte(s.Authority >> (8 * (5 - i)))
	}
	for i, v := range s.Sub {
		binary.LittleEndian.PutUint32(b[8+4*i:], v)
	}
	return b
}

// String is the "S-1-..." form.
func (s SID) String() string {
	var b strings.Builder
	b.WriteString("S-1-")
	if s.Authority >= 1<<32 {
		fmt.Fprintf(&b, "0x%012X", s.Authority)
	} else {
		b.WriteString(strconv.FormatUint(s.Authority, 10))
	}
	for _, v := range s.Sub {
		b.WriteByte('-')
		b.WriteString(strconv.FormatUint(uint64(v), 10))
	}
	return b.String()
}

// Equal reports whether s and o are the same SID.
func (s SID) Equal(o SID) bool {
	if s.Authority != o.Authority || len(s.Sub) != len(o.Sub) {
		return false
	}
	for i := range s.Sub {
		if s.Sub[i] != o.Sub[i] {
			return false
		}
	}
	return true
}

// IsZero reports whether s is the zero value (no SID).
func (s SID) IsZero() bool { return s.Revision == 0 && s.Authority == 0 && len(s.Sub) == 0 }

// GUID is a GUID with its bytes in the order of the string form
// ("0e10c968-78fb-11d2-90d4-00c04f79dc55" → 0e 10 c9 68 78 fb ...). On the wire (in ACEs and
// objectGUID) the first three fields are little-endian: use FromWire and Wire.
type GUID [16]byte

// Extended rights of certificate templates.
var (
	EnrollGUID     = MustParseGUID("0e10c968-78fb-11d2-90d4-00c04f79dc55")
	AutoenrollGUID = MustParseGUID("a05b8cc2-17bc-4802-a710-e7c15ab866a2")
)

// ParseGUID parses "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx" (braces allowed).
func ParseGUID(s string) (GUID, error) {
	t := strings.TrimSuffix(strings.TrimPrefix(s, "{"), "}")
	if len(t) != 36 || t[8] != '-' || t[13] != '-' || t[18] != '-' || t[23] != '-' {
		return GUID{}, fmt.Errorf("secdesc: bad GUID %q", s)
	}
	hexs := t[0:8] + t[9:13] + t[14:18] + t[19:23] + t[24:36]
	var g GUID
	for i := range 16 {
		v, err := strconv.ParseUint(hexs[2*i:2*i+2], 16, 8)
		if err != nil {
			return GUID{}, fmt.Errorf("secdesc: bad GUID %q", s)
		}
		g[i] = byte(v)
	}
	return g, nil
}

// MustParseGUID is ParseGUID for constants.
func MustParseGUID(s string) GUID {
	g, err := ParseGUID(s)
	if err != nil {
		panic(err)
	}
	return g
}

func (g GUID) String() string {
	return fmt.Sprintf("%x-%x-%x-%x-%x", g[0:4], g[4:6], g[6:8], g[8:10], g[10:16])
}

// swap converts between string order and wire order (the same operation both ways).
func (g GUID) swap() GUID {
	var w GUID
	w[0], w[1], w[2], w[3] = g[3], g[2], g[1], g[0]
	w[4], w[5] = g[5], g[4]
	w[6], w[7] = g[7], g[6]
	copy(w[8:], g[8:])
	return w
}

// Wire is the mixed-endian byte form used in ACEs and objectGUID.
func (g GUID) Wire() []byte {
	w := g.swap()
	return w[:]
}

// GUIDFromWire decodes the mixed-endian byte form.
func GUIDFromWire(b []byte) (GUID, error) {
	if len(b) != 16 {
		return GUID{}, fmt.Errorf("secdesc: GUID of %d bytes, want 16", len(b))
	}
	var w GUID
	copy(w[:], b)
	return w.swap(), nil
}
