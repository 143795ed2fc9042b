package mdm

import (
	"context"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"strings"

	"github.com/enrollment-appliance/aeappliance/apiclient"
	"github.com/enrollment-appliance/aeappliance/enrollsvc"
	"github.com/enrollment-appliance/aeappliance/enrollsvc/events"
	"github.com/enrollment-appliance/aeappliance/enrollsvc/store"
	"github.com/enrollment-appliance/aeappliance/proto/certutil"
)

// Revoke revokes, at mdm's request (device retired or wiped), a certificate it obtained: one
// whose request it made. An administrator (Admin) may name any certificate. The certificate is
// named by serial or by thumbprint (hex SHA-1 or SHA-256 of its DER).
func (c *Connector) Revoke(ctx context.Context, mdm string, in apiclient.MDMRevokeRequest, remote string) (*store.Certificate, error) {
	refuse := func(kind enrollsvc.Kind, why string) error {
		_ = c.cfg.Recorder.Record(ctx, events.MDMRevokeRefused, "", "mdm", mdm, "serial", in.Serial, "thumbprint", in.Thumbprint,
			"reason", why, "remote", remote)
		return &enrollsvc.Error{Kind: kind, Op: "revoking at an MDM's request", Err: errors.New(why)}
	}
	reason, err := enrollsvc.ParseReason(in.Reason)
	if err != nil {
		return nil, err
	}
	if (in.Serial == "") == (in.Thumbprint == "") {
		return nil, badRequest("name the certificate by serial or by thumbprint (one of them)")
	}
	var cert store.Certificate
	if in.Serial != "" {
		n, err := certutil.ParseSerial(in.Serial)
		if err != nil {
			return nil, badRequest("serial: %v", err)
		}
		cert, err = c.cfg.Store.GetCertificate(ctx, certutil.SerialString(n))
		if errors.Is(err, store.ErrNotFound) {
			return nil, refuse(enrollsvc.KindNotFound, "no certificate of this CA has that serial")
		}
		if err != nil {
			return nil, err
		}
	} else {
		tp, err := hex.DecodeString(strings.ReplaceAll(strings.ReplaceAll(in.Thumbprint, ":", ""), " ", ""))
		if err != nil || len(tp) != sha1.Size && len(tp) != sha256.Size {
			return nil, badRequest("thumbprint: want the hex SHA-1 or SHA-256 of the certificate")
		}
		found, err := c.byThumbprint(ctx, tp)
		if err != nil {
			return nil, err
		}
		if found == nil {
			return nil, refuse(enrollsvc.KindNotFound, "no valid certificate of this CA has that thumbprint")
		}
		cert = *found
	}
	if mdm != Admin {
		owner := ""
		if cert.RequestID != 0 {
			r, err := c.cfg.Store.GetRequest(ctx, cert.RequestID)
			if err != nil && !errors.Is(err, store.ErrNotFound) {
				return nil, err
			}
			owner = r.Requester
		}
		if owner != Requester(mdm) {
			// Another's certificate is not even said to exist.
			return nil, refuse(enrollsvc.KindNotFound, "no certificate this MDM obtained has that serial")
		}
	}
	if cert.Status == store.CertRevoked {
		return nil, refuse(enrollsvc.KindConflict, "the certificate is revoked already")
	}
	rc, err := c.cfg.Core.Revoke(ctx, cert.Serial, reason, Requester(mdm))
	if err != nil {
		return nil, err
	}
	_ = c.cfg.Recorder.Record(ctx, events.MDMRevoked, "", "mdm", mdm, "serial", rc.Serial, "account", rc.Account,
		"template", rc.Template, "revocation_reason", in.Reason, "remote", remote)
	return rc, nil
}

// byThumbprint finds the valid certificate whose SHA-1 or SHA-256 is tp, reading the valid
// certificates page by page (the store keeps no thumbprint index: name certificates by serial
// where you can).
func (c *Connector) byThumbprint(ctx context.Context, tp []byte) (*store.Certificate, error) {
	const page = 1000
	for off := 0; ; off += page {
		cs, err := c.cfg.Store.ListCertificates(ctx, store.CertFilter{Status: store.CertValid, Limit: page, Offset: off})
		if err != nil {
			return nil, err
		}
		for i := range cs {
			var sum []byte
			if len(tp) == sha1.Size {
				s := sha1.Sum(cs[i].DER)
				sum = s[:]
			} else {
				s := sha256.Sum256(cs[i].DER)
				sum = s[:]
			}
			if string(sum) == string(tp) {
				return &cs[i], nil
			}
		}
		if len(cs) < page {
			return nil, nil
		}
	}
}
