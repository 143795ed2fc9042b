package enrollsvc

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"strings"

	"github.com/enrollment-appliance/aeappliance/enrollsvc/events"
	"github.com/enrollment-appliance/aeappliance/enrollsvc/store"
)

// scepByMDM authorises a PKCSReq of a profile whose challenges an MDM issues and validates: a
// challenge spent before is refused without asking; otherwise the MDM is asked (an MDM that cannot
// be asked means no certificate, and nothing recorded: the device's retry is judged again); a
// challenge it rejects is an anonymous refusal. What it accepts is spent, then the directory's
// policy decides for the account the MDM (or the profile) names, the request limited to the
// names the MDM bound; the MDM is told the outcome.
func (s *Service) scepByMDM(ctx context.Context, ss SCEPStore, p store.SCEPProfile, r SCEPRequest, meta Meta) (*EnrollResult, error) {
	if s.mdm == nil {
		return nil, &Error{Kind: KindUnavailable, Op: "SCEP profile " + p.Name, Err: errors.New("its challenges are validated by an MDM, and there is no MDM connector")}
	}
	if r.Challenge == "" {
		return s.refuseAnonymous(ctx, p.Name, "missing challenge password")
	}
	csr, err := x509.ParseCertificateRequest(r.CSR)
	if err != nil {
		return nil, &Error{Kind: KindBadRequest, Op: "reading the SCEP request", Err: err}
	}
	h := sha256.Sum256([]byte(r.Challenge))
	spent, err := ss.SCEPChallengeSpent(ctx, h[:])
	if err != nil {
		return nil, &Error{Kind: KindInternal, Op: "looking up a SCEP challenge", Err: err}
	}
	if spent {
		return s.refuse(ctx, meta, []string{"the challenge password was used before"}, nil)
	}
	v, err := s.mdm.ValidateSCEP(ctx, p.MDM, SCEPValidation{Profile: p.Name, TransactionID: r.TransactionID, Challenge: r.Challenge, CSR: r.CSR})
	if err != nil {
		_ = s.rec.Record(ctx, events.SCEPMDMUnreachable, "", "profile", p.Name, "mdm", p.MDM, "transaction", r.TransactionID, "error", err.Error())
		return &EnrollResult{Status: StatusDenied, Reasons: []string{"the MDM that validates this profile's challenges could not be asked: " + err.Error()}}, nil
	}
	if !v.Valid {
		why := "the MDM rejected the challenge"
		if v.Reason != "" {
			why += ": " + v.Reason
		}
		_ = s.rec.Record(ctx, events.SCEPMDMRejected, "", "profile", p.Name, "mdm", p.MDM, "transaction", r.TransactionID, "reason", v.Reason)
		return s.refuseAnonymous(ctx, p.Name, why)
	}
	now := s.rec.Now()
	if err := ss.SpendSCEPChallenge(ctx, p.Name, h[:], now, now.Add(MaxChallengeTTL)); errors.Is(err, store.ErrConflict) {
		return s.refuse(ctx, meta, []string{"the challenge password was used before"}, nil)
	} else if err != nil {
		return nil, &Error{Kind: KindInternal, Op: "spending a SCEP challenge", Err: err}
	}
	account := p.Account
	if v.Account != "" {
		account = v.Account
	}
	meta.Account = account
	_ = s.rec.Record(ctx, events.SCEPMDMValidated, "", "profile", p.Name, "mdm", p.MDM, "transaction", r.TransactionID,
		"account", account, "names", v.Names)
	var res *EnrollResult
	switch {
	case account == "":
		res, err = s.refuse(ctx, meta, []string{"neither the profile nor the MDM names an account"}, nil)
	case len(v.Names) > 0 && !requestNamesWithin(csr, v.Names):
		res, err = s.refuse(ctx, meta, []string{"the MDM bound the request to " + strings.Join(v.Names, ", ") +
			": every name in the request (subject and subjectAltName) must be one of them"}, nil)
	default:
		// An account the MDM named (not the profile's, which an administrator chose) is never a
		// protected one.
		res, err = s.Enroll(ctx, EnrollRequest{Template: p.Template, Account: account, Requester: "scep:" + p.Name, CSR: r.CSR,
			NamedByConnector: v.Account != "", SCEP: meta.SCEP})
	}
	out := SCEPOutcome{Profile: p.Name, TransactionID: r.TransactionID}
	switch {
	case err != nil:
		out.Reason = err.Error()
	case res.Status == StatusIssued:
		out.RequestID, out.Certificate = res.RequestID, res.Certificate
	case res.Status == StatusPending:
		out.RequestID, out.Pending, out.Reason = res.RequestID, true, "pending a certificate manager's approval"
	default:
		out.RequestID, out.Reason = res.RequestID, strings.Join(res.Reasons, "; ")
	}
	s.mdm.NotifySCEP(ctx, p.MDM, out)
	return res, err
}

// notifyDecided tells the MDM that validated a held SCEP request what a certificate manager made
// of it: issued (cert) or denied (reason). Requests of other origins are left alone.
func (s *Service) notifyDecided(ctx context.Context, r store.Request, cert *x509.Certificate, reason string) {
	profile, ok := strings.CutPrefix(r.Requester, "scep:")
	if !ok || s.mdm == nil {
		return
	}
	ss, ok := s.store.(SCEPStore)
	if !ok {
		return
	}
	p, err := ss.GetSCEPProfile(ctx, profile)
	if err != nil || p.MDM == "" {
		return
	}
	tx, err := ss.SCEPTransactionOfRequest(ctx, r.ID)
	if err != nil {
		s.log.WarnContext(ctx, "an MDM-validated SCEP request was decided, and its transaction is not on record: the MDM is not told",
			"request_id", r.ID, "mdm", p.MDM, "error", err)
		return
	}
	s.mdm.NotifySCEP(ctx, p.MDM, SCEPOutcome{Profile: p.Name, TransactionID: tx.TransactionID, RequestID: r.ID,
		Certificate: cert, Reason: reason})
}
