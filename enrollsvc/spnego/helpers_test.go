package spnego

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jcmturner/gokrb5/v8/client"
	"github.com/jcmturner/gokrb5/v8/crypto"
	"github.com/jcmturner/gokrb5/v8/gssapi"
	"github.com/jcmturner/gokrb5/v8/iana/chksumtype"
	"github.com/jcmturner/gokrb5/v8/iana/flags"
	"github.com/jcmturner/gokrb5/v8/iana/keyusage"
	"github.com/jcmturner/gokrb5/v8/messages"
	gkspnego "github.com/jcmturner/gokrb5/v8/spnego"
	"github.com/jcmturner/gokrb5/v8/types"
)

// syncBuffer collects log output from concurrent handlers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// testLogger logs to the test's output and to the returned buffer, which tests search for leaked tokens.
func testLogger(t testing.TB) (*slog.Logger, *syncBuffer) {
	buf := &syncBuffer{}
	return slog.New(slog.NewTextHandler(io.MultiWriter(t.Output(), buf), &slog.HandlerOptions{Level: slog.LevelDebug})), buf
}

// echoServer serves Authenticate and echoes the identity as JSON. Its URL uses the host name "localhost",
// from which clients build the SPN HTTP/localhost.
func echoServer(t testing.TB, a *Authenticator) string {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, ok := a.Authenticate(w, r)
		if !ok {
			return
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(id)
	}))
	t.Cleanup(srv.Close)
	return strings.Replace(srv.URL, "127.0.0.1", "localhost", 1) + "/"
}

// get sends one request with the given Authorization header (none if empty).
func get(t testing.TB, url, authorization string) (*http.Response, Identity) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if authorization != "" {
		req.Header.Set("Authorization", authorization)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var id Identity
	if resp.StatusCode == http.StatusOK {
		if err := json.NewDecoder(resp.Body).Decode(&id); err != nil {
			t.Fatalf("decoding the echoed identity: %v", err)
		}
	}
	return resp, id
}

// initiator builds Negotiate headers as a GSS-API initiator does, with knobs the real clients lack.
type initiator struct {
	cl     *client.Client // only its credentials (client name and realm) are used
	tkt    messages.Ticket
	key    types.EncryptionKey // the ticket's session key
	mutual bool                // ask for mutual authentication (GSS_C_MUTUAL_FLAG and mutual-required)
	skew   time.Duration       // shift the authenticator's clock
}

// sent is what an initiator must remember to check the acceptor's AP-REP.
type sent struct {
	header string
	auth   types.Authenticator
}

func (in initiator) header(t testing.TB) sent {
	t.Helper()
	gssFlags := []int{gssapi.ContextFlagInteg, gssapi.ContextFlagConf}
	if in.mutual {
		gssFlags = append(gssFlags, gssapi.ContextFlagMutual)
	}
	mt, err := gkspnego.NewKRB5TokenAPREQ(in.cl, in.tkt, in.key, gssFlags, nil)
	if err != nil {
		t.Fatal(err)
	}
	// gokrb5 does not keep the authenticator it encrypts: make our own, identical but for the clock.
	auth, err := types.NewAuthenticator(in.cl.Credentials.Domain(), in.cl.Credentials.CName())
	if err != nil {
		t.Fatal(err)
	}
	auth.CTime = auth.CTime.Add(in.skew).Truncate(time.Second)
	auth.Cksum = types.Checksum{CksumType: chksumtype.GSSAPI, Checksum: gssChecksum(gssFlags)}
	apreq, err := messages.NewAPReq(in.tkt, in.key, auth)
	if err != nil {
		t.Fatal(err)
	}
	if in.mutual {
		types.SetFlag(&apreq.APOptions, flags.APOptionMutualRequired)
	}
	mt.APReq = apreq
	mtb, err := mt.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	init, err := gkspnego.NewNegTokenInitKRB5(in.cl, in.tkt, in.key)
	if err != nil {
		t.Fatal(err)
	}
	init.MechTokenBytes = mtb
	st := gkspnego.SPNEGOToken{Init: true, NegTokenInit: init}
	b, err := st.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return sent{header: "Negotiate " + base64.StdEncoding.EncodeToString(b), auth: auth}
}

// gssChecksum is the authenticator checksum of RFC 4121 section 4.1.1 without channel bindings.
func gssChecksum(gssFlags []int) []byte {
	c := make([]byte, 24)
	binary.LittleEndian.PutUint32(c, 16)
	var f uint32
	for _, x := range gssFlags {
		f |= uint32(x)
	}
	binary.LittleEndian.PutUint32(c[20:], f)
	return c
}

// checkAPRep verifies the acceptor's reply as a mutual-authenticating initiator does: an SPNEGO
// accept-completed NegTokenResp for Kerberos whose response token is an AP-REP, decryptable with the session
// key (usage 12), echoing our authenticator's ctime and cusec.
func checkAPRep(t testing.TB, wwwAuthenticate string, key types.EncryptionKey, s sent) {
	t.Helper()
	b64, ok := strings.CutPrefix(wwwAuthenticate, "Negotiate ")
	if !ok {
		t.Fatalf("WWW-Authenticate = %q, want Negotiate <token>", wwwAuthenticate)
	}
	b, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		t.Fatalf("WWW-Authenticate token: %v", err)
	}
	var resp gkspnego.NegTokenResp
	if err := resp.Unmarshal(b); err != nil {
		t.Fatalf("NegTokenResp: %v", err)
	}
	if resp.State() != gkspnego.NegStateAcceptCompleted {
		t.Errorf("negState = %d, want accept-completed (0)", resp.State())
	}
	if !resp.SupportedMech.Equal(gssapi.OIDKRB5.OID()) {
		t.Errorf("supportedMech = %v, want %v", resp.SupportedMech, gssapi.OIDKRB5.OID())
	}
	var kt gkspnego.KRB5Token
	if err := kt.Unmarshal(resp.ResponseToken); err != nil {
		t.Fatalf("responseToken: %v", err)
	}
	if !kt.IsAPRep() {
		t.Fatalf("responseToken is not an AP-REP")
	}
	plain, err := crypto.DecryptEncPart(kt.APRep.EncPart, key, keyusage.AP_REP_ENCPART)
	if err != nil {
		t.Fatalf("decrypting the AP-REP with the session key: %v", err)
	}
	var part messages.EncAPRepPart
	if err := part.Unmarshal(plain); err != nil {
		t.Fatalf("EncAPRepPart: %v", err)
	}
	if !part.CTime.Equal(s.auth.CTime) || part.Cusec != s.auth.Cusec {
		t.Errorf("AP-REP ctime, cusec = %v, %d; want the authenticator's %v, %d", part.CTime, part.Cusec,
			s.auth.CTime, s.auth.Cusec)
	}
	if part.SequenceNumber == 0 {
		t.Errorf("AP-REP has no sequence number")
	}
}

// noResponseToken checks a reply to a client that did not ask for mutual authentication: accept-completed
// and no AP-REP.
func noResponseToken(t testing.TB, wwwAuthenticate string) {
	t.Helper()
	b, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(wwwAuthenticate, "Negotiate "))
	if err != nil {
		t.Fatalf("WWW-Authenticate %q: %v", wwwAuthenticate, err)
	}
	var resp gkspnego.NegTokenResp
	if err := resp.Unmarshal(b); err != nil {
		t.Fatalf("NegTokenResp: %v", err)
	}
	if resp.State() != gkspnego.NegStateAcceptCompleted || len(resp.ResponseToken) != 0 {
		t.Errorf("NegTokenResp = state %d, %d bytes of response token; want accept-completed, none",
			resp.State(), len(resp.ResponseToken))
	}
}
