package spnego

import (
	"encoding/base64"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jcmturner/gokrb5/v8/client"
	"github.com/jcmturner/gokrb5/v8/config"
	"github.com/jcmturner/gokrb5/v8/keytab"
	gkspnego "github.com/jcmturner/gokrb5/v8/spnego"

	"github.com/enrollment-appliance/aeappliance/ldap/ldaptest"
)

// TestKDC runs real clients with real tickets from a Samba AD DC against Authenticate. Without Samba it skips,
// or fails when CI=true (ldaptest.StartDC); the MIT tools likewise.
func TestKDC(t *testing.T) {
	dc := ldaptest.StartDC(t)
	sample := dc.Seed(t)
	// Two services, two accounts, one keytab file: only HTTP/localhost is allowed.
	merged := mergeKeytabs(t, dc.HTTPService(t, "svc-http", "HTTP/localhost"),
		dc.HTTPService(t, "svc-other", "HTTP/other.corp.example.test"))
	krb5conf := dc.Krb5Conf(t)
	l, logs := testLogger(t)
	a, err := New(Config{Keytab: merged, SPNs: []string{"HTTP/localhost"}, Realm: dc.Realm, Logger: l})
	if err != nil {
		t.Fatal(err)
	}
	url := echoServer(t, a)
	cfg, err := config.Load(krb5conf)
	if err != nil {
		t.Fatal(err)
	}
	login := func(t *testing.T, p ldaptest.Principal) *client.Client {
		cl := client.NewWithPassword(p.Name, dc.Realm, p.Password, cfg, client.DisablePAFXFAST(true))
		if err := cl.Login(); err != nil {
			t.Fatalf("gokrb5 login as %s: %v", p.Name, err)
		}
		t.Cleanup(cl.Destroy)
		return cl
	}
	ticket := func(t *testing.T, cl *client.Client, spn string) initiator {
		tkt, key, err := cl.GetServiceTicket(spn)
		if err != nil {
			t.Fatalf("service ticket for %s: %v", spn, err)
		}
		return initiator{cl: cl, tkt: tkt, key: key}
	}
	want401 := func(t *testing.T, header, log string) {
		t.Helper()
		resp, _ := get(t, url, header)
		if resp.StatusCode != http.StatusUnauthorized || resp.Header.Get("WWW-Authenticate") != "Negotiate" {
			t.Errorf("status %d, WWW-Authenticate %q; want 401, Negotiate", resp.StatusCode,
				resp.Header.Get("WWW-Authenticate"))
		}
		if log != "" && !strings.Contains(logs.String(), log) {
			t.Errorf("the log does not say %q", log)
		}
	}

	t.Run("gokrb5 client", func(t *testing.T) {
		// The SPN comes from the URL's host: HTTP/localhost.
		resp, err := gkspnego.NewClient(login(t, sample.Alice), nil, "").Get(url)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("status %d, want 200", resp.StatusCode)
		}
		noResponseToken(t, resp.Header.Get("WWW-Authenticate")) // gokrb5 does not ask for mutual authentication
		_, id := get(t, url, ticket(t, login(t, sample.Alice), "HTTP/localhost").header(t).header)
		if id.User != "alice" || id.Realm != ldaptest.Realm {
			t.Errorf("identity %s, want alice@%s", id.Principal(), ldaptest.Realm)
		}
		// The PAC: her SID first, then her groups, nested ones included.
		if len(id.SIDs) == 0 || id.SIDs[0] != sample.Alice.SID.String() {
			t.Fatalf("SIDs %v, want her SID %s first", id.SIDs, sample.Alice.SID)
		}
		for _, g := range []ldaptest.Principal{sample.PKIUsersNested, sample.PKIUsers} {
			if !slices.Contains(id.SIDs, g.SID.String()) {
				t.Errorf("SIDs %v lack %s (%s)", id.SIDs, g.Name, g.SID)
			}
		}
		if !slices.Contains(id.SIDs, sample.DomainUsers.String()) {
			t.Errorf("SIDs %v lack Domain Users (%s)", id.SIDs, sample.DomainUsers)
		}
		if slices.Contains(id.SIDs, sample.DeniedGroup.SID.String()) {
			t.Errorf("SIDs %v contain Denied-Group, which alice is not in", id.SIDs)
		}
	})

	t.Run("mutual authentication", func(t *testing.T) {
		in := ticket(t, login(t, sample.Bob), "HTTP/localhost")
		in.mutual = true
		s := in.header(t)
		resp, id := get(t, url, s.header)
		if resp.StatusCode != http.StatusOK || id.User != "bob" {
			t.Fatalf("status %d, identity %+v; want 200, bob", resp.StatusCode, id)
		}
		checkAPRep(t, resp.Header.Get("WWW-Authenticate"), in.key, s)
	})

	t.Run("MIT kinit and curl", func(t *testing.T) {
		env := kinit(t, krb5conf, sample.Alice)
		code, body := curl(t, env, url)
		if code != "200" || !strings.Contains(body, `"User":"alice"`) {
			t.Errorf("curl --negotiate: status %s, body %q; want 200 and alice", code, body)
		}
		// curl asked for mutual authentication (we answer with an AP-REP only then) and got it.
		hdr, _ := os.ReadFile(env[len(env)-1][len("CURLHEADERS="):])
		var reply string
		for _, line := range strings.Split(string(hdr), "\n") {
			if k, v, _ := strings.Cut(strings.TrimSpace(line), ":"); strings.EqualFold(k, "WWW-Authenticate") {
				reply = strings.TrimSpace(v)
			}
		}
		b, _ := base64.StdEncoding.DecodeString(strings.TrimPrefix(reply, "Negotiate "))
		var resp gkspnego.NegTokenResp
		var k5 gkspnego.KRB5Token
		if resp.Unmarshal(b) != nil || k5.Unmarshal(resp.ResponseToken) != nil || !k5.IsAPRep() {
			t.Errorf("curl got no AP-REP: WWW-Authenticate %q", reply)
		}
		// "mutual authentication" above checks the
		// AP-REP itself as MIT's initiator does. curl 7.88 cannot prove that an AP-REP is needed: it reads
		// WWW-Authenticate only on a 401, and accepts a 200 with gokrb5's token (accept-completed, no AP-REP)
		// or with none at all (tried).
	})

	t.Run("no header", func(t *testing.T) { want401(t, "", "") })
	t.Run("garbage", func(t *testing.T) { want401(t, "Negotiate YIIBAQYGKwYBBQUCoA==", "Negotiate authentication refused") })

	t.Run("ticket for another SPN in the keytab", func(t *testing.T) {
		cl := login(t, sample.Alice)
		want401(t, ticket(t, cl, "HTTP/other.corp.example.test").header(t).header, "not allowed")
		// (gokrb5's own spnego.Client cannot be used here: on a 401 it retries without end.)
	})

	t.Run("replay", func(t *testing.T) {
		h := ticket(t, login(t, sample.Dave), "HTTP/localhost").header(t).header
		if resp, _ := get(t, url, h); resp.StatusCode != http.StatusOK {
			t.Fatalf("first use: status %d, want 200", resp.StatusCode)
		}
		want401(t, h, "KRB_AP_ERR_REPEAT")
	})

	t.Run("clock skew", func(t *testing.T) {
		in := ticket(t, login(t, sample.Erin), "HTTP/localhost")
		in.skew = 6 * time.Minute // the client's clock is 6 minutes ahead
		want401(t, in.header(t).header, "KRB_AP_ERR_SKEW")
	})

	if strings.Contains(logs.String(), "Negotiate YII") {
		t.Errorf("a token was logged")
	}
}

func mergeKeytabs(t *testing.T, paths ...string) string {
	all := keytab.New()
	for _, p := range paths {
		kt, err := keytab.Load(p)
		if err != nil {
			t.Fatal(err)
		}
		all.Entries = append(all.Entries, kt.Entries...)
	}
	b, err := all.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "merged.keytab")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// needTool skips without an MIT tool, or fails when CI=true.
func needTool(t *testing.T, name string) {
	if _, err := exec.LookPath(name); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s is not installed; CI=true needs it (krb5-user, curl)", name)
		}
		t.Skipf("%s is not installed", name)
	}
}

// kinit gets a TGT for p with MIT kinit into a private credential cache and returns the environment that
// uses it.
func kinit(t *testing.T, krb5conf string, p ldaptest.Principal) []string {
	needTool(t, "kinit")
	dir := t.TempDir()
	// The last variable is ours: where curl dumps the response headers.
	env := append(os.Environ(), "KRB5_CONFIG="+krb5conf, "KRB5CCNAME=FILE:"+filepath.Join(dir, "ccache"),
		"CURLHEADERS="+filepath.Join(dir, "headers"))
	cmd := exec.Command("kinit", p.Name+"@"+ldaptest.Realm)
	cmd.Env, cmd.Stdin = env, strings.NewReader(p.Password+"\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("kinit %s: %v\n%s", p.Name, err, out)
	}
	return env
}

// curl runs curl --negotiate and returns the HTTP status (000 when curl gave up) and the body.
func curl(t *testing.T, env []string, url string) (code, body string) {
	needTool(t, "curl")
	cmd := exec.Command("curl", "--silent", "--show-error", "--noproxy", "*", "--max-time", "20",
		"--negotiate", "-u", ":", "--dump-header", env[len(env)-1][len("CURLHEADERS="):], "--write-out", "\n%{http_code}", url)
	cmd.Env = env
	out, err := cmd.Output()
	var stderr string
	if ee, ok := err.(*exec.ExitError); ok {
		stderr = string(ee.Stderr)
	}
	t.Logf("curl --negotiate %s: exit %v; stderr %q; stdout %q", url, err, stderr, out)
	s := strings.TrimRight(string(out), "\n")
	i := strings.LastIndexByte(s, '\n')
	if i < 0 {
		return s, ""
	}
	if err != nil && s[i+1:] == "200" {
		return "curl-error", s[:i]
	}
	return s[i+1:], s[:i]
}
