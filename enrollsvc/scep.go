package enrollsvc

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"encoding/asn1"
	"encoding/base64"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/enrollment-appliance/aeappliance/enrollsvc/events"
	"github.com/enrollment-appliance/aeappliance/enrollsvc/issue"
	"github.com/enrollment-appliance/aeappliance/enrollsvc/store"
	"github.com/enrollment-appliance/aeappliance/ldap"
	"github.com/enrollment-appliance/aeappliance/ldap/secdesc"
	"github.com/enrollment-appliance/aeappliance/proto/certutil"
)

// SCEPStore is what the SCEP logic needs of the store beyond Store.
type SCEPStore interface {
	AddSCEPProfile(ctx context.Context, p store.SCEPProfile, e store.Event) error
	GetSCEPProfile(ctx context.Context, name string) (store.SCEPProfile, error)
	ListSCEPProfiles(ctx context.Context) ([]store.SCEPProfile, error)
	AddSCEPChallenge(ctx context.Context, c store.SCEPChallenge, e store.Event) error
	UseSCEPChallenge(ctx context.Context, profile string, sha []byte, now time.Time) (store.SCEPChallenge, error)
	GetSCEPTransaction(ctx context.Context, profile, id string) (store.SCEPTransaction, error)
	SCEPTransactionOfRequest(ctx context.Context, id int64) (store.SCEPTransaction, error)
	SpendSCEPChallenge(ctx context.Context, profile string, sha []byte, now, expires time.Time) error
	SCEPChallengeSpent(ctx context.Context, sha []byte) (bool, error)
}

// MDMValidator is the MDM connector as SCEP profiles whose challenges an MDM issues and
// validates see it (package mdm implements it).
type MDMValidator interface {
	// CanValidate says why the MDM cannot validate challenges (not registered, no validation
	// URL), or nil.
	CanValidate(mdm string) error
	// ValidateSCEP asks the MDM whether to issue; an error means it could not be asked (then
	// nothing is issued).
	ValidateSCEP(ctx context.Context, mdm string, v SCEPValidation) (SCEPVerdict, error)
	// NotifySCEP queues the outcome for the MDM (delivered and retried in the background).
	NotifySCEP(ctx context.Context, mdm string, n SCEPOutcome)
}

// SCEPValidation is what the MDM is asked to validate: a PKCSReq's challenge with its request.
type SCEPValidation struct {
	Profile       string
	TransactionID string
	Challenge     string
	CSR           []byte // DER PKCS#10
}

// SCEPVerdict is the MDM's answer. Account, when given, is who the certificate is for (else the
// profile's); Names, when given, are the only names the request may carry (subject and SANs).
type SCEPVerdict struct {
	Valid   bool
	Reason  string
	Account string
	Names   []string
}

// SCEPOutcome is what the MDM is told after a request it validated: issued (with the
// certificate) or failed (with why).
type SCEPOutcome struct {
	Profile, TransactionID string
	RequestID              int64
	Certificate            *x509.Certificate // nil: failed, or pending
	// Pending: held for a certificate manager; the MDM is told again once it is approved
	// (issued) or denied (failed).
	Pending bool
	Reason  string
}

// WithMDM lets SCEP profiles delegate their challenges to the MDM connector v.
func (s *Service) WithMDM(v MDMValidator) { s.mdm = v }

// Limits of SCEP profiles and challenges.
const (
	MinStaticChallenge  = 12 // characters of a static challenge password
	DefaultChallengeTTL = time.Hour
	MaxChallengeTTL     = 30 * 24 * time.Hour
)

var profileName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

// SCEPProfileSpec is what an administrator gives to create a SCEP profile.
type SCEPProfileSpec struct {
	Name     string `json:"name"`
	Template string `json:"template"`
	// Account the certificates are for; empty: each one-time challenge names it.
	Account         string `json:"account,omitempty"`
	StaticChallenge string `json:"static_challenge,omitempty"` // static mode
	OneTime         bool   `json:"one_time,omitempty"`         // one-time challenges instead
	// AllowDES accepts request envelopes encrypted with single DES or 3DES: off unless a profile
	// is for legacy devices that can do nothing else (an eavesdropper reads their challenge).
	AllowDES bool `json:"allow_des,omitempty"`
	// MDM names the registered MDM that issues and validates the profile's challenges, instead of
	// a static or one-time challenge of ours.
	MDM string `json:"mdm,omitempty"`
}

func (s *Service) scepStore(op string) (SCEPStore, error) {
	ss, ok := s.store.(SCEPStore)
	if !ok {
		return nil, &Error{Kind: KindInternal, Op: op, Err: errors.New("the store keeps no SCEP state")}
	}
	return ss, nil
}

// AddSCEPProfile creates a SCEP profile: the template must be one the CA offers and the account,
// when given, must exist in the directory. The static challenge is kept only as its SHA-256.
func (s *Service) AddSCEPProfile(ctx context.Context, spec SCEPProfileSpec, by string) (store.SCEPProfile, error) {
	op := "adding SCEP profile " + spec.Name
	ss, err := s.scepStore(op)
	if err != nil {
		return store.SCEPProfile{}, err
	}
	bad := func(format string, args ...any) (store.SCEPProfile, error) {
		return store.SCEPProfile{}, &Error{Kind: KindBadRequest, Op: op, Err: fmt.Errorf(format, args...)}
	}
	switch {
	case !profileName.MatchString(spec.Name):
		return bad("a profile name is 1 to 64 letters, digits, '.', '_' or '-'")
	case spec.MDM != "" && (spec.OneTime || spec.StaticChallenge != ""):
		return bad("a profile whose challenges an MDM validates has no challenge of its own")
	case spec.MDM != "" && s.mdm == nil:
		return bad("there is no MDM connector in this service")
	case spec.MDM != "":
		if err := s.mdm.CanValidate(spec.MDM); err != nil {
			return bad("%v", err)
		}
	case spec.OneTime == (spec.StaticChallenge != ""):
		return bad("give either a static challenge, one-time challenges or an MDM")
	case !spec.OneTime && len(spec.StaticChallenge) < MinStaticChallenge:
		return bad("a static challenge needs at least %d characters", MinStaticChallenge)
	case !spec.OneTime && spec.Account == "":
		return bad("a static-challenge profile must name the account its certificates are for")
	}
	dc, err := s.directory(op)
	if err != nil {
		return store.SCEPProfile{}, err
	}
	t, reasons, err := s.template(ctx, dc, spec.Template)
	if err != nil {
		return store.SCEPProfile{}, err
	}
	if reasons != nil {
		return bad("%s", strings.Join(reasons, "; "))
	}
	var sid string
	if spec.Account != "" {
		a, reasons, err := s.account(ctx, dc, spec.Account, nil)
		if err != nil {
			return store.SCEPProfile{}, err
		}
		if reasons != nil {
			return bad("%s", strings.Join(reasons, "; "))
		}
		spec.Account, sid = accountName(a), a.SID.String()
	}
	p := store.SCEPProfile{Name: spec.Name, Template: t.Name, Account: spec.Account, AccountSID: sid, Mode: store.SCEPOneTime,
		Created: s.rec.Now(), AllowDES: spec.AllowDES, MDM: spec.MDM}
	if !spec.OneTime && spec.MDM == "" {
		h := sha256.Sum256([]byte(spec.StaticChallenge))
		p.Mode, p.ChallengeSHA256 = store.SCEPStatic, h[:]
	}
	e := events.New(p.Created, events.SCEPProfileAdded, "", "profile", p.Name, "template", p.Template, "account", p.Account,
		"account_sid", p.AccountSID, "mode", p.Mode, "allow_des", p.AllowDES, "mdm", p.MDM, "by", by)
	if err := ss.AddSCEPProfile(ctx, p, e); err != nil {
		return store.SCEPProfile{}, &Error{Kind: KindOf(err), Op: op, Err: err}
	}
	s.rec.Log(ctx, e)
	return p, nil
}

// SCEPProfiles lists the SCEP profiles.
func (s *Service) SCEPProfiles(ctx context.Context) ([]store.SCEPProfile, error) {
	ss, err := s.scepStore("listing SCEP profiles")
	if err != nil {
		return nil, err
	}
	return ss.ListSCEPProfiles(ctx)
}

// SCEPChallengeSpec asks for a one-time challenge.
type SCEPChallengeSpec struct {
	Profile string        `json:"profile"`
	Subject string        `json:"subject,omitempty"` // the request must carry it as subject or SAN value
	Account string        `json:"account,omitempty"` // default: the profile's
	TTL     time.Duration `json:"ttl,omitempty"`     // default DefaultChallengeTTL
}

// NewSCEPChallenge makes a one-time challenge for a one-time profile and returns it with its
// expiry. Only its SHA-256 is kept: the challenge is shown once.
func (s *Service) NewSCEPChallenge(ctx context.Context, spec SCEPChallengeSpec, by string) (string, time.Time, error) {
	op := "making a SCEP challenge for profile " + spec.Profile
	ss, err := s.scepStore(op)
	if err != nil {
		return "", time.Time{}, err
	}
	if spec.TTL == 0 {
		spec.TTL = DefaultChallengeTTL
	}
	if spec.TTL < time.Minute || spec.TTL > MaxChallengeTTL {
		return "", time.Time{}, &Error{Kind: KindBadRequest, Op: op, Err: fmt.Errorf("ttl %s: between 1m and %s", spec.TTL, MaxChallengeTTL)}
	}
	p, err := ss.GetSCEPProfile(ctx, spec.Profile)
	if err != nil {
		return "", time.Time{}, &Error{Kind: KindOf(err), Op: op, Err: err}
	}
	if spec.Account == "" && p.Account == "" {
		return "", time.Time{}, &Error{Kind: KindBadRequest, Op: op, Err: errors.New("the profile names no account: the challenge must")}
	}
	var sid string
	if spec.Account != "" {
		dc, err := s.directory(op)
		if err != nil {
			return "", time.Time{}, err
		}
		a, reasons, err := s.account(ctx, dc, spec.Account, nil)
		if err != nil {
			return "", time.Time{}, err
		}
		if reasons != nil {
			return "", time.Time{}, &Error{Kind: KindBadRequest, Op: op, Err: errors.New(strings.Join(reasons, "; "))}
		}
		spec.Account, sid = accountName(a), a.SID.String()
	}
	raw := make([]byte, 24)
	if _, err := rand.Read(raw); err != nil {
		return "", time.Time{}, &Error{Kind: KindInternal, Op: op, Err: err}
	}
	challenge := base64.RawURLEncoding.EncodeToString(raw)
	h := sha256.Sum256([]byte(challenge))
	now := s.rec.Now()
	c := store.SCEPChallenge{SHA256: h[:], Profile: p.Name, Subject: spec.Subject, Account: spec.Account, AccountSID: sid,
		Created: now, Expires: now.Add(spec.TTL)}
	e := events.New(now, events.SCEPChallengeIssued, "", "profile", p.Name, "subject", spec.Subject, "account", spec.Account,
		"expires", c.Expires.Format(time.RFC3339), "by", by)
	if err := ss.AddSCEPChallenge(ctx, c, e); err != nil {
		return "", time.Time{}, &Error{Kind: KindOf(err), Op: op, Err: err}
	}
	s.rec.Log(ctx, e)
	return challenge, c.Expires, nil
}

// SCEPRequest is a PKCSReq or RenewalReq whose message signature the protocol edge checked.
type SCEPRequest struct {
	Profile, TransactionID string
	CSR                    []byte // DER PKCS#10
	Challenge              string // the CSR's challengePassword ("" for renewals)
	// Renewing is the certificate that signed a RenewalReq (nil for PKCSReq): possession of its
	// key authorises the request instead of a challenge.
	Renewing *x509.Certificate
}

// LookupSCEPProfile returns the SCEP profile name; ok is false when there is none.
func (s *Service) LookupSCEPProfile(ctx context.Context, name string) (p store.SCEPProfile, ok bool, err error) {
	ss, err := s.scepStore("looking up a SCEP profile")
	if err != nil {
		return p, false, err
	}
	p, err = ss.GetSCEPProfile(ctx, name)
	if errors.Is(err, store.ErrNotFound) {
		return p, false, nil
	}
	return p, err == nil, err
}

// SCEPEnroll decides a SCEP request: the account comes from the profile or the one-time
// challenge, never from the CSR; then the directory's policy decides as for every protocol. A
// transaction ID is bound to its CSR: a retry with the same CSR gets the same request's state, a
// different CSR is refused. Refusals are results (StatusDenied with reasons), recorded.
func (s *Service) SCEPEnroll(ctx context.Context, r SCEPRequest) (*EnrollResult, error) {
	op := "SCEP request " + r.TransactionID + " on profile " + r.Profile
	ss, err := s.scepStore(op)
	if err != nil {
		return nil, err
	}
	p, err := ss.GetSCEPProfile(ctx, r.Profile)
	if err != nil {
		return nil, &Error{Kind: KindOf(err), Op: op, Err: err}
	}
	if strings.TrimSpace(r.TransactionID) == "" {
		return nil, &Error{Kind: KindBadRequest, Op: op, Err: errors.New("no transaction ID")}
	}
	h := sha256.Sum256(r.CSR)
	txKey := transactionKey(r.TransactionID, r.Renewing)
	seen := func() (*EnrollResult, bool, error) {
		tx, err := ss.GetSCEPTransaction(ctx, p.Name, txKey)
		switch {
		case err == nil && subtle.ConstantTimeCompare(tx.BodySHA256, h[:]) != 1:
			res, err := s.refuse(ctx, Meta{Requester: "scep:" + p.Name, Template: p.Template},
				[]string{"transaction ID " + r.TransactionID + " was used before with another request"}, nil)
			return res, true, err
		case err == nil:
			// A retry: the same request's state, unless that request failed or its issuance was
			// interrupted; then the retry is a new attempt, whose request takes the transaction over.
			req, err := s.transactionRequest(ctx, tx, r.TransactionID, op)
			if err != nil {
				return nil, true, err
			}
			if req.State == store.RequestFailed {
				return nil, false, nil
			}
			res, err := s.resultOf(ctx, req, op)
			return res, true, err
		case !errors.Is(err, store.ErrNotFound):
			return nil, true, &Error{Kind: KindInternal, Op: op, Err: err}
		}
		return nil, false, nil
	}
	if res, ok, err := seen(); ok {
		return res, err
	}

	// The transaction is recorded with the request it makes, in the same commit (store.Request.SCEP):
	// the same transaction sent again while this one is being signed finds it, or, if it gets
	// there first, makes this one fail before anything is signed.
	tx := &store.SCEPTransaction{Profile: p.Name, TransactionID: txKey, BodySHA256: h[:], Created: s.rec.Now()}
	var res *EnrollResult
	if r.Renewing != nil {
		res, err = s.Renew(ctx, RenewRequest{OldCert: r.Renewing, CSR: r.CSR, Template: p.Template, Requester: "scep:" + p.Name, SCEP: tx})
	} else {
		res, err = s.scepNew(ctx, ss, p, r, tx)
	}
	if err != nil {
		if errors.Is(err, store.ErrTransactionRecorded) {
			// Recorded meanwhile by the same transaction sent concurrently: answer as to a retry.
			if res, ok, serr := seen(); ok {
				return res, serr
			}
		}
		return nil, err
	}
	return res, nil
}

// StaleIssuance is how long after its request an issuance without a certificate is taken for
// interrupted, when its SCEP transaction is sent again: issuing takes milliseconds (seconds with a
// slow HSM or store), and the client then gets a new attempt instead of "pending" until the
// request expires (PendingLifetime).
const StaleIssuance = 2 * time.Minute

// SCEPRefusalWindow is the window over which anonymous SCEP refusals are counted: the first of a
// profile in a window is recorded at once (event SCEPAnonymousRefused), the others are counted and
// their number recorded with the first of a later window. A flood therefore stores one small event
// per profile per window, however many messages it sends; the log still has every refusal.
const SCEPRefusalWindow = time.Minute

// refusalCounts is what refuseAnonymous keeps per profile.
type refusalCounts struct {
	mu    sync.Mutex
	start map[string]time.Time // of the profile's current window
	count map[string]int       // refusals in it after the first
}

// refuseAnonymous refuses a SCEP request whose challenge is wrong or missing without recording
// a request for it: the sender has not authenticated, and what it sent is not kept. The result
// has no request ID.
func (s *Service) refuseAnonymous(ctx context.Context, profile, reason string) (*EnrollResult, error) {
	now := s.rec.Now()
	c := &s.scepRefused
	c.mu.Lock()
	if c.start == nil {
		c.start, c.count = map[string]time.Time{}, map[string]int{}
	}
	start, seen := c.start[profile]
	first := !seen || now.Sub(start) >= SCEPRefusalWindow
	var earlier int
	if first {
		earlier, c.start[profile], c.count[profile] = c.count[profile], now, 0
	} else {
		c.count[profile]++
	}
	c.mu.Unlock()
	if first {
		kv := []any{"profile", profile, "reason", reason}
		if earlier > 0 {
			kv = append(kv, "more_in_previous_window", earlier, "window", SCEPRefusalWindow.String())
		}
		if err := s.rec.Record(ctx, events.SCEPAnonymousRefused, "", kv...); err != nil {
			return nil, &Error{Kind: KindInternal, Op: "recording a refused SCEP request", Err: err}
		}
	} else {
		s.log.WarnContext(ctx, "SCEP request refused", "profile", profile, "reason", reason)
	}
	return &EnrollResult{Status: StatusDenied, Reasons: []string{reason}}, nil
}

// transactionKey is what a transaction is recorded under. Clients that follow the SCEP drafts
// derive the transaction ID from the public key and keep their CSR (scepclient, certmonger), so
// the renewal of a certificate sends the ID, and often the very CSR, of the enrollment that
// got it: recorded under the ID alone, it would be answered as a retry of that enrollment, with
// the certificate it renews. A renewal is recorded under the ID and the serial it renews.
func transactionKey(id string, renewing *x509.Certificate) string {
	if renewing == nil {
		return id
	}
	return id + " renewing " + certutil.SerialString(renewing.SerialNumber)
}

// scepNew authorises a PKCSReq by its challenge and enrolls it for the profile's or the
// challenge's account.
func (s *Service) scepNew(ctx context.Context, ss SCEPStore, p store.SCEPProfile, r SCEPRequest, tx *store.SCEPTransaction) (*EnrollResult, error) {
	// Until the challenge is right the sender is anonymous: its refusal is counted, not recorded
	// as a request (refuseAnonymous), so that a flood of them cannot fill the store.
	meta := Meta{Requester: "scep:" + p.Name, Account: p.Account, Template: p.Template, SCEP: tx}
	account, sid := p.Account, p.AccountSID
	h := sha256.Sum256([]byte(r.Challenge))
	switch {
	case p.MDM != "":
		return s.scepByMDM(ctx, ss, p, r, meta)
	case p.Mode == store.SCEPStatic:
		if r.Challenge == "" || subtle.ConstantTimeCompare(h[:], p.ChallengeSHA256) != 1 {
			return s.refuseAnonymous(ctx, p.Name, "wrong or missing challenge password")
		}
	default:
		// The challenge is spent even when the request does not name its bound subject: a
		// leaked challenge gets one try.
		csr, err := x509.ParseCertificateRequest(r.CSR)
		if err != nil {
			return nil, &Error{Kind: KindBadRequest, Op: "reading the SCEP request", Err: err}
		}
		c, err := ss.UseSCEPChallenge(ctx, p.Name, h[:], s.rec.Now())
		switch {
		case r.Challenge == "" || errors.Is(err, store.ErrNotFound):
			return s.refuseAnonymous(ctx, p.Name, "wrong or missing challenge password")
		case errors.Is(err, store.ErrConflict):
			return s.refuse(ctx, meta, []string{"the challenge password was used before or has expired"}, nil)
		case err != nil:
			return nil, &Error{Kind: KindInternal, Op: "using a SCEP challenge", Err: err}
		}
		if c.Account != "" {
			account, sid = c.Account, c.AccountSID
		}
		meta.Account = account
		if c.Subject != "" && !requestNamesOnly(csr, c.Subject) {
			return s.refuse(ctx, meta, []string{"the challenge is bound to " + c.Subject + ": every name in the request (subject and subjectAltName) must be that one"}, nil)
		}
	}
	if account == "" {
		return s.refuse(ctx, meta, []string{"neither the profile nor the challenge names an account"}, nil)
	}
	if sid != "" {
		// The object the administrator named, by SID: a re-created account of the same name is
		// another object and gets nothing. (A profile made before SIDs were kept is bound by name.)
		v, err := secdesc.ParseSID(sid)
		if err != nil {
			return nil, &Error{Kind: KindInternal, Op: "reading SCEP profile " + p.Name, Err: fmt.Errorf("stored account SID: %w", err)}
		}
		account = ldap.SIDAccount(v)
	}
	return s.Enroll(ctx, EnrollRequest{Template: p.Template, Account: account, Requester: "scep:" + p.Name, CSR: r.CSR, SCEP: meta.SCEP})
}

// requestNamesOnly reports whether every name csr carries is name (compared case-insensitively):
// its subject names it (as an RFC 4514 string, or every common name is name), and so does
// every subjectAltName value (DNS name, e-mail address, IP address, URI). A challenge bound to
// one device must not also carry a second name into a template that takes names from the request.
func requestNamesOnly(csr *x509.CertificateRequest, name string) bool {
	return requestNamesWithin(csr, []string{name})
}

// requestNamesWithin is requestNamesOnly for a set of names: every name csr carries is one of them.
func requestNamesWithin(csr *x509.CertificateRequest, names []string) bool {
	eq := func(s string) bool {
		return slices.ContainsFunc(names, func(n string) bool { return strings.EqualFold(s, n) })
	}
	var cns []string
	for _, atv := range csr.Subject.Names {
		if atv.Type.Equal(oidCommonName) {
			cns = append(cns, fmt.Sprint(atv.Value))
		}
	}
	subject := eq(csr.Subject.String()) || eq(issue.FormatName(csr.RawSubject))
	if !subject {
		subject = len(cns) > 0
		for _, cn := range cns {
			subject = subject && (eq(cn) || eq("CN="+cn))
		}
	}
	if !subject {
		return false
	}
	for _, v := range csr.DNSNames {
		if !eq(v) {
			return false
		}
	}
	for _, v := range csr.EmailAddresses {
		if !eq(v) {
			return false
		}
	}
	for _, v := range csr.IPAddresses {
		if !eq(v.String()) {
			return false
		}
	}
	for _, v := range csr.URIs {
		if !eq(v.String()) {
			return false
		}
	}
	return true
}

// oidCommonName is the X.520 commonName attribute type.
var oidCommonName = asn1.ObjectIdentifier{2, 5, 4, 3}

// SCEPPoll answers a CertPoll: the state of the request the transaction made. renewing is the
// certificate that signed the poll when it is one this CA issued (nil otherwise): the poll is
// then about the renewal of that certificate (see SCEPRequest.Renewing).
func (s *Service) SCEPPoll(ctx context.Context, profile, transactionID string, renewing *x509.Certificate) (*EnrollResult, error) {
	op := "SCEP poll " + transactionID + " on profile " + profile
	ss, err := s.scepStore(op)
	if err != nil {
		return nil, err
	}
	tx, err := ss.GetSCEPTransaction(ctx, profile, transactionKey(transactionID, renewing))
	if err != nil {
		return nil, &Error{Kind: KindOf(err), Op: op, Err: err}
	}
	req, err := s.transactionRequest(ctx, tx, transactionID, op)
	if err != nil {
		return nil, err
	}
	return s.resultOf(ctx, req, op) // an interrupted issuance is now failed: the client starts again
}

// transactionRequest is the request of SCEP transaction tx (ID as the client sent it). Pending
// without a held decision is an issuance in progress; one older than StaleIssuance was interrupted
// (the service stopped between recording the request and committing its certificate), and is
// marked failed here, so that the client's retry is a new attempt (store.Request.SCEP) instead of
// "pending" until the request expires.
func (s *Service) transactionRequest(ctx context.Context, tx store.SCEPTransaction, id, op string) (store.Request, error) {
	req, err := s.store.GetRequest(ctx, tx.RequestID)
	if err != nil {
		return req, &Error{Kind: KindOf(err), Op: op, RequestID: tx.RequestID, Err: err}
	}
	if req.State != store.RequestPending || len(req.Decision) != 0 || s.rec.Now().Sub(req.Updated) <= StaleIssuance {
		return req, nil
	}
	cause := fmt.Errorf("the issuance was interrupted: no certificate committed within %v; SCEP transaction %s "+
		"was sent again", StaleIssuance, id)
	if err := s.fail(ctx, req.ID, req.Template, events.RequestFailed, cause); err == nil {
		req.State, req.Reason = store.RequestFailed, cause.Error()
		return req, nil
	}
	req, err = s.store.GetRequest(ctx, tx.RequestID) // it finished meanwhile
	if err != nil {
		return req, &Error{Kind: KindOf(err), Op: op, RequestID: tx.RequestID, Err: err}
	}
	return req, nil
}
