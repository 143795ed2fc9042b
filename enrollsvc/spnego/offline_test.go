package spnego

import (
	"encoding/base64"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jcmturner/gokrb5/v8/client"
	"github.com/jcmturner/gokrb5/v8/config"
	"github.com/jcmturner/gokrb5/v8/iana/etypeID"
	"github.com/jcmturner/gokrb5/v8/iana/nametype"
	"github.com/jcmturner/gokrb5/v8/keytab"
	"github.com/jcmturner/gokrb5/v8/messages"
	gkspnego "github.com/jcmturner/gokrb5/v8/spnego"
	"github.com/jcmturner/gokrb5/v8/types"
)

// These tests need no KDC: they forge service tickets with the keys of a keytab they write themselves, which
// is exactly what a KDC does. The tests against Samba (kdc_test.go) use real tickets, real clients and PACs.

const testRealm = "CORP.EXAMPLE.TEST"

// offlineKeytab writes a keytab with keys for HTTP/localhost and HTTP/other.corp.example.test.
func offlineKeytab(t testing.TB) (path string, kt *keytab.Keytab) {
	kt = keytab.New()
	now := time.Now()
	for _, p := range []string{"HTTP/localhost", "HTTP/other.corp.example.test"} {
		for _, et := range []int32{etypeID.AES256_CTS_HMAC_SHA1_96, etypeID.AES128_CTS_HMAC_SHA1_96} {
			if err := kt.AddEntry(p, testRealm, "secret of "+p, now, 3, et); err != nil {
				t.Fatal(err)
			}
		}
	}
	b, err := kt.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	path = filepath.Join(t.TempDir(), "http.keytab")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return path, kt
}

// forge issues a ticket for alice to sname, as the KDC would.
func forge(t testing.TB, kt *keytab.Keytab, sname string) initiator {
	t.Helper()
	return forgeKVNO(t, kt, sname, 3)
}

func forgeKVNO(t testing.TB, kt *keytab.Keytab, sname string, kvno int) initiator {
	t.Helper()
	now := time.Now().UTC()
	tkt, key, err := messages.NewTicket(types.NewPrincipalName(nametype.KRB_NT_PRINCIPAL, "alice"), testRealm,
		types.NewPrincipalName(nametype.KRB_NT_SRV_INST, sname), testRealm, types.NewKrbFlags(), kt,
		etypeID.AES256_CTS_HMAC_SHA1_96, kvno, now, now, now.Add(time.Hour), now.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	return initiator{cl: client.NewWithPassword("alice", testRealm, "unused", config.New()), tkt: tkt, key: key}
}

func offlineAuthenticator(t testing.TB) (*Authenticator, *keytab.Keytab, *syncBuffer) {
	path, kt := offlineKeytab(t)
	l, logs := testLogger(t)
	a, err := New(Config{Keytab: path, SPNs: []string{"HTTP/localhost"}, Realm: testRealm, Logger: l})
	if err != nil {
		t.Fatal(err)
	}
	return a, kt, logs
}

func TestNewKeepsOnlyAllowedSPNs(t *testing.T) {
	a, _, _ := offlineAuthenticator(t)
	for _, e := range a.currentKeytab().Entries {
		if got := e.Principal.String(); got != "HTTP/localhost@"+testRealm {
			t.Errorf("kept keytab entry %s, want only HTTP/localhost@%s", got, testRealm)
		}
	}
	if n := len(a.currentKeytab().Entries); n != 2 {
		t.Errorf("kept %d keytab entries, want 2", n)
	}
}

func TestNewErrors(t *testing.T) {
	path, _ := offlineKeytab(t)
	for _, tc := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"no keytab", Config{SPNs: []string{"HTTP/localhost"}}, "Keytab is empty"},
		{"no SPNs", Config{Keytab: path}, "SPNs is empty"},
		{"bad SPN", Config{Keytab: path, SPNs: []string{"localhost"}}, "not a service principal"},
		{"empty component", Config{Keytab: path, SPNs: []string{"HTTP/"}}, "not a service principal"},
		{"missing file", Config{Keytab: path + ".missing", SPNs: []string{"HTTP/localhost"}}, "loading keytab"},
		{"SPN not in keytab", Config{Keytab: path, SPNs: []string{"HTTP/enroll.corp.example.test"}},
			"holds no key of the allowed service principals"},
		{"other realm", Config{Keytab: path, SPNs: []string{"HTTP/localhost"}, Realm: "OTHER.TEST"},
			"holds no key"},
		{"negative skew", Config{Keytab: path, SPNs: []string{"HTTP/localhost"}, MaxClockSkew: -time.Second},
			"negative"},
	} {
		_, err := New(tc.cfg)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("New(%s) = %v, want an error containing %q", tc.name, err, tc.want)
		}
	}
	// The realm may also come with the SPN, and case does not matter (AD's rule).
	if _, err := New(Config{Keytab: path, SPNs: []string{"http/LOCALHOST@corp.example.test"}}); err != nil {
		t.Errorf("New(SPN with realm, other case) = %v", err)
	}
}

func TestOffline(t *testing.T) {
	a, kt, logs := offlineAuthenticator(t)
	url := echoServer(t, a)

	t.Run("mutual", func(t *testing.T) {
		in := forge(t, kt, "HTTP/localhost")
		in.mutual = true
		s := in.header(t)
		resp, id := get(t, url, s.header)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("status %d, want 200", resp.StatusCode)
		}
		if id.User != "alice" || id.Realm != testRealm || id.SIDs != nil {
			t.Errorf("identity %+v, want alice@%s without SIDs (forged ticket, no PAC)", id, testRealm)
		}
		checkAPRep(t, resp.Header.Get("WWW-Authenticate"), in.key, s)
		if strings.Contains(logs.String(), strings.TrimPrefix(s.header, "Negotiate ")[:40]) {
			t.Errorf("the token was logged")
		}
	})
	t.Run("not mutual", func(t *testing.T) {
		in := forge(t, kt, "HTTP/localhost")
		resp, _ := get(t, url, in.header(t).header)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("status %d, want 200", resp.StatusCode)
		}
		noResponseToken(t, resp.Header.Get("WWW-Authenticate"))
	})
	t.Run("bare Kerberos token", func(t *testing.T) {
		in := forge(t, kt, "HTTP/localhost")
		in.mutual = true
		s := in.header(t)
		// Unwrap the SPNEGO NegTokenInit: some clients send the Kerberos GSS token itself.
		b, _ := base64.StdEncoding.DecodeString(strings.TrimPrefix(s.header, "Negotiate "))
		i := strings.Index(string(b), "\x06\x09\x2a\x86\x48\x86\xf7\x12\x01\x02\x02\x01\x00") // krb5 OID + TOK_ID
		if i < 2 {
			t.Fatal("no Kerberos token in the NegTokenInit")
		}
		raw := b[i-4:] // [APPLICATION 0] with a 2-byte length (0x60 0x82 hi lo)
		if raw[0] != 0x60 {
			raw = b[i-2:]
		}
		resp, id := get(t, url, "Negotiate "+base64.StdEncoding.EncodeToString(raw))
		if resp.StatusCode != http.StatusOK || id.User != "alice" {
			t.Fatalf("status %d, identity %+v; want 200, alice", resp.StatusCode, id)
		}
		reply, _ := base64.StdEncoding.DecodeString(strings.TrimPrefix(resp.Header.Get("WWW-Authenticate"), "Negotiate "))
		var k gkspnego.KRB5Token
		if err := k.Unmarshal(reply); err != nil || !k.IsAPRep() {
			t.Errorf("reply to a bare token is not a bare Kerberos AP-REP token (%v)", err)
		}
	})

	refused := []struct {
		name, header, log string
	}{
		{"no header", "", ""},
		{"Basic", "Basic YWxpY2U6cHc=", ""},
		{"empty token", "Negotiate", "empty Negotiate token"},
		{"not base64", "Negotiate !!!", "not base64"},
		{"garbage", "Negotiate " + base64.StdEncoding.EncodeToString([]byte("garbage that is no token")), "neither"},
		{"NTLM", "Negotiate TlRMTVNTUAABAAAAB4IIogAAAAAAAAAAAAAAAAAAAAAKAGFKAAAADw==", "NTLM"},
		{"other SPN", forge(t, kt, "HTTP/other.corp.example.test").header(t).header, "not allowed"},
		{"skew", func() string {
			in := forge(t, kt, "HTTP/localhost")
			in.skew = -10 * time.Minute
			return in.header(t).header
		}(), "KRB_AP_ERR_SKEW"},
	}
	for _, tc := range refused {
		t.Run(tc.name, func(t *testing.T) {
			resp, _ := get(t, url, tc.header)
			if resp.StatusCode != http.StatusUnauthorized || resp.Header.Get("WWW-Authenticate") != "Negotiate" {
				t.Errorf("status %d, WWW-Authenticate %q; want 401, Negotiate", resp.StatusCode,
					resp.Header.Get("WWW-Authenticate"))
			}
			if tc.log != "" && !strings.Contains(logs.String(), tc.log) {
				t.Errorf("log does not say %q:\n%s", tc.log, logs)
			}
		})
	}
	t.Run("replay", func(t *testing.T) {
		h := forge(t, kt, "HTTP/localhost").header(t).header
		if resp, _ := get(t, url, h); resp.StatusCode != http.StatusOK {
			t.Fatalf("first use: status %d, want 200", resp.StatusCode)
		}
		if resp, _ := get(t, url, h); resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("replay: status %d, want 401", resp.StatusCode)
		}
		if !strings.Contains(logs.String(), "KRB_AP_ERR_REPEAT") {
			t.Errorf("log does not say KRB_AP_ERR_REPEAT")
		}
	})
}

func TestReload(t *testing.T) {
	a, kt, _ := offlineAuthenticator(t)
	url := echoServer(t, a)
	h := forge(t, kt, "HTTP/localhost").header(t).header

	// An administrator installs a keytab with a new key (the account's password changed): old tickets stop
	// working after Reload, new ones work.
	newKT := keytab.New()
	if err := newKT.AddEntry("HTTP/localhost", testRealm, "new secret", time.Now(), 4, etypeID.AES256_CTS_HMAC_SHA1_96); err != nil {
		t.Fatal(err)
	}
	b, _ := newKT.Marshal()
	if err := os.WriteFile(a.path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := a.Reload(); err != nil {
		t.Fatal(err)
	}
	if resp, _ := get(t, url, h); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("ticket for the old key after Reload: status %d, want 401", resp.StatusCode)
	}
	if resp, _ := get(t, url, forgeKVNO(t, newKT, "HTTP/localhost", 4).header(t).header); resp.StatusCode != http.StatusOK {
		t.Errorf("ticket for the new key after Reload: status %d, want 200", resp.StatusCode)
	}
	// A broken keytab is refused and the keys in use stay.
	os.WriteFile(a.path, []byte("not a keytab"), 0o600)
	if err := a.Reload(); err == nil {
		t.Errorf("Reload(broken keytab) = nil, want an error")
	}
	if resp, _ := get(t, url, forgeKVNO(t, newKT, "HTTP/localhost", 4).header(t).header); resp.StatusCode != http.StatusOK {
		t.Errorf("after a failed Reload: status %d, want 200", resp.StatusCode)
	}
}

// FuzzNegotiateHeader: no Authorization header, however malformed, makes Authenticate panic.
func FuzzNegotiateHeader(f *testing.F) {
	a, kt, _ := offlineAuthenticator(f)
	in := forge(f, kt, "HTTP/localhost")
	in.mutual = true
	valid := in.header(f).header
	for _, s := range []string{"", "Negotiate", "Negotiate ", "negotiate YII=", "Basic YWxpY2U6cHc=",
		"Negotiate TlRMTVNTUAABAAAAB4IIogAAAAAAAAAAAAAAAAAAAAAKAGFKAAAADw==", "Negotiate oQcwBaADCgEA",
		"Negotiate YAYGBCsGAQU=", valid, valid[:len(valid)/2], forge(f, kt, "HTTP/other.corp.example.test").header(f).header} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, header string) {
		r, err := http.NewRequest(http.MethodGet, "http://localhost/", nil)
		if err != nil {
			t.Fatal(err)
		}
		r.Header.Set("Authorization", header)
		w := httptest.NewRecorder()
		// A mutation of the valid seed may still be valid (AP options are not integrity-protected), so only
		// the refusal's form is checked.
		if _, ok := a.Authenticate(w, r); !ok && w.Code != http.StatusUnauthorized {
			t.Fatalf("Authenticate(%q) refused with status %d, want 401", header, w.Code)
		}
	})
}
