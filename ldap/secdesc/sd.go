package secdesc

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// ACE types this package understands (MS-DTYP 2.4.4.1). Others are kept as opaque and ignored
// by the access check.
const (
	AccessAllowed       uint8 = 0x00
	AccessDenied        uint8 = 0x01
	SystemAudit         uint8 = 0x02
	AccessAllowedObject uint8 = 0x05
	AccessDeniedObject  uint8 = 0x06
	SystemAuditObject   uint8 = 0x07
)

// ACE flags.
const (
	ObjectInherit    uint8 = 0x01
	ContainerInherit uint8 = 0x02
	NoPropagate      uint8 = 0x04
	InheritOnly      uint8 = 0x08
	Inherited        uint8 = 0x10
)

// Access rights of directory objects (MS-ADTS 5.1.3.2) as they appear in ACE masks.
const (
	RightListContents  uint32 = 0x00000004
	RightReadProperty  uint32 = 0x00000010
	RightWriteProperty uint32 = 0x00000020
	RightListObject    uint32 = 0x00000080
	RightControlAccess uint32 = 0x00000100
	RightReadControl   uint32 = 0x00020000
	RightGenericAll    uint32 = 0x10000000
	RightGenericExec   uint32 = 0x20000000
	RightGenericWrite  uint32 = 0x40000000
	RightGenericRead   uint32 = 0x80000000
	// ReadMask is what the "Read" permission of the template security tab grants.
	ReadMask = RightReadControl | RightListContents | RightReadProperty | RightListObject
	// FullControl is what "Full Control" stores on a directory object.
	FullControl uint32 = 0x000F01FF
)

// Security descriptor control bits (MS-DTYP 2.4.6).
const (
	ControlDACLPresent  uint16 = 0x0004
	ControlSACLPresent  uint16 = 0x0010
	ControlDACLProtect  uint16 = 0x1000
	ControlSelfRelative uint16 = 0x8000
)

const (
	objectTypePresent          = 0x1
	inheritedObjectTypePresent = 0x2
)

// ACE is one access control entry. ObjectType and InheritedObjectType are used by object ACEs.
type ACE struct {
	Type                uint8
	Flags               uint8
	Mask                uint32
	ObjectType          *GUID
	InheritedObjectType *GUID
	SID                 SID
	raw                 []byte // the body of ACE types this package does not interpret
}

// IsObject reports whether a is an object ACE.
func (a ACE) IsObject() bool {
	return a.Type == AccessAllowedObject || a.Type == AccessDeniedObject || a.Type == SystemAuditObject
}

// ACL is an access control list (MS-DTYP 2.4.5).
type ACL struct {
	Revision uint8 // 2, or 4 when it holds object ACEs (Marshal picks it when 0)
	ACEs     []ACE
}

// SD is a security descriptor. A nil DACL means "no DACL": everyone has full access (Windows
// semantics); an empty DACL denies everything.
type SD struct {
	Control uint16
	Owner   *SID
	Group   *SID
	SACL    *ACL
	DACL    *ACL
}

// Limits protect against hostile input: AD caps a security descriptor far below this.
const maxSDSize = 1 << 20

// Parse decodes a self-relative security descriptor.
func Parse(b []byte) (*SD, error) {
	if len(b) < 20 {
		return nil, errors.New("secdesc: security descriptor shorter than its 20-byte header")
	}
	if len(b) > maxSDSize {
		return nil, fmt.Errorf("secdesc: security descriptor of %d bytes is too large", len(b))
	}
	if b[0] != 1 {
		return nil, fmt.Errorf("secdesc: security descriptor revision %d, want 1", b[0])
	}
	sd := &SD{Control: binary.LittleEndian.Uint16(b[2:])}
	if sd.Control&ControlSelfRelative == 0 {
		return nil, errors.New("secdesc: security descriptor is not self-relative")
	}
	off := func(i int) int { return int(binary.LittleEndian.Uint32(b[4+4*i:])) }
	var err error
	if o := off(0); o != 0 {
		if sd.Owner, err = sidAt(b, o, "owner"); err != nil {
			return nil, err
		}
	}
	if o := off(1); o != 0 {
		if sd.Group, err = sidAt(b, o, "group"); err != nil {
			return nil, err
		}
	}
	if o := off(2); o != 0 && sd.Control&ControlSACLPresent != 0 {
		if sd.SACL, err = aclAt(b, o, "SACL"); err != nil {
			return nil, err
		}
	}
	if o := off(3); sd.Control&ControlDACLPresent != 0 {
		if o == 0 {
			// DACL present but null: no DACL.
		} else if sd.DACL, err = aclAt(b, o, "DACL"); err != nil {
			return nil, err
		}
	}
	return sd, nil
}

func sidAt(b []byte, o int, what string) (*SID, error) {
	if o < 20 || o >= len(b) {
		return nil, fmt.Errorf("secdesc: %s offset %d outside the descriptor", what, o)
	}
	s, _, err := decodeSID(b[o:])
	if err != nil {
		return nil, fmt.Errorf("secdesc: %s: %w", what, err)
	}
	return &s, nil
}

func aclAt(b []byte, o int, what string) (*ACL, error) {
	if o < 20 || o+8 > len(b) {
		return nil, fmt.Errorf("secdesc: %s offset %d outside the descriptor", what, o)
	}
	size := int(binary.LittleEndian.Uint16(b[o+2:]))
	count := int(binary.LittleEndian.Uint16(b[o+4:]))
	if size < 8 || o+size > len(b) {
		return nil, fmt.Errorf("secdesc: %s of %d bytes does not fit the descriptor", what, size)
	}
	acl := &ACL{Revision: b[o]}
	if acl.Revision != 2 && acl.Revision != 4 {
		return nil, fmt.Errorf("secdesc: %s revision %d, want 2 or 4", what, acl.Revision)
	}
	body := b[o+8 : o+size]
	if count > len(body)/8 {
		return nil, fmt.Errorf("secdesc: %s claims %d ACEs in %d bytes", what, count, len(body))
	}
	for i := range count {
		ace, n, err := parseACE(body)
		if err != nil {
			return nil, fmt.Errorf("secdesc: %s ACE %d: %w", what, i, err)
		}
		acl.ACEs = append(acl.ACEs, ace)
		body = body[n:]
	}
	return acl, nil
}

func parseACE(b []byte) (ACE, int, error) {
	if len(b) < 4 {
		return ACE{}, 0, errors.New("truncated header")
	}
	a := ACE{Type: b[0], Flags: b[1]}
	size := int(binary.LittleEndian.Uint16(b[2:]))
	if size < 8 || size > len(b) || size%4 != 0 {
		return ACE{}, 0, fmt.Errorf("bad size %d", size)
	}
	body := b[4:size]
	a.Mask = binary.LittleEndian.Uint32(body)
	body = body[4:]
	switch a.Type {
	case AccessAllowed, AccessDenied, SystemAudit:
	case AccessAllowedObject, AccessDeniedObject, SystemAuditObject:
		if len(body) < 4 {
			return ACE{}, 0, errors.New("truncated object flags")
		}
		flags := binary.LittleEndian.Uint32(body)
		body = body[4:]
		for _, f := range []struct {
			bit uint32
			dst **GUID
		}{{objectTypePresent, &a.ObjectType}, {inheritedObjectTypePresent, &a.InheritedObjectType}} {
			if flags&f.bit == 0 {
				continue
			}
			if len(body) < 16 {
				return ACE{}, 0, errors.New("truncated object GUID")
			}
			g, _ := GUIDFromWire(body[:16])
			*f.dst = &g
			body = body[16:]
		}
	default:
		a.raw = append([]byte(nil), b[4:size]...)
		return a, size, nil
	}
	sid, _, err := decodeSID(body)
	if err != nil {
		return ACE{}, 0, err
	}
	a.SID = sid
	return a, size, nil
}

// Marshal encodes sd in self-relative form: header, owner, group, SACL, DACL.
func (sd *SD) Marshal() ([]byte, error) {
	out := make([]byte, 20)
	out[0] = 1
	control := sd.Control | ControlSelfRelative
	put := func(slot int, data []byte) {
		binary.LittleEndian.PutUint32(out[4+4*slot:], uint32(len(out)))
		out = append(out, data...)
	}
	if sd.Owner != nil {
		put(0, sd.Owner.Bytes())
	}
	if sd.Group != nil {
		put(1, sd.Group.Bytes())
	}
	if sd.SACL != nil {
		b, err := sd.SACL.marshal()
		if err != nil {
			return nil, fmt.Errorf("secdesc: SACL: %w", err)
		}
		control |= ControlSACLPresent
		put(2, b)
	}
	if sd.DACL != nil {
		b, err := sd.DACL.marshal()
		if err != nil {
			return nil, fmt.Errorf("secdesc: DACL: %w", err)
		}
		control |= ControlDACLPresent
		put(3, b)
	}
	binary.LittleEndian.PutUint16(out[2:], control)
	return out, nil
}

func (acl *ACL) marshal() ([]byte, error) {
	rev := acl.Revision
	var body []byte
	for i, a := range acl.ACEs {
		b, err := a.marshal()
		if err != nil {
			return nil, fmt.Errorf("ACE %d: %w", i, err)
		}
		if a.IsObject() && rev == 0 {
			rev = 4
		}
		body = append(body, b...)
	}
	if rev == 0 {
		rev = 2
	}
	if len(body)+8 > 0xffff || len(acl.ACEs) > 0xffff {
		return nil, errors.New("ACL too large")
	}
	out := make([]byte, 8, 8+len(body))
	out[0] = rev
	binary.LittleEndian.PutUint16(out[2:], uint16(8+len(body)))
	binary.LittleEndian.PutUint16(out[4:], uint16(len(acl.ACEs)))
	return append(out, body...), nil
}

func (a ACE) marshal() ([]byte, error) {
	var body []byte
	switch {
	case a.raw != nil:
		body = a.raw
	default:
		body = binary.LittleEndian.AppendUint32(nil, a.Mask)
		if a.IsObject() {
			var flags uint32
			var guids []byte
			if a.ObjectType != nil {
				flags |= objectTypePresent
				guids = append(guids, a.ObjectType.Wire()...)
			}
			if a.InheritedObjectType != nil {
				flags |= inheritedObjectTypePresent
				guids = append(guids, a.InheritedObjectType.Wire()...)
			}
			body = binary.LittleEndian.AppendUint32(body, flags)
			body = append(body, guids...)
		} else if a.ObjectType != nil || a.InheritedObjectType != nil {
			return nil, fmt.Errorf("ACE type 0x%02x cannot carry object GUIDs", a.Type)
		}
		if a.SID.IsZero() {
			return nil, errors.New("ACE without a SID")
		}
		body = append(body, a.SID.Bytes()...)
	}
	size := 4 + len(body)
	if size%4 != 0 || size > 0xffff {
		return nil, fmt.Errorf("ACE of %d bytes", size)
	}
	out := []byte{a.Type, a.Flags, 0, 0}
	binary.LittleEndian.PutUint16(out[2:], uint16(size))
	return append(out, body...), nil
}

// Builders for the ACEs template administrators set in the Security tab.

// AllowRead grants Read.
func AllowRead(s SID) ACE { return ACE{Type: AccessAllowed, Mask: ReadMask, SID: s} }

// AllowAll grants Full Control.
func AllowAll(s SID) ACE { return ACE{Type: AccessAllowed, Mask: FullControl, SID: s} }

// AllowEnroll grants the Enroll extended right.
func AllowEnroll(s SID) ACE { return extendedRight(AccessAllowedObject, EnrollGUID, s) }

// AllowAutoenroll grants the Autoenroll extended right.
func AllowAutoenroll(s SID) ACE { return extendedRight(AccessAllowedObject, AutoenrollGUID, s) }

// DenyEnroll denies the Enroll extended right.
func DenyEnroll(s SID) ACE { return extendedRight(AccessDeniedObject, EnrollGUID, s) }

// DenyAutoenroll denies the Autoenroll extended right.
func DenyAutoenroll(s SID) ACE { return extendedRight(AccessDeniedObject, AutoenrollGUID, s) }

// DenyRead denies Read.
func DenyRead(s SID) ACE { return ACE{Type: AccessDenied, Mask: ReadMask, SID: s} }

func extendedRight(typ uint8, g GUID, s SID) ACE {
	return ACE{Type: typ, Mask: RightControlAccess, ObjectType: &g, SID: s}
}
