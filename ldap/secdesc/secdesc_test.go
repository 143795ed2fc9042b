package secdesc

import (
	"bytes"
	"encoding/hex"
	"reflect"
	"strings"
	"testing"
)

func TestSIDForms(t *testing.T) {
	for _, tc := range []struct {
		s   string
		hex string
	}{
		{"S-1-5-11", "01010000000000050b000000"},
		{"S-1-1-0", "010100000000000100000000"},
		{"S-1-5-21-3623811015-3361044348-30300820-1013", "010500000000000515000000c7f7fed77c7755c8945ace01f5030000"},
	} {
		sid, err := ParseSID(tc.s)
		if err != nil {
			t.Fatalf("ParseSID(%s): %v", tc.s, err)
		}
		if got := hex.EncodeToString(sid.Bytes()); got != tc.hex {
			t.Errorf("ParseSID(%s).Bytes() = %s, want %s", tc.s, got, tc.hex)
		}
		b, _ := hex.DecodeString(tc.hex)
		back, err := DecodeSID(b)
		if err != nil || back.String() != tc.s || !back.Equal(sid) {
			t.Errorf("DecodeSID(%s) = %v, %v; want %s", tc.hex, back, err, tc.s)
		}
	}
	if !AuthenticatedUsers.Equal(MustParseSID("S-1-5-11")) || Everyone.String() != "S-1-1-0" {
		t.Error("well-known SIDs are wrong")
	}
	for _, bad := range []string{"", "S-1", "S-2-5-11", "X-1-5-11", "S-1-5-x", "S-1-5-" + strings.Repeat("1-", 15) + "1"} {
		if _, err := ParseSID(bad); err == nil {
			t.Errorf("ParseSID(%q) = nil error, want one", bad)
		}
	}
	for _, bad := range []string{"", "0101", "0201000000000005", "0102000000000005" + "0b000000"} {
		b, _ := hex.DecodeString(bad)
		if _, err := DecodeSID(b); err == nil {
			t.Errorf("DecodeSID(%s) = nil error, want one", bad)
		}
	}
}

// GUIDs are mixed-endian on the wire: the Enroll right as it appears in an ACE.
func TestGUIDWire(t *testing.T) {
	want := "68c9100efb78d21190d400c04f79dc55"
	if got := hex.EncodeToString(EnrollGUID.Wire()); got != want {
		t.Errorf("EnrollGUID.Wire() = %s, want %s", got, want)
	}
	b, _ := hex.DecodeString(want)
	g, err := GUIDFromWire(b)
	if err != nil || g != EnrollGUID || g.String() != "0e10c968-78fb-11d2-90d4-00c04f79dc55" {
		t.Errorf("GUIDFromWire = %v, %v; want the Enroll GUID", g, err)
	}
	if _, err := ParseGUID("{a05b8cc2-17bc-4802-a710-e7c15ab866a2}"); err != nil {
		t.Errorf("ParseGUID with braces: %v", err)
	}
	for _, bad := range []string{"", "0e10c968-78fb-11d2-90d4-00c04f79dc5", "0e10c968x78fb-11d2-90d4-00c04f79dc55", "zz10c968-78fb-11d2-90d4-00c04f79dc55"} {
		if _, err := ParseGUID(bad); err == nil {
			t.Errorf("ParseGUID(%q) = nil error, want one", bad)
		}
	}
}

var (
	domain      = "S-1-5-21-1004336348-1177238915-682003330-"
	alice       = MustParseSID(domain + "1105")
	pkiUsers    = MustParseSID(domain + "1201")
	nested      = MustParseSID(domain + "1202")
	deniedGroup = MustParseSID(domain + "1203")
	dave        = MustParseSID(domain + "1110")
	admins      = MustParseSID(domain + "512")
)

func sample() *SD {
	inh := AllowEnroll(admins)
	inh.Flags = Inherited
	return &SD{Owner: &admins, Group: &admins, DACL: &ACL{ACEs: []ACE{
		AllowRead(AuthenticatedUsers),
		AllowEnroll(pkiUsers),
		AllowAutoenroll(pkiUsers),
		DenyEnroll(deniedGroup), // out of canonical order on purpose: deny still wins
		AllowEnroll(dave),       // Enroll without Read
		AllowAll(admins),
		inh,
	}}}
}

func TestMarshalParseRoundTrip(t *testing.T) {
	sd := sample()
	b, err := sd.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	got, err := Parse(b)
	if err != nil {
		t.Fatalf("Parse(Marshal(sd)): %v", err)
	}
	if got.Control != ControlSelfRelative|ControlDACLPresent || !got.Owner.Equal(admins) || len(got.DACL.ACEs) != 7 || got.DACL.Revision != 4 {
		t.Errorf("Parse = control %#x owner %v %d ACEs rev %d", got.Control, got.Owner, len(got.DACL.ACEs), got.DACL.Revision)
	}
	if !reflect.DeepEqual(got.DACL.ACEs, sd.DACL.ACEs) {
		t.Errorf("ACEs changed in the round trip:\n got %+v\nwant %+v", got.DACL.ACEs, sd.DACL.ACEs)
	}
	again, _ := got.Marshal()
	if !bytes.Equal(again, b) {
		t.Error("Marshal(Parse(b)) != b")
	}
	// The Enroll object ACE on the wire: type 5, size 0x38 for a 5-sub-authority SID, CONTROL_ACCESS,
	// object type present, the GUID mixed-endian.
	ace, _ := AllowEnroll(pkiUsers).marshal()
	if want := "05003800" + "00010000" + "01000000" + "68c9100efb78d21190d400c04f79dc55" + hex.EncodeToString(pkiUsers.Bytes()); hex.EncodeToString(ace) != want {
		t.Errorf("Enroll ACE = %x, want %s", ace, want)
	}
}

func TestCheck(t *testing.T) {
	sd := sample()
	token := func(s ...SID) []SID { return append(s, AuthenticatedUsers, Everyone) }
	for _, tc := range []struct {
		name                     string
		sids                     []SID
		read, enroll, autoenroll bool
		enrollACE                int
	}{
		{"member of the nested group", token(alice, nested, pkiUsers), true, true, true, 1},
		{"denied group wins over PKI-Users", token(alice, pkiUsers, deniedGroup), true, false, true, 3},
		{"Enroll without Read", []SID{dave}, false, true, false, 4},
		{"nobody special", token(MustParseSID(domain + "1300")), true, false, false, -1},
		{"full control", token(admins), true, true, true, 5},
	} {
		a := sd.Check(tc.sids)
		if a.Read.Allowed != tc.read || a.Enroll.Allowed != tc.enroll || a.Autoenroll.Allowed != tc.autoenroll {
			t.Errorf("Check(%s) = read %v enroll %v autoenroll %v, want %v %v %v (%s; %s; %s)", tc.name,
				a.Read.Allowed, a.Enroll.Allowed, a.Autoenroll.Allowed, tc.read, tc.enroll, tc.autoenroll,
				a.Read.Reason, a.Enroll.Reason, a.Autoenroll.Reason)
		}
		if a.Enroll.ACE != tc.enrollACE {
			t.Errorf("Check(%s).Enroll decided by ACE %d (%s), want %d", tc.name, a.Enroll.ACE, a.Enroll.Reason, tc.enrollACE)
		}
	}
	a := sd.Check(token(alice, pkiUsers, deniedGroup))
	if !strings.Contains(a.Enroll.Reason, "denied by ACE 3") || !a.Enroll.SID.Equal(deniedGroup) {
		t.Errorf("deny reason = %q (SID %v), want it to name ACE 3 and the denied group", a.Enroll.Reason, a.Enroll.SID)
	}
}

func TestCheckEdges(t *testing.T) {
	inhDeny := DenyEnroll(alice)
	inhDeny.Flags = Inherited
	inheritOnly := AllowEnroll(alice)
	inheritOnly.Flags = InheritOnly
	for _, tc := range []struct {
		name   string
		sd     *SD
		enroll bool
	}{
		{"nil DACL allows everything", &SD{}, true},
		{"empty DACL denies", &SD{DACL: &ACL{}}, false},
		{"explicit allow beats inherited deny", &SD{DACL: &ACL{ACEs: []ACE{inhDeny, AllowEnroll(alice)}}}, true},
		{"inherit-only ACEs do not apply", &SD{DACL: &ACL{ACEs: []ACE{inheritOnly}}}, false},
		{"all extended rights include Enroll", &SD{DACL: &ACL{ACEs: []ACE{{Type: AccessAllowed, Mask: RightControlAccess, SID: alice}}}}, true},
		{"another extended right is not Enroll", &SD{DACL: &ACL{ACEs: []ACE{extendedRight(AccessAllowedObject, MustParseGUID("00299570-246d-11d0-a768-00aa006e0529"), alice)}}}, false},
		{"nil SD denies", nil, false},
	} {
		if got := tc.sd.Check([]SID{alice}).Enroll.Allowed; got != tc.enroll {
			t.Errorf("%s: Enroll = %v, want %v", tc.name, got, tc.enroll)
		}
	}
}

func TestParseRejectsMalformed(t *testing.T) {
	good, _ := sample().Marshal()
	for _, tc := range []struct {
		name string
		b    []byte
	}{
		{"empty", nil},
		{"short header", good[:10]},
		{"bad revision", append([]byte{2}, good[1:]...)},
		{"not self-relative", func() []byte { b := bytes.Clone(good); b[3] &^= 0x80; return b }()},
		{"truncated DACL", good[:len(good)-5]},
		{"DACL offset outside", func() []byte { b := bytes.Clone(good); b[16], b[17] = 0xff, 0xff; return b }()},
	} {
		if _, err := Parse(tc.b); err == nil {
			t.Errorf("Parse(%s) = nil error, want one", tc.name)
		}
	}
}

func FuzzParse(f *testing.F) {
	good, _ := sample().Marshal()
	f.Add(good)
	f.Add(good[:20])
	f.Add([]byte{1, 0, 4, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 20, 0, 0, 0, 2, 0, 8, 0, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		sd, err := Parse(b)
		if err != nil {
			return
		}
		sd.Check([]SID{AuthenticatedUsers, Everyone})
		out, err := sd.Marshal()
		if err != nil {
			return // e.g. an unknown ACE type whose body is not a multiple of 4 after re-encoding
		}
		again, err := Parse(out)
		if err != nil {
			t.Fatalf("Parse(Marshal(Parse(b))) = %v", err)
		}
		if !reflect.DeepEqual(again, sd) {
			t.Fatalf("round trip changed the descriptor:\n%+v\n%+v", sd, again)
		}
	})
}
