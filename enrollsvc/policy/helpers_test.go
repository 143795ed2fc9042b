package policy

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"fmt"
	"math/big"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/enrollment-appliance/aeappliance/ldap/secdesc"
)

// The test domain: CORP.EXAMPLE.TEST with domain SID S-1-5-21-1000-2000-3000.
const domainSID = "S-1-5-21-1000-2000-3000"

func rid(n int) secdesc.SID { return secdesc.MustParseSID(domainSID + "-" + strconv.Itoa(n)) }

var (
	sidAlice       = rid(1104)
	sidBob         = rid(1105)
	sidPC1         = rid(1201)
	sidDomainUsers = rid(513)
	sidDomainComps = rid(515)
	sidPKIUsers    = rid(1300) // holds Enroll; alice is in it through sidNested
	sidNested      = rid(1301) // member of sidPKIUsers
	sidBlocked     = rid(1302) // denied Enroll
	sidAutoGroup   = rid(1303) // holds Autoenroll
)

var testNow = time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)

// sdBytes is a binary self-relative security descriptor with the given DACL, as AD stores it.
func sdBytes(_ testing.TB, aces ...secdesc.ACE) []byte {
	owner := rid(512)
	sd := &secdesc.SD{Owner: &owner, Group: &owner, DACL: &secdesc.ACL{ACEs: aces}}
	b, err := sd.Marshal()
	if err != nil {
		panic("marshalling SD: " + err.Error())
	}
	return b
}

// defaultACEs is what a typical user template carries: Domain Users read, a group holds
// Enroll and another Autoenroll, Domain Admins everything.
func defaultACEs() []secdesc.ACE {
	return []secdesc.ACE{
		secdesc.AllowAll(rid(512)),
		secdesc.AllowRead(secdesc.AuthenticatedUsers),
		secdesc.AllowEnroll(sidPKIUsers),
		secdesc.AllowEnroll(sidDomainComps),
		secdesc.AllowAutoenroll(sidAutoGroup),
	}
}

type attrs = map[string][][]byte

func set(m attrs, name string, values ...string) {
	var vs [][]byte
	for _, v := range values {
		vs = append(vs, []byte(v))
	}
	m[name] = vs
}

// userTemplateAttrs is a schema-2 user template as the directory returns it.
func userTemplateAttrs(t testing.TB, aces ...secdesc.ACE) attrs {
	if aces == nil {
		aces = defaultACEs()
	}
	m := attrs{}
	set(m, "cn", "UserAuth")
	set(m, "displayname", "User Authentication")
	set(m, "mspki-template-schema-version", "2")
	set(m, "revision", "100")
	set(m, "mspki-template-minor-revision", "3")
	set(m, "mspki-cert-template-oid", "1.3.6.1.4.1.311.21.8.1111.2222.3333.4444.5555.6666.777.888")
	m["pkiexpirationperiod"] = [][]byte{{0x00, 0x40, 0x39, 0x87, 0x2e, 0xe1, 0xfe, 0xff}}
	m["pkioverlapperiod"] = [][]byte{{0x00, 0x80, 0xa6, 0x0a, 0xff, 0xde, 0xff, 0xff}}
	set(m, "mspki-enrollment-flag", "41") // INCLUDE_SYMMETRIC_ALGORITHMS|PUBLISH_TO_DS|AUTO_ENROLLMENT
	set(m, "mspki-certificate-name-flag", signedFlag(uint32(NameRequireDirectoryPath|NameRequireEmail|NameAltRequireEmail|NameAltRequireUPN)))
	set(m, "mspki-private-key-flag", "16842768") // 0x01010010: versions 1/1, EXPORTABLE_KEY
	set(m, "flags", "131642")
	set(m, "pkiextendedkeyusage", "1.3.6.1.5.5.7.3.2", "1.3.6.1.5.5.7.3.4")
	set(m, "mspki-certificate-application-policy", "1.3.6.1.5.5.7.3.2", "1.3.6.1.5.5.7.3.4", "1.3.6.1.4.1.311.10.3.4")
	set(m, "mspki-minimal-key-size", "2048")
	set(m, "pkidefaultkeyspec", "1")
	m["pkikeyusage"] = [][]byte{{0xa0, 0x00}}
	set(m, "pkicriticalextensions", "2.5.29.15")
	set(m, "mspki-ra-signature", "0")
	m["ntsecuritydescriptor"] = [][]byte{sdBytes(t, aces...)}
	return m
}

// computerTemplateAttrs is a machine template: CN=dNSHostName, SAN DNS.
func computerTemplateAttrs(t testing.TB) attrs {
	m := userTemplateAttrs(t)
	set(m, "cn", "MachineAuth")
	set(m, "flags", strconv.Itoa(int(GeneralMachineType|GeneralAutoEnrollment)))
	set(m, "mspki-certificate-name-flag", signedFlag(uint32(NameRequireDNSAsCN|NameAltRequireDNS)))
	set(m, "mspki-enrollment-flag", "32")
	set(m, "mspki-certificate-application-policy", "1.3.6.1.5.5.7.3.2", "1.3.6.1.5.5.7.3.1")
	return m
}

// signedFlag writes a flag word the way AD returns INTEGER attributes: signed 32-bit decimal.
func signedFlag(v uint32) string { return strconv.Itoa(int(int32(v))) }

func mustTemplate(t testing.TB, m attrs) Template {
	t.Helper()
	tmpl, err := ParseTemplate(m)
	if err != nil {
		t.Fatalf("ParseTemplate: %v", err)
	}
	return tmpl
}

var aliceGUID = secdesc.MustParseGUID("6f0c3b2a-1d4e-4f5a-8b9c-0d1e2f3a4b5c")

func aliceAttrs() attrs {
	m := attrs{}
	m["objectsid"] = [][]byte{sidAlice.Bytes()}
	m["objectguid"] = [][]byte{aliceGUID.Wire()}
	set(m, "objectclass", "top", "person", "organizationalPerson", "user")
	set(m, "cn", "Alice Adams")
	set(m, "samaccountname", "alice")
	set(m, "userprincipalname", "alice@corp.example.test")
	set(m, "mail", "alice@example.test")
	set(m, "givenname", "Alice")
	set(m, "sn", "Adams")
	set(m, "title", "Engineer")
	set(m, "ou", "Engineering", "Platform")
	set(m, "employeeid", "E-1234")
	return m
}

const aliceDN = "CN=Alice Adams,OU=Staff,DC=corp,DC=example,DC=test"

func alice(t testing.TB, groups ...secdesc.SID) Account {
	t.Helper()
	if groups == nil {
		groups = []secdesc.SID{sidDomainUsers, sidNested, sidPKIUsers, sidAutoGroup}
	}
	a, err := ParseAccount(aliceDN, aliceAttrs(), groups)
	if err != nil {
		t.Fatalf("ParseAccount: %v", err)
	}
	return a
}

func pc1(t testing.TB) Account {
	t.Helper()
	m := attrs{}
	m["objectsid"] = [][]byte{sidPC1.Bytes()}
	m["objectguid"] = [][]byte{aliceGUID.Wire()}
	set(m, "objectclass", "top", "person", "organizationalPerson", "user", "computer")
	set(m, "cn", "PC1")
	set(m, "samaccountname", "PC1$")
	set(m, "dnshostname", "pc1.corp.example.test")
	set(m, "serviceprincipalname", "HOST/pc1.corp.example.test", "HOST/PC1")
	a, err := ParseAccount("CN=PC1,CN=Computers,DC=corp,DC=example,DC=test", m, []secdesc.SID{sidDomainComps, sidAutoGroup})
	if err != nil {
		t.Fatalf("ParseAccount: %v", err)
	}
	return a
}

// Keys are expensive to make: make them once.
var (
	keysOnce sync.Once
	rsaKey   *rsa.PrivateKey
	ecKey    *ecdsa.PrivateKey
	caKey    *ecdsa.PrivateKey
	caCert   *x509.Certificate
)

func testKeys(t testing.TB) {
	keysOnce.Do(func() {
		var err error
		if rsaKey, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
			panic(err)
		}
		if ecKey, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
			panic(err)
		}
		if caKey, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
			panic(err)
		}
		caCert = makeCA(caKey, testNow.Add(-24*time.Hour), testNow.Add(5*365*24*time.Hour))
	})
}

func makeCA(key *ecdsa.PrivateKey, nb, na time.Time) *x509.Certificate {
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "Test Issuing CA"},
		NotBefore: nb, NotAfter: na, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign, SubjectKeyId: []byte{1, 2, 3, 4},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		panic(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		panic(err)
	}
	return c
}

// csrDER makes a signed PKCS#10 request.
func csrDER(t testing.TB, key crypto.Signer, tmpl *x509.CertificateRequest) []byte {
	t.Helper()
	if tmpl == nil {
		tmpl = &x509.CertificateRequest{}
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		t.Fatalf("CreateCertificateRequest: %v", err)
	}
	return der
}

func mustRequest(t testing.TB, der []byte) *Request {
	t.Helper()
	r, err := ParseRequest(der)
	if err != nil {
		t.Fatalf("ParseRequest: %v", err)
	}
	return &r
}

// sanExt builds a requested subjectAltName extension from GeneralNames.
func sanExt(names ...GeneralName) pkix.Extension { return sanExtension(names, false) }

func findExt(exts []pkix.Extension, id asn1.ObjectIdentifier) *pkix.Extension {
	for i := range exts {
		if exts[i].Id.Equal(id) {
			return &exts[i]
		}
	}
	return nil
}

func hexs(b []byte) string { return fmt.Sprintf("%x", b) }

// selfHeld is Input.DNSHolders as the directory answers when the account alone holds each name of
// its dNSHostName.
func selfHeld(a Account) map[string][]string {
	m := map[string][]string{}
	for _, h := range splitDNS(a.DNSHostName) {
		m[strings.ToLower(h)] = []string{a.DN}
	}
	return m
}

// upnHeld is Input.UPNHolders as the directory answers when the account alone holds its UPN.
func upnHeld(a Account) map[string][]string {
	if a.UPN == "" {
		return nil
	}
	return map[string][]string{strings.ToLower(a.UPN): {a.DN}}
}
