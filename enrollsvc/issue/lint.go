package issue

import (
	"bytes"
	"crypto/x509"
	"errors"
	"fmt"
	"sort"
	"strings"

	zx509 "github.com/zmap/zcrypto/x509"
	"github.com/zmap/zlint/v3/lint"
	_ "github.com/zmap/zlint/v3/lints/rfc" // registers the IETF lints, the only ones newLinter selects
)

// LintError lists why a certificate was refused before the CA signed it.
type LintError struct {
	Findings []string // "lint_name: details"
}

func (e *LintError) Error() string {
	return "issue: certificate refused by lint: " + strings.Join(e.Findings, "; ")
}

// ErrLint matches every *LintError with errors.Is.
var ErrLint = errors.New("certificate refused by lint")

// Is lets errors.Is(err, ErrLint) match.
func (e *LintError) Is(target error) bool { return target == ErrLint }

// linter runs the zlint lints that apply to an enterprise CA (the IETF ones; CA/Browser Forum
// and root-program lints are about the public web PKI) and our own checks.
//
// Only zlint's lints/rfc package is linked, not the zlint package, which links every lint
// package (CA/Browser Forum, S/MIME, EV, ETSI, root programs, community: about 320 lints and the
// public suffix list) that the filter then drops: 10-25 ms of package initialisation at every
// start of the service natively, ten times that under emulation, and a larger image. lint runs
// the selected lints as zlint.LintCertificateEx does (lint.CertificateLint.Execute with the
// registry's configuration).
type linter struct {
	registry lint.Registry
}

func newLinter() (*linter, error) {
	reg, err := lint.GlobalRegistry().Filter(lint.FilterOptions{
		IncludeSources: lint.SourceList{lint.RFC5280, lint.RFC5480, lint.RFC5891, lint.RFC8813, lint.RFC3279},
	})
	if err != nil {
		return nil, fmt.Errorf("issue: selecting lints: %w", err)
	}
	return &linter{registry: reg}, nil
}

// lint returns the findings below error level, or a *LintError.
func (l *linter) lint(der []byte, c *x509.Certificate, ca *x509.Certificate) ([]string, error) {
	zc, err := zx509.ParseCertificate(der)
	if err != nil {
		return nil, &LintError{Findings: []string{"parse: " + err.Error()}}
	}
	var errs, warns []string
	cfg := l.registry.GetConfiguration()
	for _, cl := range l.registry.CertificateLints().Lints() {
		r := cl.Execute(zc, cfg)
		switch r.Status {
		case lint.Error, lint.Fatal:
			errs = append(errs, cl.Name+": "+r.Details)
		case lint.Warn:
			warns = append(warns, cl.Name+": "+r.Details)
		}
	}
	errs = append(errs, ownChecks(c, ca)...)
	sort.Strings(errs)
	sort.Strings(warns)
	if len(errs) > 0 {
		return nil, &LintError{Findings: errs}
	}
	return warns, nil
}

// ownChecks are the RFC 5280 rules this CA promises and checks itself, whatever zlint covers,
// on c (the built certificate, parsed once).
func ownChecks(c *x509.Certificate, ca *x509.Certificate) []string {
	var f []string
	if c.SerialNumber.Sign() <= 0 {
		f = append(f, "serial: not positive")
	}
	if n := len(c.SerialNumber.Bytes()); n > 20 || n == 20 && c.SerialNumber.Bytes()[0]&0x80 != 0 {
		f = append(f, "serial: longer than 20 octets")
	}
	if c.SerialNumber.BitLen() <= 64 {
		f = append(f, "serial: fewer than 64 random bits")
	}
	if !c.NotBefore.Before(c.NotAfter) {
		f = append(f, "validity: notBefore is not before notAfter")
	}
	if len(c.SubjectKeyId) == 0 {
		f = append(f, "ski: missing")
	}
	selfSigned := bytes.Equal(c.RawIssuer, c.RawSubject) && bytes.Equal(c.SubjectKeyId, c.AuthorityKeyId)
	if !selfSigned {
		if c.NotAfter.After(ca.NotAfter) {
			f = append(f, "validity: beyond the CA certificate's notAfter")
		}
		if !bytes.Equal(c.AuthorityKeyId, ca.SubjectKeyId) {
			f = append(f, "aki: does not match the CA's subject key identifier")
		}
		if !bytes.Equal(c.RawIssuer, ca.RawSubject) {
			f = append(f, "issuer: is not the CA's subject")
		}
		if c.IsCA {
			f = append(f, "basicConstraints: this CA issues end-entity certificates only")
		}
	}
	if len(c.RawSubject) <= 2 && len(c.DNSNames)+len(c.EmailAddresses)+len(c.IPAddresses)+len(c.URIs) == 0 && !hasExtension(c, oidSAN) {
		f = append(f, "subject: empty subject and no subjectAltName")
	}
	return f
}

var oidSAN = []int{2, 5, 29, 17}

func hasExtension(c *x509.Certificate, oid []int) bool {
	for _, e := range c.Extensions {
		if e.Id.Equal(oid) {
			return true
		}
	}
	return false
}
