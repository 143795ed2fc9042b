package policy

import (
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"strings"
	"testing"

	"github.com/enrollment-appliance/aeappliance/enrollsvc/issue"
)

var (
	oidExtensionRequest = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 14}
	oidECDSAWithSHA256  = asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 2}
)

type rawAttr struct {
	Type   asn1.ObjectIdentifier
	Values []asn1.RawValue `asn1:"set"`
}

func mustMarshal(t testing.TB, v any) []byte {
	t.Helper()
	b, err := asn1.Marshal(v)
	if err != nil {
		t.Fatalf("asn1.Marshal(%T): %v", v, err)
	}
	return b
}

// handCSR builds and signs (ECDSA P-256, SHA-256) a request with arbitrary attributes, which
// Go's CreateCertificateRequest cannot write (name-value pairs, client information).
func handCSR(t testing.TB, subject pkix.Name, exts []pkix.Extension, attrs ...rawAttr) []byte {
	t.Helper()
	testKeys(t)
	spki, err := x509.MarshalPKIXPublicKey(ecKey.Public())
	if err != nil {
		t.Fatal(err)
	}
	var raws []asn1.RawValue
	if len(exts) > 0 {
		attrs = append(attrs, rawAttr{oidExtensionRequest, []asn1.RawValue{{FullBytes: mustMarshal(t, exts)}}})
	}
	for _, a := range attrs {
		raws = append(raws, asn1.RawValue{FullBytes: mustMarshal(t, a)})
	}
	tbs := mustMarshal(t, struct {
		Version   int
		Subject   asn1.RawValue
		PublicKey asn1.RawValue
		Attrs     []asn1.RawValue `asn1:"tag:0"`
	}{0, asn1.RawValue{FullBytes: mustMarshal(t, subject.ToRDNSequence())}, asn1.RawValue{FullBytes: spki}, raws})
	sum := sha256.Sum256(tbs)
	sig, err := ecKey.Sign(rand.Reader, sum[:], crypto.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	return mustMarshal(t, struct {
		TBS    asn1.RawValue
		Alg    pkix.AlgorithmIdentifier
		Signed asn1.BitString
	}{asn1.RawValue{FullBytes: tbs}, pkix.AlgorithmIdentifier{Algorithm: oidECDSAWithSHA256}, asn1.BitString{Bytes: sig, BitLength: 8 * len(sig)}})
}

func bmp(t testing.TB, s string) asn1.RawValue {
	return asn1.RawValue{FullBytes: mustMarshal(t, asn1.RawValue{Tag: asn1.TagBMPString, Bytes: encodeBMP(s)})}
}

func nameValuePair(t testing.TB, name, value string) rawAttr {
	pair := mustMarshal(t, struct{ N, V asn1.RawValue }{bmp(t, name), bmp(t, value)})
	return rawAttr{oidAttrNameValuePair, []asn1.RawValue{{FullBytes: pair}}}
}

func clientInfo(t testing.TB, id int) rawAttr {
	v := mustMarshal(t, struct {
		ID                     int
		Machine, User, Process string `asn1:"utf8"`
	}{id, "pc1.corp.example.test", `CORP\alice`, "taskhostw.exe"})
	return rawAttr{oidAttrClientInfo, []asn1.RawValue{{FullBytes: v}}}
}

func TestParseRequestTemplateNames(t *testing.T) {
	v1 := func(tag int, b []byte) pkix.Extension {
		return pkix.Extension{Id: oidExtTemplateV1, Value: mustMarshal(t, asn1.RawValue{Tag: tag, Bytes: b})}
	}
	tmplOID := asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 311, 21, 8, 1, 2, 3}
	tests := []struct {
		name      string
		der       []byte
		wantName  string
		wantOID   string
		wantMajor int
		wantAuto  bool
	}{
		{"v1 BMPString", handCSR(t, pkix.Name{}, []pkix.Extension{v1(asn1.TagBMPString, encodeBMP("Machine"))}), "Machine", "", 0, false},
		{"v1 UTF8String", handCSR(t, pkix.Name{}, []pkix.Extension{v1(asn1.TagUTF8String, []byte("User"))}), "User", "", 0, false},
		{"v2", handCSR(t, pkix.Name{}, []pkix.Extension{templateV2Extension(tmplOID, 100, 4)}), "", tmplOID.String(), 100, false},
		{"name-value pair", handCSR(t, pkix.Name{}, nil, nameValuePair(t, "CertificateTemplate", "WebServer")), "WebServer", "", 0, false},
		{"other name-value pair", handCSR(t, pkix.Name{}, nil, nameValuePair(t, "SAN", "dns=evil.example")), "", "", 0, false},
		{"autoenrollment client", handCSR(t, pkix.Name{}, nil, clientInfo(t, 6)), "", "", 0, true},
		{"certreq client", handCSR(t, pkix.Name{}, nil, clientInfo(t, 9)), "", "", 0, false},
	}
	for _, tc := range tests {
		r, err := ParseRequest(tc.der)
		if err != nil {
			t.Errorf("ParseRequest(%s) = %v", tc.name, err)
			continue
		}
		if r.TemplateName != tc.wantName || r.TemplateOID.String() != tc.wantOID || r.TemplateMajor != tc.wantMajor || r.Autoenroll != tc.wantAuto {
			t.Errorf("ParseRequest(%s) = name %q, OID %q, major %d, autoenroll %v, want %q, %q, %d, %v",
				tc.name, r.TemplateName, r.TemplateOID, r.TemplateMajor, r.Autoenroll, tc.wantName, tc.wantOID, tc.wantMajor, tc.wantAuto)
		}
	}
}

func TestParseRequestAsks(t *testing.T) {
	testKeys(t)
	bc := pkix.Extension{Id: oidExtBasicConstr, Critical: true, Value: mustMarshal(t, struct{ CA bool }{true})}
	eku := ekuExtension([]asn1.ObjectIdentifier{{1, 3, 6, 1, 4, 1, 311, 20, 2, 1}}, false)
	der := csrDER(t, ecKey, &x509.CertificateRequest{
		Subject: pkix.Name{CommonName: "Administrator"},
		ExtraExtensions: []pkix.Extension{
			sanExt(upnName("administrator@corp.example.test"), dnsName("evil.example"), sidName(domainSID+"-500")),
			sidExtension(domainSID + "-500"), bc, eku,
		},
	})
	r := mustRequest(t, der)
	var sans []string
	for _, g := range r.SANs {
		sans = append(sans, g.String())
	}
	got := strings.Join(sans, ",")
	want := "UPN:administrator@corp.example.test,DNS:evil.example,SID:" + domainSID + "-500"
	if got != want || r.SID != domainSID+"-500" || !r.HasSIDExtension || !r.BasicConstraintsCA || len(r.EKUs) != 1 {
		t.Errorf("ParseRequest(forged) = SANs %s, SID %q, CA %v, EKUs %v; want %s, the -500 SID, CA, 1 EKU", got, r.SID, r.BasicConstraintsCA, r.EKUs, want)
	}
	if issue.FormatRDNs(r.Subject) != "CN=Administrator" {
		t.Errorf("ParseRequest(forged).Subject = %q, want CN=Administrator", issue.FormatRDNs(r.Subject))
	}
}

func TestParseRequestErrors(t *testing.T) {
	testKeys(t)
	good := csrDER(t, ecKey, nil)
	badSig := append([]byte(nil), good...)
	badSig[len(badSig)-5] ^= 0xff
	twoNames := handCSR(t, pkix.Name{},
		[]pkix.Extension{{Id: oidExtTemplateV1, Value: mustMarshal(t, asn1.RawValue{Tag: asn1.TagBMPString, Bytes: encodeBMP("User")})}},
		nameValuePair(t, "CertificateTemplate", "Administrator"))
	badSAN := handCSR(t, pkix.Name{}, []pkix.Extension{{Id: oidExtSAN, Value: []byte{0x30, 0x03, 0x82, 0x05, 0x41}}})
	tests := map[string][]byte{
		"empty":         nil,
		"garbage":       []byte("not a request"),
		"bad signature": badSig,
		"two templates": twoNames,
		"truncated SAN": badSAN,
		"too large":     make([]byte, maxRequestSize+1),
	}
	for name, der := range tests {
		if _, err := ParseRequest(der); err == nil {
			t.Errorf("ParseRequest(%s) = nil error, want one", name)
		}
	}
}
