package daemon_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"io"
	"math/big"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/enrollment-appliance/aeappliance/aeagent/wsclient"
	"github.com/enrollment-appliance/aeappliance/enrollsvc"
	"github.com/enrollment-appliance/aeappliance/enrollsvc/daemon/daemontest"
	"github.com/enrollment-appliance/aeappliance/enrollsvc/events"
	"github.com/enrollment-appliance/aeappliance/enrollsvc/issue"
	"github.com/enrollment-appliance/aeappliance/enrollsvc/scep"
	"github.com/enrollment-appliance/aeappliance/enrollsvc/store"
	"github.com/enrollment-appliance/aeappliance/ldap/ldaptest"
	"github.com/enrollment-appliance/aeappliance/proto/scep/sceptest"
)

// The one issuance gate seen from outside: an RSA-1024 key, an RSA key with exponent 3, a
// ROCA-vulnerable key and the CA's own key are refused on the admin API, the directory enroll
// API, MS-WSTEP and SCEP, each with its reason, and the CA key makes no signature for any of
// them (counted in the token's Key). A good key on the same paths then does get signed, so the
// count can tell.
func TestIssuanceGateRefusesBadKeysOnEveryPath(t *testing.T) {
	needSoftHSM(t)
	scepclient := sceptest.NeedTool(t, "scepclient")
	dc := ldaptest.StartDC(t)
	s := dc.Seed(t)
	srv := daemontest.Start(t, dc, s, daemontest.Options{CAName: "Gate Test CA", HTTP: true})
	rt := srv.Runtime
	ctx := context.Background()
	const challenge = "a long enough static secret"
	if _, err := rt.Service.AddSCEPProfile(ctx, enrollsvc.SCEPProfileSpec{Name: "devices", Template: "SuppliesSubject",
		Account: "dave", StaticChallenge: challenge, AllowDES: true}, "test"); err != nil { // scepclient sends DES
		t.Fatal(err)
	}

	good, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	small, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name   string
		key    crypto.Signer
		reason string // in every refusal's reasons
	}{
		{"RSA-1024", small, "RSA key of 1024 bits is below"},
		{"RSA exponent 3", exponent3Key(t), "RSA public exponent 3 is not 65537"},
		{"ROCA", rocaKey(t), "ROCA"},
		{"the CA's own key", rt.Key, "the CA's own key"},
	}
	// The CSRs first: the CA's own key signs its CSR in the token.
	csrs := make([][]byte, len(cases))
	for i, tc := range cases {
		csrs[i] = gateCSR(t, tc.key, "gate"+string(rune('a'+i))+".corp.example.test")
	}
	alice, err := wsclient.New(srv.CEP("UsernamePassword"), wsclient.PasswordAuth{Username: s.Alice.UPN, Password: s.Alice.Password}, srv.Roots)
	if err != nil {
		t.Fatal(err)
	}
	api := &http.Client{Timeout: time.Minute, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: srv.Roots}}}
	post := func(t *testing.T, path string, body any) (int, []byte) {
		t.Helper()
		b, _ := json.Marshal(body)
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, srv.API+path, bytes.NewReader(b))
		req.Header.Set("Authorization", "Bearer "+srv.APIToken)
		req.Header.Set("Content-Type", "application/json")
		resp, err := api.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		out, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, out
	}
	certs := func() int {
		t.Helper()
		n, err := rt.Store.CountCertificates(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return int(n)
	}
	tmp := t.TempDir()
	runSCEP := func(t *testing.T, key *rsa.PrivateKey, cn string) (string, error) {
		t.Helper()
		dir := filepath.Join(tmp, cn)
		if err := os.MkdirAll(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		keyFile := filepath.Join(dir, "key.pem")
		if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}), 0o600); err != nil {
			t.Fatal(err)
		}
		return sceptest.Run(t, time.Minute, nil, scepclient, "-server-url="+srv.HTTPBase+"/scep/devices", "-challenge="+challenge,
			"-private-key="+keyFile, "-certificate="+filepath.Join(dir, "cert.pem"), "-cn="+cn,
			"-cacert-message="+scep.RAOnly) // the RA's two certificates: scepclient encrypts to each, and the CA key is ECDSA
	}

	signed, issued := rt.Key.Signatures(), certs()
	for i, tc := range cases {
		csrPEM := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csrs[i]}))
		t.Run(tc.name+"/admin API", func(t *testing.T) {
			code, body := post(t, "/api/v1/certificates", map[string]any{"csr": csrPEM, "profile": "server"})
			if code != http.StatusUnprocessableEntity || !strings.Contains(string(body), tc.reason) {
				t.Errorf("POST /api/v1/certificates = %d %s, want 422 saying %q", code, body, tc.reason)
			}
		})
		t.Run(tc.name+"/directory enroll API", func(t *testing.T) {
			code, body := post(t, "/api/v1/enroll", map[string]any{"csr": csrPEM, "template": "AEUser", "account": "alice"})
			var res struct {
				Status  string   `json:"status"`
				Reasons []string `json:"reasons"`
			}
			if err := json.Unmarshal(body, &res); err != nil || code != http.StatusOK || res.Status != "denied" ||
				!strings.Contains(strings.Join(res.Reasons, "; "), tc.reason) {
				t.Errorf("POST /api/v1/enroll = %d %s, want denied saying %q", code, body, tc.reason)
			}
		})
		t.Run(tc.name+"/WSTEP", func(t *testing.T) {
			res, err := alice.Issue(ctx, srv.CES("UsernamePassword"), csrs[i], map[string]string{"CertificateTemplate": "AEUser"})
			if err != nil || res.Status != wsclient.StatusDenied || !strings.Contains(res.Reason, tc.reason) {
				t.Errorf("WSTEP Issue = %+v, %v; want denied saying %q", res, err, tc.reason)
			}
		})
		t.Run(tc.name+"/SCEP", func(t *testing.T) {
			if k, ok := tc.key.(*rsa.PrivateKey); ok { // Debian's scepclient, which needs the key in a file
				cn := "scep-gate-" + string(rune('a'+i))
				if out, err := runSCEP(t, k, cn); err == nil {
					t.Fatalf("scepclient with the %s key succeeded:\n%s", tc.name, out)
				}
				list, err := rt.Store.ListRequests(ctx, store.RequestFilter{Account: "dave", State: store.RequestDenied, Limit: 1000})
				if err != nil {
					t.Fatal(err)
				}
				if len(list) == 0 || !strings.Contains(list[len(list)-1].Reason, tc.reason) {
					t.Errorf("the SCEP request's recorded reason = %v, want one saying %q", list, tc.reason)
				}
				return
			}
			// No client can hold the CA's key: its request goes to the core's SCEP entry point,
			// the call the SCEP handler makes.
			res, err := rt.Service.SCEPEnroll(ctx, enrollsvc.SCEPRequest{Profile: "devices", TransactionID: "gate-" + tc.name,
				CSR: csrs[i], Challenge: challenge})
			if err != nil || res.Status != enrollsvc.StatusDenied || !strings.Contains(strings.Join(res.Reasons, "; "), tc.reason) {
				t.Errorf("SCEPEnroll = %+v, %v; want denied saying %q", res, err, tc.reason)
			}
		})
	}
	if got := rt.Key.Signatures(); got != signed {
		t.Errorf("the CA key made %d signatures for refused requests, want none", got-signed)
	}
	if got := certs(); got != issued {
		t.Errorf("%d certificates were stored for refused requests, want none", got-issued)
	}
	evs, err := rt.Store.ListEvents(ctx, store.EventFilter{ID: int(events.SigningStarted), Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range evs {
		if strings.HasPrefix(e.Fields["subject"].(string), "CN=gate") {
			t.Errorf("signing event for a refused request: %+v", e)
		}
	}

	// The control: a good key on the admin API and SCEP is signed, and the count shows it.
	code, body := post(t, "/api/v1/certificates", map[string]any{"csr": string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST",
		Bytes: gateCSR(t, good, "good.corp.example.test")})), "profile": "server"})
	if code != http.StatusCreated {
		t.Fatalf("POST /api/v1/certificates with a good key = %d %s", code, body)
	}
	if out, err := runSCEP(t, good, "scep-gate-good"); err != nil {
		t.Fatalf("scepclient with a good key: %v\n%s", err, out)
	}
	if got := rt.Key.Signatures(); got < signed+2 {
		t.Errorf("the CA key made %d signatures for two good requests, want at least 2", got-signed)
	}
}

// gateCSR is a PKCS#10 for cn signed by key.
func gateCSR(t *testing.T, key crypto.Signer, cn string) []byte {
	t.Helper()
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: cn},
		DNSNames: []string{cn}}, key)
	if err != nil {
		t.Fatalf("CSR for %s: %v", cn, err)
	}
	return der
}

// exponent3Key is a 2048-bit RSA key with public exponent 3.
func exponent3Key(t *testing.T) *rsa.PrivateKey {
	t.Helper()
	return rsaKeyFromPrimes(t, 3, func() *big.Int {
		p, err := rand.Prime(rand.Reader, 1024)
		if err != nil {
			t.Fatal(err)
		}
		return p
	})
}

// rocaKey is a 2048-bit RSA key with the structure of the Infineon RSALib keys of
// CVE-2017-15361 (ROCA): each prime is k·M + (65537^a mod M), M the product of the first 126
// primes, as the library made its 1024-bit primes.
func rocaKey(t *testing.T) *rsa.PrivateKey {
	t.Helper()
	m := big.NewInt(1)
	for n, c := int64(2), 0; c < 126; n++ {
		if big.NewInt(n).ProbablyPrime(20) {
			m.Mul(m, big.NewInt(n))
			c++
		}
	}
	kBits := 1024 - m.BitLen()
	k := rsaKeyFromPrimes(t, 65537, func() *big.Int {
		for {
			a, _ := rand.Int(rand.Reader, m)
			p := new(big.Int).Exp(big.NewInt(65537), a, m)
			kk, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), uint(kBits)))
			p.Add(p, kk.Mul(kk, m))
			if p.BitLen() == 1024 && p.ProbablyPrime(20) {
				return p
			}
		}
	})
	if probs := issue.KeyProblems(&k.PublicKey, issue.KeyRules{}, nil); len(probs) != 1 || !strings.Contains(probs[0], "ROCA") {
		t.Fatalf("the constructed ROCA key is not recognised: %v", probs)
	}
	return k
}

// rsaKeyFromPrimes makes a 2048-bit RSA key with exponent e from two primes prime returns.
func rsaKeyFromPrimes(t *testing.T, e int, prime func() *big.Int) *rsa.PrivateKey {
	t.Helper()
	one := big.NewInt(1)
	for {
		p, q := prime(), prime()
		phi := new(big.Int).Mul(new(big.Int).Sub(p, one), new(big.Int).Sub(q, one))
		d := new(big.Int).ModInverse(big.NewInt(int64(e)), phi)
		n := new(big.Int).Mul(p, q)
		if d == nil || p.Cmp(q) == 0 || n.BitLen() != 2048 {
			continue
		}
		k := &rsa.PrivateKey{PublicKey: rsa.PublicKey{N: n, E: e}, D: d, Primes: []*big.Int{p, q}}
		k.Precompute()
		if err := k.Validate(); err != nil {
			t.Fatal(err)
		}
		return k
	}
}
