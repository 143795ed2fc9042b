package enrollsvc

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/enrollment-appliance/aeappliance/apiclient"
	"github.com/enrollment-appliance/aeappliance/enrollsvc/events"
	"github.com/enrollment-appliance/aeappliance/enrollsvc/store"
)

// ParseReason reads a revocation reason (RFC 5280 §5.3.1) by name (case-insensitive, one of
// apiclient.ReasonNames) or number. certificateHold is not offered: revocation here is final.
func ParseReason(s string) (int, error) {
	if c, ok := apiclient.ReasonCode(s); ok {
		return c, nil
	}
	return 0, &Error{Kind: KindBadRequest, Op: "reading the revocation reason",
		Err: fmt.Errorf("%q is not one of %s (revocation is final: certificateHold is not offered)", s, strings.Join(apiclient.ReasonNames(), ", "))}
}

// Unpublisher removes a certificate from an account's userCertificate.
type Unpublisher interface {
	UnpublishCertificate(ctx context.Context, dn string, der []byte) error
}

// RevokeStore is what Revoke needs of the store beyond Store.
type RevokeStore interface {
	RevokeCertificate(ctx context.Context, serial string, reason int, at time.Time, e store.Event) error
}

// OnRevoke registers f, called after every revocation (e.g. to publish a new CRL at once).
// Call it once, before the service is used.
func (s *Service) OnRevoke(f func(serial string)) { s.onRevoke = f }

// Revoke revokes the certificate with serial for reason, by an administrator: the store records
// it with its audit event in one durable transaction (revocation is final), then the certificate
// is removed from its account's userCertificate (a failure there is recorded, not undone), then
// the OnRevoke hook runs. KindNotFound for an unknown serial, KindConflict if already revoked.
func (s *Service) Revoke(ctx context.Context, serial string, reason int, by string) (*store.Certificate, error) {
	op := "revoking serial " + serial
	rs, ok := s.store.(RevokeStore)
	if !ok {
		return nil, &Error{Kind: KindInternal, Op: op, Err: errors.New("the store cannot revoke")}
	}
	if _, known := apiclient.ReasonCode(apiclient.ReasonName(reason)); !known {
		return nil, &Error{Kind: KindBadRequest, Op: op, Err: fmt.Errorf("reason %d is not offered", reason)}
	}
	now := s.rec.Now()
	c, err := s.store.GetCertificate(ctx, serial)
	if err != nil {
		return nil, &Error{Kind: KindOf(err), Op: op, Err: err}
	}
	e := events.New(now, events.CertificateRevoked, "", "serial", serial, "reason", apiclient.ReasonName(reason), "by", by,
		"account", c.Account, "template", c.Template, "subject", c.Subject)
	if err := rs.RevokeCertificate(ctx, serial, reason, now, e); err != nil {
		return nil, &Error{Kind: KindOf(err), Op: op, Err: err}
	}
	s.rec.Log(ctx, e)
	c.Status, c.RevokedAt, c.RevocationReason = store.CertRevoked, now, reason
	s.unpublish(ctx, c)
	if s.onRevoke != nil {
		s.onRevoke(serial)
	}
	return &c, nil
}

// unpublish removes a revoked certificate from its account's userCertificate, if a directory is
// configured and the account is found there.
func (s *Service) unpublish(ctx context.Context, c store.Certificate) {
	if s.dir == nil || s.dir.Dir == nil || c.Account == "" {
		return
	}
	u, ok := s.dir.Dir.(Unpublisher)
	if !ok {
		return
	}
	cert, err := x509.ParseCertificate(c.DER)
	if err != nil {
		return
	}
	a, err := s.dir.Dir.Account(ctx, c.Account)
	if err == nil {
		err = u.UnpublishCertificate(ctx, a.DN, cert.Raw)
	}
	if err != nil {
		_ = s.rec.Record(ctx, events.PublishFailed, "removing a revoked certificate from the directory failed",
			"serial", c.Serial, "account", c.Account, "error", err.Error())
		return
	}
	_ = s.rec.Record(ctx, events.CertificateUnpublished, "", "serial", c.Serial, "dn", a.DN)
}
