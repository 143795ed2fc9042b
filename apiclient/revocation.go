package apiclient

import (
	"fmt"
	"slices"
	"strings"
	"time"
)

// RevokeRequest is the body of POST /api/v1/certificates/{serial}/revoke.
type RevokeRequest struct {
	Reason string `json:"reason"` // one of ReasonNames (any case), or the reason's number
}

// Revocation reasons (RFC 5280 §5.3.1 CRLReason) an administrator may give. certificateHold and
// removeFromCRL are not offered: revocation here is final.
var reasonCodes = map[string]int{
	"unspecified": 0, "keyCompromise": 1, "cACompromise": 2, "affiliationChanged": 3, "superseded": 4,
	"cessationOfOperation": 5, "privilegeWithdrawn": 9, "aACompromise": 10,
}

// ReasonNames lists the reasons RevokeRequest takes, sorted.
func ReasonNames() []string {
	var out []string
	for n := range reasonCodes {
		out = append(out, n)
	}
	slices.Sort(out)
	return out
}

// ReasonCode reads a reason name (case-insensitive) or its number; ok is false for anything
// else, certificateHold and removeFromCRL included.
func ReasonCode(s string) (code int, ok bool) {
	for n, c := range reasonCodes {
		if strings.EqualFold(n, s) || fmt.Sprint(c) == s {
			return c, true
		}
	}
	return 0, false
}

// ReasonName is the RFC 5280 name of a reason code (Certificate.RevocationReason).
func ReasonName(code int) string {
	for n, c := range reasonCodes {
		if c == code {
			return n
		}
	}
	switch code {
	case 6:
		return "certificateHold"
	case 8:
		return "removeFromCRL"
	}
	return fmt.Sprintf("reason %d", code)
}

// CRLInfo describes the CRLs just published (POST /api/v1/crl/publish).
type CRLInfo struct {
	Number       int64     `json:"number"`
	ThisUpdate   time.Time `json:"this_update"`
	NextUpdate   time.Time `json:"next_update"`
	Entries      int       `json:"entries"`
	Bytes        int       `json:"bytes"`
	DeltaNumber  int64     `json:"delta_number"`
	DeltaEntries int       `json:"delta_entries"`
	URL          string    `json:"url,omitempty"`
	Took         string    `json:"took"`
}

// SCEP challenge modes: SCEPProfile.Mode.
const (
	SCEPStatic  = "static"
	SCEPOneTime = "one-time"
)

// SCEPProfile is one SCEP profile (GET /api/v1/scep/profiles): /scep/NAME bound to a template.
type SCEPProfile struct {
	Name     string `json:"name"`
	Template string `json:"template"`
	Account  string `json:"account,omitempty"` // the account certificates are for; "" the challenge names it
	// AccountSID is the objectSid the profile enrolls (taken when it was made): a re-created
	// account of the same name is another object. "" with an Account: an older profile bound by name.
	AccountSID string    `json:"account_sid,omitempty"`
	Mode       string    `json:"mode"` // "static", "one-time" or "mdm" (the MDM validates each challenge)
	Created    time.Time `json:"created"`
	MDM        string    `json:"mdm,omitempty"` // the MDM that issues and validates the challenges
	// AllowDES: the profile accepts request envelopes encrypted with single DES or 3DES, which
	// an eavesdropper can read (challenge included). For legacy devices that can do nothing else.
	AllowDES bool `json:"allow_des,omitempty"`
}

// SCEPProfileSpec is the body of POST /api/v1/scep/profiles.
type SCEPProfileSpec struct {
	Name     string `json:"name"`
	Template string `json:"template"`
	// Account the certificates are for; empty: each one-time challenge names it.
	Account         string `json:"account,omitempty"`
	StaticChallenge string `json:"static_challenge,omitempty"` // static mode
	OneTime         bool   `json:"one_time,omitempty"`         // one-time challenges instead
	AllowDES        bool   `json:"allow_des,omitempty"`        // accept DES and 3DES envelopes (legacy devices)
	MDM             string `json:"mdm,omitempty"`              // a registered MDM issues and validates the challenges
}

// ChallengeRequest is the body of POST /api/v1/scep/challenges.
type ChallengeRequest struct {
	Profile string `json:"profile"`
	Subject string `json:"subject,omitempty"`
	Account string `json:"account,omitempty"`
	TTL     string `json:"ttl,omitempty"` // Go duration, default 1h
}

// Challenge is a new one-time challenge, shown once.
type Challenge struct {
	Challenge string    `json:"challenge"`
	Profile   string    `json:"profile"`
	Expires   time.Time `json:"expires"`
}
