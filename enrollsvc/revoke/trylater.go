package revoke

import (
	"net/http"

	"golang.org/x/crypto/ocsp"
)

// TryLater answers an OCSP request that a limit refused: HTTP 429 with Retry-After (seconds)
// and the unsigned tryLater OCSPResponse (RFC 6960 §2.3, §4.2.1), which costs no signature.
func TryLater(w http.ResponseWriter, retryAfter string) {
	w.Header().Set("Content-Type", "application/ocsp-response")
	w.Header().Set("Retry-After", retryAfter)
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusTooManyRequests)
	_, _ = w.Write(ocsp.TryLaterErrorResponse)
}
