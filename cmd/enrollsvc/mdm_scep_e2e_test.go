package main

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/enrollment-appliance/aeappliance/apiclient"
	"github.com/enrollment-appliance/aeappliance/enrollsvc/scep"
	"github.com/enrollment-appliance/aeappliance/proto/certutil"
	"github.com/enrollment-appliance/aeappliance/proto/scep/sceptest"
)

// testMDM is the MDM of the SCEP tests: it issues challenges and validates them (each one
// bound to a device name, for account dave), checks the signature of every call, and counts the
// notifications it accepted by their ID. It fails the first notification it gets (500), so that
// the appliance must send it again; it can be taken down (connections dropped).
type testMDM struct {
	t   *testing.T
	srv *httptest.Server

	mu            sync.Mutex
	secret        []byte
	challenges    map[string]string // challenge -> device name
	down          bool
	failNotify    bool
	validations   int
	notifications map[string]apiclient.SCEPNotification // accepted, by ID
	attempts      int                                   // notification calls, accepted or not
	badSignatures int
}

func startTestMDM(t *testing.T) *testMDM {
	m := &testMDM{t: t, challenges: map[string]string{}, failNotify: true, notifications: map[string]apiclient.SCEPNotification{}}
	m.srv = httptest.NewTLSServer(http.HandlerFunc(m.serve))
	t.Cleanup(m.srv.Close)
	return m
}

func (m *testMDM) caPEM() string {
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: m.srv.Certificate().Raw}))
}

// verified checks the signature header: HMAC-SHA-256 under the secret of "UNIX.body", at most
// five minutes old (an independent implementation of docs/mdm.md).
func (m *testMDM) verified(r *http.Request, body []byte) bool {
	var ts, sig string
	for _, part := range strings.Split(r.Header.Get(apiclient.MDMSignatureHeader), ",") {
		k, v, _ := strings.Cut(part, "=")
		switch k {
		case "t":
			ts = v
		case "v1":
			sig = v
		}
	}
	unix, err := strconv.ParseInt(ts, 10, 64)
	if err != nil || time.Since(time.Unix(unix, 0)).Abs() > 5*time.Minute || r.Header.Get(apiclient.MDMNameHeader) != "intune-scep" {
		return false
	}
	mac := hmac.New(sha256.New, m.secret)
	mac.Write([]byte(ts + "."))
	mac.Write(body)
	want := hex.EncodeToString(mac.Sum(nil))
	return hmac.Equal([]byte(want), []byte(sig))
}

func (m *testMDM) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.down {
		panic(http.ErrAbortHandler) // the connection is dropped: as if the MDM were down
	}
	if !m.verified(r, body) {
		m.badSignatures++
		http.Error(w, "bad signature", http.StatusUnauthorized)
		return
	}
	switch r.URL.Path {
	case "/validate":
		m.validations++
		var v apiclient.SCEPValidationRequest
		if err := json.Unmarshal(body, &v); err != nil || v.TransactionID == "" || !strings.Contains(v.CSR, "CERTIFICATE REQUEST") {
			http.Error(w, "bad validation request", http.StatusBadRequest)
			return
		}
		// This MDM does not spend its challenges: the appliance must refuse a replay itself.
		device, ok := m.challenges[v.Challenge]
		if !ok {
			json.NewEncoder(w).Encode(apiclient.SCEPValidationResponse{Valid: false, Reason: "unknown challenge"})
			return
		}
		json.NewEncoder(w).Encode(apiclient.SCEPValidationResponse{Valid: true, Account: "dave", Names: []string{device}})
	case "/notify":
		m.attempts++
		if m.failNotify {
			m.failNotify = false
			http.Error(w, "try again later", http.StatusInternalServerError)
			return
		}
		var n apiclient.SCEPNotification
		if err := json.Unmarshal(body, &n); err != nil || n.ID == "" {
			http.Error(w, "bad notification", http.StatusBadRequest)
			return
		}
		m.notifications[n.ID] = n
		w.WriteHeader(http.StatusNoContent)
	default:
		http.NotFound(w, r)
	}
}

func (m *testMDM) challenge(device string) string {
	m.mu.Lock()
	defer m.mu.Unlock()
	c := "mdm-" + device + "-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	m.challenges[c] = device
	return c
}

// waitFor waits up to 30 seconds for the notification of request id with status, and returns it.
func (m *testMDM) waitFor(t *testing.T, id int64, status string) apiclient.SCEPNotification {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		m.mu.Lock()
		for _, n := range m.notifications {
			if n.RequestID == id && n.Status == status {
				m.mu.Unlock()
				return n
			}
		}
		m.mu.Unlock()
	}
	t.Fatalf("the MDM was not told that request %d is %s", id, status)
	return apiclient.SCEPNotification{}
}

func (m *testMDM) setDown(down bool) {
	m.mu.Lock()
	m.down = down
	m.mu.Unlock()
}

// issued is the accepted "issued" notifications, by serial.
func (m *testMDM) issued() map[string][]apiclient.SCEPNotification {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := map[string][]apiclient.SCEPNotification{}
	for _, n := range m.notifications {
		if n.Status == "issued" {
			out[n.Serial] = append(out[n.Serial], n)
		}
	}
	return out
}

// TestMDMValidatedSCEP: a SCEP profile whose challenges an MDM issues and validates, through the
// real binaries, a Samba DC, Debian's scepclient and an isolated certmonger, with an MDM written
// here. Each enrollment is validated by the MDM (signed calls), issued for the account the MDM
// names and limited to the name it binds; a challenge the MDM rejects, an MDM that is down and a
// replayed challenge end without a certificate (a challenge the MDM could not be asked about
// works once it is back); the MDM is told of each issuance exactly once, also when its first
// notification failed.
func TestMDMValidatedSCEP(t *testing.T) {
	needSoftHSM(t)
	scepclientBin := sceptest.NeedTool(t, "scepclient")
	cm := sceptest.StartCertmonger(t)
	_, _, dir, base := serveWithDirectory(t)
	tmp := t.TempDir()
	mdm := startTestMDM(t)

	var added apiclient.MDMClientAdded
	aectlJSON(t, dir, &added, "mdm", "add", "intune-scep")
	// A profile cannot name an MDM without URLs.
	if _, errOut, err := runBin(t, "aectl", "--data", dir, "scep", "profile", "add", "early", "--template", "SuppliesSubject",
		"--mdm", "intune-scep"); err == nil || !strings.Contains(errOut, "no validation URL") {
		t.Errorf("a profile for an MDM without URLs: %v %s", err, errOut)
	}
	caFile := filepath.Join(tmp, "mdm-ca.pem")
	os.WriteFile(caFile, []byte(mdm.caPEM()), 0o600)
	var set apiclient.MDMWebhooksSet
	aectlJSON(t, dir, &set, "mdm", "webhooks", "intune-scep", "--validate-url", mdm.srv.URL+"/validate",
		"--notify-url", mdm.srv.URL+"/notify", "--ca-file", caFile)
	secret, err := hex.DecodeString(set.Secret)
	if err != nil || len(secret) != 32 {
		t.Fatalf("aectl mdm webhooks = %+v, want a 32-byte hex secret", set)
	}
	mdm.mu.Lock()
	mdm.secret = secret
	mdm.mu.Unlock()
	if _, errOut, err := runBin(t, "aectl", "--data", dir, "mdm", "webhooks", "intune-scep", "--validate-url", "http://mdm.example/v",
		"--notify-url", "https://mdm.example/n"); err == nil || !strings.Contains(errOut, "https://") {
		t.Errorf("plain-HTTP MDM URL accepted: %v %s", err, errOut)
	}
	// scepclient 2.1.0 encrypts with single DES: its profile allows DES; certmonger's does not.
	var p apiclient.SCEPProfile
	aectlJSON(t, dir, &p, "scep", "profile", "add", "mdm-legacy", "--template", "SuppliesSubject", "--mdm", "intune-scep", "--allow-des")
	if p.Mode != "mdm" || p.MDM != "intune-scep" {
		t.Fatalf("aectl scep profile add --mdm = %+v", p)
	}
	aectlJSON(t, dir, &p, "scep", "profile", "add", "mdm-phones", "--template", "SuppliesSubject", "--mdm", "intune-scep")

	countCerts := func() int {
		var cs []apiclient.Certificate
		aectlJSON(t, dir, &cs, "certs")
		return len(cs)
	}
	// scepclient runs as a device with its own key in tmp/device.
	scepclient := func(url, challenge, cn, device string) (string, string, error) {
		device = filepath.Join(tmp, device)
		os.MkdirAll(device, 0o700)
		path := filepath.Join(device, "cert.pem")
		out, err := sceptest.Run(t, time.Minute, nil, scepclientBin, "-server-url="+url, "-challenge="+challenge,
			"-private-key="+filepath.Join(device, "key.pem"), "-certificate="+path, "-cn="+cn, "-cacert-message="+scep.RAOnly)
		return path, out, err
	}
	var serials []string

	// scepclient, validated by the MDM, for the account the MDM names.
	c1 := mdm.challenge("scep-mdm-1")
	path, out, err := scepclient(base+"/scep/mdm-legacy", c1, "scep-mdm-1", "device-1")
	if err != nil {
		t.Fatalf("scepclient through the MDM profile: %v\n%s", err, out)
	}
	cert := sceptest.ReadCert(t, path)
	serials = append(serials, certutil.SerialString(cert.SerialNumber))
	var one apiclient.Certificate
	aectlJSON(t, dir, &one, "cert", serials[0])
	if one.Account != "dave" || cert.Subject.CommonName != "scep-mdm-1" {
		t.Errorf("the certificate is for %q with CN %q, want dave's with CN scep-mdm-1", one.Account, cert.Subject.CommonName)
	}

	// certmonger, validated by the MDM.
	cm.AddCA(t, "MDM", base+"/scep/mdm-phones")
	c2 := mdm.challenge("cm-mdm-2")
	cm.Request(t, "MDM", "mdm2", "cm-mdm-2", c2)
	serials = append(serials, certutil.SerialString(sceptest.ReadCert(t, cm.CertFile("mdm2")).SerialNumber))

	before := countCerts()
	// Rejected by the MDM; a name the MDM did not bind; a replayed challenge (with another key,
	// so another transaction); the MDM down.
	if status := cm.Submit(t, "MDM", "mdm3", "cm-mdm-3", "a-challenge-the-mdm-never-issued"); !strings.Contains(status, "CA_REJECTED") {
		t.Errorf("certmonger with a challenge the MDM rejects:\n%s", status)
	}
	if status := cm.Submit(t, "MDM", "mdm4", "cm-other-name", mdm.challenge("cm-mdm-4")); !strings.Contains(status, "CA_REJECTED") {
		t.Errorf("certmonger naming another device than the MDM bound:\n%s", status)
	}
	// The replay names the device the MDM bound, with another key (so in another transaction).
	if _, out, err := scepclient(base+"/scep/mdm-legacy", c1, "scep-mdm-1", "replaying-device"); err == nil {
		t.Errorf("scepclient replaying a challenge got a certificate:\n%s", out)
	}
	c5 := mdm.challenge("cm-mdm-5")
	mdm.setDown(true)
	if status := cm.Submit(t, "MDM", "mdm5", "cm-mdm-5", c5); !strings.Contains(status, "CA_REJECTED") {
		t.Errorf("certmonger while the MDM is down:\n%s", status)
	}
	health := func() *apiclient.MDMClient {
		var cs []apiclient.MDMClient
		aectlJSON(t, dir, &cs, "mdm", "list")
		for i := range cs {
			if cs[i].Name == "intune-scep" {
				return &cs[i]
			}
		}
		t.Fatal("aectl mdm list lacks intune-scep")
		return nil
	}
	if h := health(); h.NotAnsweringSince == nil || h.LastError == "" {
		t.Errorf("aectl mdm list while the MDM is down = %+v, want since when it does not answer and why", h)
	}
	mdm.setDown(false)
	if n := countCerts(); n != before {
		t.Fatalf("%d certificates after the refusals, want %d", n, before)
	}
	// The challenge the MDM could not be asked about was not spent.
	cm.Request(t, "MDM", "mdm5b", "cm-mdm-5", c5)
	serials = append(serials, certutil.SerialString(sceptest.ReadCert(t, cm.CertFile("mdm5b")).SerialNumber))
	if h := health(); h.NotAnsweringSince != nil {
		t.Errorf("aectl mdm list once the MDM answers again = %+v", h)
	}

	// Each issuance told to the MDM exactly once, the first after a failed attempt.
	deadline := time.Now().Add(30 * time.Second)
	for len(mdm.issued()) < len(serials) && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	issued := mdm.issued()
	for _, serial := range serials {
		if ns := issued[serial]; len(ns) != 1 || ns[0].ThumbprintSHA256 == "" || ns[0].NotAfter.IsZero() || ns[0].RequestID == 0 {
			t.Errorf("notifications of the issuance of %s: %+v, want exactly one with thumbprint, validity and request", serial, ns)
		}
	}
	if len(issued) != len(serials) {
		t.Errorf("the MDM was told of %d issuances, want %d: %v", len(issued), len(serials), issued)
	}
	mdm.mu.Lock()
	attempts, bad, validations := mdm.attempts, mdm.badSignatures, mdm.validations
	mdm.mu.Unlock()
	if attempts < len(serials)+1 || bad != 0 {
		t.Errorf("%d notification calls (want at least %d: one failed), %d bad signatures", attempts, len(serials)+1, bad)
	}
	if validations < 5 {
		t.Errorf("the MDM was asked %d times, want every request with a fresh challenge", validations)
	}

	// A request the template holds for a certificate manager: the MDM hears "pending", and once
	// the manager approves, "issued" for the same transaction.
	aectlJSON(t, dir, &p, "scep", "profile", "add", "mdm-held", "--template", "PendUser", "--mdm", "intune-scep")
	cm.AddCA(t, "MDMHeld", base+"/scep/mdm-held")
	if status := cm.Submit(t, "MDMHeld", "held", "cm-held", mdm.challenge("cm-held")); !strings.Contains(status, "CA_WORKING") {
		t.Fatalf("certmonger on a held MDM profile:\n%s", status)
	}
	var pending []apiclient.Request
	aectlJSON(t, dir, &pending, "requests", "--state", "pending")
	if len(pending) != 1 || pending[0].Template != "PendUser" || pending[0].Account != "dave" {
		t.Fatalf("pending requests = %+v, want dave's PendUser", pending)
	}
	held := mdm.waitFor(t, pending[0].ID, "pending")
	var ap apiclient.IssueResponse
	aectlJSON(t, dir, &ap, "approve", strconv.FormatInt(pending[0].ID, 10))
	if ap.Status != "issued" {
		t.Fatalf("approve = %+v", ap)
	}
	done := mdm.waitFor(t, pending[0].ID, "issued")
	if done.TransactionID != held.TransactionID || done.TransactionID == "" || done.Serial != ap.Serial || done.ID == held.ID {
		t.Errorf("after approval the MDM heard %+v (before: %+v), want issued %s for the same transaction under a new ID", done, held, ap.Serial)
	}

	seen := eventCounts(t, dir)
	for _, id := range []int{4003, 4400, 4401, 4402, 4410, 4500, 4501} {
		if seen[id] == 0 {
			t.Errorf("no event %d", id)
		}
	}
}

func apiclientFor(t *testing.T, dir string) *apiclient.Client {
	t.Helper()
	cl, err := apiclient.DialDataDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	return cl
}
