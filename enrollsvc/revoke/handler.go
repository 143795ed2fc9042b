package revoke

import (
	"bytes"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"golang.org/x/crypto/ocsp"
)

const (
	// maxOCSPRequest bounds a POSTed OCSP request (RFC 6960 requests are some 100 octets).
	maxOCSPRequest = 64 << 10
	// maxCRLAge caps the HTTP cache lifetime of a CRL, so that a CRL published out of schedule
	// (PublishDelta after a revocation) reaches HTTP caches within the hour.
	maxCRLAge = time.Hour
)

// FileName is the URL-safe name of a CA's files: ASCII letters, digits and '_' are kept, every
// run of other characters becomes one '-', and leading or trailing '-' are dropped; an empty
// result is "ca". "Development Root CA" is "Development-Root-CA".
func FileName(caName string) string {
	var b strings.Builder
	dash := false
	for _, c := range caName {
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' {
			if dash && b.Len() > 0 {
				b.WriteByte('-')
			}
			b.WriteRune(c)
			dash = false
		} else {
			dash = true
		}
	}
	if b.Len() == 0 {
		return "ca"
	}
	return b.String()
}

// Handler serves a CA's revocation information over plain HTTP, for the URLs that go into its
// certificates (name is FileName(caName)):
//
//	GET /crl/<name>.crl     the current full CRL (application/pkix-crl)
//	GET /crl/<name>+.crl    the current delta CRL, named as AD CS names it
//	GET /aia/<name>.crt     the CA certificate (application/pkix-cert)
//	POST /ocsp              an OCSP request (application/ocsp-request, at most 64 KiB: 413 beyond)
//	GET /ocsp/<request>     an OCSP request in base64, URL-escaped (RFC 6960 A.1)
//
// OCSP answers are application/ocsp-response with HTTP 200 whatever their OCSPResponseStatus,
// a request that cannot be read included (malformedRequest). A successful answer (pre-signed,
// never with a nonce) may be cached until its nextUpdate (Cache-Control max-age, Expires, Last-Modified, RFC 5019 6);
// others are no-store. CRLs carry Last-Modified (thisUpdate), an ETag (the CRL number) and a
// max-age up to the next scheduled publication, at most an hour; before the first publication
// they are 503. p or r may be nil: their paths are then 404.
//
// Mount the handler at the root of its server, not under an http.ServeMux pattern: ServeMux
// redirects paths holding "//", which base64 OCSP GET requests can contain.
func Handler(p *Publisher, r *Responder, caName string) http.Handler {
	name := FileName(caName)
	h := &handler{p: p, r: r, full: "/crl/" + name + ".crl", delta: "/crl/" + name + "+.crl", aia: "/aia/" + name + ".crt"}
	switch {
	case p != nil:
		h.ca = p.CA()
	case r != nil:
		h.ca = r.o.CA
	}
	return h
}

type handler struct {
	p                *Publisher
	r                *Responder
	ca               *x509.Certificate
	full, delta, aia string
}

func (h *handler) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	path := req.URL.Path
	switch {
	case h.p != nil && (path == h.full || path == h.delta):
		if !allow(w, req, http.MethodGet, http.MethodHead) {
			return
		}
		c := h.p.Full()
		if path == h.delta {
			c = h.p.Delta()
		}
		h.serveCRL(w, req, c)
	case h.ca != nil && path == h.aia:
		if !allow(w, req, http.MethodGet, http.MethodHead) {
			return
		}
		w.Header().Set("Content-Type", "application/pkix-cert")
		http.ServeContent(w, req, "", h.ca.NotBefore, bytes.NewReader(h.ca.Raw))
	case h.r != nil && (path == "/ocsp" || path == "/ocsp/"):
		if !allow(w, req, http.MethodPost) {
			return
		}
		h.ocspPost(w, req)
	case h.r != nil && strings.HasPrefix(path, "/ocsp/"):
		if !allow(w, req, http.MethodGet) {
			return
		}
		h.ocspGet(w, req, strings.TrimPrefix(path, "/ocsp/"))
	default:
		http.NotFound(w, req)
	}
}

func allow(w http.ResponseWriter, req *http.Request, methods ...string) bool {
	for _, m := range methods {
		if req.Method == m {
			return true
		}
	}
	w.Header().Set("Allow", strings.Join(methods, ", "))
	http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
	return false
}

func (h *handler) serveCRL(w http.ResponseWriter, req *http.Request, c *CRL) {
	if c == nil {
		w.Header().Set("Retry-After", "60")
		http.Error(w, "no CRL has been published yet", http.StatusServiceUnavailable)
		return
	}
	until := c.NextPublish
	if until.IsZero() {
		until = c.NextUpdate
	}
	age := until.Sub(h.p.o.Now())
	age = min(max(age, 0), maxCRLAge)
	w.Header().Set("Content-Type", "application/pkix-crl")
	w.Header().Set("Cache-Control", fmt.Sprintf("public, max-age=%d", int(age.Seconds())))
	w.Header().Set("ETag", `"`+c.Number.Text(16)+`"`)
	http.ServeContent(w, req, "", c.ThisUpdate, bytes.NewReader(c.DER))
}

func (h *handler) ocspPost(w http.ResponseWriter, req *http.Request) {
	body, err := io.ReadAll(http.MaxBytesReader(w, req.Body, maxOCSPRequest))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			http.Error(w, "OCSP request too large", http.StatusRequestEntityTooLarge)
			return
		}
		http.Error(w, "reading the OCSP request failed", http.StatusBadRequest)
		return
	}
	h.ocsp(w, req, body)
}

// ocspGet decodes the base64 request of a GET. Clients differ: some escape '+', '/' and '=',
// some do not, a few use the URL-safe alphabet or drop the padding, and a '+' turned into a space
// on the way is turned back.
func (h *handler) ocspGet(w http.ResponseWriter, req *http.Request, b64 string) {
	if len(b64) > base64.StdEncoding.EncodedLen(maxOCSPRequest) {
		http.Error(w, "OCSP request too large", http.StatusRequestURITooLong)
		return
	}
	b64 = strings.ReplaceAll(b64, " ", "+")
	var der []byte // nil, answered malformedRequest, unless one of the encodings reads it
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if d, err := enc.DecodeString(b64); err == nil {
			der = d
			break
		}
	}
	h.ocsp(w, req, der)
}

func (h *handler) ocsp(w http.ResponseWriter, req *http.Request, der []byte) {
	a, err := h.r.answer(req.Context(), der)
	if err != nil {
		h.r.o.Log.ErrorContext(req.Context(), "OCSP request failed", "error", err, "remote", req.RemoteAddr)
	}
	hdr := w.Header()
	hdr.Set("Content-Type", "application/ocsp-response")
	hdr.Set("Content-Length", strconv.Itoa(len(a.der)))
	if a.status == ocsp.Success {
		age := max(a.nextUpdate.Sub(h.r.o.Now()), 0)
		hdr.Set("Cache-Control", fmt.Sprintf("max-age=%d, public, no-transform, must-revalidate", int(age.Seconds())))
		hdr.Set("Last-Modified", a.thisUpdate.Format(http.TimeFormat))
		hdr.Set("Expires", a.nextUpdate.Format(http.TimeFormat))
	} else {
		hdr.Set("Cache-Control", "no-store")
	}
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(a.der)
}
