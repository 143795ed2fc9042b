package webenroll

import (
	"crypto/x509"
	"errors"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/enrollment-appliance/aeappliance/enrollsvc"
	"github.com/enrollment-appliance/aeappliance/enrollsvc/events"
	"github.com/enrollment-appliance/aeappliance/enrollsvc/policy"
	"github.com/enrollment-appliance/aeappliance/proto/cmc"
	"github.com/enrollment-appliance/aeappliance/proto/wstep"
	"github.com/enrollment-appliance/aeappliance/proto/xcep"
)

// oidAES256CBC is the content encryption clients are asked to archive keys with (MS-XCEP
// keyArchivalAttributes).
const oidAES256CBC = "2.16.840.1.101.3.4.1.42"

// nextUpdateHours is how often clients should ask for policy again (AD CS: 8).
const nextUpdateHours = 8

// HRESULTs in CertificateEnrollmentWSDetail.ErrorCode, as AD CS returns them.
const (
	hrTemplateDenied = -2146877422 // 0x80094012 CERTSRV_E_TEMPLATE_DENIED
	hrInvalidArg     = -2147024809 // 0x80070057 E_INVALIDARG
	hrNotFound       = -2147023728 // 0x80070490 ERROR_NOT_FOUND
	hrUnavailable    = -2147023174 // 0x800706BA RPC_S_SERVER_UNAVAILABLE
	hrFail           = -2147467259 // 0x80004005 E_FAIL
)

// hrOfCode is the HRESULT of a refusal's AD CS error (policy.Code...); others are
// CERTSRV_E_TEMPLATE_DENIED.
var hrOfCode = map[string]int32{
	policy.CodeRestrictedOfficer:     -2146877431, // 0x80094009
	policy.CodeSignatureCount:        -2146875382, // 0x8009480A
	policy.CodeSignatureRejected:     -2146875381, // 0x8009480B
	policy.CodeArchivedKeyRequired:   -2146875388, // 0x80094804
	policy.CodeArchivedKeyUnexpected: -2146875376, // 0x80094810
}

func (s *Server) getPolicies(w http.ResponseWriter, c caller) {
	req, err := xcep.ParseRequest(c.env)
	if err != nil {
		s.fault(w, http.StatusBadRequest, true, c.env.MessageID, err.Error(), nil)
		return
	}
	set, err := s.cfg.Core.Policies(c.r.Context(), c.account)
	if err != nil {
		s.coreFault(w, c, err, nil)
		return
	}
	resp := xcep.Response{PolicyID: s.cfg.PolicyID, PolicyFriendlyName: s.cfg.CAName, NextUpdateHours: nextUpdateHours}
	if req.LastUpdate != nil && !set.Changed.IsZero() && !set.Changed.After(*req.LastUpdate) {
		resp.PoliciesNotChanged = true
		s.reply(w, xcep.GetPoliciesResponseAction, c.env.MessageID, resp.Marshal())
		return
	}
	ca := xcep.CA{Certificate: s.cfg.CACert.Raw, EnrollPermission: true, ReferenceID: 0}
	bases := s.cfg.BaseURLs
	if s.cfg.Peers != nil {
		bases = append(slices.Clone(bases), s.cfg.Peers(c.r.Context())...)
	}
	for i, base := range bases {
		if s.cfg.Kerberos != nil && s.cfg.Kerberos.Ready() {
			ca.URIs = append(ca.URIs, xcep.CAURI{ClientAuthentication: xcep.AuthKerberos,
				URI: base + CESPath(s.cfg.CAName, "Kerberos"), Priority: i + 1})
		}
		ca.URIs = append(ca.URIs, xcep.CAURI{ClientAuthentication: xcep.AuthUsername,
			URI: base + CESPath(s.cfg.CAName, "UsernamePassword"), Priority: i + 1},
			xcep.CAURI{ClientAuthentication: xcep.AuthCertificate,
				URI: base + CESPath(s.cfg.CAName, "Certificate"), Priority: i + 1, RenewalOnly: true})
	}
	resp.CAs = []xcep.CA{ca}
	aesRef := -1
	for _, tp := range set.Templates {
		t := tp.Template
		if len(t.OID) == 0 {
			s.cfg.Logger.WarnContext(c.r.Context(), "template without msPKI-Cert-Template-OID left out of the policy", "template", t.Name)
			continue
		}
		ref := len(resp.OIDs)
		resp.OIDs = append(resp.OIDs, xcep.OID{Value: t.OID.String(), Group: xcep.GroupEnrollment, ReferenceID: ref, DefaultName: t.Name})
		p := xcep.Policy{PolicyOIDReference: ref, CAReferences: []int{ca.ReferenceID}, CommonName: t.Name,
			SchemaVersion: t.SchemaVersion, ValidityPeriodSeconds: int64(t.Validity.Seconds()),
			RenewalPeriodSeconds: int64(t.Renewal.Seconds()), Enroll: true, AutoEnroll: tp.Autoenroll,
			MinimalKeyLength: t.MinimalKeySize, KeySpec: t.KeySpec, MajorRevision: t.Major, MinorRevision: t.Minor,
			SupersededPolicies: t.Supersedes,
			PrivateKeyFlags:    uint32(t.PrivateKeyFlags) | uint32(t.PrivateKeyClientVersion)<<24 | uint32(t.PrivateKeyServerVersion)<<16,
			SubjectNameFlags:   uint32(t.NameFlags), EnrollmentFlags: uint32(t.EnrollmentFlags), GeneralFlags: uint32(t.GeneralFlags)}
		if t.RASignatures > 0 {
			p.RARequirements = &xcep.RARequirements{Signatures: uint32(t.RASignatures)}
		}
		if t.PrivateKeyFlags&policy.PrivateKeyRequireArchival != 0 {
			// MS-XCEP 3.1.4.1.3.15: how the client encrypts the key it archives. AES-256-CBC,
			// whatever msPKI-Symmetric-Algorithm says: the CA accepts AES and 3DES, and asks for
			// the strongest.
			if aesRef < 0 {
				aesRef = len(resp.OIDs)
				resp.OIDs = append(resp.OIDs, xcep.OID{Value: oidAES256CBC, Group: xcep.GroupEncryptionAlgorithm, ReferenceID: aesRef, DefaultName: "AES256"})
			}
			p.KeyArchivalAttributes = &xcep.KeyArchival{SymmetricAlgorithmOIDReference: aesRef, SymmetricAlgorithmKeyLength: 256}
		}
		resp.Policies = append(resp.Policies, p)
	}
	s.reply(w, xcep.GetPoliciesResponseAction, c.env.MessageID, resp.Marshal())
}

func (s *Server) enroll(w http.ResponseWriter, c caller) {
	req, err := wstep.ParseRequest(c.env)
	if err != nil {
		s.fault(w, http.StatusBadRequest, true, c.env.MessageID, err.Error(), wstep.FaultDetail(hrInvalidArg, 0, true, nil))
		return
	}
	switch req.RequestType {
	case wstep.QueryTokenStatus:
		id, err := strconv.ParseInt(strings.TrimSpace(req.RequestID), 10, 64)
		if err != nil || id <= 0 {
			s.fault(w, http.StatusBadRequest, true, c.env.MessageID, "RequestID is not a positive number", wstep.FaultDetail(hrInvalidArg, 0, true, nil))
			return
		}
		res, err := s.cfg.Core.Poll(c.r.Context(), id, c.account)
		if err != nil {
			s.coreFault(w, c, err, wstep.FaultDetail(hrOf(err), id, false, nil))
			return
		}
		s.answer(w, c, res, 1, false, nil)
	case wstep.Issue:
		cr, err := cmc.ParseRequest(req.Token)
		if err != nil {
			// An authenticated caller's request that cannot be read (a bad signature, a requester
			// named twice, ...) is recorded: nothing of it is kept but the reason.
			if s.cfg.Recorder != nil {
				_ = s.cfg.Recorder.Record(c.r.Context(), events.RequestRefused, "", "requester", c.who(),
					"template", req.Context["CertificateTemplate"], "reasons", []string{"the request cannot be read: " + err.Error()})
			}
			bin, _ := cmc.FailureResponse(1, cmc.FailInfoOf(err), err.Error())
			s.fault(w, http.StatusBadRequest, true, c.env.MessageID, "the request cannot be read: "+err.Error(), wstep.FaultDetail(hrInvalidArg, 0, true, bin))
			return
		}
		switch {
		case c.certificate && cr.Kind != cmc.Renewal:
			s.fault(w, http.StatusInternalServerError, true, c.env.MessageID,
				"the certificate endpoint takes renewals only (a request signed with the key of the certificate being renewed)",
				wstep.FaultDetail(hrTemplateDenied, 0, false, nil))
			return
		case cr.Kind == cmc.CMC && !cr.SignerIsRequestKey:
			s.fault(w, http.StatusInternalServerError, true, c.env.MessageID,
				"the request is signed by another certificate but names no account to enroll for (RequesterName)",
				wstep.FaultDetail(hrTemplateDenied, 0, false, nil))
			return
		}
		template := req.Context["CertificateTemplate"]
		if v, ok := cr.NameValue("CertificateTemplate"); ok {
			if template != "" && !strings.EqualFold(template, v) {
				s.fault(w, http.StatusBadRequest, true, c.env.MessageID, "the request names two different templates", wstep.FaultDetail(hrInvalidArg, 0, true, nil))
				return
			}
			template = v
		}
		var res *enrollsvc.EnrollResult
		if cr.Kind == cmc.Renewal {
			// Signed with the old certificate's key: for that certificate's account and template.
			res, err = s.cfg.Core.Renew(c.r.Context(), enrollsvc.RenewRequest{OldCert: cr.OldCert, CSR: cr.CSR,
				Template: template, Requester: c.who()})
		} else if cr.Kind == cmc.OnBehalf {
			// An enrollment agent (the authenticated caller, whose certificates signed) for the
			// account the request names: policy decides with both.
			res, err = s.cfg.Core.Enroll(c.r.Context(), enrollsvc.EnrollRequest{Template: template, Account: cr.RequesterName,
				Requester: c.who(), CSR: cr.CSR, OnBehalf: &enrollsvc.OnBehalf{Agent: c.account, Signers: cr.Agents}})
		} else {
			res, err = s.cfg.Core.Enroll(c.r.Context(), enrollsvc.EnrollRequest{Template: template, Account: c.account,
				Requester: c.who(), CSR: cr.CSR, ArchivedKey: cr.ArchivedKey})
		}
		if err != nil {
			var se *enrollsvc.Error
			id := int64(0)
			if errors.As(err, &se) {
				id = se.RequestID
			}
			s.coreFault(w, c, err, wstep.FaultDetail(hrOf(err), id, enrollsvc.KindOf(err) == enrollsvc.KindBadRequest, nil))
			return
		}
		var keyHash []byte
		if cr.ArchivedKey != nil {
			keyHash = cr.EncryptedKeyHash
		}
		s.answer(w, c, res, bodyPart(cr), cr.Kind != cmc.PKCS10, keyHash)
	case wstep.KET:
		// MS-WSTEP 3.1.4.2.2.1: the CA exchange certificate, for clients archiving their keys.
		if s.cfg.Exchange == nil {
			s.fault(w, http.StatusBadRequest, true, c.env.MessageID, "this CA offers no key exchange certificate",
				wstep.FaultDetail(hrInvalidArg, 0, true, nil))
			return
		}
		cert, err := s.cfg.Exchange(c.r.Context())
		if err != nil {
			s.coreFault(w, c, err, wstep.FaultDetail(hrOf(err), 0, false, nil))
			return
		}
		s.reply(w, wstep.KETFinalAction, c.env.MessageID, wstep.KeyExchangeToken(cert.Raw))
	default:
		s.fault(w, http.StatusBadRequest, true, c.env.MessageID, "request type "+req.RequestType+" is not supported",
			wstep.FaultDetail(hrInvalidArg, 0, true, nil))
	}
}

func bodyPart(cr *cmc.Request) int {
	if cr.BodyPartID > 0 {
		return cr.BodyPartID
	}
	return 1
}

// answer turns a core result into the WSTEP reply: issued (CMC response + leaf), pending
// (reference to this endpoint), or a fault carrying every reason.
// answer replies to an Issue or QueryTokenStatus. keyHash is the encrypted key hash of a key
// archival request, which the CA's full response repeats (MS-WCCE 3.2.1.4.2.1.4.8.2).
func (s *Server) answer(w http.ResponseWriter, c caller, res *enrollsvc.EnrollResult, bodyPartID int, signed bool, keyHash []byte) {
	switch res.Status {
	case enrollsvc.StatusIssued:
		// A bare PKCS#10 gets the certificates-only PKCS#7 the captured clients accept; CMC requests
		// get a full PKI response signed by the CA, as AD CS sends.
		signer, signerCert := s.cfg.CMCSigner, s.cfg.CACert
		if !signed || signer == nil {
			signer, signerCert = nil, nil
		}
		chain := []*x509.Certificate{s.cfg.CACert}
		var resp []byte
		var err error
		if keyHash != nil && signer != nil {
			resp, err = cmc.FullPKIResponseArchived(res.Certificate, chain, bodyPartID, signer, signerCert, keyHash)
		} else {
			resp, err = cmc.FullPKIResponse(res.Certificate, chain, bodyPartID, signer, signerCert)
		}
		if err != nil {
			s.cfg.Logger.ErrorContext(c.r.Context(), "building the CMC response", "request_id", res.RequestID, "error", err)
			s.fault(w, http.StatusInternalServerError, false, c.env.MessageID, "the certificate was issued but the response could not be built; ask again with QueryTokenStatus",
				wstep.FaultDetail(hrFail, res.RequestID, false, nil))
			return
		}
		s.reply(w, wstep.IssueResponseAction, c.env.MessageID, wstep.Issued(res.RequestID, resp, res.Certificate.Raw))
	case enrollsvc.StatusPending:
		s.reply(w, wstep.IssueResponseAction, c.env.MessageID, wstep.Pending(res.RequestID, s.cesURL(c)))
	default:
		reason := "the request was denied"
		if len(res.Reasons) > 0 {
			reason = "the request was denied: " + strings.Join(res.Reasons, "; ")
		}
		hr, ok := hrOfCode[res.Code]
		if !ok {
			hr = hrTemplateDenied
		}
		s.fault(w, http.StatusInternalServerError, true, c.env.MessageID, reason, wstep.FaultDetail(hr, res.RequestID, false, nil))
	}
}

// cesURL is this endpoint's URL as the client reached it (for the pending reference).
func (s *Server) cesURL(c caller) string {
	return "https://" + c.r.Host + c.r.URL.EscapedPath()
}

func hrOf(err error) int32 {
	switch enrollsvc.KindOf(err) {
	case enrollsvc.KindBadRequest:
		return hrInvalidArg
	case enrollsvc.KindRefused:
		return hrTemplateDenied
	case enrollsvc.KindNotFound:
		return hrNotFound
	case enrollsvc.KindUnavailable:
		return hrUnavailable
	}
	return hrFail
}
