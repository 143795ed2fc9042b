package spnego

import (
	"bytes"
	"crypto/rand"
	"encoding/asn1"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"math/big"
	"net/http"
	"strings"
	"time"

	"github.com/jcmturner/gokrb5/v8/credentials"
	"github.com/jcmturner/gokrb5/v8/crypto"
	"github.com/jcmturner/gokrb5/v8/gssapi"
	"github.com/jcmturner/gokrb5/v8/iana/chksumtype"
	"github.com/jcmturner/gokrb5/v8/iana/flags"
	"github.com/jcmturner/gokrb5/v8/iana/keyusage"
	"github.com/jcmturner/gokrb5/v8/iana/msgtype"
	"github.com/jcmturner/gokrb5/v8/messages"
	"github.com/jcmturner/gokrb5/v8/service"
	gkspnego "github.com/jcmturner/gokrb5/v8/spnego"
	"github.com/jcmturner/gokrb5/v8/types"
)

// Object identifiers of GSS mechanisms (RFC 1964, RFC 4178, [MS-SPNG]); the ones that are not Kerberos are
// named in log messages, because "the client offered NTLM" is what an administrator needs to hear when a
// machine could not get a ticket for our SPN.
var (
	oidKRB5   = asn1.ObjectIdentifier{1, 2, 840, 113554, 1, 2, 2}
	mechNames = map[string]string{
		"1.3.6.1.4.1.311.2.2.10": "NTLM",
		"1.3.6.1.4.1.311.2.2.30": "NEGOEX",
		"1.3.6.1.5.2.5":          "IAKERB",
	}
)

// tokIDAPRep is the TOK_ID of a KRB_AP_REP inside a Kerberos GSS token (RFC 4121 section 4.1).
var tokIDAPRep = []byte{0x02, 0x00}

// negotiateToken finds the Negotiate credentials among the request's Authorization headers. present is false
// when there are none (the client has not tried Negotiate yet).
func negotiateToken(h http.Header) (token []byte, present bool, err error) {
	for _, v := range h.Values("Authorization") {
		scheme, rest, _ := strings.Cut(strings.TrimSpace(v), " ")
		if !strings.EqualFold(scheme, "Negotiate") {
			continue
		}
		rest = strings.TrimSpace(rest)
		switch {
		case rest == "":
			return nil, true, errors.New("empty Negotiate token")
		case len(rest) > maxHeader:
			return nil, true, fmt.Errorf("Negotiate token of %d characters is over the limit of %d", len(rest), maxHeader)
		}
		b, err := base64.StdEncoding.DecodeString(rest)
		if err != nil {
			return nil, true, errors.New("Negotiate token is not base64")
		}
		if bytes.HasPrefix(b, []byte("NTLMSSP\x00")) {
			return nil, true, errors.New("client sent a raw NTLM token, only Kerberos is accepted (did it get no " +
				"ticket for our SPN? check the SPN registration and that the URL uses that host name)")
		}
		return b, true, nil
	}
	return nil, false, nil
}

// accept verifies a Negotiate token: an SPNEGO NegTokenInit whose preferred mechanism is Kerberos, or a bare
// Kerberos GSS token (some clients send that). It returns the identity and the base64 reply token, empty when
// there is nothing to send.
func (a *Authenticator) accept(token []byte, remote string) (id Identity, reply string, err error) {
	// gokrb5 v8.4.4 panics on some malformed input, e.g. rfc3962.DecryptMessage slices out of range on a
	// ciphertext shorter than its checksum (found by FuzzNegotiateHeader). Such a token is refused like any
	// other bad token instead of reaching net/http's recovery, which would drop the connection.
	defer func() {
		if p := recover(); p != nil {
			id, reply, err = Identity{}, "", fmt.Errorf("malformed token (the Kerberos library panicked: %v)", p)
		}
	}()
	var (
		mechToken []byte
		mech      = gssapi.OIDKRB5.OID() // SupportedMech of our NegTokenResp
		wrapped   bool                   // reply in SPNEGO (else a bare Kerberos token)
	)
	var st gkspnego.SPNEGOToken
	if err := st.Unmarshal(token); err == nil {
		if !st.Init {
			return Identity{}, "", errors.New("SPNEGO NegTokenResp where a NegTokenInit was expected (only one-leg Kerberos is supported)")
		}
		init := st.NegTokenInit
		if len(init.MechTypes) == 0 {
			return Identity{}, "", errors.New("SPNEGO NegTokenInit lists no mechanism")
		}
		// The optimistic mechToken is for the first mechanism; Windows lists the legacy MS OID first.
		first := init.MechTypes[0]
		if !first.Equal(gssapi.OIDKRB5.OID()) && !first.Equal(gssapi.OIDMSLegacyKRB5.OID()) {
			name := mechNames[first.String()]
			if name == "" {
				name = "unknown"
			}
			return Identity{}, "", fmt.Errorf("client's preferred SPNEGO mechanism is %s (%s), not Kerberos "+
				"(did it get no ticket for our SPN? check the SPN registration and the URL's host name)", first, name)
		}
		if len(init.MechTokenBytes) == 0 {
			return Identity{}, "", errors.New("SPNEGO NegTokenInit carries no Kerberos token")
		}
		mechToken, mech, wrapped = init.MechTokenBytes, first, true
	} else {
		mechToken = token
	}
	var kt gkspnego.KRB5Token
	if err := kt.Unmarshal(mechToken); err != nil {
		if !wrapped {
			return Identity{}, "", errors.New("neither an SPNEGO nor a Kerberos GSS token")
		}
		return Identity{}, "", fmt.Errorf("SPNEGO mechToken: %w", err)
	}
	if !kt.IsAPReq() {
		return Identity{}, "", errors.New("Kerberos GSS token is not an AP-REQ")
	}
	apreq := kt.APReq
	if id, err = a.verify(&apreq, remote); err != nil {
		return Identity{}, "", err
	}

	// RFC 4121: the acceptor answers with an AP-REP when the initiator asked for mutual authentication, and
	// must not send one otherwise (an initiator whose context is complete rejects a further token).
	var krbToken []byte
	if mutualRequested(&apreq) {
		if krbToken, err = apRepToken(&apreq); err != nil {
			return Identity{}, "", &acceptError{service: principal(apreq.Ticket.SName, apreq.Ticket.Realm),
				client: id.Principal(), err: fmt.Errorf("building the AP-REP: %w", err)}
		}
	}
	if !wrapped {
		if krbToken == nil {
			return id, "", nil
		}
		return id, base64.StdEncoding.EncodeToString(krbToken), nil
	}
	// NegState's zero value is accept-completed.
	resp := gkspnego.NegTokenResp{SupportedMech: mech, ResponseToken: krbToken}
	b, err := resp.Marshal()
	if err != nil {
		return Identity{}, "", fmt.Errorf("marshalling NegTokenResp: %w", err)
	}
	return id, base64.StdEncoding.EncodeToString(b), nil
}

// verify checks the AP-REQ's ticket against the allow-list and the keytab, its authenticator, clock skew and
// replay (gokrb5), and returns the client's identity.
func (a *Authenticator) verify(apreq *messages.APReq, remote string) (Identity, error) {
	tkt := &apreq.Ticket
	svc := principal(tkt.SName, tkt.Realm)
	if _, ok := a.allowed(tkt.SName.NameString, tkt.Realm); !ok {
		return Identity{}, &acceptError{service: svc,
			err: fmt.Errorf("ticket is for a service principal that is not allowed (allowed: %v)", a.spns)}
	}
	kt := a.currentKeytab()
	name, realm, ok := keytabSpelling(kt, tkt.SName.NameString, tkt.Realm)
	if !ok {
		return Identity{}, &acceptError{service: svc, err: errors.New("the keytab holds no key for this allowed service principal")}
	}
	tkt.Realm = realm // gokrb5 looks the key up by the exact realm; AD compares realms without case
	ok, creds, err := service.VerifyAPREQ(apreq, a.settings(kt, name, remote))
	if err != nil || !ok {
		if err == nil {
			err = errors.New("ticket is not valid")
		}
		var client string
		if cn := tkt.DecryptedEncPart.CName; len(cn.NameString) > 0 {
			client = principal(cn, tkt.DecryptedEncPart.CRealm)
		}
		return Identity{}, &acceptError{service: svc, client: client, err: err}
	}
	id := Identity{User: tkt.DecryptedEncPart.CName.PrincipalNameString(), Realm: tkt.DecryptedEncPart.CRealm}
	if _, hasPAC := creds.Attributes()[credentials.AttributeKeyADCredentials]; hasPAC {
		ad := creds.GetADCredentials()
		id.SIDs = append(id.SIDs, fmt.Sprintf("%s-%d", ad.LogonDomainID, uint32(ad.UserID)))
		id.SIDs = append(id.SIDs, ad.GroupMembershipSIDs...)
	}
	return id, nil
}

func principal(pn types.PrincipalName, realm string) string {
	return pn.PrincipalNameString() + "@" + realm
}

// mutualRequested reports whether the client asked for mutual authentication: the AP option
// mutual-required, or GSS_C_MUTUAL_FLAG in the authenticator's GSS checksum (RFC 4121 section 4.1.1).
func mutualRequested(apreq *messages.APReq) bool {
	if types.IsFlagSet(&apreq.APOptions, flags.APOptionMutualRequired) {
		return true
	}
	c := apreq.Authenticator.Cksum
	return c.CksumType == chksumtype.GSSAPI && len(c.Checksum) >= 24 &&
		binary.LittleEndian.Uint32(c.Checksum[20:24])&gssapi.ContextFlagMutual != 0
}

// ASN.1 of the KRB_AP_REP (RFC 4120 section 5.5.2), marshalled with encoding/asn1: gokrb5 can parse an
// AP-REP but not build one.
type (
	apRep struct {
		PVNO    int           `asn1:"explicit,tag:0"`
		MsgType int           `asn1:"explicit,tag:1"`
		EncPart encryptedData `asn1:"explicit,tag:2"`
	}
	encryptedData struct {
		EType  int32  `asn1:"explicit,tag:0"`
		KVNO   int    `asn1:"optional,explicit,tag:1"`
		Cipher []byte `asn1:"explicit,tag:2"`
	}
	// encAPRepPart omits the optional subkey: the client's subkey (or the ticket's session key) stays the
	// context key, which is all that HTTP authentication needs.
	encAPRepPart struct {
		CTime     time.Time `asn1:"generalized,explicit,tag:0"`
		Cusec     int       `asn1:"explicit,tag:1"`
		SeqNumber int64     `asn1:"optional,explicit,tag:3"`
	}
)

// Application tags of RFC 4120.
const (
	tagAPRep        = 15
	tagEncAPRepPart = 27
)

// apRepToken builds the Kerberos GSS token carrying the AP-REP for a verified AP-REQ: EncAPRepPart echoes the
// authenticator's ctime and cusec (which proves we could decrypt the ticket, i.e. hold the service key) and
// gives our initial sequence number; it is encrypted in the ticket's session key with key usage 12.
func apRepToken(apreq *messages.APReq) ([]byte, error) {
	seq, err := rand.Int(rand.Reader, big.NewInt(1<<30))
	if err != nil {
		return nil, err
	}
	part, err := asn1.Marshal(encAPRepPart{CTime: apreq.Authenticator.CTime.UTC(), Cusec: apreq.Authenticator.Cusec,
		SeqNumber: seq.Int64() + 1})
	if err != nil {
		return nil, err
	}
	if part, err = appTag(tagEncAPRepPart, part); err != nil {
		return nil, err
	}
	ed, err := crypto.GetEncryptedData(part, apreq.Ticket.DecryptedEncPart.Key, keyusage.AP_REP_ENCPART, 0)
	if err != nil {
		return nil, err
	}
	rep, err := asn1.Marshal(apRep{PVNO: 5, MsgType: msgtype.KRB_AP_REP,
		EncPart: encryptedData{EType: ed.EType, Cipher: ed.Cipher}})
	if err != nil {
		return nil, err
	}
	if rep, err = appTag(tagAPRep, rep); err != nil {
		return nil, err
	}
	// RFC 2743 section 3.1 framing: [APPLICATION 0] { mech OID, TOK_ID, AP-REP }.
	oid, err := asn1.Marshal(oidKRB5)
	if err != nil {
		return nil, err
	}
	inner := append(append(oid, tokIDAPRep...), rep...)
	return appTag(0, inner)
}

func appTag(tag int, b []byte) ([]byte, error) {
	return asn1.Marshal(asn1.RawValue{Class: asn1.ClassApplication, Tag: tag, IsCompound: true, Bytes: b})
}
