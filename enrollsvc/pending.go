package enrollsvc

import (
	"context"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/enrollment-appliance/aeappliance/enrollsvc/events"
	"github.com/enrollment-appliance/aeappliance/enrollsvc/issue"
	"github.com/enrollment-appliance/aeappliance/enrollsvc/store"
	"github.com/enrollment-appliance/aeappliance/ldap"
	"github.com/enrollment-appliance/aeappliance/ldap/secdesc"
	"github.com/enrollment-appliance/aeappliance/proto/certutil"
)

// PendingLifetime is how long a request waits for a certificate manager before it expires.
const PendingLifetime = 60 * 24 * time.Hour

// Held is what a pending request will become on approval: the certificate exactly as policy
// decided it when the request arrived, which is what the certificate manager reviews.
type Held struct {
	Subject   string   `json:"subject"`
	SANs      []string `json:"sans,omitempty"`
	Publish   bool     `json:"publish,omitempty"`
	AccountDN string   `json:"account_dn,omitempty"`
	// AccountSID is the objectSid of the account decided for: approval finds the account by it, so
	// an account deleted and re-created under the same DN while the request waited is not it.
	AccountSID string   `json:"account_sid,omitempty"`
	Reasons    []string `json:"reasons,omitempty"`
	order      issue.Order
}

// heldJSON is the stored form of Held: every field of the order in a lossless encoding.
type heldJSON struct {
	Held
	RawSubject       []byte          `json:"raw_subject"` // DER: lossless, whatever string types it holds
	PublicKey        []byte          `json:"public_key"`
	Validity         time.Duration   `json:"validity"`
	KeyUsage         x509.KeyUsage   `json:"key_usage"`
	EKUs             []int           `json:"ekus,omitempty"`
	UnknownEKUs      []string        `json:"unknown_ekus,omitempty"`
	DNSNames         []string        `json:"dns_names,omitempty"`
	Emails           []string        `json:"emails,omitempty"`
	IPs              []string        `json:"ips,omitempty"`
	URIs             []string        `json:"uris,omitempty"`
	Extensions       []heldExtension `json:"extensions,omitempty"`
	NoRevocationInfo bool            `json:"no_revocation_info,omitempty"`
	// The template's key rules, checked again by the gate on approval.
	KeyAlgorithm string `json:"key_algorithm,omitempty"`
	MinKeyBits   int    `json:"min_key_bits,omitempty"`
}

type heldExtension struct {
	OID      string `json:"oid"`
	Critical bool   `json:"critical,omitempty"`
	Value    []byte `json:"value"`
}

func encodeHeld(h Held) ([]byte, error) {
	o := h.order
	pub, err := x509.MarshalPKIXPublicKey(o.PublicKey)
	if err != nil {
		return nil, fmt.Errorf("encoding the request's public key: %w", err)
	}
	raw := o.RawSubject
	if raw == nil {
		if raw, err = asn1.Marshal(o.Subject.ToRDNSequence()); err != nil {
			return nil, fmt.Errorf("encoding the subject: %w", err)
		}
	}
	j := heldJSON{Held: h, RawSubject: raw, PublicKey: pub, Validity: o.Validity, KeyUsage: o.KeyUsage,
		DNSNames: o.DNSNames, Emails: o.EmailAddresses, NoRevocationInfo: o.NoRevocationInfo,
		KeyAlgorithm: o.Key.Algorithm, MinKeyBits: o.Key.MinBits}
	for _, e := range o.ExtKeyUsage {
		j.EKUs = append(j.EKUs, int(e))
	}
	for _, e := range o.UnknownEKUs {
		j.UnknownEKUs = append(j.UnknownEKUs, e.String())
	}
	for _, ip := range o.IPAddresses {
		j.IPs = append(j.IPs, ip.String())
	}
	for _, u := range o.URIs {
		j.URIs = append(j.URIs, u.String())
	}
	for _, e := range o.ExtraExtensions {
		j.Extensions = append(j.Extensions, heldExtension{OID: e.Id.String(), Critical: e.Critical, Value: e.Value})
	}
	return json.Marshal(j)
}

func decodeHeld(b []byte) (Held, error) {
	var j heldJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return Held{}, fmt.Errorf("decoding the held decision: %w", err)
	}
	pub, err := x509.ParsePKIXPublicKey(j.PublicKey)
	if err != nil {
		return Held{}, fmt.Errorf("decoding the held public key: %w", err)
	}
	o := issue.Order{RawSubject: j.RawSubject, PublicKey: pub, Validity: j.Validity, KeyUsage: j.KeyUsage,
		DNSNames: j.DNSNames, EmailAddresses: j.Emails, NoRevocationInfo: j.NoRevocationInfo,
		Key: issue.KeyRules{Algorithm: j.KeyAlgorithm, MinBits: j.MinKeyBits}}
	for _, e := range j.EKUs {
		o.ExtKeyUsage = append(o.ExtKeyUsage, x509.ExtKeyUsage(e))
	}
	for _, s := range j.UnknownEKUs {
		oid, err := parseOID(s)
		if err != nil {
			return Held{}, err
		}
		o.UnknownEKUs = append(o.UnknownEKUs, oid)
	}
	for _, s := range j.IPs {
		ip := net.ParseIP(s)
		if ip == nil {
			return Held{}, fmt.Errorf("held IP address %q", s)
		}
		o.IPAddresses = append(o.IPAddresses, ip)
	}
	for _, s := range j.URIs {
		u, err := url.Parse(s)
		if err != nil {
			return Held{}, fmt.Errorf("held URI %q: %w", s, err)
		}
		o.URIs = append(o.URIs, u)
	}
	for _, e := range j.Extensions {
		oid, err := parseOID(e.OID)
		if err != nil {
			return Held{}, err
		}
		o.ExtraExtensions = append(o.ExtraExtensions, pkix.Extension{Id: oid, Critical: e.Critical, Value: e.Value})
	}
	h := j.Held
	h.order = o
	return h, nil
}

func parseOID(s string) (asn1.ObjectIdentifier, error) {
	var oid asn1.ObjectIdentifier
	for _, part := range strings.Split(s, ".") {
		n, err := strconv.Atoi(part)
		if err != nil || n < 0 {
			return nil, fmt.Errorf("bad OID %q", s)
		}
		oid = append(oid, n)
	}
	if len(oid) < 2 {
		return nil, fmt.Errorf("bad OID %q", s)
	}
	return oid, nil
}

// Hold records a request that waits for a certificate manager, with the certificate policy
// decided for it, and returns its ID.
func (s *Service) Hold(ctx context.Context, o issue.Order, h Held, m Meta) (int64, error) {
	h.order = o
	b, err := encodeHeld(h)
	if err != nil {
		return 0, &Error{Kind: KindBadRequest, Op: "holding request", Err: err}
	}
	now := s.rec.Now()
	ev := events.New(now, events.RequestPending, "", "account", m.Account, "template", m.Template,
		"subject", h.Subject, "sans", h.SANs)
	id, err := s.store.CreateRequest(ctx, store.Request{State: store.RequestPending, Template: m.Template,
		Requester: m.Requester, Account: m.Account, CSR: m.CSR, Submitted: now, Updated: now,
		Reason: "waiting for approval by a certificate manager", Decision: b, SCEP: m.SCEP}, ev)
	if err != nil {
		return 0, &Error{Kind: KindInternal, Op: "recording pending request", Err: err}
	}
	ev.Fields["request_id"] = id
	s.rec.Log(ctx, ev)
	return id, nil
}

// HeldOf returns what a pending request will become on approval.
func (s *Service) HeldOf(ctx context.Context, id int64) (Held, error) {
	r, err := s.store.GetRequest(ctx, id)
	if err != nil {
		return Held{}, &Error{Kind: KindOf(err), Op: fmt.Sprintf("request %d", id), Err: err}
	}
	if len(r.Decision) == 0 {
		return Held{}, &Error{Kind: KindNotFound, Op: fmt.Sprintf("request %d", id), Err: errors.New("no held decision")}
	}
	return decodeHeld(r.Decision)
}

// Publisher puts issued certificates into the directory.
type Publisher interface {
	PublishCertificate(ctx context.Context, dn string, der []byte) error
}

// Approve issues a pending request exactly as it was decided and held. by names the approver.
func (s *Service) Approve(ctx context.Context, id int64, by string, pub Publisher) (*Issued, error) {
	op := fmt.Sprintf("approving request %d", id)
	r, err := s.pendingRequest(ctx, id, op)
	if err != nil {
		return nil, err
	}
	h, err := decodeHeld(r.Decision)
	if err != nil {
		return nil, &Error{Kind: KindInternal, Op: op, RequestID: id, Err: err}
	}
	if s.dir != nil && s.dir.Dir != nil && h.AccountDN != "" {
		// The account may have been disabled, locked out, expired or deleted while the request
		// waited. Held requests from before AccountSID was recorded are found by DN.
		lookup := h.AccountDN
		if sid, err := secdesc.ParseSID(h.AccountSID); err == nil {
			lookup = ldap.SIDAccount(sid)
		}
		_, reasons, err := s.account(ctx, s.dir, lookup, nil)
		if err != nil {
			return nil, err
		}
		if reasons != nil {
			return nil, &Error{Kind: KindConflict, Op: op, RequestID: id, Err: fmt.Errorf("%s: deny the request", strings.Join(reasons, "; "))}
		}
	}
	approved := events.New(s.rec.Now(), events.RequestApproved, "", "request_id", id, "by", by, "subject", h.Subject)
	res, err := s.issueForRequest(ctx, id, h.order, Meta{Requester: r.Requester, Account: r.Account, Template: r.Template}, approved)
	if err != nil {
		return nil, err
	}
	if h.Publish {
		if err := s.Publish(ctx, pub, h.AccountDN, res); err != nil {
			s.log.ErrorContext(ctx, "approved request issued, publication not recorded", "request_id", id, "error", err)
		}
	}
	s.notifyDecided(ctx, r, res.Certificate, "")
	return res, nil
}

// Deny refuses a pending request with a reason. by names the certificate manager.
func (s *Service) Deny(ctx context.Context, id int64, reason, by string) error {
	op := fmt.Sprintf("denying request %d", id)
	if reason == "" {
		return &Error{Kind: KindBadRequest, Op: op, RequestID: id, Err: errors.New("a reason is required")}
	}
	r, err := s.pendingRequest(ctx, id, op)
	if err != nil {
		return err
	}
	ev := events.New(s.rec.Now(), events.RequestDenied, "", "by", by, "reason", reason)
	if err := s.store.SetRequestState(ctx, id, store.RequestDenied, reason, ev); err != nil {
		return &Error{Kind: KindOf(err), Op: op, RequestID: id, Err: err}
	}
	ev.Fields["request_id"] = id
	s.rec.Log(ctx, ev)
	s.notifyDecided(ctx, r, nil, "denied by a certificate manager: "+reason)
	return nil
}

// pendingRequest returns request id if it is pending and not expired; an expired one is denied.
func (s *Service) pendingRequest(ctx context.Context, id int64, op string) (store.Request, error) {
	r, err := s.store.GetRequest(ctx, id)
	if err != nil {
		return store.Request{}, &Error{Kind: KindOf(err), Op: op, RequestID: id, Err: err}
	}
	if r.State != store.RequestPending {
		return store.Request{}, &Error{Kind: KindConflict, Op: op, RequestID: id, Err: fmt.Errorf("the request is %s, not pending", r.State)}
	}
	if s.rec.Now().Sub(r.Submitted) > PendingLifetime {
		return store.Request{}, &Error{Kind: KindConflict, Op: op, RequestID: id,
			Err: errors.Join(fmt.Errorf("the request expired: pending since %s, longer than %d days", r.Submitted.Format(time.RFC3339), PendingLifetime/(24*time.Hour)),
				s.expire(ctx, r))}
	}
	if len(r.Decision) == 0 {
		return store.Request{}, &Error{Kind: KindConflict, Op: op, RequestID: id, Err: errors.New("the request has no held decision to issue")}
	}
	return r, nil
}

func (s *Service) expire(ctx context.Context, r store.Request) error {
	reason := fmt.Sprintf("expired: pending for more than %d days", PendingLifetime/(24*time.Hour))
	ev := events.New(s.rec.Now(), events.RequestDenied, reason, "by", "enrollsvc")
	if err := s.store.SetRequestState(context.WithoutCancel(ctx), r.ID, store.RequestDenied, reason, ev); err != nil {
		return fmt.Errorf("expiring request %d: %w", r.ID, err)
	}
	ev.Fields["request_id"] = r.ID
	s.rec.Log(ctx, ev)
	s.notifyDecided(ctx, r, nil, reason)
	return nil
}

// ExpirePending denies every request pending longer than PendingLifetime and returns how many.
func (s *Service) ExpirePending(ctx context.Context) (int, error) {
	cutoff := s.rec.Now().Add(-PendingLifetime)
	n := 0
	var after int64
	for {
		list, err := s.store.ListRequests(ctx, store.RequestFilter{State: store.RequestPending, AfterID: after, Limit: 1000})
		if err != nil {
			return n, err
		}
		for _, r := range list {
			after = r.ID
			if r.Submitted.Before(cutoff) {
				if err := s.expire(ctx, r); err != nil {
					return n, err
				}
				n++
			}
		}
		if len(list) < 1000 {
			return n, nil
		}
	}
}

// Publish adds an issued certificate to the account's userCertificate. A failure to publish
// does not undo the issuance: it is recorded for the administrator. The error is that of the
// publication or of its audit event, for the caller to report.
func (s *Service) Publish(ctx context.Context, pub Publisher, dn string, res *Issued) error {
	serial := certutil.SerialString(res.Certificate.SerialNumber)
	var perr error
	switch {
	case pub == nil || dn == "":
		perr = errors.New("no directory configured")
	default:
		perr = pub.PublishCertificate(ctx, dn, res.Certificate.Raw)
	}
	if perr != nil {
		perr = fmt.Errorf("publishing serial %s to %s: %w", serial, dn, perr)
		return errors.Join(perr, s.rec.Record(ctx, events.PublishFailed, "", "serial", serial, "dn", dn, "error", perr.Error()))
	}
	return s.rec.Record(ctx, events.CertificatePublished, "", "serial", serial, "dn", dn)
}
