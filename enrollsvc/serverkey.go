package enrollsvc

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"strings"

	"github.com/enrollment-appliance/aeappliance/enrollsvc/policy"
)

// ServerKeyRequest asks for a key pair made here, for an account on a directory template: the
// MDM connector's PKCS requests (a device gets a key it did not make) and `aectl pkcs12 issue`.
type ServerKeyRequest struct {
	Template  string
	Account   string // the account the certificate is for, as the MDM or administrator names it
	Requester string // who asked ("mdm:NAME", "admin-api")
}

// EnrollServerKey makes a key pair in memory by the template's key rules (algorithm and
// minimum size), runs a request for it through the same directory policy and issuance gate as
// every other request (Enroll), and returns the result with the key when issued. The key is
// never stored or logged here: the caller delivers it encrypted and drops it. A template that
// holds requests for a certificate manager or needs agent signatures is refused: a key made
// here is delivered at once or not at all, never kept waiting.
func (s *Service) EnrollServerKey(ctx context.Context, r ServerKeyRequest) (*EnrollResult, crypto.Signer, error) {
	dc, err := s.directory("enrolling")
	if err != nil {
		return nil, nil, err
	}
	if r.Template == "" || r.Account == "" {
		return nil, nil, &Error{Kind: KindBadRequest, Op: "reading the request", Err: fmt.Errorf("a template and an account are required")}
	}
	meta := Meta{Requester: r.Requester, Account: r.Account, Template: r.Template}
	t, reasons, err := s.template(ctx, dc, r.Template)
	if err != nil {
		return nil, nil, err
	}
	if reasons != nil {
		res, err := s.refuse(ctx, meta, reasons, nil)
		return res, nil, err
	}
	meta.Template = t.Name
	if t.EnrollmentFlags&policy.EnrollPendAllRequests != 0 || t.RASignatures > 0 {
		res, err := s.refuse(ctx, meta, []string{"the template holds requests for approval or agent signatures; " +
			"a key made here is delivered at once or not at all"}, nil)
		return res, nil, err
	}
	key, err := ServerKeyFor(*t)
	if err != nil {
		res, rerr := s.refuse(ctx, meta, []string{err.Error()}, nil)
		return res, nil, rerr
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: r.Account}}, key)
	if err != nil {
		return nil, nil, &Error{Kind: KindInternal, Op: "making the request for a key made here", Err: err}
	}
	// A template that requires archival gets the key archived for the recovery agents before
	// anything is issued; the archive goes again if nothing is.
	archived := ""
	if t.PrivateKeyFlags&policy.PrivateKeyRequireArchival != 0 {
		h, reasons, err := s.archiveKey(ctx, key, t, meta)
		if err != nil {
			return nil, nil, err
		}
		if reasons != nil {
			res, err := s.refuse(ctx, meta, reasons, nil)
			return res, nil, err
		}
		archived = h
	}
	res, err := s.Enroll(ctx, EnrollRequest{Template: t.Name, Account: r.Account, Requester: r.Requester, CSR: csr, KeyArchived: archived != "",
		NamedByConnector: true})
	if err != nil {
		s.dropArchive(ctx, archived, "the request failed: "+err.Error())
		return nil, nil, err
	}
	if res.Status != StatusIssued {
		s.dropArchive(ctx, archived, "the request was not issued")
	}
	switch res.Status {
	case StatusIssued:
		return res, key, nil
	case StatusPending: // the policy held it after all: the key is dropped, so is the request
		reason := "held for approval, but a key made here is delivered at once or not at all"
		if err := s.Deny(ctx, res.RequestID, reason, r.Requester); err != nil {
			return nil, nil, err
		}
		res.Status, res.Reasons = StatusDenied, append(res.Reasons, reason)
	}
	return res, nil, nil
}

// ServerKeyFor makes a key pair in memory that the template's key rules accept: RSA (at least
// 2048 bits, or the template's minimum rounded up to 3072 or 4096) unless the template asks for
// elliptic curves (msPKI-Asymmetric-Algorithm ECDSA_P256/P384/P521 or ECDH_*, or ECDSA/ECDH with
// the curve from the minimum size).
func ServerKeyFor(t policy.Template) (crypto.Signer, error) {
	alg := strings.ToUpper(t.KeyAlgorithm)
	switch {
	case alg == "" || alg == "RSA":
		bits := 2048
		for _, b := range []int{2048, 3072, 4096} {
			if t.MinimalKeySize <= b {
				bits = b
				break
			}
		}
		if t.MinimalKeySize > 4096 {
			return nil, fmt.Errorf("the template asks for RSA keys of at least %d bits; keys made here are at most 4096", t.MinimalKeySize)
		}
		return rsa.GenerateKey(rand.Reader, bits)
	case strings.HasPrefix(alg, "ECDSA") || strings.HasPrefix(alg, "ECDH"):
		var c elliptic.Curve
		switch {
		case strings.HasSuffix(alg, "_P256"):
			c = elliptic.P256()
		case strings.HasSuffix(alg, "_P384"):
			c = elliptic.P384()
		case strings.HasSuffix(alg, "_P521"):
			c = elliptic.P521()
		case t.MinimalKeySize <= 256:
			c = elliptic.P256()
		case t.MinimalKeySize <= 384:
			c = elliptic.P384()
		default:
			c = elliptic.P521()
		}
		return ecdsa.GenerateKey(c, rand.Reader)
	}
	return nil, fmt.Errorf("the template asks for %s keys, which are not made here", t.KeyAlgorithm)
}

// DirectoryAccount returns the directory object an account name (sAMAccountName, UPN, HOST$ or
// DN) names: KindNotFound with the reasons when there is none (or it is disabled).
func (s *Service) DirectoryAccount(ctx context.Context, name string) (*policy.Account, error) {
	dc, err := s.directory("looking up an account")
	if err != nil {
		return nil, err
	}
	a, reasons, err := s.account(ctx, dc, name, nil)
	if err != nil {
		return nil, err
	}
	if reasons != nil {
		return nil, &Error{Kind: KindNotFound, Op: "looking up account " + name, Err: errors.New(strings.Join(reasons, "; "))}
	}
	return a, nil
}
