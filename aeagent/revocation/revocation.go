package revocation

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"
)

// Status is what a check found out about a certificate.
type Status int

const (
	// Unknown: no source gave a verified answer; Result.Err says why.
	Unknown Status = iota
	// Good: a verified OCSP response or CRL says the certificate is not revoked.
	Good
	// Revoked: a verified OCSP response or CRL says the certificate is revoked.
	Revoked
)

func (s Status) String() string {
	switch s {
	case Unknown:
		return "unknown"
	case Good:
		return "good"
	case Revoked:
		return "revoked"
	}
	return fmt.Sprintf("Status(%d)", int(s))
}

// NoReason is Result.Reason when the status is not Revoked. A revoked certificate whose OCSP
// response or CRL entry gives no reason has reason 0, unspecified, as RFC 5280 5.3.1 says.
const NoReason = -1

// Result is the answer of a check.
type Result struct {
	Status Status
	// Reason is the RFC 5280 5.3.1 reason code when Status is Revoked (0, unspecified, when
	// the source gave none), NoReason otherwise. ReasonName spells it.
	Reason int
	// RevokedAt is the revocation time when Status is Revoked, zero otherwise.
	RevokedAt time.Time
	// Source is what answered, "ocsp http://..." or "crl http://...", when Status is Good or
	// Revoked; empty otherwise, and empty for the Good of CheckChain.
	Source string
	// Err says why the status is Unknown: every source's failure, each naming its URL, or
	// ErrNoSource. It is nil when the status is Good or Revoked.
	Err error
}

// ErrNoSource is in Result.Err when the certificate names no http:// OCSP responder or CRL
// distribution point, so nothing could be asked.
var ErrNoSource = errors.New("the certificate names no http OCSP responder or CRL distribution point")

// ReasonName returns the RFC 5280 name of a reason code, "none" for NoReason and "reason N" for
// codes that RFC 5280 does not define.
func ReasonName(code int) string {
	names := [...]string{"unspecified", "keyCompromise", "cACompromise", "affiliationChanged", "superseded",
		"cessationOfOperation", "certificateHold", "", "removeFromCRL", "privilegeWithdrawn", "aACompromise"}
	if code == NoReason {
		return "none"
	}
	if code >= 0 && code < len(names) && names[code] != "" {
		return names[code]
	}
	return fmt.Sprintf("reason %d", code)
}

const (
	defaultTimeout  = 30 * time.Second
	defaultMaxCRL   = 32 << 20
	maxOCSPResponse = 1 << 20
	maxRedirects    = 10
	// clockSkew is how far in the future a thisUpdate may be.
	clockSkew = 5 * time.Minute
)

// Checker checks certificates for revocation. The zero value is ready to use.
type Checker struct {
	// HTTP fetches OCSP responses and CRLs. Nil: a client with a 30 s timeout that follows at
	// most 10 redirects, and only to http or https URLs.
	HTTP *http.Client
	// Now is the clock. Nil: time.Now.
	Now func() time.Time
	// MaxCRL is the largest CRL read, in bytes; 0 or less: 32 MiB.
	MaxCRL int64

	once        sync.Once
	defaultHTTP *http.Client

	mu   sync.Mutex
	crls map[string]*crlInfo // by URL; see cachedCRL
}

// Check tells whether cert, issued by issuer, is revoked. It asks the certificate's OCSP
// responders, then reads its CRLs, and returns the first definitive answer; see the package
// documentation for the order and for what is verified. It returns Unknown with Err when issuer
// did not sign cert or when no source gives a verified answer.
func (c *Checker) Check(ctx context.Context, cert, issuer *x509.Certificate) Result {
	if cert == nil || issuer == nil {
		return unknown(errors.New("checking revocation: no certificate or no issuer"))
	}
	if err := issuedBy(cert, issuer); err != nil {
		return unknown(fmt.Errorf("checking that %q issued %q: %w", issuer.Subject, cert.Subject, err))
	}
	type source struct {
		kind, url string
		check     func(context.Context, string, *x509.Certificate, *x509.Certificate) (Result, error)
	}
	var sources []source
	for _, u := range cert.OCSPServer {
		sources = append(sources, source{"ocsp", u, c.checkOCSP})
	}
	for _, u := range cert.CRLDistributionPoints {
		sources = append(sources, source{"crl", u, c.checkCRL})
	}
	var errs sourceErrors
	asked := false
	for _, s := range sources {
		name := s.kind + " " + s.url
		if err := fetchable(s.url); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", name, err))
			continue
		}
		asked = true
		r, err := s.check(ctx, s.url, cert, issuer)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", name, err))
			continue
		}
		r.Source = name
		return r
	}
	if !asked {
		errs = append(sourceErrors{ErrNoSource}, errs...)
	}
	return unknown(errs)
}

// CheckChain checks a chain: chain[0] is the leaf and each next certificate is the issuer of the
// one before. Every certificate that is not self-signed is checked with Check against the next
// one; a self-signed certificate (normally the root, last) is not checked, and a certificate that
// is not self-signed but last, so that its issuer is missing, counts as Unknown. All are checked,
// so that a revoked CA is found even when the leaf's status is unknown. CheckChain returns
//   - the index and Result of the first Revoked certificate, if any;
//   - else the index and Result of the first Unknown one, if any;
//   - else -1 and Good (Source empty): every certificate checked is Good, or nothing needed checking.
//
// An empty chain is -1 and Unknown.
func (c *Checker) CheckChain(ctx context.Context, chain []*x509.Certificate) (int, Result) {
	if len(chain) == 0 {
		return -1, unknown(errors.New("checking revocation of a chain: the chain is empty"))
	}
	first, firstUnknown := -1, Result{}
	for i, cert := range chain {
		if cert == nil {
			return -1, unknown(fmt.Errorf("checking revocation of a chain: chain[%d] is nil", i))
		}
		if selfSigned(cert) {
			continue
		}
		var r Result
		if i+1 < len(chain) {
			r = c.Check(ctx, cert, chain[i+1])
		} else {
			r = unknown(fmt.Errorf("checking revocation of %q: its issuer is not in the chain", cert.Subject))
		}
		switch {
		case r.Status == Revoked:
			return i, r
		case r.Status != Good && first < 0:
			first, firstUnknown = i, r
		}
	}
	if first >= 0 {
		return first, firstUnknown
	}
	return -1, Result{Status: Good, Reason: NoReason}
}

func unknown(err error) Result { return Result{Status: Unknown, Reason: NoReason, Err: err} }

// issuedBy checks that issuer's name and key signed cert. Unlike cert.CheckSignatureFrom it
// accepts SHA-1 signatures: this says which CA answers for cert, not whether cert is to be
// trusted, and a revoked legacy certificate must still be found revoked.
func issuedBy(cert, issuer *x509.Certificate) error {
	if !bytes.Equal(cert.RawIssuer, issuer.RawSubject) {
		return fmt.Errorf("it names the issuer %q", cert.Issuer)
	}
	return issuer.CheckSignature(cert.SignatureAlgorithm, cert.RawTBSCertificate, cert.Signature)
}

func selfSigned(cert *x509.Certificate) bool {
	return bytes.Equal(cert.RawIssuer, cert.RawSubject) &&
		cert.CheckSignature(cert.SignatureAlgorithm, cert.RawTBSCertificate, cert.Signature) == nil
}

// sourceErrors are the failures of the sources asked, in order; errors.Is and errors.As see each.
type sourceErrors []error

func (e sourceErrors) Error() string {
	s := make([]string, len(e))
	for i, err := range e {
		s[i] = err.Error()
	}
	return strings.Join(s, "; ")
}

func (e sourceErrors) Unwrap() []error { return e }

// fetchable says why u is not fetched, or nil for an http URL.
func fetchable(u string) error {
	p, err := url.Parse(u)
	if err != nil || !strings.EqualFold(p.Scheme, "http") || p.Host == "" {
		return errors.New("skipped: only http URLs are fetched")
	}
	return nil
}

func (c *Checker) now() time.Time {
	if c.Now != nil {
		return c.Now()
	}
	return time.Now()
}

func (c *Checker) client() *http.Client {
	if c.HTTP != nil {
		return c.HTTP
	}
	c.once.Do(func() {
		t := http.DefaultTransport.(*http.Transport).Clone()
		c.defaultHTTP = &http.Client{Transport: t, Timeout: defaultTimeout,
			CheckRedirect: func(req *http.Request, via []*http.Request) error {
				if len(via) >= maxRedirects {
					return fmt.Errorf("stopped after %d redirects", maxRedirects)
				}
				if s := req.URL.Scheme; s != "http" && s != "https" {
					return fmt.Errorf("refusing a redirect to a %s URL", s)
				}
				return nil
			}}
	})
	return c.defaultHTTP
}

// errTooLarge is in the error of fetch when the body is larger than its limit.
var errTooLarge = errors.New("response too large")

// fetch sends req and returns the body of a 200 response, at most limit bytes.
func (c *Checker) fetch(req *http.Request, limit int64) ([]byte, error) {
	resp, err := c.client().Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("HTTP status %s", resp.Status)
	}
	if resp.ContentLength > limit {
		return nil, fmt.Errorf("%w: %d bytes announced, the limit is %d", errTooLarge, resp.ContentLength, limit)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return nil, fmt.Errorf("reading the response: %w", err)
	}
	if int64(len(body)) > limit {
		return nil, fmt.Errorf("%w: more than %d bytes", errTooLarge, limit)
	}
	return body, nil
}
